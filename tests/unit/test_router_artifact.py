"""Router artifacts and live swaps on the table-driven fake encoder: no model, no Redis."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from registry.router_artifacts import (
    EncoderFiles,
    LabelledQuery,
    RouterArtifactError,
    RouterArtifactRecord,
    parse_record,
)
from router import Router
from router.artifact import (
    RECORD_FILE,
    apply_record,
    artifact_dir,
    decode_head,
    encode_head,
    fit_artifact,
    hash_files,
    labelled_for,
    load_encoder,
    verify_files,
)
from router.linear import LinearHead
from router.live import LiveRouter, LiveRouterOptions
from tests.unit.test_router import EXAMPLES, BagOfWordsEncoder

LABELLED = [
    LabelledQuery(text="python code", label="code"),
    LabelledQuery(text="story poem", label="writing"),
    LabelledQuery(text="hello", label="general"),
    LabelledQuery(text="python story story story", label=None),
    LabelledQuery(text="code poem poem", label=None),
]
INSTALLED = {name: "1.0.0" for name in EXAMPLES}
QUERIES = ["python code", "a story", "hello weather", "python story story story", "soup"]


def fit(tmp_path: Path, method: str = "knn", **options: object) -> tuple[Router, object]:
    return fit_artifact(
        EXAMPLES,
        INSTALLED,
        home=tmp_path,
        encoder=BagOfWordsEncoder(),
        method=method,  # type: ignore[arg-type]
        fallback="general",
        labelled=options.pop("labelled", LABELLED),  # type: ignore[arg-type]
        **options,  # type: ignore[arg-type]
    )


def decisions(router: Router) -> list[tuple[str | None, str, float]]:
    return [(d.chosen, d.mode, round(d.targets[0].score, 5)) for d in router.route_batch(QUERIES)]


@pytest.mark.parametrize("method", ["centroid", "knn", "knn-max", "linear"])
def test_record_round_trip_reproduces_the_router(tmp_path: Path, method: str) -> None:
    router, record = fit(tmp_path, method)
    assert isinstance(record, RouterArtifactRecord)
    assert record.fitted and record.method == method and record.installed == INSTALLED
    assert (record.head is not None) == (method == "linear")
    stored = parse_record(record.model_dump_json(), record.version)
    assert stored == record
    on_disk = json.loads((artifact_dir(tmp_path, record.version) / RECORD_FILE).read_text())
    assert on_disk["version"] == record.version
    fresh = Router.from_examples(
        EXAMPLES, fallback="general", method=method, encoder=BagOfWordsEncoder()
    )  # type: ignore[arg-type]
    assert apply_record(fresh, stored)
    assert dict(fresh.thresholds) == dict(router.thresholds)
    assert decisions(fresh) == decisions(router)
    assert "python story story story" in {q.text for q in stored.labelled}


def test_a_record_for_another_method_is_not_applied(tmp_path: Path) -> None:
    _, record = fit(tmp_path, "knn")
    other = Router.from_examples(EXAMPLES, method="linear", encoder=BagOfWordsEncoder())
    assert not apply_record(other, record)  # type: ignore[arg-type]
    assert other.thresholds == {}


def test_without_labelled_queries_the_defaults_stand(tmp_path: Path) -> None:
    _, record = fit(tmp_path, "knn", labelled=[], threshold=0.33)
    assert not record.fitted  # type: ignore[attr-defined]
    assert record.threshold == 0.33 and record.thresholds == {}  # type: ignore[attr-defined]


def test_labels_of_removed_specialists_become_out_of_scope() -> None:
    texts, labels = labelled_for(LABELLED, {"code": 0, "general": 2})
    assert texts == [q.text for q in LABELLED]
    assert labels == ["code", None, "general", None, None]


def test_linear_head_round_trips_exactly() -> None:
    rng = np.random.default_rng(0)
    head = LinearHead(rng.normal(size=(9, 3)), rng.normal(size=3))
    back = decode_head(encode_head(["a", "b", "c"], head))
    np.testing.assert_array_equal(back.weights, head.weights)
    np.testing.assert_array_equal(back.bias, head.bias)


def good_record(tmp_path: Path, method: str = "knn") -> dict:
    _, record = fit(tmp_path, method)
    return json.loads(record.model_dump_json())  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: "{not json", "damaged"),
        (lambda r: {k: v for k, v in r.items() if k != "method"}, "method: Field required"),
        (lambda r: {**r, "format_version": 99}, "format version 99"),
        (lambda r: {**r, "surprise": 1}, "surprise: Extra inputs"),
        (lambda r: {**r, "threshold": "high"}, "threshold"),
    ],
)
def test_damaged_records_are_rejected(tmp_path: Path, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    raw = damage(good_record(tmp_path))
    with pytest.raises(RouterArtifactError, match=message):
        parse_record(raw if isinstance(raw, str) else json.dumps(raw), "v1")


@pytest.mark.parametrize(
    ("field", "value"),
    [("weights", "not base64!"), ("weights", "AAAA"), ("bias", "AAAA")],
)
def test_a_damaged_head_is_rejected(tmp_path: Path, field: str, value: str) -> None:
    data = good_record(tmp_path, "linear")
    data["head"][field] = value
    record = parse_record(json.dumps(data), "v1")
    router = Router.from_examples(EXAMPLES, method="linear", encoder=BagOfWordsEncoder())
    with pytest.raises(RouterArtifactError, match="head is damaged"):
        apply_record(router, record)


def encoder_files(home: Path) -> EncoderFiles:
    model = home / "router" / "v1" / "model"
    (model / "sub").mkdir(parents=True)
    (model / "weights.bin").write_bytes(b"\x00\x01" * 100)
    (model / "sub" / "config.json").write_text("{}")
    return EncoderFiles(
        dir="router/v1/model",
        files=hash_files(model),
        base="fake",
        examples_digest="0" * 64,
        specialists=sorted(EXAMPLES),
    )


def test_encoder_files_are_verified_before_loading(tmp_path: Path) -> None:
    files = encoder_files(tmp_path)
    assert set(files.files) == {"weights.bin", "sub/config.json"}
    loaded: list[Path] = []

    def load(path: Path) -> BagOfWordsEncoder:
        loaded.append(path)
        return BagOfWordsEncoder()

    assert isinstance(load_encoder(files, tmp_path, load), BagOfWordsEncoder)
    assert loaded == [tmp_path / "router/v1/model"]
    assert load_encoder(None, tmp_path, load) is None  # the frozen base


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda m: (m / "weights.bin").write_bytes(b"\x00\x02" * 100), "has sha256"),
        (lambda m: (m / "sub" / "config.json").unlink(), "is missing"),
    ],
)
def test_damaged_encoder_files_are_refused(tmp_path: Path, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    files = encoder_files(tmp_path)
    damage(tmp_path / files.dir)
    with pytest.raises(RouterArtifactError, match=message):
        load_encoder(files, tmp_path, lambda path: BagOfWordsEncoder())
    with pytest.raises(RouterArtifactError, match="lists no files"):
        verify_files(tmp_path, {})


# -- LiveRouter: swaps ---------------------------------------------------------------------


def live(tmp_path: Path, **options: object) -> LiveRouter:
    settings = LiveRouterOptions(home=tmp_path, fallback="general", refit_delay_s=0, **options)  # type: ignore[arg-type]
    router = LiveRouter(settings, frozen=BagOfWordsEncoder)
    router.start()
    return router


def test_an_install_is_routable_at_once_and_the_old_router_is_untouched(tmp_path: Path) -> None:
    serving = live(tmp_path)
    serving.update(INSTALLED, EXAMPLES)
    before = serving.router
    assert before.route("soup recipe").chosen != "cooking"
    serving.update({**INSTALLED, "cooking": "1.0.0"}, {**EXAMPLES, "cooking": ["recipe soup"]})
    assert serving.router is not before
    assert serving.router.route("soup recipe").chosen == "cooking"
    assert "cooking" not in before.index.names  # a batch holding the old router stays whole
    assert serving.router.cache is before.cache  # same encoder: the cache carries over


def test_without_an_artifact_nothing_is_refitted(tmp_path: Path) -> None:
    serving = live(tmp_path)
    serving.update(INSTALLED, EXAMPLES)
    assert not serving.stale()
    assert not serving.refit()
    assert live(tmp_path, refit_encoder=True).stale() is False  # nothing installed yet


def fitted_live(tmp_path: Path, method: str = "knn") -> LiveRouter:
    """A live router serving an artifact fitted for EXAMPLES (as if loaded at start)."""
    serving = live(tmp_path, method=method)
    encoder = serving.frozen_encoder()
    _, record = fit_artifact(
        EXAMPLES,
        INSTALLED,
        home=tmp_path,
        encoder=encoder,
        lexical=serving.lexical,
        method=method,  # type: ignore[arg-type]
        fallback="general",
        labelled=LABELLED,
    )
    serving.update(INSTALLED, EXAMPLES)
    apply_record(serving.router, record)
    serving.record = record
    return serving


def test_a_changed_installed_set_is_refitted_and_swapped(tmp_path: Path) -> None:
    serving = fitted_live(tmp_path)
    assert not serving.stale()
    base = serving.record
    assert base is not None
    examples = {**EXAMPLES, "cooking": ["recipe soup", "soup"]}
    serving.update({**INSTALLED, "cooking": "1.0.0"}, examples)
    assert serving.stale()
    old = serving.router
    assert serving.refit()
    record = serving.record
    assert record is not None and record is not base
    assert record.parent == base.version and "cooking" in record.installed
    assert record.labelled == base.labelled  # the labelled queries carry over
    assert serving.router is not old and not serving.stale()
    assert "cooking" in serving.router.thresholds
    assert serving.router.route("soup recipe").chosen == "cooking"
    assert not serving.refit()  # nothing changed since


def test_a_refit_for_a_set_that_moved_on_is_dropped(tmp_path: Path) -> None:
    serving = fitted_live(tmp_path)
    serving.update({**INSTALLED, "cooking": "1.0.0"}, {**EXAMPLES, "cooking": ["recipe soup"]})
    encoder = serving.router.encoder
    assert isinstance(encoder, BagOfWordsEncoder)
    moved = threading.Event()
    original = encoder.encode

    def encode_then_install(texts: list[str]) -> np.ndarray:
        if not moved.is_set():  # while the refit encodes, another install lands
            moved.set()
            serving.update(
                {**INSTALLED, "soups": "1.0.0"}, {**EXAMPLES, "soups": ["soup", "recipe"]}
            )
        return original(texts)

    encoder.encode = encode_then_install  # type: ignore[method-assign]
    assert not serving.refit()
    assert moved.is_set()
    assert "soups" in serving.router.index.names  # the newer update serves
    assert serving.stale()


def test_the_old_router_serves_while_a_background_refit_runs(tmp_path: Path) -> None:
    serving = fitted_live(tmp_path, "linear")
    release = threading.Event()
    started = threading.Event()
    original = serving.refit

    def slow_refit() -> bool:
        started.set()
        release.wait(5)
        return original()

    serving.refit = slow_refit  # type: ignore[method-assign]

    async def main() -> None:
        serving.update({**INSTALLED, "cooking": "1.0.0"}, {**EXAMPLES, "cooking": ["soup"]})
        serving.schedule_refit()
        await asyncio.to_thread(started.wait, 5)
        during = serving.router
        assert serving.route_batch(["soup"])[0].chosen == "cooking"  # already indexed
        serving.schedule_refit()  # a second change while refitting: queued, not parallel
        release.set()
        await serving.wait()
        assert serving.router is not during
        assert serving.refits == 1

    asyncio.run(main())
    assert serving.record is not None and "cooking" in serving.record.installed

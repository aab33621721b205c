"""Router artifacts in a real Redis: the store, `mesh router fit` against it, and a live router
that loads, falls back, refits, saves and reloads. The fake encoder keeps it fast; one test
fine-tunes the real MiniLM for two steps to check the encoder files end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mesh.cli import router as router_cli
from mesh.cli.router import router_app
from registry import Registry, parse_manifest
from registry import keys as redis_keys
from registry.router_artifacts import (
    LabelledQuery,
    RouterArtifactError,
    RouterArtifactStore,
)
from router.artifact import artifact_dir, fit_artifact
from router.live import LiveRouter, LiveRouterOptions
from tests.conftest import manifest_data
from tests.unit.test_router import EXAMPLES, BagOfWordsEncoder
from tests.unit.test_router_artifact import INSTALLED, LABELLED

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture
def store(registry: Registry) -> RouterArtifactStore:
    return RouterArtifactStore(registry.client, registry.url)


def record_for(home: Path, method: str = "knn", **options: object):  # type: ignore[no-untyped-def]
    _, record = fit_artifact(
        EXAMPLES,
        INSTALLED,
        home=home,
        encoder=BagOfWordsEncoder(),
        method=method,  # type: ignore[arg-type]
        labelled=LABELLED,
        **options,  # type: ignore[arg-type]
    )
    return record


def test_store_round_trip_and_compare_and_set(store: RouterArtifactStore, tmp_path: Path) -> None:
    assert store.current() is None and store.versions() == []
    first = record_for(tmp_path)
    assert store.save(first, expect_current=None)
    assert store.current() == first
    second = record_for(tmp_path, "linear", parent=first.version)
    assert not store.save(second, expect_current="someone-else")  # another writer came first
    assert store.current_version() == first.version
    assert store.save(second, expect_current=first.version)
    assert store.current() == second and second.head is not None
    assert store.versions() == [first.version, second.version]
    assert store.set_current(first.version) == first  # a rollback
    with pytest.raises(RouterArtifactError, match="not in Redis"):
        store.set_current("nope")


def test_a_damaged_record_in_redis_is_refused(store: RouterArtifactStore, tmp_path: Path) -> None:
    record = record_for(tmp_path)
    store.save(record)
    store.client.set(redis_keys.router_artifact(record.version), '{"version": "x"}')
    with pytest.raises(RouterArtifactError, match="damaged"):
        store.current()


def live(home: Path, store: RouterArtifactStore, **options: object) -> LiveRouter:
    settings = LiveRouterOptions(home=home, fallback="general", refit_delay_s=0, **options)  # type: ignore[arg-type]
    router = LiveRouter(settings, store=store, frozen=BagOfWordsEncoder)
    router.start()
    return router


def test_live_router_loads_refits_saves_and_reloads(
    store: RouterArtifactStore, tmp_path: Path
) -> None:
    first = record_for(tmp_path)
    store.save(first)
    serving = live(tmp_path, store)
    assert serving.record == first and not serving.degraded
    assert dict(serving.router.thresholds) == first.thresholds
    serving.update(INSTALLED, EXAMPLES)
    assert not serving.stale()

    serving.update({**INSTALLED, "cooking": "2.0.0"}, {**EXAMPLES, "cooking": ["recipe soup"]})
    assert serving.refit()
    refit = store.current()
    assert refit is not None and refit.parent == first.version
    assert refit.installed["cooking"] == "2.0.0" and refit == serving.record

    manual = record_for(tmp_path, threshold=0.05)  # 'mesh router fit' elsewhere, other set
    store.save(manual)
    assert serving.reload_if_changed()
    assert serving.record == manual
    assert "cooking" in serving.router.index.names  # the live set is kept, thresholds reloaded
    assert serving.stale()  # fitted for a set without cooking: a refit is due
    assert not serving.reload_if_changed()


def test_live_router_falls_back_on_a_damaged_artifact_and_saves_nothing(
    store: RouterArtifactStore, tmp_path: Path
) -> None:
    record = record_for(tmp_path)
    store.save(record)
    store.client.set(redis_keys.router_artifact(record.version), "{broken")
    serving = live(tmp_path, store)
    assert serving.record is None and serving.degraded
    serving.update({**INSTALLED, "cooking": "1"}, {**EXAMPLES, "cooking": ["soup"]})
    assert serving.router.route("python code").chosen == "code"  # still routes
    assert not serving.stale() and not serving.refit()
    assert store.current_version() == record.version  # nothing overwritten

    good = record_for(tmp_path)
    store.save(good)
    assert serving.reload_if_changed()
    assert not serving.degraded and serving.record == good


def test_live_router_without_redis_serves_the_frozen_encoder(tmp_path: Path) -> None:
    from mesh.launcher import free_port

    store = RouterArtifactStore.from_url(f"redis://127.0.0.1:{free_port()}")
    serving = live(tmp_path, store)
    assert serving.degraded and serving.record is None
    serving.update(INSTALLED, EXAMPLES)
    assert serving.router.route("python code").chosen == "code"


# -- mesh router fit against the store ---------------------------------------------------------


@pytest.fixture
def mesh_env(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Registry, Path]:
    home = tmp_path / "home"
    monkeypatch.setenv("MESH_REDIS_URL", redis_url)
    monkeypatch.setenv("MESH_HOME", str(home))
    monkeypatch.setenv("MESH_ADMIN_TOKEN", "fit-admin")  # fitting the mesh's router: operator
    monkeypatch.setattr(router_cli, "load_encoder", lambda path: BagOfWordsEncoder())
    registry = Registry.from_url(redis_url)
    for name, texts in EXAMPLES.items():
        registry.publish(parse_manifest(manifest_data(name, examples=texts)), install=True)
    return registry, home


def write_jsonl(path: Path, rows: list[LabelledQuery]) -> Path:
    path.write_text("".join(row.model_dump_json() + "\n" for row in rows))
    return path


def test_fit_against_the_store(mesh_env: tuple[Registry, Path], tmp_path: Path) -> None:
    registry, home = mesh_env
    val = write_jsonl(tmp_path / "val.jsonl", LABELLED)
    refused = runner.invoke(router_app, ["fit", "--no-finetune"], env={"MESH_ADMIN_TOKEN": ""})
    assert refused.exit_code == 1 and "needs the admin token" in refused.output
    assert RouterArtifactStore(registry.client, registry.url).current() is None
    fit = ["fit", "--no-finetune", "--val", str(val), "--oos-recall", "0.5", "--json"]
    result = runner.invoke(router_app, fit)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["n_labelled"] == len(LABELLED) and shown["fitted"] is True
    assert shown["installed"] == {name: "1.0.0" for name in EXAMPLES}
    assert shown["encoder"] is None and shown["method"] == "knn"
    store = RouterArtifactStore(registry.client, registry.url)
    record = store.current()
    assert record is not None and record.version == shown["version"]
    assert Path(shown["path"]) == artifact_dir(home, record.version)
    assert (Path(shown["path"]) / "router.json").is_file()

    again = runner.invoke(router_app, ["fit", "--no-finetune", "--method", "linear"])
    assert again.exit_code == 0, again.output
    assert "thresholds fitted on 5 labelled queries" in again.output  # reused from the store
    second = store.current()
    assert second is not None and second.parent == record.version and second.head is not None
    assert record.operating_point.oos_recall == 0.5 and len(record.trade_off) > 1
    assert second.operating_point == record.operating_point  # kept for the refit
    assert second.head.rejects  # the labelled out-of-scope queries became its last class
    both = runner.invoke(router_app, ["fit", "--no-finetune", "--balanced", "--precision", "0.9"])
    assert both.exit_code == 1 and "--balanced goes without" in both.output
    cleared = runner.invoke(router_app, ["fit", "--no-finetune", "--balanced"])
    assert cleared.exit_code == 0, cleared.output
    third = store.current()
    assert third is not None and third.operating_point.oos_recall is None
    assert third.operating_point.precision is None and third.parent == second.version


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "x"], "--out is for offline mode"),
        (["--method", "magic", "--no-finetune"], "unknown method 'magic'"),
    ],
)
def test_fit_errors_exit_1(mesh_env: tuple[Registry, Path], args: list[str], message: str) -> None:
    result = runner.invoke(router_app, ["fit", *args])
    assert result.exit_code == 1
    assert message in result.output


def test_fit_refuses_a_wrong_token_and_an_owners_token(mesh_env: tuple[Registry, Path]) -> None:
    """Fitting (and choosing the operating point) is the operator's: nothing is saved else."""
    registry, _ = mesh_env
    owner = registry.tokens.create("someone")
    for token, message in (("wrong-token", "not valid"), (owner, "not an owner's token")):
        args = ["fit", "--no-finetune", "--oos-recall", "0.9"]
        refused = runner.invoke(router_app, args, env={"MESH_TOKEN": token})
        assert refused.exit_code == 1 and message in refused.output, refused.output
    assert RouterArtifactStore(registry.client, registry.url).current() is None


def test_fit_with_nothing_installed_says_what_to_do(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESH_REDIS_URL", redis_url)
    monkeypatch.setenv("MESH_HOME", str(tmp_path))
    monkeypatch.setenv("MESH_ADMIN_TOKEN", "fit-admin")
    result = runner.invoke(router_app, ["fit", "--no-finetune"])
    assert result.exit_code == 1
    assert "mesh install" in result.output


def test_a_fine_tuned_encoder_round_trips_through_redis_and_disk(
    store: RouterArtifactStore, tmp_path: Path
) -> None:
    """Real MiniLM, two tiny steps: files pinned by sha256, loaded, and refused once changed."""
    from router import SentenceTransformerEncoder
    from router.finetune import FinetuneSettings

    frozen = SentenceTransformerEncoder()
    tiny = FinetuneSettings(steps=2, batch_size=8, per_specialist=2, max_seq_length=16)
    examples = {
        "code": ["write a python function", "fix this bug", "what is a closure"],
        "cooking": ["a soup recipe", "how long to boil eggs", "bake bread"],
    }
    installed = {"code": "1", "cooking": "1"}
    _, record = fit_artifact(
        examples, installed, home=tmp_path, encoder=frozen, finetune=tiny, labelled=[]
    )
    assert record.encoder is not None and record.encoder.dir.endswith("/model")
    assert any(name.endswith(".safetensors") for name in record.encoder.files)
    store.save(record)

    def open_live() -> LiveRouter:
        settings = LiveRouterOptions(home=tmp_path, refit_delay_s=0)
        serving = LiveRouter(settings, store=store, frozen=lambda: frozen)
        serving.start()
        serving.update(installed, examples)
        return serving

    loaded = open_live()
    assert not loaded.degraded and loaded.router.encoder is not frozen
    assert loaded.router.route("bake a cake").chosen == "cooking"

    config = tmp_path / record.encoder.dir / "config.json"
    config.write_text(config.read_text() + " ")
    fallen = open_live()
    assert fallen.degraded and fallen.router.encoder is frozen
    assert fallen.router.route("bake a cake").chosen == "cooking"

"""The quality gate's replay (`router.impact`) on the real catalog with the offline MiniLM: a
specialist that copies `code`'s examples, verbatim or reworded, is flagged, one with a niche of
its own passes."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from mesh import publish_gate
from mesh.publish_gate import GateCheck, ImpactRequest, check_gate
from registry import Registry, SpecialistManifest, load_manifest, parse_manifest
from registry.errors import QualityGateError
from registry.router_artifacts import LabelledQuery
from router import Encoder, Router, RouterIndex
from router.cache import EmbeddingCache
from router.impact import ImpactReport, TakenShare, _route_unseen, replay_impact
from router.index import index_texts
from router.linear import LinearHead
from router.router import Method
from tests.conftest import ROOT, manifest_data

LIMIT = 0.25  # MESH_GATE_MAX_SHARE's default
GARDENING = [
    "When should I plant tomato seedlings outdoors?",
    "How often should I water succulents?",
    "What is eating the leaves of my roses?",
    "How do I prune an apple tree in winter?",
    "Which vegetables grow well in shade?",
    "How do I improve heavy clay soil?",
    "Why are my basil leaves turning yellow?",
    "How deep should I plant tulip bulbs?",
]
# `code`'s catalog examples reworded: no text in common, the same queries.
CODE_REWORDED = [
    "Give me Python code that turns a string around, last character first.",
    "What's the way to load a comma-separated file into a pandas DataFrame?",
    "I get TypeError: 'NoneType' object is not subscriptable, how do I fix it?",
    "Python lists versus tuples: when should I use which?",
    "SQL that returns the number of orders each customer placed.",
    "How can I revert my most recent git commit?",
    "How do closures work in JavaScript?",
    "Write a binary search function in Rust.",
    "My bash loop breaks on file names that contain spaces, why?",
    "Sort a Python dict by its values.",
    "A regex to validate email addresses, please.",
    "How do async and await work in JS?",
    "How do I test my Python code using pytest?",
]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    from router import SentenceTransformerEncoder

    return SentenceTransformerEncoder()


@pytest.fixture(scope="module")
def catalog() -> dict[str, SpecialistManifest]:
    paths = sorted((ROOT / "specialists" / "catalog").glob("*.yaml"))
    return {m.name: m for m in map(load_manifest, paths)}


def template(encoder: Encoder, method: Method = "knn") -> Router:
    """The router a fresh mesh serves: frozen encoder, knn, `general` as the fallback."""
    return Router(encoder, RouterIndex.build(encoder, {}), fallback="general", method=method)


def replay(
    router: Router, catalog: dict[str, SpecialistManifest], candidate: SpecialistManifest
) -> ImpactReport:
    """What `mesh.publish_gate` replays: every installed specialist's examples, labelled."""
    labelled = [LabelledQuery(text=t, label=n) for n, m in catalog.items() for t in m.examples]
    examples = {name: index_texts(m) for name, m in catalog.items()}
    return replay_impact(
        router,
        labelled,
        examples,
        candidate.name,
        index_texts(candidate),
        version=candidate.version,
    )


@pytest.mark.slow
def test_a_copy_of_codes_examples_is_flagged_with_code_as_the_victim(
    encoder: Encoder, catalog: dict[str, SpecialistManifest]
) -> None:
    copycat = parse_manifest(
        manifest_data(
            name="code-helper",
            description="Programming help.",
            examples=catalog["code"].examples,
        )
    )
    report = replay(template(encoder), catalog, copycat)
    assert report.worst == "code" and report.max_share > LIMIT
    code = report.victims[0]
    assert code.labelled == len(catalog["code"].examples)
    assert code.samples and set(code.samples) <= set(catalog["code"].examples)
    assert "of `code`'s labelled queries" in report.summary
    with pytest.raises(QualityGateError, match=r"code.*--force") as refused:
        check_gate(report, LIMIT)
    assert refused.value.status_code == 409
    check_gate(report, LIMIT, force=True)
    assert not GateCheck(impact=report, installs=True, max_share=LIMIT).passes
    assert GateCheck(impact=report, installs=False, max_share=LIMIT).passes, "no install, no gate"


def gardening() -> SpecialistManifest:
    return parse_manifest(
        manifest_data(
            name="gardening",
            description="Gardening advice: plants, soil, pests and pruning.",
            examples=GARDENING,
        )
    )


def reworded() -> SpecialistManifest:
    """A copycat of `code` that rewords its examples."""
    return parse_manifest(
        manifest_data(name="code-helper", description="Programming help.", examples=CODE_REWORDED)
    )


@pytest.mark.slow
@pytest.mark.parametrize(("niche", "most"), [("gardening", 0.1), ("cooking", LIMIT)])
def test_a_specialist_with_its_own_niche_takes_nothing(
    encoder: Encoder, catalog: dict[str, SpecialistManifest], niche: str, most: float
) -> None:
    """Cooking may take a share of `general`'s food questions ("a good cup of coffee"), which
    it would answer in earnest, but stays within the limit."""
    if niche == "cooking":  # the README's example, which `mesh register` installs at once
        candidate = load_manifest(ROOT / "examples" / "cooking.yaml")
    else:
        candidate = gardening()
    report = replay(template(encoder), catalog, candidate)
    assert report.replayed == sum(len(m.examples) for m in catalog.values())
    assert report.max_share <= most, report.lines()
    check_gate(report, LIMIT)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["knn", "knn-max", "centroid", "linear"])
def test_a_reworded_copy_of_codes_examples_is_flagged_and_a_niche_still_passes(
    encoder: Encoder, catalog: dict[str, SpecialistManifest], method: Method
) -> None:
    """Each labelled query is routed without its own index row (leave-one-out): replayed as
    indexed, `code`'s examples would win on themselves and only a verbatim copy be caught."""
    copycat = reworded()
    assert not set(CODE_REWORDED) & set(catalog["code"].examples)
    report = replay(template(encoder, method), catalog, copycat)
    assert report.worst == "code" and report.max_share > LIMIT, report.lines()
    with pytest.raises(QualityGateError):
        check_gate(report, LIMIT)
    niche = replay(template(encoder, method), catalog, gardening())
    assert niche.max_share <= 0.1, niche.lines()


@pytest.mark.slow
def test_before_and_after_score_alike_even_with_a_fitted_linear_head(
    encoder: Encoder, catalog: dict[str, SpecialistManifest]
) -> None:
    """A head fitted for the served index would score "before" while "after" (one more
    specialist) trains its own: the replay leaves it behind for both."""
    plain = template(encoder, "linear")
    examples = {name: index_texts(m) for name, m in catalog.items()}
    fitted = Router(
        encoder, RouterIndex.build(encoder, examples), fallback="general", method="linear"
    )
    names = fitted.index.names
    bias = np.array([10.0 if name == "general" else 0.0 for name in names])  # all to general
    fitted.use_head(names, LinearHead(np.zeros((fitted.index.dim, len(names))), bias))
    assert fitted.route("Implement binary search in Rust.").chosen == "general"
    copycat = reworded()
    report = replay(fitted, catalog, copycat)
    assert report == replay(plain, catalog, copycat) and report.worst == "code"


@pytest.mark.slow
def test_a_new_version_replaces_its_own_examples_and_takes_nothing_from_itself(
    encoder: Encoder, catalog: dict[str, SpecialistManifest]
) -> None:
    again = catalog["code"].model_copy(update={"version": "0.3.0"})
    report = replay(template(encoder), catalog, again)
    assert report.victims == []
    assert report.replayed == sum(len(m.examples) for n, m in catalog.items() if n != "code")


@pytest.mark.slow
def test_a_query_the_index_has_not_seen_is_routed_as_the_router_routes_it(
    encoder: Encoder, catalog: dict[str, SpecialistManifest]
) -> None:
    """Leave-one-out changes nothing for a text that is not indexed: the replay's decisions
    are the router's own, pins included."""
    examples = {name: index_texts(m) for name, m in catalog.items()}
    texts = [*GARDENING, *CODE_REWORDED, "@math and what is 2+2?"]
    router = Router(encoder, RouterIndex.build(encoder, examples), fallback="general", explain=0)
    cache = EmbeddingCache(encoder, 1000)
    assert _route_unseen(template(encoder), cache, examples, texts) == router.route_batch(texts)


class Installed:
    """The part of `Registry` that `ImpactRequest.gather` reads: the installed set."""

    def __init__(self, catalog: dict[str, SpecialistManifest]) -> None:
        self.catalog = catalog

    def installed(self) -> dict[str, SpecialistManifest]:
        return self.catalog


@pytest.mark.slow
def test_only_the_operator_replays_the_artifacts_labelled_set_and_sees_samples(
    encoder: Encoder, catalog: dict[str, SpecialistManifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publisher's dry run must not tell whether a query is in the operator's labelled set:
    it replays the public examples only, and shows no query texts."""
    secret = LabelledQuery(text="How do I center a div in CSS?", label="code")
    monkeypatch.setattr(publish_gate, "artifact_labelled", lambda registry: [secret])
    registry: Registry = Installed(catalog)  # type: ignore[assignment]
    copycat = reworded()
    public = sum(len(m.examples) for m in catalog.values())
    operator = ImpactRequest.gather(registry, copycat, operator=True)
    publisher = ImpactRequest.gather(registry, copycat, operator=False)
    assert secret in operator.labelled and secret not in publisher.labelled
    seen = operator.replay(lambda: template(encoder))
    blind = publisher.replay(lambda: template(encoder))
    assert (seen.replayed, blind.replayed) == (public + 1, public)
    assert seen.victims[0].samples and blind.worst == "code"
    assert all(not victim.samples for victim in blind.victims)


class NoEncoder:
    def encode(self, texts: list[str]) -> np.ndarray:
        raise AssertionError("nothing should be encoded")


def test_nothing_is_encoded_when_no_other_specialist_has_labelled_queries() -> None:
    labelled = [LabelledQuery(text="x", label="demo"), LabelledQuery(text="y", label=None)]
    report = replay_impact(
        template(NoEncoder()), labelled, {"demo": ["a"]}, "demo", ["b"], version="2.0.0"
    )
    assert report.victims == [] and report.max_share == 0.0 and report.worst is None
    assert "meets no labelled query" in report.summary


def test_the_report_reads_as_a_sentence_and_crosses_ray_as_an_error() -> None:
    report = ImpactReport(
        candidate="copy",
        version="1.0.0",
        replayed=50,
        victims=[TakenShare(name="code", labelled=39, taken=12, share=0.3077, samples=["q"])],
    )
    assert report.summary == "copy@1.0.0 takes 31% of `code`'s labelled queries (12 of 39)"
    assert report.model_dump()["max_share"] == 0.3077
    assert report.without_samples().victims[0].samples == []
    error = pickle.loads(pickle.dumps(QualityGateError("m", param="force")))
    assert isinstance(error, QualityGateError) and error.error_type == "quality_gate_error"

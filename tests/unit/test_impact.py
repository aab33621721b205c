"""The quality gate's replay (`router.impact`) on the real catalog with the offline MiniLM: a
specialist that copies `code`'s examples is flagged, one with a niche of its own passes."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from mesh.publish_gate import GateCheck, check_gate
from registry import SpecialistManifest, load_manifest, parse_manifest
from registry.errors import QualityGateError
from registry.router_artifacts import LabelledQuery
from router import Encoder, Router, RouterIndex
from router.impact import ImpactReport, TakenShare, replay_impact
from router.index import index_texts
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


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    from router import SentenceTransformerEncoder

    return SentenceTransformerEncoder()


@pytest.fixture(scope="module")
def catalog() -> dict[str, SpecialistManifest]:
    paths = sorted((ROOT / "specialists" / "catalog").glob("*.yaml"))
    return {m.name: m for m in map(load_manifest, paths)}


def template(encoder: Encoder) -> Router:
    """The router a fresh mesh serves: frozen encoder, knn, `general` as the fallback."""
    return Router(encoder, RouterIndex.build(encoder, {}), fallback="general")


def replay(
    encoder: Encoder, catalog: dict[str, SpecialistManifest], candidate: SpecialistManifest
) -> ImpactReport:
    """What `mesh.publish_gate` replays: every installed specialist's examples, labelled."""
    labelled = [LabelledQuery(text=t, label=n) for n, m in catalog.items() for t in m.examples]
    examples = {name: index_texts(m) for name, m in catalog.items()}
    return replay_impact(
        template(encoder),
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
    report = replay(encoder, catalog, copycat)
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


@pytest.mark.slow
@pytest.mark.parametrize("niche", ["gardening", "cooking"])
def test_a_specialist_with_its_own_niche_takes_nothing(
    encoder: Encoder, catalog: dict[str, SpecialistManifest], niche: str
) -> None:
    if niche == "cooking":  # the README's example, which `mesh register` installs at once
        candidate = load_manifest(ROOT / "examples" / "cooking.yaml")
    else:
        data = manifest_data(
            name="gardening",
            description="Gardening advice: plants, soil, pests and pruning.",
            examples=GARDENING,
        )
        candidate = parse_manifest(data)
    report = replay(encoder, catalog, candidate)
    assert report.replayed == sum(len(m.examples) for m in catalog.values())
    assert report.max_share <= 0.1, report.lines()
    check_gate(report, LIMIT)


@pytest.mark.slow
def test_a_new_version_replaces_its_own_examples_and_takes_nothing_from_itself(
    encoder: Encoder, catalog: dict[str, SpecialistManifest]
) -> None:
    again = catalog["code"].model_copy(update={"version": "0.3.0"})
    report = replay(encoder, catalog, again)
    assert report.victims == []
    assert report.replayed == sum(len(m.examples) for n, m in catalog.items() if n != "code")


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

"""The publish-time quality gate: before a specialist is installed, replay the router's labelled
queries with it added and refuse (409, `QualityGateError`) when it would take more than the
operator's share (`MESH_GATE_MAX_SHARE`) of another installed specialist's queries.

The gate applies where a specialist goes live: `mesh install`, and a publish that installs (the
operator's publish with `MESH_AUTO_INSTALL`, or a new version of a specialist installed at
"latest"). `force` lets it through; a dry run only reports. The labelled queries are every
installed specialist's own examples (public: `mesh show` lists them) and, for the operator only,
the current router artifact's labelled set (the operator's data: a publisher's dry run must not
tell which queries are in it), gathered here (`gather`) for both callers. Who replays them: the
CLI in its own process with the router the mesh would serve (`local_router`), the gateway
through the router deployment (`RouterService.impact`), which holds that router already, so the
gateway loads no encoder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field, computed_field

from mesh.settings import MeshSettings
from registry import MeshError, Registry, SpecialistManifest
from registry.errors import QualityGateError
from registry.router_artifacts import LabelledQuery, RouterArtifactStore
from router.impact import ImpactReport, contested, replay_impact
from router.index import index_examples, index_texts
from router.router import Router

logger = logging.getLogger(__name__)


class ImpactRequest(BaseModel):
    """What a replay needs, gathered from the store; sent to the router deployment as is."""

    model_config = ConfigDict(extra="forbid")
    candidate: str
    version: str
    candidate_examples: list[str] = Field(description="The candidate's index texts.")
    examples: dict[str, list[str]] = Field(description="Installed specialists' index texts.")
    labelled: list[LabelledQuery]
    operator: bool = Field(
        description="Asked by the operator: the artifact's labelled set is replayed and the "
        "report shows sample queries; for anyone else neither."
    )

    @classmethod
    def gather(
        cls,
        registry: Registry,
        manifest: SpecialistManifest,
        *,
        operator: bool,
        tags: bool = False,
    ) -> ImpactRequest:
        """The installed set and the labelled queries of now, and the candidate `manifest`;
        the artifact's labelled set only for the operator (it is theirs)."""
        installed = registry.installed()
        own = [
            LabelledQuery(text=text, label=name)
            for name, spec in installed.items()
            for text in spec.examples
        ]
        return cls(
            candidate=manifest.name,
            version=manifest.version,
            candidate_examples=index_texts(manifest, tags=tags),
            examples=index_examples(installed, tags=tags),
            labelled=[*(artifact_labelled(registry) if operator else []), *own],
            operator=operator,
        )

    def replay(self, router: Callable[[], Router]) -> ImpactReport:
        """`replay_impact` with `router()` as the template, without query texts unless the
        operator asks; the router (and its encoder) is asked for only when some query is
        labelled for another installed specialist."""
        if not contested(self.labelled, self.examples, self.candidate):
            return ImpactReport(candidate=self.candidate, version=self.version)
        report = replay_impact(
            router(),
            self.labelled,
            self.examples,
            self.candidate,
            self.candidate_examples,
            version=self.version,
        )
        return report if self.operator else report.without_samples()


class GateCheck(BaseModel):
    """The gate's answer for one publish or install: what a dry run returns."""

    impact: ImpactReport
    installs: bool = Field(description="The action installs the specialist: the gate applies.")
    max_share: float = Field(description="The operator's limit (MESH_GATE_MAX_SHARE).")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passes(self) -> bool:
        return not self.installs or not over_limit(self.impact, self.max_share)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def verdict(self) -> str:
        """What the gate would do, in a sentence."""
        if not self.installs:
            return "this does not install it, so the quality gate does not apply"
        if self.passes:
            return f"within this mesh's limit of {self.max_share:.0%}: the quality gate passes"
        return f"the quality gate refuses it: {_beyond(self.max_share)}"

    def lines(self) -> list[str]:
        """The report, then the verdict."""
        return [*self.impact.lines(), self.verdict]


def artifact_labelled(registry: Registry) -> list[LabelledQuery]:
    """The current router artifact's labelled set; none when there is no artifact or it is
    damaged (the gate then replays the installed specialists' examples alone)."""
    try:
        record = RouterArtifactStore(registry.client, registry.url).current()
    except MeshError as error:
        logger.warning("quality gate: ignoring the router artifact: %s", error.message)
        return []
    return list(record.labelled) if record else []


def over_limit(report: ImpactReport, max_share: float) -> bool:
    return report.max_share > max_share


def gate_error(report: ImpactReport, max_share: float) -> QualityGateError:
    return QualityGateError(f"{report.summary}, {_beyond(max_share)}", param="force")


def _beyond(max_share: float) -> str:
    return (
        f"more than this mesh's limit of {max_share:.0%} (MESH_GATE_MAX_SHARE); give it "
        "examples of its own niche, or install it anyway with --force (HTTP: force=true)"
    )


def check_gate(report: ImpactReport, max_share: float, force: bool = False) -> None:
    """Raise `QualityGateError` (409) when `report` is over the limit and `force` is not set."""
    if over_limit(report, max_share) and not force:
        raise gate_error(report, max_share)


def local_router(settings: MeshSettings, registry: Registry) -> Router:
    """The router as the router deployment would serve it, in this process: the current
    artifact's encoder (verified) and thresholds, else the offline MiniLM with defaults."""
    from transformers.utils import logging as transformers_logging

    from mesh.router_service import live_options
    from router.live import LiveRouter

    transformers_logging.disable_progress_bar()
    store = RouterArtifactStore(registry.client, registry.url)
    live = LiveRouter(live_options(settings), store=store)
    live.start()
    return live.router


def impact_for(
    registry: Registry, manifest: SpecialistManifest, settings: MeshSettings, *, operator: bool
) -> ImpactReport:
    """The impact report of installing `manifest`, computed in this process (the CLI), as
    `operator` may see it."""
    request = ImpactRequest.gather(
        registry, manifest, operator=operator, tags=settings.router_index_tags
    )
    return request.replay(lambda: local_router(settings, registry))

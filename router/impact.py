"""What adding a specialist would do to the routing of queries we already know the answer for.

`replay_impact` routes labelled queries twice, over the installed set and over the installed set
with the candidate added (a new version of an installed specialist replaces its old examples),
and counts per labelled specialist the queries it answered before and the candidate answers
after: "takes 31% of `code`'s labelled queries (12 of 39)". The routers copy the one the mesh
serves (`template`: its encoder, method, fallback and fitted thresholds), so the decision rules
are the real ones, fallback and panels included. A panel the candidate joins counts as taken:
the victim no longer answers alone. Queries labelled for the candidate itself, for nobody, or
for a specialist that is not installed count for no one.

Most labelled queries are the installed specialists' own examples, which the index holds too:
routed as they are, each would win on itself and only a verbatim copy could take it. So every
query is routed as one the index has never seen (leave-one-out): the index rows of exactly its
text are left out of its scores, before and after alike.

Pure logic: the caller gathers the queries and examples (`mesh.publish_gate`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, Field, computed_field

from registry.router_artifacts import LabelledQuery
from router.cache import EmbeddingCache
from router.decision import RouteDecision
from router.index import RouterIndex
from router.policy import decide, find_pin
from router.router import FOLDS, Router

SAMPLES = 3


class TakenShare(BaseModel):
    """The labelled queries of one installed specialist that the candidate would answer."""

    name: str = Field(description="The specialist the queries are labelled for (the victim).")
    labelled: int = Field(description="Its labelled queries that were replayed.")
    taken: int = Field(description="Of those, how many it answered before and the candidate after.")
    share: float = Field(description="taken / labelled.")
    samples: list[str] = Field(default_factory=list, description="A few of the queries taken.")


class ImpactReport(BaseModel):
    """Which labelled queries a candidate specialist would take from whom; worst victim first."""

    candidate: str
    version: str = ""
    replayed: int = Field(0, description="Labelled queries replayed (none of the candidate's).")
    victims: list[TakenShare] = Field(
        default_factory=list, description="Specialists losing queries, largest share first."
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def max_share(self) -> float:
        """The largest share taken from any one specialist (what the quality gate compares)."""
        return self.victims[0].share if self.victims else 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def worst(self) -> str | None:
        return self.victims[0].name if self.victims else None

    @property
    def ref(self) -> str:
        return f"{self.candidate}@{self.version}" if self.version else self.candidate

    @computed_field  # type: ignore[prop-decorator]
    @property
    def summary(self) -> str:
        """One sentence: the worst victim, or that nothing is taken."""
        if not self.replayed:
            return f"{self.ref} meets no labelled query of another installed specialist"
        if not self.victims:
            return (
                f"{self.ref} takes none of the {self.replayed} labelled queries of the "
                "specialists installed now"
            )
        worst = self.victims[0]
        return (
            f"{self.ref} takes {worst.share:.0%} of `{worst.name}`'s labelled queries "
            f"({worst.taken} of {worst.labelled})"
        )

    def lines(self) -> list[str]:
        """The summary, then one line per victim with a sample query."""
        rows = [self.summary]
        for victim in self.victims:
            sample = f', e.g. "{victim.samples[0]}"' if victim.samples else ""
            rows.append(
                f"  {victim.name}: {victim.taken} of {victim.labelled} ({victim.share:.0%}){sample}"
            )
        return rows

    def without_samples(self) -> ImpactReport:
        """The report without query texts, for callers who may not read the labelled set."""
        victims = [v.model_copy(update={"samples": []}) for v in self.victims]
        return self.model_copy(update={"victims": victims})


def contested(
    labelled: Sequence[LabelledQuery], examples: Mapping[str, list[str]], candidate: str
) -> list[tuple[str, str]]:
    """The (text, label) pairs worth replaying: labelled for another installed specialist,
    each once."""
    pairs = {
        (q.text, q.label): None
        for q in labelled
        if q.label is not None and q.label != candidate and examples.get(q.label)
    }
    return list(pairs)


def replay_impact(
    template: Router,
    labelled: Sequence[LabelledQuery],
    examples: Mapping[str, list[str]],
    candidate: str,
    candidate_examples: list[str],
    *,
    version: str = "",
) -> ImpactReport:
    """Route `labelled` without and with the candidate and count who loses queries to it.

    `examples` are the installed specialists' index texts (examples and description), as the
    live router indexes them; `candidate_examples` the candidate's. Nothing is encoded when no
    query is labelled for another installed specialist.
    """
    queries = contested(labelled, examples, candidate)
    if not queries:
        return ImpactReport(candidate=candidate, version=version)
    before_examples = {name: list(texts) for name, texts in examples.items()}
    after_examples = {**before_examples, candidate: list(candidate_examples)}
    size = len(queries) + sum(len(t) for t in after_examples.values())
    cache = EmbeddingCache(template.encoder, size)  # each text encoded once for both routers
    texts = [text for text, _ in queries]
    before = _route_unseen(template, cache, before_examples, texts)
    after = _route_unseen(template, cache, after_examples, texts)
    counts: dict[str, int] = {}
    taken: dict[str, list[str]] = {}
    for (text, label), was, now in zip(queries, before, after, strict=True):
        counts[label] = counts.get(label, 0) + 1
        if label in _answerers(was) and candidate in _answerers(now):
            taken.setdefault(label, []).append(text)
    victims = [
        TakenShare(
            name=name,
            labelled=counts[name],
            taken=len(lost),
            share=round(len(lost) / counts[name], 4),
            samples=lost[:SAMPLES],
        )
        for name, lost in taken.items()
    ]
    victims.sort(key=lambda v: (-v.share, -v.taken, v.name))
    replayed = len(queries)
    return ImpactReport(candidate=candidate, version=version, replayed=replayed, victims=victims)


def _replica(template: Router, cache: EmbeddingCache, examples: dict[str, list[str]]) -> Router:
    """The template's rules over another set of examples, sharing `cache`, explaining nothing.
    A fitted linear head is left behind: it fits the served index only, so "before" would
    score with it and "after" with a fresh one; every replica trains its own instead."""
    router = template.clone(RouterIndex.build(cache, examples), fitted=False, explain=0)
    router.cache = cache
    return router


def _route_unseen(
    template: Router, cache: EmbeddingCache, examples: dict[str, list[str]], texts: list[str]
) -> list[RouteDecision]:
    """Route `texts` over `examples`, each without the index rows of exactly its text.

    The example methods score a specialist from its own rows alone, so only the (query,
    specialist) pairs that hold the query's text are scored again, without it. A trained head
    cannot forget one row: for `linear`, each fold of the queries is routed by a replica
    trained without that fold's texts instead.
    """
    if template.method == "linear":
        routed: dict[int, RouteDecision] = {}
        for fold in range(min(FOLDS, len(texts))):
            part = list(range(fold, len(texts), FOLDS))
            held = {texts[i] for i in part}
            kept = {name: [t for t in rows if t not in held] for name, rows in examples.items()}
            decisions = _replica(template, cache, kept).route_batch([texts[i] for i in part])
            routed.update(zip(part, decisions, strict=True))
        return [routed[i] for i in range(len(texts))]
    router = _replica(template, cache, examples)
    index = router.index
    rows: dict[str, set[int]] = {}
    for row, text in enumerate(index.texts):
        rows.setdefault(text, set()).add(row)
    pins = [find_pin(text, index.ids) for text in texts]
    asked = [text for _, text in pins]
    vectors = router.embed(asked)
    scores = np.array(router.scorer().scores(vectors), dtype=np.float32)
    for i, text in enumerate(asked):
        hidden = rows.get(text, set())
        for owner in {int(index.owners[row]) for row in hidden}:
            scores[i, owner] = _score_without(router, owner, hidden, vectors[i])
    cuts = router.threshold_row()
    fallback = index.ids.get(router.fallback) if router.fallback else None
    return [
        decide(
            index.names,
            row,
            cuts,
            router.policy,
            pinned=index.ids[pin] if pin else None,
            words=len(text.split()),
            fallback_id=fallback,
        )
        for (pin, text), row in zip(pins, scores, strict=True)
    ]


def _score_without(router: Router, owner: int, hidden: set[int], query: np.ndarray) -> float:
    """Specialist `owner`'s score for `query` by the router's example method, from its rows
    other than `hidden`; the lowest cosine when none is left."""
    index = router.index
    keep = [int(row) for row in index.slots[owner][index.mask[owner]] if row not in hidden]
    if not keep:
        return -1.0
    alone = RouterIndex([index.names[owner]], index.vectors[keep], np.zeros(len(keep), dtype=int))
    return float(alone.scores(query[None], router.method, router.k)[0, 0])


def _answerers(decision: RouteDecision) -> set[str]:
    """Who answers: a panel's members, else the chosen specialist (the fallback included)."""
    if decision.mode == "panel" and decision.panel:
        return set(decision.panel)
    return {decision.chosen} if decision.chosen else set()

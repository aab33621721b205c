"""`RouteDecision`: what the router chose and why, as data every caller can show."""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

from pydantic import BaseModel, Field

from router.compound import DecisionPart

RouteMode = Literal["single", "panel", "fallback", "pinned", "compound"]


class NearestExample(BaseModel):
    """One of a candidate's own examples that the query resembles most: the evidence."""

    text: str
    score: float = Field(description="Cosine similarity of the query to this example.")


class RouteTarget(BaseModel):
    name: str
    score: float = Field(
        description="How well the query fits this specialist: cosine -1..1 for centroid and "
        "k-NN, a probability 0..1 for the linear head."
    )
    threshold: float | None = Field(
        None, description="This specialist's own threshold; below it the query is not theirs."
    )
    nearest: list[NearestExample] = Field(
        default_factory=list, description="The specialist's examples closest to the query."
    )
    state: str | None = Field(
        None,
        description="Its live state when the gateway decided (running, starting, "
        "scaled_to_zero, pending, failed; `router.cluster`).",
    )
    open_requests: int | None = Field(
        None, description="Requests open on it at the gateway when it decided."
    )


class HandBack(BaseModel):
    """A chosen specialist that could not answer the query at all and handed it back."""

    name: str
    reason: str = Field(description="What the specialist said (for example, not arithmetic).")


class RouteDecision(BaseModel):
    targets: list[RouteTarget] = Field(description="Ranked candidates, best first.")
    mode: RouteMode
    threshold: float = Field(description="Threshold of the first target, the one compared.")
    reason: str
    method: str | None = Field(None, description="Scoring method that produced the scores.")
    panel: list[str] = Field(
        default_factory=list, description="In panel mode, the specialists that answer together."
    )
    follow_up_of: str | None = Field(
        None, description="Set when the turn stayed with this specialist of the conversation."
    )
    handed_back: list[HandBack] = Field(
        default_factory=list,
        description="Specialists that were chosen first and handed the query back, in order.",
    )
    parts: list[DecisionPart] = Field(
        default_factory=list,
        description="In compound mode, the query's parts in order, each with its specialist.",
    )

    @property
    def chosen(self) -> str | None:
        """The specialist that answers, or None when nothing is installed."""
        return self.targets[0].name if self.targets else None

    @property
    def fallback(self) -> bool:
        return self.mode == "fallback"

    def can_hand_back(self, live: Collection[str], fallback: str) -> bool:
        """Whether anyone could answer if the chosen specialist handed the query back."""
        if self.chosen is None:
            return False
        tried = {h.name for h in self.handed_back} | {self.chosen}
        return self._successor(tried, live, fallback) is not None

    def after_hand_back(
        self, name: str, reason: str, live: Collection[str], fallback: str
    ) -> RouteDecision | None:
        """The decision once `name` handed the query back: the next candidate that is live,
        not tried yet and above its own threshold, else the fallback specialist; None when
        nobody is left."""
        handed = [*self.handed_back, HandBack(name=name, reason=reason)]
        tried = {h.name for h in handed}
        found = self._successor(tried, live, fallback)
        if found is None:
            return None
        target, threshold = found
        rest = [t for t in self.targets if t.name not in tried and t is not target]
        # A conversation's thread was the decliner's: the next one answers this turn on its own.
        update: dict[str, object] = {
            "targets": [target, *rest],
            "handed_back": handed,
            "follow_up_of": None,
        }
        if threshold is None:
            why = f"{name} handed the query back ({reason}); no other candidate fits: fallback"
            update |= {"reason": why, "mode": "fallback"}
        else:
            why = f"{name} handed the query back ({reason}); next candidate: {target.name}"
            update |= {"reason": why, "threshold": threshold}
        return self.model_copy(update=update)

    def restricted_to(
        self, able: Collection[str], need: str, live: Collection[str], fallback: str
    ) -> RouteDecision | None:
        """The decision among the specialists in `able` only (a request needs `need`, which
        only they declare): itself when its choice is able; else the next able candidate that
        is live and above its threshold, else the fallback when able; None when none is."""
        if self.chosen is None or self.chosen in able:
            return self
        unable = {t.name for t in self.targets if t.name not in able}
        if fallback not in able:
            unable.add(fallback)
        return self.without(
            unable, f"{self.reason}; {self.chosen} does not serve {need}", live, fallback
        )

    def without(
        self, excluded: Collection[str], why: str, live: Collection[str], fallback: str
    ) -> RouteDecision | None:
        """The decision once the specialists in `excluded` are out of the running: the next
        candidate that is live and above its threshold, else the fallback; None when none is.
        `why` starts the new reason."""
        found = self._successor(set(excluded), live, fallback)
        if found is None:
            return None
        target, threshold = found
        rest = [t for t in self.targets if t is not target]
        update: dict[str, object] = {"targets": [target, *rest], "follow_up_of": None}
        if threshold is None:
            update |= {"reason": f"{why}: fallback {target.name}", "mode": "fallback"}
        else:
            update |= {"reason": f"{why}: next candidate {target.name}", "threshold": threshold}
        return self.model_copy(update=update)

    def _successor(
        self, tried: set[str], live: Collection[str], fallback: str
    ) -> tuple[RouteTarget, float | None] | None:
        """Who answers after the specialists in `tried`, with the threshold it passed (None:
        it is the fallback, which passes none)."""
        rest = [t for t in self.targets if t.name not in tried]
        for target in rest:
            threshold = self.threshold if target.threshold is None else target.threshold
            if target.name in live and target.score >= threshold:
                return target, threshold
        if fallback in live and fallback not in tried:
            known = next((t for t in rest if t.name == fallback), None)
            return known or RouteTarget(name=fallback, score=0.0), None
        return None

"""`RouteDecision`: what the router chose and why, as data every caller can show."""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

from pydantic import BaseModel, Field

RouteMode = Literal["single", "panel", "fallback", "pinned"]


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

    @property
    def chosen(self) -> str | None:
        """The specialist that answers, or None when nothing is installed."""
        return self.targets[0].name if self.targets else None

    @property
    def fallback(self) -> bool:
        return self.mode == "fallback"

    def after_hand_back(
        self, name: str, reason: str, live: Collection[str], fallback: str
    ) -> RouteDecision | None:
        """The decision once `name` handed the query back: the next candidate that is live,
        not tried yet and above its own threshold, else the fallback specialist; None when
        nobody is left."""
        handed = [*self.handed_back, HandBack(name=name, reason=reason)]
        tried = {h.name for h in handed}
        rest = [t for t in self.targets if t.name not in tried]
        # A conversation's thread was the decliner's: the next one answers this turn on its own.
        common = {"handed_back": handed, "follow_up_of": None}
        for target in rest:
            threshold = self.threshold if target.threshold is None else target.threshold
            if target.name in live and target.score >= threshold:
                ranked = [target, *(t for t in rest if t is not target)]
                why = f"{name} handed the query back ({reason}); next candidate: {target.name}"
                update = {"targets": ranked, "reason": why, "threshold": threshold}
                return self.model_copy(update={**update, **common})
        if fallback in live and fallback not in tried:
            chosen = next((t for t in rest if t.name == fallback), None)
            chosen = chosen or RouteTarget(name=fallback, score=0.0)
            ranked = [chosen, *(t for t in rest if t is not chosen)]
            why = f"{name} handed the query back ({reason}); no other candidate fits: fallback"
            update = {"targets": ranked, "reason": why, "mode": "fallback"}
            return self.model_copy(update={**update, **common})
        return None

"""`RouteDecision`: what the router chose and why, as data every caller can show."""

from __future__ import annotations

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

    @property
    def chosen(self) -> str | None:
        """The specialist that answers, or None when nothing is installed."""
        return self.targets[0].name if self.targets else None

    @property
    def fallback(self) -> bool:
        return self.mode == "fallback"

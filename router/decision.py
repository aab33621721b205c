"""`RouteDecision`: what the router chose and why, as data every caller can show."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

RouteMode = Literal["single", "panel", "fallback", "pinned"]


class RouteTarget(BaseModel):
    name: str
    score: float = Field(description="Similarity of the query to this specialist, -1..1.")


class RouteDecision(BaseModel):
    targets: list[RouteTarget] = Field(description="Ranked candidates, best first.")
    mode: RouteMode
    threshold: float
    reason: str

    @property
    def chosen(self) -> str | None:
        """The specialist that answers, or None when nothing is installed."""
        return self.targets[0].name if self.targets else None

    @property
    def fallback(self) -> bool:
        return self.mode == "fallback"

"""Embedding router: picks which specialist answers a query, and explains why."""

from router.decision import RouteDecision, RouteMode, RouteTarget
from router.encoder import Encoder, SentenceTransformerEncoder
from router.router import Router, RouterIndex

__all__ = [
    "Encoder",
    "RouteDecision",
    "RouteMode",
    "RouteTarget",
    "Router",
    "RouterIndex",
    "SentenceTransformerEncoder",
]

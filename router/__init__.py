"""Embedding router: picks which specialist answers a query, and explains why."""

from router.batcher import RouteBatcher
from router.decision import NearestExample, RouteDecision, RouteMode, RouteTarget
from router.encoder import Encoder, SentenceTransformerEncoder
from router.index import RouterIndex
from router.router import METHOD_DEFAULTS, FitReport, Method, Router

__all__ = [
    "METHOD_DEFAULTS",
    "Encoder",
    "FitReport",
    "Method",
    "NearestExample",
    "RouteBatcher",
    "RouteDecision",
    "RouteMode",
    "RouteTarget",
    "Router",
    "RouterIndex",
    "SentenceTransformerEncoder",
]

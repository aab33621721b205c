"""Held-out evaluation: named metrics over chat records, and runners that score a local model or
a specialist behind a running mesh.

Change rules: a metric is a function registered by name in `metrics.py` (score in [0, 1], the
reference in `record.answer`, anything else in `record.check`); anything that runs model output
(SQL, Python) goes through the read-only or sandboxed helpers there, never `exec` in this process.
"""

from __future__ import annotations

from specialists.evaluation.metrics import get_metric, metric_names, register, score
from specialists.evaluation.runner import (
    EvalItem,
    EvalReport,
    Generator,
    LocalGenerator,
    MeshGenerator,
    compare,
    evaluate,
    with_system,
)

__all__ = [
    "EvalItem",
    "EvalReport",
    "Generator",
    "LocalGenerator",
    "MeshGenerator",
    "compare",
    "evaluate",
    "get_metric",
    "metric_names",
    "register",
    "score",
    "with_system",
]

"""Tasks with checkable answers and generated data, for fine-tuning and held-out evaluation.

Each task module has `SYSTEM_PROMPT` (the fine-tuned specialist's prompt; training records start
with it), `BASE_SYSTEM_PROMPT` (the best prompt for the un-tuned base, with a worked example, so
a comparison gives the base its fair chance), `METRIC` (a name in `specialists.evaluation`), and
`make_splits(n_train, n_eval, seed)`. Evaluation splits are held out by structure (other schemas
or kinds of text, some unseen phrasings), recorded per record as `check["domain"]` and
`check["template"]`; `structure_overlap` proves the splits share no domain.

Change rules: a task is a module plus one line in `TASKS`; keep generators stdlib-only and
seeded, and never move a held-out domain into training (published scores would stop meaning
anything).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from registry.errors import InvalidRequestError
from specialists.tasks import extract, sql
from specialists.tasks.common import structure_overlap
from specialists.training.records import ChatRecord

__all__ = ["TASKS", "Task", "get_task", "structure_overlap", "task_names"]

Splits = Callable[[int, int, int], tuple[list[ChatRecord], list[ChatRecord]]]


@dataclass(frozen=True)
class Task:
    name: str
    system_prompt: str
    base_system_prompt: str
    metric: str
    make_splits: Splits

    @classmethod
    def from_module(cls, name: str, module: ModuleType) -> Task:
        return cls(
            name, module.SYSTEM_PROMPT, module.BASE_SYSTEM_PROMPT, module.METRIC,
            module.make_splits,
        )  # fmt: skip


TASKS: dict[str, Task] = {
    "sql": Task.from_module("sql", sql),
    "extract": Task.from_module("extract", extract),
}


def task_names() -> list[str]:
    return sorted(TASKS)


def get_task(name: str) -> Task:
    """The task called `name`; an unknown name is an error listing the known ones."""
    if name not in TASKS:
        raise InvalidRequestError(
            f"unknown task {name!r}; known tasks: {', '.join(task_names())}", param="task"
        )
    return TASKS[name]

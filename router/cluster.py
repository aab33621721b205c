"""Routing that knows the cluster: a decision adjusted for each candidate's live state and load.

The router scores queries against examples; it does not know that one specialist is saturated
and another scaled to zero. After it decides, `prefer_ready` applies what the cluster says:
1. Every candidate is annotated with its state and open requests, so the decision shows them.
2. A specialist that cannot run (`pending`: no node can place a replica, or `failed`) is never
   chosen: the next candidate above its own threshold answers, else the fallback; None when
   nobody can (the caller says why, 503).
3. Among a panel's members (candidates whose scores tie within the panel margin, all above their
   thresholds), those that are warm and have room (`ready`) win: members that are saturated,
   scaled to zero or starting drop out when a ready one remains, and the reason says so. A
   panel left with one member answers alone (mode `single`).
Pinned requests (`model=<name>`, `@name`) are only annotated: the client chose.
Pure, so it is tested without Ray; `mesh.controller` computes the loads, the gateway counts
open requests.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Literal, get_args

from pydantic import BaseModel, Field

from router.decision import RouteDecision, RouteTarget

AvailabilityState = Literal["running", "starting", "scaled_to_zero", "pending", "failed"]
AVAILABILITY_STATES: tuple[str, ...] = get_args(AvailabilityState)
# Replica states counted per specialist (`mesh.controller` maps Serve's onto these).
REPLICA_STATES = ("running", "starting", "stopping")
CANNOT_RUN = frozenset({"pending", "failed"})


class SpecialistLoad(BaseModel):
    """What the controller knows of one specialist's replicas."""

    state: AvailabilityState
    replicas: dict[str, int] = Field(
        default_factory=dict, description="Replicas by state: running, starting, stopping."
    )
    per_replica: int = Field(1, ge=1, description="Requests one replica takes at once.")
    note: str | None = Field(None, description="Why it is pending, when it is.")

    @property
    def capacity(self) -> int:
        """Requests the running replicas take at once; more than this wait in a queue."""
        return self.replicas.get("running", 0) * self.per_replica


def load_note(name: str, load: SpecialistLoad | None, open_requests: int) -> str:
    """How a candidate stands, in words for a decision's reason."""
    if load is None:
        return f"{name} state unknown"
    if load.state == "running":
        running = load.replicas.get("running", 0)
        word = "replica" if running == 1 else "replicas"
        full = "saturated" if open_requests >= load.capacity else "has room"
        return f"{name} {full} ({open_requests} open on {running} {word} x {load.per_replica})"
    label = load.state.replace("_", " ")
    return f"{name} {label}" + (f" ({load.note})" if load.note else "")


def is_ready(load: SpecialistLoad | None, open_requests: int) -> bool:
    """Warm and with room: a request sent now starts at once."""
    return load is not None and load.state == "running" and open_requests < load.capacity


def prefer_ready(
    decision: RouteDecision,
    loads: Mapping[str, SpecialistLoad],
    open_requests: Mapping[str, int],
    live: Collection[str],
    fallback: str | None,
) -> RouteDecision | None:
    """`decision` adjusted for the cluster (rules in the module docstring); `live`: the
    specialists that may answer now (serving, and able to serve what the request needs),
    `loads` what the controller knows of them."""
    targets = [_annotated(t, loads, open_requests) for t in decision.targets]
    decision = decision.model_copy(update={"targets": targets})
    if decision.chosen is None or decision.mode == "pinned":
        return decision
    blocked = {t.name for t in targets if t.state in CANNOT_RUN}
    if fallback is not None and _state(loads, fallback) in CANNOT_RUN:
        blocked.add(fallback)
    if decision.mode == "panel":
        trimmed = _panel_of_ready(decision, loads, open_requests, blocked, live)
        if trimmed is not None:
            return trimmed
    if decision.chosen not in blocked:
        return decision
    note = load_note(decision.chosen, loads.get(decision.chosen), 0)
    runnable = [name for name in live if name not in blocked]
    moved = decision.without(
        blocked, f"{decision.reason}; cluster: {note}", runnable, fallback or ""
    )
    if moved is not None and moved.mode == "panel":  # no panel member could run
        moved = moved.model_copy(update={"mode": "single", "panel": []})
    return moved


def _panel_of_ready(
    decision: RouteDecision,
    loads: Mapping[str, SpecialistLoad],
    open_requests: Mapping[str, int],
    blocked: set[str],
    live: Collection[str],
) -> RouteDecision | None:
    """The panel among its members that may answer and can run, the warm ones with room
    first; None when no member can (the caller moves on to the next candidate)."""
    members = decision.panel or [t.name for t in decision.targets if t.score >= decision.threshold]
    runnable = [m for m in members if m in live and m not in blocked]
    if not runnable:
        return None
    ready = [m for m in runnable if is_ready(loads.get(m), open_requests.get(m, 0))]
    keep = ready or runnable
    if keep == members:
        return decision
    dropped = [m for m in members if m not in keep]
    notes = "; ".join(_why_out(m, loads, open_requests, live) for m in dropped)
    first = next(t for t in decision.targets if t.name == keep[0])
    targets = [first, *(t for t in decision.targets if t is not first)]
    if len(keep) == 1:
        reason = f"{decision.reason}; cluster: {notes}: {keep[0]} answers alone"
        return decision.model_copy(
            update={"targets": targets, "mode": "single", "panel": [], "reason": reason}
        )
    reason = f"{decision.reason}; cluster: {notes}: the panel is {', '.join(keep)}"
    return decision.model_copy(update={"targets": targets, "panel": keep, "reason": reason})


def _why_out(
    name: str,
    loads: Mapping[str, SpecialistLoad],
    open_requests: Mapping[str, int],
    live: Collection[str],
) -> str:
    if name not in live:
        return f"{name} may not answer this request"
    return load_note(name, loads.get(name), open_requests.get(name, 0))


def _annotated(
    target: RouteTarget, loads: Mapping[str, SpecialistLoad], open_requests: Mapping[str, int]
) -> RouteTarget:
    return target.model_copy(
        update={
            "state": _state(loads, target.name),
            "open_requests": open_requests.get(target.name, 0),
        }
    )


def _state(loads: Mapping[str, SpecialistLoad], name: str) -> str | None:
    load = loads.get(name)
    return load.state if load is not None else None

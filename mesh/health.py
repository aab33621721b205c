"""What `/healthz` says: the mesh's state, and per specialist only what a client may see.

A specialist that failed to deploy makes the mesh `degraded`, not down: the others serve. Serve's
deploy messages can hold tracebacks with server paths, and replica details name pids and nodes,
so those go to the operator only.
"""

from __future__ import annotations

from typing import Any

FAILED_STATUSES = frozenset({"DEPLOY_FAILED", "UNHEALTHY"})
# `availability`: running, starting, scaled_to_zero (the next request waits for a cold start),
# pending or failed; what a client may plan around.
PUBLIC_FIELDS = ("status", "version", "pending", "availability")


def mesh_state(status: dict[str, Any]) -> str:
    if not status.get("ready"):
        return "starting"
    failed = any(s.get("status") in FAILED_STATUSES for s in status["specialists"].values())
    return "degraded" if failed or status.get("registry_error") else "ok"


def health_body(status: dict[str, Any], *, detailed: bool) -> dict[str, Any]:
    """The controller's status as a client (or, `detailed`, the operator) may read it."""
    specialists = status.get("specialists", {})
    if detailed:
        shown = specialists
    else:
        shown = {
            name: {
                **{key: state.get(key) for key in PUBLIC_FIELDS},
                "replicas": len(state.get("replicas") or []),
            }
            for name, state in specialists.items()
        }
    body: dict[str, Any] = {
        "status": mesh_state(status),
        "ready": bool(status.get("ready")),
        "generation": status.get("generation"),
        "specialists": shown,
    }
    if detailed:
        body["registry_error"] = status.get("registry_error")
    else:
        body["registry"] = "unavailable" if status.get("registry_error") else "ok"
    return body

"""Render a response's `mesh.trace` as a tree, for `mesh ask --trace` and the UI."""

from __future__ import annotations

from typing import Any


def _line(event: dict[str, Any]) -> str:
    outcome = event.get("outcome", "ok")
    parts = [
        f"{event['from']} -> {event['to']}",
        f"[{event.get('kind', 'ask')}, hop {event.get('hop', 0)}]",
        outcome,
        f"{event.get('latency_ms', 0):.0f} ms",
    ]
    if event.get("tokens"):
        parts.append(f"{event['tokens']} tok")
    text = "  ".join(parts)
    if event.get("content"):
        text += f"  {short(event['content'])!r}"
    if event.get("reply"):
        text += f" => {short(event['reply'])!r}"
    if event.get("note"):
        text += f"  ({event['note']})"
    return text


def trace_root(mesh_info: dict[str, Any]) -> str:
    """Where a response's trace tree starts: the gateway for a panel, the first specialist
    that handed the query back, else the specialist that answered."""
    decision = mesh_info["decision"]
    if decision["mode"] in ("panel", "compound"):  # the mesh itself asked every member
        return "mesh"
    handed = decision.get("handed_back") or []
    return str(handed[0]["name"]) if handed else str(mesh_info["specialist"])


def handed_back_note(decision: dict[str, Any]) -> str:
    """'; handed back by math: not arithmetic' for each hand-back (short), or ''."""
    return "".join(
        f"; handed back by {h['name']}: {short(h['reason'])}"
        for h in decision.get("handed_back") or []
    )


def decision_note(decision: dict[str, Any]) -> str:
    """Hand-backs, and for a compound question which specialist answered which part."""
    parts = "".join(
        f"; '{short(p['text'], 30)}' -> {p['specialist']}" for p in decision.get("parts") or []
    )
    return parts + handed_back_note(decision)


def short(text: str, limit: int = 60) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def render_trace(root: str, events: list[dict[str, Any]]) -> str:
    """One line per message, nested under the specialist that sent it."""
    lines = [root]
    used: set[int] = set()

    def children(sender: str, prefix: str) -> None:
        mine = [i for i, e in enumerate(events) if e["from"] == sender and i not in used]
        for position, index in enumerate(mine):
            used.add(index)
            last = position == len(mine) - 1
            event = events[index]
            lines.append(f"{prefix}{'└─ ' if last else '├─ '}{_line(event)}")
            if event.get("outcome", "ok") == "ok" and event["to"] != sender:
                children(event["to"], prefix + ("   " if last else "│  "))

    children(root, "")
    for index, event in enumerate(events):  # anything not reachable from the root
        if index not in used:
            lines.append(f"└─ {_line(event)}")
    return "\n".join(lines)

"""The Mesh tab: specialists, replicas and nodes, request rates and latency, refreshed live."""

from __future__ import annotations

import time
from typing import Any

from mesh.client import MeshClient
from registry.errors import MeshError

COLUMNS = ["specialist", "version", "status", "replicas", "nodes", "requests/s", "p50 ms"]
HISTORY_POINTS = 90
REFRESH_S = 2.0


class MeshMonitor:
    """Turns counters into rates between refreshes, and keeps a short history for the chart."""

    def __init__(self, client: MeshClient) -> None:
        self.client = client
        self.last: dict[str, tuple[float, int]] = {}
        self.history: list[dict[str, Any]] = []

    def snapshot(self) -> tuple[list[list[Any]], list[dict[str, Any]], str]:
        try:
            health = self.client.health()
            cards = {c["name"]: c for c in self.client.specialists()}
        except MeshError as error:
            return [], self.history, f"mesh unavailable: {error.message}"
        now = time.time()
        rows = []
        for name, state in sorted(health.get("specialists", {}).items()):
            stats = (cards.get(name) or {}).get("stats") or {}
            requests = int(stats.get("requests", 0))
            before = self.last.get(name)
            rate = (requests - before[1]) / max(now - before[0], 1e-6) if before else 0.0
            self.last[name] = (now, requests)
            self.history.append({"time": now, "specialist": name, "requests/s": round(rate, 3)})
            replicas = state.get("replicas", [])
            nodes = sorted({(r.get("node_id") or "?")[:8] for r in replicas})
            rows.append(
                [
                    name,
                    state.get("version"),
                    state.get("status"),
                    len(replicas),
                    ", ".join(nodes),
                    round(rate, 2),
                    stats.get("p50_ms"),
                ]
            )
        cutoff = now - HISTORY_POINTS * REFRESH_S
        self.history = [point for point in self.history if point["time"] >= cutoff]
        summary = f"mesh **{health.get('status')}** · generation {health.get('generation')}"
        if health.get("registry_error"):
            summary += f" · registry: {health['registry_error']}"
        return rows, self.history, summary


def build_mesh_tab(client: MeshClient) -> Any:
    """Render the mesh tab; returns its timer, which the page runs only while the tab is open."""
    import gradio as gr
    import pandas as pd

    monitor = MeshMonitor(client)
    summary = gr.Markdown(elem_id="mesh-summary")
    table = gr.Dataframe(headers=COLUMNS, interactive=False, elem_id="mesh-table")
    chart = gr.LinePlot(
        x="time",
        y="requests/s",
        color="specialist",
        title="Routed requests per second",
        elem_id="mesh-chart",
    )
    with gr.Row():
        name = gr.Dropdown(label="Specialist", choices=[], elem_id="scale-picker")
        replicas = gr.Number(label="Replicas", value=1, minimum=0, maximum=64, precision=0)
        token = gr.Textbox(label="Admin token", type="password")
        apply = gr.Button("Scale")
    outcome = gr.Markdown()

    def refresh() -> tuple[Any, Any, str, Any]:
        rows, history, text = monitor.snapshot()
        frame = pd.DataFrame(history or [], columns=["time", "specialist", "requests/s"])
        frame["time"] = pd.to_datetime(frame["time"], unit="s")
        names = gr.update(choices=[row[0] for row in rows])
        return rows, frame, text, names

    def scale(specialist: str | None, count: float, secret: str) -> str:
        if not specialist:
            return "Pick a specialist first."
        try:
            client.scale(specialist, int(count), secret or None)
        except MeshError as error:
            return f"**scale refused:** {error.message}"
        return f"Scaling **{specialist}** to {int(count)} replicas; the table follows live."

    timer = gr.Timer(REFRESH_S, active=False)
    timer.tick(refresh, outputs=[table, chart, summary, name])
    apply.click(scale, inputs=[name, replicas, token], outputs=outcome)
    return timer

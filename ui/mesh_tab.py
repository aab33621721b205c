"""The Mesh tab: specialists, their state (running, scaled to zero, ...), replicas and nodes,
open and queued requests, request rates, latency and time to first token (from `/metrics`, the
numbers Prometheus scrapes), refreshed live, and
the router: its artifact, operating point and the trade-off curve its thresholds sit on.

`/healthz` shows replica details (nodes) to the admin token only; the table asks with the token
typed into this tab, so the node column fills in for the operator and stays empty for others.
Scaling goes out with that typed token too: the UI server holds no admin credential.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from mesh.client import MeshClient
from mesh.metrics import SpecialistNumbers, bucket_quantile, read_exposition
from registry.errors import MeshError
from ui.app import public_message, redact_paths

COLUMNS = [
    "specialist",
    "version",
    "status",
    "state",
    "replicas",
    "nodes",
    "open",
    "queued",
    "requests/s",
    "p50 ms",
    "TTFT p50 ms",
]
HISTORY_POINTS = 90
REFRESH_S = 2.0


class MeshMonitor:
    """Reads `/metrics` (the numbers Prometheus scrapes) and `/healthz`; turns counters into
    rates and histograms into medians over the time since the last refresh, and keeps a short
    history for the chart."""

    def __init__(self, client: MeshClient) -> None:
        self.client = client
        self.last: dict[str, tuple[float, SpecialistNumbers]] = {}
        self.history: list[dict[str, Any]] = []

    def snapshot(
        self, token: str | None = None
    ) -> tuple[list[list[Any]], list[dict[str, Any]], str]:
        try:
            health = self.client.health(token or None)
            numbers = read_exposition(self.client.metrics())
        except MeshError as error:
            return [], self.history, f"mesh unavailable: {public_message(error)}"
        now = time.time()
        rows = []
        for name, state in sorted(health.get("specialists", {}).items()):
            now_numbers = numbers.get(name) or SpecialistNumbers()
            before = self.last.get(name)
            rate = 0.0
            since: SpecialistNumbers | None = None
            if before is not None:
                since = before[1]
                rate = (now_numbers.finished - since.finished) / max(now - before[0], 1e-6)
            self.last[name] = (now, now_numbers)
            self.history.append({"time": now, "specialist": name, "requests/s": round(rate, 3)})
            count, nodes = replica_summary(state.get("replicas"))
            rows.append(
                [
                    name,
                    state.get("version"),
                    state.get("status"),
                    str(state.get("availability") or "").replace("_", " "),
                    count,
                    nodes,
                    int(now_numbers.open_requests),
                    int(now_numbers.queue_depth),
                    round(max(rate, 0.0), 2),
                    _median_ms(
                        now_numbers.latency_buckets, since.latency_buckets if since else None
                    ),
                    _median_ms(now_numbers.ttft_buckets, since.ttft_buckets if since else None),
                ]
            )
        cutoff = now - HISTORY_POINTS * REFRESH_S
        self.history = [point for point in self.history if point["time"] >= cutoff]
        summary = f"mesh **{health.get('status')}** · generation {health.get('generation')}"
        if health.get("registry_error"):
            summary += f" · registry: {redact_paths(str(health['registry_error']))}"
        elif health.get("registry") == "unavailable":
            summary += " · registry unavailable"
        return rows, self.history, summary


def _median_ms(
    buckets: list[tuple[float, float]], before: list[tuple[float, float]] | None
) -> float | None:
    """The median since the last refresh, or since the gateway began when nothing is new."""
    median = bucket_quantile(0.5, buckets, before) if before else None
    if median is None:
        median = bucket_quantile(0.5, buckets)
    return None if median is None else round(median * 1000, 1)


def router_markdown(status: dict[str, Any]) -> str:
    """`GET /v1/router` as markdown: which router serves, and where its thresholds sit."""
    from registry.router_artifacts import TradeOffPoint
    from router.calibrate import trade_off_table

    artifact = status.get("artifact")
    if not artifact:
        return (
            "**Router**: frozen encoder, default thresholds (fit it on labelled queries with "
            "`mesh router fit --val FILE`)."
        )
    target = artifact.get("operating_point") or {}
    if target.get("oos_recall") is not None:
        aim = f"out-of-scope recall >= {target['oos_recall']:g}"
    elif target.get("precision") is not None:
        aim = f"precision >= {target['precision']:g}"
    else:
        aim = "balanced"
    head = "; learns out-of-scope queries" if artifact.get("rejects_out_of_scope") else ""
    lines = [
        f"**Router** `{artifact.get('version')}` · {artifact.get('method')}{head} · "
        f"{'fine-tuned' if artifact.get('fine_tuned') else 'frozen'} encoder · "
        f"{artifact.get('n_labelled', 0)} labelled queries · operating point: {aim}"
    ]
    curve = [TradeOffPoint.model_validate(point) for point in artifact.get("trade_off") or []]
    chosen = artifact.get("chosen")
    if curve:
        in_use = curve[chosen] if isinstance(chosen, int) and 0 <= chosen < len(curve) else None
        lines += [
            "",
            "Trade-off on the labelled queries (out of fold):",
            "",
            trade_off_table(curve, in_use),
        ]
    return "\n".join(lines)


def replica_summary(replicas: Any) -> tuple[int, str]:
    """(count, nodes): the operator's /healthz lists replicas, a client's only counts them."""
    if isinstance(replicas, int):
        return replicas, ""
    listed = [r for r in replicas or [] if isinstance(r, dict)]
    nodes = sorted({(r.get("node_id") or "?")[:8] for r in listed})
    return len(listed), ", ".join(nodes)


class MeshTab(NamedTuple):
    timer: Any  # the page runs it only while the tab is open
    token: Any  # the admin token box, which `/ui/?token=...` pre-fills


def build_mesh_tab(client: MeshClient) -> MeshTab:
    """Render the mesh tab inside the current Blocks context."""
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
        token = gr.Textbox(label="Admin token", type="password", elem_id="mesh-token")
        apply = gr.Button("Scale")
    outcome = gr.Markdown()
    router = gr.Markdown(elem_id="mesh-router")

    def refresh(secret: str | None = None) -> tuple[Any, Any, str, Any, str]:
        rows, history, text = monitor.snapshot((secret or "").strip() or None)
        frame = pd.DataFrame(history or [], columns=["time", "specialist", "requests/s"])
        frame["time"] = pd.to_datetime(frame["time"], unit="s")
        names = gr.update(choices=[row[0] for row in rows])
        try:
            routing = router_markdown(client.router_status())
        except MeshError as error:
            routing = f"router unavailable: {public_message(error)}"
        return rows, frame, text, names, routing

    def scale(specialist: str | None, count: float | None, secret: str | None) -> str:
        if not specialist:
            return "Pick a specialist first."
        secret = (secret or "").strip()
        if not secret:
            return "**Scale refused:** paste the admin token into the token box first."
        try:
            client.scale(specialist, int(count or 0), secret)
        except MeshError as error:
            return f"**Scale refused:** {public_message(error)}"
        return f"Scaling **{specialist}** to {int(count or 0)} replicas; the table follows live."

    timer = gr.Timer(REFRESH_S, active=False)
    timer.tick(
        refresh,
        inputs=token,
        outputs=[table, chart, summary, name, router],
        api_visibility="private",
    )
    apply.click(scale, inputs=[name, replicas, token], outputs=outcome, api_name="scale")
    return MeshTab(timer, token)

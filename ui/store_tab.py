"""The Store tab: browse and search specialist cards, read a card, publish, install/uninstall."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from mesh.client import MeshClient
from registry.errors import MeshError

FIELD_ERROR = re.compile(r"^\s{2}(?P<field>[\w.\-\[\]]+|\(top level\)): (?P<problem>.+)$")


def card_html(card: dict[str, Any]) -> str:
    """One specialist as a card; escaped, since manifests come from publishers."""
    e = html.escape
    stats = card.get("stats") or {}
    badges = []
    if card.get("installed"):
        badges.append(f"<span class='badge installed'>installed {e(card['installed'])}</span>")
    if card.get("live"):
        badges.append("<span class='badge live'>live</span>")
    if card.get("deprecated"):
        badges.append(f"<span class='badge deprecated'>deprecated: {e(card['deprecated'])}</span>")
    if card.get("yanked"):
        badges.append("<span class='badge yanked'>yanked</span>")
    tags = " ".join(f"<span class='tag'>{e(t)}</span>" for t in card.get("tags", []))
    usage = (
        f"{stats.get('requests', 0)} requests · p50 {stats.get('p50_ms') or 0:.0f} ms · "
        f"{stats.get('thumbs_up', 0)} up / {stats.get('thumbs_down', 0)} down"
    )
    return (
        f"<div class='mesh-card' data-name='{e(card['name'])}'>"
        f"<div class='title'><b>{e(card['name'])}</b> <small>v{e(card['version'])} · "
        f"{e(card.get('owner') or '')}</small></div>"
        f"<div class='badges'>{' '.join(badges)}</div>"
        f"<p>{e(card.get('description') or '')}</p><div class='tags'>{tags}</div>"
        f"<div class='usage'>{usage}</div></div>"
    )


CSS = """
.mesh-cards {display: grid; gap: 12px;
  grid-template-columns: repeat(auto-fill, minmax(260px, 1fr));}
.mesh-card {border: 1px solid #ddd; border-radius: 10px; padding: 12px;}
.mesh-card .badge {font-size: 0.75em; border-radius: 6px; padding: 1px 6px; margin-right: 4px;}
.badge.installed {background: #e3f2fd;} .badge.live {background: #e8f5e9;}
.badge.deprecated {background: #fff3e0;} .badge.yanked {background: #ffebee;}
.mesh-card .tag {font-size: 0.75em; color: #555; margin-right: 6px;}
.mesh-card .usage {font-size: 0.8em; color: #666; margin-top: 6px;}
"""


def cards_html(cards: list[dict[str, Any]]) -> str:
    if not cards:
        return "<p>No specialists found.</p>"
    return "<div class='mesh-cards'>" + "".join(card_html(c) for c in cards) + "</div>"


def field_errors(message: str) -> list[list[str]]:
    """'manifest is invalid:\\n  name: ...' -> [[field, problem], ...] for the errors table."""
    rows = [
        [m.group("field"), m.group("problem")]
        for line in message.splitlines()
        if (m := FIELD_ERROR.match(line))
    ]
    return rows or [["(manifest)", message]]


def detail_markdown(detail: dict[str, Any]) -> str:
    versions = ", ".join(detail.get("versions", []))
    flags = []
    if detail.get("deprecated"):
        flags.append(f"**Deprecated:** {detail['deprecated']}")
    for version, reason in (detail.get("yanked_versions") or {}).items():
        flags.append(f"**Yanked {version}:** {reason}")
    examples = "\n".join(f"- {x}" for x in detail["manifest"].get("examples", [])[:8])
    return "\n\n".join(
        part
        for part in [
            f"## {detail['name']} `v{detail['version']}`",
            f"Owner: **{detail.get('owner')}** · versions: {versions} · "
            f"installed: {detail.get('installed') or 'no'}",
            *flags,
            detail.get("description", ""),
            detail.get("card") or "",
            f"**Examples**\n\n{examples}",
        ]
        if part
    )


def build_store_tab(client: MeshClient) -> Any:
    """Render the store tab; returns the refresh function for the page's load event."""
    import gradio as gr

    with gr.Row():
        query = gr.Textbox(label="Search the store", placeholder="e.g. fix my python code", scale=4)
        search = gr.Button("Search", scale=1)
    cards = gr.HTML(elem_id="store-cards")
    with gr.Row():
        with gr.Column(scale=2):
            names = gr.Dropdown(label="Specialist", choices=[], elem_id="store-detail-picker")
            detail = gr.Markdown(elem_id="store-detail")
        with gr.Column(scale=1):
            gr.Markdown("### Publish a manifest")
            upload = gr.File(
                label="Manifest (YAML)",
                file_types=[".yaml", ".yml", ".json"],
                elem_id="publish-upload",
            )
            token = gr.Textbox(label="Owner or admin token", type="password", elem_id="store-token")
            publish = gr.Button("Publish", variant="primary", elem_id="publish-button")
            outcome = gr.Markdown(elem_id="publish-outcome")
            errors = gr.Dataframe(
                headers=["field", "problem"],
                label="Validation errors",
                visible=False,
                elem_id="publish-errors",
                interactive=False,
            )
            gr.Markdown("### Install in this mesh")
            install = gr.Button("Install", elem_id="install-button")
            uninstall = gr.Button("Uninstall", elem_id="uninstall-button")
            admin_outcome = gr.Markdown(elem_id="admin-outcome")

    def refresh(text: str = "") -> tuple[str, Any]:
        try:
            found = client.specialists(text.strip() or None)
        except MeshError as error:
            return f"<p>Store unavailable: {html.escape(error.message)}</p>", gr.update()
        names_update = gr.update(choices=sorted(c["name"] for c in found))
        return cards_html(found), names_update

    def show(name: str | None) -> str:
        if not name:
            return ""
        try:
            return detail_markdown(client.specialist(name))
        except MeshError as error:
            return f"**{error.message}**"

    def do_publish(file: Any, secret: str) -> tuple[str, Any, str, Any]:
        if file is None:
            return "Choose a manifest file first.", gr.update(visible=False), *refresh()
        path = Path(file if isinstance(file, str) else file.name)
        try:
            result = client.publish(path.read_text(encoding="utf-8"), secret or None)
        except MeshError as error:
            rows = field_errors(error.message)
            return (
                f"**Not published:** {len(rows)} problem(s)",
                gr.update(value=rows, visible=True),
                *refresh(),
            )
        note = " and installed" if result.get("installed") else ""
        return f"Published `{result['published']}`{note}.", gr.update(visible=False), *refresh()

    def change_install(name: str | None, secret: str, action: str) -> str:
        if not name:
            return "Pick a specialist first."
        try:
            if action == "install":
                client.install(name, secret or None)
            else:
                client.uninstall(name, secret or None)
        except MeshError as error:
            return f"**{action} refused:** {error.message}"
        return f"{action} of **{name}** requested; the mesh applies it live."

    search.click(refresh, inputs=query, outputs=[cards, names])
    query.submit(refresh, inputs=query, outputs=[cards, names])
    names.change(show, inputs=names, outputs=detail)
    publish.click(do_publish, inputs=[upload, token], outputs=[outcome, errors, cards, names])
    install.click(
        lambda n, t: change_install(n, t, "install"), inputs=[names, token], outputs=admin_outcome
    )
    uninstall.click(
        lambda n, t: change_install(n, t, "uninstall"), inputs=[names, token], outputs=admin_outcome
    )
    return refresh, [cards, names]

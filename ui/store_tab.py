"""The Store tab: browse and search specialist cards, read a card, publish, install/uninstall.

Every write goes out with the token typed into this page (never a credential of the UI server),
and the gateway decides; a refusal is shown as such. Publishing reads only a file that Gradio
stored from an upload (`read_upload`), never a path an API caller names. "Check impact" shows
the quality gate's report (a dry run) before anything is published; when the gate refuses a
publish, "Publish anyway" sends it again with force (a separate event rather than a checkbox
input, so the `publish` event keeps its two inputs for API callers).
"""

from __future__ import annotations

import html
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from mesh.client import MeshClient
from registry.errors import (
    AuthenticationError,
    InvalidRequestError,
    MeshError,
    PermissionDeniedError,
    QualityGateError,
)
from ui.app import MANIFEST_MAX_BYTES, public_message

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


class UploadRefused(ValueError):
    """A publish input that is not a manifest this page received; the message names no path."""


def upload_folder() -> Path:
    """Where Gradio stores uploads in this version: GRADIO_TEMP_DIR or <tmp>/gradio."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder())


def read_upload(
    file: Any,
    root: Path,
    max_bytes: int = MANIFEST_MAX_BYTES,
    was_uploaded: Callable[[str], bool] | None = None,
) -> str:
    """The text of an uploaded manifest, read only if Gradio stored it from an upload.

    Gradio hands the handler a path, and an API caller can name any path; worse, Gradio copies
    a named server file into its upload folder before the handler runs unless its own check is
    on. So: the path one of `was_uploaded` (Gradio's record of its /upload route), no symlink,
    the resolved file inside `root`, a regular file of at most `max_bytes`, opened without
    following links (a swap after the checks gets ELOOP), UTF-8 text."""
    name = file if isinstance(file, str) else getattr(file, "name", None)
    if not isinstance(name, str) or not name:
        raise UploadRefused("choose a manifest file to upload")
    path = Path(name)
    refused = UploadRefused("that file was not uploaded through this page")
    try:
        resolved = path.resolve(strict=True)
        if path.is_symlink() or not resolved.is_relative_to(root.resolve()):
            raise refused
        forms = {name, os.path.abspath(name), str(resolved)}
        if was_uploaded is not None and not any(was_uploaded(form) for form in forms):
            raise refused
        fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        raise refused from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise refused
        if info.st_size > max_bytes:
            raise UploadRefused(f"the manifest is larger than {max_bytes // 1024} KiB")
        data = b""
        while len(data) <= max_bytes and (chunk := os.read(fd, max_bytes + 1 - len(data))):
            data += chunk
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise UploadRefused(f"the manifest is larger than {max_bytes // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UploadRefused("the manifest is not UTF-8 text") from None


def refusal(action: str, error: MeshError) -> str:
    """How the page says the gateway said no: which action, and the gateway's reason."""
    return f"**{action} refused:** {public_message(error)}"


def impact_markdown(impact: dict[str, Any], verdict: str | None = None) -> str:
    """The quality gate's report (`router.impact.ImpactReport` as JSON) as markdown; escaped,
    since the examples come from publishers."""
    e = html.escape
    parts = [f"**Impact:** {e(impact['summary'])}"]
    victims = impact.get("victims") or []
    if victims:
        rows = [
            "| specialist | taken | of labelled | share | e.g. |",
            "| --- | --- | --- | --- | --- |",
        ]
        for victim in victims:
            sample = e(victim["samples"][0]).replace("|", "&#124;") if victim["samples"] else ""
            rows.append(
                f"| {e(victim['name'])} | {victim['taken']} | {victim['labelled']} | "
                f"{victim['share']:.0%} | {sample} |"
            )
        parts.append("\n".join(rows))
    if verdict:
        parts.append(e(verdict))
    return "\n\n".join(parts)


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


class StoreTab(NamedTuple):
    refresh: Any  # () -> (cards, names): the page's load event runs it
    outputs: list[Any]
    token: Any  # the token box, which `/ui/?token=...` pre-fills


NEED_TOKEN = "paste your owner token (or the admin token) into the token box first"
NEED_ADMIN = "paste the admin token into the token box first"


def build_store_tab(client: MeshClient, was_uploaded: Callable[[str], bool]) -> StoreTab:
    """Render the store tab inside the current Blocks context; `was_uploaded` says whether
    Gradio's upload route stored a path (publishing reads no other file)."""
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
            with gr.Row():
                check = gr.Button("Check impact", elem_id="impact-button")
                publish = gr.Button("Publish", variant="primary", elem_id="publish-button")
            outcome = gr.Markdown(elem_id="publish-outcome")
            force = gr.Button(
                "Publish anyway", variant="stop", visible=False, elem_id="publish-force-button"
            )
            impact = gr.Markdown(elem_id="publish-impact")
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
            return f"<p>Store unavailable: {html.escape(public_message(error))}</p>", gr.update()
        names_update = gr.update(choices=sorted(c["name"] for c in found))
        return cards_html(found), names_update

    def show(name: str | None) -> str:
        if not name:
            return ""
        try:
            return detail_markdown(client.specialist(name))
        except MeshError as error:
            return f"**{public_message(error)}**"

    def manifest_text(file: Any, secret: str | None) -> tuple[str, str] | str:
        """(manifest text, token), or why there is nothing to send yet."""
        if file is None:
            return "Choose a manifest file first."
        secret = (secret or "").strip()
        if not secret:
            return f"**Not published:** {NEED_TOKEN}."
        try:
            return read_upload(file, upload_folder(), was_uploaded=was_uploaded), secret
        except UploadRefused as problem:
            return f"**Not published:** {problem}."

    def do_check(file: Any, secret: str | None) -> str:
        """The quality gate's report for the uploaded manifest; nothing is published."""
        found = manifest_text(file, secret)
        if isinstance(found, str):
            return found.replace("Not published", "Cannot check")
        try:
            check = client.publish(*found, dry_run=True)
        except MeshError as error:
            return refusal("Impact check", error)
        return impact_markdown(check["impact"], check.get("verdict"))

    def send(file: Any, secret: str | None, force: bool) -> tuple[str, Any, str, Any, str, Any]:
        hidden = gr.update(visible=False)
        found = manifest_text(file, secret)
        if isinstance(found, str):
            return found, hidden, *refresh(), "", hidden
        try:
            result = client.publish(*found, force=force)
        except QualityGateError as error:  # installing it would take others' queries
            shown = f"**Not published:** {public_message(error)}"
            return shown, hidden, *refresh(), "", gr.update(visible=True)
        except (AuthenticationError, PermissionDeniedError) as error:
            return refusal("Publish", error), hidden, *refresh(), "", hidden
        except InvalidRequestError as error:  # the manifest itself: list what to fix
            rows = field_errors(public_message(error))
            return (
                f"**Not published:** {len(rows)} problem(s)",
                gr.update(value=rows, visible=True),
                *refresh(),
                "",
                hidden,
            )
        except MeshError as error:
            return f"**Not published:** {public_message(error)}", hidden, *refresh(), "", hidden
        note = " and installed" if result.get("installed") else ""
        shown = impact_markdown(result["impact"]) if result.get("impact") else ""
        return f"Published `{result['published']}`{note}.", hidden, *refresh(), shown, hidden

    def do_publish(file: Any, secret: str | None) -> tuple[str, Any, str, Any, str, Any]:
        return send(file, secret, force=False)

    def do_force(file: Any, secret: str | None) -> tuple[str, Any, str, Any, str, Any]:
        return send(file, secret, force=True)

    def change_install(name: str | None, secret: str | None, action: str) -> str:
        if not name:
            return "Pick a specialist first."
        secret = (secret or "").strip()
        if not secret:
            return f"**{action} refused:** {NEED_ADMIN}."
        try:
            if action == "Install":
                client.install(name, secret)
            else:
                client.uninstall(name, secret)
        except MeshError as error:
            return refusal(action, error)
        return f"{action} of **{name}** requested; the mesh applies it live."

    def do_install(name: str | None, secret: str | None) -> str:
        return change_install(name, secret, "Install")

    def do_uninstall(name: str | None, secret: str | None) -> str:
        return change_install(name, secret, "Uninstall")

    search.click(refresh, inputs=query, outputs=[cards, names], api_name="search")
    query.submit(refresh, inputs=query, outputs=[cards, names], api_visibility="private")
    names.change(show, inputs=names, outputs=detail, api_name="detail")
    published = [outcome, errors, cards, names, impact, force]
    check.click(do_check, inputs=[upload, token], outputs=impact, api_name="impact")
    publish.click(do_publish, inputs=[upload, token], outputs=published, api_name="publish")
    force.click(do_force, inputs=[upload, token], outputs=published, api_name="publish_force")
    install.click(do_install, inputs=[names, token], outputs=admin_outcome, api_name="install")
    uninstall.click(
        do_uninstall, inputs=[names, token], outputs=admin_outcome, api_name="uninstall"
    )
    return StoreTab(refresh, [cards, names], token)

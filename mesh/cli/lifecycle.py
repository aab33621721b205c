"""Lifecycle commands: install, uninstall, deprecate, yank, delete, events, export, import."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from mesh.cli.app import (
    ForceFlag,
    JsonFlag,
    TokenOption,
    app,
    command_group,
    echo_json,
    load_settings,
    open_store,
)
from registry import LATEST


@app.command()
def install(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@VERSION (default: latest)")],
    token: TokenOption = None,
    force: ForceFlag = False,
) -> None:
    """Install a specialist in this mesh; the running mesh deploys it.

    The quality gate first replays the router's labelled queries with it added, and refuses a
    specialist that would take more than MESH_GATE_MAX_SHARE of another one's queries unless
    --force."""
    from mesh.publish_gate import check_gate, impact_for

    name, _, version = ref.partition("@")
    settings = load_settings()
    with open_store(token) as (registry, principal):
        principal.require_operator(f"installing {name}")
        pin = version or LATEST
        manifest = registry.get(name, registry.installable(name, pin))
        report = impact_for(registry, manifest, settings, operator=principal.operator)
        check_gate(report, settings.gate_max_share, force)
        state = registry.install(name, pin, principal, resolved=manifest.version)
    typer.echo(report.summary)
    typer.echo(f"installed {name}@{state.version} (pinned to {state.pin})")


@app.command()
def uninstall(name: str, token: TokenOption = None) -> None:
    """Remove a specialist from this mesh (it stays published in the store)."""
    with open_store(token) as (registry, principal):
        registry.uninstall(name, principal)
    typer.echo(f"uninstalled {name}")


@app.command()
def scale(
    name: str,
    replicas: Annotated[int | None, typer.Option("--replicas", help="Fixed replica count.")] = None,
    min_replicas: Annotated[int | None, typer.Option("--min", help="Autoscaling minimum.")] = None,
    max_replicas: Annotated[int | None, typer.Option("--max", help="Autoscaling maximum.")] = None,
    token: TokenOption = None,
) -> None:
    """Change a running specialist's replicas without touching the others."""
    if replicas is not None:
        low, high = replicas, max(replicas, 1)
    elif min_replicas is not None and max_replicas is not None:
        low, high = min_replicas, max_replicas
    else:
        raise typer.BadParameter("give --replicas N, or both --min and --max")
    with open_store(token) as (registry, principal):
        scaling = registry.scale(name, low, high, principal)
    typer.echo(f"scaled {name}: {scaling.min_replicas}..{scaling.max_replicas} replicas")


@app.command()
def deprecate(
    ref: Annotated[str, typer.Argument(help="NAME (all versions) or NAME@VERSION")],
    reason: Annotated[str, typer.Option("--reason", help="Shown to users.")],
    token: TokenOption = None,
) -> None:
    """Flag a specialist (or one version) as deprecated: still served, marked everywhere."""
    name, _, version = ref.partition("@")
    with open_store(token) as (registry, principal):
        registry.deprecate(name, version or None, reason, principal)
    typer.echo(f"deprecated {ref}: {reason}")


@app.command()
def yank(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION")],
    reason: Annotated[str, typer.Option("--reason")] = "yanked",
    token: TokenOption = None,
) -> None:
    """Stop a version from being installed; a running copy keeps serving, with a warning."""
    name, _, version = ref.partition("@")
    if not version:
        raise typer.BadParameter("give NAME@VERSION: yank applies to one version")
    with open_store(token) as (registry, principal):
        registry.yank(name, version, reason, principal)
    typer.echo(f"yanked {ref}: {reason}")


@app.command()
def delete(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    token: TokenOption = None,
) -> None:
    """Delete a specialist with all its versions and stats."""
    if not yes:
        typer.confirm(f"Delete {name} and every version of it?", abort=True)
    with open_store(token) as (registry, principal):
        registry.delete(name, principal)
    typer.echo(f"deleted {name}")


@app.command()
def events(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Show the store's event stream (publish, install, uninstall, deprecate, yank, delete)."""
    with open_store() as (registry, _):
        last = "0-0"
        while True:
            batch = registry.events(last, block_ms=1000 if follow else None)
            for event in batch:
                if as_json:
                    typer.echo(event.model_dump_json())
                else:
                    millis = int(event.id.split("-")[0])
                    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(millis / 1000))
                    ref = f"{event.name}@{event.version}" if event.version else event.name
                    typer.echo(f"{stamp}  {event.kind:<10} {ref}")
                last = event.id
            if not follow and len(batch) < 100:
                return


@app.command("export")
def export_command(file: Annotated[Path, typer.Argument(help="Where to write the JSON.")]) -> None:
    """Write the whole store (manifests, owners, token hashes, installs, stats) as JSON."""
    from registry.transfer import export_store

    with open_store() as (registry, principal):
        principal.require_operator("exporting the store (it holds token hashes)")
        document = export_store(registry)
    file.write_text(document.model_dump_json(indent=2))
    typer.echo(f"exported {len(document.specialists)} specialists to {file}")


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="A file from 'mesh export'.")],
) -> None:
    """Load an exported store into an empty Redis."""
    from registry.errors import ManifestError
    from registry.transfer import import_store

    try:
        document = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise ManifestError(f"cannot read {file}: {error}") from None
    with open_store() as (registry, principal):
        principal.require_operator("importing a store")
        count = import_store(registry, document)
    typer.echo(f"imported {count} specialists from {file}")


token_app = command_group("token", "Store tokens: who may publish new versions of a specialist.")
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    owner: Annotated[str, typer.Option("--owner", help="The owner the token acts for.")],
    token: TokenOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Issue a token for an owner (shown once; only its hash is stored)."""
    with open_store(token) as (registry, principal):
        principal.require_operator("creating tokens")
        issued = registry.tokens.create(owner)
    if as_json:
        echo_json({"owner": owner, "token": issued})
        return
    typer.echo(issued)
    typer.echo(
        f"token for owner '{owner}': keep it secret; pass it as --token or MESH_TOKEN", err=True
    )

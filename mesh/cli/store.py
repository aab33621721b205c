"""Store commands: publish and browse specialists in the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mesh.cli.app import JsonFlag, app, load_settings


@app.command()
def register(
    file: Annotated[Path, typer.Argument(help="Manifest file (YAML or JSON).")],
) -> None:
    """Publish a specialist manifest; a running mesh deploys it without a restart."""
    from mesh.runtime import registry_for
    from registry import load_manifest

    manifest = load_manifest(file)
    settings = load_settings()
    with registry_for(settings) as registry:
        registry.publish(manifest, install=settings.auto_install)
    typer.echo(f"published {manifest.ref}")
    if settings.auto_install:
        typer.echo(
            f"installed {manifest.name}: a running mesh deploys it now ('mesh list' to check)"
        )


app.command("publish", help="Alias of 'register'.")(register)


@app.command("list")
def list_specialists(as_json: JsonFlag = False) -> None:
    """List published specialists and whether this mesh has them installed."""
    from mesh.runtime import registry_for

    with registry_for(load_settings()) as registry:
        pins = registry.installed_pins()
        rows: list[dict[str, Any]] = [
            {
                "name": m.name,
                "version": m.version,
                "installed": m.name in pins,
                "owner": m.owner,
                "description": m.description,
            }
            for m in registry.latest()
        ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("No specialists published yet - publish one with 'mesh register FILE'.")
    for row in rows:
        mark = "*" if row["installed"] else " "
        typer.echo(f"{mark} {row['name']:<20} {row['version']:<10} {row['description'][:70]}")


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="NAME or NAME@VERSION")],
    as_json: JsonFlag = False,
) -> None:
    """Show one specialist's manifest and versions."""
    from mesh.runtime import registry_for

    name, _, version = name.partition("@")
    with registry_for(load_settings()) as registry:
        manifest = registry.get(name, version or None)
        versions = registry.versions(name)
        installed = registry.installed_pins().get(name)
    body = {**manifest.model_dump(mode="json"), "versions": versions, "installed": installed}
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    typer.echo(f"{manifest.ref}  ({'installed: ' + installed if installed else 'not installed'})")
    typer.echo(
        f"owner: {manifest.owner}   license: {manifest.license}   tags: {', '.join(manifest.tags)}"
    )
    typer.echo(f"versions: {', '.join(versions)}")
    typer.echo(f"model: {manifest.model.engine} {manifest.model.source}")
    typer.echo(f"\n{manifest.description}\n\nexamples:")
    for example in manifest.examples:
        typer.echo(f"  - {example}")

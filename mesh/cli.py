"""The `mesh` command line. Heavy imports live inside commands, so `mesh --help` is instant."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from registry.errors import MeshError


class _MeshGroup(TyperGroup):
    """Domain errors become one clean line on stderr and exit code 1, never a traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except MeshError as error:
            typer.echo(f"Error: {error.message}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    name="mesh",
    cls=_MeshGroup,
    help="Run, query and publish to a mesh of specialist LLMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
UrlOption = Annotated[
    str | None, typer.Option("--url", help="Gateway URL (default: http://127.0.0.1:$MESH_PORT).")
]


def _settings() -> Any:
    from mesh.settings import MeshSettings

    return MeshSettings()


@app.command()
def up(
    ui: Annotated[bool, typer.Option("--ui/--no-ui", help="Serve the Gradio UI at /ui.")] = True,
    address: Annotated[
        str | None, typer.Option("--address", help="Join a Ray cluster ('auto' or host:port).")
    ] = None,
) -> None:
    """Start the mesh in the foreground: Redis, Ray Serve, the specialists, the API and the UI."""
    from mesh.runtime import up as run_up

    run_up(_settings(), ui=ui, address=address, echo=lambda line: typer.echo(line))


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="What to ask the mesh.")],
    specialist: Annotated[
        str | None, typer.Option("--specialist", "-s", help="Pin a specialist instead of routing.")
    ] = None,
    as_json: JsonFlag = False,
    url: UrlOption = None,
) -> None:
    """Ask a question; the router picks the specialist unless you pin one."""
    from mesh.client import MeshClient

    settings = _settings()
    client = MeshClient(url or settings.base_url, api_key=(settings.api_keys or [None])[0])
    reply = client.chat([{"role": "user", "content": question}], model=specialist or "mesh")
    if as_json:
        typer.echo(json.dumps(reply, indent=2))
        return
    mesh_info = reply["mesh"]
    typer.echo(reply["choices"][0]["message"]["content"].strip())
    decision = mesh_info["decision"]
    score = decision["targets"][0]["score"] if decision["targets"] else 0.0
    who = f"{mesh_info['specialist']}@{mesh_info['version']}"
    typer.echo(f"\n-- {who} ({decision['mode']}, score {score:.2f})", err=True)


@app.command()
def register(
    file: Annotated[Path, typer.Argument(help="Manifest file (YAML or JSON).")],
) -> None:
    """Publish a specialist manifest; a running mesh deploys it without a restart."""
    from mesh.runtime import registry_for
    from registry import load_manifest

    manifest = load_manifest(file)
    settings = _settings()
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

    with registry_for(_settings()) as registry:
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
    with registry_for(_settings()) as registry:
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


def main() -> None:
    """Console entry point: domain errors become one clean line and exit code 1."""
    try:
        app()
    except MeshError as error:
        typer.echo(f"Error: {error.message}", err=True)
        sys.exit(1)

"""The `mesh` Typer app, its shared options, and the one place domain errors become exit code 1.

Heavy imports live inside commands, so `mesh --help` is instant.
"""

from __future__ import annotations

import sys
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


def load_settings() -> Any:
    from mesh.settings import MeshSettings

    return MeshSettings()


def main() -> None:
    """Console entry point: domain errors become one clean line and exit code 1."""
    try:
        app()
    except MeshError as error:
        typer.echo(f"Error: {error.message}", err=True)
        sys.exit(1)

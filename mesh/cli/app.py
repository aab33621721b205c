"""The `mesh` Typer app, its shared options, and the one place domain errors become exit code 1.

Heavy imports live inside commands, so `mesh --help` is instant.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from typer.core import TyperGroup

from registry.errors import MeshError


class _MeshGroup(TyperGroup):
    """Domain errors become one clean line on stderr and exit code 1, never a traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except MeshError as error:
            typer.echo(f"Error: {cli_message(error)}", err=True)
            raise typer.Exit(1) from None
        except ValidationError as error:  # options that a command's pydantic model refuses
            typer.echo(f"Error: {options_message(error)}", err=True)
            raise typer.Exit(1) from None


def cli_message(error: MeshError) -> str:
    """What the local user sees: the operator's detail (which Redis URL failed) where there is
    one; HTTP clients get only the public message."""
    return getattr(error, "detail", "") or error.message


def options_message(error: ValidationError) -> str:
    """A command's options as its settings model refused them, one line per field."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']}" for e in error.errors()
    )


def command_group(name: str, help: str) -> typer.Typer:
    """A Typer app (or sub-app) with the mesh's error handling and conventions."""
    return typer.Typer(
        name=name,
        cls=_MeshGroup,
        help=help,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )


app = command_group("mesh", "Run, query and publish to a mesh of specialist LLMs.")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
UrlOption = Annotated[
    str | None, typer.Option("--url", help="Gateway URL (default: http://127.0.0.1:$MESH_PORT).")
]


TokenOption = Annotated[
    str | None,
    typer.Option("--token", help="Owner or admin token for the store (default: $MESH_TOKEN)."),
]


ForceFlag = Annotated[
    bool,
    typer.Option(
        "--force", help="Install even if the quality gate refuses (see MESH_GATE_MAX_SHARE)."
    ),
]


def load_settings() -> Any:
    """Settings from MESH_* variables, with the admin token `mesh up` saved under MESH_HOME."""
    from mesh.admin_token import with_admin_token
    from mesh.settings import MeshSettings

    return with_admin_token(MeshSettings())


def gateway_client(url: str | None = None, *, as_operator: bool = False) -> Any:
    """An HTTP client of the running mesh (MESH_PORT, or --url), with the API key if set;
    `as_operator`: with the admin token instead, where this machine has it (operator views)."""
    from mesh.client import MeshClient

    settings = load_settings()
    key = (settings.api_keys or [None])[0]
    if as_operator and settings.admin_token:
        key = settings.admin_token
    return MeshClient(url or settings.base_url, api_key=key)


@contextlib.contextmanager
def open_store(token: str | None = None) -> Iterator[tuple[Any, Any]]:
    """The registry (embedded Redis or MESH_REDIS_URL) and who is acting on it.

    Who acts: `--token`, else MESH_TOKEN, else the admin token of this machine's mesh (the file
    `mesh up` wrote under MESH_HOME: whoever can read it is the operator, as with a notebook
    server's token)."""
    from mesh.runtime import registry_for

    settings = load_settings()
    presented = token or settings.token or settings.admin_token
    with registry_for(settings) as registry:
        yield registry, registry.principal(presented, settings.admin_token)


def echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def main() -> None:
    """Console entry point: domain errors become one clean line and exit code 1."""
    try:
        app()
    except MeshError as error:
        typer.echo(f"Error: {cli_message(error)}", err=True)
        sys.exit(1)

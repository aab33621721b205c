"""The `mesh` command line: one Typer app, commands grouped by concern in sibling modules."""

from mesh.cli import finetune, lifecycle, run, store  # noqa: F401  (importing registers the commands)
from mesh.cli.app import app, main
from mesh.cli.router import router_app

app.add_typer(router_app, name="router")

__all__ = ["app", "main"]

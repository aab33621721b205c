"""Commands that run or talk to a running mesh: `up`, `ask`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mesh.cli.app import JsonFlag, UrlOption, app, gateway_client, load_settings
from mesh.trace_view import decision_note, render_trace, trace_root


@app.command()
def up(
    ui: Annotated[bool, typer.Option("--ui/--no-ui", help="Serve the Gradio UI at /ui.")] = True,
    address: Annotated[
        str | None, typer.Option("--address", help="Join a Ray cluster ('auto' or host:port).")
    ] = None,
) -> None:
    """Start the mesh in the foreground: Redis, Ray Serve, the specialists, the API and the UI."""
    from mesh.runtime import up as run_up

    run_up(load_settings(), ui=ui, address=address, echo=lambda line: typer.echo(line))


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="What to ask the mesh.")],
    specialist: Annotated[
        str | None, typer.Option("--specialist", "-s", help="Pin a specialist instead of routing.")
    ] = None,
    trace: Annotated[
        bool, typer.Option("--trace", help="Print the messages between specialists as a tree.")
    ] = False,
    as_json: JsonFlag = False,
    url: UrlOption = None,
) -> None:
    """Ask a question; the router picks the specialist unless you pin one."""
    reply = gateway_client(url).chat(
        [{"role": "user", "content": question}], model=specialist or "mesh"
    )
    if as_json:
        typer.echo(json.dumps(reply, indent=2))
        return
    mesh_info = reply["mesh"]
    typer.echo(reply["choices"][0]["message"]["content"].strip())
    decision = mesh_info["decision"]
    score = decision["targets"][0]["score"] if decision["targets"] else 0.0
    who = f"{mesh_info['specialist']}@{mesh_info['version']}"
    handed = decision_note(decision)
    typer.echo(f"\n-- {who} ({decision['mode']}, score {score:.2f}{handed})", err=True)
    if trace:
        typer.echo(render_trace(trace_root(mesh_info), mesh_info.get("trace", [])))


@app.command()
def route(
    text: Annotated[str, typer.Argument(help="The query to route.")],
    as_json: JsonFlag = False,
    url: UrlOption = None,
) -> None:
    """Dry run: which specialist the running mesh would pick, and why."""
    decision = gateway_client(url).route(text)
    if as_json:
        typer.echo(json.dumps(decision, indent=2))
        return
    typer.echo(f"{decision['mode']}: {decision['reason']}")
    for target in decision["targets"]:
        typer.echo(f"  {target['score']:6.3f}  {target['name']}")


@app.command()
def status(as_json: JsonFlag = False, url: UrlOption = None) -> None:
    """Each specialist's state and replicas (with their nodes) in the running mesh."""
    health = gateway_client(url, as_operator=True).health()
    if as_json:
        typer.echo(json.dumps(health, indent=2))
        return
    typer.echo(f"mesh: {health.get('status')}  (generation {health.get('generation')})")
    if health.get("registry_error"):
        typer.echo(f"registry: {health['registry_error']}")
    for name, state in sorted(health.get("specialists", {}).items()):
        replicas = state.get("replicas", [])  # a count unless we hold the admin token
        count = replicas if isinstance(replicas, int) else len(replicas)
        available = str(state.get("availability") or "").replace("_", " ")
        typer.echo(
            f"{name:<20} {state['version']:<10} {state['status']:<14} {available:<15} "
            f"{count} replicas"
        )
        for replica in replicas if isinstance(replicas, list) else []:
            node = (replica.get("node_id") or "?")[:12]
            typer.echo(f"    {replica['replica_id']:<28} {replica['state']:<10} node {node}")
        pending = state.get("pending")
        if pending:
            typer.echo(f"    pending: {pending[:500]}")
        message = state.get("message")
        if message and state["status"] != "RUNNING" and (not pending or message not in pending):
            typer.echo(f"    {message[:300]}")

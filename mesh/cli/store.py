"""Store commands: publish, browse and search specialists in the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mesh.cli.app import (
    ForceFlag,
    JsonFlag,
    TokenOption,
    app,
    echo_json,
    load_settings,
    open_store,
)

MANIFEST_FILE = "manifest.yaml"


@app.command()
def register(
    file: Annotated[
        Path,
        typer.Argument(help="Manifest file (YAML or JSON), or a folder holding manifest.yaml."),
    ],
    token: TokenOption = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Validate and print the quality gate's report; publish and upload nothing.",
        ),
    ] = False,
    force: ForceFlag = False,
) -> None:
    """Publish a specialist manifest; a running mesh deploys it without a restart.

    Local paths in `model.source` / `model.adapter` (absolute, '~/...', or './...' relative to
    the manifest's folder) are uploaded into the store's artifact area first and published as
    `artifact:<sha256>`, so every node of the mesh can fetch them. A publish that installs
    passes the quality gate first: it replays the router's labelled queries with the new
    specialist added, and refuses one that would take more than MESH_GATE_MAX_SHARE of another
    specialist's queries unless --force. Ownership and version are checked before the report;
    a publisher's report replays the installed specialists' examples only, without samples.
    """
    from mesh.publish_gate import GateCheck, check_gate, impact_for
    from registry import parse_manifest
    from registry.artifact_store import ArtifactStore, local_source_fields, upload_local_sources
    from registry.artifacts import pin_artifacts
    from registry.manifest import read_manifest_data
    from specialists.engine_registry import check_publishable

    path = file / MANIFEST_FILE if file.is_dir() else file
    data = read_manifest_data(_read_text(path), source=str(path))
    if not isinstance(data, dict):
        parse_manifest(data, source=str(path))  # raises the usual "must be a mapping"
    # Every field is checked before anything is uploaded (local paths as a placeholder).
    preview = parse_manifest(upload_local_sources(data, path.parent, None), source=str(path))
    check_publishable(preview)
    settings = load_settings()
    with open_store(token) as (registry, principal):
        principal.require_publisher(f"publishing {preview.name}")
        registry.check_publish(preview, principal)
        installs = registry.publish_installs(preview.name, principal, install=settings.auto_install)
        if dry_run or installs:
            check = GateCheck(
                impact=impact_for(registry, preview, settings, operator=principal.operator),
                installs=installs,
                max_share=settings.gate_max_share,
            )
            if dry_run:
                for line in check.lines():
                    typer.echo(line)
                typer.echo(f"dry run: {preview.ref} was not published")
                return
            check_gate(check.impact, check.max_share, force)
            typer.echo(check.impact.summary)
        store = ArtifactStore.from_url(registry.url, max_bytes=settings.max_artifact_bytes)
        if local_source_fields(data):
            data = upload_local_sources(data, path.parent, store)
        manifest = pin_artifacts(parse_manifest(data, source=str(path)), store)
        check_publishable(manifest)
        registry.publish(manifest, principal, install=installs)
    typer.echo(f"published {manifest.ref}")
    if installs:
        typer.echo(
            f"installed {manifest.name}: a running mesh deploys it now ('mesh list' to check)"
        )


def _read_text(path: Path) -> str:
    from registry import ManifestError

    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise ManifestError(f"cannot read manifest {path}: {error.strerror}") from None


app.command("publish", help="Alias of 'register'.")(register)


@app.command("list")
def list_specialists(
    tag: Annotated[
        str | None, typer.Option("--tag", help="Only specialists with this tag.")
    ] = None,
    owner: Annotated[str | None, typer.Option("--owner", help="Only this owner's.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List published specialists ('*' marks the installed ones)."""
    with open_store() as (registry, _):
        states = registry.install_states()
        infos = [registry.info(m.name) for m in registry.latest(tag=tag, owner=owner)]
    rows = [
        {
            "name": info.manifest.name,
            "version": info.manifest.version,
            "installed": states[info.manifest.name].version
            if info.manifest.name in states
            else None,
            "owner": info.owner,
            "tags": info.manifest.tags,
            "deprecated": info.deprecation,
            "description": info.manifest.description,
        }
        for info in infos
    ]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        typer.echo("No specialists found - publish one with 'mesh register FILE'.")
    for row in rows:
        mark = "*" if row["installed"] else " "
        flag = " [deprecated]" if row["deprecated"] else ""
        typer.echo(f"{mark} {row['name']:<20} {row['version']:<10} {row['description'][:60]}{flag}")


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="NAME or NAME@VERSION")],
    as_json: JsonFlag = False,
) -> None:
    """Show one specialist: card, versions, examples, install state and usage stats."""
    name, _, version = name.partition("@")
    with open_store() as (registry, _):
        info = registry.info(name, version or None)
        stats = registry.stats.get(name)
    if as_json:
        echo_json({**info.model_dump(mode="json"), "stats": stats.model_dump()})
        return
    manifest = info.manifest
    installed = f"installed: {info.installed.version}" if info.installed else "not installed"
    typer.echo(f"{manifest.ref}  ({installed})")
    if info.deprecation:
        typer.echo(f"DEPRECATED: {info.deprecation}")
    if manifest.version in info.yanked:
        typer.echo(f"YANKED: {info.yanked[manifest.version]}")
    typer.echo(
        f"owner: {info.owner}   license: {manifest.license}   tags: {', '.join(manifest.tags)}"
    )
    typer.echo(f"versions: {', '.join(info.versions)}")
    typer.echo(f"model: {manifest.model.engine} {manifest.model.source}")
    typer.echo(
        f"usage: {stats.requests} requests ({stats.routed} routed, {stats.pinned} pinned), "
        f"{stats.errors} errors, p50 {stats.p50_ms or 0:.0f} ms, "
        f"{stats.thumbs_up} up / {stats.thumbs_down} down"
    )
    typer.echo(f"\n{manifest.description}\n\nexamples:")
    for example in manifest.examples:
        typer.echo(f"  - {example}")
    if manifest.card:
        typer.echo(f"\n{manifest.card.strip()}")


@app.command()
def versions(name: str, as_json: JsonFlag = False) -> None:
    """List a specialist's published versions with their flags."""
    with open_store() as (registry, _):
        info = registry.info(name)
    rows = [
        {
            "version": version,
            "installed": bool(info.installed and info.installed.version == version),
            "deprecated": info.deprecated.get(version) or info.deprecated.get("*"),
            "yanked": info.yanked.get(version),
        }
        for version in info.versions
    ]
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        flags = [
            "installed" if row["installed"] else "",
            f"deprecated: {row['deprecated']}" if row["deprecated"] else "",
            f"yanked: {row['yanked']}" if row["yanked"] else "",
        ]
        typer.echo(f"{row['version']:<12} {'  '.join(f for f in flags if f)}")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What you are looking for.")],
    limit: Annotated[int, typer.Option("--limit", "-n")] = 10,
    as_json: JsonFlag = False,
) -> None:
    """Search the store by meaning (the router's encoder) and by plain text."""
    from transformers.utils import logging as transformers_logging

    from mesh.search import rank, search_texts, semantic_scores
    from router.encoder import SentenceTransformerEncoder

    transformers_logging.disable_progress_bar()

    with open_store() as (registry, _):
        manifests = registry.latest()
    semantic = semantic_scores(
        SentenceTransformerEncoder(), query, {m.name: search_texts(m) for m in manifests}
    )
    hits = rank(manifests, query, semantic, limit)
    if as_json:
        echo_json([hit.model_dump() for hit in hits])
        return
    for hit in hits:
        match = " (text match)" if hit.text_match else ""
        typer.echo(f"{hit.score:5.2f}  {hit.name:<20} {hit.description[:60]}{match}")

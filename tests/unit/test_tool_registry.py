"""Tools come only from the tool registry (entry-point group `mesh.tools`), named by manifests."""

from __future__ import annotations

import asyncio
from importlib.metadata import EntryPoint

import pytest

from registry import ManifestError, parse_manifest
from specialists.context import MeshContext
from specialists.engine_registry import check_publishable
from specialists.messages import ContextState
from specialists.tool_engine import ToolEngine
from specialists.tools import registry as tools
from tests.conftest import manifest_data


def tool_manifest(source: str):  # type: ignore[no-untyped-def]
    return parse_manifest(manifest_data(name="calc", model={"engine": "tool", "source": source}))


def test_the_built_in_tools_are_registered() -> None:
    assert {"math", "relay"} <= set(tools.tool_names())


def test_a_registered_tool_loads_and_answers() -> None:
    engine = ToolEngine(tool_manifest("math"))
    engine.load()
    ctx = MeshContext(ContextState(path=["calc"]), "calc", [])
    assert asyncio.run(engine.run("17*23", ctx)) == "391"


def test_an_unknown_tool_is_refused_naming_the_known_ones() -> None:
    manifest = tool_manifest("nope")
    with pytest.raises(ManifestError, match=r"model\.source: unknown tool 'nope'; known tools: "):
        check_publishable(manifest)
    with pytest.raises(ManifestError, match="math, relay"):
        tools.load_tool("nope")
    with pytest.raises(ManifestError, match="unknown tool"):
        ToolEngine(manifest).load()


def test_check_publishable_passes_known_tools_and_model_specialists() -> None:
    check_publishable(tool_manifest("relay"))
    check_publishable(parse_manifest(manifest_data()))


def test_a_registered_tool_must_be_async(monkeypatch: pytest.MonkeyPatch) -> None:
    sync = EntryPoint(name="sync", value="os.path:join", group=tools.GROUP)
    broken = EntryPoint(name="broken", value="no_such_module_here:run", group=tools.GROUP)
    monkeypatch.setattr(tools, "_entry_points", lambda: {"sync": sync, "broken": broken})
    with pytest.raises(ManifestError, match="not an async function"):
        tools.load_tool("sync")
    with pytest.raises(ManifestError, match="registered but cannot be loaded"):
        tools.load_tool("broken")


def test_a_module_path_never_reaches_the_registry() -> None:
    with pytest.raises(ManifestError, match="tool registry"):
        tool_manifest("specialists.tools.math:run")

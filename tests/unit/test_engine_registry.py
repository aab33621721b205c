"""Engines come only from the engine registry (entry-point group `mesh.engines`): a manifest
names one, publishing checks the name without importing anything, and a replica loads it."""

from __future__ import annotations

import asyncio
from importlib.metadata import EntryPoint

import pytest

from registry import ManifestError, parse_manifest
from specialists import engine_registry as engines
from specialists.adapter_pool import PoolClientEngine
from specialists.deployment import engine_for
from specialists.engine import ChatMessage, Engine, EngineRequest, collect_stream
from specialists.tool_engine import ToolEngine
from specialists.transformers_engine import TransformersEngine
from tests.conftest import manifest_data


def test_the_built_in_engines_are_registered_and_are_engines() -> None:
    assert {"transformers", "tool"} <= set(engines.engine_names())
    for name in engines.engine_names():
        engine = engines.engine_class(name)
        assert issubclass(engine, Engine)
        assert engine.name == name, "an engine's registry name is its own name"


def test_an_unknown_engine_is_refused_at_publish_naming_the_known_ones() -> None:
    manifest = parse_manifest(manifest_data(model={"engine": "nope", "source": "org/model"}))
    with pytest.raises(ManifestError, match=r"model\.engine: unknown engine 'nope'; known "):
        engines.check_publishable(manifest)
    with pytest.raises(ManifestError, match="transformers"):
        engines.engine_class("nope")
    with pytest.raises(ManifestError, match="unknown engine"):
        engine_for(manifest)


def test_publish_checks_names_without_importing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registered engine whose module cannot even import still passes the name check; only
    a replica (or the deploy) imports it, with a clear error."""
    broken = EntryPoint(name="broken", value="no_such_module_here:Engine", group=engines.GROUP)
    not_engine = EntryPoint(name="plain", value="os.path:join", group=engines.GROUP)
    monkeypatch.setattr(engines, "_entry_points", lambda: {"broken": broken, "plain": not_engine})
    engines.check_publishable(
        parse_manifest(manifest_data(model={"engine": "broken", "source": "org/model"}))
    )
    with pytest.raises(ManifestError, match="cannot be imported here"):
        engines.engine_class("broken")
    with pytest.raises(ManifestError, match="not an Engine subclass"):
        engines.engine_class("plain")


@pytest.mark.parametrize("name", ["pkg.module:Engine", "../x", "Transformers", ""])
def test_a_module_path_never_names_an_engine(name: str) -> None:
    with pytest.raises(ManifestError, match=r"model\.engine"):
        parse_manifest(manifest_data(model={"engine": name, "source": "org/model"}))


def test_a_deployment_gets_the_engine_its_manifest_names() -> None:
    llm = parse_manifest(manifest_data(model={"source": "org/model"}))
    tool = parse_manifest(manifest_data(name="calc", model={"engine": "tool", "source": "math"}))
    pooled = parse_manifest(
        manifest_data(model={"source": "org/model", "adapter": "package:pkg/adapter"})
    )
    merged = parse_manifest(
        manifest_data(
            model={"source": "org/model", "adapter": "package:pkg/adapter", "share_base": False}
        )
    )
    assert engine_for(llm) is TransformersEngine
    assert engine_for(tool) is ToolEngine
    assert engine_for(pooled) is PoolClientEngine, "an adapter on a shared base forwards"
    assert engine_for(merged) is TransformersEngine


def test_a_tool_is_an_engine_answering_the_last_user_turn() -> None:
    tool = parse_manifest(manifest_data(name="calc", model={"engine": "tool", "source": "math"}))
    engine = ToolEngine(tool)
    engine.load()
    assert engine.capabilities.exact
    chat = [ChatMessage(role="user", content="2+2"), ChatMessage(role="user", content="17*23")]
    result = asyncio.run(collect_stream(engine.stream(EngineRequest(messages=chat))))
    assert (result.text, result.finish_reason) == ("391", "stop")


def test_an_engine_with_a_backend_app_is_deployed_beside_it() -> None:
    """vLLM specialists forward to their own Ray Serve LLM app; the controller deploys it first
    and deletes it with the specialist. Other engines have none."""
    from mesh.controller import backend_app

    gpu = parse_manifest(
        manifest_data(
            name="big", model={"engine": "vllm", "source": "org/model"}, resources={"num_gpus": 1}
        )
    )
    assert backend_app(gpu) == "llm-big"
    assert backend_app(parse_manifest(manifest_data(model={"source": "org/model"}))) is None
    unknown = parse_manifest(manifest_data(model={"engine": "gone", "source": "org/model"}))
    assert backend_app(unknown) is None, "an engine no longer installed has nothing deployed"


def test_a_request_crossing_processes_carries_its_time_left_not_a_clock_reading() -> None:
    """Monotonic clocks differ between hosts: the pool gets the time left and restarts it."""
    import pickle
    import threading
    import time

    from specialists.engine import GenerationParams

    request = EngineRequest(
        messages=[ChatMessage(role="user", content="hi")],
        params=GenerationParams(max_time_s=10.0),
        arrived=time.monotonic() - 4,
        mesh=threading.Lock(),  # a live context never travels (a lock cannot be pickled)
    )
    sent = pickle.loads(pickle.dumps(request.for_transport()))
    assert sent.mesh is None
    assert 5.5 < sent.params.max_time_s <= 6.0
    arrived = sent.received()
    assert abs(arrived.arrived - time.monotonic()) < 1.0


def test_a_cancelled_tool_stops_running() -> None:
    """Cancelling the request (an ask that timed out) cancels the tool's own task too."""
    from specialists.tools import registry as tools

    started, finished = asyncio.Event(), []

    async def slow(text: str, ctx: object) -> str:
        started.set()
        await asyncio.sleep(5)
        finished.append(text)
        return text

    tool = parse_manifest(manifest_data(name="slow", model={"engine": "tool", "source": "math"}))
    engine = ToolEngine(tool)
    engine.function = slow  # type: ignore[assignment]
    assert tools.GROUP == "mesh.tools"

    async def main() -> None:
        request = EngineRequest(messages=[ChatMessage(role="user", content="x")])
        consumer = asyncio.ensure_future(collect_stream(engine.stream(request)))
        await started.wait()
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await asyncio.sleep(0.1)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not tasks, "the tool's task is gone"

    asyncio.run(main())
    assert finished == []

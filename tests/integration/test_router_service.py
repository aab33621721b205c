"""`RouterService` without Ray: a stand-in for the controller's handle, a real Redis, the fake
encoder. Checks the wiring: batched routes, the artifact loaded at start, an install indexed at
once and refitted in the background, the result saved to Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mesh.controller import LiveView
from mesh.router_service import RouterService
from registry import Registry, parse_manifest
from registry.router_artifacts import RouterArtifactStore
from router.artifact import fit_artifact
from tests.conftest import manifest_data
from tests.unit.test_router import EXAMPLES, BagOfWordsEncoder
from tests.unit.test_router_artifact import INSTALLED, LABELLED

pytestmark = pytest.mark.slow


class Method:
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    async def remote(self) -> Any:
        return self.answer()


class Controller:
    """Answers the two calls `LiveFollower` makes of the controller's handle."""

    def __init__(self, examples: dict[str, list[str]]) -> None:
        self.view = LiveView(generation=1, specialists={})
        self.set(examples)
        self.live_generation = Method(lambda: self.view.generation)
        self.live_view = Method(lambda: self.view)

    def set(self, examples: dict[str, list[str]]) -> None:
        specialists = {
            name: parse_manifest(manifest_data(name, examples=texts, description=f"{name}"))
            for name, texts in examples.items()
        }
        self.view = LiveView(generation=self.view.generation + 1, specialists=specialists)


def test_router_service_batches_loads_and_refits(redis_url: str, tmp_path: Path) -> None:
    registry = Registry.from_url(redis_url)
    store = RouterArtifactStore(registry.client, registry.url)
    encoder = BagOfWordsEncoder()
    examples = {name: [*texts, name] for name, texts in EXAMPLES.items()}
    _, first = fit_artifact(examples, INSTALLED, home=tmp_path, encoder=encoder, labelled=LABELLED)
    store.save(first)
    settings = {
        "redis_url": redis_url,
        "home": str(tmp_path),
        "fallback": "general",
        "router_refit_delay_s": 0,
        "router_reload_s": 0.2,
    }

    async def main() -> None:
        controller = Controller(EXAMPLES)
        service = RouterService(controller, settings, frozen=lambda: encoder)  # type: ignore[arg-type]
        status = await service.indexed(refresh=True)
        assert status["specialists"] == sorted(EXAMPLES)
        assert status["artifact"]["version"] == first.version and not status["stale"]

        queries = [f"python code {i}" if i % 2 else f"story poem {i}" for i in range(12)]
        routed = await asyncio.gather(*(service.route(q) for q in queries))
        assert [r["targets"][0]["name"] for r in routed] == ["writing", "code"] * 6
        assert service.batcher.routed == 12 and service.batcher.batches < 12
        assert routed[1]["targets"][0]["threshold"] == first.thresholds["code"]

        controller.set({**EXAMPLES, "cooking": ["recipe soup", "soup", "recipe"]})
        decision = await service.route("soup recipe", min_generation=controller.view.generation)
        assert decision["targets"][0]["name"] == "cooking"  # indexed before the refit
        await service.live.wait()
        refit = store.current()
        assert refit is not None and refit.parent == first.version
        assert "cooking" in refit.installed and refit.labelled == first.labelled
        assert (await service.indexed())["artifact"]["version"] == refit.version

        _, manual = fit_artifact(  # 'mesh router fit' while the mesh runs
            {**examples, "cooking": ["recipe soup", "soup", "recipe", "cooking"]},
            {**INSTALLED, "cooking": "1.0.0"},
            home=tmp_path,
            encoder=encoder,
            labelled=LABELLED,
        )
        store.save(manual)
        for _ in range(50):
            if service.live.record == manual:
                break
            await asyncio.sleep(0.1)
        assert service.live.record == manual  # fitted for the live set: no refit follows
        assert dict(service.live.router.thresholds) == manual.thresholds
        scores = await service.semantic_scores("python", {"code": ["python code"]})
        assert scores["code"] > 0.5

    asyncio.run(main())

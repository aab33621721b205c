"""`RouteBatcher`: concurrent route calls share encoder calls and get their own decisions."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from router import RouteBatcher
from tests.unit.test_router import BagOfWordsEncoder, make_router


class SlowEncoder(BagOfWordsEncoder):
    """Takes a while per call, like a real model, so concurrent requests pile up."""

    def encode(self, texts: list[str]) -> np.ndarray:
        time.sleep(0.02)
        return super().encode(texts)


def test_concurrent_routes_share_encoder_calls() -> None:
    router = make_router()
    router.encoder = router.cache.encoder = SlowEncoder()
    queries = [f"python code {i}" if i % 2 else f"story {i}" for i in range(16)]

    async def main() -> list[str | None]:
        batcher = RouteBatcher(router)
        decisions = await asyncio.gather(*(batcher.route(q) for q in queries))
        await batcher.close()
        assert batcher.routed == 16
        assert batcher.batches < 16
        return [d.chosen for d in decisions]

    chosen = asyncio.run(main())
    assert chosen == [router.route(q).chosen for q in queries]
    assert len(router.encoder.calls) < 16  # type: ignore[attr-defined]


def test_history_travels_with_the_request() -> None:
    async def main() -> str | None:
        batcher = RouteBatcher(make_router(threshold=0.3), max_wait_ms=1.0)
        decision = await batcher.route("and in rust?", ["python code"])
        await batcher.close()
        return decision.follow_up_of

    assert asyncio.run(main()) == "code"


def test_an_error_reaches_every_caller_and_the_batcher_lives_on() -> None:
    router = make_router()
    calls = {"n": 0}
    route_batch = router.route_batch

    def flaky(texts, histories=None):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("encoder down")
        return route_batch(texts, histories)

    router.route_batch = flaky  # type: ignore[method-assign]

    async def main() -> str | None:
        batcher = RouteBatcher(router)
        with pytest.raises(RuntimeError, match="encoder down"):
            await batcher.route("python")
        decision = await batcher.route("python")
        await batcher.close()
        return decision.chosen

    assert asyncio.run(main()) == "code"


def test_several_batches_can_be_in_flight() -> None:
    router = make_router()
    router.encoder = router.cache.encoder = SlowEncoder()
    queries = [f"python {i}" for i in range(12)]

    async def main() -> list[str | None]:
        batcher = RouteBatcher(router, max_inflight=2, max_batch=4)
        decisions = await asyncio.gather(*(batcher.route(q) for q in queries))
        await batcher.close()
        assert batcher.batches >= 3
        return [d.chosen for d in decisions]

    assert asyncio.run(main()) == ["code"] * 12


def test_a_burst_is_split_over_idle_slots() -> None:
    router = make_router()
    encoder = SlowEncoder()
    router.encoder = router.cache.encoder = encoder

    async def main() -> int:
        batcher = RouteBatcher(router, max_inflight=2)
        await asyncio.gather(*(batcher.route(f"python {i}") for i in range(16)))
        await batcher.close()
        return batcher.batches

    assert asyncio.run(main()) == 2
    assert sorted(len(call) for call in encoder.calls) == [8, 8]  # two halves, side by side

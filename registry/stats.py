"""Usage statistics per specialist, written by the gateway, read by `show`, the API and the UI.

Counters are plain Redis hashes (HINCRBY), latencies a capped list, so recording costs one
round trip and never blocks a request: the gateway treats a failed write as a lost sample.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from registry import keys
from registry.errors import NotFoundError
from registry.redis_server import redis_errors

Rating = Literal["up", "down"]


class UsageStats(BaseModel):
    requests: int = 0
    routed: int = 0
    pinned: int = 0
    errors: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0
    p50_ms: float | None = None


class StatsStore:
    def __init__(self, client: Any, url: str) -> None:
        self.client = client
        self.url = url

    def record(
        self, name: str, *, routed: bool, latency_ms: float, error: bool, response_id: str | None
    ) -> None:
        with redis_errors(self.url), self.client.pipeline(transaction=False) as pipe:
            pipe.hincrby(keys.stats(name), "requests", 1)
            pipe.hincrby(keys.stats(name), "routed" if routed else "pinned", 1)
            if error:
                pipe.hincrby(keys.stats(name), "errors", 1)
            else:
                pipe.lpush(keys.latency(name), round(latency_ms, 1))
                pipe.ltrim(keys.latency(name), 0, keys.LATENCY_SAMPLES - 1)
            if response_id:
                pipe.set(keys.response(response_id), name, ex=keys.RESPONSE_TTL_S)
            pipe.execute()

    def feedback(self, response_id: str, rating: Rating) -> str:
        """Count a thumbs up/down for the specialist that produced `response_id`."""
        with redis_errors(self.url):
            name = self.client.get(keys.response(response_id))
            if name is None:
                raise NotFoundError(f"no recent response with id '{response_id}'", param="id")
            self.client.hincrby(keys.stats(name), f"thumbs_{rating}", 1)
        return str(name)

    def get(self, name: str) -> UsageStats:
        with redis_errors(self.url):
            counters: dict[str, str] = self.client.hgetall(keys.stats(name))
            recent = self.client.lrange(keys.latency(name), 0, -1)
        samples = sorted(float(v) for v in recent)
        p50 = samples[len(samples) // 2] if samples else None
        return UsageStats(**{k: int(v) for k, v in counters.items()}, p50_ms=p50)

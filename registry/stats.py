"""Usage statistics per specialist, written by the gateway, read by `show`, the API and the UI.

Counters are plain Redis hashes (HINCRBY), latencies a capped list, so recording costs one
round trip and never blocks a request: the gateway treats a failed write as a lost sample.
Feedback counts once per response: its latest rating is kept beside the response key, and a
new rating moves the count in one WATCH/MULTI transaction (two raters racing cannot both count).
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
        self,
        name: str,
        *,
        routed: bool,
        latency_ms: float,
        error: bool,
        response_id: str | None,
        query: str | None = None,
    ) -> None:
        """Count one request; with `response_id`, remember who answered (and the routed
        `query`, for a thumbs-up to propose as a router lesson) for the feedback TTL."""
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
                if query:
                    pipe.set(keys.response_query(response_id), query, ex=keys.RESPONSE_TTL_S)
            pipe.execute()

    def feedback(self, response_id: str, rating: Rating) -> str:
        """Rate `response_id` for the specialist that produced it: the latest rating wins and
        counts once (sending it again changes nothing; up then down moves the count)."""
        response_key, rating_key = keys.response(response_id), keys.rating(response_id)

        def rate(pipe: Any) -> str:  # retried by redis-py if a watched key changes meanwhile
            name = pipe.get(response_key)
            if name is None:
                raise NotFoundError(f"no recent response with id '{response_id}'", param="id")
            previous, ttl = pipe.get(rating_key), pipe.ttl(response_key)
            pipe.multi()
            pipe.set(rating_key, rating, ex=ttl if ttl > 0 else keys.RESPONSE_TTL_S)
            if previous != rating:
                pipe.hincrby(keys.stats(name), f"thumbs_{rating}", 1)
                if previous in ("up", "down"):
                    pipe.hincrby(keys.stats(name), f"thumbs_{previous}", -1)
            return str(name)

        with redis_errors(self.url):
            name: str = self.client.transaction(
                rate, response_key, rating_key, value_from_callable=True
            )
        return name

    def rating_of(self, response_id: str) -> str | None:
        """The response's counted rating so far ("up", "down" or None)."""
        with redis_errors(self.url):
            value: str | None = self.client.get(keys.rating(response_id))
        return value

    def query_of(self, response_id: str) -> str | None:
        """The routed query behind a recent response (None: pinned, expired or unknown)."""
        with redis_errors(self.url):
            value: str | None = self.client.get(keys.response_query(response_id))
        return value

    def get(self, name: str) -> UsageStats:
        with redis_errors(self.url):
            counters: dict[str, str] = self.client.hgetall(keys.stats(name))
            recent = self.client.lrange(keys.latency(name), 0, -1)
        samples = sorted(float(v) for v in recent)
        p50 = samples[len(samples) // 2] if samples else None
        return UsageStats(**{k: int(v) for k, v in counters.items()}, p50_ms=p50)

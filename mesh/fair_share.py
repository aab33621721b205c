"""A fair share of each specialist's queue: no client may hold more than N of its requests.

Serve's queue is first come, first served, so one client sending 100 requests at once would
make everyone else wait behind them (or get 503 when the queue fills). The gateway counts open
requests per (client, specialist) and refuses the client's next one with 429 + Retry-After
while it is at its share; other clients still get in.
"""

from __future__ import annotations

from collections.abc import Callable

from registry.errors import RateLimitedError


class FairShare:
    def __init__(self, per_client: int) -> None:
        self.per_client = per_client
        self.open: dict[tuple[str, str], int] = {}

    def acquire(self, client: str, specialist: str) -> Callable[[], None]:
        """Take a slot or raise 429; returns an idempotent release function."""
        key = (client, specialist)
        if self.open.get(key, 0) >= self.per_client:
            raise RateLimitedError(
                f"you already have {self.per_client} requests open on '{specialist}'; "
                "wait for one to finish"
            )
        self.open[key] = self.open.get(key, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            left = self.open.get(key, 1) - 1
            if left > 0:
                self.open[key] = left
            else:
                self.open.pop(key, None)

        return release

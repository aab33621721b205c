"""Follow the controller's live view (and, for the gateway, the specialists' loads) from
another deployment (gateway, router replicas).

Polling a generation number is one cheap call; the full view is fetched only when it moved. Pull
rather than push, so any number of replicas stay in step and a restarted replica catches up alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ray.serve.handle import DeploymentHandle

from mesh.controller import LiveView
from router.cluster import SpecialistLoad

logger = logging.getLogger("ray.serve")
POLL_S = 0.5


class LiveFollower:
    def __init__(
        self, controller: DeploymentHandle, on_change: Callable[[LiveView], Awaitable[None]]
    ) -> None:
        self.controller = controller
        self.on_change = on_change
        self.view = LiveView(generation=-1, specialists={})
        self._task = asyncio.get_event_loop().create_task(self._poll())

    async def refresh(self) -> LiveView:
        generation = await self.controller.live_generation.remote()
        if generation != self.view.generation:
            view: LiveView = await self.controller.live_view.remote()
            await self.on_change(view)
            self.view = view
        return self.view

    async def _poll(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:
                logger.exception("could not refresh the live view; retrying")
            await asyncio.sleep(POLL_S)


class LoadFollower:
    """The controller's view of each specialist's replicas (`cluster_loads`), polled every
    `POLL_S`: what the gateway's cluster-aware routing and `/metrics` read. A failed poll keeps
    the last view: routing then decides on slightly old numbers, never on none."""

    def __init__(self, controller: DeploymentHandle) -> None:
        self.controller = controller
        self.loads: dict[str, SpecialistLoad] = {}
        self._task = asyncio.get_event_loop().create_task(self._poll())

    async def refresh(self) -> dict[str, SpecialistLoad]:
        self.loads = dict(await self.controller.cluster_loads.remote())
        return self.loads

    async def _poll(self) -> None:
        failing = False
        while True:
            try:
                await self.refresh()
                failing = False
            except Exception:
                if not failing:
                    logger.exception("could not read the specialists' loads; retrying")
                failing = True
            await asyncio.sleep(POLL_S)

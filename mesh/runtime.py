"""`mesh up`: start Redis (embedded unless MESH_REDIS_URL), Ray, Serve, the mesh and the UI.

Foreground by design: it prints the URLs when the mesh is ready, and Ctrl-C (or SIGTERM) shuts
down Serve, Ray and the embedded Redis it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from mesh.settings import MeshSettings
from registry import Principal, Registry, UnavailableError
from registry.redis_server import EmbeddedRedis

UI_APP = "ui"
UI_ROUTE = "/ui"


@contextlib.contextmanager
def registry_for(settings: MeshSettings) -> Iterator[Registry]:
    """A registry on MESH_REDIS_URL, or on the embedded server (started here if not running)."""
    embedded = None
    url = settings.redis_url
    if not url:
        embedded = EmbeddedRedis(settings.data_dir)
        url = embedded.start()
    try:
        yield Registry.from_url(url)
    finally:
        if embedded is not None:
            embedded.stop()


def seed_catalog(registry: Registry) -> list[str]:
    """Publish the built-in catalog (installed the first time); return what was added.

    The mesh itself acts as admin here: the catalog ships with the code.
    """
    from registry.artifacts import pin_artifacts
    from specialists.catalog import load_catalog

    added = []
    for manifest in load_catalog():
        if registry.exists(manifest.name, manifest.version):
            continue
        first_time = manifest.name not in registry.names()
        admin = Principal(admin=True, operator=True)
        registry.publish(pin_artifacts(manifest), admin, install=first_time)
        added.append(manifest.ref)
    return added


def wait_ready(
    base_url: str, timeout_s: float, progress: Callable[[str], None], stop: threading.Event
) -> dict[str, Any] | None:
    """Poll /healthz until every installed specialist is live (None if stopped meanwhile)."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline and not stop.is_set():
        try:
            response = httpx.get(f"{base_url}/healthz", timeout=5.0)
            body = response.json()
            if response.status_code == 200:
                for name, state in body.get("specialists", {}).items():
                    if state.get("pending") and state["status"] != "RUNNING":
                        progress(f"{name} is not placed yet: {state['pending']}")
                return dict(body)
            states = ", ".join(
                f"{n}: {s['status']}" for n, s in body.get("specialists", {}).items()
            )
            if states != last:
                progress(f"waiting for specialists ({states or 'none yet'})")
                last = states
            failed = [
                n for n, s in body.get("specialists", {}).items() if s["status"] == "DEPLOY_FAILED"
            ]
            if failed:
                details = "; ".join(body["specialists"][n]["message"][:300] for n in failed)
                raise UnavailableError(f"specialists failed to deploy: {failed}: {details}")
        except (httpx.HTTPError, ValueError):
            pass
        stop.wait(1.0)
    if stop.is_set():
        return None
    raise UnavailableError(f"the mesh was not ready after {timeout_s:.0f}s")


def up(
    settings: MeshSettings,
    *,
    ui: bool = True,
    address: str | None = None,
    echo: Callable[[str], None] = print,
    ready_timeout_s: float = 600.0,
) -> None:
    import ray
    from ray import serve

    from mesh.app import MESH_APP, build_mesh_app

    embedded = None
    if not settings.redis_url:
        embedded = EmbeddedRedis(settings.data_dir)
        settings = settings.model_copy(update={"redis_url": embedded.start()})
        echo(f"embedded Redis at {settings.redis_url} (AOF under {settings.data_dir})")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        registry = Registry.from_url(str(settings.redis_url))
        for ref in seed_catalog(registry):
            echo(f"published {ref} from the built-in catalog")
        _start_ray(ray, address, settings)
        serve.start(http_options={"host": settings.host, "port": settings.port})
        serve.run(build_mesh_app(settings), name=MESH_APP, route_prefix="/")
        if ui:
            from ui.app import build_ui_app

            serve.run(build_ui_app(settings.base_url), name=UI_APP, route_prefix=UI_ROUTE)
        if wait_ready(settings.base_url, ready_timeout_s, echo, stop) is not None:
            ui_line = f"  UI {settings.base_url}{UI_ROUTE}" if ui else ""
            echo(f"mesh ready: API {settings.base_url}/v1{ui_line}")
            echo("press Ctrl-C to stop")
        while not stop.wait(0.5):
            if embedded is not None:
                _supervise(embedded, settings.redis_restart_delay_s, echo, stop)
        echo("stopping the mesh ...")
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        with contextlib.suppress(Exception):
            ray.shutdown()
        if embedded is not None:
            embedded.stop()
        echo("mesh stopped")


def _supervise(
    embedded: EmbeddedRedis, delay_s: float, echo: Callable[[str], None], stop: threading.Event
) -> None:
    """Restart the embedded Redis if it died; the mesh keeps serving from its cached view."""
    code = embedded.exited()
    if code is None:
        return
    echo(f"embedded Redis exited ({code}); restarting in {delay_s:.0f}s")
    if stop.wait(delay_s):
        return
    try:
        embedded.restart()
        echo("embedded Redis is back")
    except UnavailableError as error:
        echo(f"embedded Redis did not restart: {error.message}")


def _start_ray(ray: Any, address: str | None, settings: MeshSettings) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, namespace="mesh", log_to_driver=False)
        return
    ray.init(
        num_cpus=settings.ray_num_cpus or os.cpu_count(),
        namespace="mesh",
        include_dashboard=False,
        log_to_driver=False,
    )

"""`mesh up`: start Redis (embedded unless MESH_REDIS_URL), Ray, Serve, the mesh and the UI.

Foreground by design: it prints the URLs when the mesh is ready, and Ctrl-C (or SIGTERM) shuts
down Serve, Ray and the embedded Redis it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from mesh.admin_token import ensure_admin_token, token_file
from mesh.health import FAILED_STATUSES
from mesh.settings import MeshSettings
from registry import Principal, Registry, UnavailableError
from registry.redis_server import EmbeddedRedis
from specialists.onnx_build import conversions_running

UI_APP = "ui"
# Ray uses the loopback address as its node IP when clusters are off for this platform.
RAY_LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
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
    base_url: str,
    timeout_s: float,
    progress: Callable[[str], None],
    stop: threading.Event,
    admin_token: str | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any] | None:
    """Poll /healthz until every installed specialist is live or settled (None if stopped).

    A specialist that failed to deploy does not stop the mesh: it is reported, with the
    operator's details, and the mesh serves `degraded`."""
    deadline = time.monotonic() + timeout_s
    last = ""
    headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
    while time.monotonic() < deadline and not stop.is_set():
        try:
            response = httpx.get(f"{base_url}/healthz", timeout=5.0, headers=headers)
            body = response.json()
            specialists = body.get("specialists", {})
            if response.status_code == 200:
                for name, state in specialists.items():
                    if state.get("pending") and state["status"] != "RUNNING":
                        progress(f"{name} is not placed yet: {state['pending']}")
                    if state["status"] in FAILED_STATUSES:
                        detail = str(state.get("message") or "")[:300]
                        progress(f"{name} failed to deploy ({state['status']}): {detail}")
                return dict(body)
            states = ", ".join(f"{n}: {s['status']}" for n, s in specialists.items())
            if cache_dir is not None and (building := conversions_running(cache_dir)):
                # Replicas on this machine convert into MESH_HOME: once per model, minutes.
                states += f"; converting to ONNX int8 once, cached: {', '.join(building)}"
            if states != last:
                progress(f"waiting for specialists ({states or 'none yet'})")
                last = states
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
    if not address:
        _loopback_only()
    import ray
    from ray import serve

    from mesh.app import MESH_APP, build_mesh_app

    token, created = ensure_admin_token(settings)
    settings = settings.model_copy(update={"admin_token": token})
    if created:
        echo(f"admin token (shown once; saved to {token_file(settings)}, mode 0600): {token}")
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
        # One HTTP proxy, on the head node with the control plane (`mesh.app.ON_HEAD`).
        serve.start(
            proxy_location="HeadOnly",
            http_options={"host": settings.host, "port": settings.port},
        )
        serve.run(build_mesh_app(settings), name=MESH_APP, route_prefix="/")
        if ui:
            from ui.app import build_ui_app

            serve.run(build_ui_app(settings), name=UI_APP, route_prefix=UI_ROUTE)
        health = wait_ready(
            settings.base_url,
            ready_timeout_s,
            echo,
            stop,
            settings.admin_token,
            cache_dir=settings.artifacts_dir,
        )
        if health is not None:
            ui_line = f"  UI {settings.base_url}{UI_ROUTE}" if ui else ""
            state = "" if health.get("status") == "ok" else f" ({health.get('status')})"
            echo(f"mesh ready{state}: API {settings.base_url}/v1{ui_line}")
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


def _loopback_only() -> None:
    """Make a local Ray listen on 127.0.0.1 only (its GCS, raylet and workers), not on every
    interface: Ray reads this before it starts, and it must be set before `import ray`."""
    if "ray" in sys.modules and os.environ.get(RAY_LOCAL_ONLY) != "0":
        raise RuntimeError("mesh up must set up Ray's bind address before Ray is imported")
    os.environ[RAY_LOCAL_ONLY] = "0"


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

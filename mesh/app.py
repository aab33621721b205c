"""`build_mesh_app`: the whole mesh control plane as one Serve application.

The same builder runs from Python (`serve.run(build_mesh_app(settings))`), from `mesh up`, and
from `serve run mesh.app:build_mesh_app redis_url=...`. Specialists are separate applications
that the controller deploys from the registry.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from mesh.controller import MeshController
from mesh.gateway import Gateway
from mesh.router_service import RouterService
from mesh.settings import MeshSettings
from specialists.serve_options import head_actor_options

MESH_APP = "mesh"


def build_mesh_app(settings: MeshSettings | dict[str, Any] | None = None) -> Application:
    if not isinstance(settings, MeshSettings):
        settings = MeshSettings.model_validate(settings or {})
    if not settings.redis_url:
        raise ValueError("build_mesh_app needs settings.redis_url (mesh up starts one for you)")
    controller = serve.deployment(  # type: ignore[attr-defined]
        MeshController,
        name="controller",
        num_replicas=1,
        ray_actor_options=head_actor_options(0.05),
        max_ongoing_requests=1000,
    ).bind(settings.redis_url)
    router = serve.deployment(  # type: ignore[attr-defined]
        RouterService,
        name="router",
        ray_actor_options=head_actor_options(0.1),
        max_ongoing_requests=256,
    ).bind(controller, settings.model_dump(mode="json"))
    gateway = serve.deployment(
        Gateway,
        name="gateway",
        ray_actor_options=head_actor_options(0.1),
        max_ongoing_requests=256,
    )
    settings_data = settings.model_dump(mode="json")
    return gateway.bind(router, controller, settings_data)  # type: ignore[attr-defined]

"""serve_config.yaml must pass Ray Serve's own deploy schema and build the mesh's applications.

Building an Application binds deployments only: no Ray cluster is started here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

CONFIG = Path(__file__).resolve().parents[2] / "serve_config.yaml"


@pytest.fixture(autouse=True)
def _no_mesh_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The file alone must configure the mesh: no MESH_* variable of this shell fills a gap."""
    for name in os.environ:
        if name.startswith("MESH_"):
            monkeypatch.delenv(name)


def _config() -> dict[str, Any]:
    return dict(yaml.safe_load(CONFIG.read_text()))


def _apps() -> dict[str, dict[str, Any]]:
    return {app["name"]: app for app in _config()["applications"]}


def test_serve_config_matches_ray_schema() -> None:
    from ray.serve.schema import ServeDeploySchema

    from mesh.app import MESH_APP
    from mesh.runtime import UI_APP, UI_ROUTE

    schema = ServeDeploySchema.model_validate(_config())  # raises on schema errors
    apps = {app.name: app for app in schema.applications}
    assert apps[MESH_APP].import_path == "mesh.app:build_mesh_app"
    assert apps[MESH_APP].route_prefix == "/"
    assert apps[UI_APP].import_path == "ui.app:build_ui_app"
    assert apps[UI_APP].route_prefix == UI_ROUTE


def test_mesh_args_are_mesh_settings_that_match_the_proxy() -> None:
    from mesh.app import MESH_APP
    from mesh.settings import MeshSettings

    http = _config()["http_options"]
    for app in _apps().values():
        settings = MeshSettings.model_validate(app["args"])
        assert set(app["args"]) <= set(MeshSettings.model_fields)  # no typo silently ignored
        assert (settings.host, settings.port) == (http["host"], http["port"])
    assert MeshSettings.model_validate(_apps()[MESH_APP]["args"]).redis_url
    # secrets come from the environment, never from a committed file
    assert MeshSettings.model_validate(_apps()[MESH_APP]["args"]).admin_token is None


def test_builders_return_applications_as_serve_deploy_calls_them() -> None:
    import ray
    from ray._common.utils import import_attr
    from ray.serve import Application
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve._private.build_app import build_app

    import mesh.app

    assert callable(mesh.app.build_mesh_app)
    assert isinstance(mesh.app.build_mesh_app(_apps()[mesh.app.MESH_APP]["args"]), Application)
    for name, app in _apps().items():
        # What the Serve controller does with an application of a deployed config.
        built = call_user_app_builder_with_args_if_necessary(
            import_attr(app["import_path"]), app["args"]
        )
        assert isinstance(built, Application)
        names = {deployment.name for deployment in build_app(built, name=name).deployments}
        overrides = {deployment["name"] for deployment in app.get("deployments", [])}
        assert overrides <= names  # Serve refuses settings for a deployment the app lacks
    assert not ray.is_initialized()  # building binds deployments only

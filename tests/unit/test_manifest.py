from __future__ import annotations

from pathlib import Path

import pytest

from registry import ManifestError, load_manifest, parse_manifest
from registry.manifest import version_key
from specialists.catalog import load_catalog
from tests.conftest import manifest_data


def test_valid_manifest_gets_defaults() -> None:
    manifest = parse_manifest(manifest_data())
    assert manifest.schema_version == 1
    assert manifest.ref == "demo@1.0.0"
    assert manifest.resources.num_cpus > 0
    assert manifest.scaling.min_replicas == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": "Not_DNS"}, "name"),
        ({"name": "mesh"}, "name"),
        ({"version": "1.0"}, "version"),
        ({"examples": ["only", "two"]}, "examples"),
        ({"examples": ["a", " ", "c"]}, "examples"),
        ({"descriptionn": "typo"}, "descriptionn"),
        ({"model": {"source": ""}}, "model.source"),
        ({"model": {"source": "x", "engine": "nope"}}, "model.engine"),
        ({"resources": {"num_cpus": 0}}, "resources.num_cpus"),
        ({"scaling": {"min_replicas": 3, "max_replicas": 1}}, "scaling"),
        ({"schema_version": 99}, "schema_version"),
    ],
)
def test_invalid_field_is_named(overrides: dict, field: str) -> None:
    with pytest.raises(ManifestError) as error:
        parse_manifest(manifest_data(**overrides))
    assert f"  {field}" in error.value.message
    assert error.value.status_code == 400


def test_missing_field_is_named() -> None:
    data = manifest_data()
    del data["owner"]
    with pytest.raises(ManifestError, match="owner: field required"):
        parse_manifest(data)


def test_unknown_field_says_what_to_do() -> None:
    with pytest.raises(ManifestError, match="colour: unknown field"):
        parse_manifest(manifest_data(colour="blue"))


def test_load_manifest_reports_unreadable_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read manifest"):
        load_manifest(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ManifestError, match="must be a mapping"):
        load_manifest(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_manifest(tmp_path / "broken.yaml")


def test_semver_ordering() -> None:
    ordered = ["0.1.0", "0.9.0", "1.0.0-alpha", "1.0.0", "1.0.1", "1.10.0", "2.0.0"]
    assert sorted(reversed(ordered), key=version_key) == ordered


def test_catalog_is_valid_and_routable() -> None:
    catalog = {m.name: m for m in load_catalog()}
    assert {"general", "code", "writing", "math"} <= set(catalog)
    assert catalog["math"].model.engine == "tool"
    llms = [m for m in catalog.values() if m.model.engine == "transformers"]
    for manifest in catalog.values():
        assert len(manifest.examples) >= 10
    for manifest in llms:
        assert manifest.system_prompt
        assert "math" in manifest.can_message
    prompts = {m.system_prompt for m in llms}
    assert len(prompts) == len(llms), "each specialist has its own system prompt"

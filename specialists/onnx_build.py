"""Convert a specialist's base model to an int8 ONNX model with onnxruntime-genai's model
builder: once, offline, cached by the base's identity.

The base is read exactly as `TransformersEngine` reads it (`load_causal_lm`: local files only,
GGUF dequantized, pins checked first), saved as a plain HF folder and handed to
onnxruntime-genai's model builder. The result is kept under the caller's cache folder, named
by a digest of what determines it (source, revision, pinned or measured file hashes, a merged
adapter, precision, recipe and tool versions), so every replica and restart after the first
loads it in a second. Each build goes into a temporary folder renamed into place when complete,
under a file lock (two replicas never convert at once), and writes `build.json` with the sha256
of every file; every load checks them, so a swapped or corrupted cache file is refused, never
run.

Two edits to the builder's graph (see `patch_last_token`, `specialists.onnx_lora`): logits are
taken at each row's own last prompt token (prompts are right-padded, as GroupQueryAttention
wants them; the builder's pruned LM head reads the last column), and a twin graph takes LoRA
weights as inputs.

Precision: int8 weights (block 32, int8 activations: the CPU default `accuracy_level=4`). It
keeps the perplexity of the fp32 model (measured 23.49 against 23.52 on the text of
`benchmarks/engine_quality.py`) at 3x its speed; int4 would quantize the already 4-bit GGUF a
second time, on another grid, and was measured to hurt answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.errors import ManifestError, UnavailableError
from registry.manifest import SpecialistManifest, artifact_id, source_kind
from specialists.sources import (
    ResolvedSource,
    SourceOptions,
    adapter_folder,
    resolve_source,
    verify_sources,
)

log = logging.getLogger(__name__)

PRECISION = "int8"
RECIPE = 2  # bump when the conversion below changes: old cache entries are then not reused
RECORD = "build.json"
DECODER = "model.onnx"
LORA_DECODER = "lora.onnx"
ADAPTER_FILE = "adapter.onnx_adapter"
BUILDER_OPTIONS = ("prune_lm_head=true", "hf_token=false")
LOCK_TIMEOUT_S = 3600.0
SOURCE_FIELD = "model.source"


@dataclass(frozen=True)
class OnnxModel:
    """A verified build: its folder and its `build.json`."""

    folder: Path
    record: dict[str, Any]

    @property
    def eos_token_ids(self) -> set[int]:
        return {int(i) for i in self.record["eos_token_ids"]}

    @property
    def context_length(self) -> int:
        return int(self.record["context_length"])

    @property
    def shape(self) -> dict[str, int]:
        """The KV cache's shape: layers, kv_heads, head_dim; and the vocabulary."""
        return {k: int(v) for k, v in self.record["shape"].items()}

    @property
    def lora(self) -> dict[str, Any]:
        """The LoRA twin graph's projections (`specialists.onnx_lora.add_lora_inputs`)."""
        return dict(self.record.get("lora") or {})

    @property
    def key(self) -> str:
        return str(self.record["key"])


# -- identity -----------------------------------------------------------------------------
def tool_versions() -> dict[str, str]:
    """The versions a conversion depends on (the builder, its runtime, the GGUF reader)."""
    from importlib.metadata import version

    return {name: version(name) for name in ("onnxruntime-genai", "onnxruntime", "transformers")}


def model_identity(
    manifest: SpecialistManifest, sources: SourceOptions, *, merged: bool
) -> dict[str, Any]:
    """What determines the converted model. Pinned files are identified by their pins; an
    unpinned `package:` source by its files' hashes (an upgraded package converts again); an
    `artifact:` is content-addressed; a hub id by its revision and the cached snapshot."""
    spec = manifest.model
    identity: dict[str, Any] = {
        "recipe": RECIPE,
        "precision": PRECISION,
        "tools": tool_versions(),
        "source": spec.source,
        "revision": spec.revision,
        "files": _files_identity(spec.source, "", spec.sha256, SOURCE_FIELD, spec.revision),
    }
    if merged and spec.adapter:
        identity["adapter"] = {
            "source": spec.adapter,
            "files": _files_identity(spec.adapter, "adapter/", spec.sha256, "model.adapter"),
        }
    return identity


def _files_identity(
    source: str, prefix: str, pins: dict[str, str], field: str, revision: str | None = None
) -> dict[str, str]:
    adapter = prefix == "adapter/"
    pinned = {k: v for k, v in pins.items() if k.startswith("adapter/") == adapter}
    if pinned:
        return dict(sorted(pinned.items()))
    kind = source_kind(source)
    if kind == "artifact":
        return {"artifact": artifact_id(source) or ""}
    if kind == "hub":
        return {"snapshot": _hub_snapshot(source, revision)}
    from registry.artifacts import source_hashes

    return dict(sorted(source_hashes(source, field, prefix).items()))


def _hub_snapshot(repo: str, revision: str | None) -> str:
    """The commit of the locally cached snapshot of a hub model (nothing is downloaded)."""
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(repo, revision=revision, local_files_only=True)
    except Exception:
        raise ManifestError(
            f"{SOURCE_FIELD}: {repo} is not in the local model cache", param=SOURCE_FIELD
        ) from None
    return Path(path).name


def digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def entry_name(source: str, key: str) -> str:
    """A cache folder name: a readable stem of the source and the identity's digest."""
    stem = re.sub(r"[^a-z0-9]+", "-", source.rsplit("/", 1)[-1].lower()).strip("-")
    return f"{stem[:40].strip('-') or 'model'}-{key[:16]}"


# -- the cache ----------------------------------------------------------------------------
def ensure_model(
    manifest: SpecialistManifest, cache_dir: Path, sources: SourceOptions | None = None
) -> OnnxModel:
    """The verified ONNX build of `manifest`'s model (with its adapter merged in, if it has
    one), converted first if the cache lacks it."""
    sources = sources or SourceOptions()
    merged = bool(manifest.model.adapter)
    identity = model_identity(manifest, sources, merged=merged)
    key = digest(identity)
    folder = cache_dir / entry_name(manifest.model.source, key)
    if not folder.exists():
        with _locked(cache_dir, folder.name):
            if not folder.exists():  # another replica may have built it while we waited
                verify_sources(manifest, sources)  # swapped weights are never converted
                _build_model(manifest, sources, folder, identity, key)
    return OnnxModel(folder=folder, record=verify_build(folder, key))


def verify_build(folder: Path, key: str) -> dict[str, Any]:
    """`build.json`, after checking every file it lists (and that it lists every file)."""
    label = f"the ONNX cache entry {folder.name}"
    try:
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
        files: dict[str, str] = dict(record["files"])
    except (OSError, ValueError, KeyError, TypeError):
        raise _cache_error(folder, f"{label} has no readable {RECORD}") from None
    if record.get("key") != key:
        raise _cache_error(folder, f"{label} was built for another model")
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    extra = sorted(present - set(files) - {RECORD})
    if extra:
        raise _cache_error(folder, f"{label} holds a file it was not built with: {extra[0]}")
    for name, expected in files.items():
        path = folder / name
        if not path.is_file() or _sha256(path) != expected:
            raise _cache_error(folder, f"{label}: {name} is missing or does not match its build")
    return dict(record)


def _cache_error(folder: Path, message: str) -> ManifestError:
    log.error("%s (%s); delete the folder to convert again", message, folder)
    return ManifestError(f"{message}; refusing to load it", param=SOURCE_FIELD)


def _sha256(path: Path) -> str:
    from registry.artifact_store import sha256_of

    return sha256_of(path)


class _locked:
    """An exclusive file lock per cache entry (released by the OS if its holder dies)."""

    def __init__(self, cache_dir: Path, name: str) -> None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        from filelock import FileLock

        self.lock = FileLock(str(cache_dir / f".{name}.lock"), timeout=LOCK_TIMEOUT_S)

    def __enter__(self) -> None:
        self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def publish(files_root: Path, folder: Path, key: str, **record: Any) -> None:
    """Write `build.json` (sha256 of every file) and rename the finished build into place."""
    files = {
        p.relative_to(files_root).as_posix(): _sha256(p)
        for p in sorted(files_root.rglob("*"))
        if p.is_file()
    }
    data = {"key": key, "files": files, "built": time.time(), **record}
    (files_root / RECORD).write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    if not folder.exists():
        os.replace(files_root, folder)


BUILDING_PREFIX = ".building-"


@contextmanager
def building(folder: Path) -> Iterator[Path]:
    """A temporary folder beside `folder` to build it in (call with its lock held: leftovers
    of a builder that died are removed first)."""
    prefix = f"{BUILDING_PREFIX}{folder.name}-"
    for stale in folder.parent.glob(prefix + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=prefix) as tmp:
        yield Path(tmp)


def onnx_folder(cache_dir: str | Path) -> Path:
    """Where converted models live under an operator's cache folder (`SourceOptions.cache_dir`,
    `$MESH_HOME/artifacts` for `mesh up`)."""
    return Path(cache_dir).expanduser() / "onnx"


def conversions_running(cache_dir: Path) -> list[str]:
    """The cache entries being converted now under `cache_dir` (a replica's
    `SourceOptions.cache_dir`): what `mesh up` shows on its console while it waits."""
    folder = onnx_folder(cache_dir)
    if not folder.is_dir():
        return []
    names = (p.name[len(BUILDING_PREFIX) :] for p in folder.glob(BUILDING_PREFIX + "*"))
    return sorted({name.rsplit("-", 1)[0] for name in names})


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    log.info(message)


# -- converting ---------------------------------------------------------------------------
def _build_model(
    manifest: SpecialistManifest,
    sources: SourceOptions,
    folder: Path,
    identity: dict[str, Any],
    key: str,
) -> None:
    from specialists.onnx_lora import add_lora_inputs

    spec = manifest.model
    started = time.monotonic()
    _progress(f"converting {spec.source} to ONNX {PRECISION} ...")
    resolved = resolve_source(spec.source, sources)
    adapter = None
    if spec.adapter:
        from specialists.transformers_engine import check_adapter_folder

        adapter = check_adapter_folder(
            adapter_folder(spec.adapter, sources), allow_pickle=sources.allow_pickle
        )
    with building(folder) as work:
        hf, out = work / "hf", work / "onnx"
        export = _export(resolved, spec.revision, sources.allow_pickle, adapter, hf)
        _run_builder(hf, out, work / "builder-cache", spec.source)
        patch_last_token(out / DECODER)
        lora = add_lora_inputs(out / DECODER, out / LORA_DECODER, export)
        shape = {k: export[k] for k in ("layers", "kv_heads", "head_dim", "vocab")}
        publish(
            out,
            folder,
            key,
            identity=identity,
            eos_token_ids=export["eos_token_ids"],
            context_length=export["context_length"],
            shape=shape,
            lora=lora,
        )
    _progress(
        f"converting {spec.source} to ONNX {PRECISION} ... done in "
        f"{time.monotonic() - started:.0f} s"
    )


def _export(
    source: ResolvedSource,
    revision: str | None,
    allow_pickle: bool,
    adapter: Path | None,
    out: Path,
) -> dict[str, Any]:
    """Save the base (adapter merged) as a plain fp32 HF folder, in a subprocess: the
    dequantized weights and torch's memory are gone when it exits."""
    job = {
        "location": source.location,
        "gguf_file": source.gguf_file,
        "local": source.local,
        "revision": revision,
        "allow_pickle": allow_pickle,
        "adapter": str(adapter) if adapter else None,
        "out": str(out),
    }
    _run(
        [sys.executable, "-m", "specialists.onnx_build", "export", json.dumps(job)],
        out.parent,
        "export",
    )
    return dict(json.loads((out / "mesh_export.json").read_text(encoding="utf-8")))


def _run_builder(hf: Path, out: Path, cache: Path, source: str) -> None:
    command = [
        sys.executable, "-m", "onnxruntime_genai.models.builder",
        "-i", str(hf), "-o", str(out), "-p", PRECISION, "-e", "cpu", "-c", str(cache),
        "--extra_options", *BUILDER_OPTIONS,
    ]  # fmt: skip
    _run(command, out.parent, f"the ONNX model builder for {source}")


def _run(command: list[str], workdir: Path, what: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    logfile = workdir / "convert.log"
    with logfile.open("ab") as handle:
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        tail = logfile.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        log.error("%s failed:\n%s", what, "\n".join(tail))
        raise UnavailableError(f"converting to ONNX failed in {what}: {' | '.join(tail)[-400:]}")


def patch_last_token(path: Path) -> None:
    """Make the pruned LM head read each row's last prompt token, not the batch's last column.

    A batch's prompts are right-padded (GroupQueryAttention reads each row's length from its
    attention mask's sum), so a shorter row's last token is at `seqlens_k` (that sum - 1, minus
    the tokens already cached). Decoding steps have one column: the index clamps to 0."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    nodes = {node.name: node for node in graph.node}
    gather, unsqueeze = nodes.get("/lm_head/prune/Gather"), nodes.get("/lm_head/prune/Unsqueeze")
    base = "/model/attn_mask_reformat/attn_mask_subgraph/"
    seqlens, total = base + "Sub/output_0", base + "Gather/output_0"
    produced = {out for node in graph.node for out in node.output}
    if gather is None or unsqueeze is None or not {seqlens, total} <= produced:
        raise UnavailableError("the ONNX model builder's graph has an unexpected layout")
    hidden, pruned = gather.input[0], unsqueeze.output[0]
    p = "/lm_head/last_token/"

    def const(name: str, value: list[int]) -> Any:
        return helper.make_node(
            "Constant", [], [p + name],
            value=helper.make_tensor(p + name, onnx.TensorProto.INT64, [len(value)], value),
        )  # fmt: skip

    added = [
        const("one", [1]),
        const("zero", [0]),
        helper.make_node("Shape", [hidden], [p + "shape"], start=1, end=2),  # [S]
        helper.make_node("Sub", [total, p + "shape"], [p + "past"]),  # cached tokens
        helper.make_node("Sub", [seqlens, p + "past"], [p + "index"]),  # [B]
        helper.make_node("Unsqueeze", [p + "index", p + "one"], [p + "column"]),  # [B, 1]
        helper.make_node("Sub", [p + "shape", p + "one"], [p + "last"]),
        helper.make_node("Min", [p + "column", p + "last"], [p + "upper"]),
        helper.make_node("Max", [p + "upper", p + "zero"], [p + "clamped"]),
        helper.make_node("GatherND", [hidden, p + "clamped"], [p + "rows"], batch_dims=1),
        helper.make_node("Unsqueeze", [p + "rows", p + "one"], [pruned]),
    ]
    dropped = {gather.name, unsqueeze.name}
    used = {name for n in graph.node if n.name not in dropped for name in n.input}
    dropped |= {n.name for n in graph.node if n.op_type == "Constant" and n.output[0] not in used}
    kept = [n for n in graph.node if n.name not in dropped]
    at = next(i for i, n in enumerate(kept) if pruned in n.input)
    del graph.node[:]
    graph.node.extend([*kept[:at], *added, *kept[at:]])
    onnx.save(model, str(path))


# -- the export subprocess ----------------------------------------------------------------
def export_hf(job: dict[str, Any]) -> None:
    """Load the base as `TransformersEngine` does, merge an adapter, save fp32 safetensors."""
    from specialists.weights import eos_token_ids, load_causal_lm

    source = ResolvedSource(job["location"], job["gguf_file"], job["local"])
    model, tokenizer, _ = load_causal_lm(
        source,
        revision=job["revision"],
        dtype="float32",
        allow_pickle=job["allow_pickle"],
        device="cpu",
        label=f"model {job['location']}",
    )
    if job["adapter"]:
        from specialists.transformers_engine import attach_adapter

        model = attach_adapter(model, Path(job["adapter"]), "default").merge_and_unload()
    # A GGUF-loaded model keeps its quantizer, which refuses `save_pretrained`; the weights
    # are already dequantized to fp32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out = Path(job["out"])
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    eos = sorted(eos_token_ids(model, tokenizer))
    config = model.config
    head_dim = _head_dim(config)
    info = {
        "eos_token_ids": eos,
        "context_length": int(getattr(config, "max_position_embeddings", 2048) or 2048),
        "layers": int(config.num_hidden_layers),
        "kv_heads": int(config.num_key_value_heads),
        "head_dim": head_dim,
        "vocab": int(config.vocab_size),
        "q_size": int(config.num_attention_heads * head_dim),
        "kv_size": int(config.num_key_value_heads * head_dim),
    }
    (out / "mesh_export.json").write_text(json.dumps(info), encoding="utf-8")


def _head_dim(config: Any) -> int:
    return int(
        getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    )


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "export":
        export_hf(json.loads(argv[1]))
        return
    raise SystemExit("usage: python -m specialists.onnx_build export <job json>")


if __name__ == "__main__":
    main(sys.argv[1:])

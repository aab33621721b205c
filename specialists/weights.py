"""Load a causal LM and its tokenizer from a resolved source: one loader for serving, training
and evaluation, so all three read weights under the same rules (local files only, no remote
code, safetensors unless the operator allows pickle)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from registry.artifact_store import is_local_path
from registry.errors import InvalidRequestError, ManifestError, UnavailableError
from specialists.sources import ResolvedSource, resolve_source


def base_location(base: str) -> ResolvedSource:
    """A local folder or .gguf file as given, else a manifest source resolved offline."""
    if is_local_path(base):
        path = Path(base).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            return ResolvedSource(location=str(path.parent), gguf_file=path.name)
        if path.is_dir():
            return ResolvedSource(location=str(path))
        raise InvalidRequestError(f"{base}: not a model folder or a .gguf file")
    return resolve_source(base)


def load_causal_lm(
    source: ResolvedSource,
    *,
    revision: str | None = None,
    dtype: str = "auto",
    allow_pickle: bool = False,
    device: str | None = None,
    label: str = "model",
) -> tuple[Any, Any, str]:
    """(model on `device`, tokenizer, device); `device` defaults to CUDA when there is one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if source.local and not source.gguf_file and not allow_pickle:
        refuse_pickle(Path(source.location))
    # Remote code stays off: a manifest cannot make the mesh run a model repo's Python.
    kwargs: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
    if not source.gguf_file and not allow_pickle:
        kwargs["use_safetensors"] = True
    if revision and not source.local:
        kwargs["revision"] = revision
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            source.location, dtype=torch_dtype(dtype, device), **kwargs
        )
    except OSError as error:
        raise UnavailableError(f"cannot load {label}: {error}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device), tokenizer, device  # type: ignore[arg-type]


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def refuse_pickle(folder: Path, field: str = "model.source") -> None:
    """Refuse a folder whose weights are pickles: unpickling can run arbitrary code."""
    pickles = sorted({p.suffix for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES})
    if pickles and not any(folder.glob("*.safetensors")):
        raise ManifestError(
            f"{field}: holds pickle weights ({', '.join(pickles)}); pickle can run code when "
            "loaded. Convert them to safetensors (the operator may allow pickle with "
            "MESH_ALLOW_PICKLE=1).",
            param=field,
        )


def torch_dtype(name: str, device: str) -> Any:
    """`auto` is fp16 on a GPU and fp32 on CPU (CPU half precision is slow and lossy)."""
    import torch

    if name == "auto":
        return torch.float16 if device == "cuda" else torch.float32
    return getattr(torch, name)


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token that ends an answer: the generation config's and the tokenizer's EOS."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    return {int(i) for i in ids if i is not None}

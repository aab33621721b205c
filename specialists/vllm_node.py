"""What runs on the GPU nodes of a vLLM specialist's `llm-<name>` app (see `vllm_engine`).

Loaded there by Ray Serve LLM by name (`LLMConfig.callback_config`, `LLMServer`'s
`model_downloader`), so it imports `ray.llm` at module level: only nodes with the `gpu` extra
import this module.

- `NodeSourcesCallback`: before vLLM starts, on every node holding its workers, checks the
  manifest's sha256 pins, fetches `artifact:` sources into the cache, and checks that the files
  are where the LLMConfig (built on the controller's node) says.
- `LocalAdapterLoader`: hands vLLM the specialist's LoRA folder already on the node (Ray Serve
  LLM's own loader downloads from cloud storage only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.llm._internal.common.callbacks.base import CallbackBase

from registry.errors import ManifestError
from registry.manifest import SpecialistManifest
from specialists.serve_options import keep_replica_on_loopback
from specialists.sources import SourceOptions, adapter_folder, local_path, verify_sources
from specialists.vllm_engine import ModelFiles


def prepare_node(kwargs: dict[str, Any]) -> None:
    """Verify and place one specialist's files on this node (idempotent; replicas may race)."""
    manifest = SpecialistManifest.model_validate(kwargs["manifest"])
    sources = SourceOptions.model_validate(kwargs["sources"])
    expected = ModelFiles(**kwargs["files"])
    verify_sources(manifest, sources)  # swapped weights never load
    spec = manifest.model
    found = local_path(spec.source, sources)  # an artifact is fetched (and verified) here
    if found is not None:  # a hub id: vLLM reads the node's Hugging Face cache, offline
        _same_place(found, expected.model, "model.source")
    if spec.adapter:
        _same_place(adapter_folder(spec.adapter, sources), expected.adapter, "model.adapter")


def _same_place(found: Path, expected: str | None, field: str) -> None:
    if expected is None or found.resolve() != Path(expected).resolve():
        raise ManifestError(
            f"{field}: on this node the files are at {found}, but the LLM config names "
            f"{expected}: install the same packages at the same paths on every node, and give "
            "every node the same artifact cache folder",
            param=field,
        )


class NodeSourcesCallback(CallbackBase):
    """Ray Serve LLM runs this on each node of the replica's placement group, before vLLM
    reads the model there (`callback_kwargs` come from `vllm_engine.llm_config_for`)."""

    async def on_before_node_init(self) -> None:
        """Runs in the `LLMServer` replica before its constructor returns: on a local mesh its
        Serve gRPC server binds to loopback, as every mesh deployment's does."""
        keep_replica_on_loopback()

    def on_before_download_model_files_distributed(self) -> None:
        prepare_node(self.kwargs)


class LocalAdapterLoader:
    """`LLMServer`'s `model_downloader`: the adapter folders are on the node already (placed by
    `NodeSourcesCallback`), keyed by model id in the LLMConfig's callback kwargs."""

    def __init__(self, download_timeout_s: float | None = None, max_tries: int = 1) -> None:
        self._loaded: dict[str, Any] = {}

    async def load_model_from_config(self, lora_model_id: str, llm_config: Any) -> Any:
        if lora_model_id in self._loaded:
            return self._loaded[lora_model_id]
        from ray.llm._internal.common.models import global_id_manager
        from ray.llm._internal.serve.core.configs.llm_config import DiskMultiplexConfig

        adapters = llm_config.callback_config.callback_kwargs.get("adapters") or {}
        folder = adapters.get(lora_model_id)
        if folder is None:
            raise ValueError(
                f"no adapter {lora_model_id!r} here; this app serves {sorted(adapters)}"
            )
        loaded = DiskMultiplexConfig(
            model_id=lora_model_id,
            max_total_tokens=None,
            local_path=folder,
            lora_assigned_int_id=global_id_manager.next(),
        )
        self._loaded[lora_model_id] = loaded
        return loaded

    async def clear_cache(self) -> None:
        self._loaded.clear()

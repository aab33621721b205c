"""`engine: vllm` specialists: vLLM through Ray Serve LLM (`ray.serve.llm`), not a wrapper of ours.

Each vLLM specialist is two Serve applications:

- `llm-<name>`: the application `ray.serve.llm.build_llm_deployment(LLMConfig)` builds. Its
  `LLMServer` replicas run vLLM on GPUs (continuous batching, paged KV cache, multi-LoRA);
  `llm_config_for` maps the manifest to the `LLMConfig` (model source, adapter, GPUs,
  accelerator type, replicas and autoscaling, offline environment).
- `specialist-<name>`: the mesh's own specialist app (routing, delegation, limits, trace) whose
  engine is `VllmEngine`, a thin client that sends each request to `llm-<name>` through a
  Serve handle and turns the OpenAI-shaped chunks it streams back into `TextDelta`s.

The controller deploys `llm-<name>` first and deletes both. Building the LLM app needs the
`gpu` extra (`pip install 'specialist-mesh[gpu]'`, i.e. `ray[llm]` with vLLM); nothing here
imports it at module level, so the CPU install imports this module and tests the mapping.

Sources, resolved where the weights load (`specialists.vllm_node` runs on each GPU node before
vLLM starts, through `LLMConfig.callback_config`):
- a hub id: read from the node's Hugging Face cache, offline (`HF_HUB_OFFLINE=1`);
- `package:`: a path inside an installed package, found on the controller's node; the package
  must be installed at the same path on every GPU node (one image for the cluster);
- `artifact:`: fetched from the store into `<cache_dir>/<id>` on each GPU node and verified.
`model.sha256` pins are checked on each node before vLLM reads a byte.

GGUF: vLLM loads a single `.gguf` file. Its tokenizer is taken from a tokenizer in the same
folder when there is one, else from the GGUF file itself (as the transformers engine does);
vLLM's documentation prefers the original repo's tokenizer, which the manifest cannot name yet.

LoRA: Ray Serve LLM loads adapters per request through Serve model multiplexing, but its
`LoraConfig.dynamic_lora_loading_path` accepts cloud storage only (s3://, gs://, abfss://,
azure://). So `lora_config` is set without a path and the `LLMServer` gets our
`model_downloader` (`specialists.vllm_node.LocalAdapterLoader`), which hands vLLM the adapter
folder already on the node. Requests for the adapter use the model id
`<name>:<version>` (Ray Serve LLM's `<base_model_id>:<lora_id>` form).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from registry.errors import InvalidRequestError, ManifestError, UnavailableError
from registry.manifest import SpecialistManifest, artifact_id, source_kind
from specialists.engine import (
    Engine,
    EngineCapabilities,
    EngineRequest,
    FinishReason,
    TextDelta,
)
from specialists.serve_options import deployment_options
from specialists.sources import SourceOptions

LLM_PREFIX = "llm-"
GPU_EXTRA = "pip install 'specialist-mesh[gpu]'"
NODE_CALLBACK = "specialists.vllm_node:NodeSourcesCallback"
# Weights are read from local files only: no hub downloads, no telemetry.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vLLM's `max_lora_rank` accepts
DEFAULT_LORA_RANK = 64  # an adapter whose config cannot be read here (rank found on the node)
GPU_MEMORY_SHARE = 0.9  # of the GPU share a replica asks for: vLLM's own default on a whole GPU
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
POLL_S = 0.05  # how often a waiting stream looks at its cancel event and deadline


# -- names --------------------------------------------------------------------------------
def llm_app_name(manifest: SpecialistManifest) -> str:
    """The Serve application running the specialist's vLLM engine."""
    return f"{LLM_PREFIX}{manifest.name}"


def base_model_id(manifest: SpecialistManifest) -> str:
    """The model id `llm-<name>` serves the base under (`served_model_name`)."""
    return manifest.name


def lora_model_id(manifest: SpecialistManifest) -> str | None:
    """The model id of the specialist's adapter, `<base_model_id>:<version>`, or None."""
    return f"{base_model_id(manifest)}:{manifest.version}" if manifest.model.adapter else None


# -- where the files are ------------------------------------------------------------------
@dataclass(frozen=True)
class ModelFiles:
    """What vLLM loads, as paths on the GPU nodes (or a hub id)."""

    model: str  # a model folder, a .gguf file, or a hub id
    tokenizer: str | None = None  # when not the model's own
    gguf: bool = False
    adapter: str | None = None  # a peft LoRA folder
    adapter_rank: int | None = None  # its `r`, when readable where the config is built


def locate_files(manifest: SpecialistManifest, sources: SourceOptions | None = None) -> ModelFiles:
    """Where the weights will be on each GPU node, found without downloading them.

    A package is looked up on this node (the same path must hold on the GPU nodes); an
    artifact's place is its cache folder (its index, read from the store, says whether it is a
    lone .gguf). Adapters are small: an artifact adapter is fetched here to read its rank.
    """
    sources = sources or SourceOptions()
    spec = manifest.model
    kind = source_kind(spec.source)
    if kind == "hub":
        files = ModelFiles(model=spec.source)
    elif kind == "package":
        from registry.artifacts import package_path

        files = _model_files(package_path(spec.source))
    else:
        index = sources.store().index(spec.source)
        if index is None:
            raise ManifestError(
                "model.source: artifact not found in the store", param="model.source"
            )
        folder = sources.artifact_cache() / (artifact_id(spec.source) or "")
        names = list(index.files)
        lone = len(names) == 1 and "/" not in names[0]
        files = _model_files(folder / names[0] if lone else folder, check_siblings=False)
    if not spec.adapter:
        return files
    adapter = _adapter_folder(spec.adapter, sources)
    return ModelFiles(
        model=files.model,
        tokenizer=files.tokenizer,
        gguf=files.gguf,
        adapter=str(adapter),
        adapter_rank=_adapter_rank(adapter),
    )


def _model_files(path: Path, *, check_siblings: bool = True) -> ModelFiles:
    if path.suffix == ".gguf":
        folder = path.parent
        shared = check_siblings and any((folder / name).is_file() for name in TOKENIZER_FILES)
        return ModelFiles(model=str(path), tokenizer=str(folder) if shared else None, gguf=True)
    if check_siblings and path.is_file():
        raise ManifestError(
            "model.source: a single file must be a .gguf; give a model folder instead",
            param="model.source",
        )
    return ModelFiles(model=str(path))


def _adapter_folder(adapter: str, sources: SourceOptions) -> Path:
    from specialists.sources import adapter_folder
    from specialists.weights import refuse_pickle

    folder = adapter_folder(adapter, sources)
    if not (folder / "adapter_config.json").is_file():
        raise ManifestError(
            "model.adapter: no adapter_config.json (a peft LoRA adapter folder)",
            param="model.adapter",
        )
    if not sources.allow_pickle:
        refuse_pickle(folder, "model.adapter")
    return folder


def _adapter_rank(folder: Path) -> int | None:
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ranks = [config.get("r"), *(config.get("rank_pattern") or {}).values()]
    known = [r for r in ranks if isinstance(r, int) and r > 0]
    return max(known) if known else None


# -- the LLMConfig ------------------------------------------------------------------------
def llm_config_for(
    manifest: SpecialistManifest,
    sources: SourceOptions | None = None,
    files: ModelFiles | None = None,
) -> dict[str, Any]:
    """The `ray.serve.llm.LLMConfig` fields for a vLLM specialist, as plain data.

    Pure given `files` (`locate_files` finds them otherwise): no Ray, no vLLM, so it is
    tested without either. `build_llm_app` validates it as an `LLMConfig`.
    """
    spec, resources, scaling = manifest.model, manifest.resources, manifest.scaling
    if spec.engine != "vllm":
        raise ManifestError(
            f"{manifest.ref}: model.engine is {spec.engine!r}, not 'vllm'", param="model.engine"
        )
    sources = sources or SourceOptions()
    files = files or locate_files(manifest, sources)

    engine_kwargs: dict[str, Any] = {
        "dtype": "float16" if files.gguf and spec.dtype == "auto" else spec.dtype,
        "trust_remote_code": False,  # a manifest never runs a model repo's Python
        "max_num_seqs": scaling.max_batch_size,
    }
    if not files.gguf and not sources.allow_pickle:
        engine_kwargs["load_format"] = "safetensors"  # pickle weights can run code
    if spec.revision and source_kind(spec.source) == "hub":
        engine_kwargs["revision"] = spec.revision
    if files.tokenizer:
        engine_kwargs["tokenizer"] = files.tokenizer

    config: dict[str, Any] = {
        "model_loading_config": {"model_id": base_model_id(manifest), "model_source": files.model},
        "runtime_env": {"env_vars": dict(OFFLINE_ENV)},
    }
    config.update(_gpu_layout(manifest, engine_kwargs))
    accelerator = getattr(resources, "accelerator_type", None)
    if accelerator:
        config["accelerator_type"] = accelerator

    adapters: dict[str, str] = {}
    lora_id = lora_model_id(manifest)
    if lora_id and files.adapter:
        adapters[lora_id] = files.adapter
        engine_kwargs.update(
            enable_lora=True, max_loras=1, max_lora_rank=_lora_rank(files.adapter_rank)
        )
        config["lora_config"] = {"max_num_adapters_per_replica": 1}

    actor_options: dict[str, Any] = {"num_cpus": resources.num_cpus}
    if resources.memory:
        actor_options["memory"] = resources.memory
    deployment = deployment_options(manifest.name, actor_options, scaling)
    deployment.pop("name")  # Ray Serve LLM names it `LLMServer:<model id>`
    config["deployment_config"] = deployment
    config["engine_kwargs"] = engine_kwargs
    config["callback_config"] = {
        "callback_class": NODE_CALLBACK,
        "callback_kwargs": {
            "manifest": manifest.model_dump(mode="json"),
            "sources": sources.model_dump(mode="json"),
            "files": asdict(files),
            "adapters": adapters,
        },
    }
    return config


def _gpu_layout(manifest: SpecialistManifest, engine_kwargs: dict[str, Any]) -> dict[str, Any]:
    """GPUs are the placement group's bundles (one per vLLM worker), never the replica actor's:
    a whole number is tensor parallelism over that many GPUs, a fraction shares one GPU."""
    gpus = manifest.resources.num_gpus
    if gpus <= 0:
        raise ManifestError(
            "engine 'vllm' runs on GPUs: set resources.num_gpus (1 for a GPU, 0.5 to share one, "
            "2 or more for tensor parallelism)",
            param="resources.num_gpus",
        )
    if gpus < 1:
        engine_kwargs["gpu_memory_utilization"] = round(GPU_MEMORY_SHARE * gpus, 3)
        return {"placement_group_config": {"bundle_per_worker": {"GPU": gpus}}}
    if not float(gpus).is_integer():
        raise ManifestError(
            "resources.num_gpus: a fraction of one GPU or a whole number of GPUs for 'vllm'",
            param="resources.num_gpus",
        )
    if gpus > 1:
        engine_kwargs["tensor_parallel_size"] = int(gpus)
    return {}


def _lora_rank(rank: int | None) -> int:
    if rank is None:
        return DEFAULT_LORA_RANK
    fitting = [r for r in LORA_RANKS if r >= rank]
    if not fitting:
        raise ManifestError(
            f"model.adapter: LoRA rank {rank} is above vLLM's largest ({LORA_RANKS[-1]})",
            param="model.adapter",
        )
    return fitting[0]


def build_llm_app(
    manifest: SpecialistManifest,
    sources: SourceOptions | None = None,
    *,
    engine_kwargs: dict[str, Any] | None = None,
) -> Any:
    """The `llm-<name>` Serve application (`ray.serve.llm.build_llm_deployment`).

    `engine_kwargs`: more vLLM engine arguments from the operator (never from a manifest),
    such as `max_model_len` or `enforce_eager`; they win over the mapped ones.
    """
    config = llm_config_for(manifest, sources)
    config["engine_kwargs"].update(engine_kwargs or {})
    try:
        from ray.serve.llm import LLMConfig, build_llm_deployment
    except ImportError as error:
        raise UnavailableError(
            f"{manifest.ref}: engine 'vllm' needs Ray Serve LLM and vLLM on this node: "
            f"{GPU_EXTRA} ({error})"
        ) from None
    try:
        llm_config = LLMConfig(**config)
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        raise ManifestError(f"{manifest.ref}: Ray Serve LLM refuses the config: {error}") from None
    bind: dict[str, Any] = {}
    if config["callback_config"]["callback_kwargs"]["adapters"]:
        from specialists.vllm_node import LocalAdapterLoader

        bind["model_downloader"] = LocalAdapterLoader
    return build_llm_deployment(llm_config, bind_kwargs=bind)


# -- the client -----------------------------------------------------------------------------
def chat_body(
    manifest: SpecialistManifest, request: EngineRequest, model_id: str
) -> dict[str, Any]:
    """The OpenAI chat request `LLMServer.chat` gets: the specialist's system prompt first (as
    the transformers engine does), the clamped settings, streamed with a final usage chunk."""
    messages = [m.model_dump() for m in request.messages]
    if manifest.system_prompt:
        messages.insert(0, {"role": "system", "content": manifest.system_prompt})
    params = request.params
    body: dict[str, Any] = {
        "model": model_id,
        "messages": messages,
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "repetition_penalty": params.repetition_penalty,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    return body


def chat_request(body: dict[str, Any]) -> Any:
    """vLLM's `ChatCompletionRequest` (what `LLMServer.chat` takes) from `chat_body`."""
    try:
        from ray.serve.llm.openai_api_models import ChatCompletionRequest
    except ImportError as error:
        raise UnavailableError(
            f"engine 'vllm' needs vLLM on this node: {GPU_EXTRA} ({error})"
        ) from None
    return ChatCompletionRequest.model_validate(body)


def finish_reason(reason: str | None) -> FinishReason:
    """vLLM's finish reasons in the mesh's terms (`abort` is a cancelled request)."""
    if reason == "length":
        return "length"
    if reason in ("abort", "cancelled"):
        return "cancelled"
    return "stop"


class ChunkReader:
    """Reads what `LLMServer.chat` streams: batches (lists) of SSE strings
    (`data: {chunk json}`), and in other setups chunk objects or dicts, an `ErrorResponse`, or
    one whole `ChatCompletionResponse`. Keeps the finish reason and the usage counts."""

    def __init__(self) -> None:
        self.finish: str | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.pieces = 0
        self.done = False

    def feed(self, item: Any) -> list[str]:
        """The text pieces in one streamed item; raises on an error chunk."""
        texts: list[str] = []
        for chunk in _chunks(item):
            if chunk is None:
                self.done = True
                continue
            texts.extend(self._read(chunk))
        return texts

    def _read(self, chunk: dict[str, Any]) -> list[str]:
        if chunk.get("error"):
            raise _error(chunk["error"])
        usage = chunk.get("usage") or {}
        self.prompt_tokens = usage.get("prompt_tokens") or self.prompt_tokens
        self.completion_tokens = usage.get("completion_tokens") or self.completion_tokens
        texts = []
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:  # the mesh asks for one choice
                continue
            content = (choice.get("delta") or choice.get("message") or {}).get("content")
            if content:
                texts.append(content)
                self.pieces += 1
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return texts

    def final(self, stopped: FinishReason | None = None) -> TextDelta:
        """The stream's last delta: `stopped` (cancelled, deadline) wins over vLLM's reason."""
        return TextDelta(
            text="",
            finish_reason=stopped or finish_reason(self.finish),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens or self.pieces,
        )


def _chunks(item: Any) -> Iterator[dict[str, Any] | None]:
    """The chunks in one streamed item as dicts; None for the `[DONE]` marker."""
    if isinstance(item, list | tuple):
        for part in item:
            yield from _chunks(part)
    elif isinstance(item, str):
        for event in item.split("\n\n"):
            payload = event.strip().removeprefix("data:").strip()
            if not payload:
                continue
            if payload == "[DONE]":
                yield None
                continue
            try:
                yield json.loads(payload)
            except ValueError:
                raise UnavailableError(
                    f"vLLM sent an unreadable chunk: {payload[:200]!r}"
                ) from None
    elif isinstance(item, dict):
        yield item
    elif hasattr(item, "model_dump"):
        yield item.model_dump(mode="json")
    else:
        raise UnavailableError(f"vLLM sent an unexpected {type(item).__name__}")


def _error(error: Any) -> Exception:
    info = error if isinstance(error, dict) else {"message": str(error)}
    message = str(info.get("message") or "vLLM failed")
    code, kind = info.get("code"), str(info.get("type") or "")
    if code in (400, "400") or "invalid_request" in kind or kind == "BadRequestError":
        return InvalidRequestError(message)
    return UnavailableError(f"vLLM: {message}")


class VllmEngine(Engine):
    """The specialist side of a vLLM specialist: forwards each request to `llm-<name>`.

    Holds no weights: vLLM (in the LLM app's replicas) batches, caches and decodes. Setting
    `cancel`, closing the stream or reaching `params.max_time_s` cancels the LLM app's request.
    """

    name: ClassVar[str] = "vllm"
    # `adapters` stays False: each vLLM specialist's LLM app serves its own adapter (LoRA in
    # its LLMConfig); several specialists' adapters on one LLM app (the mesh's shared-base
    # pool) are not wired for vLLM yet.
    # logprobs and n: vLLM has them, but the mesh's request does not carry them yet.
    capabilities: ClassVar[EngineCapabilities] = EngineCapabilities(continuous_batching=True)

    @classmethod
    def backend_app_name(cls, manifest: SpecialistManifest) -> str | None:
        return llm_app_name(manifest)

    @classmethod
    def build_backend_app(cls, manifest: SpecialistManifest, sources: SourceOptions) -> Any:
        return build_llm_app(manifest, sources)

    def __init__(self, manifest: SpecialistManifest, sources: SourceOptions | None = None) -> None:
        super().__init__(manifest, sources)
        self.app = llm_app_name(manifest)
        self._handle: Any = None
        self._loaded = False
        self._running = 0
        self._requests = 0

    def load(self) -> None:
        """Checks that this node can speak to Ray Serve LLM; the weights load in `llm-<name>`."""
        try:
            from ray.serve.llm.openai_api_models import ChatCompletionRequest  # noqa: F401
        except ImportError as error:
            raise UnavailableError(
                f"{self.manifest.name}: engine 'vllm' needs Ray Serve LLM and vLLM on every "
                f"node: {GPU_EXTRA} ({error})"
            ) from None
        self._loaded = True

    def health(self) -> None:
        if not self._loaded:
            raise UnavailableError(f"{self.manifest.name}: the vLLM client is not loaded")

    def stats(self) -> dict[str, Any]:
        return {"app": self.app, "running": self._running, "requests": self._requests}

    def add_adapter(self, manifest: SpecialistManifest) -> str:
        """The model id of this specialist's own adapter (`llm-<name>` serves that one)."""
        model_id = lora_model_id(manifest)
        if manifest.name != self.manifest.name or model_id is None:
            raise ManifestError(
                f"{manifest.ref}: the vllm engine serves its own specialist's adapter only",
                param="model.adapter",
            )
        return model_id

    def retire_adapter(self, name: str) -> None:
        """Nothing to do: Serve multiplexing evicts adapters a replica no longer needs."""

    def model_id(self, request: EngineRequest) -> str:
        return request.adapter or lora_model_id(self.manifest) or base_model_id(self.manifest)

    def _app_handle(self) -> Any:
        if self._handle is None:
            from specialists.serve_options import app_handle

            self._handle = app_handle(self.app, self.manifest.name, "its vLLM app")
        return self._handle

    async def stream(
        self, request: EngineRequest, cancel: threading.Event | None = None
    ) -> AsyncIterator[TextDelta]:
        model_id = self.model_id(request)
        options: dict[str, Any] = {"stream": True}
        if model_id != base_model_id(self.manifest):  # an adapter: Serve routes by it
            options["multiplexed_model_id"] = model_id
        body = chat_request(chat_body(self.manifest, request, model_id))
        responses = self._app_handle().options(**options).chat.remote(body)
        max_time = request.params.max_time_s
        deadline = request.arrived + max_time if max_time else None
        self._running += 1
        self._requests += 1
        try:
            async for delta in read_stream(responses, cancel, deadline):
                yield delta
        finally:
            self._running -= 1


async def read_stream(
    responses: Any, cancel: threading.Event | None = None, deadline: float | None = None
) -> AsyncIterator[TextDelta]:
    """`TextDelta`s from a streaming `LLMServer.chat` response (anything async-iterable with
    `cancel()`): text pieces, then one final delta. Cancels the response when `cancel` is set,
    the deadline (time.monotonic) passes, or the consumer stops early."""
    reader = ChunkReader()
    items = responses.__aiter__()
    pending: asyncio.Future[Any] | None = None
    stopped: FinishReason | None = None
    complete = False
    try:
        while not reader.done:
            if cancel is not None and cancel.is_set():
                stopped = "cancelled"
                break
            wait = POLL_S if cancel is not None else None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    stopped = "length"
                    break
                wait = min(wait or left, left)
            if pending is None:
                pending = asyncio.ensure_future(items.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=wait)
            if not done:
                continue
            finished, pending = pending, None
            try:
                item = finished.result()
            except StopAsyncIteration:
                break
            for text in reader.feed(item):
                yield TextDelta(text=text)
        yield reader.final(stopped)
        complete = stopped is None
    finally:
        if pending is not None:
            pending.cancel()
        if not complete:
            responses.cancel()

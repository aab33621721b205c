"""`engine: vllm`: the manifest -> `LLMConfig` mapping, and the client's chunk -> `TextDelta`
translation. No vLLM and no GPU here: the mapping is validated by Ray Serve LLM's own `LLMConfig`
schema (which imports without vLLM, given pyarrow), and the client reads fake streams shaped
exactly like what `LLMServer.chat` yields (batches of vLLM's `data: {chunk}` strings)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from registry import InvalidRequestError, ManifestError, SpecialistManifest, parse_manifest
from registry.artifacts import package_path
from registry.errors import UnavailableError
from specialists import vllm_engine
from specialists.catalog import SMOLLM2_SOURCE, load_catalog
from specialists.engine import ChatMessage, EngineRequest, GenerationParams, TextDelta
from specialists.sources import SourceOptions
from specialists.vllm_engine import (
    OFFLINE_ENV,
    ChunkReader,
    ModelFiles,
    VllmEngine,
    base_model_id,
    build_llm_app,
    chat_body,
    llm_app_name,
    llm_config_for,
    locate_files,
    lora_model_id,
    read_stream,
)
from tests.conftest import manifest_data

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SQL_ADAPTER = "package:specialists/catalog/adapters/sql"


def vllm_manifest(
    source: str = HUB_ID,
    *,
    resources: dict[str, Any] | None = None,
    scaling: dict[str, Any] | None = None,
    name: str = "demo",
    **model: Any,
) -> SpecialistManifest:
    """A validated manifest with `engine: vllm`. Until registry.manifest lists the engine (and
    `resources.accelerator_type`), the manifest validated without them is copied with them."""
    resources = {"num_gpus": 1, **(resources or {})}
    accelerator = resources.pop("accelerator_type", None)
    data = manifest_data(
        name=name,
        model={"source": source, **model},
        resources=resources,
        scaling=scaling or {},
        system_prompt="Answer briefly.",
    )
    try:
        data["model"]["engine"] = "vllm"
        if accelerator:
            data["resources"]["accelerator_type"] = accelerator
        return parse_manifest(data)
    except ManifestError:
        del data["model"]["engine"]
        data["resources"].pop("accelerator_type", None)
        manifest = parse_manifest(data)
        spec = manifest.model.model_copy(update={"engine": "vllm"})
        res = manifest.resources
        if accelerator:
            res = res.model_copy(update={"accelerator_type": accelerator})
        return manifest.model_copy(update={"model": spec, "resources": res})


def real_llm_config(config: dict[str, Any]) -> Any:
    """Ray Serve LLM's own schema (`ray.serve.llm.LLMConfig` subclasses it without changes;
    importing `ray.serve.llm` itself needs vLLM)."""
    try:
        from ray.llm._internal.serve.core.configs.llm_config import LLMConfig
    except ImportError as error:  # pragma: no cover - an environment without the dev extra
        raise AssertionError(
            f"validating LLMConfig needs pyarrow (the dev extra): {error}"
        ) from None
    return LLMConfig(**config)


# -- names ----------------------------------------------------------------------------------
def test_names_of_the_llm_app_and_its_models() -> None:
    base = vllm_manifest()
    lora = vllm_manifest(SMOLLM2_SOURCE, adapter=SQL_ADAPTER, name="sql")
    assert llm_app_name(base) == "llm-demo"
    assert base_model_id(base) == "demo"
    assert lora_model_id(base) is None
    assert lora_model_id(lora) == "sql:1.0.0"  # Ray Serve LLM's <base_model_id>:<lora_id>


def test_only_vllm_manifests_map() -> None:
    manifest = parse_manifest(manifest_data())
    with pytest.raises(ManifestError, match="not 'vllm'"):
        llm_config_for(manifest, files=ModelFiles(model="x"))


# -- the mapping, field by field ------------------------------------------------------------
def test_hub_manifest_maps_field_by_field() -> None:
    manifest = vllm_manifest(
        HUB_ID,
        revision="main",
        resources={"num_cpus": 2, "memory": 2**30},
        scaling={"min_replicas": 2, "max_replicas": 2, "max_batch_size": 32},
    )
    config = llm_config_for(manifest, SourceOptions())
    assert config["model_loading_config"] == {"model_id": "demo", "model_source": HUB_ID}
    assert config["engine_kwargs"] == {
        "dtype": "auto",
        "trust_remote_code": False,
        "max_num_seqs": 32,
        "load_format": "safetensors",
        "revision": "main",
    }
    assert config["runtime_env"] == {"env_vars": OFFLINE_ENV}
    assert OFFLINE_ENV["HF_HUB_OFFLINE"] == "1"
    assert config["deployment_config"] == {
        "num_replicas": 2,
        "ray_actor_options": {"num_cpus": 2, "memory": 2**30},  # GPUs are bundles, not here
        "max_ongoing_requests": 8,
        "max_queued_requests": 32,
        "health_check_period_s": 10,
        "graceful_shutdown_timeout_s": 30,
    }
    for absent in ("lora_config", "placement_group_config", "accelerator_type"):
        assert absent not in config
    callback = config["callback_config"]
    assert callback["callback_class"] == "specialists.vllm_node:NodeSourcesCallback"
    assert callback["callback_kwargs"]["files"]["model"] == HUB_ID
    assert callback["callback_kwargs"]["adapters"] == {}
    assert SpecialistManifest.model_validate(callback["callback_kwargs"]["manifest"]) == manifest

    llm = real_llm_config(config)
    assert llm.model_id == "demo"
    assert llm.model_loading_config.model_source == HUB_ID
    assert llm.lora_config is None
    assert llm.accelerator_config.kind == "gpu"
    assert llm.runtime_env["env_vars"]["HF_HUB_OFFLINE"] == "1"


def test_package_gguf_manifest_maps_to_the_file_on_this_node() -> None:
    manifest = vllm_manifest(SMOLLM2_SOURCE)
    config = llm_config_for(manifest)
    gguf = package_path(SMOLLM2_SOURCE)
    assert config["model_loading_config"]["model_source"] == str(gguf)
    kwargs = config["engine_kwargs"]
    assert kwargs["dtype"] == "float16"  # vLLM's GGUF kernels run in half precision
    assert "load_format" not in kwargs  # vLLM knows a .gguf
    assert "tokenizer" not in kwargs  # none beside the file: vLLM reads the GGUF's own
    assert "revision" not in kwargs
    files = config["callback_config"]["callback_kwargs"]["files"]
    assert files == {
        "model": str(gguf),
        "tokenizer": None,
        "gguf": True,
        "adapter": None,
        "adapter_rank": None,
    }
    assert real_llm_config(config).model_loading_config.model_source == str(gguf)


def test_a_tokenizer_beside_a_gguf_is_used(tmp_path: Path) -> None:
    (tmp_path / "model.Q4_0.gguf").write_bytes(b"GGUF")
    assert vllm_engine._model_files(tmp_path / "model.Q4_0.gguf").tokenizer is None
    (tmp_path / "tokenizer.json").write_text("{}")
    files = vllm_engine._model_files(tmp_path / "model.Q4_0.gguf")
    assert files == ModelFiles(
        model=str(tmp_path / "model.Q4_0.gguf"), tokenizer=str(tmp_path), gguf=True
    )
    config = llm_config_for(vllm_manifest(), files=files)
    assert config["engine_kwargs"]["tokenizer"] == str(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ManifestError, match=r"must be a \.gguf"):
        vllm_engine._model_files(tmp_path / "weights.bin")


def test_artifact_sources_map_to_the_cache_folder_of_each_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lone, folder = "a" * 64, "b" * 64
    indexes = {
        lone: SimpleNamespace(files={"smol.Q8_0.gguf": None}),
        folder: SimpleNamespace(files={"config.json": None, "model.safetensors": None}),
    }

    class Store:
        def index(self, artifact: str) -> Any:
            return indexes.get(artifact.removeprefix("artifact:"))

    monkeypatch.setattr(SourceOptions, "store", lambda self, field="model.source": Store())
    options = SourceOptions(redis_url="redis://store", cache_dir=str(tmp_path))
    files = locate_files(vllm_manifest("artifact:" + lone), options)
    assert files == ModelFiles(model=str(tmp_path / lone / "smol.Q8_0.gguf"), gguf=True)
    files = locate_files(vllm_manifest("artifact:" + folder), options)
    assert files == ModelFiles(model=str(tmp_path / folder))
    with pytest.raises(ManifestError, match="not found"):
        locate_files(vllm_manifest("artifact:" + "c" * 64), options)


def test_lora_adapter_manifest_maps_to_a_multiplexed_local_adapter() -> None:
    manifest = vllm_manifest(SMOLLM2_SOURCE, adapter=SQL_ADAPTER, name="sql")
    config = llm_config_for(manifest)
    folder = str(package_path(SQL_ADAPTER))
    assert config["lora_config"] == {"max_num_adapters_per_replica": 1}
    kwargs = config["engine_kwargs"]
    assert (kwargs["enable_lora"], kwargs["max_loras"], kwargs["max_lora_rank"]) == (True, 1, 8)
    callback = config["callback_config"]["callback_kwargs"]
    assert callback["adapters"] == {"sql:1.0.0": folder}
    assert (callback["files"]["adapter"], callback["files"]["adapter_rank"]) == (folder, 8)

    llm = real_llm_config(config)
    assert llm.lora_config.dynamic_lora_loading_path is None
    assert llm.multiplex_config().max_num_models_per_replica == 1


def test_ray_serve_llm_takes_lora_paths_in_cloud_storage_only() -> None:
    """Why the mesh brings its own adapter loader instead of `dynamic_lora_loading_path`."""
    from ray.llm._internal.serve.core.configs.llm_config import LoraConfig

    with pytest.raises(ValueError, match="s3://"):
        LoraConfig(dynamic_lora_loading_path=str(package_path(SQL_ADAPTER)))


def test_lora_ranks_round_up_to_what_vllm_accepts() -> None:
    assert vllm_engine._lora_rank(8) == 8
    assert vllm_engine._lora_rank(12) == 16
    assert vllm_engine._lora_rank(None) == vllm_engine.DEFAULT_LORA_RANK
    with pytest.raises(ManifestError, match="rank 1024"):
        vllm_engine._lora_rank(1024)


def test_gpu_resources_map_to_bundles_and_tensor_parallelism() -> None:
    with pytest.raises(ManifestError, match="runs on GPUs"):
        llm_config_for(vllm_manifest(resources={"num_gpus": 0}), files=ModelFiles(model="m"))
    with pytest.raises(ManifestError, match="whole number"):
        llm_config_for(vllm_manifest(resources={"num_gpus": 1.5}), files=ModelFiles(model="m"))

    whole = llm_config_for(vllm_manifest(resources={"num_gpus": 1}), files=ModelFiles(model="m"))
    assert "tensor_parallel_size" not in whole["engine_kwargs"]
    assert "placement_group_config" not in whole  # Ray's default: one {"GPU": 1} bundle

    shared = llm_config_for(vllm_manifest(resources={"num_gpus": 0.5}), files=ModelFiles(model="m"))
    assert shared["placement_group_config"] == {"bundle_per_worker": {"GPU": 0.5}}
    assert shared["engine_kwargs"]["gpu_memory_utilization"] == 0.45

    manifest = vllm_manifest(resources={"num_gpus": 2, "accelerator_type": "H100"})
    tp = llm_config_for(manifest, files=ModelFiles(model="m"))
    assert tp["engine_kwargs"]["tensor_parallel_size"] == 2
    assert tp["accelerator_type"] == "H100"
    for config in (whole, shared, tp):
        assert "num_gpus" not in config["deployment_config"]["ray_actor_options"]
        real_llm_config(config)
    assert real_llm_config(tp).accelerator_type == "H100"
    with pytest.raises(ValueError, match="Unsupported accelerator type"):
        real_llm_config({**tp, "accelerator_type": "H9000"})


def test_scaling_maps_to_autoscaling() -> None:
    scaling = {
        "min_replicas": 0,
        "max_replicas": 4,
        "target_ongoing_requests": 16,
        "max_ongoing_requests": 64,
        "max_queued_requests": 256,
        "max_batch_size": 64,
    }
    config = llm_config_for(vllm_manifest(scaling=scaling), files=ModelFiles(model="m"))
    deployment = config["deployment_config"]
    assert "num_replicas" not in deployment
    assert deployment["autoscaling_config"] == {
        "min_replicas": 0,
        "max_replicas": 4,
        "target_ongoing_requests": 16,
        "look_back_period_s": 30.0,
        "upscale_delay_s": 30.0,
        "downscale_delay_s": 600.0,
    }
    assert (deployment["max_ongoing_requests"], deployment["max_queued_requests"]) == (64, 256)
    assert config["engine_kwargs"]["max_num_seqs"] == 64
    assert real_llm_config(config).deployment_config["autoscaling_config"]["max_replicas"] == 4


def test_pickle_weights_stay_refused_unless_the_operator_allows_them() -> None:
    manifest = vllm_manifest()
    allowed = llm_config_for(
        manifest, SourceOptions(allow_pickle=True), files=ModelFiles(model="m")
    )
    assert "load_format" not in allowed["engine_kwargs"]
    refused = llm_config_for(manifest, files=ModelFiles(model="m"))
    assert refused["engine_kwargs"]["load_format"] == "safetensors"


def test_building_without_the_gpu_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray.serve.llm", None)  # as on a CPU install
    with pytest.raises(UnavailableError, match=r"specialist-mesh\[gpu\]"):
        build_llm_app(vllm_manifest(), SourceOptions())


# -- the GPU node side ----------------------------------------------------------------------
def catalog_sql_on_vllm() -> SpecialistManifest:
    sql = next(m for m in load_catalog() if m.name == "sql")  # pinned base and adapter
    return vllm_manifest(
        sql.model.source, adapter=sql.model.adapter, sha256=sql.model.sha256, name="sql"
    )


def test_nodes_verify_pins_and_check_the_files_are_where_the_config_says() -> None:
    from specialists.vllm_node import NodeSourcesCallback, prepare_node

    manifest = catalog_sql_on_vllm()
    config = llm_config_for(manifest)
    kwargs = config["callback_config"]["callback_kwargs"]
    prepare_node(kwargs)
    # As Ray Serve LLM makes it on each node (`LLMConfig.get_or_create_callback`).
    callback = NodeSourcesCallback(llm_config=real_llm_config(config), **kwargs)
    callback.run_callback_sync("on_before_download_model_files_distributed")
    asyncio.run(callback.run_callback("on_before_node_init"))  # in the replica: loopback

    moved = {**kwargs, "files": {**kwargs["files"], "model": "/elsewhere/smol.gguf"}}
    with pytest.raises(ManifestError, match="same paths on every node"):
        prepare_node(moved)
    pins = dict(manifest.model.sha256)
    pins["adapter/adapter_config.json"] = "0" * 64
    swapped = manifest.model_copy(
        update={"model": manifest.model.model_copy(update={"sha256": pins})}
    )
    with pytest.raises(ManifestError, match="does not match"):
        prepare_node({**kwargs, "manifest": swapped.model_dump(mode="json")})


def test_the_adapter_loader_hands_vllm_the_local_folder() -> None:
    from specialists.vllm_node import LocalAdapterLoader

    llm = real_llm_config(llm_config_for(catalog_sql_on_vllm()))
    loader = LocalAdapterLoader(download_timeout_s=30.0, max_tries=3)  # as LLMServer makes it
    loaded = asyncio.run(loader.load_model_from_config(lora_model_id="sql:1.0.0", llm_config=llm))
    assert loaded.model_id == "sql:1.0.0"
    assert loaded.local_path == str(package_path(SQL_ADAPTER))
    again = asyncio.run(loader.load_model_from_config(lora_model_id="sql:1.0.0", llm_config=llm))
    assert again.lora_assigned_int_id == loaded.lora_assigned_int_id
    with pytest.raises(ValueError, match=r"no adapter 'sql:9\.9\.9'"):
        asyncio.run(loader.load_model_from_config(lora_model_id="sql:9.9.9", llm_config=llm))


# -- the client: requests -----------------------------------------------------------------
def request(**params: Any) -> EngineRequest:
    return EngineRequest(
        messages=[ChatMessage(role="user", content="Hi")], params=GenerationParams(**params)
    )


def test_chat_body_carries_the_system_prompt_and_the_clamped_settings() -> None:
    body = chat_body(
        vllm_manifest(),
        request(max_tokens=12, temperature=0.0, top_p=0.5, stop=["\n\n"], seed=7),
        "demo",
    )
    assert body == {
        "model": "demo",
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Hi"},
        ],
        "max_tokens": 12,
        "temperature": 0.0,
        "top_p": 0.5,
        "repetition_penalty": 1.1,
        "stream": True,
        "stream_options": {"include_usage": True},
        "stop": ["\n\n"],
        "seed": 7,
    }
    assert "seed" not in chat_body(vllm_manifest(), request(), "demo")


def test_the_engine_says_what_it_is() -> None:
    engine = VllmEngine(vllm_manifest(SMOLLM2_SOURCE, adapter=SQL_ADAPTER, name="sql"))
    assert (engine.name, engine.app) == ("vllm", "llm-sql")
    caps = engine.capabilities
    assert caps.continuous_batching
    assert not (caps.grammars or caps.exact or caps.logprobs or caps.n), "not carried yet"
    assert not caps.adapters, "its own adapter rides in its LLMConfig, not a shared pool"
    assert VllmEngine.backend_app_name(engine.manifest) == "llm-sql"
    with pytest.raises(UnavailableError, match="not loaded"):
        engine.health()
    assert engine.add_adapter(engine.manifest) == "sql:1.0.0"
    with pytest.raises(ManifestError):
        engine.add_adapter(vllm_manifest())


# -- the client: vLLM's stream --------------------------------------------------------------
class DeltaMessage(BaseModel):  # vLLM's protocol models, field for field (what they dump)
    role: str | None = None
    content: str | None = None


class ChatCompletionResponseStreamChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    logprobs: Any = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens: int | None = 0


class ChatCompletionStreamResponse(BaseModel):
    id: str = "chatcmpl-1"
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = 1
    model: str = "demo"
    choices: list[ChatCompletionResponseStreamChoice] = []
    usage: UsageInfo | None = None


class ErrorInfo(BaseModel):
    message: str
    type: str
    code: int


class ErrorResponse(BaseModel):
    error: ErrorInfo


def vllm_chunks(pieces: list[str], reason: str, prompt_tokens: int = 9) -> list[BaseModel]:
    """What vLLM's chat endpoint streams: the role, the pieces (the last with the finish
    reason), then the usage chunk (`stream_options.include_usage`)."""

    def choice(content: str, **fields: Any) -> ChatCompletionStreamResponse:
        delta = DeltaMessage(content=content, **({"role": "assistant"} if not content else {}))
        return ChatCompletionStreamResponse(
            choices=[ChatCompletionResponseStreamChoice(delta=delta, **fields)]
        )

    chunks: list[BaseModel] = [choice("")]
    chunks += [choice(p) for p in pieces[:-1]]
    chunks.append(choice(pieces[-1], finish_reason=reason))
    usage = UsageInfo(
        prompt_tokens=prompt_tokens,
        completion_tokens=len(pieces),
        total_tokens=prompt_tokens + len(pieces),
    )
    chunks.append(ChatCompletionStreamResponse(choices=[], usage=usage))
    return chunks


def sse(chunks: list[BaseModel]) -> list[str]:
    """As vLLM serializes them, with its closing marker."""
    lines = [f"data: {c.model_dump_json(exclude_unset=True)}\n\n" for c in chunks]
    return [*lines, "data: [DONE]\n\n"]


def batched(items: list[Any], size: int) -> list[list[Any]]:
    """As `LLMServer.chat` yields them (Ray Serve LLM's Batcher: lists per interval)."""
    return [items[i : i + size] for i in range(0, len(items), size)]


class FakeResponses:
    """A `DeploymentResponseGenerator` stand-in: async iteration and `cancel()`."""

    def __init__(self, items: list[Any], delay_s: float = 0.0) -> None:
        self.items, self.delay_s, self.cancelled = list(items), delay_s, False

    def __aiter__(self) -> FakeResponses:
        return self

    async def __anext__(self) -> Any:
        await asyncio.sleep(self.delay_s)
        if not self.items:
            raise StopAsyncIteration
        return self.items.pop(0)

    def cancel(self) -> None:
        self.cancelled = True


def collect(responses: Any, **kwargs: Any) -> list[TextDelta]:
    async def main() -> list[TextDelta]:
        return [d async for d in read_stream(responses, **kwargs)]

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("reason", "expected"), [("stop", "stop"), ("length", "length"), ("abort", "cancelled")]
)
def test_batched_sse_chunks_become_text_deltas_and_one_final(reason: str, expected: str) -> None:
    responses = FakeResponses(batched(sse(vllm_chunks(["Hel", "lo", "!"], reason)), 2))
    deltas = collect(responses)
    assert [d.text for d in deltas[:-1]] == ["Hel", "lo", "!"]
    assert all(d.finish_reason is None for d in deltas[:-1])
    final = deltas[-1]
    assert (final.text, final.finish_reason) == ("", expected)
    assert (final.prompt_tokens, final.completion_tokens) == (9, 3)
    assert not responses.cancelled  # a finished stream is not cancelled


def test_chunk_objects_and_dicts_read_the_same_as_strings() -> None:
    chunks = vllm_chunks(["a", "b"], "stop")
    for items in ([chunks], [[c.model_dump() for c in chunks]], chunks):
        deltas = collect(FakeResponses(list(items)))
        assert "".join(d.text for d in deltas) == "ab"
        assert (deltas[-1].finish_reason, deltas[-1].completion_tokens) == ("stop", 2)


def test_a_whole_response_reads_as_one_delta() -> None:
    whole = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi."},
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
    }
    deltas = collect(FakeResponses([whole]))
    assert [d.text for d in deltas] == ["Hi.", ""]
    assert (deltas[-1].finish_reason, deltas[-1].completion_tokens) == ("length", 2)


def test_without_usage_the_pieces_are_counted() -> None:
    reader = ChunkReader()
    assert reader.feed(sse(vllm_chunks(["x", "y"], "stop"))[:3]) == ["x", "y"]
    assert reader.final().completion_tokens == 2


def test_errors_raise_request_errors_before_any_delta() -> None:
    too_long = ErrorResponse(
        error=ErrorInfo(message="maximum context length is 8192", type="BadRequestError", code=400)
    )
    with pytest.raises(InvalidRequestError, match="maximum context length"):
        collect(FakeResponses([too_long]))
    broken = FakeResponses([['data: {"error": {"message": "engine dead", "code": 500}}\n\n']])
    with pytest.raises(UnavailableError, match="engine dead"):
        collect(broken)
    assert broken.cancelled


def test_cancel_ends_with_cancelled_and_cancels_the_llm_request() -> None:
    cancel = threading.Event()
    responses = FakeResponses(batched(sse(vllm_chunks(list("abcdefgh"), "stop")), 1), 0.02)

    async def main() -> list[TextDelta]:
        deltas = []
        async for delta in read_stream(responses, cancel):
            deltas.append(delta)
            if delta.text == "b":
                cancel.set()
        return deltas

    deltas = asyncio.run(main())
    assert deltas[-1].finish_reason == "cancelled"
    assert "".join(d.text for d in deltas) == "ab"
    assert responses.cancelled


def test_the_deadline_ends_with_length() -> None:
    responses = FakeResponses(batched(sse(vllm_chunks(list("abcdefgh"), "stop")), 1), 0.05)
    started = time.monotonic()
    deltas = collect(responses, deadline=started + 0.2)
    assert deltas[-1].finish_reason == "length"
    assert len(deltas) < 8
    assert time.monotonic() - started < 1.0
    assert responses.cancelled


def test_leaving_early_cancels_the_llm_request() -> None:
    responses = FakeResponses(batched(sse(vllm_chunks(list("abcd"), "stop")), 1))

    async def main() -> None:
        stream = read_stream(responses)
        async for _ in stream:
            break
        await stream.aclose()  # type: ignore[attr-defined]

    asyncio.run(main())
    assert responses.cancelled


class FakeHandle:
    """`serve.get_app_handle("llm-<name>")`: records options and the request."""

    def __init__(self, items: list[Any]) -> None:
        self.items, self.options_seen, self.bodies = items, [], []  # type: ignore[var-annotated]
        self.chat = SimpleNamespace(remote=self._remote)

    def options(self, **options: Any) -> FakeHandle:
        self.options_seen.append(options)
        return self

    def _remote(self, body: Any) -> FakeResponses:
        self.bodies.append(body)
        return FakeResponses(self.items)


def run_engine(engine: VllmEngine, req: EngineRequest) -> list[TextDelta]:
    async def main() -> list[TextDelta]:
        return [d async for d in engine.stream(req)]

    return asyncio.run(main())


def test_the_engine_streams_base_and_adapter_requests_through_the_llm_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vllm_engine, "chat_request", lambda body: body)  # vLLM's type, there
    base = VllmEngine(vllm_manifest())
    base._handle = FakeHandle(batched(sse(vllm_chunks(["Hi", "."], "stop")), 3))
    deltas = run_engine(base, request(max_tokens=5))
    assert "".join(d.text for d in deltas) == "Hi."
    assert base._handle.options_seen == [{"stream": True}]  # the base: any replica
    assert base._handle.bodies[0]["model"] == "demo"
    assert base.stats() == {"app": "llm-demo", "running": 0, "requests": 1}

    lora = VllmEngine(vllm_manifest(SMOLLM2_SOURCE, adapter=SQL_ADAPTER, name="sql"))
    lora._handle = FakeHandle(batched(sse(vllm_chunks(["SELECT 1;"], "stop")), 3))
    deltas = run_engine(lora, request())
    assert deltas[-1].finish_reason == "stop"
    assert lora._handle.options_seen == [{"stream": True, "multiplexed_model_id": "sql:1.0.0"}]
    assert lora._handle.bodies[0]["model"] == "sql:1.0.0"

"""`OnnxGenAIEngine` (`engine: onnx`): a specialist's model converted to int8 ONNX by
onnxruntime-genai's model builder and decoded on onnxruntime with continuous batching, several
times faster than the transformers engine on CPU.

The model is converted once per base and cached (`specialists.onnx_build`); one worker thread
decodes every request (`specialists.onnx_batching`). LoRA adapters: a manifest's own
`model.adapter` is merged into the converted weights (a dedicated replica decodes at the base's
speed); a shared-base engine serves several through `add_adapter`, on a twin graph that takes
LoRA weights as inputs (`specialists.onnx_lora`); rows of each adapter decode together.

Threads: onnxruntime's intra-op pool is `intra_op_threads`, else the operator's
`MESH_ENGINE_THREADS` (`SourceOptions.engine_threads`), else OMP_NUM_THREADS (Ray sets it to a
replica's CPUs, 1 for a fractional CPU), else the machine's cores, up to 8. Measured on 2 idle
cores: 1 thread ~80 tok/s for one stream and ~240 tok/s for 8; 2 threads ~110-135 and ~330-400;
through a mesh on the same 2 cores, 2 threads were slower than 1 (docs/performance.md). Pool
threads do not spin between steps unless `spin` (onnxruntime spins by default): spinning was
~30% faster on idle cores but ~2x slower on cores another busy process shares, as a mesh's
HTTP proxy and gateway always do.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

from registry.errors import InvalidRequestError, ManifestError, UnavailableError
from registry.manifest import SpecialistManifest
from specialists.engine import (
    ChatMessage,
    Engine,
    EngineCapabilities,
    EngineRequest,
    GenerationParams,
    TextDelta,
)
from specialists.grammar import GrammarCompiler
from specialists.onnx_batching import Decoder, Graph, Row, Worker
from specialists.onnx_build import DECODER, LORA_DECODER, OnnxModel, ensure_model, onnx_folder
from specialists.sources import SourceOptions

MAX_DEFAULT_THREADS = 8


def default_threads() -> int:
    """OMP_NUM_THREADS when set (Ray sets it from a replica's CPUs), else the cores, up to 8."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_THREADS))


def default_cache_dir(sources: SourceOptions) -> Path:
    """`<cache_dir>/onnx` of the operator's loading settings, else a temp folder."""
    if sources.cache_dir:
        return onnx_folder(sources.cache_dir)
    return Path(tempfile.gettempdir()) / "mesh-onnx"


class OnnxGenAIEngine(Engine):
    """An int8 ONNX model on onnxruntime, with our own continuous batching and sampling."""

    name: ClassVar[str] = "onnx"
    capabilities: ClassVar[EngineCapabilities] = EngineCapabilities(
        adapters=True, continuous_batching=True, grammars=True, logprobs=True
    )

    def __init__(
        self,
        manifest: SpecialistManifest,
        sources: SourceOptions | None = None,
        *,
        cache_dir: Path | None = None,
        intra_op_threads: int | None = None,
        max_batch_size: int | None = None,
        spin: bool = False,
    ) -> None:
        super().__init__(manifest, sources)
        self.cache_dir = cache_dir or default_cache_dir(self.sources)
        self.threads = intra_op_threads or self.sources.engine_threads or default_threads()
        self.max_batch_size = max_batch_size or manifest.scaling.max_batch_size
        self.spin = spin
        self.built: OnnxModel | None = None
        self.tokenizer: Any = None
        self.graph: Graph | None = None
        self._lora: Graph | None = None  # the LoRA twin, loaded with the first adapter
        self._tensors: dict[str, dict[str, Any]] = {}  # adapter name -> its input tensors
        self._adapters: dict[str, SpecialistManifest] = {}  # name -> its specialist
        self._retiring: set[str] = set()
        self._book = threading.Lock()
        self._worker: Worker | None = None
        self.grammars: GrammarCompiler | None = None

    # -- loading --------------------------------------------------------------------------
    def load(self) -> None:
        from transformers import AutoTokenizer

        self.built = ensure_model(self.manifest, self.cache_dir, self.sources)
        self.graph = self._graph(DECODER)
        self.tokenizer = AutoTokenizer.from_pretrained(
            str(self.built.folder), local_files_only=True, trust_remote_code=False
        )
        decoder = Decoder(
            tokenizer=self.tokenizer,
            eos_ids=self.built.eos_token_ids,
            context_length=self.built.context_length,
            graphs=self._graphs,
        )
        self.grammars = GrammarCompiler(self.tokenizer, self.built.eos_token_ids)
        worker = Worker(decoder, max_batch_size=self.max_batch_size)
        worker.on_finish = self._finished
        worker.start()
        self._worker = worker

    def _graph(self, filename: str) -> Graph:
        import onnxruntime as ort

        assert self.built is not None
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # the builder's graphs log harmless warnings
        options.add_session_config_entry("session.intra_op.allow_spinning", str(int(self.spin)))
        path = str(self.built.folder / filename)
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return Graph(session=session, **self.built.shape)

    def _graphs(self, adapter: str | None) -> tuple[Graph, dict[str, Any] | None]:
        if adapter is None:
            assert self.graph is not None
            return self.graph, None
        tensors = self._tensors.get(adapter)
        if self._lora is None or tensors is None:
            raise InvalidRequestError(f"adapter {adapter!r} is not loaded", param="model")
        return self._lora, tensors

    def close(self) -> None:
        """Stop the worker (rows still running end with an error)."""
        if self._worker is not None:
            self._worker.stop()

    def health(self) -> None:
        if self._worker is None or not self._worker.alive():
            raise UnavailableError(f"{self.manifest.ref} is not loaded")

    def stats(self) -> dict[str, Any]:
        stats = self._worker.snapshot() if self._worker else {}
        return {**stats, "threads": self.threads, "adapters": sorted(self._adapters)}

    # -- requests -------------------------------------------------------------------------
    def prepare(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        specialist: SpecialistManifest | None = None,
    ) -> list[int]:
        """The prompt's token ids (the chat template, the specialist's system prompt first:
        this engine's own, or an adapter's); a prompt that cannot fit with its `max_tokens`
        is the request's error."""
        specialist = specialist or self.manifest
        chat = [{"role": m.role, "content": m.content} for m in messages]
        if specialist.system_prompt:
            chat.insert(0, {"role": "system", "content": specialist.system_prompt})
        encoded = self.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_dict=True
        )
        ids = [int(i) for i in encoded["input_ids"]]
        assert self.built is not None
        context = self.built.context_length
        if len(ids) + params.max_tokens > context:
            raise InvalidRequestError(
                f"prompt is {len(ids)} tokens; with max_tokens={params.max_tokens} it exceeds "
                f"the {context}-token context of {specialist.name}",
                param="messages",
            )
        return ids

    async def stream(
        self, request: EngineRequest, cancel: threading.Event | None = None
    ) -> AsyncIterator[TextDelta]:
        if self._worker is None:
            raise UnavailableError(f"{self.manifest.ref} is not loaded")
        specialist = self._specialist(request.adapter)
        ids = self.prepare(request.messages, request.params, specialist)
        constraint = None
        if request.params.grammar is not None:
            assert self.grammars is not None
            # Compiling a large grammar takes a while: never on the replica's event loop.
            constraint = await asyncio.to_thread(self.grammars.start, request.params.grammar)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[TextDelta | BaseException] = asyncio.Queue()

        def emit(item: TextDelta | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the caller's loop is gone
                row.closed = True

        row = Row(
            ids=ids,
            params=request.params,
            emit=emit,
            cancel=cancel or threading.Event(),
            adapter=request.adapter,
            arrived=request.arrived,
            constraint=constraint,
        )
        self._worker.submit(row)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason:
                    return
        finally:
            row.closed = True  # read no further: the worker drops the row at its next step

    def _specialist(self, adapter: str | None) -> SpecialistManifest:
        """The specialist a request speaks to: its adapter's, or this engine's own."""
        if adapter is None:
            return self.manifest
        with self._book:
            manifest = self._adapters.get(adapter)
            if manifest is None or adapter in self._retiring:
                raise InvalidRequestError(f"adapter {adapter!r} is not loaded", param="model")
        return manifest

    # -- adapters -------------------------------------------------------------------------
    def add_adapter(self, manifest: SpecialistManifest) -> str:
        """Check, convert (cached) and load a specialist's LoRA adapter; returns its name."""
        from specialists.onnx_lora import ensure_adapter

        if self.built is None or self._worker is None:
            raise UnavailableError(f"{self.manifest.ref} is not loaded")
        self._check_base(manifest)
        name = manifest.ref
        with self._book:
            if name in self._adapters:
                self._retiring.discard(name)
                return name
        path = ensure_adapter(manifest, self.built, self.cache_dir, self.sources)
        import onnxruntime as ort

        tensors = dict(ort.AdapterFormat.read_adapter(str(path)).get_parameters())
        with self._worker.lock:
            if self._lora is None:
                self._lora = self._graph(LORA_DECODER)
            self._tensors[name] = tensors
        with self._book:
            self._adapters[name] = manifest
        return name

    def retire_adapter(self, name: str) -> None:
        """Unload `name` now, or when its last waiting or running request is done."""
        with self._book:
            if name not in self._adapters:
                return
            self._retiring.add(name)
        if self._worker is not None and self._worker.uses(name) == 0:
            self._unload(name)

    def _finished(self, row: Row) -> None:
        if row.adapter is not None and row.adapter in self._retiring:
            assert self._worker is not None
            if self._worker.uses(row.adapter) == 0:
                self._unload(row.adapter)

    def _unload(self, name: str) -> None:
        with self._book:
            if name not in self._retiring:
                return  # wanted again since it was retired
            self._retiring.discard(name)
            self._adapters.pop(name, None)
        assert self._worker is not None
        with self._worker.lock:
            self._tensors.pop(name, None)

    def _check_base(self, manifest: SpecialistManifest) -> None:
        """An adapter decodes on the base it was made for, converted unmerged."""
        mine, theirs = self.manifest.model, manifest.model
        if mine.adapter:
            raise ManifestError(
                f"{self.manifest.ref} decodes with its own adapter merged in; adapters need "
                "an engine on the bare base",
                param="model.adapter",
            )
        base = {k: v for k, v in theirs.sha256.items() if not k.startswith("adapter/")}
        if (theirs.source, theirs.revision, base) != (mine.source, mine.revision, mine.sha256):
            raise ManifestError(
                f"{manifest.ref} is not on this engine's base ({mine.source})",
                param="model.source",
            )
        if not theirs.adapter:
            raise ManifestError(f"{manifest.ref} has no adapter", param="model.adapter")

"""`TransformersEngine`: runs a specialist's model with Hugging Face transformers on CPU or GPU.

Loads GGUF (dequantized by transformers), local folders, and hub ids from the local cache only
(`local_files_only=True`: nothing is downloaded at run time).
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

from registry.artifacts import verify_artifacts
from registry.errors import InvalidRequestError, ManifestError, UnavailableError
from registry.manifest import SpecialistManifest
from specialists.engine import (
    ChatMessage,
    Engine,
    FinishReason,
    GenerationParams,
    GenerationResult,
    TextDelta,
    truncate_at_stop,
)
from specialists.sources import resolve_source


class TransformersEngine(Engine):
    def __init__(self, manifest: SpecialistManifest) -> None:
        super().__init__(manifest)
        self.model: Any = None
        self.tokenizer: Any = None
        self.context_length = 2048
        self.device = "cpu"

    def load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        spec = self.manifest.model
        source = resolve_source(spec.source)
        verify_artifacts(self.manifest)  # swapped or corrupted weights never load
        if source.local and not source.gguf_file and not spec.allow_pickle:
            refuse_pickle(Path(source.location))
        # Remote code stays off: a manifest cannot make the mesh run a model repo's Python.
        kwargs: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
        if not source.gguf_file and not spec.allow_pickle:
            kwargs["use_safetensors"] = True
        if spec.revision and not source.local:
            kwargs["revision"] = spec.revision
        if source.gguf_file:
            kwargs["gguf_file"] = source.gguf_file
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = _torch_dtype(spec.dtype, self.device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(source.location, dtype=dtype, **kwargs)
            self.model = model.to(self.device)  # type: ignore[arg-type]
        except OSError as error:
            raise UnavailableError(
                f"cannot load model for {self.manifest.ref} from {spec.source}: {error}"
            ) from None
        self.model.eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        config = self.model.config
        self.context_length = int(getattr(config, "max_position_embeddings", 2048) or 2048)

    # -- requests -------------------------------------------------------------------------
    def generate(self, messages: list[ChatMessage], params: GenerationParams) -> GenerationResult:
        text, last = "", TextDelta(text="")
        for delta in self.stream(messages, params):
            text += delta.text
            last = delta
        return GenerationResult(
            text=text,
            prompt_tokens=last.prompt_tokens,
            completion_tokens=last.completion_tokens,
            finish_reason=last.finish_reason or "stop",
        )

    def stream(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        cancel: threading.Event | None = None,
    ) -> Generator[TextDelta, None, None]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        stop_now = cancel if cancel is not None else threading.Event()
        inputs = self._encode(messages, params)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        streamer = TextIteratorStreamer(
            self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=300.0
        )

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **_: Any) -> bool:
                return stop_now.is_set()

        generated: dict[str, int] = {}

        def run() -> None:
            try:
                with torch.inference_mode():
                    if params.seed is not None:
                        torch.manual_seed(params.seed)
                    output = self.model.generate(
                        **inputs,
                        **self._sampling(params),
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([_Cancelled()]),
                    )
                generated["tokens"] = int(output.shape[1]) - prompt_tokens
            except Exception:  # the streamer must always end, or the reader waits forever
                streamer.end()
                raise

        worker = threading.Thread(target=run, name=f"generate-{self.manifest.name}", daemon=True)
        worker.start()
        text = ""
        finish: FinishReason | None = None
        try:
            for piece in streamer:
                combined, stopped = truncate_at_stop(text + piece, params.stop)
                if combined[len(text) :]:
                    yield TextDelta(text=combined[len(text) :])
                text = combined
                if stopped:
                    finish = "stop"
                    stop_now.set()
                    break
            cancelled = finish is None and stop_now.is_set()
        finally:
            # Reached early when the consumer stops reading (client gone): free the slot.
            stop_now.set()
            worker.join()
        tokens = generated.get("tokens", len(self.tokenizer.encode(text)))
        if finish is None:
            finish = (
                "cancelled" if cancelled else "length" if tokens >= params.max_tokens else "stop"
            )
        yield TextDelta(
            text="", finish_reason=finish, prompt_tokens=prompt_tokens, completion_tokens=tokens
        )

    # -- helpers --------------------------------------------------------------------------
    def _encode(self, messages: list[ChatMessage], params: GenerationParams) -> Any:
        chat = [{"role": m.role, "content": m.content} for m in messages]
        if self.manifest.system_prompt:
            chat.insert(0, {"role": "system", "content": self.manifest.system_prompt})
        encoded = self.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        prompt_tokens = int(encoded["input_ids"].shape[1])
        if prompt_tokens + params.max_tokens > self.context_length:
            raise InvalidRequestError(
                f"prompt is {prompt_tokens} tokens; with max_tokens={params.max_tokens} it exceeds "
                f"the {self.context_length}-token context of {self.manifest.name}",
                param="messages",
            )
        return {key: value.to(self.device) for key, value in encoded.items()}

    def _sampling(self, params: GenerationParams) -> dict[str, Any]:
        sampling: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "repetition_penalty": params.repetition_penalty,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if params.max_time_s is not None:
            sampling["max_time"] = params.max_time_s
        if params.temperature > 0:
            sampling.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            sampling.update(do_sample=False)
        return sampling


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def refuse_pickle(folder: Path) -> None:
    """Refuse a folder whose weights are pickles: unpickling can run arbitrary code."""
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles and not any(folder.glob("*.safetensors")):
        raise ManifestError(
            f"model.source: {folder} holds pickle weights ({', '.join(pickles[:3])}); pickle can "
            "run code when loaded. Convert them to safetensors, or set model.allow_pickle: true "
            "if you trust them.",
            param="model.source",
        )


def _torch_dtype(name: str, device: str) -> Any:
    import torch

    if name == "auto":
        return torch.float16 if device == "cuda" else torch.float32
    return getattr(torch, name)

"""`TransformersEngine`: runs a specialist's model with Hugging Face transformers on CPU or GPU.

Loads GGUF (dequantized by transformers), `package:` and `artifact:` folders, and hub ids from the
local cache only (`local_files_only=True`: nothing is downloaded at run time); see
`specialists.sources`. Pickle weights load only when the operator allows them (`SourceOptions`,
MESH_ALLOW_PICKLE). A manifest's `model.adapter` (a peft LoRA folder) is applied on top and
merged into the weights, so a dedicated replica decodes at the base's speed; a shared-base pool
(`specialists.adapter_pool`) keeps several adapters unmerged on one base instead, with the same
checks (`attach_adapter`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from registry.errors import InvalidRequestError, ManifestError, UnavailableError
from registry.manifest import SpecialistManifest
from specialists.decoding import BatchDecoder, PrefixCache
from specialists.engine import (
    BatchEngine,
    ChatMessage,
    EngineCapabilities,
    GenerationParams,
    Prompt,
)
from specialists.grammar import GrammarCompiler
from specialists.sources import SourceOptions, adapter_folder, resolve_source, verify_sources
from specialists.weights import eos_token_ids, load_causal_lm, refuse_pickle


class TransformersEngine(BatchEngine):
    """The mesh's own continuous-batching decoder on a transformers model: what the fast
    engines are measured against, and what alone serves training-time features (merged or
    unmerged peft adapters on any base transformers loads, per-row sampling, any dtype, GPU)."""

    name: ClassVar[str] = "transformers"
    capabilities: ClassVar[EngineCapabilities] = EngineCapabilities(
        continuous_batching=True, adapters=True, grammars=True, logprobs=True
    )

    def __init__(self, manifest: SpecialistManifest, sources: SourceOptions | None = None) -> None:
        super().__init__(manifest, sources)
        self.model: Any = None
        self.tokenizer: Any = None
        self.context_length = 2048
        self.device = "cpu"
        self.eos_ids: set[int] = set()
        self.prefix: PrefixCache | None = None
        self.grammars: GrammarCompiler | None = None

    def load(self) -> None:
        spec, pickle = self.manifest.model, self.sources.allow_pickle
        source = resolve_source(spec.source, self.sources)
        verify_sources(self.manifest, self.sources)  # swapped or corrupted weights never load
        adapter = None
        if spec.adapter:  # checked before the slow part
            folder = adapter_folder(spec.adapter, self.sources)
            adapter = check_adapter_folder(folder, allow_pickle=pickle)
        self.model, self.tokenizer, self.device = load_causal_lm(
            source,
            revision=spec.revision,
            dtype=spec.dtype,
            allow_pickle=pickle,
            label=f"model for {self.manifest.ref} from {spec.source}",
        )
        if adapter is not None:  # merged: decoding costs what the base alone costs
            self.model = attach_adapter(self.model, adapter, "default").merge_and_unload()
        self.model.eval()
        if self.sources.engine_threads and self.device == "cpu":  # the operator's, not Ray's 1
            import torch

            torch.set_num_threads(self.sources.engine_threads)
        config = self.model.config
        self.eos_ids = eos_token_ids(self.model, self.tokenizer)
        self.context_length = int(getattr(config, "max_position_embeddings", 2048) or 2048)
        self.prefix = self._prefix_cache()
        self.grammars = GrammarCompiler(self.tokenizer, self.eos_ids, config.vocab_size)

    # -- requests -------------------------------------------------------------------------
    def prepare(self, messages: list[ChatMessage], params: GenerationParams) -> Prompt:
        chat = [{"role": m.role, "content": m.content} for m in messages]
        if self.manifest.system_prompt:
            chat.insert(0, {"role": "system", "content": self.manifest.system_prompt})
        encoded = self.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_dict=True
        )
        ids = [int(i) for i in encoded["input_ids"]]
        if len(ids) + params.max_tokens > self.context_length:
            raise InvalidRequestError(
                f"prompt is {len(ids)} tokens; with max_tokens={params.max_tokens} it exceeds "
                f"the {self.context_length}-token context of {self.manifest.name}",
                param="messages",
            )
        constraint = None
        if params.grammar is not None:
            assert self.grammars is not None
            constraint = self.grammars.start(params.grammar)
        return Prompt(ids=ids, params=params, constraint=constraint)

    def new_batch(self) -> BatchDecoder:
        if self.model is None:
            raise UnavailableError(f"{self.manifest.ref} is not loaded")
        return BatchDecoder(self.model, self.tokenizer, self.eos_ids, self.device, self.prefix)

    def health(self) -> None:
        if self.model is None:
            raise UnavailableError(f"{self.manifest.ref} is not loaded")

    def _prefix_cache(self) -> PrefixCache | None:
        """The tokens every prompt starts with: where two different one-turn chats agree."""
        first, second = (
            self.prepare([ChatMessage(role="user", content=text)], GenerationParams(max_tokens=1))
            for text in ("a", "b")
        )
        shared = next(
            (i for i, (x, y) in enumerate(zip(first.ids, second.ids, strict=False)) if x != y),
            min(len(first.ids), len(second.ids)),
        )
        if shared < MIN_PREFIX_TOKENS:
            return None
        return PrefixCache.build(self.model, first.ids[:shared], self.device)


MIN_PREFIX_TOKENS = 4

# -- LoRA adapters ------------------------------------------------------------------------
ADAPTER_FIELD = "model.adapter"


def check_adapter_folder(folder: Path, *, allow_pickle: bool = False) -> Path:
    """A local adapter folder (see `specialists.sources.adapter_folder`), checked before any
    weights load: a peft LoRA folder whose weights are safetensors (pickle only when the
    operator allows it). Messages name the field, not the server's paths."""
    if not folder.is_dir():
        raise ManifestError(f"{ADAPTER_FIELD}: must be a folder", param=ADAPTER_FIELD)
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except OSError:
        raise ManifestError(
            f"{ADAPTER_FIELD}: has no adapter_config.json; save the adapter with "
            "peft's save_pretrained",
            param=ADAPTER_FIELD,
        ) from None
    except ValueError as error:
        raise ManifestError(
            f"{ADAPTER_FIELD}: adapter_config.json is not valid JSON: {error}",
            param=ADAPTER_FIELD,
        ) from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        kind = config.get("peft_type") if isinstance(config, dict) else None
        raise ManifestError(
            f"{ADAPTER_FIELD}: is a {str(kind)[:40] if kind else 'unknown'} adapter; "
            "only LoRA is supported",
            param=ADAPTER_FIELD,
        )
    if not allow_pickle:
        refuse_pickle(folder, field=ADAPTER_FIELD)
    if not (folder / "adapter_model.safetensors").is_file() and not (
        allow_pickle and (folder / "adapter_model.bin").is_file()
    ):
        raise ManifestError(
            f"{ADAPTER_FIELD}: has no adapter_model.safetensors", param=ADAPTER_FIELD
        )
    return folder


def attach_adapter(model: Any, folder: Path, name: str) -> Any:
    """Load the LoRA adapter in `folder` as `name`: a plain model comes back wrapped in a
    `PeftModel`, a `PeftModel` gains one more adapter. An adapter made for another shape of
    base is refused before anything is injected, so a shared model is left as it was."""
    from peft import PeftModel

    check_adapter_fits(model, folder)
    shared = isinstance(model, PeftModel)
    try:
        if shared:
            model.load_adapter(str(folder), adapter_name=name, is_trainable=False)
            return model
        return PeftModel.from_pretrained(model, str(folder), adapter_name=name, is_trainable=False)
    except (RuntimeError, ValueError, KeyError, OSError) as error:
        if shared and name in model.peft_config:
            model.delete_adapter(name)
        raise ManifestError(
            f"{ADAPTER_FIELD}: cannot apply the adapter to the base model: {error}",
            param=ADAPTER_FIELD,
        ) from None


def check_adapter_fits(model: Any, folder: Path) -> None:
    """Compare the adapter's LoRA matrices with the layers they target (shapes only, read from
    the safetensors header; nothing is loaded)."""
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        return  # an allowed pickle adapter: peft's own load reports a mismatch
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except Exception as error:
        raise ManifestError(
            f"{ADAPTER_FIELD}: cannot read adapter_model.safetensors: {error}", param=ADAPTER_FIELD
        ) from None
    from peft import PeftModel

    base = model.get_base_model() if isinstance(model, PeftModel) else model
    for key, shape in shapes.items():
        for part, dim in ((".lora_A.weight", 1), (".lora_B.weight", 0)):
            if not key.endswith(part):
                continue
            path = key.removeprefix("base_model.model.").removesuffix(part)
            try:
                layer = base.get_submodule(path)
            except AttributeError:
                raise ManifestError(
                    f"{ADAPTER_FIELD}: the adapter targets layer {path}, which the base lacks",
                    param=ADAPTER_FIELD,
                ) from None
            layer = getattr(layer, "base_layer", layer)
            expected = getattr(layer, "in_features" if dim == 1 else "out_features", None)
            if expected is not None and shape[dim] != expected:
                side = "inputs" if dim == 1 else "outputs"
                raise ManifestError(
                    f"{ADAPTER_FIELD}: the adapter does not fit the base model: layer {path} has "
                    f"{expected} {side}, the adapter expects {shape[dim]}; it was made for "
                    "another base",
                    param=ADAPTER_FIELD,
                )

"""Score generators on labelled chat records: a local model (with or without a LoRA adapter) or
a specialist behind a running mesh, greedy, one metric per run.

`evaluate` gives one generator's mean score (a float in [0, 1]) with every prediction kept for
inspection; `compare` runs a fine-tuned specialist and its base side by side on the same records,
each with its own system prompt (the base gets the best prompt written for it, so the gain
measured is the fine-tune's, not a weak prompt's).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from registry.errors import InvalidRequestError, UnavailableError
from specialists.evaluation.metrics import get_metric
from specialists.training.records import ChatRecord, Turn
from specialists.weights import eos_token_ids


class Generator(Protocol):
    """Greedy completions, one per prompt, returned in the order of `prompts`."""

    def generate(self, prompts: list[list[Turn]], *, max_tokens: int) -> list[str]: ...


class EvalItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prediction: str
    score: float = Field(ge=0.0, le=1.0)


class EvalReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: str
    score: float = Field(ge=0.0, le=1.0, description="Mean item score, 0 to 1 (not percent).")
    n: int = Field(ge=1)
    items: list[EvalItem]


def with_system(prompt: Sequence[Turn], system_prompt: str | None) -> list[Turn]:
    """`prompt` with its system turn replaced by `system_prompt` (added if it had none);
    unchanged when `system_prompt` is None."""
    if system_prompt is None:
        return list(prompt)
    rest = [turn for turn in prompt if turn.role != "system"]
    return [Turn(role="system", content=system_prompt), *rest]


def evaluate(
    records: Sequence[ChatRecord],
    generator: Generator,
    metric: str,
    *,
    max_tokens: int,
    system_prompt: str | None = None,
) -> EvalReport:
    """Generate for every record's prompt and score it against the record's answer."""
    if not records:
        raise InvalidRequestError("no records to evaluate", param="records")
    score = get_metric(metric)
    prompts = [with_system(record.prompt, system_prompt) for record in records]
    predictions = generator.generate(prompts, max_tokens=max_tokens)
    if len(predictions) != len(records):
        raise UnavailableError(
            f"the generator returned {len(predictions)} answers for {len(records)} prompts"
        )
    items = [
        EvalItem(prediction=p, score=score(p, r)) for p, r in zip(predictions, records, strict=True)
    ]
    mean = sum(item.score for item in items) / len(items)
    return EvalReport(metric=metric, score=mean, n=len(items), items=items)


def compare(
    records: Sequence[ChatRecord],
    finetuned: Generator,
    base: Generator,
    metric: str,
    *,
    finetuned_prompt: str | None,
    base_prompt: str | None,
    max_tokens: int = 128,
) -> dict[str, Any]:
    """Both generators on the same records: {"metric", "base", "finetuned", "gain", "n"}, scores
    as 0-1 floats and `gain` their difference (x100 for points)."""
    tuned = evaluate(
        records, finetuned, metric, max_tokens=max_tokens, system_prompt=finetuned_prompt
    )
    plain = evaluate(records, base, metric, max_tokens=max_tokens, system_prompt=base_prompt)
    return {
        "metric": metric,
        "base": plain.score,
        "finetuned": tuned.score,
        "gain": tuned.score - plain.score,
        "n": len(records),
    }


class LocalGenerator:
    """A causal LM in this process (CPU, fp32 by default), optionally with a LoRA adapter merged
    in. Prompts are sorted by length and decoded in left-padded batches with `generate`, which
    beats one-at-a-time decoding several times over on CPU (see FACTS.md)."""

    def __init__(
        self,
        source: str,
        adapter: Path | None = None,
        *,
        threads: int = 2,
        batch_size: int = 16,
    ) -> None:
        """`source`: a manifest source ("package:...", "artifact:...", a cached hub id) or a
        local model folder / .gguf file. `threads` caps torch for the whole process (it is a
        global setting), so an evaluation can leave cores to a training run."""
        import torch

        from specialists.weights import base_location, load_causal_lm

        torch.set_num_threads(threads)
        model, tokenizer, _ = load_causal_lm(
            base_location(source), dtype="float32", device="cpu", label=f"base {source}"
        )
        if adapter is not None:
            from specialists.transformers_engine import attach_adapter, check_adapter_folder

            folder = check_adapter_folder(Path(adapter))
            model = attach_adapter(model, folder, "default").merge_and_unload()
        self._use(model, tokenizer, batch_size)

    @classmethod
    def from_loaded(cls, model: Any, tokenizer: Any, *, batch_size: int = 16) -> LocalGenerator:
        """Wrap a model already in memory (e.g. the trainer's, adapter unmerged) without
        reloading it; its train/eval mode is restored after each call."""
        generator = cls.__new__(cls)
        generator._use(model, tokenizer, batch_size)
        return generator

    def _use(self, model: Any, tokenizer: Any, batch_size: int) -> None:
        if batch_size < 1:
            raise InvalidRequestError("batch_size must be at least 1", param="batch_size")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else tokenizer.eos_token_id)
        self.eos_ids = sorted(eos_token_ids(model, tokenizer))

    def encode(self, prompt: list[Turn]) -> list[int]:
        chat = [{"role": turn.role, "content": turn.content} for turn in prompt]
        encoded = self.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_dict=True
        )
        return [int(i) for i in encoded["input_ids"]]

    def generate(self, prompts: list[list[Turn]], *, max_tokens: int) -> list[str]:
        import torch

        encoded = [self.encode(prompt) for prompt in prompts]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        answers: list[str] = [""] * len(encoded)
        was_training = bool(getattr(self.model, "training", False))
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(order), self.batch_size):
                    batch = order[start : start + self.batch_size]
                    texts = self._generate_batch([encoded[i] for i in batch], max_tokens)
                    for index, text in zip(batch, texts, strict=True):
                        answers[index] = text
        finally:
            if was_training:
                self.model.train()
        return answers

    def _generate_batch(self, batch: list[list[int]], max_tokens: int) -> list[str]:
        """Left padding: every row's next token is in the last column, as `generate` needs."""
        import torch
        from transformers import GenerationConfig

        width = max(len(ids) for ids in batch)
        device = next(self.model.parameters()).device
        ids = torch.tensor([[self.pad_id] * (width - len(x)) + x for x in batch], device=device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch], device=device)
        config = GenerationConfig(
            max_new_tokens=max_tokens,
            do_sample=False,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids,
        )
        out = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        return [self.tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]


class MeshGenerator:
    """A specialist behind a running mesh, through its OpenAI API. Only the conversation is sent,
    never a system turn: the specialist's manifest supplies its own system prompt, exactly as it
    would for any client."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: float = 300.0,
        concurrency: int = 4,
        transport: Any = None,
    ) -> None:
        """`model` pins the specialist (e.g. "sql-writer"); `concurrency` requests run at once
        so the specialist can batch them; `transport` (an httpx transport) is for tests."""
        self.base_url, self.model, self.api_key = base_url.rstrip("/"), model, api_key
        self.timeout, self.concurrency = timeout, max(1, concurrency)
        self.transport = transport

    def generate(self, prompts: list[list[Turn]], *, max_tokens: int) -> list[str]:
        from concurrent.futures import ThreadPoolExecutor

        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        with (
            httpx.Client(
                base_url=self.base_url,
                headers=headers,
                timeout=self.timeout,
                transport=self.transport,
            ) as client,
            ThreadPoolExecutor(self.concurrency) as pool,
        ):
            return list(pool.map(lambda p: self._one(client, p, max_tokens), prompts))

    def _one(self, client: Any, prompt: list[Turn], max_tokens: int) -> str:
        import httpx

        body = {
            "model": self.model,
            "messages": [t.model_dump() for t in prompt if t.role != "system"],
            "temperature": 0,
            "max_tokens": max_tokens,
        }
        try:
            response = client.post("/v1/chat/completions", json=body)
        except httpx.HTTPError as error:
            raise UnavailableError(f"cannot reach the mesh at {self.base_url}: {error}") from None
        if response.status_code != 200:
            raise UnavailableError(
                f"the mesh answered {response.status_code} for model {self.model}: "
                f"{response.text[:300]}"
            )
        return str(response.json()["choices"][0]["message"]["content"] or "")

"""Batched decoding: many prompts, one forward pass per step, each row with its own sampling.

`model.generate` applies one set of sampling settings to a whole batch; requests to a specialist
each bring their own `temperature`, `top_p`, `seed`, `stop` and `max_tokens`. So the decode loop is
ours: prompts are left-padded (every row's next token sits in the last column), the KV cache is
shared, and sampling is done per row. On a peft model holding several LoRA adapters each row may
name its own (`Prompt.adapter`), passed to peft as `adapter_names`. A row that finishes (EOS, a
stop sequence, `max_tokens`, its deadline, or its caller going away) is dropped from the batch and
from the cache at once, so the others carry on at the cost of a smaller batch and the finished
caller is answered now.

One request's failure stays in its row: `admit` changes nothing unless every prompt in it could
be set up and prefilled (so the scheduler can retry the prompts one by one and fail only the bad
one), and a row whose sampling fails leaves the batch with its `error` set while the others step
on. Only a failed forward pass of the whole batch is the whole batch's failure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from registry.errors import InvalidRequestError
from specialists.engine import FinishReason, Prompt, TextDelta, TokenLogprob, next_piece
from specialists.logprobs import sampled_logprobs

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass
class _Row:
    prompt: Prompt
    cancel: threading.Event
    deadline: float | None
    generator: Any  # torch.Generator when the request set a seed
    generated: list[int] = field(default_factory=list)
    emitted: str = ""
    finish: FinishReason | None = None
    # Log-probabilities of tokens whose text is not shown yet (`params.logprobs`).
    held: list[TokenLogprob] = field(default_factory=list)
    # Why this row ended early, when sampling it failed: its final delta says "cancelled" and
    # the scheduler hands this error to the row's caller instead.
    error: BaseException | None = None


@dataclass
class PrefixCache:
    """The KV cache of the tokens every prompt of a specialist starts with (chat template and
    system prompt), computed once at load: an admission then prefills only what follows it.
    Prefill is compute-bound and stalls every running row, so this is time the batch gets back
    (and time to first token)."""

    ids: list[int]
    cache: Any  # a one-row DynamicCache

    @classmethod
    def build(cls, model: Any, ids: list[int], device: str) -> PrefixCache:
        import torch

        with torch.inference_mode():
            out = model(input_ids=torch.tensor([ids], device=device), use_cache=True)
        return cls(ids=ids, cache=out.cache)

    def serves(self, prompt: Prompt) -> bool:
        n = len(self.ids)
        return prompt.adapter is None and len(prompt.ids) > n and prompt.ids[:n] == self.ids

    def copy_for(self, rows: int) -> Any:
        import copy

        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(rows)
        return cache


class BatchDecoder:
    """A running batch. `admit` prefills new prompts and merges them into the batch between
    steps (continuous batching); `step` samples one token for every row and runs one forward
    pass for the rows still going. Not thread-safe: one caller drives it."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        eos_ids: set[int],
        device: str = "cpu",
        prefix: PrefixCache | None = None,
    ) -> None:
        self.model, self.tokenizer, self.eos_ids, self.device = model, tokenizer, eos_ids, device
        self.prefix = prefix
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.rows: list[_Row] = []  # in cache order
        self._cache: Any = None
        self._mask: Any = None  # [rows, cached tokens]: 0 marks left padding
        self._positions: Any = None  # [rows, 1]: position of each row's last token
        self._logits: Any = None  # [rows, vocab]: what each row samples from next

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def can_admit_running(self) -> bool:
        """Whether new rows can join a batch mid-flight (plain growing KV caches only)."""
        return self._cache is None or all(
            type(layer).__name__ == "DynamicLayer" for layer in self._cache.layers
        )

    def admit(self, prompts: Sequence[Prompt], cancels: Sequence[threading.Event]) -> list[_Row]:
        """Prefill `prompts` as one left-padded batch and add them to the running rows.

        All or nothing: an error (a row's seed, its prefill) leaves the running batch as it was.
        """
        import torch

        rows = [_new_row(p, c, self.device) for p, c in zip(prompts, cancels, strict=True)]
        prefix = self.prefix if self.prefix and all(map(self.prefix.serves, prompts)) else None
        skip = len(prefix.ids) if prefix else 0
        suffixes = [p.ids[skip:] for p in prompts]
        width = max(len(ids) for ids in suffixes)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), skip + width), dtype=torch.long)
        mask[:, :skip] = 1  # the shared prefix, then each row's left-padded rest
        for i, ids in enumerate(suffixes):
            input_ids[i, width - len(ids) :] = torch.tensor(ids)
            mask[i, skip + width - len(ids) :] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = {"cache": prefix.copy_for(len(rows))} if prefix else {}
        with torch.inference_mode():
            out = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions[:, skip:],
                use_cache=True,
                logits_to_keep=1,
                **cache,
                **_adapter_kwargs(rows),
            )
        logits = out.logits[:, -1, :].float()
        if not self.rows:
            self._cache, self._mask, self._positions, self._logits = (
                out.cache,
                mask,
                positions[:, -1:],
                logits,
            )
        else:
            self._merge(out.cache, mask, positions[:, -1:], logits)
        self.rows.extend(rows)
        return rows

    def step(self) -> list[tuple[_Row, TextDelta]]:
        """One token for every row: the deltas produced (finished rows leave the batch).

        A row whose sampling fails ends with its `error` set; the forward pass that follows
        is shared, so its failure raises for the whole batch."""
        import torch

        if not self.rows:
            return []
        tokens = [0] * len(self.rows)
        out = []
        for i, row in enumerate(self.rows):
            tokens[i], delta = _next_delta(self._logits[i], row, self.tokenizer, self.eos_ids)
            out.append((row, delta))
        keep = [i for i, row in enumerate(self.rows) if row.finish is None]
        if len(keep) < len(self.rows):
            self._select(keep)
        if not self.rows:
            return out
        next_tokens = torch.tensor(
            [[tokens[i]] for i in keep], dtype=torch.long, device=self.device
        )
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(keep), 1))], dim=-1)
        self._positions = self._positions + 1
        with torch.inference_mode():
            result = self.model(
                input_ids=next_tokens,
                attention_mask=self._mask,
                position_ids=self._positions,
                cache=self._cache,
                use_cache=True,
                **_adapter_kwargs(self.rows),
            )
        self._cache, self._logits = result.cache, result.logits[:, -1, :].float()
        return out

    def _select(self, keep: list[int]) -> None:
        """Keep only rows `keep`, and trim left padding no remaining row needs."""
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self._cache = self._mask = self._positions = self._logits = None
            return
        import torch

        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self._cache.batch_select_indices(index)
        self._mask, self._positions = self._mask[index], self._positions[index]
        self._logits = self._logits[index]
        start = int(self._mask.any(dim=0).nonzero()[0])
        if start > 0 and self.can_admit_running:
            self._mask = self._mask[:, start:]
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[..., start:, :], layer.values[..., start:, :]

    def _merge(self, cache: Any, mask: Any, positions: Any, logits: Any) -> None:
        """Join a prefilled batch to the running one: left-pad the shorter cache, stack rows.
        Everything is computed before anything is assigned, so a failure leaves the batch as
        it was."""
        import torch

        width = max(self._mask.shape[1], mask.shape[1])

        def pad(tensor: Any, dim: int) -> Any:
            missing = width - tensor.shape[dim]
            if missing == 0:
                return tensor
            shape = list(tensor.shape)
            shape[dim] = missing
            return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)

        layers = [
            (
                torch.cat([pad(mine.keys, -2), pad(theirs.keys, -2)]),
                torch.cat([pad(mine.values, -2), pad(theirs.values, -2)]),
            )
            for mine, theirs in zip(self._cache.layers, cache.layers, strict=True)
        ]
        merged_mask = torch.cat([pad(self._mask, 1), pad(mask, 1)])
        merged_positions = torch.cat([self._positions, positions])
        merged_logits = torch.cat([self._logits, logits])
        for layer, (keys, values) in zip(self._cache.layers, layers, strict=True):
            layer.keys, layer.values = keys, values
        self._mask, self._positions, self._logits = merged_mask, merged_positions, merged_logits


def _adapter_kwargs(rows: Sequence[_Row]) -> dict[str, Any]:
    """peft's mixed-adapter batch: one adapter name per row ("__base__": none). Empty, so the
    forward call is unchanged, when no row names an adapter."""
    if all(row.prompt.adapter is None for row in rows):
        return {}
    return {"adapter_names": [row.prompt.adapter or "__base__" for row in rows]}


def torch_seed(seed: int) -> int:
    """A request's int64 seed as a seed torch accepts (0 .. 2**64-1): negative seeds wrap, as
    torch itself would, but explicitly; anything beyond int64 is the request's error."""
    if not INT64_MIN <= seed <= INT64_MAX:
        raise InvalidRequestError(f"seed must be an int64, got {seed}", param="seed")
    return seed % 2**64


def _new_row(prompt: Prompt, cancel: threading.Event, device: str) -> _Row:
    import torch

    generator = None
    if prompt.params.seed is not None:
        generator = torch.Generator(device=device).manual_seed(torch_seed(prompt.params.seed))
    max_time = prompt.params.max_time_s
    deadline = prompt.arrived + max_time if max_time is not None else None
    return _Row(prompt=prompt, cancel=cancel, deadline=deadline, generator=generator)


NUCLEUS_CANDIDATES = 512


def _next_delta(logits: Any, row: _Row, tokenizer: Any, eos_ids: set[int]) -> tuple[int, TextDelta]:
    """Sample and advance one row; a failure ends this row alone (`row.error`), so one bad
    request cannot take the batch's step down with it."""
    try:
        token = _sample(logits, row)
        top = row.prompt.params.logprobs
        row.held += sampled_logprobs(logits, token, top, tokenizer, eos_ids)
        return token, _advance(row, token, tokenizer, eos_ids)
    except Exception as error:
        row.error, row.finish = error, "cancelled"
        return 0, TextDelta(text="", finish_reason="cancelled")


def _sample(logits: Any, row: _Row) -> int:
    """The row's grammar mask, repetition penalty (over prompt and answer, as transformers
    does), then greedy or temperature + nucleus sampling with the row's own seeded generator."""
    import torch

    params = row.prompt.params
    logits = logits.clone()
    if row.prompt.constraint is not None:  # only what the row's grammar allows
        allowed = torch.from_numpy(row.prompt.constraint.allowed(logits.shape[-1]))
        logits = logits.masked_fill(~allowed.to(logits.device), float("-inf"))
    if params.repetition_penalty != 1.0:
        seen = torch.tensor(sorted({*row.prompt.ids, *row.generated}), device=logits.device)
        values = logits[seen]
        logits[seen] = torch.where(
            values > 0, values / params.repetition_penalty, values * params.repetition_penalty
        )
    if params.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p >= 1.0:
        return int(torch.multinomial(probs, 1, generator=row.generator))
    # The nucleus almost always lies in the top few hundred tokens: a top-k is far cheaper than
    # sorting the whole vocabulary (7 ms -> 0.5 ms a row here), and exact whenever it holds
    # `top_p` of the mass; otherwise fall back to the full sort.
    top, order = probs.topk(min(NUCLEUS_CANDIDATES, probs.shape[-1]))
    if float(top.sum()) < params.top_p:
        top, order = probs.sort(descending=True)
    top = top.masked_fill(top.cumsum(-1) - top > params.top_p, 0.0)  # keeps at least one
    return int(order[torch.multinomial(top, 1, generator=row.generator)])


def _stopped_early(row: _Row) -> FinishReason | None:
    """Why this row must end before its next token, if it must."""
    if row.deadline is not None and time.monotonic() >= row.deadline:
        return "length"  # cut short by the request's deadline: the answer is truncated
    if row.cancel.is_set():
        return "cancelled"
    return None


def _advance(row: _Row, token: int, tokenizer: Any, eos_ids: set[int]) -> TextDelta:
    """Add one token to a row; return the text it makes safe to show, and finish it if done."""
    eos = token in eos_ids
    if not eos:
        row.generated.append(token)
    complete = False
    if row.prompt.constraint is not None:
        row.prompt.constraint.accept(token)
        complete = row.prompt.constraint.complete
    decoded = tokenizer.decode(row.generated, skip_special_tokens=True)
    piece, row.finish = next_piece(
        decoded,
        row.emitted,
        row.prompt.params,
        eos=eos or complete,
        generated=len(row.generated),
        early=_stopped_early(row),
    )
    row.emitted += piece
    # Log-probabilities travel with the text they show (or with the final delta).
    logprobs, row.held = (row.held, []) if piece or row.finish else ([], row.held)
    if row.finish is None:
        return TextDelta(text=piece, logprobs=logprobs)
    return TextDelta(
        text=piece,
        logprobs=logprobs,
        finish_reason=row.finish,
        prompt_tokens=len(row.prompt.ids),
        completion_tokens=len(row.generated) + int(eos),
    )

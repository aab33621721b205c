"""Continuous batching of the converted ONNX model on onnxruntime, sampled per row by us.

onnxruntime-genai's own `Generator` batches statically on CPU (rows fixed at the first
`append_tokens`) and holds the GIL while it computes; measured on 2 cores with requests arriving
every 100 ms, that cost 0.5-3.5 s of time to first token. So the engine drives the converted
graph itself, as onnxruntime-genai does inside, but with a KV cache of slots:

- A `Lane` (one per adapter; the base is one) keeps each layer's keys and values in one buffer
  of `rows x kv_heads x positions x head_dim`, bound as both past and present
  (GroupQueryAttention then writes each row's new entry in place, at that row's own length,
  which it reads from the attention mask's row sums). Rows occupy slots 0..n-1, so a step
  binds the first n slots and costs what n rows cost.
- New requests are prefilled together into free slots between steps and decode with the rest
  from the next step (continuous batching). A row that finishes (EOS, stop, max_tokens,
  deadline, cancel, its caller gone) leaves at once: the last slot's cache moves into its
  place, so it costs nothing more.
- Sampling is numpy on each row's logits: its own temperature, top_p, repetition penalty and
  seed, so requests with different settings share a step.
- onnxruntime releases the GIL while it computes, so the serving event loop runs meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from registry.errors import InvalidRequestError, UnavailableError
from specialists.engine import (
    FinishReason,
    GenerationParams,
    TextDelta,
    TokenLogprob,
    next_piece,
)
from specialists.logprobs import sampled_logprobs

Emit = Callable[[TextDelta | BaseException], None]
NUCLEUS_CANDIDATES = 512
POSITION_STEP = 64  # cache positions grow in multiples of this
FIRST_ANSWER_ROOM = 256  # positions reserved past the longest prompt at first
FIRST_ROWS = 8  # slots a cache starts with


@dataclass(eq=False)
class Row:
    """One request in flight."""

    ids: list[int]
    params: GenerationParams
    emit: Emit
    cancel: threading.Event
    adapter: str | None = None
    arrived: float = field(default_factory=time.monotonic)
    closed: bool = False  # the caller stopped reading
    generated: list[int] = field(default_factory=list)
    emitted: str = ""
    finish: FinishReason | None = None
    rng: np.random.Generator | None = None
    seen: set[int] = field(default_factory=set)
    released: bool = False  # counted as finished by the worker
    failed: bool = False  # ended by an error, not a finish reason
    constraint: Any = None  # its grammar state (`specialists.grammar.TokenConstraint`)
    # Log-probabilities of tokens whose text is not sent yet (`params.logprobs`).
    held: list[TokenLogprob] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.seen = set(self.ids)
        seed = self.params.seed
        if seed is not None and not -(2**63) <= seed < 2**63:
            raise InvalidRequestError(f"seed must be an int64, got {seed}", param="seed")
        self.rng = np.random.default_rng(None if seed is None else seed % 2**64)

    @property
    def deadline(self) -> float | None:
        limit = self.params.max_time_s
        return None if limit is None else self.arrived + limit

    def stopped_early(self) -> FinishReason | None:
        """Why this row must end before its next token, if it must."""
        if self.cancel.is_set() or self.closed:
            return "cancelled"
        deadline = self.deadline
        if deadline is not None and time.monotonic() >= deadline:
            return "length"
        return None

    def end(self, reason: FinishReason) -> None:
        """Finish without another token."""
        self.finish = reason
        logprobs, self.held = self.held, []
        self.send(TextDelta(text="", logprobs=logprobs, finish_reason=reason, **self.counts(0)))

    def fail(self, error: BaseException) -> None:
        self.finish = "cancelled"
        self.failed = True
        self.send(error)

    def counts(self, eos: int) -> dict[str, int]:
        return {"prompt_tokens": len(self.ids), "completion_tokens": len(self.generated) + eos}

    def send(self, item: TextDelta | BaseException) -> None:
        if not self.closed:
            self.emit(item)


# -- sampling -----------------------------------------------------------------------------
def choose(logits: np.ndarray, row: Row) -> int:
    """The row's grammar mask, repetition penalty over prompt and answer (as transformers and
    our own decoder apply it), then greedy, or temperature + nucleus sampling with the row's
    own generator."""
    params = row.params
    if row.constraint is not None:  # only what the row's grammar allows
        logits = row.constraint.restrict(logits)
    if params.repetition_penalty != 1.0:
        seen = np.fromiter(row.seen, dtype=np.int64, count=len(row.seen))
        values = logits[seen]
        logits = logits.copy()
        penalty = params.repetition_penalty
        logits[seen] = np.where(values > 0, values / penalty, values * penalty)
    if params.temperature == 0:
        return int(logits.argmax())
    scaled = logits.astype(np.float64) / params.temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    assert row.rng is not None
    if params.top_p >= 1.0:
        return _draw(probs, row.rng)
    # The nucleus almost always lies in the top few hundred tokens: a partial sort is far
    # cheaper than sorting the vocabulary, and exact whenever it holds `top_p` of the mass.
    k = min(NUCLEUS_CANDIDATES, probs.size)
    order = np.argpartition(probs, -k)[-k:]
    order = order[np.argsort(probs[order])[::-1]]
    if float(probs[order].sum()) < params.top_p:
        order = np.argsort(probs)[::-1]
    top = probs[order]
    top = np.where(np.cumsum(top) - top > params.top_p, 0.0, top)  # keeps at least one
    return int(order[_draw(top, row.rng)])


def _draw(weights: np.ndarray, rng: np.random.Generator) -> int:
    cumulative = np.cumsum(weights)
    index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return min(index, weights.size - 1)


def sample(logits: np.ndarray, row: Row, tokenizer: Any, eos_ids: set[int]) -> int:
    """One step of a row: choose its token (from raw `logits`), note the token's
    log-probabilities when the row asks for them, and advance the row."""
    token = choose(logits, row)
    row.held += sampled_logprobs(logits, token, row.params.logprobs, tokenizer, eos_ids)
    advance(row, token, tokenizer, eos_ids)
    return token


def advance(row: Row, token: int, tokenizer: Any, eos_ids: set[int]) -> None:
    """Add one token to a row and send the text it makes safe to show (finishing the row
    when it is done)."""
    eos = token in eos_ids
    if not eos:
        row.generated.append(token)
        row.seen.add(token)
    complete = False
    if row.constraint is not None:
        row.constraint.accept(token)
        complete = row.constraint.complete
    decoded = tokenizer.decode(row.generated, skip_special_tokens=True)
    piece, row.finish = next_piece(
        decoded,
        row.emitted,
        row.params,
        eos=eos or complete,
        generated=len(row.generated),
        early=row.stopped_early(),
    )
    row.emitted += piece
    if row.finish is None and not piece:
        return  # log-probabilities wait for the text they belong to (or the final delta)
    logprobs, row.held = row.held, []
    if row.finish is not None:
        counts = row.counts(int(eos))
        row.send(TextDelta(text=piece, logprobs=logprobs, finish_reason=row.finish, **counts))
    else:
        row.send(TextDelta(text=piece, logprobs=logprobs))


# -- the model ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Graph:
    """A loaded graph (base or LoRA twin) and the shape of its KV cache."""

    session: Any  # onnxruntime.InferenceSession
    layers: int
    kv_heads: int
    head_dim: int
    vocab: int


class Cache:
    """Every layer's keys and values for up to `rows` rows of up to `positions` tokens."""

    def __init__(self, graph: Graph, rows: int, positions: int) -> None:
        shape = (rows, graph.kv_heads, positions, graph.head_dim)
        self.rows, self.positions = rows, positions
        self.buffers = [np.zeros(shape, np.float32) for _ in range(2 * graph.layers)]
        self.logits = np.zeros((rows, 1, graph.vocab), np.float32)

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.buffers)

    def copy_from(self, other: Cache, rows: int, length: int) -> None:
        for mine, theirs in zip(self.buffers, other.buffers, strict=True):
            mine[:rows, :, :length] = theirs[:rows, :, :length]

    def move(self, source: int, target: int, length: int) -> None:
        for buffer in self.buffers:
            buffer[target, :, :length] = buffer[source, :, :length]


def bind(graph: Graph, cache: Cache, first: int, rows: int, extra: dict[str, Any] | None) -> Any:
    """An IO binding of slots `first..first+rows` of `cache` (past and present: the same
    memory), their logits and an adapter's tensors; reused while these do not change."""
    binding = graph.session.io_binding()
    shape = [rows, graph.kv_heads, cache.positions, graph.head_dim]
    for layer in range(graph.layers):
        for side, buffer in (
            ("key", cache.buffers[2 * layer]),
            ("value", cache.buffers[2 * layer + 1]),
        ):
            pointer = buffer[first:].ctypes.data
            binding.bind_input(
                f"past_key_values.{layer}.{side}", "cpu", 0, np.float32, shape, pointer
            )
            binding.bind_output(f"present.{layer}.{side}", "cpu", 0, np.float32, shape, pointer)
    logits = cache.logits[first : first + rows]
    binding.bind_output("logits", "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
    for name, value in (extra or {}).items():
        binding.bind_ortvalue_input(name, value)
    return binding


def run(
    graph: Graph,
    cache: Cache,
    first: int,
    input_ids: np.ndarray,
    lengths: np.ndarray,
    extra: dict[str, Any] | None = None,
    binding: Any = None,
) -> np.ndarray:
    """One forward pass for the rows in slots `first..first+len(input_ids)`; `lengths` are
    their token counts once `input_ids` are cached. Returns last-token logits [rows, vocab]."""
    rows = input_ids.shape[0]
    binding = binding or bind(graph, cache, first, rows, extra)
    total = int(lengths.max())
    mask = (np.arange(total) < lengths[:, None]).astype(np.int64)
    binding.bind_cpu_input("input_ids", np.ascontiguousarray(input_ids, dtype=np.int64))
    binding.bind_cpu_input("attention_mask", mask)
    graph.session.run_with_iobinding(binding)
    return cache.logits[first : first + rows].reshape(rows, -1)


def forced_logits(graph: Graph, ids: list[int]) -> Iterator[np.ndarray]:
    """The logits after each prefix of `ids`, fed one token at a time as decoding feeds
    them (for measuring perplexity)."""
    cache = Cache(graph, 1, -(-len(ids) // POSITION_STEP) * POSITION_STEP)
    for length, token in enumerate(ids, start=1):
        tokens = np.array([[token]], dtype=np.int64)
        yield run(graph, cache, 0, tokens, np.array([length]))[0]


# -- one lane: the rows decoding with one graph and adapter -------------------------------
@dataclass(frozen=True)
class Decoder:
    """What lanes decode with."""

    tokenizer: Any
    eos_ids: set[int]
    context_length: int
    # adapter name or None -> (the graph, the adapter's tensors by input name, or None)
    graphs: Callable[[str | None], tuple[Graph, dict[str, Any] | None]]


class Lane:
    """Rows decoding together with one graph and adapter, in cache slots 0..n-1."""

    def __init__(self, decoder: Decoder, adapter: str | None, max_rows: int) -> None:
        self.decoder, self.adapter, self.max_rows = decoder, adapter, max_rows
        self.graph, self.extra = decoder.graphs(adapter)
        self.rows: list[Row] = []
        self.lengths: list[int] = []  # tokens in each slot's cache
        self.pending: list[int] = []  # each row's next input token
        self.cache: Cache | None = None
        # The decoding steps' binding and its row count; dropped whenever the cache changes.
        self._binding: tuple[int, Any] | None = None

    @property
    def free(self) -> int:
        return self.max_rows - len(self.rows)

    def admit(self, rows: list[Row]) -> None:
        """Prefill `rows` into the next slots and sample their first tokens. All or nothing:
        if the prefill fails, the lane is as it was."""
        first = len(self.rows)
        width = max(len(row.ids) for row in rows)
        room = max(min(r.params.max_tokens, FIRST_ANSWER_ROOM) for r in rows)
        self._reserve(first + len(rows), width + room)
        assert self.cache is not None
        tokens = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            tokens[i, : len(row.ids)] = row.ids
        lengths = np.array([len(row.ids) for row in rows])
        logits = run(self.graph, self.cache, first, tokens, lengths, self.extra)
        self.rows += rows
        self.lengths += lengths.tolist()
        self.pending += [0] * len(rows)
        for i in range(len(rows)):
            self._sample(first + i, logits[i])
        self._compact()

    def step(self) -> None:
        """One token for every row: a forward pass over the slots in use, then sampling.
        Rows cancelled or out of time leave first, without computing anything."""
        for row in self.rows:
            if row.finish is None and (reason := row.stopped_early()):
                row.end(reason)
        self._compact()
        if not self.rows:
            return
        lengths = np.array(self.lengths) + 1
        self._reserve(len(self.rows), int(lengths.max()))
        assert self.cache is not None
        tokens = np.array(self.pending, dtype=np.int64)[:, None]
        rows = len(self.rows)
        if self._binding is None or self._binding[0] != rows:
            self._binding = (rows, bind(self.graph, self.cache, 0, rows, self.extra))
        logits = run(self.graph, self.cache, 0, tokens, lengths, binding=self._binding[1])
        self.lengths = lengths.tolist()
        for i in range(len(self.rows)):
            self._sample(i, logits[i])
        self._compact()

    def _sample(self, slot: int, logits: np.ndarray) -> None:
        row = self.rows[slot]
        try:
            self.pending[slot] = sample(logits, row, self.decoder.tokenizer, self.decoder.eos_ids)
        except Exception as error:  # this row's own failure
            row.fail(error)

    def _compact(self) -> None:
        """Drop finished rows: the last slot's cache moves into each hole."""
        while True:
            while self.rows and self.rows[-1].finish is not None:
                self._pop()
            hole = next((i for i, row in enumerate(self.rows) if row.finish is not None), None)
            if hole is None:
                break
            last = len(self.rows) - 1
            assert self.cache is not None
            self.cache.move(last, hole, self.lengths[last])
            self.rows[hole], self.lengths[hole] = self.rows[last], self.lengths[last]
            self.pending[hole] = self.pending[last]
            self._pop()
        if not self.rows:
            self.cache = self._binding = None  # an idle lane holds no memory

    def _pop(self) -> None:
        self.rows.pop()
        self.lengths.pop()
        self.pending.pop()

    def _reserve(self, rows: int, positions: int) -> None:
        """Make room for `rows` rows of `positions` tokens, copying what the cache holds. Each
        dimension that is short at least doubles (rows, up to `max_rows`) or grows by half
        (positions): memory is committed only as slots fill, but a copy costs a pause."""
        cache = self.cache
        if cache is not None:
            if cache.rows >= rows and cache.positions >= positions:
                return
            if cache.rows < rows:
                rows = max(rows, 2 * cache.rows)
            if cache.positions < positions:
                positions = max(positions, cache.positions + cache.positions // 2)
            rows, positions = max(rows, cache.rows), max(positions, cache.positions)
        else:
            rows = max(rows, FIRST_ROWS)
        rows = min(rows, self.max_rows)
        step = POSITION_STEP
        positions = min(self.decoder.context_length, -(-positions // step) * step)
        grown = Cache(self.graph, rows, positions)
        if cache is not None and self.rows:
            grown.copy_from(cache, len(self.rows), max(self.lengths))
        self.cache, self._binding = grown, None


# -- the worker ---------------------------------------------------------------------------
class Worker:
    """One thread: between steps it admits waiting rows into their lanes, then steps every
    lane in turn (a lane per adapter in use)."""

    def __init__(self, decoder: Decoder, *, max_batch_size: int) -> None:
        self.decoder, self.max_batch_size = decoder, max_batch_size
        self.lock = threading.Lock()  # decoding vs adapter changes
        self._cond = threading.Condition()
        self._waiting: list[Row] = []
        self._lanes: dict[str | None, Lane] = {}
        self._stopping = False
        self.on_finish: Callable[[Row], None] = lambda row: None
        # The keys of `specialists.scheduler.BatchStats` (what `mesh status` and the batch
        # route show for any engine), and this engine's own.
        self.totals = {
            "admitted": 0,
            "cancelled": 0,
            "failed": 0,
            "largest_batch": 0,
            "requests": 0,
            "tokens": 0,
            "steps": 0,
            "failed_steps": 0,
        }
        self.thread = threading.Thread(target=self._run, name="onnx-decoder", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def submit(self, row: Row) -> None:
        with self._cond:
            if self._stopping:
                raise UnavailableError("the onnx engine is stopping")
            self._waiting.append(row)
            self._cond.notify()

    def snapshot(self) -> dict[str, Any]:
        with self._cond:
            waiting, lanes = len(self._waiting), list(self._lanes.values())
        return {
            "waiting": waiting,
            "running": sum(len(lane.rows) for lane in lanes),
            "lanes": {str(lane.adapter or "base"): len(lane.rows) for lane in lanes},
            "cache_mb": round(sum(lane.cache.nbytes for lane in lanes if lane.cache) / 2**20),
            **self.totals,
        }

    def uses(self, adapter: str) -> int:
        """Rows waiting or running with `adapter`."""
        with self._cond:
            rows = [*self._waiting, *(r for lane in self._lanes.values() for r in lane.rows)]
        return sum(1 for row in rows if row.adapter == adapter and row.finish is None)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._waiting and not self._lanes:
                    self._cond.wait()
                if self._stopping:
                    break
            self._admit()
            for lane in list(self._lanes.values()):
                self._step(lane)
        with self._cond:
            rows = [*self._waiting, *(r for lane in self._lanes.values() for r in lane.rows)]
        for row in rows:
            row.fail(UnavailableError("the onnx engine stopped"))
            self._release(row)

    def _admit(self) -> None:
        """Move the rows waiting now into their lanes while these have free slots."""
        with self._cond:
            waiting, self._waiting = self._waiting, []
        joining: dict[str | None, list[Row]] = {}
        later = []
        for row in waiting:
            if reason := row.stopped_early():
                row.end(reason)
                self._release(row)
                continue
            lane = self._lane(row)
            if lane is None:
                continue
            if lane.free > len(joining.get(row.adapter, [])):
                joining.setdefault(row.adapter, []).append(row)
            else:
                later.append(row)
        with self._cond:
            self._waiting[:0] = later
        for adapter, rows in joining.items():
            self._join(self._lanes[adapter], rows)

    def _lane(self, row: Row) -> Lane | None:
        lane = self._lanes.get(row.adapter)
        if lane is None:
            try:
                lane = Lane(self.decoder, row.adapter, self.max_batch_size)
            except Exception as error:  # an adapter retired meanwhile
                row.fail(error)
                self._release(row)
                return None
            with self._cond:
                self._lanes[row.adapter] = lane
        return lane

    def _join(self, lane: Lane, rows: list[Row]) -> None:
        """Prefill `rows` together; if that fails, one by one (only a bad row fails)."""
        try:
            with self.lock:
                lane.admit(rows)
        except Exception as error:
            if len(rows) > 1:
                for row in rows:
                    self._join(lane, [row])
                return
            rows[0].fail(error if isinstance(error, InvalidRequestError) else _failed(error))
        else:
            self.totals["admitted"] += len(rows)
            self.totals["largest_batch"] = max(self.totals["largest_batch"], len(lane.rows))
        self._settle(lane, rows)

    def _step(self, lane: Lane) -> None:
        rows = list(lane.rows)
        try:
            with self.lock:
                lane.step()
            self.totals["steps"] += 1
        except Exception as error:  # the shared forward pass failed: every row of it fails
            self.totals["failed_steps"] += 1
            for row in lane.rows:
                row.fail(_failed(error))
            lane._compact()
        self._settle(lane, rows)

    def _settle(self, lane: Lane, rows: list[Row]) -> None:
        """Count finished rows; drop an empty lane."""
        for row in rows:
            self._release(row)
        if not lane.rows:
            with self._cond:
                if self._lanes.get(lane.adapter) is lane:
                    del self._lanes[lane.adapter]

    def _release(self, row: Row) -> None:
        if row.finish is not None and not row.released:
            row.released = True
            self.totals["requests"] += 1
            self.totals["tokens"] += len(row.generated)
            if row.failed:
                self.totals["failed"] += 1
            elif row.finish == "cancelled":
                self.totals["cancelled"] += 1
            self.on_finish(row)


def _failed(error: BaseException) -> UnavailableError:
    return UnavailableError(f"decoding failed: {error}")

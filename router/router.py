"""`Router`: scores a query against every installed specialist and picks who answers.

One encoder call per batch of queries (through an LRU cache of query embeddings), one matrix
product for the scores, then the rules of `router.policy`. Methods are in `router.scoring`;
`fit` calibrates per-specialist thresholds (and trains the linear head) from labelled data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from registry.router_artifacts import OperatingPoint, TradeOffPoint
from router.cache import EmbeddingCache
from router.calibrate import choose, trade_off
from router.compound import compound_parts, split_parts
from router.decision import NearestExample, RouteDecision
from router.encoder import Encoder, SentenceTransformerEncoder
from router.index import RouterIndex
from router.linear import LinearHead
from router.policy import Policy, decide, find_pin
from router.scoring import LinearScorer, Scorer, build_scorer

Method = Literal["centroid", "knn", "knn-max", "linear"]
TOP_CANDIDATES = 3
HISTORY_TURNS = 6
FOLDS = 5


@dataclass(frozen=True)
class MethodDefaults:
    """Scales differ: cosine for the example methods, probability for the linear head."""

    threshold: float
    panel_margin: float
    switch_margin: float


METHOD_DEFAULTS: dict[str, MethodDefaults] = {
    "centroid": MethodDefaults(threshold=0.2, panel_margin=0.02, switch_margin=0.15),
    "knn": MethodDefaults(threshold=0.2, panel_margin=0.02, switch_margin=0.15),
    "knn-max": MethodDefaults(threshold=0.25, panel_margin=0.02, switch_margin=0.15),
    "linear": MethodDefaults(threshold=0.3, panel_margin=0.1, switch_margin=0.2),
}
DEFAULT_THRESHOLD = METHOD_DEFAULTS["knn"].threshold


@dataclass(frozen=True)
class _View:
    index: RouterIndex
    scorer: Scorer
    cuts: np.ndarray  # thresholds aligned with index.names


class FitReport(BaseModel):
    """What `Router.fit` learnt, for logs and the CLI."""

    method: str
    n_in_scope: int
    n_out_of_scope: int
    global_threshold: float
    thresholds: dict[str, float] = Field(description="Per-specialist thresholds now in use.")
    operating_point: OperatingPoint = Field(default_factory=OperatingPoint)
    trade_off: list[TradeOffPoint] = Field(
        default_factory=list, description="Thresholds at each out-of-scope weight, out of fold."
    )
    chosen: TradeOffPoint | None = Field(None, description="The point now in use.")


class Router:
    """Routes queries to specialists. Options left `None` take the method's defaults.

    `thresholds` are per specialist (others use `threshold`); `short_turn` is the word count up
    to which a conversation turn counts as a follow-up; `explain` is how many nearest examples
    each candidate shows. Swap `index` to follow installs; set thresholds by assignment or
    `fit`. `method` and `k` are fixed at construction.
    """

    def __init__(
        self,
        encoder: Encoder,
        index: RouterIndex,
        *,
        fallback: str | None = None,
        method: Method = "knn",
        threshold: float | None = None,
        k: int = 3,
        panel_margin: float | None = None,
        switch_margin: float | None = None,
        thresholds: Mapping[str, float] | None = None,
        short_turn: int = 8,
        cache_size: int = 4096,
        explain: int = 2,
        split_compound: bool = True,
    ) -> None:
        if method not in METHOD_DEFAULTS:
            raise ValueError(f"unknown routing method {method!r}: one of {list(METHOD_DEFAULTS)}")
        defaults = METHOD_DEFAULTS[method]
        self.encoder = encoder
        self.cache = EmbeddingCache(encoder, cache_size)
        self.fallback = fallback
        self.method: Method = method
        self._view: _View | None = None
        self.threshold = defaults.threshold if threshold is None else threshold
        self.thresholds = thresholds or {}
        self.k = k
        self.panel_margin = defaults.panel_margin if panel_margin is None else panel_margin
        self.switch_margin = defaults.switch_margin if switch_margin is None else switch_margin
        self.short_turn = short_turn
        self.explain = explain
        self.split_compound = split_compound
        self._extra: tuple[np.ndarray, list[str | None]] | None = None
        self._head: tuple[list[str], LinearHead] | None = None
        self.index = index

    @classmethod
    def from_examples(
        cls,
        examples: dict[str, list[str]],
        fallback: str | None = None,
        method: Method = "knn",
        *,
        encoder: Encoder | None = None,
        threshold: float | None = None,
        **options: Any,
    ) -> Router:
        encoder = encoder or SentenceTransformerEncoder()
        index = RouterIndex.build(encoder, examples)
        return cls(encoder, index, fallback=fallback, method=method, threshold=threshold, **options)

    @property
    def index(self) -> RouterIndex:
        return self._index

    @index.setter
    def index(self, index: RouterIndex) -> None:
        """Swap in a rebuilt index (specialists installed or removed); the head retrains."""
        self._index = index
        self._view = None

    @property
    def threshold(self) -> float:
        """The threshold of every specialist without a fitted one of its own."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._threshold = float(value)
        self._view = None

    @property
    def thresholds(self) -> Mapping[str, float]:
        """Per-specialist thresholds (read-only: assign a new mapping to change them)."""
        return self._thresholds

    @thresholds.setter
    def thresholds(self, value: Mapping[str, float]) -> None:
        self._thresholds = MappingProxyType(dict(value))
        self._view = None

    @property
    def policy(self) -> Policy:
        return Policy(
            method=self.method,
            fallback=self.fallback,
            panel_margin=self.panel_margin,
            switch_margin=self.switch_margin,
            short_turn=self.short_turn,
            top_candidates=TOP_CANDIDATES,
        )

    def view(self) -> _View:
        """The index with the scorer and thresholds built for it. A route holds on to one view,
        so an index swapped in by another thread mid-route cannot mix two states."""
        view = self._view
        if view is None:
            index = self._index
            cuts = np.array(
                [self.thresholds.get(name, self.threshold) for name in index.names]
                or [self.threshold],
                dtype=np.float32,
            )
            head = self._head
            if self.method == "linear" and head is not None and head[0] == index.names:
                scorer: Scorer = LinearScorer.from_head(head[1])
            else:
                scorer = build_scorer(self.method, index, self.k, self._extra_ids(index))
            view = _View(index, scorer, cuts)
            if self._index is index:
                self._view = view
        return view

    def clone(
        self, index: RouterIndex, *, fitted: bool = True, explain: int | None = None
    ) -> Router:
        """The same router (encoder and its cache, options, thresholds) over another index, as
        a new object: the caller swaps it in whole. `fitted=False` leaves the fitted data (the
        linear head) behind, for a router whose index differs from the one it was fitted on."""
        twin = Router(
            self.encoder,
            index,
            fallback=self.fallback,
            method=self.method,
            threshold=self.threshold,
            k=self.k,
            panel_margin=self.panel_margin,
            switch_margin=self.switch_margin,
            thresholds=self.thresholds,
            short_turn=self.short_turn,
            cache_size=0,
            explain=self.explain if explain is None else explain,
            split_compound=self.split_compound,
        )
        twin.cache = self.cache
        if fitted:
            twin._extra, twin._head = self._extra, self._head
        return twin

    @property
    def linear_head(self) -> LinearHead | None:
        """The trained head of the `linear` method (trained now if it was not yet)."""
        scorer = self.view().scorer
        return scorer.head if isinstance(scorer, LinearScorer) else None

    def use_head(self, names: list[str], head: LinearHead) -> None:
        """Serve a head trained earlier while the index has exactly these specialists."""
        # An index with no specialists yet (a router starting up) has no dimension to check.
        dims_differ = self.index.names and head.weights.shape[0] != self.index.dim
        if head.n_specialists != len(names) or dims_differ:
            raise ValueError(
                f"head of shape {head.weights.shape} does not fit {len(names)} specialists "
                f"of dimension {self.index.dim}"
            )
        self._head = (list(names), head)
        self._view = None

    def threshold_row(self) -> np.ndarray:
        """Thresholds aligned with `index.names`: fitted ones, else the global threshold."""
        return self.view().cuts

    def scorer(self) -> Scorer:
        return self.view().scorer

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.cache.encode(texts)

    def scores(self, texts: list[str]) -> np.ndarray:
        """(texts, specialists) scores in `index.names` order; no pins, no history."""
        if not texts:
            return np.zeros((0, len(self.index.names)), dtype=np.float32)
        return self.scorer().scores(self.embed(texts))

    def route(self, text: str, history: Sequence[str] | None = None) -> RouteDecision:
        """Route one query; `history` holds the conversation's earlier user turns, oldest first."""
        return self.route_batch([text], [history] if history else None)[0]

    def route_conversation(self, messages: Iterable[Mapping[str, Any]]) -> RouteDecision:
        """Route the last user turn of OpenAI-style messages, the earlier ones as history."""
        turns = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
        if not turns:
            raise ValueError("no user message to route")
        return self.route(turns[-1], turns[:-1])

    def route_batch(
        self, texts: list[str], histories: Sequence[Sequence[str] | None] | None = None
    ) -> list[RouteDecision]:
        """Route many queries with one encoder call for all of them and their histories."""
        histories = histories or [None] * len(texts)
        view = self.view()
        names, ids = view.index.names, view.index.ids
        pins = [[find_pin(t, ids) for t in (h or [])[-HISTORY_TURNS:]] for h in histories]
        current = [find_pin(t, ids) for t in texts]
        unique = list(dict.fromkeys(t for _, t in [*current, *(p for h in pins for p in h)]))
        if not names or not unique:
            return [self._decide(view, np.zeros(0), None, None, None) for _ in texts]
        vectors = self.embed(unique)
        rows = dict(zip(unique, view.scorer.scores(vectors), strict=True))
        queries = dict(zip(unique, vectors, strict=True))
        decisions = []
        for (pin, text), turns in zip(current, pins, strict=True):
            thread = self._thread(view, turns, rows)
            words = len(text.split())
            decisions.append(self._decide(view, rows[text], pin, thread, queries[text], words))
        if self.split_compound:
            decisions = self._compound(view, [t for _, t in current], decisions)
        return decisions

    def _compound(
        self, view: _View, texts: list[str], decisions: list[RouteDecision]
    ) -> list[RouteDecision]:
        """Turn a decision into a compound one when its query joins requests that different
        specialists own (`router.compound`); one encoder call for every piece of the batch."""
        splits = {
            i: pieces
            for i, (text, decision) in enumerate(zip(texts, decisions, strict=True))
            if decision.mode in ("single", "fallback")
            and decision.follow_up_of is None
            and len(pieces := split_parts(text)) > 1
        }
        if not splits:
            return decisions
        unique = list(dict.fromkeys(p for pieces in splits.values() for p in pieces))
        rows = dict(zip(unique, view.scorer.scores(self.embed(unique)), strict=True))
        out = list(decisions)
        for i, pieces in splits.items():
            scored = []
            for piece in pieces:
                row = rows[piece]
                best = int(np.argmax(row))
                name = view.index.names[best]
                # The fallback owns "thanks" and "please": a piece of its own splits nothing.
                owns = float(row[best]) >= float(view.cuts[best]) and name != self.fallback
                scored.append((piece, name if owns else None, float(row[best])))
            parts = compound_parts(scored)
            if parts is not None:
                order = ", ".join(f"'{p.text}' -> {p.specialist}" for p in parts)
                out[i] = decisions[i].model_copy(
                    update={"mode": "compound", "parts": parts, "reason": f"compound: {order}"}
                )
        return out

    def _thread(
        self, view: _View, turns: list[tuple[str | None, str]], rows: dict[str, np.ndarray]
    ) -> int | None:
        """Replay the earlier turns: the conversation's specialist is the last one chosen."""
        thread: int | None = None
        for pin, text in turns:
            decision = self._decide(view, rows[text], pin, thread, None, len(text.split()))
            if decision.mode != "fallback" and decision.chosen is not None:
                thread = view.index.ids[decision.chosen]
        return thread

    def _decide(
        self,
        view: _View,
        row: np.ndarray,
        pin: str | None,
        thread: int | None,
        query: np.ndarray | None,
        words: int = 0,
    ) -> RouteDecision:
        index = view.index

        def explain(i: int) -> list[NearestExample]:
            assert query is not None
            return [
                NearestExample(text=text, score=round(score, 4))
                for text, score in index.nearest(query, i, self.explain)
            ]

        return decide(
            index.names,
            row,
            view.cuts,
            self.policy,
            pinned=index.ids[pin] if pin else None,
            thread=thread,
            words=words,
            fallback_id=index.ids.get(self.fallback) if self.fallback else None,
            explain=explain if query is not None and self.explain > 0 else None,
        )

    def fit(
        self,
        texts: list[str],
        labels: list[str | None],
        target: OperatingPoint | None = None,
        *,
        lessons: Sequence[tuple[str, str | None]] = (),
    ) -> FitReport:
        """Calibrate per-specialist thresholds on labelled queries (None = out of scope), at
        the operating point `target` (default: balanced) chosen on the trade-off curve.

        For `linear`, the head also learns from them (the out-of-scope ones as its "none of
        them" class); the thresholds are then set on out-of-fold scores, so they are not fitted
        to the head's own training data. `lessons` (text, label) from traffic only train the
        head: traffic picks the hard cases (corrections) or the easy ones (thumbs-ups), never a
        representative sample, so they would pull the thresholds off the operating point.
        Methods without a head do not use them.
        """
        ids = self._ids(labels, len(texts))
        vectors = self._vectors(texts)
        if self.method == "linear":
            scores = self._fit_linear(vectors, ids, self._lesson_rows(lessons))
        else:
            scores = self.scorer().scores(vectors)
        target = target or OperatingPoint()
        curve = trade_off(scores, ids, target_recall=target.oos_recall)
        chosen, per = curve[choose([point for point, _ in curve], target)]
        self.threshold = chosen.threshold
        self.thresholds = {
            name: round(float(cut), 4) for name, cut in zip(self.index.names, per, strict=True)
        }
        return FitReport(
            method=self.method,
            n_in_scope=sum(i is not None for i in ids),
            n_out_of_scope=sum(i is None for i in ids),
            global_threshold=chosen.threshold,
            thresholds=dict(self.thresholds),
            operating_point=target,
            trade_off=[point for point, _ in curve],
            chosen=chosen,
        )

    def teach(self, lessons: Sequence[tuple[str, str | None]]) -> None:
        """Train the linear head on `lessons` too, thresholds untouched (no calibration set)."""
        if self.method == "linear" and lessons:
            self._learn(*self._lesson_rows(lessons))

    def _learn(self, vectors: np.ndarray, columns: np.ndarray) -> None:
        """Keep labelled rows (column ids, -1 = out of scope) for the head, by name so that
        they follow an index swap; the head retrains on the next view."""
        names = self.index.names
        self._extra = (vectors, [None if i < 0 else names[i] for i in columns])
        self._head = None
        self._view = None

    def _ids(self, labels: Sequence[str | None], n: int) -> list[int | None]:
        if len(labels) != n:
            raise ValueError("texts and labels differ in length")
        unknown = sorted({label for label in labels if label is not None} - set(self.index.names))
        if unknown:
            raise ValueError(f"labels name specialists that are not indexed: {unknown}")
        return [None if label is None else self.index.ids[label] for label in labels]

    def _vectors(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed(list(texts)) if texts else np.zeros((0, self.index.dim), np.float32)

    def _lesson_rows(
        self, lessons: Sequence[tuple[str, str | None]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Lessons as (vectors, column ids; -1 = out of scope)."""
        ids = self._ids([label for _, label in lessons], len(lessons))
        return self._vectors([text for text, _ in lessons]), _columns(ids)

    def _fit_linear(
        self,
        vectors: np.ndarray,
        ids: list[int | None],
        lessons: tuple[np.ndarray, np.ndarray],
    ) -> np.ndarray:
        """Out-of-fold scores for every labelled row: the head learns from the in-scope rows
        and, as its "none of them" class, from the out-of-scope ones; `lessons` train every
        fold and are never scored."""
        labels = _columns(ids)
        scores = np.zeros((len(vectors), len(self.index.names)), dtype=np.float32)
        folds = np.arange(len(vectors)) % FOLDS
        taught_vectors, taught_labels = lessons
        for fold in range(FOLDS):
            held = folds == fold
            if held.any():
                extra = (
                    np.concatenate([vectors[~held], taught_vectors]),
                    np.concatenate([labels[~held], taught_labels]),
                )
                scores[held] = build_scorer("linear", self.index, self.k, extra).scores(
                    vectors[held]
                )
        self._learn(
            np.concatenate([vectors, taught_vectors]), np.concatenate([labels, taught_labels])
        )
        return scores

    def _extra_ids(self, index: RouterIndex) -> tuple[np.ndarray, np.ndarray] | None:
        """Labelled vectors from `fit` as ids into `index.names` (-1: out of scope); rows of
        specialists no longer indexed are dropped."""
        if self._extra is None:
            return None
        vectors, labels = self._extra
        keep = [i for i, name in enumerate(labels) if name is None or name in index.ids]
        ids = np.array([-1 if (name := labels[i]) is None else index.ids[name] for i in keep])
        return vectors[keep], ids


def _columns(ids: Sequence[int | None]) -> np.ndarray:
    """Specialist ids as head columns: -1 for out of scope."""
    return np.array([-1 if i is None else i for i in ids], dtype=int)


def _text(content: Any) -> str:
    """OpenAI content is a string or a list of parts; routing reads the text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return "" if content is None else str(content)

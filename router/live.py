"""`LiveRouter`: the router a service serves, loaded from its artifact and refitted as installs
change, always swapped whole.

A route reads `router` once per batch, so it never sees half of a change. Three things swap it:
- `update` (an install changed, awaited by the caller): the same encoder, thresholds and head
  over a rebuilt index, so a new specialist is routable within seconds;
- `refit` (in the background, `schedule_refit`): thresholds on the artifact's labelled queries
  and the accepted router lessons (`registry.router_lessons`, polled), the linear head and,
  only when `refit_encoder` asks for it, a fine-tuned encoder (minutes) for the new installed
  set; the old router serves meanwhile, and a result fitted for a set that has moved on is
  thrown away. The result is saved as a new artifact version;
- `reload_if_changed` (polled): another process (`mesh router fit`) made a new version current.

A missing or damaged artifact never stops routing: the frozen base encoder with the method's
default thresholds serves, with one log line, and this router saves nothing until a good
artifact is loaded (so a node without the encoder files cannot overwrite a good artifact).
No Ray here; the artifact store is optional (None: nothing is loaded or saved).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from registry.errors import MeshError
from registry.router_artifacts import LabelledQuery, LexicalSpec, RouterArtifactRecord
from router.artifact import EncoderLoader, apply_record, fit_artifact, load_encoder, record_summary
from router.decision import RouteDecision
from router.encoder import Encoder, SentenceTransformerEncoder
from router.finetune import FinetuneSettings, examples_digest
from router.index import RouterIndex
from router.lexical import for_method, with_lexical
from router.router import Method, Router

logger = logging.getLogger(__name__)


class ArtifactStore(Protocol):
    """What `LiveRouter` needs of `registry.router_artifacts.RouterArtifactStore`."""

    def current_version(self) -> str | None: ...
    def get(self, version: str) -> RouterArtifactRecord: ...
    def save(self, record: RouterArtifactRecord, *, expect_current: str | None = "*") -> bool: ...


class LessonSource(Protocol):
    """What `LiveRouter` needs of `registry.router_lessons.LessonStore`."""

    def version(self) -> int: ...
    def accepted(self) -> tuple[int, list[LabelledQuery]]: ...


class LiveRouterOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    home: Path = Field(description="MESH_HOME: artifact folders live under home/router/.")
    method: Method = "knn"
    fallback: str | None = None
    threshold: float | None = Field(None, description="Unset: the method's default.")
    refit: bool = Field(True, description="Refit thresholds and head when installs change.")
    refit_encoder: bool = Field(False, description="Also fine-tune the encoder on refits.")
    refit_delay_s: float = Field(2.0, ge=0, description="Let a burst of installs settle first.")
    finetune: FinetuneSettings = Field(default_factory=FinetuneSettings)  # type: ignore[arg-type]
    lexical: LexicalSpec | None = Field(
        default_factory=LexicalSpec,
        description="Lexical features for the linear head (router.lexical); None: off.",
    )


class LiveRouter:
    def __init__(
        self,
        options: LiveRouterOptions,
        *,
        store: ArtifactStore | None = None,
        lessons: LessonSource | None = None,
        load: EncoderLoader = SentenceTransformerEncoder,
        frozen: Callable[[], Encoder] | None = None,
    ) -> None:
        self.options = options
        self.store = store
        self.lessons = lessons
        self.lessons_version = 0  # of the accepted lessons, as last polled
        self.load = load
        self._make_frozen = frozen or SentenceTransformerEncoder
        self._frozen: Encoder | None = None
        self._frozen_routing: Encoder | None = None
        self.record: RouterArtifactRecord | None = None  # the artifact serving now
        self.degraded = False  # the current artifact could not be loaded: save nothing
        self.examples: dict[str, list[str]] = {}
        self.installed: dict[str, str] = {}
        self.refits = 0
        self._swap = threading.Lock()  # guards router, record, examples together
        self._refit = threading.Lock()  # one refit or reload at a time
        self._bad: set[str] = set()  # versions that failed to load: logged once
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._router: Router | None = None

    @property
    def router(self) -> Router:
        """The router serving now; read it once per batch."""
        if self._router is None:
            raise RuntimeError("call LiveRouter.start() first")
        return self._router

    # -- serving ------------------------------------------------------------------------
    def route_batch(
        self, texts: list[str], histories: Sequence[Sequence[str] | None] | None = None
    ) -> list[RouteDecision]:
        """`Router.route_batch` on the router of this moment (what `RouteBatcher` calls)."""
        return self.router.route_batch(texts, histories)

    def status(self) -> dict[str, Any]:
        return {
            "artifact": record_summary(self.record) if self.record else None,
            "degraded": self.degraded,
            "stale": self.stale(),
            "refits": self.refits,
        }

    # -- loading ------------------------------------------------------------------------
    def start(self) -> None:
        """Serve the current artifact, or the frozen encoder when there is none or it is bad."""
        version = None
        try:
            self.poll_lessons()  # else the first install would refit for lessons it already has
        except MeshError as error:
            logger.warning("cannot read router lessons: %s", error.message)
        if self.store is not None:
            try:
                version = self.store.current_version()
            except MeshError as error:
                self._fall_back(f"cannot read the router artifact: {error.message}")
                return
            if version is None:
                logger.info(
                    "no router artifact yet: serving the frozen encoder with default thresholds "
                    "(fit one with 'mesh router fit')"
                )
        if version is None:
            self._router = self._new_router(None)
        else:
            self._adopt(version)

    def reload_if_changed(self) -> bool:
        """Adopt a version made current elsewhere (`mesh router fit`); True when swapped."""
        if self.store is None:
            return False
        version = self.store.current_version()
        mine = self.record.version if self.record else None
        if version is None or version == mine or version in self._bad:
            return False
        return self._adopt(version)

    def _adopt(self, version: str) -> bool:
        assert self.store is not None
        with self._refit:
            try:
                record = self.store.get(version)
                encoder = load_encoder(record.encoder, self.options.home, self.load)
                # A record of another method is not applied (defaults serve until the
                # refit): its features would only dilute this method's similarities.
                same = record.method == self.options.method
                lexical = record.lexical if same else self.lexical
                if encoder is None and lexical == self.lexical:
                    encoder = self.frozen_router_encoder()
                encoder = with_lexical(encoder or self.frozen_encoder(), lexical)
                while True:
                    examples = self.examples
                    router = self._new_router(encoder, RouterIndex.build(encoder, examples))
                    applied = apply_record(router, record)  # ValueError: a head that won't fit
                    with self._swap:
                        if self.examples is examples:
                            self._router, self.record, self.degraded = router, record, False
                            break
            except (MeshError, ValueError) as error:
                self._bad.add(version)
                message = error.message if isinstance(error, MeshError) else str(error)
                why = f"router artifact {version} is unusable: {message}"
                if self.record is None:
                    self._fall_back(why)
                else:
                    logger.warning("%s; artifact %s keeps serving", why, self.record.version)
                return False
        logger.info(
            "router artifact %s loaded (%s, %s encoder, thresholds %s%s)",
            version,
            record.method,
            "fine-tuned" if record.encoder else "frozen",
            "fitted" if record.fitted else "default",
            "" if applied else f"; its method is not {self.options.method}, so defaults apply",
        )
        return True

    def _fall_back(self, why: str) -> None:
        logger.warning("%s; serving the frozen encoder with default thresholds", why)
        encoder = self.frozen_router_encoder()
        with self._swap:
            if self._router is None or self._router.encoder is not encoder:
                self._router = self._new_router(encoder, RouterIndex.build(encoder, self.examples))
            self.record, self.degraded = None, True

    def frozen_encoder(self) -> Encoder:
        """The base sentence encoder, never fine-tuned nor wrapped (store search and
        `/v1/embeddings` use it too)."""
        if self._frozen is None:
            self._frozen = self._make_frozen()
        return self._frozen

    @property
    def lexical(self) -> LexicalSpec | None:
        """The lexical features a head fitted here uses (the linear method only)."""
        return for_method(self.options.method, self.options.lexical)

    def frozen_router_encoder(self) -> Encoder:
        """The frozen encoder as the router reads queries with it (lexical features added for
        the linear method); one object, so swaps can tell the encoder did not change (a refit
        then keeps the router's embedding cache)."""
        if self._frozen_routing is None:
            self._frozen_routing = with_lexical(self.frozen_encoder(), self.lexical)
        return self._frozen_routing

    def _new_router(self, encoder: Encoder | None, index: RouterIndex | None = None) -> Router:
        encoder = encoder or self.frozen_router_encoder()
        return Router(
            encoder,
            index if index is not None else RouterIndex.build(encoder, {}),
            fallback=self.options.fallback,
            method=self.options.method,
            threshold=self.options.threshold,
        )

    # -- following installs -------------------------------------------------------------
    def update(self, installed: dict[str, str], examples: dict[str, list[str]]) -> None:
        """Index a new installed set now with the serving encoder, thresholds and head."""
        if examples == self.examples:  # e.g. a replica count changed: nothing to index
            self.installed = installed
            return
        while True:
            current = self.router
            index = RouterIndex.build(current.encoder, examples)
            with self._swap:
                if self.router.encoder is current.encoder:  # no encoder swapped in meanwhile
                    self._router = self.router.clone(index)
                    self.examples, self.installed = examples, installed
                    return

    def poll_lessons(self) -> int:
        """Read the accepted lessons' version (one Redis GET); `stale` compares it."""
        if self.lessons is not None:
            self.lessons_version = self.lessons.version()
        return self.lessons_version

    def stale(self) -> bool:
        """Whether a refit is due: the artifact was fitted for another set or method, or
        before the accepted lessons last changed."""
        if self.degraded or not self.options.refit or not self.examples:
            return False
        record = self.record
        # Lessons train the linear head only: other methods have nothing to refit for them.
        taught = self.options.method == "linear" and self.lessons_version != (
            record.lessons_version if record else 0
        )
        if record is None:  # nothing fitted: an encoder to train or lessons change something
            return self.options.refit_encoder or taught
        return (
            record.examples_digest != examples_digest(self.examples)
            or record.method != self.options.method
            or (self.options.refit_encoder and record.encoder is None)
            or (record.method == "linear" and record.lexical != self.lexical)
            or taught
        )

    def refit(self) -> bool:
        """Fit for the installed set of now, swap and save; True when a new router serves."""
        with self._refit:
            with self._swap:
                if not self.stale():
                    return False
                examples, installed, base = self.examples, self.installed, self.record
                index, encoder = self.router.index, self.router.encoder
            digest = examples_digest(examples)
            lessons = self.lessons.accepted() if self.lessons else (0, [])
            self.lessons_version = lessons[0]
            files = base.encoder if base else None
            trained_for = files.examples_digest if files else None
            finetune = self.options.finetune if self.options.refit_encoder else None
            if trained_for == digest:
                finetune = None
            logger.info(
                "router refit for %d specialists started%s",
                len(examples),
                " (fine-tuning the encoder: minutes)" if finetune else "",
            )
            router, record = fit_artifact(
                examples,
                installed,
                home=self.options.home,
                encoder=encoder,
                encoder_files=files,
                index=None if finetune else index,
                lexical=self.lexical,
                method=self.options.method,
                fallback=self.options.fallback,
                threshold=self.options.threshold,
                labelled=base.labelled if base else None,
                lessons=lessons,
                target=base.operating_point if base else None,
                finetune=finetune,
                parent=base.version if base else None,
                load=self.load,
            )
            with self._swap:
                if examples_digest(self.examples) != digest:
                    logger.info("router refit dropped: the installed set changed meanwhile")
                    return False
                if router.encoder is self.router.encoder:
                    router.cache = self.router.cache
                self._router, self.record = router, record
                self.refits += 1
            saved = self._save(record, base)
        logger.info(
            "router refit %s now serves%s",
            record.version,
            "" if saved else " (not saved: another replica saved a refit first)",
        )
        return True

    def _save(self, record: RouterArtifactRecord, base: RouterArtifactRecord | None) -> bool:
        if self.store is None:
            return False
        try:
            return self.store.save(record, expect_current=base.version if base else None)
        except MeshError as error:
            logger.warning("could not save router artifact %s: %s", record.version, error.message)
            return False

    # -- background ---------------------------------------------------------------------
    def schedule_refit(self) -> None:
        """Refit in the background if due; one at a time, run again if installs moved on."""
        if not self.stale():
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._refit_loop())
        else:
            self._again = True

    async def wait(self) -> None:
        """Until the background refit (if any) is done."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _refit_loop(self) -> None:
        await asyncio.sleep(self.options.refit_delay_s)
        while True:
            self._again = False
            try:
                await asyncio.to_thread(self.refit)
            except Exception:
                logger.exception("router refit failed; the current router keeps serving")
            if not self._again:
                return

"""Runs a function on untrusted input in a separate process, under a time and memory limit.

sympy can spend minutes (`solve(x**100 + x + 1)`) or gigabytes on a short input, and a thread
cannot interrupt a C-level bignum operation: only a process can be stopped. Workers start with
'spawn' (no copy of the replica's threads, event loop or Ray state), cap their own address
space with RLIMIT_AS, and are killed and replaced when a call overruns. Calls block, so async
callers await them through `asyncio.to_thread`.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

TIMEOUT_S = 2.0
MEMORY_BYTES = 512 * 1024 * 1024
START_TIMEOUT_S = 120.0  # importing sympy in a fresh process on a busy 2-core machine


class SandboxError(Exception):
    """The call failed; the message says why in words fit for an answer ("took longer than 2 s")."""


class Sandbox:
    """A small pool of worker processes running `target(text) -> str`.

    `target` must be importable by name (a module-level function). Exceptions of
    `expected` types come back as SandboxError with their message; anything else as a short
    generic reason, so a worker never leaks a traceback into an answer.
    """

    def __init__(
        self,
        target: Callable[[str], str],
        *,
        warmup: str = "",
        expected: tuple[type[Exception], ...] = (ValueError,),
        timeout_s: float = TIMEOUT_S,
        memory_bytes: int = MEMORY_BYTES,
        workers: int = 2,
    ) -> None:
        self.target, self.warmup, self.expected = target, warmup, expected
        self.timeout_s, self.memory_bytes = timeout_s, memory_bytes
        self._slots = threading.BoundedSemaphore(workers)
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []

    def call(self, text: str) -> str:
        """target(text) in a worker; raises SandboxError on any failure, timeouts included.

        Waiting for a free worker is bounded too: when slow calls hold every worker, a new
        call says the tool is busy instead of queueing behind them unseen."""
        if not self._slots.acquire(timeout=self.timeout_s * 2):
            raise SandboxError("busy with other slow expressions; retry shortly")
        try:
            worker = self._take()
            try:
                ok, value = worker.ask(text, self.timeout_s)
            except SandboxError:
                worker.kill()
                raise
            with self._lock:
                self._idle.append(worker)
        finally:
            self._slots.release()
        if not ok:
            raise SandboxError(value)
        return value

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.process.is_alive():
                    return worker
                worker.kill()
        return _Worker.start(self)


class _Worker:
    def __init__(self, process: Any, conn: Connection) -> None:
        self.process, self.conn = process, conn

    @classmethod
    def start(cls, sandbox: Sandbox) -> _Worker:
        context = multiprocessing.get_context("spawn")
        conn, child_conn = context.Pipe()
        args = (child_conn, sandbox.target, sandbox.warmup, sandbox.expected, sandbox.memory_bytes)
        process = context.Process(target=_serve, args=args, daemon=True, name="math-sandbox")
        process.start()
        child_conn.close()
        worker = cls(process, conn)
        if not conn.poll(START_TIMEOUT_S):
            worker.kill()
            raise SandboxError("the evaluation worker did not start")
        try:
            conn.recv()
        except (EOFError, OSError):
            worker.kill()
            raise SandboxError("the evaluation worker did not start") from None
        return worker

    def ask(self, text: str, timeout_s: float) -> tuple[bool, str]:
        try:
            self.conn.send(text)
            if not self.conn.poll(timeout_s):
                raise SandboxError(f"took longer than {timeout_s:g} s")
            ok, value = self.conn.recv()
        except (EOFError, OSError):
            raise SandboxError("the evaluation worker stopped (out of memory?)") from None
        return bool(ok), str(value)

    def kill(self) -> None:
        self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


def _serve(
    conn: Connection,
    target: Callable[[str], str],
    warmup: str,
    expected: tuple[type[Exception], ...],
    memory_bytes: int,
) -> None:
    """Worker loop: import and warm up first, then cap memory, then answer until the pipe closes."""
    if warmup:
        _outcome(target, warmup, expected)
    _limit_memory(memory_bytes)
    conn.send("ready")
    while True:
        try:
            text = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(_outcome(target, text, expected))


def _outcome(
    target: Callable[[str], str], text: str, expected: tuple[type[Exception], ...]
) -> tuple[bool, str]:
    try:
        return True, target(text)
    except expected as error:
        return False, str(error)
    except MemoryError:
        return False, "result too large"
    except RecursionError:
        return False, "expression nested too deeply"
    except Exception as error:  # a worker answers; it never dies on bad input
        return False, f"internal error ({type(error).__name__})"


def _limit_memory(memory_bytes: int) -> None:
    try:
        import resource
    except ImportError:  # not on POSIX: the wall-clock limit still applies
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))

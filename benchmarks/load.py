"""A bounded load test on loopback that accounts for every request it sends.

Sends N chat completions at a given concurrency to a running mesh on 127.0.0.1, mixing
streaming and non-streaming requests across `general`, `code`, `writing`, `math` and routed
`model: mesh`, each with a small `max_tokens` and a client timeout, and puts every request in
exactly one bucket:

  answered        200 with a final answer: a `finish_reason` (and, streamed, `[DONE]` after it)
  refused         429 or 503 with `Retry-After`: the mesh said "not now", as designed
  failed_cleanly  an OpenAI-style error JSON with a 4xx/5xx, or a final SSE error event
  lost            anything else: timeout or hang, connection reset, a cut stream without an
                  error or without `[DONE]`, a 200 without a final answer, an error without a body

The point is the last line: under load, a client must always hear back. Throughput figures
(p50/p95 over answered requests) come along but are not what this measures; see
`benchmarks/serving.py` for those. Bounded in count (N) and time (a global deadline, after which
open requests are cancelled and counted as lost, and those never sent are counted as not_sent).

`--overload` adds one client (one API key, or this address) sending to one specialist at a
concurrency above its fair share (`MESH_MAX_INFLIGHT_PER_CLIENT`, 8): the excess must come back
as 429 with `Retry-After` (refused), and nothing may be lost. Usage:

    python benchmarks/load.py --url http://127.0.0.1:8000 [--n 200] [--concurrency 16] \
        [--api-key KEY ...]
    python benchmarks/load.py --start --n 200 --concurrency 16 [--overload]
    python -m benchmarks.load --faults [SCENARIO ...] [--n 48] [--concurrency 8]

`--faults` runs the same load on a simulated cluster (`benchmarks/fault_lab.py`: run it as a
module from the repository root) once per scenario - no fault, a replica killed mid-stream, the
worker node removed and replaced, Redis stopped and restarted, an upgrade - and prints one entry
per scenario with the counts below, the fault's window and the seconds the mesh took to be
healthy again after the load (`recovered_s`).

Prints one JSON object: {"sent", "answered", "refused", "failed_cleanly", "lost", "p50_ms",
"p95_ms", "duration_s", "by_specialist": {...}, ...} (with --overload, an "overload" object of
the same shape). Loopback only: any other base URL is refused, so this cannot load someone
else's server by mistake.

Who is a client: the mesh counts fair shares and rate limits per configured API key, else per
client address (a made-up bearer token buys no fresh allowance). Without `api_keys`, the whole
run is one client, 127.0.0.1, so a concurrency above 8 on one specialist is refused in part, by
design. `--start` configures one API key per worker (and one for the overload client), so the
main run is `concurrency` independent clients and the overload one client among them.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import random
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

Outcome = Literal["answered", "refused", "failed_cleanly", "lost"]
OUTCOMES: tuple[Outcome, ...] = ("answered", "refused", "failed_cleanly", "lost")

PROMPTS: dict[str, tuple[str, ...]] = {
    "general": ("Why is the sky blue?", "How many planets are in the solar system?"),
    "code": ("Write a Python function that reverses a list", "Fix: for i in range(10) print(i)"),
    "writing": ("Give me a catchy title for a post on remote work", "Make this sound warmer: hi"),
    "math": ("What is 17*23?", "What is the square root of 144?"),
    "gpu-math": ("What is 19*21?", "What is 2^16?"),  # the fault lab's tool on the worker node
    "mesh": (
        "What is 12 times 7?",
        "Write a haiku about autumn",
        "How do I sort a dict by value in Python?",
        "What is the capital of France?",
    ),
}
MODELS = ("general", "code", "writing", "math", "mesh")
MAX_TOKENS = (8, 24)
REQUEST_TIMEOUT_S = 120.0
DEADLINE_S = 600.0
SHOWN_PROBLEMS = 5


def require_loopback(base_url: str) -> str:
    """The base URL without a trailing slash, if it names this machine; ValueError otherwise.

    Names are not resolved (a name can point anywhere): only `localhost` and loopback literals
    (127.0.0.0/8, ::1) pass."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"not an http(s) URL: {base_url!r}")
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"refusing to load {host!r}: only loopback targets are allowed")
    return base_url.rstrip("/")


@dataclass
class Result:
    """One request's fate: its bucket, how long it took, and a short why when it went wrong."""

    model: str
    stream: bool
    outcome: Outcome
    latency_s: float
    status: int | None = None
    specialist: str | None = None  # who answered (routed requests name their pick)
    retry_after: str | None = None
    detail: str = ""


def _is_error_json(text: str) -> bool:
    """OpenAI's error shape: {"error": {"message": str, "type": str, ...}}."""
    try:
        body = json.loads(text)
    except ValueError:
        return False
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and isinstance(error.get("message"), str)


def classify_refusal_or_error(status: int, headers: httpx.Headers, text: str) -> Outcome:
    """A non-200 answer: a refusal with Retry-After, a clean error, or (no error body) lost."""
    if status in (429, 503) and headers.get("retry-after"):
        return "refused"
    return "failed_cleanly" if _is_error_json(text) else "lost"


def classify_completion(body: Any) -> tuple[Outcome, str | None, str]:
    """A non-streamed 200: answered only with a choice that has a finish_reason."""
    try:
        finish = body["choices"][0]["finish_reason"]
    except (KeyError, IndexError, TypeError):
        return "lost", None, "200 without choices[0].finish_reason"
    specialist = (body.get("mesh") or {}).get("specialist")
    if not finish:
        return "lost", specialist, "200 with an empty finish_reason"
    return "answered", specialist, ""


@dataclass
class StreamState:
    """What a stream has shown so far: enough to tell a finished stream from a cut one."""

    finished: bool = False
    done: bool = False
    error: str | None = None
    specialist: str | None = None
    bad_lines: int = 0

    def feed(self, line: str) -> None:
        if not line.startswith("data:"):
            return
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            chunk = None
        if not isinstance(chunk, dict):
            self.bad_lines += 1
            return
        if isinstance(chunk.get("error"), dict):
            self.error = str(chunk["error"].get("message", "error event"))
        self.specialist = self.specialist or (chunk.get("mesh") or {}).get("specialist")
        for choice in chunk.get("choices") or []:
            if isinstance(choice, dict) and choice.get("finish_reason"):
                self.finished = True

    def outcome(self) -> tuple[Outcome, str]:
        if self.error is not None:
            return "failed_cleanly", f"SSE error event: {self.error}"
        if self.finished and self.done and not self.bad_lines:
            return "answered", ""
        return "lost", (
            f"stream cut: finish_reason={self.finished} [DONE]={self.done} "
            f"unparsable={self.bad_lines}"
        )


def chat_body(model: str, stream: bool, rng: random.Random) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": rng.choice(PROMPTS.get(model, PROMPTS["mesh"]))}],
        "max_tokens": rng.randint(*MAX_TOKENS),
        "stream": stream,
    }


async def send_one(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]
) -> Result:
    """Send one chat completion and classify what came back; never raises."""
    model, stream = str(body["model"]), bool(body.get("stream"))
    start = time.perf_counter()

    def done(outcome: Outcome, **kwargs: Any) -> Result:
        return Result(model, stream, outcome, time.perf_counter() - start, **kwargs)

    try:
        async with client.stream("POST", url, json=body, headers=headers) as response:
            status = response.status_code
            if status != 200:
                text = (await response.aread()).decode(errors="replace")
                outcome = classify_refusal_or_error(status, response.headers, text)
                return done(
                    outcome,
                    status=status,
                    retry_after=response.headers.get("retry-after"),
                    detail=text[:200],
                )
            if not stream:
                payload = json.loads(await response.aread())
                outcome, specialist, why = classify_completion(payload)
                return done(outcome, status=status, specialist=specialist, detail=why)
            state = StreamState()
            async for line in response.aiter_lines():
                state.feed(line)
            outcome, why = state.outcome()
            return done(outcome, status=status, specialist=state.specialist, detail=why)
    except Exception as error:  # reset, protocol error, bad JSON...: the client got no answer
        return done("lost", detail=f"{type(error).__name__}: {error}"[:200])


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def percentile_ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(1000 * ordered[min(int(q * len(ordered)), len(ordered) - 1)], 1)


@dataclass
class Tally:
    """Counts per bucket, overall and per requested model, plus a few examples of trouble."""

    results: list[Result] = field(default_factory=list)
    lost_outstanding: Counter[str] = field(default_factory=Counter)
    not_sent: int = 0

    def summary(self, duration_s: float) -> dict[str, Any]:
        sent = len(self.results) + sum(self.lost_outstanding.values())
        counts = Counter(r.outcome for r in self.results)
        counts["lost"] += sum(self.lost_outstanding.values())
        by_model: dict[str, dict[str, int]] = {}
        for r in self.results:
            row = by_model.setdefault(r.model, {"sent": 0, **dict.fromkeys(OUTCOMES, 0)})
            row["sent"] += 1
            row[r.outcome] += 1
        for model, n in self.lost_outstanding.items():
            row = by_model.setdefault(model, {"sent": 0, **dict.fromkeys(OUTCOMES, 0)})
            row["sent"] += n
            row["lost"] += n
        answered = [r.latency_s for r in self.results if r.outcome == "answered"]
        refused = [r for r in self.results if r.outcome == "refused"]
        problems = sorted(  # lost first, then failed, then refused
            (r for r in self.results if r.outcome != "answered"),
            key=lambda r: OUTCOMES.index(r.outcome),
            reverse=True,
        )
        return {
            "sent": sent,
            **{name: counts[name] for name in OUTCOMES},
            "p50_ms": percentile_ms(answered, 0.50),
            "p95_ms": percentile_ms(answered, 0.95),
            "duration_s": round(duration_s, 2),
            "not_sent": self.not_sent,  # still queued at the deadline
            "by_specialist": dict(sorted(by_model.items())),
            "routed_to": dict(
                Counter(r.specialist for r in self.results if r.model == "mesh" and r.specialist)
            ),
            "streamed": sum(r.stream for r in self.results),
            "refused_with_retry_after": sum(bool(r.retry_after) for r in refused),
            "statuses": dict(Counter(str(r.status or "no response") for r in self.results)),
            "not_answered": [  # a sample, to tell a refusal's reason or a loss's symptom
                {"model": r.model, "stream": r.stream, "outcome": r.outcome, "detail": r.detail}
                for r in problems[:SHOWN_PROBLEMS]
            ],
        }


async def _drive(
    base_url: str,
    plan: list[dict[str, Any]],
    concurrency: int,
    headers_for: Callable[[int], dict[str, str]],
    timeout_s: float,
    deadline_s: float,
) -> dict[str, Any]:
    """Run `plan` with `concurrency` workers; at the deadline, what is open is cancelled and
    lost, and what is still queued is reported as not sent."""
    url = require_loopback(base_url) + "/v1/chat/completions"
    tally = Tally()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in plan:
        queue.put_nowait(body)
    in_flight: dict[int, str] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))

    async def worker(index: int, client: httpx.AsyncClient) -> None:
        while True:
            try:
                body = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            in_flight[index] = str(body["model"])
            try:
                # httpx's timeout is per read; this one bounds a stream that trickles forever.
                result = await asyncio.wait_for(
                    send_one(client, url, body, headers_for(index)), timeout_s
                )
            except TimeoutError:
                result = Result(str(body["model"]), bool(body["stream"]), "lost", timeout_s)
                result.detail = f"no complete answer within {timeout_s:.0f}s"
            del in_flight[index]
            tally.results.append(result)

    start = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        workers = [asyncio.create_task(worker(i, client)) for i in range(concurrency)]
        _, pending = await asyncio.wait(workers, timeout=deadline_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    tally.lost_outstanding.update(in_flight.values())  # cut off by the global deadline
    tally.not_sent = queue.qsize()
    return tally.summary(time.perf_counter() - start)


def run_load(
    base_url: str,
    n: int = 200,
    concurrency: int = 16,
    *,
    models: tuple[str, ...] = MODELS,
    stream_ratio: float = 0.5,
    api_keys: Sequence[str] = (),
    timeout_s: float = REQUEST_TIMEOUT_S,
    deadline_s: float = DEADLINE_S,
    seed: int = 0,
) -> dict[str, Any]:
    """N mixed chat completions at `concurrency`; returns the summary (see the module doc).

    Requests are planned up front from `seed` (models round-robin, so every one gets its
    share; streaming and prompts drawn), so two runs send the same requests. Worker i presents
    `api_keys[i % len(api_keys)]`; with none, every request is the same client (the address)."""
    require_loopback(base_url)
    rng = random.Random(seed)
    plan = [chat_body(models[i % len(models)], rng.random() < stream_ratio, rng) for i in range(n)]

    def headers_for(worker: int) -> dict[str, str]:
        return bearer(api_keys[worker % len(api_keys)] if api_keys else None)

    return asyncio.run(_drive(base_url, plan, concurrency, headers_for, timeout_s, deadline_s))


def run_overload(
    base_url: str,
    n: int = 64,
    concurrency: int = 32,
    *,
    model: str = "general",
    api_key: str | None = None,
    timeout_s: float = REQUEST_TIMEOUT_S,
    deadline_s: float = DEADLINE_S,
    seed: int = 1,
) -> dict[str, Any]:
    """One client (`api_key`, else the address) at `concurrency` on one specialist, above its
    fair share: the excess must be refused with 429 + Retry-After and nothing lost."""
    require_loopback(base_url)
    rng = random.Random(seed)
    plan = [chat_body(model, i % 2 == 1, rng) for i in range(n)]
    headers = bearer(api_key)
    return asyncio.run(
        _drive(base_url, plan, concurrency, lambda _worker: headers, timeout_s, deadline_s)
    )


# -- faults: the same load while something breaks (`benchmarks.fault_lab`) ------------------
FAULT_MODELS = ("general", "math", "gpu-math", "mesh")
SCENARIOS = ("no_fault", "replica_killed", "node_removed", "redis_restarted", "upgraded")


def fault_actions(lab: Any) -> dict[str, tuple[str, Callable[[], Any] | None]]:
    """Each scenario's fault, in words and as an action on a running `FaultLab`."""
    return {
        "no_fault": ("nothing breaks", None),
        "replica_killed": (
            "general's replica is killed while its streams run",
            lambda: lab.kill_replica("general"),
        ),
        "node_removed": (
            "the worker node (gpu-math's replica) is removed; a new one joins 2 s later",
            lab.replace_worker,
        ),
        "redis_restarted": ("the registry's Redis stops for 3 s and restarts", lab.restart_redis),
        "upgraded": (
            "math is upgraded to a new version (rolling update)",
            lambda: lab.upgrade("math"),
        ),
    }


def run_faults(
    lab: Any,
    scenarios: Sequence[str] = SCENARIOS,
    *,
    n: int = 48,
    concurrency: int = 8,
    fault_at_s: float = 1.0,
    timeout_s: float = REQUEST_TIMEOUT_S,
    deadline_s: float = DEADLINE_S,
    recover_timeout_s: float = 180.0,
) -> dict[str, dict[str, Any]]:
    """Each scenario in turn on the lab's mesh: the bounded load of `run_load` (mixed streaming,
    `FAULT_MODELS`), its fault injected `fault_at_s` into it (`fault_window_s`), then the time
    the mesh takes after the load to be healthy again by itself (`recovered_s`, None if it did
    not within `recover_timeout_s`)."""
    from concurrent.futures import ThreadPoolExecutor

    actions = fault_actions(lab)
    report: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(scenarios):
        what, action = actions[name]
        lab.wait(lab.healthy, recover_timeout_s)  # each scenario starts from a healthy mesh
        began = time.perf_counter()
        fault_window: list[float] = []
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(
                run_load,
                lab.base_url,
                n,
                concurrency,
                models=FAULT_MODELS,
                timeout_s=timeout_s,
                deadline_s=deadline_s,
                seed=index,
            )
            fault_error = None
            if action is not None:
                time.sleep(fault_at_s)
                fault_window.append(time.perf_counter() - began)
                try:
                    action()
                except Exception as error:  # reported: a fault that could not be injected
                    fault_error = f"{type(error).__name__}: {error}"
                fault_window.append(time.perf_counter() - began)
            result = running.result()
        result["fault"] = what
        result["fault_error"] = fault_error
        # When the fault began and ended, in seconds from the load's start: it must fall inside
        # the load's `duration_s` to have hit requests in flight.
        result["fault_window_s"] = [round(t, 2) for t in fault_window] or None
        result["recovered_s"] = lab.wait(lab.healthy, recover_timeout_s)
        report[name] = result
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running mesh on loopback, e.g. http://127.0.0.1:8000")
    target.add_argument("--start", action="store_true", help="start a mesh (`mesh up`) first")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    target.add_argument(
        "--faults",
        nargs="*",
        choices=SCENARIOS,
        metavar="SCENARIO",
        help="start a mesh on a simulated cluster (benchmarks/fault_lab.py) and run these fault "
        f"scenarios (default: all of {', '.join(SCENARIOS)}); one JSON entry each",
    )
    parser.add_argument("--overload", action="store_true", help="also run the overload burst")
    parser.add_argument("--overload-n", type=int, default=64)
    parser.add_argument("--overload-concurrency", type=int, default=32)
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        help="a key of the --url mesh; repeat for several clients (default: none, one client)",
    )
    parser.add_argument("--timeout", type=float, default=REQUEST_TIMEOUT_S, help="per request, s")
    parser.add_argument("--deadline", type=float, default=DEADLINE_S, help="whole run, s")
    args = parser.parse_args()

    def measure(base_url: str, keys: list[str]) -> dict[str, Any]:
        summary = run_load(
            base_url,
            args.n,
            args.concurrency,
            api_keys=keys[: args.concurrency],
            timeout_s=args.timeout,
            deadline_s=args.deadline,
        )
        if args.overload:
            summary["overload"] = run_overload(
                base_url,
                args.overload_n,
                args.overload_concurrency,
                api_key=keys[-1] if keys else None,
                timeout_s=args.timeout,
                deadline_s=args.deadline,
            )
        return summary

    if args.url:
        print(json.dumps(measure(args.url, args.api_key), indent=2))
        return
    if args.faults is not None:
        print(json.dumps(faults(args.faults or list(SCENARIOS), args), indent=2))
        return
    from mesh.launcher import running_mesh

    keys = [f"load-{secrets.token_hex(8)}" for _ in range(args.concurrency + 1)]
    env = {"MESH_API_KEYS": json.dumps(keys)}
    with (
        tempfile.TemporaryDirectory(prefix="mesh-load-") as home,
        running_mesh(Path(home), env=env, ui=False) as mesh,
    ):
        summary = measure(mesh.base_url, keys)
    print(json.dumps(summary, indent=2))


def faults(scenarios: list[str], args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.fault_lab import FaultLab, gpu_tool
    from specialists.catalog import load_catalog

    wanted = {"general", "math"}
    specialists = [m for m in load_catalog() if m.name in wanted] + [gpu_tool("gpu-math")]
    with (
        tempfile.TemporaryDirectory(prefix="mesh-faults-") as home,
        FaultLab(Path(home), specialists) as lab,
    ):
        report = run_faults(
            lab,
            scenarios,
            n=args.n,
            concurrency=args.concurrency,
            timeout_s=args.timeout,
            deadline_s=args.deadline,
        )
    return {"scenarios": report, "goal": "lost == 0 and recovered_s is not None in every entry"}


if __name__ == "__main__":
    main()

"""Run untrusted Python (a model's answer plus unit tests) in a separate, limited process.

Isolation here is best effort, enough for scoring model output, not a security boundary for
hostile code: `python -I` (no user site, no PYTHON* variables, no script dir on sys.path), an
empty environment (no inherited secrets), a fresh temporary working directory, a wall-clock
timeout that kills the whole process group, and rlimits on memory, CPU, file size and open
files. It has network access, and code set on cheating could still find the pass nonce (in
/proc/self/environ); run untrusted suites inside a container when that matters.
"""

from __future__ import annotations

import contextlib
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

TIMEOUT_SECONDS = 5.0
MEMORY_BYTES = 512 * 1024 * 1024
FILE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class RunResult:
    passed: bool
    returncode: int | None  # None: killed at the timeout
    output: str


def _limit() -> None:  # runs in the child between fork and exec
    cpu = int(TIMEOUT_SECONDS) + 1
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_BYTES, FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


# The runner imports the answer as a module (so its `if __name__ == "__main__":` block stays
# quiet), runs the tests in the answer's namespace, then prints a nonce it took from the
# environment before the answer's code ran: an answer that calls `sys.exit(0)` early exits
# cleanly but never prints the nonce, so it does not pass.
RUNNER = """\
import os, sys
nonce = os.environ.pop("MESH_EVAL_NONCE", "")
sys.path.insert(0, os.getcwd())
import solution
with open("tests.py", encoding="utf-8") as handle:
    exec(compile(handle.read(), "tests.py", "exec"), vars(solution))
print(nonce)
"""


def run_tests(code: str, tests: str, *, timeout: float = TIMEOUT_SECONDS) -> RunResult:
    """Run the asserts in `tests` against `code`; passed when every assert held."""
    nonce = secrets.token_hex(16)
    files = {"solution.py": code, "tests.py": tests, "runner.py": RUNNER}
    result = run_python_files(files, "runner.py", timeout=timeout, env={"MESH_EVAL_NONCE": nonce})
    passed = result.passed and result.output.rstrip().endswith(nonce)
    return RunResult(passed, result.returncode, result.output.replace(nonce, "<nonce>"))


def run_python(source: str, *, timeout: float = TIMEOUT_SECONDS) -> RunResult:
    """Run `source` as a script; passed when it exits 0 within `timeout` seconds."""
    return run_python_files({"main.py": source}, "main.py", timeout=timeout)


def run_python_files(
    files: dict[str, str], entry: str, *, timeout: float, env: dict[str, str] | None = None
) -> RunResult:
    """Write `files` into a fresh temporary folder and run `entry` there. Output goes to a file
    (capped by RLIMIT_FSIZE), so a printing loop cannot fill this process's memory."""
    with tempfile.TemporaryDirectory(prefix="mesh-eval-") as folder:
        for name, text in files.items():
            with open(os.path.join(folder, name), "w", encoding="utf-8") as handle:
                handle.write(text)
        log = os.path.join(folder, "output.txt")
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-I", "-B", entry],
                cwd=folder,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                preexec_fn=_limit,
                start_new_session=True,  # its own process group: the kill reaches its children
            )
            try:
                returncode: int | None = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                returncode = None
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        with open(log, "rb") as handle:
            handle.seek(max(0, os.path.getsize(log) - 2000))
            text = handle.read().decode("utf-8", "replace")
        return RunResult(returncode == 0, returncode, text)

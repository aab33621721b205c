"""Run untrusted Python (a model's answer plus unit tests) in a separate, limited process.

Isolation here is best effort, enough for scoring model output, not a security boundary for
hostile code: `python -I` (no user site, no PYTHON* variables, no script dir on sys.path), an
empty environment (no inherited secrets), a fresh temporary working directory, a wall-clock
timeout that kills the whole process group, rlimits on memory, CPU, file size, open files and
processes, and a seccomp filter that stops the code starting processes at all (threads still
work). RLIMIT_NPROC counts every process and thread of the user and does nothing for root, which
is why the seccomp filter is there; where seccomp is unavailable (not Linux on x86-64 or arm64,
or a kernel or container that refuses it) the child runs without it. The code still has network
access, runs as the caller's user (as root it could raise its own rlimits or read the parent's
memory), and code set on cheating can still find the pass nonce by walking the runner's frames
or memory (`sys._getframe`, `ctypes`); run untrusted suites inside a container when that
matters. The tests run in the answer's namespace and trust what it returns: an object whose
`__eq__` is always true passes `assert f(2) == 4`, so suites meant for adversarial answers
should check types too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import secrets
import signal
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass

TIMEOUT_SECONDS = 5.0
MEMORY_BYTES = 512 * 1024 * 1024
FILE_BYTES = 1024 * 1024
PROCESSES = 32  # RLIMIT_NPROC: per user, so it caps the whole user (root is exempt)
STDIN_BYTES = 4096  # at most what a pipe holds without a reader, so writing it never blocks


@dataclass(frozen=True)
class RunResult:
    passed: bool
    returncode: int | None  # None: killed at the timeout
    output: str


# -- a seccomp filter: no new processes ------------------------------------------------------------
# Classic BPF over `struct seccomp_data` (nr at offset 0, arch at 4, args[0] at 16). fork and
# vfork fail with EPERM; clone fails too unless it makes a thread (CLONE_THREAD); clone3, whose
# flags sit behind a pointer a filter cannot read, fails with ENOSYS, so glibc falls back to clone
# for threads. Syscalls of another ABI (x32, i386 `int 0x80`) fail with EPERM.
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000
_EPERM, _ENOSYS, _CLONE_THREAD, _CLONE3 = 1, 38, 0x00010000, 435
# machine: (AUDIT_ARCH_*, fork-like syscalls refused outright, clone, lowest syscall of another ABI)
_ABIS: dict[str, tuple[int, tuple[int, ...], int, int | None]] = {
    "x86_64": (0xC000003E, (57, 58), 56, 0x40000000),  # fork, vfork; clone; x32 syscalls
    "aarch64": (0xC00000B7, (), 220, None),
}


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def _no_fork_filter() -> bytes | None:
    """The filter's instructions for this machine, or None where it has none."""
    abi = _ABIS.get(os.uname().machine)
    if abi is None or sys.byteorder != "little" or sys.maxsize < 2**32:
        return None
    arch, refused, clone, other_abi = abi
    code: list[tuple[str | None, int, int, str | None, str | None]] = [  # label, op, k, jt, jf
        (None, _LD_ABS, 4, None, None),
        (None, _JEQ, arch, None, "deny"),
        (None, _LD_ABS, 0, None, None),
    ]
    if other_abi is not None:
        code.append((None, _JGE, other_abi, "deny", None))
    code += [(None, _JEQ, nr, "deny", None) for nr in refused]
    code += [
        (None, _JEQ, _CLONE3, "nosys", None),
        (None, _JEQ, clone, None, "allow"),
        (None, _LD_ABS, 16, None, None),
        (None, _JSET, _CLONE_THREAD, "allow", "deny"),
        ("allow", _RET, _ALLOW, None, None),
        ("deny", _RET, _ERRNO | _EPERM, None, None),
        ("nosys", _RET, _ERRNO | _ENOSYS, None, None),
    ]
    at = {label: index for index, (label, *_) in enumerate(code) if label}

    def offset(index: int, label: str | None) -> int:
        return 0 if label is None else at[label] - index - 1

    return b"".join(
        struct.pack("=HBBI", op, offset(i, jt), offset(i, jf), k)
        for i, (_, op, k, jt, jf) in enumerate(code)
    )


_FILTER = _no_fork_filter()
_LIBC = ctypes.CDLL(None, use_errno=True) if _FILTER is not None else None
_PR_SET_SECCOMP, _PR_SET_NO_NEW_PRIVS, _SECCOMP_MODE_FILTER = 22, 38, 2


def _forbid_new_processes() -> None:  # in the child; best effort, see the module docstring
    if _LIBC is None or _FILTER is None:
        return
    program = _SockFprog(len(_FILTER) // 8, _FILTER)
    ulong = ctypes.c_ulong
    if _LIBC.prctl(_PR_SET_NO_NEW_PRIVS, ulong(1), ulong(0), ulong(0), ulong(0)) == 0:
        _LIBC.prctl(
            _PR_SET_SECCOMP, ulong(_SECCOMP_MODE_FILTER), ctypes.byref(program), ulong(0), ulong(0)
        )


def _cap(kind: int, value: int) -> None:
    hard = resource.getrlimit(kind)[1]
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(kind, (value, value))


def _limit() -> None:  # runs in the child between fork and exec
    _cap(resource.RLIMIT_AS, MEMORY_BYTES)
    _cap(resource.RLIMIT_CPU, int(TIMEOUT_SECONDS) + 1)
    _cap(resource.RLIMIT_FSIZE, FILE_BYTES)
    _cap(resource.RLIMIT_NOFILE, 64)
    _cap(resource.RLIMIT_CORE, 0)
    # Checked at fork, not at exec: the child itself always starts, however many processes
    # the user already runs; past the limit it can start no process or thread of its own.
    _cap(resource.RLIMIT_NPROC, PROCESSES)
    _forbid_new_processes()


# The runner reads the pass nonce from stdin (a pipe the parent filled and closed) and the tests
# from tests.py, binds every callable it needs afterwards, and only then imports the answer as a
# module (so its `if __name__ == "__main__":` block stays quiet). It runs the tests in the
# answer's namespace and writes the nonce last, so an answer that exits early (`sys.exit(0)`) or
# rebinds builtins (`builtins.exec = ...`) never gets it printed, and neither argv, the
# environment nor stdin holds it once the answer runs. The nonce stays in `main`'s locals.
RUNNER = """\
import os, sys


def main():
    run, namespace, write = exec, vars, os.write  # the answer may rebind builtins, not these
    settrace, setprofile = sys.settrace, sys.setprofile
    nonce = b""
    while chunk := os.read(0, 256):
        nonce += chunk
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    with open("tests.py", encoding="utf-8") as handle:
        tests = compile(handle.read(), "tests.py", "exec", dont_inherit=True)
    sys.path.insert(0, os.getcwd())
    # One line, so no 'line' trace event falls between the import and switching tracing off:
    # a trace function the answer set on this frame cannot jump past the tests.
    import solution; settrace(None); setprofile(None)
    run(tests, namespace(solution))
    write(1, b"\\n" + nonce + b"\\n")


main()
"""


def run_tests(code: str, tests: str, *, timeout: float = TIMEOUT_SECONDS) -> RunResult:
    """Run the asserts in `tests` against `code`; passed when every assert held."""
    nonce = secrets.token_hex(16)
    files = {"solution.py": code, "tests.py": tests, "runner.py": RUNNER}
    result = run_python_files(files, "runner.py", timeout=timeout, stdin=nonce.encode())
    passed = result.passed and result.output.rstrip().endswith(nonce)
    return RunResult(passed, result.returncode, result.output.replace(nonce, "<nonce>"))


def run_python(source: str, *, timeout: float = TIMEOUT_SECONDS) -> RunResult:
    """Run `source` as a script; passed when it exits 0 within `timeout` seconds."""
    return run_python_files({"main.py": source}, "main.py", timeout=timeout)


def run_python_files(
    files: dict[str, str],
    entry: str,
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    stdin: bytes = b"",
) -> RunResult:
    """Write `files` into a fresh temporary folder and run `entry` there, with `stdin` (at most
    STDIN_BYTES) on a pipe that then ends. Output goes to a file (capped by RLIMIT_FSIZE), so a
    printing loop cannot fill this process's memory."""
    if len(stdin) > STDIN_BYTES:
        raise ValueError(f"stdin holds at most {STDIN_BYTES} bytes, not {len(stdin)}")
    with tempfile.TemporaryDirectory(prefix="mesh-eval-") as folder:
        for name, text in files.items():
            with open(os.path.join(folder, name), "w", encoding="utf-8") as handle:
                handle.write(text)
        log = os.path.join(folder, "output.txt")
        reader, writer = os.pipe()
        try:
            os.write(writer, stdin)  # fits the pipe's buffer: no reader needed yet
        finally:
            os.close(writer)
        try:
            with open(log, "wb") as output:
                process = subprocess.Popen(
                    [sys.executable, "-I", "-B", entry],
                    cwd=folder,
                    env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **(env or {})},
                    stdin=reader,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_limit,
                    start_new_session=True,  # its own process group: the kill reaches children
                )
        finally:
            os.close(reader)
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

"""`running_mesh` retries a port another process took between choosing and binding it, and
nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh import launcher


class FakeMesh:
    def __init__(self, log: str) -> None:
        self.log, self.stopped = log, False

    def wait_ready(self, timeout_s: float) -> None:
        if self.log:
            raise RuntimeError(f"mesh up exited with 1:\n{self.log}")

    def log_tail(self, lines: int = 60) -> str:
        return self.log

    def stop(self, timeout_s: float = 120) -> int:
        self.stopped = True
        return 0


def launches(monkeypatch: pytest.MonkeyPatch, logs: list[str]) -> list[FakeMesh]:
    made: list[FakeMesh] = []

    def launch(home: Path, env: object, ui: bool, *where: object) -> FakeMesh:
        made.append(FakeMesh(logs[len(made)]))
        return made[-1]

    monkeypatch.setattr(launcher, "_launch", launch)
    return made


def test_a_port_taken_meanwhile_is_retried(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    taken = "RuntimeError: Failed to bind to address '127.0.0.1:33165'."
    made = launches(monkeypatch, [taken, ""])
    with launcher.running_mesh(tmp_path) as mesh:
        assert mesh is made[1]
    assert made[0].stopped and made[1].stopped


def test_other_failures_are_not_retried(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    made = launches(monkeypatch, ["ImportError: no module", ""])
    with pytest.raises(RuntimeError, match="no module"), launcher.running_mesh(tmp_path):
        pass
    assert len(made) == 1


def test_retries_are_bounded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    taken = "Failed to bind to address"
    made = launches(monkeypatch, [taken] * launcher.BIND_ATTEMPTS)
    with pytest.raises(RuntimeError, match="bind"), launcher.running_mesh(tmp_path):
        pass
    assert len(made) == launcher.BIND_ATTEMPTS

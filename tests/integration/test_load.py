"""Under load, every request hears back: an answer, a clean refusal or a clean error, never
silence. A small, bounded run of `benchmarks/load.py` against the shared mesh (about a minute
on 2 cores, 3 at worst): mixed streaming and non-streaming chat across the specialists and the
router, then one client bursting above its fair share on one specialist. The shared mesh has
no API keys, so every request here is one client (127.0.0.1): 12 at once may exceed the fair
share (8 per specialist) now and then, which is a refusal, not a failure.
"""

from __future__ import annotations

import pytest

from benchmarks.load import run_load, run_overload
from tests.integration.conftest import RunningMesh

pytestmark = pytest.mark.slow

REQUEST_TIMEOUT_S = 60  # max_tokens is 8-24: a request this late is a hang, not a slow answer
DEADLINE_S = 90  # per run; what is still open then counts as lost


def test_every_request_under_load_is_answered_refused_or_failed_cleanly(
    mesh: RunningMesh,
) -> None:
    summary = run_load(
        mesh.base_url, n=40, concurrency=12, timeout_s=REQUEST_TIMEOUT_S, deadline_s=DEADLINE_S
    )

    assert summary["lost"] == 0, summary["not_answered"]
    assert summary["sent"] == 40 and summary["not_sent"] == 0
    assert summary["sent"] == summary["answered"] + summary["refused"] + summary["failed_cleanly"]
    assert summary["answered"] >= 20, summary
    assert set(summary["by_specialist"]) == {"general", "code", "writing", "math", "mesh"}
    assert summary["streamed"] and summary["streamed"] < 40, "both kinds were sent"


def test_a_client_over_its_fair_share_gets_429_with_retry_after_and_loses_nothing(
    mesh: RunningMesh,
) -> None:
    """24 requests at once from one client (this address: the shared mesh has no API keys) on
    one specialist: 8 (the fair share) get in, the rest are told when to come back."""
    summary = run_overload(
        mesh.base_url,
        n=24,
        concurrency=24,
        model="general",
        timeout_s=REQUEST_TIMEOUT_S,
        deadline_s=DEADLINE_S,
    )

    assert summary["lost"] == 0, summary["not_answered"]
    assert summary["sent"] == summary["answered"] + summary["refused"] + summary["failed_cleanly"]
    assert summary["refused"] > 0, summary
    assert summary["statuses"].get("429", 0) > 0, summary
    assert summary["refused_with_retry_after"] == summary["refused"]
    assert summary["answered"] > 0, "the client's fair share was still served"

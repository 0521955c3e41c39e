"""A short soak run (the long one: `.venv/bin/python -m tests.runners.soak --seconds 600`)."""

from __future__ import annotations

import pytest

from tests.runners.soak import SoakConfig, run_soak

pytestmark = pytest.mark.slow


async def test_short_soak_loses_and_duplicates_nothing() -> None:
    report = await run_soak(
        SoakConfig(seconds=15, clients=6, users=3, workers=2, restart_every_s=6, kill_every_s=4, seed=7)
    )
    assert report.postgres_restarts >= 1
    assert report.worker_kills >= 1
    assert report.acknowledged >= 50
    assert report.unacknowledged_at_end == 0
    assert report.lost == []
    assert report.duplicated == []
    assert report.seq_gaps == []
    assert report.truncated_complete == []
    assert report.acknowledged_reply_not_complete == []

"""A short soak run, connected directly and through pgbouncer in transaction mode (the long
one: `.venv/bin/python -m tests.runners.soak --seconds 600 [--pooler]`)."""

from __future__ import annotations

import pytest

from tests.runners.soak import SoakConfig, run_soak

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("pooler", [False, True], ids=["direct", "pooler"])
async def test_short_soak_loses_duplicates_and_cuts_nothing(pooler: bool) -> None:
    report = await run_soak(
        SoakConfig(
            seconds=16,
            clients=8,
            users=3,
            servers=2,
            workers=2,
            pooler=pooler,
            restart_every_s=7,
            kill_every_s=4,
            seed=7,
        )
    )
    assert report.violations() == {}
    assert report.postgres_restarts >= 1
    assert report.worker_kills >= 1
    assert report.acknowledged >= 40
    assert report.unacknowledged_at_end == 0
    # Each action of the mix was carried through at least once, on another server.
    assert report.resumes.get("done_with_text_resumed", 0) >= 1, report.resumes
    assert report.stops.get("answered_stopped", 0) >= 1, report.stops
    assert report.regenerations.get("acknowledged", 0) >= 1, report.regenerations

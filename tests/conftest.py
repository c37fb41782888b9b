"""Fixtures shared by several test modules."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import responses
from websockets.asyncio import connection as websocket_connection

from tests import reliability as reliability_report
from tests.fault_injection import FaultSchedule
from tests.misp_stand_in import MispStandIn, point_settings_at_stand_in, served_stand_in

SAMPLES = Path(__file__).resolve().parent.parent / "misp_ndr" / "samples"

# As the CLI does: the test server's telemetry heartbeat only races its own SQLite start-up.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# websockets draws each ping's payload from the global `random`, in the thread of Prefect's
# events client (open from the first flow run on). Hypothesis warns, a deprecation and so
# one day an error, when the global state moves under one of its draws: the pings get a
# generator of their own.
websocket_connection.random = random.Random()


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's own MISP_NDR_* variables or `.env`."""
    for name in list(os.environ):
        if name.startswith("MISP_NDR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server for the whole session (about 15 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def schedule() -> FaultSchedule:
    """The faults the `misp` / `served` stand-ins play (empty: a healthy MISP)."""
    return FaultSchedule()


@pytest.fixture
def misp(monkeypatch: pytest.MonkeyPatch, schedule: FaultSchedule) -> Iterator[MispStandIn]:
    """A stateful MISP behind `responses` playing `schedule`; settings point at it with one
    quick per-request retry. Modules override it to add their data (or their own MISP)."""
    point_settings_at_stand_in(monkeypatch, retries=1)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield MispStandIn(rsps, faults=schedule)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, schedule: FaultSchedule) -> Iterator[MispStandIn]:
    """The same MISP over real HTTP on loopback, where timeouts, resets and cut bodies
    happen on the wire (urllib3's retries see them); clients wait 0.5 s for an answer."""
    with served_stand_in(schedule) as stand_in:
        point_settings_at_stand_in(monkeypatch, retries=1, url=stand_in.url)
        monkeypatch.setenv("MISP_NDR_MISP__TIMEOUT", "0.5")
        yield stand_in


@pytest.fixture
def retry_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """urllib3's retry sleeps (Retry-After, backoff), recorded instead of slept: its own
    module's `time` only, so nothing else stops sleeping."""
    import urllib3.util.retry

    slept: list[float] = []
    monkeypatch.setattr(urllib3.util.retry, "time", SimpleNamespace(sleep=slept.append,
                                                                    time=time.time))
    return slept


@pytest.fixture
def reliability(request: pytest.FixtureRequest) -> reliability_report.Recorder:
    """Records a fault-injection outcome for docs/reliability.md, and asserts it is clean."""
    rows = request.session.stash.setdefault(reliability_report.ROWS_KEY, [])
    return reliability_report.Recorder(rows, request.node.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reliability_report.write_report(session, exitstatus)

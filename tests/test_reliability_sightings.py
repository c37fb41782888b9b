"""The sightings job under injected MISP faults: each planned sighting reaches MISP once.

A sighting is not idempotent (MISP gives each one its own UUID), so what a fault must not
do here is make the job send one twice: a write MISP stored but whose answer was lost
stays `pending` in the ledger and is looked up (`/sightings/restSearch`) before anything
is sent again. Each case injects one fault at one point of a run: its first request (a
sending thread's PyMISP connection), the first, middle or last `/sightings/add`, or the
lookup of an uncertain sighting. The job runs until it reports success, rerun after each
failure as a schedule would; then MISP's sightings are counted, (attribute, source, time)
each exactly once. After every
run the ledger and the result are held to the truth: a sighting recorded as sent is in
MISP, a run's `sent` is what MISP gained during it, and a run fails with our error types.

Behind `responses`, statuses pass through the product's retry policies (a 429 is retried
even for a sighting; a 5xx is not, MISP may have stored it), exceptions reach the next
run directly; over loopback HTTP the transport faults meet urllib3 for real.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Hashable
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import flows.sightings
from flows.sightings import SightingSource, submit_sightings
from misp_ndr.cli import app
from misp_ndr.config import Settings, load_settings
from misp_ndr.errors import MispNdrError
from tasks.sighting_delivery import LEDGER_FILE, SightingDelivery, deliver_sightings_to_misp
from tasks.sighting_hits import normalize_hits
from tasks.sighting_ledger import PENDING, SENT, SightingLedger
from tasks.sighting_plan import plan_sightings
from tests.conftest import SAMPLES
from tests.fault_injection import (
    READ_FAULTS,
    RETRY_AFTER_SECONDS,
    Fault,
    FaultSchedule,
    Runs,
    absorbed_by_request_retry,
    rerun_until_success,
)
from tests.misp_stand_in import MispStandIn
from tests.reliability import Recorder

BY_UUID = {  # IDS attributes of the bundled MISP feed, sighted by UUID
    "e9df804d-50c8-5644-ba64-6657a2889cb4": "45.155.205.233",
    "d363c9bc-4c6c-5f18-8be9-2e61c68bcade": "evil-updates.example",
    "2acb469a-2e94-5146-b06b-a0b7257688a4": "44d88612fea8a8f36de82e1278abb02f",
}
BY_VALUE = {  # sighted by value: the only IDS attribute holding it
    "91.198.174.192": "cf829fd3-d6b5-5cd1-9be6-29540d819c13",
    "2a0b:4340:5e::15": "c03b4269-e8aa-521e-aa39-260ca1933aa5",
}
SENSORS = ("suricata/edge-ids-1", "suricata/branch-ids-2")
HOURS = ("2026-11-20T08", "2026-11-20T09")
SIGHTINGS = len(BY_UUID) * len(SENSORS) * len(HOURS) + len(BY_VALUE) * len(HOURS)
POINTS: dict[str, tuple[str, int]] = {
    "the run's first request": ("servers/getVersion", 1),  # a sending thread's
    "the first sighting": ("sightings/add", 1),
    "the middle sighting": ("sightings/add", SIGHTINGS // 2),
    "the last sighting": ("sightings/add", SIGHTINGS),
    "the lookup of an uncertain sighting": ("sightings/restSearch", 1),
}
LOOKUP = "the lookup of an uncertain sighting"
UNCERTAIN = ("sightings/add", 3)  # stored, answer lost: what makes the next run look up
READS = {"servers/getVersion", "sightings/restSearch"}
RESPONSES_CASES = [(fault, point) for point, (endpoint, _) in POINTS.items()
                   for fault in (READ_FAULTS if endpoint in READS else Fault)]
LOOPBACK_FAULTS = [fault for fault in Fault if fault.transport] + [Fault.HTTP_429]
LOOPBACK_CASES = [(fault, point) for point in list(POINTS)[1:] for fault in LOOPBACK_FAULTS]


def case_id(fault: Fault, point: str) -> str:
    return f"{fault.name}@{POINTS[point][0]}#{POINTS[point][1]}"


def scenario(fault: Fault, point: str, transport: str) -> str:
    endpoint, number = POINTS[point]
    setup = " after a lost answer" if point == LOOKUP else ""
    return (f"{fault} on {point} ({endpoint} #{number}{setup}, {SIGHTINGS} sightings), "
            f"{transport}")


def publish_sample_feed(misp: MispStandIn) -> None:
    for path in sorted((SAMPLES / "misp-feed").glob("*-*.json")):
        event = json.loads(path.read_text())["Event"]
        misp.publish_event(event["uuid"], event["info"], event["date"], 1795000000,
                           event["Attribute"], tuple(tag["name"] for tag in event.get("Tag", [])))


def sample_plan() -> pd.DataFrame:
    """Two hits per sighting (one window keeps the earliest)."""
    rows = [(f"{hour}:{minute}:00Z", sensor, value, uuid)
            for hour in HOURS for minute in ("05", "35")
            for sensor in SENSORS for uuid, value in BY_UUID.items()]
    rows += [(f"{hour}:{minute}:00Z", SENSORS[0], value, None)
             for hour in HOURS for minute in ("10", "40") for value in BY_VALUE]
    frame = pd.DataFrame(rows, columns=["time", "sensor", "value", "attribute_uuid"])
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    frame["origin"] = [f"case line {n}" for n in range(1, len(rows) + 1)]
    plan = plan_sightings(normalize_hits(frame), None, 60, "{sensor}").sightings
    assert len(plan) == SIGHTINGS
    return plan


def expected_by_key(plan: pd.DataFrame) -> dict[str, Hashable]:
    """Ledger key -> the (attribute uuid, source, time) MISP must hold once for it."""
    return {row.key: (row.attribute_uuid if pd.notna(row.attribute_uuid)
                      else BY_VALUE[row.value], row.source, str(row.timestamp))
            for row in plan.itertuples(index=False)}


def reached(misp: MispStandIn) -> list[Hashable]:
    return [(s["attribute_uuid"], s["source"], s["date_sighting"]) for s in misp.sightings]


class LedgerAudit:
    """After each run: the ledger and the run's result against what MISP holds."""

    def __init__(self, misp: MispStandIn, plan: pd.DataFrame, settings: Settings) -> None:
        self.misp, self.settings = misp, settings
        self.expected = expected_by_key(plan)
        self.held_before = 0
        self.sent_before = 0

    def states(self) -> dict[str, str]:
        with SightingLedger(self.settings.state_dir / LEDGER_FILE) as ledger:
            return ledger.states(f"misp:{self.settings.misp.url}", self.expected)

    def __call__(self, outcome: SightingDelivery | Exception) -> None:
        held = Counter(reached(self.misp))
        states = self.states()
        sent = [key for key, state in states.items() if state == SENT]
        missing = [key for key in sent if held[self.expected[key]] == 0]
        assert missing == [], "the ledger says sent, MISP does not have them"
        forgotten = [key for key, sighting in self.expected.items()
                     if held[sighting] and states.get(key) not in (SENT, PENDING)]
        assert forgotten == [], "in MISP, yet the ledger would let them be sent again"
        if isinstance(outcome, Exception):
            assert isinstance(outcome, MispNdrError), f"failed with {outcome!r}"
        else:
            assert outcome.sent == len(self.misp.sightings) - self.held_before, (
                "a run's `sent` is what MISP gained during it")
            assert outcome.duplicates == self.sent_before
            assert outcome.unknown == []
            assert (outcome.sent + outcome.confirmed + outcome.duplicates
                    + len(outcome.failures)) == len(self.expected)
            if not outcome.failures:
                assert sorted(sent) == sorted(self.expected), "not all recorded as sent"
        self.held_before, self.sent_before = len(self.misp.sightings), len(sent)


def submit_until_success(misp: MispStandIn, plan: pd.DataFrame) -> Runs[SightingDelivery]:
    settings = load_settings()
    return rerun_until_success(lambda: deliver_sightings_to_misp(plan, settings),
                               lambda result: not result.failures,
                               after_each=LedgerAudit(misp, plan, settings))


def runs_expected(fault: Fault, point: str, loopback: bool) -> int:
    endpoint = POINTS[point][0]
    absorbed = absorbed_by_request_retry(fault, write_once=endpoint == "sightings/add",
                                         loopback=loopback)
    return (1 if absorbed else 2) + (point == LOOKUP)


def play_case(misp: MispStandIn, schedule: FaultSchedule, reliability: Recorder,
              fault: Fault, point: str, transport: str) -> None:
    schedule.at(*POINTS[point], fault=fault)
    if point == LOOKUP:
        schedule.at(*UNCERTAIN, fault=Fault.ACCEPTED_502)
    plan = sample_plan()
    runs = submit_until_success(misp, plan)
    assert schedule.unfired() == [], "the fault never happened"
    reliability.check("sightings", scenario(fault, point, transport),
                      list(expected_by_key(plan).values()), reached(misp))
    assert len(runs.outcomes) == runs_expected(fault, point, transport != "behind responses"), (
        runs.outcomes)
    if point == LOOKUP:
        assert sum(outcome.confirmed for outcome in runs.outcomes
                   if isinstance(outcome, SightingDelivery)) >= 1


# --- the matrix behind `responses` ----------------------------------------------------------


@pytest.fixture
def misp(misp: MispStandIn) -> MispStandIn:
    publish_sample_feed(misp)
    return misp


@pytest.mark.parametrize(("fault", "point"), RESPONSES_CASES,
                         ids=[case_id(*case) for case in RESPONSES_CASES])
def test_one_fault_loses_and_repeats_no_sighting(
    misp: MispStandIn, schedule: FaultSchedule, reliability: Recorder, fault: Fault,
    point: str,
) -> None:
    play_case(misp, schedule, reliability, fault, point, "behind responses")


# --- transport faults over real HTTP ----------------------------------------------------------


@pytest.fixture
def served(served: MispStandIn) -> MispStandIn:
    publish_sample_feed(served)
    return served


@pytest.mark.parametrize(("fault", "point"), LOOPBACK_CASES,
                         ids=[case_id(*case) for case in LOOPBACK_CASES])
def test_transport_faults_on_the_wire_never_resend_a_sighting(
    served: MispStandIn, schedule: FaultSchedule, reliability: Recorder,
    retry_sleeps: list[float], fault: Fault, point: str,
) -> None:
    play_case(served, schedule, reliability, fault, point, "over loopback HTTP")
    if fault is Fault.HTTP_429:
        assert RETRY_AFTER_SECONDS in retry_sleeps  # honoured, not just retried


# --- the flow and the command line ------------------------------------------------------------


def write_hits_csv(path: Path) -> list[Hashable]:
    """A CSV of hits by value, and the sightings MISP must end up with."""
    lines = ["value,time,sensor"]
    expected: list[Hashable] = []
    for hour, stamp in zip(HOURS, ("1795161900", "1795165500"), strict=True):
        for value, uuid in BY_VALUE.items():
            lines += [f"{value},{hour}:05:00Z,proxy-1", f"{value},{hour}:50:00Z,proxy-1"]
            expected.append((uuid, "proxy-1", stamp))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return expected


@pytest.fixture
def quick_task_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = flows.sightings.deliver_sightings_to_misp_task.with_options(retry_delay_seconds=0)
    monkeypatch.setattr(flows.sightings, "deliver_sightings_to_misp_task", fast)


@pytest.mark.usefixtures("prefect_harness", "quick_task_retries")
@pytest.mark.parametrize("fault", [Fault.TRUNCATED_JSON, Fault.NON_JSON, Fault.ACCEPTED_TIMEOUT],
                         ids=lambda fault: fault.name)
def test_the_flow_looks_up_an_uncertain_sighting_before_its_retry(
    misp: MispStandIn, schedule: FaultSchedule, reliability: Recorder, tmp_path: Path,
    fault: Fault,
) -> None:
    """The second sighting's answer is spoilt: the delivery task fails, Prefect retries
    it, the retry finds what MISP stored and sends only the rest; one flow run."""
    schedule.at("sightings/add", 2, fault=fault)
    expected = write_hits_csv(tmp_path / "hits.csv")
    report = submit_sightings(source=SightingSource.CSV, input_path=str(tmp_path / "hits.csv"))
    assert schedule.unfired() == []
    assert report.succeeded and report.failures == []
    assert report.sent + report.confirmed + report.duplicates == report.sightings == len(
        expected)
    reliability.check("sightings", f"{fault} on sightings/add #2 of the sightings flow "
                      f"({len(expected)} sightings by value)", expected, reached(misp))


@pytest.mark.usefixtures("prefect_harness", "quick_task_retries")
def test_cli_run_failing_on_lost_answers_is_rerun_and_adds_each_sighting_once(
    misp: MispStandIn, schedule: FaultSchedule, reliability: Recorder, tmp_path: Path,
) -> None:
    """Every answer is lost for a whole run (MISP stores, the client sees a reset) and
    the lookups fail too, so the task retries cannot settle it: exit 1; the rerun finds
    them all in MISP and sends nothing twice."""
    expected = write_hits_csv(tmp_path / "hits.csv")
    schedule.down("sightings/add", Fault.ACCEPTED_RESET)
    schedule.down("sightings/restSearch", Fault.HTTP_503)
    command = ["sightings", "--source", "csv", "--input", str(tmp_path / "hits.csv")]
    first = CliRunner().invoke(app, command)
    assert first.exit_code == 1, first.output
    assert "delivery aborted" in first.output
    schedule.up("sightings/add")
    schedule.up("sightings/restSearch")
    second = CliRunner().invoke(app, command)
    assert second.exit_code == 0, second.output
    assert "found already added after an interrupted run" in second.output
    assert len(misp.sighting_requests) == len(expected)  # the rerun sent none again
    reliability.check("sightings", "every /sightings/add stored, then reset, for a whole CLI "
                      f"run ({len(expected)} sightings by value), then a rerun", expected,
                      reached(misp))

"""The export under injected MISP faults: every event, attribute and tag reaches MISP once.

Each case injects one fault (`tests.fault_injection.Fault`) at one point of a run: PyMISP's
first request (and a sending thread's), the tag lookup, the tag creation, the first, middle
or last event, the update of an event MISP holds already. The job runs, and runs again
after a failure as a schedule would, until it reports success; then MISP's content is
counted (`reliability.check`). After every run the ledger is held to the truth: an event
it records as exported is in MISP, whole; an event MISP took and answered is recorded; a
run that succeeds claims as created or updated exactly the events it had left to send; a
run that fails does so with one of our error types (the ones Prefect's retry tells apart).

Behind `responses`, statuses go through the product's urllib3 retry policy, but exceptions
(timeouts, resets, cut transfers) reach the task-level retry directly; over loopback HTTP
the same transport faults hit urllib3's own read retries. Each case also asserts which
layer got past its fault: the request retry (one run) or the job's next run (two).
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import flows.export
from flows.export import ExportSource, export_detections
from misp_ndr.cli import app
from misp_ndr.config import ExportSettings, Settings, load_settings
from misp_ndr.errors import MispNdrError, TransientError
from tasks.detections import normalize_detections
from tasks.export_delivery import DeliveryResult, deliver_to_misp, destination_name
from tasks.export_ledger import ExportLedger
from tasks.flowmon_batch import read_custom_script_batch
from tasks.indicators import select_export_indicators
from tasks.misp_events import EventDraft, build_event_drafts
from tasks.user_ip_filters import resolve_ip_filters
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

EVENTS = 10
TAG = "soc:ndr"
METHODS = ("SCANS", "DOS", "BLACKLIST")  # with TAG: four tags to look up and create
POINTS: dict[str, tuple[str, int]] = {  # where in a run: (endpoint, n-th request)
    "PyMISP's first request": ("servers/getVersion", 1),
    # 1: the tag client's (PyMISP caches the version); 2: the first sending thread's. Not 3,
    # the second thread's: ten quick sends can all go through one thread (a CI flake).
    "a sending thread's first request": ("servers/getVersion", 2),
    "the tag lookup": ("tags/search", 1),
    "the tag creation": ("tags/add", 1),
    "the first event": ("events/add", 1),
    "the middle event": ("events/add", EVENTS // 2),
    "the last event": ("events/add", EVENTS),
    "the update of an event MISP already holds": ("events/edit", 1),  # its ledger lost
}
READS = {"servers/getVersion", "tags/search"}
RESPONSES_CASES = [(fault, point) for point, (endpoint, _) in POINTS.items()
                   for fault in (READ_FAULTS if endpoint in READS else Fault)]
LOOPBACK_FAULTS = [fault for fault in Fault if fault.transport] + [Fault.HTTP_429]
LOOPBACK_CASES = [(fault, point) for point in list(POINTS)[3:-1] for fault in LOOPBACK_FAULTS]


def case_id(fault: Fault, point: str) -> str:
    return f"{fault.name}@{POINTS[point][0]}#{POINTS[point][1]}"


def scenario(fault: Fault, point: str, transport: str) -> str:
    endpoint, number = POINTS[point]
    return f"{fault} on {point} ({endpoint} #{number}, {EVENTS} events), {transport}"


def sample_drafts() -> list[EventDraft]:
    """EVENTS detections of three methods, three attributes each."""
    ids = [str(900 + n) for n in range(EVENTS)]
    detections = normalize_detections(pd.DataFrame({
        "detection_id": ids, "source_system": "flowmon",
        "time": pd.to_datetime([f"2026-11-20 08:{n:02d}:00" for n in range(EVENTS)], utc=True),
        "method": [METHODS[n % 3] for n in range(EVENTS)],
        "method_description": "ADS method", "priority": "high", "detail": "reliability case",
    }))
    rows = [(detection, kind, value) for n, detection in enumerate(ids) for kind, value in (
        ("ip-src", f"45.155.205.{n + 1}"), ("ip-dst", f"185.220.101.{n + 1}"),
        ("domain", f"c2-{n}.evil-updates.example"))]
    indicators = pd.DataFrame([("flowmon", *row) for row in rows], columns=[
        "source_system", "detection_id", "attribute_type", "value"]).astype("string")
    return build_event_drafts(detections, indicators, ExportSettings(tag=TAG))


def expected_items(drafts: list[EventDraft]) -> list[Hashable]:
    return [item for draft in drafts for item in (
        ("event", draft.uuid),
        *(("attribute", draft.uuid, a["type"], a["value"]) for a in draft.event["Attribute"]),
        *(("tag", draft.uuid, tag) for tag in draft.tags))]


def reached_items(misp: MispStandIn) -> list[Hashable]:
    """Everything MISP holds, each copy counted."""
    return [item for uuid, event in misp.events.items() for item in (
        ("event", uuid),
        *(("attribute", uuid, a["type"], a["value"]) for a in event["Attribute"]),
        *(("tag", uuid, tag["name"]) for tag in event["Tag"]))]


def in_misp(misp: MispStandIn, draft: EventDraft) -> bool:
    stored = misp.events.get(draft.uuid)
    if stored is None:
        return False
    attributes = {a["uuid"] for a in stored["Attribute"]}
    tags = {tag["name"] for tag in stored["Tag"]}
    return ({a["uuid"] for a in draft.event["Attribute"]} <= attributes
            and set(draft.tags) <= tags)


class LedgerAudit:
    """After each run: the ledger and the run's result against what MISP holds."""

    def __init__(self, misp: MispStandIn, drafts: list[EventDraft], settings: Settings,
                 schedule: FaultSchedule) -> None:
        self.misp, self.settings, self.schedule = misp, settings, schedule
        self.drafts = {draft.uuid: draft for draft in drafts}
        self.recorded: dict[str, str] = {}  # the ledger after the previous run
        self.held_before = set(misp.events)  # put there by someone else

    def ledger(self) -> dict[str, str]:
        path = self.settings.state_dir / "export-ledger.sqlite"
        with ExportLedger(path) as ledger:
            return ledger.fingerprints(destination_name(self.settings, Path(), True),
                                       self.drafts)

    def __call__(self, outcome: DeliveryResult | Exception) -> None:
        recorded = self.ledger()
        for uuid, fingerprint in recorded.items():
            assert fingerprint == self.drafts[uuid].fingerprint
            assert in_misp(self.misp, self.drafts[uuid]), f"ledger says {uuid} was exported"
        unrecorded = set(self.misp.events) - set(recorded) - self.answers_lost() - (
            self.held_before)
        assert unrecorded == set(), "MISP took these and answered, the ledger missed them"
        if isinstance(outcome, Exception):
            assert isinstance(outcome, MispNdrError), f"failed with {outcome!r}"
        else:
            failed = {uuid for uuid, _ in outcome.failures}
            assert set(recorded) == set(self.drafts) - failed, "the ledger missed some"
            assert outcome.unchanged == len(self.recorded)
            assert outcome.created + outcome.updated == (
                len(self.drafts) - len(self.recorded) - len(failed))
        self.recorded = recorded

    def answers_lost(self) -> set[str]:
        """Events whose write MISP stored but whose answer a fault spoilt."""
        adds = [uuid for kind, uuid in self.misp.writes if kind == "add"]
        return {adds[fired.number - 1] for fired in self.schedule.fired
                if fired.endpoint == "events/add" and fired.fault.stores}


def export_until_success(misp: MispStandIn, drafts: list[EventDraft]) -> Runs[DeliveryResult]:
    settings = load_settings()
    return rerun_until_success(lambda: deliver_to_misp(drafts, settings),
                               lambda result: not result.failures,
                               after_each=LedgerAudit(misp, drafts, settings, misp.faults))


def runs_expected(fault: Fault, loopback: bool) -> int:
    return 1 if absorbed_by_request_retry(fault, write_once=False, loopback=loopback) else 2


def check_case(misp: MispStandIn, schedule: FaultSchedule, drafts: list[EventDraft],
               runs: Runs[DeliveryResult], reliability: Recorder, fault: Fault, point: str,
               transport: str) -> None:
    assert schedule.unfired() == [], "the fault never happened"
    reliability.check("export", scenario(fault, point, transport), expected_items(drafts),
                      reached_items(misp))
    assert len(runs.outcomes) == runs_expected(fault, transport != "behind responses"), (
        runs.outcomes)


# --- the matrix behind `responses` ----------------------------------------------------------


@pytest.mark.parametrize(("fault", "point"), RESPONSES_CASES,
                         ids=[case_id(*case) for case in RESPONSES_CASES])
def test_one_fault_loses_and_repeats_nothing(
    misp: MispStandIn, schedule: FaultSchedule, reliability: Recorder, fault: Fault,
    point: str,
) -> None:
    drafts = sample_drafts()
    if POINTS[point][0] == "events/edit":  # exported once, by a ledger since lost
        deliver_to_misp(drafts[:1], load_settings({"state_dir": "lost-state"}))
    schedule.at(*POINTS[point], fault=fault)
    runs = export_until_success(misp, drafts)
    check_case(misp, schedule, drafts, runs, reliability, fault, point, "behind responses")


# --- transport faults over real HTTP ----------------------------------------------------------


@pytest.mark.parametrize(("fault", "point"), LOOPBACK_CASES,
                         ids=[case_id(*case) for case in LOOPBACK_CASES])
def test_transport_faults_on_the_wire_are_retried_by_urllib3(
    served: MispStandIn, schedule: FaultSchedule, reliability: Recorder,
    retry_sleeps: list[float], fault: Fault, point: str,
) -> None:
    schedule.at(*POINTS[point], fault=fault)
    drafts = sample_drafts()
    runs = export_until_success(served, drafts)
    check_case(served, schedule, drafts, runs, reliability, fault, point,
               "over loopback HTTP")
    if fault is Fault.HTTP_429:
        assert RETRY_AFTER_SECONDS in retry_sleeps  # honoured, not just retried


def test_a_timeout_outlasting_the_retries_is_reported_as_a_timeout(
    served: MispStandIn, schedule: FaultSchedule, reliability: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """urllib3 hands an exhausted read retry to requests as a ConnectionError: the run
    must still say the request timed out, not that the connection failed."""
    monkeypatch.setenv("MISP_NDR_MISP__CONCURRENCY", "1")  # request 2 retries event 1
    schedule.at("events/add", 1, 2, fault=Fault.TIMEOUT)
    drafts = sample_drafts()
    runs = export_until_success(served, drafts)
    failure = runs.failed[0]
    assert isinstance(failure, TransientError) and "timed out" in str(failure), failure
    assert "connection failed" not in str(failure)
    reliability.check("export", f"timeout on the first event and on its retry ({EVENTS} "
                      "events), over loopback HTTP", expected_items(drafts),
                      reached_items(served))


# --- the flow and the command line ------------------------------------------------------------


def flowmon_sample_drafts() -> list[EventDraft]:
    """The events the export flow builds from the bundled Flowmon batch."""
    settings = load_settings()
    batch = read_custom_script_batch(SAMPLES / "flowmon-batch.tsv")
    ranges = resolve_ip_filters(settings.export.ip_filters, settings.flowmon,
                                settings.state_dir / "flowmon-filters.json")
    selection = select_export_indicators(batch.detections, ranges)
    return build_event_drafts(batch.detections, selection.kept, settings.export)


@pytest.fixture
def quick_task_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = flows.export.deliver_to_misp_task.with_options(retry_delay_seconds=0)
    monkeypatch.setattr(flows.export, "deliver_to_misp_task", fast)
    monkeypatch.setenv("MISP_NDR_EXPORT__TAG", TAG)


@pytest.mark.usefixtures("prefect_harness", "quick_task_retries")
@pytest.mark.parametrize(("fault", "endpoint", "number"), [
    (Fault.ACCEPTED_TIMEOUT, "events/add", 4),
    (Fault.TRUNCATED_JSON, "tags/add", 1),
    (Fault.CUT_TRANSFER, "events/add", 7),
], ids=["ACCEPTED_TIMEOUT-event-4", "TRUNCATED_JSON-tag", "CUT_TRANSFER-last-event"])
def test_the_flow_retries_its_delivery_task_past_a_fault(
    misp: MispStandIn, schedule: FaultSchedule, reliability: Recorder, fault: Fault,
    endpoint: str, number: int,
) -> None:
    """Behind `responses` these reach the task: Prefect's retry sends what is left, and
    the one flow run succeeds, its report counting every event once. (The report is the
    last task attempt's: events an earlier attempt delivered count as unchanged.)"""
    schedule.at(endpoint, number, fault=fault)
    drafts = flowmon_sample_drafts()
    report = export_detections(source=ExportSource.FLOWMON_STDIN,
                               input_path=str(SAMPLES / "flowmon-batch.tsv"))
    assert schedule.unfired() == []
    assert report.succeeded and report.failures == []
    assert report.created + report.updated + report.unchanged == report.events_built
    assert report.events_built == len(drafts)
    reliability.check("export", f"{fault} on {endpoint} #{number} of the export flow "
                      f"({len(drafts)} Flowmon sample events)", expected_items(drafts),
                      reached_items(misp))


def figure(output: str, label: str) -> int:
    match = re.search(rf"{re.escape(label)}\s+(\d+)", output)
    assert match, f"no {label!r} in {output}"
    return int(match.group(1))


@pytest.mark.usefixtures("prefect_harness", "quick_task_retries")
def test_cli_run_failing_on_an_outage_is_rerun_and_completes_once(
    misp: MispStandIn, schedule: FaultSchedule, reliability: Recorder,
) -> None:
    """MISP stops taking events after the 3rd for longer than the task retries last: the
    run exits 1 saying the delivery aborted, the schedule's next run sends the rest."""
    drafts = flowmon_sample_drafts()
    schedule.at("events/add", *range(4, 200), fault=Fault.HTTP_503)
    command = ["export", "--source", "flowmon-stdin", "--input",
               str(SAMPLES / "flowmon-batch.tsv")]
    first = CliRunner().invoke(app, command)
    assert first.exit_code == 1, first.output
    assert "delivery aborted" in first.output
    audit = LedgerAudit(misp, drafts, load_settings(), schedule)
    delivered = audit.ledger()
    assert 0 < len(delivered) < len(drafts)
    assert all(in_misp(misp, audit.drafts[uuid]) for uuid in delivered)
    schedule.forget("events/add", Fault.HTTP_503)
    second = CliRunner().invoke(app, command)
    assert second.exit_code == 0, second.output
    assert figure(second.output, "events skipped (already exported, unchanged)") == len(
        delivered)
    assert figure(second.output, "events created") + figure(
        second.output, "events updated") == len(drafts) - len(delivered)
    reliability.check("export", f"HTTP 503 on every event from the 4th for a whole CLI run "
                      f"({len(drafts)} Flowmon sample events), then a rerun",
                      expected_items(drafts), reached_items(misp))

"""The export flow against a stateful MISP stand-in: exact requests, nothing twice."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import responses

import flows.export
from flows.export import ExportSource, export_detections
from tasks.export_report import ExportIncomplete
from tasks.misp_events import event_uuid
from tests.conftest import SAMPLES
from tests.misp_stand_in import API_KEY, URL, MispStandIn, point_settings_at_stand_in

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def misp(monkeypatch: pytest.MonkeyPatch) -> Iterator[MispStandIn]:
    point_settings_at_stand_in(monkeypatch)
    monkeypatch.setenv("MISP_NDR_EXPORT__TAG", "flowmon-ads")
    monkeypatch.setenv("MISP_NDR_EXPORT__TO_IDS", "1")
    monkeypatch.setenv("MISP_NDR_EXPORT__DISTRIBUTION", "1")
    fast_retry = flows.export.deliver_to_misp_task.with_options(retry_delay_seconds=0)
    monkeypatch.setattr(flows.export, "deliver_to_misp_task", fast_retry)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield MispStandIn(rsps)


def export_flowmon_batch() -> flows.export.ExportReport:
    return export_detections(source=ExportSource.FLOWMON_STDIN,
                             input_path=str(SAMPLES / "flowmon-batch.tsv"))


def test_each_detection_becomes_one_published_event_in_one_call(misp: MispStandIn) -> None:
    report = export_flowmon_batch()
    assert report.succeeded and report.created == len(misp.events) > 0
    assert [kind for kind, _ in misp.writes] == ["add"] * report.created
    assert "flowmon-ads" in misp.tags
    for uuid, event in misp.events.items():
        assert uuid == event_uuid("flowmon", event["Attribute"][0]["comment"].split()[2])
        assert event["published"] is True
        assert int(event["distribution"]) == 1
        assert event["Tag"][0]["name"] == "flowmon-ads"
        assert {a["type"] for a in event["Attribute"]} <= {"ip-src", "ip-dst", "domain",
                                                          "hostname"}
        assert all(a["to_ids"] is True for a in event["Attribute"])


def test_rerun_sends_nothing_and_a_lost_ledger_updates_instead_of_duplicating(
    misp: MispStandIn, tmp_path: Path,
) -> None:
    first = export_flowmon_batch()
    stored = {uuid: len(event["Attribute"]) for uuid, event in misp.events.items()}
    second = export_flowmon_batch()
    assert (second.created, second.updated, second.unchanged) == (0, 0, first.created)
    assert len(misp.writes) == first.created
    (tmp_path / ".misp-ndr" / "export-ledger.sqlite").unlink()
    third = export_flowmon_batch()
    assert (third.created, third.updated) == (0, first.created)
    assert {uuid: len(event["Attribute"]) for uuid, event in misp.events.items()} == stored


def test_misp_outage_mid_batch_is_retried_and_resumes_without_duplicates(
    misp: MispStandIn, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MISP_NDR_MISP__CONCURRENCY", "1")  # write numbers name one event
    misp.unavailable_on_writes = {2, 3}  # the 2nd event fails its request and its retry
    report = export_flowmon_batch()
    assert report.succeeded
    added = [uuid for kind, uuid in misp.writes if kind == "add"]
    assert len(set(added)) == len(misp.events) == report.created + report.unchanged
    assert added.count(added[1]) == 3  # the failed one: twice in the first try, once after


@pytest.mark.parametrize("concurrency", [4, 8])
def test_an_outage_during_concurrent_sends_loses_and_repeats_no_event(
    misp: MispStandIn, monkeypatch: pytest.MonkeyPatch, concurrency: int,
) -> None:
    monkeypatch.setenv("MISP_NDR_MISP__CONCURRENCY", str(concurrency))
    misp.unavailable_on_writes = {3, 4, 5, 6}  # whichever events are in flight then
    report = export_flowmon_batch()
    assert report.succeeded
    assert len(misp.events) == 7
    # an event MISP stored was never sent again: a re-send would be an add answered
    # "already exists", then an edit
    assert [uuid for kind, uuid in misp.writes if kind == "edit"] == []
    added = [uuid for kind, uuid in misp.writes if kind == "add"]
    assert len(added) == 7 + len(misp.unavailable_on_writes)


def test_misp_down_for_good_fails_the_run_and_keeps_the_watermark(
    misp: MispStandIn,
) -> None:
    misp.unavailable_on_writes = set(range(1, 100))
    with pytest.raises(ExportIncomplete) as failure:
        export_flowmon_batch()
    report = failure.value.report
    assert not report.succeeded
    assert "delivery aborted" in report.failures[0][1]
    assert misp.events == {}


def test_rejected_api_key_fails_at_once_without_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISP_NDR_MISP__URL", URL)
    monkeypatch.setenv("MISP_NDR_MISP__API_KEY", API_KEY)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(re.compile(f"{URL}/.*"), status=403, json={
            "name": "Authentication failed.", "message": "Authentication failed.",
            "url": "/users/view/me"})
        with pytest.raises(ExportIncomplete) as failure:
            export_flowmon_batch()
        urls = [call.request.url for call in rsps.calls]
    assert len(urls) == len(set(urls))  # no per-request or task-level retry of an auth error
    reason = failure.value.report.failures[0][1]
    assert "rejected the API key" in reason and API_KEY not in reason


def test_api_key_never_reaches_logs_or_the_report(
    misp: MispStandIn, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    misp.unavailable_on_writes = {1, 2}  # make MISP complain once: errors get logged
    with caplog.at_level(logging.DEBUG):
        report = export_flowmon_batch()
    printed = capsys.readouterr()
    assert API_KEY not in caplog.text + printed.out + printed.err
    assert API_KEY not in report.render_text() + repr(report)


def test_delivery_reports_progress_in_the_run_log(
    misp: MispStandIn, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="tasks"):
        report = export_flowmon_batch()
    assert f"{report.created} of {report.created} events sent" in caplog.text

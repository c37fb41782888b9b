"""Event export: sensor detections become MISP events (or a MISP feed when no MISP is set)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path

from prefect import flow

from misp_ndr.config import Distribution, load_settings
from tasks.export_delivery import deliver_to_feed_task, deliver_to_misp_task, destination_name
from tasks.export_report import (
    ExportIncomplete,
    ExportReport,
    publish_export_report_task,
    summarize_export,
)
from tasks.flowmon import fetch_flowmon_detections_task
from tasks.flowmon_batch import read_flowmon_batch_task
from tasks.flowmon_window import advance_flowmon_watermark_task, flowmon_window_task
from tasks.indicators import select_export_indicators_task
from tasks.misp_events import build_event_drafts_task
from tasks.spooled_input import discard_spooled_input_task
from tasks.suricata import read_suricata_alerts_task
from tasks.user_ip_filters import resolve_ip_filters_task

DEFAULT_FEED_DIR = "./out/misp-feed"


class ExportSource(StrEnum):
    FLOWMON_API = "flowmon-api"
    FLOWMON_STDIN = "flowmon-stdin"
    SURICATA = "suricata"


@flow(name="export-detections", log_prints=True)
def export_detections(
    source: ExportSource,
    input_path: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    feed_dir: str = DEFAULT_FEED_DIR,
    feed_only: bool = False,
    dry_run: bool = False,
    timezone: str | None = None,
    tag: str | None = None,
    to_ids: bool | None = None,
    distribution: Distribution | None = None,
    ip_filters: list[str] | None = None,
    publish: bool | None = None,
    state_dir: str | None = None,
    discard_input: bool = False,
) -> ExportReport:
    """Read one batch of detections, keep their external indicators, deliver one MISP event
    per detection. Unset parameters fall back to the MISP_NDR_* configuration.

    Args:
        source: flowmon-api (ADS REST API), flowmon-stdin (a custom-script batch saved to
            input_path) or suricata (eve.json at input_path).
        input_path: the batch file, for flowmon-stdin and suricata.
        since: flowmon-api window start; default: the end of the last successful window.
        until: flowmon-api window end; default: now.
        feed_dir: MISP feed directory written when no MISP URL is configured.
        feed_only: write the MISP feed even when a MISP URL is configured.
        dry_run: build the events and report them; send and record nothing.
        timezone: IANA zone of the appliance clock, for flowmon-stdin times without offset.
        tag: tag on every event (MISP_NDR_EXPORT__TAG).
        to_ids: IDS flag of the attributes (MISP_NDR_EXPORT__TO_IDS).
        distribution: 0 own organisation, 1 community, 2 connected, 3 all.
        ip_filters: IPs, CIDRs, ADS patterns or ADS filter names never exported.
        publish: publish the events (MISP_NDR_EXPORT__PUBLISH).
        state_dir: ledgers and watermarks (MISP_NDR_STATE_DIR).
        discard_input: delete input_path once the run succeeded (spooled batches).
    """
    settings = load_settings({
        "export": {"tag": tag, "to_ids": to_ids, "distribution": distribution,
                   "ip_filters": ip_filters, "publish": publish},
        "state_dir": state_dir,
    })
    window = None
    if source is ExportSource.FLOWMON_API:
        window = flowmon_window_task(settings, since, until)
        batch = fetch_flowmon_detections_task(settings.flowmon, window.start, window.end)
    elif source is ExportSource.FLOWMON_STDIN:
        zone = timezone or settings.flowmon.timezone
        batch = read_flowmon_batch_task(_required(input_path, source), zone)
    else:
        batch = read_suricata_alerts_task(_required(input_path, source))
    ranges = resolve_ip_filters_task(
        settings.export.ip_filters, settings.flowmon, settings.state_dir / "flowmon-filters.json"
    )
    selection = select_export_indicators_task(batch.detections, ranges)
    drafts = build_event_drafts_task(batch.detections, selection.kept, settings.export)
    to_misp = settings.misp.configured and not feed_only
    destination = destination_name(settings, Path(feed_dir), to_misp)
    delivery = None
    if dry_run:
        pass
    elif to_misp:
        delivery = deliver_to_misp_task(drafts, settings, return_state=True)
    else:
        delivery = deliver_to_feed_task(drafts, Path(feed_dir), return_state=True)
    report = summarize_export(source.value, destination, batch, selection, drafts, delivery, window)
    if report.succeeded and window is not None and not dry_run:
        advance_flowmon_watermark_task(settings, window)
    publish_export_report_task(report)
    if not report.succeeded:
        raise ExportIncomplete(report)
    if discard_input and input_path:
        discard_spooled_input_task(input_path)
    return report


def _required(input_path: str | None, source: ExportSource) -> str:
    if not input_path:
        raise ValueError(f"source {source.value} needs input_path (a file the batch was saved to)")
    return input_path

"""Sightings: sensor hits on MISP indicators become MISP sightings (or JSON lines of them
when no MISP is configured)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path

from prefect import flow

from misp_ndr.config import load_settings
from tasks.csv_hits import read_hit_file_task
from tasks.detections import Priority
from tasks.flowmon import fetch_flowmon_detections_task
from tasks.flowmon_batch import read_flowmon_batch_task
from tasks.flowmon_hits import blacklist_hits_task
from tasks.flowmon_window import advance_flowmon_watermark_task, flowmon_window_task
from tasks.indicator_store import STORE_FILE, load_indicator_store_task
from tasks.rule_sids import sid_map_for_alerts
from tasks.ruleset_build import SID_MAP_FILE
from tasks.sighting_delivery import (
    deliver_sightings_to_file_task,
    deliver_sightings_to_misp_task,
)
from tasks.sighting_plan import plan_sightings_task
from tasks.sightings_report import (
    SightingsIncomplete,
    SightingsReport,
    publish_sightings_report_task,
    summarize_sightings,
)
from tasks.spooled_input import discard_spooled_input_task
from tasks.suricata_hits import read_suricata_hits_task


class SightingSource(StrEnum):
    FLOWMON_API = "flowmon-api"
    FLOWMON_STDIN = "flowmon-stdin"
    SURICATA = "suricata"
    CSV = "csv"


@flow(name="submit-sightings", log_prints=True)
def submit_sightings(
    source: SightingSource,
    input_path: str | None = None,
    sid_map: str | None = None,
    source_name: str | None = None,
    out_file: str | None = None,
    file_only: bool = False,
    since: datetime | None = None,
    until: datetime | None = None,
    window_minutes: int | None = None,
    timezone: str | None = None,
    state_dir: str | None = None,
    discard_input: bool = False,
) -> SightingsReport:
    """Read one batch of sensor hits, aggregate them, add one MISP sighting per indicator,
    sensor and window. Unset parameters fall back to the MISP_NDR_* configuration.

    Args:
        source: flowmon-api (ADS BLACKLIST events), flowmon-stdin (a custom-script batch at
            input_path), suricata (eve.json alerts of our rules) or csv (value,time[,sensor]).
        input_path: the batch file, for every source but flowmon-api.
        sid_map: the sid map update-rules wrote; default: the one in the rules directory.
        source_name: the sightings' source in MISP; {sensor} becomes the sensor's name.
        out_file: JSON lines file written when no MISP is configured.
        file_only: write the JSON lines file even when a MISP URL is configured.
        since: flowmon-api window start; default: the end of the last successful window.
        until: flowmon-api window end; default: now.
        window_minutes: at most one sighting per indicator per sensor in this many minutes.
        timezone: IANA zone of the appliance clock, for flowmon-stdin times without offset.
        state_dir: ledgers and watermarks (MISP_NDR_STATE_DIR).
        discard_input: delete input_path once the run succeeded (spooled batches).
    """
    settings = load_settings({
        "sightings": {"source": source_name, "window_minutes": window_minutes,
                      "out_file": out_file},
        "state_dir": state_dir,
    })
    options = settings.sightings
    window = None
    if source is SightingSource.FLOWMON_API:
        window = flowmon_window_task(settings, since, until, "sightings")
        detections = fetch_flowmon_detections_task(settings.flowmon, window.start, window.end,
                                                   Priority.INFO)
        batch = blacklist_hits_task(detections, options.flowmon_blacklists)
    elif source is SightingSource.FLOWMON_STDIN:
        detections = read_flowmon_batch_task(_required(input_path, source),
                                             timezone or settings.flowmon.timezone)
        batch = blacklist_hits_task(detections, options.flowmon_blacklists)
    elif source is SightingSource.SURICATA:
        sids = sid_map_for_alerts(Path(sid_map) if sid_map else None,
                                  settings.rules.output_dir / SID_MAP_FILE)
        batch = read_suricata_hits_task(_required(input_path, source), sids)
    else:
        batch = read_hit_file_task(_required(input_path, source))
    store = load_indicator_store_task(settings.state_dir / STORE_FILE)
    plan = plan_sightings_task(batch.hits, store, options.window_minutes, options.source)
    if settings.misp.configured and not file_only:
        delivery = deliver_sightings_to_misp_task(plan.sightings, settings, return_state=True)
        destination = f"MISP {settings.misp.url}"
    else:
        delivery = deliver_sightings_to_file_task(plan.sightings, options.out_file, settings,
                                                  return_state=True)
        destination = f"file {options.out_file}"
    report = summarize_sightings(source.value, destination, batch, plan, delivery)
    if report.succeeded and window is not None:
        advance_flowmon_watermark_task(settings, window)
    publish_sightings_report_task(report)
    if not report.succeeded:
        raise SightingsIncomplete(report)
    if discard_input and input_path:
        discard_spooled_input_task(input_path)
    return report


def _required(input_path: str | None, source: SightingSource) -> str:
    if not input_path:
        raise ValueError(f"source {source.value} needs input_path (a file the hits were "
                         "saved to)")
    return input_path

"""Export end to end: detections of an eve.json become MISP events, sent to a MISP stand-in
on loopback (benchmarks/misp_server.py). Reports the
requests sent, events per second, and what the configured request concurrency changes."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import SEED, Figure, size_label
from benchmarks.misp_server import misp_in_subprocess
from misp_ndr.config import load_settings
from tasks.export_delivery import deliver_to_misp
from tasks.indicators import select_export_indicators
from tasks.ip_addresses import AddressRanges
from tasks.misp_events import build_event_drafts
from tasks.suricata import read_eve_file
from tests.misp_stand_in import API_KEY

CONCURRENCY = [1, 4, 8]
TARGET_EVENTS_PER_SECOND = 500  # 10k detections in 20 s on a LAN-near MISP


def eve_lines(count: int) -> str:
    """One alert per flow, each with an external source address (one event each)."""
    rng = np.random.default_rng(SEED)
    octets = rng.integers(1, 223, size=(count, 3))
    lines = []
    for n in range(count):
        a, b, c = (int(x) for x in octets[n])
        a = a if a not in (10, 100, 127, 169, 172, 192, 198, 203) else 45
        lines.append(json.dumps({
            "timestamp": "2026-11-30T10:00:00.000000+0000", "flow_id": 1_000_000 + n,
            "event_type": "alert", "src_ip": f"{a}.{b}.{c}.{n % 250 + 1}",
            "src_port": 40000 + n % 20000, "dest_ip": "10.0.0.5", "dest_port": 443,
            "proto": "TCP", "host": "edge-ids-1",
            "alert": {"signature_id": 2_000_000 + n % 50, "signature": f"ET SCAN probe {n % 50}",
                      "category": "Attempted Information Leak", "severity": 2}}))
    return "\n".join(lines) + "\n"


def run(quick: bool) -> list[Figure]:
    count = 300 if quick else 10_000
    runs = 1 if quick else 3
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as scratch:
        eve = Path(scratch) / "eve.json"
        eve.write_text(eve_lines(count))
        batch = read_eve_file(eve)
        selection = select_export_indicators(batch.detections, AddressRanges.empty())
        settings = load_settings()
        drafts = build_event_drafts(batch.detections, selection.kept, settings.export)
        for concurrency in CONCURRENCY:
            timed = [_deliver(drafts, Path(scratch), concurrency) for _ in range(runs)]
            seconds = statistics.median(seconds for seconds, _ in timed)
            requests = timed[-1][1]
            case = f"{size_label(count)} events, concurrency {concurrency}"
            figures.append(Figure("export to MISP", case, len(drafts) / seconds, "events/s",
                                  f">= {TARGET_EVENTS_PER_SECOND}" if concurrency > 1 else "",
                                  len(drafts) / seconds >= TARGET_EVENTS_PER_SECOND
                                  if concurrency > 1 and not quick else None))
            figures.append(Figure("export to MISP", case, requests / len(drafts),
                                  "requests/event"))
    return figures


def _deliver(drafts: list, scratch: Path, concurrency: int) -> tuple[float, int]:
    """One delivery into a fresh MISP and a fresh ledger: its seconds and requests."""
    with misp_in_subprocess() as (url, stats), tempfile.TemporaryDirectory(dir=scratch) as state:
        settings = load_settings({"misp": {"url": url, "api_key": API_KEY,
                                           "concurrency": concurrency},
                                  "state_dir": state})
        start = time.perf_counter()
        result = deliver_to_misp(drafts, settings)
        seconds = time.perf_counter() - start
        served = stats()
    assert result.created == len(drafts) == served["events"], (result, served)
    return seconds, served["requests"]

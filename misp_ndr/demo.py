"""`misp-ndr demo`: the export job end to end on bundled samples, with no external server.

Events go to a MISP feed directory (what MISP would pull), state to a demo state dir, so a
second run shows idempotency: nothing is exported twice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

SAMPLES = Path(__file__).parent / "samples"
DEMO_INPUTS = [
    ("flowmon-stdin", "flowmon-batch.tsv"),
    ("flowmon-stdin", "flowmon-batch.jsonl"),
    ("suricata", "eve.json"),
]


def run_demo(output_dir: Path, say: Callable[[str], None]) -> int:
    from flows.export import ExportSource, export_detections
    from tasks.misp_feed import read_feed

    feed_dir = output_dir / "misp-feed"
    for source, name in DEMO_INPUTS:
        say(f"\n== export {name} ({source}) ==")
        report = export_detections(
            source=ExportSource(source),
            input_path=str(SAMPLES / name),
            feed_dir=str(feed_dir),
            feed_only=True,
            state_dir=str(output_dir / "state"),
        )
        say(report.render_text())
    events = read_feed(feed_dir)
    say(f"\nMISP feed at {feed_dir.resolve()}: {len(events)} events.")
    say("Point a MISP feed at this directory (Sync Actions > Feeds > Add feed, 'MISP Feed'"
        " format), or set MISP_NDR_MISP__URL and MISP_NDR_MISP__API_KEY to export directly.")
    return 0

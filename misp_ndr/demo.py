"""`misp-ndr demo`: the jobs end to end on bundled samples, with no external server.

Export: detections become events in a MISP feed directory (what MISP would pull); a second
run shows idempotency (nothing exported twice). Rule update: the bundled MISP feed of IDS
indicators becomes Suricata rules, Flowmon ADS blacklists and a Zeek intel file. Sightings:
sensor hits on those indicators (Suricata alerts of the rules just built, Flowmon blacklist
hits, a CSV) become MISP sightings, written as JSON lines ready for `/sightings/add`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

SAMPLES = Path(__file__).parent / "samples"
SAMPLE_AGE_DAYS = 3650  # the sample feed's events are dated November 2026
SIGHTING_INPUTS = [
    ("suricata", "eve-misp-alerts.json"),
    ("flowmon-stdin", "flowmon-blacklist.jsonl"),
    ("csv", "hits.csv"),
]
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
    run_rule_update_demo(output_dir, say)
    run_sightings_demo(output_dir, say)
    return 0


def run_rule_update_demo(output_dir: Path, say: Callable[[str], None]) -> None:
    from flows.update_rules import update_rules

    rules_dir = output_dir / "rules"
    say("\n== update-rules from the bundled MISP feed ==")
    report = update_rules(feed=str(SAMPLES / "misp-feed"), output_dir=str(rules_dir),
                          state_dir=str(output_dir / "state"), max_age_days=SAMPLE_AGE_DAYS)
    say(report.render_text())
    say(f"\nRules, blacklists and intel at {rules_dir.resolve()}.")


def run_sightings_demo(output_dir: Path, say: Callable[[str], None]) -> None:
    from flows.sightings import SightingSource, submit_sightings
    from tasks.ruleset_build import SID_MAP_FILE

    out_file = output_dir / "sightings.jsonl"
    for source, name in SIGHTING_INPUTS:
        say(f"\n== sightings from {name} ({source}) ==")
        report = submit_sightings(
            source=SightingSource(source), input_path=str(SAMPLES / "sightings" / name),
            sid_map=str(output_dir / "rules" / SID_MAP_FILE), out_file=str(out_file),
            file_only=True, state_dir=str(output_dir / "state"))
        say(report.render_text())
    say(f"\nSightings at {out_file.resolve()}: one /sightings/add request body per line.")

"""The per-run account of the sightings job: every hit ends up counted somewhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from misp_ndr.task_policy import batch_task
from tasks.detections import ParseProblem
from tasks.run_report import Row, figure_rows, publish_rows, remark_rows, render_rows
from tasks.sighting_delivery import SightingDelivery
from tasks.sighting_hits import HitBatch
from tasks.sighting_plan import SightingPlan

MAX_LISTED = 50
UNKNOWN_EXAMPLES = 10


@dataclass
class SightingsReport:
    source: str
    destination: str
    records_read: int = 0
    skipped_records: dict[str, int] = field(default_factory=dict)
    hits: int = 0
    resolved_locally: int = 0
    sightings: int = 0
    by_uuid: int = 0
    sent: int = 0
    duplicates: int = 0
    confirmed: int = 0
    unknown: list[tuple[str, str]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    problems: list[ParseProblem] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return not self.failures

    def rows(self) -> list[Row]:
        figures: list[tuple[str, int]] = [
            ("records read", self.records_read),
            *((f"records skipped: {why}", n) for why, n in sorted(self.skipped_records.items())),
            ("records unreadable (reported)", len(self.problems)),
            ("hits", self.hits),
            ("hits by value found in the local indicator store", self.resolved_locally),
            ("sightings after aggregation", self.sightings),
            ("  of which by attribute UUID", self.by_uuid),
            ("  of which by value (MISP narrows with filters)", self.sightings - self.by_uuid),
            ("sightings sent (or written to the file)", self.sent),
            ("skipped: sent by an earlier run", self.duplicates),
            ("found already added after an interrupted run", self.confirmed),
            ("unknown to MISP (no matching attribute)", len(self.unknown)),
            ("sightings failed", len(self.failures)),
        ]
        examples = [f"{value} (from {origin})" for value, origin in
                    self.unknown[:UNKNOWN_EXAMPLES]]
        return [
            *figure_rows(figures),
            *remark_rows("failure", [f"{what}: {why}" for what, why in self.failures]),
            *remark_rows("note", [f"unknown to MISP: {example}" for example in examples]),
            *remark_rows("problem", [f"{p.source}: {p.reason} [{p.excerpt}]"
                                     for p in self.problems[:MAX_LISTED]]),
        ]

    def summary_line(self) -> str:
        return (f"{self.hits} hits, {self.sightings} sightings: {self.sent} sent, "
                f"{self.duplicates + self.confirmed} already there, {len(self.unknown)} "
                f"unknown to MISP, {len(self.failures)} failed; {len(self.problems)} problems "
                "reported")

    def render_text(self) -> str:
        text = render_rows([f"sightings from {self.source} to {self.destination}"],
                           self.rows())
        if len(self.problems) > MAX_LISTED:
            text += f"\n  ... and {len(self.problems) - MAX_LISTED} more problems"
        return text


def summarize_sightings(source: str, destination: str, batch: HitBatch, plan: SightingPlan,
                        delivery: Any) -> SightingsReport:
    """`delivery`: the delivery task's Prefect state, so an aborted delivery is reported."""
    report = SightingsReport(
        source=source, destination=destination, records_read=batch.records_read,
        skipped_records=dict(batch.skipped), hits=plan.hits_read,
        resolved_locally=plan.resolved_locally, sightings=len(plan.sightings),
        by_uuid=int(plan.sightings["attribute_uuid"].notna().sum()),
        problems=list(batch.problems),
    )
    outcome = delivery.result(raise_on_failure=False)
    if isinstance(outcome, SightingDelivery):
        report.sent, report.duplicates = outcome.sent, outcome.duplicates
        report.confirmed, report.unknown = outcome.confirmed, list(outcome.unknown)
        report.failures = list(outcome.failures)
    else:
        report.failures = [("(remaining sightings)", f"delivery aborted: {outcome}")]
    return report


def publish_sightings_report(report: SightingsReport) -> None:
    publish_rows("sightings-report", report.rows(),
                 f"Sightings from {report.source} to {report.destination}")
    print(report.summary_line())


publish_sightings_report_task = batch_task(publish_sightings_report,
                                           "publish-sightings-report")


class SightingsIncomplete(Exception):
    """Raised at the end of a run that could not deliver everything; carries the report."""

    def __init__(self, report: SightingsReport) -> None:
        super().__init__(f"sightings incomplete: {len(report.failures)} not delivered")
        self.report = report

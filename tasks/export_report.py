"""The per-run account of an export: every input record ends up counted somewhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from misp_ndr.task_policy import batch_task
from tasks.detections import ParsedBatch, ParseProblem
from tasks.export_delivery import DeliveryResult
from tasks.indicators import IndicatorSelection
from tasks.misp_events import EventDraft
from tasks.run_report import Row, figure_rows, publish_rows, remark_rows, render_rows

MAX_LISTED_PROBLEMS = 50


@dataclass
class ExportReport:
    source: str
    destination: str
    dry_run: bool = False
    records_read: int = 0
    skipped_records: dict[str, int] = field(default_factory=dict)
    detections: int = 0
    indicator_counts: dict[str, int] = field(default_factory=dict)
    detections_without_external_indicator: int = 0
    events_built: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    problems: list[ParseProblem] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    window: str = ""
    preview: list[str] = field(default_factory=list)  # dry run: the events not sent

    @property
    def succeeded(self) -> bool:
        """Every record handled: exported, filtered, skipped on purpose, or reported."""
        return not self.failures

    def rows(self) -> list[Row]:
        """The table artifact: one row per figure, then one per failure and problem."""
        counts = self.indicator_counts
        figures: list[tuple[str, int]] = [
            ("records read", self.records_read),
            *((f"records skipped: {why}", n) for why, n in sorted(self.skipped_records.items())),
            ("records unreadable (reported)", len(self.problems) - counts.get("invalid", 0)),
            ("detections", self.detections),
            ("indicators", counts.get("indicators", 0)),
            ("dropped as non-global", counts.get("non_global", 0)),
            ("dropped by user filter", counts.get("filtered", 0)),
            ("invalid indicators (reported)", counts.get("invalid", 0)),
            ("duplicate indicators", counts.get("duplicate", 0)),
            ("detections without an external indicator",
             self.detections_without_external_indicator),
            ("events built", self.events_built),
            ("events created", self.created),
            ("events updated", self.updated),
            ("events skipped (already exported, unchanged)", self.unchanged),
            ("events failed", len(self.failures)),
        ]
        return [
            *figure_rows(figures),
            *remark_rows("failure", [f"event {uuid}: {why}" for uuid, why in self.failures]),
            *remark_rows("note", [f"event {uuid}: {note}" for uuid, note in self.notes]),
            *remark_rows("problem", [f"{p.source}: {p.reason} [{p.excerpt}]"
                                     for p in self.problems[:MAX_LISTED_PROBLEMS]]),
        ]

    def summary_line(self) -> str:
        return (f"{self.records_read} records, {self.events_built} events: {self.created} "
                f"created, {self.updated} updated, {self.unchanged} unchanged, "
                f"{len(self.failures)} failed; {len(self.problems)} problems reported")

    def render_text(self) -> str:
        mode = " (dry run: nothing sent)" if self.dry_run else ""
        head = f"export from {self.source} to {self.destination}{mode}"
        if self.window:
            head += f"\nwindow: {self.window}"
        text = render_rows([head, *self.preview], self.rows())
        if len(self.problems) > MAX_LISTED_PROBLEMS:
            text += f"\n  ... and {len(self.problems) - MAX_LISTED_PROBLEMS} more problems"
        return text


def summarize_export(
    source: str,
    destination: str,
    batch: ParsedBatch,
    selection: IndicatorSelection,
    drafts: list[EventDraft],
    delivery: Any,
    window: object | None,
) -> ExportReport:
    """Gather every stage's counts; `delivery` is the delivery task's Prefect state, or
    None for a dry run."""
    detections = batch.detections[["source_system", "detection_id"]].drop_duplicates()
    report = ExportReport(
        source=source,
        destination=destination,
        dry_run=delivery is None,
        records_read=batch.records_read,
        skipped_records=dict(batch.skipped),
        detections=len(detections),
        indicator_counts=dict(selection.counts),
        detections_without_external_indicator=len(detections) - len(drafts),
        events_built=len(drafts),
        problems=[*batch.problems, *selection.problems],
        window=str(window) if window else "",
    )
    if delivery is None:
        report.preview = [describe_draft(draft) for draft in drafts]
        return report
    outcome = delivery.result(raise_on_failure=False)
    if isinstance(outcome, DeliveryResult):
        report.created, report.updated = outcome.created, outcome.updated
        report.unchanged, report.failures = outcome.unchanged, list(outcome.failures)
        report.notes = list(outcome.notes)
    else:
        report.failures = [("(remaining events)", f"delivery aborted: {outcome}")]
    return report


def describe_draft(draft: EventDraft) -> str:
    """One line per event for a dry run: what MISP would receive."""
    event = draft.event
    attributes = ", ".join(f"{a['type']} {a['value']}" for a in event.get("Attribute", []))
    return (f"  would send {draft.uuid} [{', '.join(draft.tags)}] {event.get('info', '')!r}:"
            f" {attributes}")


def publish_export_report(report: ExportReport) -> None:
    """The run's table artifact in the Prefect UI, and a one-line summary in its log."""
    publish_rows("export-report", report.rows(),
                 f"Export from {report.source} to {report.destination}")
    print(report.summary_line())


publish_export_report_task = batch_task(publish_export_report, "publish-export-report")


class ExportIncomplete(Exception):
    """Raised at the end of a run that could not deliver everything; carries the report."""

    def __init__(self, report: ExportReport) -> None:
        super().__init__(f"export incomplete: {len(report.failures)} event(s) not delivered")
        self.report = report

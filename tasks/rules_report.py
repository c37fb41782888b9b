"""The per-run account of a rule update: pulled, kept, rejected, rules changed, files."""

from __future__ import annotations

from dataclasses import dataclass, field

from misp_ndr.task_policy import batch_task
from tasks.detections import ParseProblem
from tasks.indicator_store import MergedIndicators
from tasks.misp_pull import PullResult
from tasks.rule_update_plan import RuleUpdatePlan
from tasks.ruleset_build import RulesetBuild
from tasks.ruleset_files import PublishedRuleset
from tasks.run_report import Row, figure_rows, publish_rows, remark_rows, render_rows
from tasks.sensor_reload import ReloadOutcome

MAX_LISTED = 50


@dataclass
class RulesReport:
    source: str
    plan: str
    pages: int = 0
    pulled_by_type: dict[str, int] = field(default_factory=dict)
    normalization: dict[str, int] = field(default_factory=dict)  # kept per kind, rejected, skipped
    removed_in_misp: int = 0
    expired: int = 0
    indicators: int = 0
    dataset_kinds: list[str] = field(default_factory=list)
    rule_changes: dict[str, int] = field(default_factory=dict)
    customizations: dict[str, int] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)  # name -> bytes
    unchanged_files: list[str] = field(default_factory=list)  # not rewritten
    snapshot: str | None = None
    reload: str = ""
    problems: list[ParseProblem] = field(default_factory=list)

    def rows(self) -> list[Row]:
        figures = [
            ("pages pulled", self.pages),
            *((f"pulled {kind}", n) for kind, n in sorted(self.pulled_by_type.items())),
            *((name, n) for name, n in sorted(self.normalization.items())),
            ("removed in MISP (deleted, not IDS, rejected)", self.removed_in_misp),
            ("expired (event older than the age window)", self.expired),
            ("indicators in the ruleset", self.indicators),
            *((f"rules {change}", n) for change, n in self.rule_changes.items()),
            *((f"customization {name}", n) for name, n in sorted(self.customizations.items())),
            *((f"file {name} (bytes)", size) for name, size in sorted(self.files.items())),
        ]
        notes = [f"previous ruleset kept as {self.snapshot}"] if self.snapshot else []
        notes += [f"unchanged, not rewritten: {', '.join(self.unchanged_files)}"
                  ] if self.unchanged_files else []
        notes += [f"lists instead of one rule each for: {', '.join(self.dataset_kinds)}"
                  ] if self.dataset_kinds else []
        notes += [f"reload: {self.reload}"] if self.reload else []
        return [*figure_rows(figures), *remark_rows("note", notes),
                *remark_rows("rejected", [f"{p.source}: {p.reason} [{p.excerpt}]"
                                          for p in self.problems[:MAX_LISTED]])]

    def render_text(self) -> str:
        text = render_rows([f"rule update from {self.source}: {self.plan}"], self.rows())
        if len(self.problems) > MAX_LISTED:
            text += f"\n  ... and {len(self.problems) - MAX_LISTED} more rejected values"
        return text


def summarize_rule_update(
    source: str, plan: RuleUpdatePlan, pulled: PullResult, counts: dict[str, int],
    problems: list[ParseProblem], merged: MergedIndicators, build: RulesetBuild,
    published: PublishedRuleset, reload: ReloadOutcome | None,
) -> RulesReport:
    return RulesReport(
        source=source, plan=plan.describe(), pages=pulled.pages,
        pulled_by_type=dict(pulled.by_type),
        normalization={**{f"left out: {why}": n for why, n in pulled.skipped.items()}, **counts},
        removed_in_misp=merged.removed_in_misp, expired=merged.expired,
        indicators=len(merged.indicators), dataset_kinds=build.dataset_kinds,
        rule_changes=build.rule_changes, customizations=build.customization_counts,
        files=published.sizes, unchanged_files=published.unchanged,
        snapshot=published.snapshot, problems=problems,
        reload=("" if reload is None else
                f"{reload.command}: {'ok' if reload.succeeded else 'FAILED'} {reload.detail}"),
    )


def publish_rules_report(report: RulesReport) -> None:
    publish_rows("rules-report", report.rows(), f"Rule update from {report.source}")
    print(f"{report.indicators} indicators, rules {report.rule_changes}, "
          f"{len(report.problems)} values rejected")


publish_rules_report_task = batch_task(publish_rules_report, "publish-rules-report")

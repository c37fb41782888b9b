"""What one rule update pulls: everything in the age window (first run, `--fast`, a feed,
or an explicit window), or only what changed in MISP since the last successful update."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from misp_ndr.config import Settings
from misp_ndr.task_policy import batch_task
from tasks.misp_pull import AttributeQuery
from tasks.rule_indicators import HANDLED_TYPES
from tasks.run_state import RunWatermarks

# MISP stamps an edit when it commits it; re-reading a few minutes costs nothing.
INCREMENTAL_OVERLAP = timedelta(minutes=5)


@dataclass(frozen=True)
class RuleUpdatePlan:
    full: bool
    query: AttributeQuery
    window_end: datetime
    watermark_key: str

    def describe(self) -> str:
        span = (f"{self.query.window_from:%Y-%m-%d %H:%M} .. {self.window_end:%Y-%m-%d %H:%M}"
                if self.query.window_from else f"events of the last "
                f"{self.query.max_event_age_days} days")
        return f"{'full rebuild' if self.full else 'incremental update'}: {span}"


def watermarks(settings: Settings) -> RunWatermarks:
    return RunWatermarks(settings.state_dir / "watermarks.json")


def plan_rule_update(
    settings: Settings,
    source: str,
    has_previous: bool,
    fast: bool,
    since: datetime | None,
    until: datetime | None,
) -> RuleUpdatePlan:
    """`source` is "misp" or a feed location. A feed carries no change times: always full."""
    key = f"update-rules:{source}"
    end = until or datetime.now(UTC)
    mark = watermarks(settings).get(key)
    incremental = (has_previous and not fast and since is None and mark is not None
                   and source == "misp")
    start = mark - INCREMENTAL_OVERLAP if incremental and mark else since
    rules = settings.rules
    query = AttributeQuery(
        window_from=start,
        window_to=until,
        max_event_age_days=rules.max_event_age_days,
        event_tags=list(rules.event_tags),
        exclude_tags=list(rules.exclude_tags),
        published_only=rules.published_only,
        enforce_warninglists=rules.enforce_warninglists,
        to_ids_only=not incremental,
        types=list(HANDLED_TYPES),
    )
    return RuleUpdatePlan(not incremental, query, end, key)


def advance_rule_watermark(settings: Settings, plan: RuleUpdatePlan) -> None:
    watermarks(settings).advance(plan.watermark_key, plan.window_end)


plan_rule_update_task = batch_task(plan_rule_update, "plan-rule-update")
advance_rule_watermark_task = batch_task(advance_rule_watermark, "advance-rule-watermark")

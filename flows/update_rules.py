"""Rule update: MISP indicators become Suricata rules, Flowmon ADS blacklists, Zeek intel."""

from __future__ import annotations

from datetime import datetime

from prefect import flow

from misp_ndr.config import load_settings
from tasks.indicator_store import (
    STORE_FILE,
    load_indicator_store_task,
    merge_indicators_task,
    save_indicator_store_task,
)
from tasks.misp_feed_source import read_feed_attributes_task
from tasks.misp_pull import pull_misp_attributes_task
from tasks.rule_customizations import drop_customizations_task, load_customizations_task
from tasks.rule_indicators import normalize_rule_indicators_task
from tasks.rule_update_plan import advance_rule_watermark_task, plan_rule_update_task
from tasks.rules_report import RulesReport, publish_rules_report_task, summarize_rule_update
from tasks.ruleset_build import build_ruleset_task
from tasks.ruleset_files import (
    EmptyRulesetRefused,
    publish_ruleset_task,
    recover_interrupted_task,
)
from tasks.sensor_reload import run_reload_command_task


@flow(name="update-rules", log_prints=True)
def update_rules(
    since: datetime | None = None,
    until: datetime | None = None,
    max_age_days: int | None = None,
    tags: list[str] | None = None,
    exclude_tags: list[str] | None = None,
    fast: bool = False,
    feed: str | None = None,
    output_dir: str | None = None,
    allow_empty: bool = False,
    state_dir: str | None = None,
) -> RulesReport:
    """Pull IDS indicators from MISP (or a MISP feed), rebuild the sensors' files, keep the
    previous ruleset. Without `fast`, local customizations are applied to the new rules.

    Args:
        since: window start; a window means a full rebuild of it. Default: the changes since
            the last successful update.
        until: window end; default: now.
        max_age_days: leave out events older than this many days.
        tags: pull only events with one of these tags.
        exclude_tags: never pull events with these tags.
        fast: rebuild from scratch and drop local customizations (backed up first).
        feed: a MISP feed directory or URL to read instead of the MISP API.
        output_dir: where the rule files go (MISP_NDR_RULES__OUTPUT_DIR).
        allow_empty: accept an update that leaves no indicators at all.
        state_dir: the indicator store, sids and watermark (MISP_NDR_STATE_DIR).
    """
    settings = load_settings({
        "rules": {"output_dir": output_dir, "max_event_age_days": max_age_days,
                  "event_tags": tags, "exclude_tags": exclude_tags},
        "state_dir": state_dir,
    })
    rules = settings.rules
    store = settings.state_dir / STORE_FILE
    if rules.output_dir.exists():  # sensors must not read a cut-short publish a run longer
        recover_interrupted_task(rules.output_dir)
    current = load_indicator_store_task(store)
    plan = plan_rule_update_task(settings, feed or "misp", current is not None, fast, since,
                                 until)
    if feed:
        pulled = read_feed_attributes_task(feed, plan.query, settings.misp)
    else:
        pulled = pull_misp_attributes_task(settings.misp, plan.query, rules.page_size)
    fresh, rejected, counts = normalize_rule_indicators_task(pulled.attributes)
    merged = merge_indicators_task(current, pulled.attributes, fresh, full=plan.full,
                                   max_event_age_days=rules.max_event_age_days,
                                   now=plan.window_end)
    if merged.indicators.empty and current is not None and len(current) and not allow_empty:
        raise EmptyRulesetRefused(len(current))
    if fast:
        customizations = drop_customizations_task(rules.customizations_file)
    else:
        customizations = load_customizations_task(rules.customizations_file)
    build = build_ruleset_task(merged.indicators, rules, settings.state_dir / "sids.sqlite",
                               customizations, None if feed else str(settings.misp.url))
    published = publish_ruleset_task(rules.output_dir, build.files, rules.history_keep)
    save_indicator_store_task(store, merged.indicators)
    advance_rule_watermark_task(settings, plan)
    reload = run_reload_command_task(rules.reload_command) if rules.reload_command else None
    problems = [*pulled.problems, *rejected, *build.problems]  # unreadable records first
    report = summarize_rule_update(feed or str(settings.misp.url), plan, pulled, counts,
                                   problems, merged, build, published, reload)
    publish_rules_report_task(report)
    return report

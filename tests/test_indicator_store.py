"""Incremental updates: what MISP changed replaces what we had; old events expire."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from tasks.indicator_store import IndicatorStore, merge_indicators
from tasks.rule_indicators import PULLED_ATTRIBUTE_COLUMNS, RULE_INDICATOR_COLUMNS

NOW = datetime(2026, 11, 23, tzinfo=UTC)


def pulled(*rows: tuple[str, str]) -> pd.DataFrame:
    """(attribute uuid, event date) rows of a pull."""
    frame = pd.DataFrame({"attribute_uuid": [r[0] for r in rows],
                          "event_date": pd.to_datetime([r[1] for r in rows], utc=True)})
    return frame.reindex(columns=list(PULLED_ATTRIBUTE_COLUMNS)).astype(PULLED_ATTRIBUTE_COLUMNS)


def fresh(*rows: tuple[str, str]) -> pd.DataFrame:
    """(attribute uuid, value) rows of normalized indicators."""
    frame = pd.DataFrame({"attribute_uuid": [r[0] for r in rows], "value": [r[1] for r in rows],
                          "kind": "ip"})
    return frame.reindex(columns=list(RULE_INDICATOR_COLUMNS)).astype(RULE_INDICATOR_COLUMNS)


def values(merged: pd.DataFrame) -> dict[str, str]:
    return dict(zip(merged["attribute_uuid"], merged["value"], strict=True))


def test_full_update_replaces_everything() -> None:
    current = merge_indicators(None, pulled(("a", "2026-11-20")), fresh(("a", "1.1.1.1")),
                               full=True, max_event_age_days=30, now=NOW).indicators
    merged = merge_indicators(current, pulled(("b", "2026-11-21")), fresh(("b", "2.2.2.2")),
                              full=True, max_event_age_days=30, now=NOW)
    assert values(merged.indicators) == {"b": "2.2.2.2"}


def test_incremental_update_keeps_untouched_replaces_changed_removes_gone() -> None:
    start = merge_indicators(
        None, pulled(("keep", "2026-11-20"), ("change", "2026-11-20"), ("gone", "2026-11-20")),
        fresh(("keep", "1.1.1.1"), ("change", "2.2.2.2"), ("gone", "3.3.3.3")),
        full=True, max_event_age_days=30, now=NOW).indicators
    # MISP now says: 'change' has a new value, 'gone' was deleted (pulled, not an indicator)
    merged = merge_indicators(
        start, pulled(("change", "2026-11-22"), ("gone", "2026-11-20"), ("new", "2026-11-22")),
        fresh(("change", "2.2.2.9"), ("new", "4.4.4.4")),
        full=False, max_event_age_days=30, now=NOW)
    assert values(merged.indicators) == {"keep": "1.1.1.1", "change": "2.2.2.9",
                                         "new": "4.4.4.4"}
    assert merged.removed_in_misp == 1


def test_events_older_than_the_age_window_expire() -> None:
    merged = merge_indicators(
        None, pulled(("old", "2026-09-01"), ("recent", "2026-11-20")),
        fresh(("old", "1.1.1.1"), ("recent", "2.2.2.2")),
        full=True, max_event_age_days=30, now=NOW)
    assert values(merged.indicators) == {"recent": "2.2.2.2"}
    assert merged.expired == 1


def test_store_round_trips(tmp_path: Path) -> None:
    store = IndicatorStore(tmp_path / "indicators.parquet")
    assert store.load() is None
    merged = merge_indicators(None, pulled(("a", "2026-11-20")), fresh(("a", "1.1.1.1")),
                              full=True, max_event_age_days=30, now=NOW).indicators
    store.save(merged)
    pd.testing.assert_frame_equal(store.load(), merged)

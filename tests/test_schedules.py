"""Automatic update schedule from start date, UTC time of day and every N days."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from itertools import islice

import pytest
from dateutil.rrule import rrulestr

from misp_ndr.schedules import rule_update_rrule


def occurrences(rule: str, count: int = 3) -> list[datetime]:
    return list(islice(rrulestr(rule), count))  # the rule is unbounded


def test_start_date_time_and_period_give_the_runs_an_operator_expects() -> None:
    rule = rule_update_rrule(date(2026, 12, 1), time(2, 30), every_days=3)
    assert occurrences(rule) == [datetime(2026, 12, 1, 2, 30, tzinfo=UTC),
                                 datetime(2026, 12, 4, 2, 30, tzinfo=UTC),
                                 datetime(2026, 12, 7, 2, 30, tzinfo=UTC)]


def test_without_start_date_the_first_run_is_the_next_time_of_day() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert occurrences(rule_update_rrule(None, time(3, 0), 1, now=now), 1) == [
        datetime(2026, 11, 24, 3, 0, tzinfo=UTC)]
    assert occurrences(rule_update_rrule(None, time(18, 0), 1, now=now), 1) == [
        datetime(2026, 11, 23, 18, 0, tzinfo=UTC)]


def test_period_below_one_day_is_refused() -> None:
    with pytest.raises(ValueError, match="every_days"):
        rule_update_rrule(None, time(3, 0), 0)

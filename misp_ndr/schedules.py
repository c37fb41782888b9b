"""Automatic rule updates as GCenter configures them: start date, time of day (UTC), every
N days. Prefect deployments take the RRule string this builds."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta


def rule_update_rrule(
    start_date: date | None, time_utc: time, every_days: int, now: datetime | None = None
) -> str:
    """`DTSTART:...Z` + `RRULE:FREQ=DAILY;INTERVAL=N`. No start date: the next time of day
    from now."""
    if every_days < 1:
        raise ValueError("every_days must be at least 1")
    moment = now or datetime.now(UTC)
    if start_date is None:
        start_date = moment.date()
        if datetime.combine(start_date, time_utc, tzinfo=UTC) <= moment:
            start_date += timedelta(days=1)
    start = datetime.combine(start_date, time_utc.replace(tzinfo=None))
    return f"DTSTART:{start:%Y%m%dT%H%M%S}Z\nRRULE:FREQ=DAILY;INTERVAL={every_days}"

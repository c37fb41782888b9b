"""Command-line times: ISO-8601 (`2026-11-20T08:00`, UTC unless an offset is given) or an
age relative to now (`90m`, `12h`, `7d`, `2w`), as SOC engineers type them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_AGE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$", re.IGNORECASE)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    match = _AGE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not an age like 90m, 12h, 7d or 2w")
    amount, unit = match.groups()
    return timedelta(**{_UNITS[unit.lower()]: int(amount)})


def as_utc(moment: datetime) -> datetime:
    """A time without a zone is UTC everywhere in misp-ndr, never the host's local time."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_moment(text: str, now: datetime | None = None) -> datetime:
    """An absolute time, or `now` minus an age."""
    if _AGE.match(text):
        return (now or datetime.now(UTC)) - parse_age(text)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO-8601 time (2026-11-20T08:00Z) nor an age (7d)"
        ) from None
    return as_utc(moment)

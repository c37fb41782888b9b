"""Flowmon ADS: the REST API client, and ADS events normalized into the detection table.

ADS events reach us two ways, the REST API (`FlowmonClient`, `parse_api_events`) and the
batch ADS hands a custom script (`tasks.flowmon_batch`). Both end in `ads_records_to_batch`,
so an event means the same thing whichever way it came: same `detection_id` (the ADS event
id), same priority, same UTC time, hence the same MISP event.

API facts we could not verify (INTEGRATION-FACTS.md marks the event field list unverified),
and what this module assumes, so a mismatch is easy to spot and fix:
- `GET /rest/ads/events` answers a JSON list of events (a dict holding the list under
  `events`, `data` or `items` is accepted too); paging is `limit`/`offset`.
- Event fields: `id`, `type` (method code), `time` ("YYYY-MM-DD HH:MM:SS", appliance clock),
  `detail`, `priority` (1-5 with 5 the most severe, or a name), `source` ({ip} or a string),
  `targets` ([{ip}] or strings). `typeDesc` is used as the method description when present.
- The appliance clock is UTC unless the caller passes its IANA time zone.
- `settings.perspective` made only of digits is a perspective id; anything else is a name
  looked up in `GET /rest/ads/perspectives` ([{id, name}]).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, quote_plus
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import requests

from misp_ndr.config import FlowmonSettings
from misp_ndr.errors import AuthError, ConfigError, RejectedError, TransientError
from misp_ndr.http import build_session, describe_failure, raise_for_answer
from misp_ndr.moments import as_utc
from misp_ndr.task_policy import batch_task
from tasks.detections import (
    PRIORITY_ORDER,
    ParsedBatch,
    ParseProblem,
    Priority,
    empty_detections,
    normalize_detections,
    times_to_utc,
    unpaired_surrogate,
)

log = logging.getLogger(__name__)

SYSTEM = "Flowmon"
SOURCE_SYSTEM = "flowmon"
OAUTH_CLIENT_ID = "invea-tech"
TOKEN_PATH = "/resources/oauth/token"
API_TIME_FORMAT = "%Y-%m-%d %H:%M"

# ADS priority as names (custom scripts, JSON batches) or as API numbers (5 = most severe).
PRIORITY_BY_TEXT: dict[str, Priority] = {
    "critical": Priority.CRITICAL,
    "high": Priority.HIGH,
    "medium": Priority.MEDIUM,
    "low": Priority.LOW,
    "informational": Priority.INFO,
    "information": Priority.INFO,
    "info": Priority.INFO,
    "5": Priority.CRITICAL,
    "4": Priority.HIGH,
    "3": Priority.MEDIUM,
    "2": Priority.LOW,
    "1": Priority.INFO,
}
PRIORITY_RANK: dict[Priority, int] = {
    priority: rank for rank, priority in enumerate(PRIORITY_ORDER)
}

# One row per ADS event, as every ADS input is first reduced to: `position` orders records as
# they came, `where` names the record in problems, `record` is the raw line or event (for the
# problem excerpt), `targets` is a comma-separated address list, everything else is text
# exactly as the sensor wrote it.
ADS_RECORD_COLUMNS = [
    "position", "where", "record", "detection_id", "time", "method", "method_description",
    "priority", "detail", "src_ip", "targets", "protocol", "ports", "sensor",
]

# BLACKLIST "Domain" submethod: the first host name after the word "domain" in the detail.
_DOMAIN_IN_DETAIL = (
    r"(?i)\bdomain\b.*?\b((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
    r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9]))\b"
)
_SINGLE_PORT = r"\d{1,5}"
_DUPLICATE_TARGET = "repeated target of the same event"
_API_EVENT_LIST_KEYS = ("events", "data", "items")


# --- time and text helpers shared by every ADS input ----------------------------------------


def check_timezone(timezone: str) -> str:
    """Fail once, clearly, on a bad time zone instead of once per record."""
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown time zone {timezone!r}: use an IANA name such as UTC or Europe/Prague"
        ) from None
    return timezone


def blank_to_na(values: pd.Series) -> pd.Series:
    """ADS writes an empty tab-separated field as a single space: that is no value."""
    text = values.astype("string").str.strip()
    return text.mask(text == "")


def address_list_text(value: Any) -> str | None:
    """A source or targets value as a comma-separated text, whatever shape it came in:
    "a, b" (custom scripts), ["a", "b"], [{"ip": "a"}] or {"ip": "a"} (REST API)."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        items = [item.get("ip") if isinstance(item, dict) else item for item in value]
        return ",".join(str(item) for item in items if item not in (None, ""))
    return str(value)


def text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def scalar_text(value: Any) -> str | None:
    """A free-text field (method, description, detail, probe) as text; an object, a list or
    a boolean where text belongs is no value, not its Python repr in a MISP event."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    return str(value)


def event_id_problem(value: Any) -> str | None:
    """Why an event's `id` cannot be a detection id: only text and integers identify an
    event (str(True), str([]) or str(1.5) would make up an id, hence a MISP event UUID)."""
    if value is None or isinstance(value, str) or (
            isinstance(value, int) and not isinstance(value, bool)):
        return None
    return f"event id is {json.dumps(value, default=str)[:40]}, not text or an integer"


def excerpt_text(record: Any) -> str:
    return record if isinstance(record, str) else json.dumps(record, default=str)[:200]


# --- ADS events -> detections ---------------------------------------------------------------


def ads_records_to_batch(
    records: pd.DataFrame, timezone: str = "UTC", min_priority: Priority = Priority.INFO
) -> ParsedBatch:
    """The detection table of ADS event records (columns `ADS_RECORD_COLUMNS`).

    A record with no id, an unreadable time or an unknown priority becomes one problem
    naming every reason; events below `min_priority` and repeated targets are counted as
    skipped. `records_read` is left to the caller, who knows what a record was.
    """
    check_timezone(timezone)
    if records.empty:
        return ParsedBatch(empty_detections())
    records = records.sort_values("position", kind="stable").reset_index(drop=True)
    detection_id = blank_to_na(records["detection_id"])
    time_text = blank_to_na(records["time"])
    priority_text = blank_to_na(records["priority"])
    times = times_to_utc(time_text, timezone)
    priority = priority_text.str.lower().map(PRIORITY_BY_TEXT)

    reasons = _joined_reasons([
        (detection_id.isna(), "no event id"),
        (times.isna(), "unreadable time " + _quoted(time_text)),
        (priority.isna(), "unknown priority " + _quoted(priority_text)),
    ])
    problems = _problems(records, reasons)
    valid = reasons.isna().to_numpy()
    skipped: dict[str, int] = {}

    rank = priority.map(PRIORITY_RANK)
    below = valid & (rank < PRIORITY_RANK[min_priority]).fillna(False).to_numpy(dtype=bool)
    if below.any():
        skipped[f"priority below {min_priority.value}"] = int(below.sum())
    keep = valid & ~below

    events = pd.DataFrame({
        "detection_id": detection_id[keep],
        "source_system": SOURCE_SYSTEM,
        "time": times[keep],
        "method": blank_to_na(records["method"])[keep],
        "method_description": blank_to_na(records["method_description"])[keep],
        "priority": priority[keep].astype("string"),
        "src_ip": blank_to_na(records["src_ip"])[keep],
        "targets": records["targets"].astype("string")[keep],
        "protocol": blank_to_na(records["protocol"])[keep],
        "dst_port": _single_port(blank_to_na(records["ports"])[keep]),
        "detail": blank_to_na(records["detail"])[keep],
        "sensor": blank_to_na(records["sensor"])[keep],
    })
    events["domain"] = _blacklisted_domain(events["method"], events["detail"])
    rows, repeated = _one_row_per_target(events)
    if repeated:
        skipped[_DUPLICATE_TARGET] = repeated
    return ParsedBatch(normalize_detections(rows), problems=problems, skipped=skipped)


def _quoted(text: pd.Series) -> pd.Series:
    return ("'" + text.str.slice(0, 40) + "'").fillna("(missing)")


def _joined_reasons(checks: list[tuple[pd.Series, pd.Series | str]]) -> pd.Series:
    """Per row, '; '-joined reasons of the failed checks; NA for a row that passed all."""
    joined: pd.Series | None = None
    for failed, reason in checks:
        part = pd.Series(reason, index=failed.index, dtype="string").where(failed)
        joined = part if joined is None else (joined + "; " + part).fillna(joined).fillna(part)
    assert joined is not None
    return joined


def _problems(records: pd.DataFrame, reasons: pd.Series) -> list[ParseProblem]:
    failed = records[reasons.notna()]
    return [
        ParseProblem.make(where, reason, excerpt_text(record))
        for where, record, reason in zip(
            failed["where"], failed["record"], reasons.dropna(), strict=True
        )
    ]


def _single_port(ports: pd.Series) -> pd.Series:
    """A destination port only when ADS named exactly one: a list cannot go in one cell."""
    single = ports.str.fullmatch(_SINGLE_PORT).fillna(False).astype(bool)
    numbers = pd.to_numeric(ports.where(single), errors="coerce")
    return numbers.where(numbers <= 65535).astype("Int32")


def _blacklisted_domain(method: pd.Series, detail: pd.Series) -> pd.Series:
    """The domain of a BLACKLIST Domain hit, which ADS names only inside the detail text."""
    is_blacklist = method.str.upper().eq("BLACKLIST").fillna(False).astype(bool)
    found = detail.where(is_blacklist).str.extract(_DOMAIN_IN_DETAIL, expand=False)
    return found.astype("string").str.lower().str.rstrip(".")


def _one_row_per_target(events: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Long format: an event with N targets becomes N rows; a target named twice in one
    event (or an event delivered twice) yields one row, the repeat is counted."""
    rows = events.assign(dst_ip=events.pop("targets").str.split(",")).explode("dst_ip")
    rows["dst_ip"] = blank_to_na(rows["dst_ip"])
    key = ["detection_id", "src_ip", "dst_ip"]
    empty_extra = rows["dst_ip"].isna() & rows["detection_id"].duplicated(keep=False)
    repeated = rows.duplicated(key) & ~empty_extra
    return rows[~(empty_extra | repeated)], int(repeated.sum())


# --- REST API events ------------------------------------------------------------------------


def parse_api_events(
    events: list[dict], min_priority: Priority, origin: str = "flowmon api",
    timezone: str = "UTC",
) -> ParsedBatch:
    """The detections of events from `GET /rest/ads/events` (fields: module docstring)."""
    records: list[dict[str, Any]] = []
    problems: list[ParseProblem] = []
    for position, event in enumerate(events, start=1):
        reason = "not a JSON object" if not isinstance(event, dict) else event_id_problem(
            event.get("id"))
        if reason is not None:
            problems.append(ParseProblem.make(
                f"{origin} record {position}", reason, excerpt_text(event)))
            continue
        record = _api_event_record(event, origin, position)
        texts = (value for column, value in record.items() if column != "record")
        if (reason := unpaired_surrogate(texts)) is not None:
            problems.append(ParseProblem.make(record["where"], reason, excerpt_text(event)))
            continue
        records.append(record)
    batch = ads_records_to_batch(
        pd.DataFrame(records, columns=ADS_RECORD_COLUMNS), timezone, min_priority
    )
    return ParsedBatch(batch.detections, problems + batch.problems, len(events), batch.skipped)


def _api_event_record(event: dict[str, Any], origin: str, position: int) -> dict[str, Any]:
    event_id = text_or_none(event.get("id"))
    where = (f"{origin} event {event_id.strip()}" if event_id and event_id.strip()
             else f"{origin} record {position}")
    return {
        "position": position,
        "where": where,
        "record": event,
        "detection_id": event_id,
        "time": text_or_none(event.get("time", event.get("timestamp"))),
        "method": scalar_text(event.get("type")),
        "method_description": scalar_text(event.get("typeDesc")),
        "priority": text_or_none(event.get("priority", event.get("severity"))),
        "detail": scalar_text(event.get("detail")),
        "src_ip": address_list_text(event.get("source")),
        "targets": address_list_text(event.get("targets")),
        "protocol": None,
        "ports": None,
        "sensor": _flow_source_name(event.get("nfSource")),
    }


def _flow_source_name(value: Any) -> str | None:
    """`nfSource` is a name in the events seen; an object would carry it as `name`."""
    return scalar_text(value.get("name") if isinstance(value, dict) else value)


# --- REST API client ------------------------------------------------------------------------


class FlowmonClient:
    """The Flowmon REST API, logged in lazily with OAuth; one re-login on token expiry."""

    def __init__(
        self, settings: FlowmonSettings, session: requests.Session | None = None,
        *, timezone: str = "UTC",
    ) -> None:
        if settings.url is None or not settings.user or settings.password is None:
            raise ConfigError(
                "Flowmon is not configured: set MISP_NDR_FLOWMON__URL, MISP_NDR_FLOWMON__USER "
                "and MISP_NDR_FLOWMON__PASSWORD"
            )
        self._settings = settings
        self._base_url = str(settings.url).rstrip("/")
        self._session = session if session is not None else build_session(settings, SYSTEM)
        self._timezone = check_timezone(timezone)
        self._token: str | None = None
        self._perspective_id: int | None = None

    def __repr__(self) -> str:
        return f"FlowmonClient(url={self._base_url!r}, user={self._settings.user!r})"

    # public API

    def fetch_events(self, since: datetime, until: datetime) -> list[dict]:
        """Every ADS event detected in [since, until], page by page.

        The window is widened to whole minutes (the API's resolution). An event seen on two
        pages (the list shifted while we paged) is kept once; a page adding no new event
        ends the paging, so an appliance that ignores `offset` cannot loop us forever.
        """
        search: dict[str, Any] = {
            "from": self._appliance_minute(since, round_up=False),
            "to": self._appliance_minute(until, round_up=True),
        }
        perspective = self._resolve_perspective()
        if perspective is not None:
            search["perspective"] = perspective
        page_size = self._settings.page_size
        events: list[dict] = []
        seen_ids: set[str] = set()
        offset = 0
        while True:
            page = self._event_page(search, page_size, offset)
            fresh = [event for event in page if _is_new_event(event, seen_ids)]
            events += fresh
            if len(page) < page_size or not fresh:
                return events
            offset += page_size

    def filters(self) -> dict[str, list[str]]:
        """ADS filters by name: {name: [pattern, ...]}."""
        answer = self._get_json("/rest/ads/filters", "the ADS filter list") or []
        filters: dict[str, list[str]] = {}
        for item in _as_list(answer, "the ADS filter list"):
            name = str(item.get("name", "")).strip() if isinstance(item, dict) else ""
            if name:
                filters[name] = _filter_patterns(item.get("patterns"))
        return filters

    def filter_patterns(self, name: str) -> list[str]:
        known = self.filters()
        if name not in known:
            raise ConfigError(
                f"unknown Flowmon ADS filter {name!r}; the appliance has: "
                f"{', '.join(sorted(known)) or 'none'}"
            )
        return known[name]

    # events

    def _event_page(self, search: dict[str, Any], limit: int, offset: int) -> list[Any]:
        params = {"search": json.dumps(search), "limit": limit, "offset": offset}
        answer = self._get_json("/rest/ads/events", "the ADS event list", params) or []
        return _as_list(answer, "the ADS event list")

    def _appliance_minute(self, moment: datetime, *, round_up: bool) -> str:
        """A window bound as the API wants it: minutes, on the appliance clock. A naive
        `moment` is taken as UTC."""
        local = as_utc(moment).astimezone(ZoneInfo(self._timezone))
        minute = local.replace(second=0, microsecond=0)
        if round_up and minute != local:
            minute += timedelta(minutes=1)
        return minute.strftime(API_TIME_FORMAT)

    def _resolve_perspective(self) -> int | None:
        wanted = (self._settings.perspective or "").strip()
        if not wanted:
            return None
        if wanted.isdigit():
            return int(wanted)
        if self._perspective_id is None:
            self._perspective_id = self._perspective_id_by_name(wanted)
        return self._perspective_id

    def _perspective_id_by_name(self, wanted: str) -> int:
        answer = self._get_json("/rest/ads/perspectives", "the ADS perspective list") or []
        perspectives = {
            str(item.get("name", "")).strip(): item.get("id")
            for item in _as_list(answer, "the ADS perspective list")
            if isinstance(item, dict)
        }
        matches = [pid for name, pid in perspectives.items() if name == wanted] or [
            pid for name, pid in perspectives.items() if name.casefold() == wanted.casefold()
        ]
        if not matches or not str(matches[0]).isdigit():
            raise ConfigError(
                f"unknown Flowmon ADS perspective {wanted!r} in MISP_NDR_FLOWMON__PERSPECTIVE; "
                f"the appliance has: {', '.join(sorted(perspectives)) or 'none'}"
            )
        return int(matches[0])

    # HTTP

    def _get_json(self, path: str, what: str, params: dict[str, Any] | None = None) -> Any:
        """A GET with the bearer token; after a 401 log in again once, then give up."""
        if self._token is None:
            self._login()
        answer = self._send("GET", path, what, params=params, authorized=True)
        if answer.status_code == 401:
            log.info("Flowmon refused the token (expired?); logging in again")
            self._login()
            answer = self._send("GET", path, what, params=params, authorized=True)
        self._raise_unless_ok(answer, what)
        if answer.status_code == 204 or not answer.content:
            return None
        try:
            return answer.json()
        except RecursionError:
            raise RejectedError(f"{SYSTEM} answered {what} with JSON nested too deeply to "
                                "read") from None
        except ValueError:
            raise RejectedError(
                f"{SYSTEM} answered {what} with something that is not JSON: check that "
                "MISP_NDR_FLOWMON__URL is the appliance's base URL"
            ) from None

    def _login(self) -> None:
        assert self._settings.password is not None  # checked in __init__
        form = {
            "grant_type": "password",
            "client_id": OAUTH_CLIENT_ID,
            "username": self._settings.user,
            "password": self._settings.password.get_secret_value(),
        }
        self._token = None
        answer = self._send("POST", TOKEN_PATH, "the login", data=form, authorized=False)
        if answer.status_code in (400, 401, 403):
            raise AuthError(
                f"{SYSTEM} refused the login of user {self._settings.user!r} "
                f"(HTTP {answer.status_code}{_oauth_error(answer)}): check "
                "MISP_NDR_FLOWMON__USER and MISP_NDR_FLOWMON__PASSWORD"
            )
        if answer.status_code >= 400:  # no body: a login page may echo the form it was sent
            raise_for_answer(answer.status_code, SYSTEM, "the login")
        try:
            token = answer.json().get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise AuthError(f"{SYSTEM} accepted the login but sent no access_token")
        self._token = token

    def _send(
        self, method: str, path: str, what: str, *, authorized: bool,
        params: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
    ) -> requests.Response:
        headers = {"Accept": "application/json"}
        if authorized:
            headers["Authorization"] = f"bearer {self._token}"
        try:
            return self._session.request(
                method, self._base_url + path, params=params, data=data, headers=headers,
                timeout=self._settings.timeout,
            )
        except requests.exceptions.SSLError as exc:
            raise ConfigError(f"{SYSTEM} {what} at {self._base_url}: "
                              f"{describe_failure(exc)}") from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientError(f"{SYSTEM} {what} at {self._base_url} failed: "
                                 f"{describe_failure(exc)}") from None

    def _raise_unless_ok(self, answer: requests.Response, what: str) -> None:
        if answer.status_code >= 400:
            raise_for_answer(answer.status_code, SYSTEM, what, self._redacted(answer.text))

    def _redacted(self, text: str) -> str:
        """An answer body fit for a message: some servers echo what they were sent."""
        assert self._settings.password is not None
        for secret in (self._settings.password.get_secret_value(), self._token):
            for form in {secret, quote(secret or "", safe=""), quote_plus(secret or "")}:
                if form:
                    text = text.replace(form, "***")
        return text


def _is_new_event(event: Any, seen_ids: set[str]) -> bool:
    """Events without an id are kept (they become problems later), never merged."""
    if not isinstance(event, dict) or event.get("id") is None:
        return True
    key = str(event["id"])
    if key in seen_ids:
        return False
    seen_ids.add(key)
    return True


def _as_list(answer: Any, what: str) -> list[Any]:
    if isinstance(answer, list):
        return answer
    if isinstance(answer, dict):
        for key in _API_EVENT_LIST_KEYS:
            if isinstance(answer.get(key), list):
                return answer[key]
    raise RejectedError(f"{SYSTEM} answered {what} with an unexpected shape "
                        f"({type(answer).__name__}, not a list)")


def _filter_patterns(patterns: Any) -> list[str]:
    items: Iterable[Any] = patterns if isinstance(patterns, list) else []
    texts = (item.get("pattern") if isinstance(item, dict) else item for item in items)
    return [str(text).strip() for text in texts if text is not None and str(text).strip()]


def _oauth_error(answer: requests.Response) -> str:
    """The OAuth error code (e.g. invalid_grant), never the free-text body."""
    try:
        code = answer.json().get("error")
    except (ValueError, AttributeError):
        return ""
    return f", {code}" if isinstance(code, str) and re.fullmatch(r"[a-z_]{1,40}", code) else ""


def fetch_flowmon_detections(
    flowmon: FlowmonSettings, since: datetime, until: datetime,
    min_priority: Priority | None = None,
) -> ParsedBatch:
    """The window's events as detections, read on the appliance's clock, at `min_priority`
    (default: the configured one; the sightings job wants every blacklist hit)."""
    events = FlowmonClient(flowmon, timezone=flowmon.timezone).fetch_events(since, until)
    priority = min_priority or Priority(flowmon.min_priority)
    return parse_api_events(events, priority, timezone=flowmon.timezone)


fetch_flowmon_detections_task = batch_task(
    fetch_flowmon_detections, "fetch-flowmon-detections", remote=True
)

"""What each hook accepts: the batch format of the job's source, and typed run options.

A payload is read with the job's own parser before anything is kept: a body with no readable
record is refused (422, naming the first problem); a body with some bad records is accepted,
the bad ones reported in the answer and again in the run's report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deployments.definitions import Job
from misp_ndr.config import (
    Distribution,
    ExportSettings,
    FlowmonSettings,
    SightingsSettings,
    split_filter_list,
)
from misp_ndr.errors import ConfigError
from tasks.csv_hits import parse_hit_text
from tasks.detections import ParseProblem
from tasks.flowmon_batch import parse_custom_script_batch
from tasks.suricata import parse_eve_lines

PROBLEMS_SHOWN = 5


class PayloadError(ValueError):
    """The request cannot become a run; the message says why (sent back as a 4xx)."""


class ExportOptions(BaseModel):
    """Query parameters of `POST /hooks/export`: the export flow's per-run overrides."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["flowmon-stdin", "suricata"] = "flowmon-stdin"
    timezone: str | None = None
    tag: str | None = None
    to_ids: bool | None = None
    distribution: Distribution | None = None
    ip_filters: list[str] | None = None
    publish: bool | None = None


class SightingsOptions(BaseModel):
    """Query parameters of `POST /hooks/sightings`."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["flowmon-stdin", "suricata", "csv"] = "flowmon-stdin"
    timezone: str | None = None
    source_name: str | None = None
    window_minutes: int | None = None


class UpdateRulesOptions(BaseModel):
    """JSON body of `POST /hooks/update-rules` (may be empty): a manual run's options."""

    model_config = ConfigDict(extra="forbid")

    since: datetime | None = None
    until: datetime | None = None
    max_age_days: int | None = Field(None, ge=1, le=3650)
    tags: list[str] | None = None
    exclude_tags: list[str] | None = None
    fast: bool = False


@dataclass
class CheckedPayload:
    """A payload fit to run: the flow parameters (without the spooled file's path yet) and
    what reading it found."""

    parameters: dict[str, Any]
    records: int = 0
    problems: list[ParseProblem] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"records": self.records, "problems": len(self.problems),
                "first_problems": [f"{p.source}: {p.reason}"
                                   for p in self.problems[:PROBLEMS_SHOWN]]}


def check_payload(job: Job, query: list[tuple[str, str]], body: bytes) -> CheckedPayload:
    """Options validated, batch read; PayloadError naming the problem otherwise."""
    if job is Job.UPDATE_RULES:
        return _update_rules_payload(query, body)
    options = _options(ExportOptions if job is Job.EXPORT else SightingsOptions, query)
    batch = _read_batch(options.source, _text(body), options.timezone)
    if batch.records_read == 0:
        raise PayloadError(f"empty {options.source} batch: no record to process")
    if len(batch.problems) >= batch.records_read:
        first = batch.problems[0]
        raise PayloadError(f"no readable record in the {options.source} batch "
                           f"({batch.records_read} read; {first.source}: {first.reason})")
    return CheckedPayload(options.model_dump(mode="json", exclude_none=True),
                          batch.records_read, batch.problems)


def _read_batch(source: str, text: str, timezone: str | None) -> Any:
    origin = f"posted {source} batch"
    if source == "suricata":
        # Not splitlines(): it also breaks at U+2028/U+2029/U+0085, legal raw in JSON strings.
        return parse_eve_lines(text.split("\n"), origin)
    if source == "csv":
        return parse_hit_text(text, origin)
    try:
        return parse_custom_script_batch(text, origin, timezone or "UTC")
    except ConfigError as exc:
        raise PayloadError(f"timezone: {exc}") from None


def _update_rules_payload(query: list[tuple[str, str]], body: bytes) -> CheckedPayload:
    if query:
        names = ", ".join(sorted({name for name, _ in query}))
        raise PayloadError("update-rules takes its options as a JSON body, not as query "
                           f"parameters ({names})")
    try:
        options = UpdateRulesOptions.model_validate_json(body.strip() or b"{}")
    except ValidationError as exc:
        raise PayloadError(_first_error(exc)) from None
    return CheckedPayload(options.model_dump(mode="json", exclude_none=True))


# Option -> the settings field whose validators it must pass before the run is accepted: a
# run created with a value its flow refuses would fail after the sensor dropped its copy.
SETTINGS_OF_OPTION: dict[str, tuple[type[BaseModel], str]] = {
    "tag": (ExportSettings, "tag"), "ip_filters": (ExportSettings, "ip_filters"),
    "source_name": (SightingsSettings, "source"), "timezone": (FlowmonSettings, "timezone"),
    "window_minutes": (SightingsSettings, "window_minutes"),
}


def _options(model: type[BaseModel], query: list[tuple[str, str]]) -> Any:
    """Query items to a model: `ip_filters` may repeat and hold comma-separated entries."""
    values: dict[str, Any] = {}
    for name, value in query:
        if name == "ip_filters":
            values.setdefault(name, []).extend(_filter_list(value))
        elif name in values:
            raise PayloadError(f"{name}: given more than once")
        else:
            values[name] = value
    try:
        options = model.model_validate(values)
    except ValidationError as exc:
        raise PayloadError(_first_error(exc)) from None
    for name, (settings_model, field_name) in SETTINGS_OF_OPTION.items():
        if getattr(options, name, None) is not None:
            _check_as_setting(name, settings_model, field_name, getattr(options, name))
    return options


def _filter_list(text: str) -> list[str]:
    try:
        return split_filter_list(text)
    except ValueError as exc:  # a malformed JSON list
        raise PayloadError(f"ip_filters: {exc}") from None


def _check_as_setting(option: str, model: type[BaseModel], field_name: str, value: Any) -> None:
    try:
        model.model_validate({field_name: value})
    except ValidationError as exc:
        raise PayloadError(f"{option}: {_first_error(exc).split(': ', 1)[1]}") from None


def _first_error(exc: ValidationError) -> str:
    item = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in item["loc"]) or "body"
    return f"{where}: {item['msg'].removeprefix('Value error, ')}"


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"the body is not UTF-8 text (byte {exc.start})") from None

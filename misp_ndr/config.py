"""One settings tree for every job, read from `MISP_NDR_*` env vars and `.env`.

Built when a command or flow starts (never at import), so tests and typed flow parameters
can override any field. Invalid values raise `ConfigError` before any network call, naming
the env var to fix; secret values never appear in that message.
"""

from __future__ import annotations

import json
import re
from datetime import date, time
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from misp_ndr.errors import ConfigError
from misp_ndr.secret_blocks import resolve_secret_reference

ENV_PREFIX = "MISP_NDR_"
MIN_TOKEN_CHARS = 16
PLACEHOLDER_SECRETS = {
    "changeme", "change-me", "your-api-key", "api-key", "secret", "xxx", "password",
}


class Distribution(IntEnum):
    """MISP event distribution levels the mission allows (sharing groups are out of scope)."""

    OWN_ORGANISATION = 0
    COMMUNITY = 1
    CONNECTED_COMMUNITIES = 2
    ALL_COMMUNITIES = 3


def _usable_secret(secret: SecretStr | None, what: str) -> SecretStr | None:
    """Also where a `prefect-secret:<block>` reference is replaced by the block's value."""
    secret = resolve_secret_reference(secret)
    if secret is not None and secret.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
        raise ValueError(f"{what} is a placeholder; set the real one")
    return secret


class TlsClientSettings(BaseModel):
    """HTTP client options shared by every remote system we talk to."""

    model_config = ConfigDict(extra="forbid")

    verify_tls: bool = True
    ca_bundle: Path | None = None
    timeout: float = Field(30.0, gt=0, le=600, description="seconds per HTTP request")
    retries: int = Field(4, ge=0, le=20, description="retries of one request on transient errors")
    retry_backoff: float = Field(
        1.0, ge=0, le=60, description="first retry delay in seconds; doubles each retry, jittered"
    )

    @field_validator("ca_bundle")
    @classmethod
    def _ca_bundle_exists(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"CA bundle {path} is not a readable file")
        return path

    @property
    def requests_verify(self) -> bool | str:
        """The `verify` argument `requests` expects: a CA bundle path wins over the flag."""
        if self.ca_bundle is not None:
            return str(self.ca_bundle)
        return self.verify_tls


class MispSettings(TlsClientSettings):
    url: HttpUrl | None = Field(None, description="MISP base URL; unset = write a MISP feed")
    api_key: SecretStr | None = None
    concurrency: int = Field(
        4, ge=1, le=32, description="requests in flight at once when sending events or "
        "sightings and when pulling attribute pages; MISP's web workers are the limit")

    @field_validator("api_key")
    @classmethod
    def _api_key_not_placeholder(cls, key: SecretStr | None) -> SecretStr | None:
        return _usable_secret(key, "the MISP API key")

    @model_validator(mode="after")
    def _key_with_url(self) -> MispSettings:
        if self.url is not None and not self.api_key:
            raise ValueError("api_key is required when url is set (MISP_NDR_MISP__API_KEY)")
        return self

    @property
    def configured(self) -> bool:
        return self.url is not None


class FlowmonSettings(TlsClientSettings):
    url: HttpUrl | None = Field(None, description="Flowmon appliance base URL")
    user: str | None = None
    password: SecretStr | None = None
    perspective: str | None = Field(None, description="ADS perspective name or id for events")
    min_priority: Literal["critical", "high", "medium", "low", "info"] = "low"
    timezone: str = Field(
        "UTC", description="IANA zone of the appliance clock: ADS writes times without offset"
    )
    page_size: int = Field(1000, ge=1, le=10000)
    filter_cache_seconds: int = Field(3600, ge=0, description="how long ADS filters are cached")
    first_run_lookback_hours: int = Field(
        24, ge=1, le=24 * 90, description="window of the first API export, with no watermark yet"
    )
    window_overlap_minutes: int = Field(
        15, ge=0, le=24 * 60, description="re-read this much before the watermark: ADS stores "
        "events minutes after their detection time; re-reads are idempotent",
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {zone!r}") from None
        return zone

    @field_validator("password")
    @classmethod
    def _password_not_placeholder(cls, password: SecretStr | None) -> SecretStr | None:
        return _usable_secret(password, "the Flowmon password")

    @model_validator(mode="after")
    def _credentials_with_url(self) -> FlowmonSettings:
        if self.url is not None and not (self.user and self.password):
            raise ValueError(
                "user and password are required when url is set "
                "(MISP_NDR_FLOWMON__USER, MISP_NDR_FLOWMON__PASSWORD)"
            )
        return self

    @property
    def configured(self) -> bool:
        return self.url is not None


def split_filter_list(text: str) -> list[str]:
    """A comma-separated (or JSON) list of IP filters, as env vars and query strings give it."""
    stripped = text.strip()
    if stripped.startswith("["):
        return json.loads(stripped)
    # commas inside {1,5,9} belong to an ADS pattern, not to the list
    return [part.strip() for part in re.split(r",(?![^{]*\})", stripped) if part.strip()]


class ExportSettings(BaseModel):
    """What an exported MISP event looks like."""

    model_config = ConfigDict(extra="forbid")

    tag: str = Field("misp-ndr", min_length=1, description="tag put on every exported event")
    method_tag_template: str = Field(
        '{source}:method="{method}"',
        description="second tag naming the detection method; '{method}' alone mimics the seed",
    )
    to_ids: bool = Field(False, description="IDS flag on exported attributes (0/1, true/false)")
    distribution: Distribution = Distribution.OWN_ORGANISATION
    ip_filters: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated ADS filter names or IP / CIDR / a.b.c.* / range patterns",
    )
    publish: bool = True
    threat_level: Literal["auto", 1, 2, 3, 4] = Field(
        "auto", description="'auto' follows detection priority; 1 high .. 4 undefined"
    )
    analysis: Literal[0, 1, 2] = Field(0, description="0 initial, 1 ongoing, 2 completed")
    poll_minutes: int = Field(
        0, ge=0, le=24 * 60, description="deployed: export from the Flowmon ADS API every N "
        "minutes (0: no polling schedule)")

    @field_validator("ip_filters", mode="before")
    @classmethod
    def _split_filters(cls, value: Any) -> Any:
        return split_filter_list(value) if isinstance(value, str) else value

    @field_validator("ip_filters")
    @classmethod
    def _valid_literals(cls, entries: list[str]) -> list[str]:
        from tasks.ip_addresses import validate_filter_entry  # the one place patterns are parsed

        for entry in entries:
            validate_filter_entry(entry)
        return entries

    @field_validator("threat_level", mode="before")
    @classmethod
    def _threat_level_int(cls, value: Any) -> Any:
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("analysis", mode="before")
    @classmethod
    def _analysis_int(cls, value: Any) -> Any:
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("method_tag_template")
    @classmethod
    def _template_fields(cls, template: str) -> str:
        try:
            template.format(source="flowmon", method="SCANS")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"may only use {{source}} and {{method}} ({exc})") from None
        return template


class RulesSettings(BaseModel):
    """The rule update job: what to pull from MISP, what to write for the sensors."""

    model_config = ConfigDict(extra="forbid")

    output_dir: Path = Field(Path("out/rules"), description="where rule files are written")
    suricata: bool = Field(True, description="write the Suricata rules file and its lists")
    flowmon: bool = Field(True, description="write Flowmon ADS blacklist files")
    zeek: bool = Field(True, description="write the Zeek Intel framework file")
    event_tags: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated: pull only events with one of these")
    exclude_tags: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated: never pull events with these")
    max_event_age_days: int = Field(30, ge=1, le=3650, description="older events are left out")
    published_only: bool = True
    enforce_warninglists: bool = Field(True, description="MISP drops known-benign values")
    page_size: int = Field(5000, ge=100, le=50000, description="attributes per restSearch page")
    sid_range_start: int = Field(1_000_000, ge=1)
    sid_range_end: int = Field(1_999_999, ge=1)
    dataset_threshold: int = Field(
        10_000, ge=1, description="beyond this many IPs (or domains), use datasets / IP "
        "reputation instead of one rule each")
    history_keep: int = Field(5, ge=1, le=100, description="previous rulesets kept for rollback")
    customizations_file: Path = Field(
        Path("rule-customizations.conf"), description="local disables, thresholds, modifications")
    reload_command: str | None = Field(
        None, description="run after a successful write, e.g. 'suricatasc -c reload-rules'")
    schedule_start_date: date | None = Field(None, description="first automatic update (UTC)")
    schedule_time_utc: time = Field(time(3, 0), description="time of day of automatic updates")
    schedule_every_days: int = Field(1, ge=1, le=365)
    schedule_active: bool = Field(True, description="deployed: the automatic update runs")

    @field_validator("event_tags", "exclude_tags", mode="before")
    @classmethod
    def _split_tags(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _sid_range_order(self) -> RulesSettings:
        if self.sid_range_end - self.sid_range_start < 1000:
            raise ValueError("sid_range_end must be at least 1000 above sid_range_start "
                             "(MISP_NDR_RULES__SID_RANGE_START / _END)")
        return self


class SightingsSettings(BaseModel):
    """The sightings job: sensor hits on MISP indicators become MISP sightings."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        "{sensor}", min_length=1, max_length=255,
        description="sighting source; {sensor} becomes the sensor's name, e.g. suricata/ids-1",
    )
    window_minutes: int = Field(
        60, ge=0, le=7 * 24 * 60, description="at most one sighting per indicator per sensor "
        "in each window of this many minutes (0: one per distinct second)",
    )
    flowmon_blacklists: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["misp*"], min_length=1,
        description="comma-separated ADS blacklist names (case-insensitive, * and ? "
        "wildcards) that hold MISP indicators; hits on other blacklists are not sightings",
    )
    out_file: Path = Field(
        Path("out/sightings.jsonl"),
        description="with no MISP configured, sightings are appended here as JSON lines",
    )
    poll_minutes: int = Field(
        0, ge=0, le=24 * 60, description="deployed: read ADS BLACKLIST hits from the Flowmon "
        "API every N minutes (0: no polling schedule)")

    @field_validator("flowmon_blacklists", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("source")
    @classmethod
    def _printable_source(cls, source: str) -> str:
        if not source.isprintable() or not source.strip():
            raise ValueError("must be printable text on one line")
        return source.strip()


class WebhookSettings(BaseModel):
    """`misp-ndr webhook`: the HTTP receiver sensors post their batches to."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", min_length=1, description="address to listen on")
    port: int = Field(8181, ge=1, le=65535)
    token: SecretStr | None = Field(
        None, description="shared secret: a bearer token, or the key of an HMAC-SHA256 "
        "body signature; unset = the receiver refuses to start")
    max_body_bytes: int = Field(64 * 2**20, ge=1024, le=2**31, description="larger bodies: 413")
    signature_max_age_seconds: int = Field(
        300, ge=10, le=3600, description="signed requests older (or newer) than this are "
        "refused as replays")
    spool_dir: Path | None = Field(
        None, description="where payloads are kept until their run succeeds; default "
        "<state_dir>/webhook-spool; the workers must see the same path")
    tls_cert: Path | None = Field(None, description="PEM certificate: serve HTTPS")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")

    @field_validator("token")
    @classmethod
    def _strong_token(cls, token: SecretStr | None) -> SecretStr | None:
        token = _usable_secret(token, "the webhook token")
        if token is not None and len(token.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(f"the webhook token needs at least {MIN_TOKEN_CHARS} characters "
                             "(e.g. the output of: openssl rand -hex 32)")
        return token

    @field_validator("tls_cert", "tls_key")
    @classmethod
    def _readable(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"{path} is not a readable file")
        return path

    @model_validator(mode="after")
    def _cert_with_key(self) -> WebhookSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both tls_cert and tls_key, or neither "
                             "(MISP_NDR_WEBHOOK__TLS_CERT, MISP_NDR_WEBHOOK__TLS_KEY)")
        return self


class DeploySettings(BaseModel):
    """`misp-ndr deploy`: how the three jobs are registered with a Prefect server."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("misp-ndr", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="deployment name, the same for the three flows")
    work_pool: str = Field("misp-ndr", min_length=1,
                           description="process work pool the workers poll; created if missing")
    working_dir: Path | None = Field(
        None, description="directory flow runs start in on the workers (relative settings "
        "paths resolve there); default: the directory misp-ndr deploy runs in")


class Settings(BaseSettings):
    """The whole configuration. Env: MISP_NDR_<SECTION>__<FIELD>, e.g. MISP_NDR_MISP__URL."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    misp: MispSettings = Field(default_factory=MispSettings)
    flowmon: FlowmonSettings = Field(default_factory=FlowmonSettings)
    export: ExportSettings = Field(default_factory=ExportSettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    sightings: SightingsSettings = Field(default_factory=SightingsSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    deploy: DeploySettings = Field(default_factory=DeploySettings)
    state_dir: Path = Field(
        Path(".misp-ndr"),
        description="run watermarks, export and sighting ledgers, spooled input batches",
    )


FIX_HINTS: dict[str, str] = {
    "distribution": "use 0 (own organisation), 1 (community), 2 (connected) or 3 (all)",
    "to_ids": "use 1/0, true/false, yes/no",
    "url": "use a full URL such as https://misp.example.org",
    "ip_filters": "use ADS filter names or IP, CIDR, a.b.c.*, a.b.c.[x-y] or start-end patterns",
    "threat_level": "use auto, or 1 (high), 2 (medium), 3 (low), 4 (undefined)",
    "analysis": "use 0 (initial), 1 (ongoing) or 2 (completed)",
    "timezone": "use an IANA name such as UTC or Europe/Prague",
}


def env_var_name(location: tuple[int | str, ...]) -> str:
    """`('misp', 'url')` -> `MISP_NDR_MISP__URL`: the name a user edits to fix it."""
    parts = [str(part) for part in location if not isinstance(part, int)]
    return ENV_PREFIX + "__".join(parts).upper()


def describe_validation_error(error: ValidationError) -> str:
    """One line per bad field: env var, problem, fix. Never echoes the rejected value of a
    secret field, and never a value at all for secrets validated at model level."""
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        location = tuple(item["loc"])
        field = str(location[-1]) if location else "settings"
        message = item["msg"].removeprefix("Value error, ")
        hint = FIX_HINTS.get(field)
        lines.append(f"{env_var_name(location)}: {message}" + (f" (fix: {hint})" if hint else ""))
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """Env and `.env`, then per-run overrides (nested dicts; `None` values mean 'keep')."""
    try:
        return Settings(**_drop_none(overrides or {}))
    except ValidationError as exc:
        message = describe_validation_error(exc)
    except SettingsError as exc:  # a section given as JSON that is not (MISP_NDR_MISP={...)
        message = f"invalid configuration: {exc}; fix the JSON or set each field alone"
    # Raised outside the handler: the ValidationError holds every rejected input (a key in
    # a misspelt variable, a token too short), the JSON error the whole text, key included;
    # `from None` would still keep them on the ConfigError as __context__, for any error
    # reporter that walks the chain.
    raise ConfigError(message)


def _drop_none(tree: dict[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            nested = _drop_none(value)
            if nested:
                cleaned[key] = nested
        elif value is not None:
            cleaned[key] = value
    return cleaned


# The seed scripts' custom-script parameters, and where each lives in the settings tree.
SEED_PARAMETERS: dict[str, tuple[str, str]] = {
    "misp_server": ("misp", "url"),
    "misp_api_key": ("misp", "api_key"),
    "misp_tag": ("export", "tag"),
    "misp_ids": ("export", "to_ids"),
    "misp_distribution": ("export", "distribution"),
    "flowmon_filters": ("export", "ip_filters"),
    "flowmon_user": ("flowmon", "user"),
    "flowmon_pass": ("flowmon", "password"),
    "source": ("sightings", "source"),  # misp_sighting_script.bash
}


def overrides_from_seed_parameters(params: dict[str, str]) -> dict[str, Any]:
    """Turn the seed scripts' `--name value` parameters into settings overrides."""
    unknown = sorted(set(params) - set(SEED_PARAMETERS))
    if unknown:
        raise ConfigError(
            f"unknown seed parameter(s) {', '.join(unknown)}; known: {', '.join(SEED_PARAMETERS)}"
        )
    tree: dict[str, Any] = {}
    for name, value in params.items():
        section, field = SEED_PARAMETERS[name]
        tree.setdefault(section, {})[field] = value
    return tree


def masked_settings(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, secrets shown as '**********' (or unset)."""
    return json.loads(settings.model_dump_json())

"""The one wrapper around PyMISP: timeouts, retries, TLS and MISP's quiet failures.

PyMISP has no timeout by default, answers most 4xx as a dict with `errors` instead of
raising, and MISP itself drops tags (and the published flag) it does not let the key set,
without an error. Everything here checks each answer and turns failures into our error
types: `TransientError` (retry later), `AuthError` (fix the key or its role), or a
`PushResult` with status "failed" for one event MISP refused (the batch goes on).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import requests
from pydantic import SecretStr
from pymisp import MISPTag, PyMISP
from pymisp.exceptions import MISPServerError, PyMISPError, PyMISPUnexpectedResponse

from misp_ndr.config import MispSettings
from misp_ndr.errors import (
    AuthError,
    ConfigError,
    MispNdrError,
    RejectedError,
    TransientError,
)
from misp_ndr.http import (
    TRANSIENT_STATUSES,
    describe_failure,
    raise_for_answer,
    retrying_adapter,
    warn_if_insecure,
    write_once_adapter,
)
from misp_ndr.log_redaction import redact_secret_in_logger
from tasks.misp_events import EventDraft

SYSTEM = "MISP"
TOOL_NAME = "misp-ndr"
MAX_DETAIL_CHARS = 300
TAG_PERMISSIONS = (
    "the API key's role needs the Tagger permission (perm_tagger) to attach tags and "
    "Tag Editor (perm_tag_editor) to create them; or create the tag in MISP first"
)
_STATUS_IN_PYMISP_MESSAGE = re.compile(r"\((\d{3}), ")
_ERROR_CODE_IN_PYMISP_MESSAGE = re.compile(r"Error code (\d{3})")

PushStatus = Literal["created", "updated", "failed"]
ATTRIBUTE_SEARCH_PATH = "attributes/restSearch"
SIGHTING_ADD_PATH = "sightings/add"
SIGHTING_SEARCH_PATH = "sightings/restSearch"
# MISP's answer when no visible attribute matches a sighting's UUID or value (and filters):
# HTTP 200 with a message on 2.4.1xx+/2.5, a 403 "Could not add" on older versions.
NO_MATCHING_ATTRIBUTE = "no valid attributes found"
SightingStatus = Literal["added", "unknown", "failed"]


class UnexpectedAnswerError(MispNdrError):
    """MISP answered 200 with something that is not what was asked for (a proxy page, an
    error in an unexpected shape, a list where an object belongs). Not transient, and never
    to be read as "nothing found": an empty result that is not one would empty a ruleset."""


@dataclass(frozen=True)
class PushResult:
    uuid: str
    status: PushStatus
    reason: str = ""  # why it failed; for a success, what MISP did differently (if anything)


@dataclass(frozen=True)
class SightingResult:
    status: SightingStatus  # unknown: MISP has no attribute matching it
    reason: str = ""


@dataclass(frozen=True)
class ServerCheck:
    """What `misp-ndr check` reports: can this key do what the jobs need?"""

    url: str
    reachable: bool
    key_accepted: bool = False
    version: str = ""
    user: str = ""
    organisation: str = ""
    role: str = ""
    can_add_events: bool = False
    can_create_tags: bool = False
    can_tag_events: bool = False
    can_add_sightings: bool = False
    can_publish: bool = False
    error: str = ""

    @property
    def healthy(self) -> bool:
        """The export works: events can be added and tagged (tags can be created
        beforehand, publishing and sightings are reported but not required)."""
        return self.reachable and self.key_accepted and self.can_add_events and \
            self.can_tag_events

    def permission_lines(self) -> list[tuple[str, bool, str]]:
        """(capability, granted, consequence when missing)."""
        return [
            ("add events (perm_add)", self.can_add_events, "exports fail"),
            ("tag events (perm_tagger)", self.can_tag_events,
             "exported events would lose their tags, so exports fail"),
            ("create tags (perm_tag_editor)", self.can_create_tags,
             "create the export tags in MISP once, by hand"),
            ("publish events (perm_publish)", self.can_publish,
             "exported events stay unpublished"),
            ("add sightings (perm_sighting)", self.can_add_sightings,
             "the sightings job fails"),
        ]

    def render_text(self) -> str:
        head = f"MISP {self.url}: "
        if not self.reachable:
            return head + f"UNREACHABLE: {self.error}"
        if not self.key_accepted:
            return head + f"reachable, but the API key was REJECTED: {self.error}"
        lines = [head + f"reachable, MISP {self.version}, API key accepted",
                 f"  user {self.user}, organisation {self.organisation}, role {self.role}"]
        for capability, granted, consequence in self.permission_lines():
            verdict = "yes" if granted else f"NO ({consequence})"
            lines.append(f"  {capability:<32} {verdict}")
        return "\n".join(lines)


class MispClient:
    """Connects on first use: PyMISP's constructor already makes several requests."""

    def __init__(self, settings: MispSettings) -> None:
        if settings.url is None or settings.api_key is None:
            raise ConfigError("MISP is not configured: set MISP_NDR_MISP__URL and "
                              "MISP_NDR_MISP__API_KEY")
        self._settings = settings
        self._api_key: SecretStr = settings.api_key
        self._url = str(settings.url)
        self._api: PyMISP | None = None

    def __repr__(self) -> str:
        return f"MispClient(url={self._url!r})"

    # --- public operations -------------------------------------------------------------

    def server_check(self) -> ServerCheck:
        try:
            version = self._checked("reading its version",
                                    lambda: self._connected().misp_instance_version)
            me = self._checked("reading the API key's user",
                               lambda: self._connected().get_user("me"))
        except TransientError as exc:
            return ServerCheck(self._url, reachable=False, error=str(exc))
        except AuthError as exc:
            return ServerCheck(self._url, reachable=True, error=str(exc))
        user, role = me.get("User") or {}, me.get("Role") or {}
        organisation = (me.get("Organisation") or {}).get("name")
        return ServerCheck(
            url=self._url,
            reachable=True,
            key_accepted=True,
            version=str(version.get("version", "unknown")),
            user=str(user.get("email", "?")),
            organisation=str(organisation or f"#{user.get('org_id', '?')}"),
            role=str(role.get("name", "?")),
            can_add_events=_granted(role, "perm_add"),
            can_create_tags=_granted(role, "perm_tag_editor"),
            can_tag_events=_granted(role, "perm_tagger"),
            can_add_sightings=_granted(role, "perm_sighting"),
            can_publish=_granted(role, "perm_publish"),
        )

    def ensure_tag(self, name: str) -> None:
        """Make sure the tag exists before events name it: MISP silently drops event tags
        it would have to create for a key that may not."""
        api = self._connected()
        found = self._checked(f"searching tag {name!r}",
                              lambda: api.search_tags(name, strict_tagname=True))
        if isinstance(found, list) and any(
            _tag_name(item).casefold() == name.casefold() for item in found
        ):
            return
        tag = MISPTag()
        tag.name = name
        created = self._request(f"creating tag {name!r}", lambda: api.add_tag(tag))
        error = _answer_error(created)
        if error is None:
            return
        status, detail = error
        if status in TRANSIENT_STATUSES:
            raise_for_answer(status, SYSTEM, f"creating tag {name!r}", self._summary(detail))
        raise AuthError(
            f"tag {name!r} does not exist on MISP {self._url} and this API key may not "
            f"create it (HTTP {status}: {self._summary(detail)}): give its role the Tag "
            f"Editor permission (perm_tag_editor), or create the tag in MISP"
        )

    def push_event(self, draft: EventDraft) -> PushResult:
        """Create the event in one call (attributes, tags, published flag together); if
        MISP already has its UUID (an earlier run), update it with the same content."""
        api = self._connected()
        action, status = "adding", "created"
        answer = self._request(f"adding event {draft.uuid}", lambda: api.add_event(draft.event))
        if _already_exists(answer):
            action, status = "updating", "updated"
            answer = self._request(
                f"updating event {draft.uuid}",
                lambda: api.update_event(content_for_update(draft.event), event_id=draft.uuid),
            )
        try:
            stored = self._stored_event(action, draft.uuid, answer)
        except RejectedError as exc:
            return PushResult(draft.uuid, "failed", str(exc))
        problem = self._lost_content(draft, stored)
        if problem:
            return PushResult(draft.uuid, "failed", problem)
        return PushResult(draft.uuid, status, self._publish_note(draft, stored))

    def search_attributes(self, filters: dict[str, Any], page: int,
                          limit: int) -> list[dict[str, Any]]:
        """One page of `/attributes/restSearch`: the attributes as MISP sends them.

        The body goes through PyMISP's `direct_call` as given (JSON, with `Content-Type:
        application/json`, without which MISP ignores the filters): `PyMISP.search` would
        rewrite it (it refuses `to_ids: [0, 1]` and adds its own defaults). An empty list
        means MISP said `{"response": {"Attribute": []}}` (or `{"response": []}` on old
        versions), nothing else does."""
        api = self._connected()
        what = f"searching attributes (page {page})"
        body = {**filters, "page": page, "limit": limit}
        answer = self._checked(what, lambda: api.direct_call(ATTRIBUTE_SEARCH_PATH, body))
        return self._attribute_page(what, answer)

    def add_sighting(self, body: dict[str, Any]) -> SightingResult:
        """`POST /sightings/add` with `body` as MISP's OpenAPI spec shapes it: `uuid` (an
        attribute) or `values` with `filters`, and `source`, `type`, `timestamp`. "failed"
        only when MISP refused it; an answer of unknown meaning is a `TransientError`."""
        api = self._connected()
        what = f"adding a sighting of {body.get('uuid') or body.get('values')}"
        answer = self._request(what, lambda: api.direct_call(SIGHTING_ADD_PATH, body))
        error = _answer_error(answer)
        detail = answer if error is None else error[1]
        if NO_MATCHING_ATTRIBUTE in str(detail).lower():
            return SightingResult("unknown")
        if error is not None:
            if not _is_validation_failure(error[1]):
                raise_for_answer(error[0], SYSTEM, what, self._summary(error[1]))
            return SightingResult("failed", f"MISP refused {what}: {self._summary(error[1])}")
        if _sighting_added(answer):
            return SightingResult("added")
        # Neither a sighting nor a refusal (a cut or non-JSON body, a proxy's page): MISP
        # may well have added it. Reporting it as not added would let the next run send
        # it again; as transient, it stays pending and is looked up before any re-send.
        raise TransientError(f"MISP {self._url} answered {what} with neither a sighting "
                             f"nor a refusal ({self._summary(answer)}); it may have been "
                             "added, so it is looked up before being sent again")

    def find_sightings(self, source: str, timestamp: int) -> list[dict[str, Any]]:
        """Sightings with this exact source and time, each with `attribute_uuid` and
        `attribute_value`: how a sighting whose answer was lost is looked for."""
        api = self._connected()
        what = f"searching sightings of source {source!r} at {timestamp}"
        body = {"returnFormat": "json", "source": source, "from": timestamp, "to": timestamp,
                "type": "0", "includeAttribute": 1}
        answer = self._checked(what, lambda: api.direct_call(SIGHTING_SEARCH_PATH, body))
        if isinstance(answer, dict) and isinstance(answer.get("response"), list):
            answer = answer["response"]
        if not isinstance(answer, list):
            raise UnexpectedAnswerError(f"MISP {self._url} answered {what} with something "
                                        f"that is not a list: {self._summary(answer)}")
        return [item.get("Sighting", item) for item in answer if isinstance(item, dict)]

    # --- connection ----------------------------------------------------------------------

    def _connected(self) -> PyMISP:
        if self._api is None:
            self._api = self._connect()
        return self._api

    def _connect(self) -> PyMISP:
        warn_if_insecure(self._settings, SYSTEM)
        adapter = retrying_adapter(self._settings)
        logging.getLogger("pymisp").addFilter(_hide_expected_already_exists)
        redact_secret_in_logger("pymisp", self._api_key.get_secret_value())
        try:
            api = PyMISP(
                self._url,
                self._api_key.get_secret_value(),
                ssl=self._settings.requests_verify,
                timeout=self._settings.timeout,
                tool=TOOL_NAME,
                https_adapter=adapter,
            )
        except PyMISPError as exc:
            raise self._connection_failure(exc) from None
        # PyMISP mounts `https_adapter` for https:// only and offers no public handle on
        # its session, so a MISP on plain http (a lab, a local reverse proxy) would get no
        # per-request retries. Mounting on its name-mangled session is the smallest
        # reach-in; tests cover it, so a PyMISP rename fails loudly. The constructor's own
        # few GETs over http stay unretried: a failure there is a TransientError, which
        # the Prefect task retry covers.
        session = api._PyMISP__session  # type: ignore[attr-defined]
        session.mount("http://", adapter)
        # Longest prefix wins: a sighting is not idempotent, so no blind re-send.
        session.mount(f"{self._url.rstrip('/')}/{SIGHTING_ADD_PATH}",
                      write_once_adapter(self._settings))
        return api

    def _connection_failure(self, exc: PyMISPError) -> MispNdrError:
        """PyMISP's constructor folds every failure into PyMISPError: dig out the cause."""
        transport = _transport_cause(exc)
        if isinstance(transport, requests.exceptions.SSLError):
            return ConfigError(f"MISP {self._url}: {describe_failure(transport)} "
                               "(MISP_NDR_MISP__CA_BUNDLE, MISP_NDR_MISP__VERIFY_TLS)")
        if transport is not None:
            return TransientError(f"MISP {self._url} is unreachable: "
                                  f"{describe_failure(transport)}")
        if isinstance(exc, MISPServerError):
            return TransientError(f"MISP {self._url} failed its connection checks "
                                  "(HTTP 5xx after retries)")
        match = _STATUS_IN_PYMISP_MESSAGE.search(str(exc))
        status = int(match.group(1)) if match else 0
        if status in (401, 403):
            return AuthError(f"MISP {self._url} rejected the API key (HTTP {status}): check "
                             "MISP_NDR_MISP__API_KEY, and that its user is enabled and may "
                             "use the API")
        if status in TRANSIENT_STATUSES:
            return TransientError(f"MISP {self._url} failed its connection checks "
                                  f"(HTTP {status} after retries)")
        return ConfigError(f"MISP {self._url} does not answer like a MISP API "
                           f"({self._redact(str(exc))[:MAX_DETAIL_CHARS]}): check "
                           "MISP_NDR_MISP__URL")

    # --- answers ---------------------------------------------------------------------------

    def _request(self, what: str, call: Callable[[], Any]) -> Any:
        """Run one PyMISP call; transport failures (after per-request retries) become
        our errors. HTTP 4xx answers come back as PyMISP's `{"errors": ...}` dict."""
        try:
            return call()
        except requests.exceptions.SSLError as exc:
            raise ConfigError(f"MISP {self._url} {what}: {describe_failure(exc)}") from None
        except requests.RequestException as exc:
            raise TransientError(f"MISP {self._url} {what}: {describe_failure(exc)} "
                                 "after retries") from None
        except MISPServerError as exc:
            # PyMISP raises this for every 5xx, and for a 4xx whose body is not JSON
            # (a proxy's error page): "Error code <status>:..."
            status = _ERROR_CODE_IN_PYMISP_MESSAGE.match(str(exc))
            if status and int(status.group(1)) < 500:
                raise_for_answer(int(status.group(1)), SYSTEM, what, "answer is not JSON")
            raise TransientError(f"MISP {self._url} failed {what} "
                                 "(HTTP 5xx after retries)") from None
        except PyMISPUnexpectedResponse:
            raise TransientError(f"MISP {self._url} answered {what} with something that "
                                 "is not JSON (a proxy error or login page?)") from None

    def _checked(self, what: str, call: Callable[[], Any]) -> Any:
        """`_request`, and any error answer raised as Auth/Transient/RejectedError."""
        answer = self._request(what, call)
        error = _answer_error(answer)
        if error is not None:
            status, detail = error
            raise_for_answer(status, SYSTEM, what, self._summary(detail))
            raise RejectedError(f"MISP refused part of {what}: {self._summary(detail)}")
        return answer

    def _stored_event(self, action: str, event_id: str, answer: Any) -> dict[str, Any]:
        """The event MISP says it stored; RejectedError if MISP refused this event."""
        what = f"{action} event {event_id}"
        error = _answer_error(answer)
        if error is not None:
            status, detail = error
            if status == 200:
                raise RejectedError(f"MISP stored event {event_id} but refused part of it: "
                                    f"{self._summary(detail)}")
            if status == 403 and _is_validation_failure(detail):
                raise RejectedError(f"MISP refused {what}: {self._summary(detail)}")
            raise_for_answer(status, SYSTEM, what, self._summary(detail))
        event = answer.get("Event") if isinstance(answer, dict) else None
        if not isinstance(event, dict):
            raise RejectedError(f"MISP answered {what} without the event")
        return event

    def _lost_content(self, draft: EventDraft, stored: dict[str, Any]) -> str:
        """MISP answers success even when it dropped tags or attributes: compare."""
        stored_tags = {_tag_name(tag).casefold() for tag in stored.get("Tag") or []}
        missing_tags = [tag for tag in draft.tags if tag.casefold() not in stored_tags]
        if missing_tags:
            return (f"MISP dropped tag(s) {', '.join(map(repr, missing_tags))} from event "
                    f"{draft.uuid}: {TAG_PERMISSIONS}")
        stored_attributes = {attribute.get("uuid") for attribute in stored.get("Attribute") or []}
        wanted = draft.event.get("Attribute", [])
        missing = [a for a in wanted if a["uuid"] not in stored_attributes]
        if missing:
            return (f"MISP did not store {len(missing)} of {len(wanted)} attribute(s) of "
                    f"event {draft.uuid}, e.g. {missing[0]['type']} {missing[0]['value']}")
        return ""

    @staticmethod
    def _publish_note(draft: EventDraft, stored: dict[str, Any]) -> str:
        if draft.event.get("published") and not _flag(stored.get("published")):
            return ("stored but not published: the API key's role lacks the publish "
                    "permission (perm_publish)")
        return ""

    def _attribute_page(self, what: str, answer: Any) -> list[dict[str, Any]]:
        """PyMISP strips MISP's outer `response`, leaving `{"Attribute": [...]}`. A text
        answer is what PyMISP's orjson refused: the whole page for one non-UTF-8 byte or
        lone surrogate, which Python's json reads (the one bad value is refused later, per
        record); a body still not JSON was cut or replaced on the way: worth a retry."""
        if isinstance(answer, str):
            answer = self._reparsed_page(what, answer)
        if answer == []:
            return []
        attributes = answer.get("Attribute") if isinstance(answer, dict) else None
        if isinstance(attributes, list):
            return attributes
        raise UnexpectedAnswerError(
            f"MISP {self._url} answered {what} with something that is not an attribute "
            f"list: {self._redact(repr(answer))[:MAX_DETAIL_CHARS]}")

    def _reparsed_page(self, what: str, text: str) -> Any:
        try:
            answer = json.loads(text)
        except ValueError:
            raise TransientError(
                f"MISP {self._url} answered {what} with a body that is not JSON (cut short, "
                f"or a proxy's page): {self._redact(text[:MAX_DETAIL_CHARS])!r}") from None
        return answer.get("response", answer) if isinstance(answer, dict) else answer

    def _summary(self, detail: Any) -> str:
        """MISP's error answer in one short line (name, message and field errors)."""
        if isinstance(detail, dict):
            parts = [str(detail.get(key)) for key in ("name", "message") if detail.get(key)]
            parts = list(dict.fromkeys(parts))
            if detail.get("errors"):
                parts.append(str(detail["errors"]))
            text = "; ".join(parts) or str(detail)
        else:
            text = str(detail)
        return self._redact(text)[:MAX_DETAIL_CHARS]

    def _redact(self, text: str) -> str:
        """Belt and braces: an answer or library message must never carry the key on."""
        key = self._api_key.get_secret_value()
        return text.replace(key, "**********") if key else text


def content_for_update(event: dict[str, Any]) -> dict[str, Any]:
    """The event body for an edit, without timestamps: MISP refuses an edit whose event
    timestamp is not newer than its copy ("not newer than the local copy") and skips
    such attributes silently; without them, MISP stamps the edit with its own clock."""
    body = {key: value for key, value in event.items() if key != "timestamp"}
    body["Attribute"] = [
        {key: value for key, value in attribute.items() if key != "timestamp"}
        for attribute in event.get("Attribute", [])
    ]
    return body


def _answer_error(answer: Any) -> tuple[int, Any] | None:
    """(HTTP status, MISP's error body) from a PyMISP answer, or None if it succeeded.
    PyMISP gives 4xx as `{"errors": (status, body)}`; a 200 can carry `errors` too (MISP
    stored the event but refused some of it), reported as status 200."""
    if not isinstance(answer, dict) or "errors" not in answer:
        return None
    errors = answer["errors"]
    if isinstance(errors, tuple | list) and len(errors) == 2 and isinstance(errors[0], int):
        return errors[0], errors[1]
    return 200, errors


def _already_exists(answer: Any) -> bool:
    """MISP answers an add with a known UUID with 'Event already exists, if you would
    like to edit it, use the url in the location header.' (HTTP 404 in MISP 2.4/2.5)."""
    error = _answer_error(answer)
    return error is not None and "event already exists" in str(error[1]).lower()


def _hide_expected_already_exists(record: logging.LogRecord) -> bool:
    """PyMISP logs every 4xx answer as an error, but "Event already exists" is how each
    re-run learns to update: keep it out of the SOC's error output."""
    return "event already exists" not in record.getMessage().lower()


def _is_validation_failure(detail: Any) -> bool:
    """MISP answers a refused save with 403 too, but with `saved: false` and 'Could not
    add Event': that is about the event, not about the key."""
    if not isinstance(detail, dict):
        return False
    return detail.get("saved") is False or str(detail.get("name", "")).startswith("Could not")


def _sighting_added(answer: Any) -> bool:
    """MISP 2.5 answers the sighting it stored; older versions `{"saved": true, ...}`
    (saveSuccessResponse) or `{"message": "Sighting added"}` (SightingsController)."""
    if not isinstance(answer, dict):
        return False
    message = str(answer.get("message", "")).strip().lower()
    return "Sighting" in answer or _flag(answer.get("saved")) or message == "sighting added"


def _transport_cause(exc: BaseException) -> requests.RequestException | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, requests.RequestException):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _tag_name(item: Any) -> str:
    """Tags come as `{"name": ...}` on events and `{"Tag": {"name": ...}}` in searches."""
    if not isinstance(item, dict):
        return ""
    tag = item.get("Tag", item)
    return str(tag.get("name", "")) if isinstance(tag, dict) else ""


def _flag(value: Any) -> bool:
    """MISP sends booleans as true/false, 1/0 or "1"/"0" depending on version."""
    return value is True or str(value).strip().lower() in ("1", "true")


def _granted(role: dict[str, Any], permission: str) -> bool:
    return _flag(role.get(permission)) or _flag(role.get("perm_site_admin"))

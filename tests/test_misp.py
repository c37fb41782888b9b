"""MispClient against a mocked MISP: the exact requests, and every way MISP says no."""

from __future__ import annotations

import json
import re
from typing import Any

import pandas as pd
import pytest
import requests
import responses
from urllib3 import HTTPResponse

from misp_ndr.config import ExportSettings, MispSettings
from misp_ndr.errors import AuthError, ConfigError, RejectedError, TransientError
from misp_ndr.http import RETRY_AFTER_MAX_SECONDS, retry_policy
from tasks.detections import normalize_detections
from tasks.misp import MispClient, content_for_update
from tasks.misp_events import EventDraft, build_event_drafts
from tests.misp_stand_in import ALREADY_EXISTS, API_KEY, ROLE_ALL, URL, mock_connection


def misp_settings(url: str = URL, **overrides: Any) -> MispSettings:
    return MispSettings(url=url, api_key=API_KEY, retries=3, retry_backoff=0, timeout=7.5,
                        **overrides)


def sample_draft(**export: Any) -> EventDraft:
    detections = normalize_detections(pd.DataFrame({
        "detection_id": ["991", "991"],
        "source_system": ["flowmon", "flowmon"],
        "time": pd.to_datetime(["2026-11-20 10:00:00"] * 2, utc=True),
        "method": ["SCANS", "SCANS"],
        "method_description": ["Port scanning", "Port scanning"],
        "priority": ["high", "high"],
        "detail": ["Horizontal TCP scan", "Horizontal TCP scan"],
    }))
    indicators = pd.DataFrame({
        "source_system": ["flowmon", "flowmon"], "detection_id": ["991", "991"],
        "attribute_type": ["ip-src", "ip-dst"], "value": ["198.51.100.7", "203.0.113.9"],
    }).astype("string")
    return build_event_drafts(detections, indicators, ExportSettings(**export))[0]


def stored_event(draft: EventDraft, *, tags: list[str] | None = None,
                 attributes: list[dict[str, Any]] | None = None,
                 published: bool | None = None) -> dict[str, Any]:
    """What MISP answers after a save: the event as it actually stored it."""
    event = dict(draft.event)
    event["id"] = "42"
    event["Tag"] = [{"id": str(i), "name": name}
                    for i, name in enumerate(draft.tags if tags is None else tags)]
    event["Attribute"] = draft.event["Attribute"] if attributes is None else attributes
    if published is not None:
        event["published"] = published
    return {"Event": event}


def sent_json(call: Any) -> dict[str, Any]:
    return json.loads(call.request.body)


def calls_to(rsps: responses.RequestsMock, path: str) -> list[Any]:
    return [call for call in rsps.calls if call.request.url.endswith(path)]


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


# --- construction -----------------------------------------------------------------------


def test_client_connects_only_when_first_used(rsps: responses.RequestsMock) -> None:
    client = MispClient(misp_settings())
    assert len(rsps.calls) == 0
    assert repr(client) == "MispClient(url='https://misp.test/')"


def test_unconfigured_client_is_refused_with_the_variables_to_set() -> None:
    with pytest.raises(ConfigError, match="MISP_NDR_MISP__URL"):
        MispClient(MispSettings())


def test_rejected_api_key_raises_auth_error_that_never_shows_the_key(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(re.compile(f"{URL}/.*"), status=403, json={
        "name": "Authentication failed. Please make sure you pass the API key of an API "
                "enabled user along in the Authorization header.",
        "message": "Authentication failed.", "url": "/users/view/me"})
    client = MispClient(misp_settings())
    with pytest.raises(AuthError, match="rejected the API key") as raised:
        client.ensure_tag("misp-ndr")
    assert API_KEY not in str(raised.value)
    assert API_KEY not in repr(client)
    assert all(call.request.headers["Authorization"] == API_KEY for call in rsps.calls)


def test_unreachable_misp_is_a_transient_error(rsps: responses.RequestsMock) -> None:
    rsps.get(re.compile(f"{URL}/.*"), body=requests.ConnectionError("connection refused"))
    with pytest.raises(TransientError, match="unreachable") as raised:
        MispClient(misp_settings()).push_event(sample_draft())
    assert API_KEY not in str(raised.value)


def test_tls_failure_names_the_settings_to_fix(rsps: responses.RequestsMock) -> None:
    rsps.get(re.compile(f"{URL}/.*"), body=requests.exceptions.SSLError("bad certificate"))
    with pytest.raises(ConfigError, match="MISP_NDR_MISP__CA_BUNDLE"):
        MispClient(misp_settings()).push_event(sample_draft())


def test_timeout_tls_choice_and_tool_name_reach_every_request(
    rsps: responses.RequestsMock, tmp_path: Any
) -> None:
    ca_bundle = tmp_path / "ca.pem"
    ca_bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    mock_connection(rsps)
    draft = sample_draft()
    rsps.post(f"{URL}/events/add", json=stored_event(draft))
    MispClient(misp_settings(ca_bundle=ca_bundle)).push_event(draft)
    assert rsps.calls
    for call in rsps.calls:
        assert call.request.req_kwargs["timeout"] == 7.5
        assert call.request.req_kwargs["verify"] == str(ca_bundle)
        assert call.request.headers["User-Agent"].endswith("misp-ndr")


# --- push_event --------------------------------------------------------------------------


def test_event_is_created_in_one_call_carrying_attributes_tags_and_published_flag(
    rsps: responses.RequestsMock,
) -> None:
    mock_connection(rsps)
    draft = sample_draft(to_ids=True, distribution=2)
    rsps.post(f"{URL}/events/add", json=stored_event(draft))

    result = MispClient(misp_settings()).push_event(draft)

    assert (result.uuid, result.status, result.reason) == (draft.uuid, "created", "")
    writes = [call for call in rsps.calls if call.request.method == "POST"]
    assert len(writes) == 1 and writes[0].request.url == f"{URL}/events/add"
    body = sent_json(writes[0])
    assert body["uuid"] == draft.uuid
    assert [tag["name"] for tag in body["Tag"]] == ["misp-ndr", 'flowmon:method="SCANS"']
    assert body["published"] is True
    assert body["distribution"] == 2
    assert sorted((a["type"], a["value"]) for a in body["Attribute"]) == [
        ("ip-dst", "203.0.113.9"), ("ip-src", "198.51.100.7")]
    assert all(a["to_ids"] is True and a["distribution"] == 5 for a in body["Attribute"])
    assert all(a["uuid"] for a in body["Attribute"])


@pytest.mark.parametrize("status", [502, 503, 429])
def test_transient_answers_are_retried_then_the_event_is_created(
    rsps: responses.RequestsMock, status: int
) -> None:
    mock_connection(rsps)
    draft = sample_draft()
    rsps.post(f"{URL}/events/add", status=status, json={"message": "busy"})
    rsps.post(f"{URL}/events/add", status=status, json={"message": "busy"})
    rsps.post(f"{URL}/events/add", json=stored_event(draft))

    result = MispClient(misp_settings()).push_event(draft)

    assert result.status == "created"
    assert len(calls_to(rsps, "/events/add")) == 3


def test_misp_down_after_all_retries_raises_transient_error(
    rsps: responses.RequestsMock,
) -> None:
    mock_connection(rsps)
    rsps.post(f"{URL}/events/add", status=503, body="Service Unavailable")
    with pytest.raises(TransientError, match="after retries") as raised:
        MispClient(misp_settings()).push_event(sample_draft())
    assert len(calls_to(rsps, "/events/add")) == 4  # first try + 3 retries
    assert API_KEY not in str(raised.value)


def test_timeout_on_write_raises_transient_error(rsps: responses.RequestsMock) -> None:
    mock_connection(rsps)
    rsps.post(f"{URL}/events/add", body=requests.ReadTimeout("read timed out"))
    with pytest.raises(TransientError, match="timed out"):
        MispClient(misp_settings()).push_event(sample_draft())


def test_plain_http_misp_gets_the_same_retries(rsps: responses.RequestsMock) -> None:
    http_url = "http://misp.lab"
    mock_connection(rsps, http_url)
    draft = sample_draft()
    rsps.post(f"{http_url}/events/add", status=503)
    rsps.post(f"{http_url}/events/add", json=stored_event(draft))
    assert MispClient(misp_settings(http_url)).push_event(draft).status == "created"


def test_key_without_write_permission_raises_auth_error(rsps: responses.RequestsMock) -> None:
    mock_connection(rsps)
    rsps.post(f"{URL}/events/add", status=403, json={
        "name": "You do not have permission to do that.", "message": "Forbidden",
        "url": "/events/add"})
    with pytest.raises(AuthError, match="HTTP 403"):
        MispClient(misp_settings()).push_event(sample_draft())


def test_event_refused_by_validation_fails_alone_with_misp_reason(
    rsps: responses.RequestsMock,
) -> None:
    mock_connection(rsps)
    rsps.post(f"{URL}/events/add", status=403, json={
        "saved": False, "name": "Could not add Event", "message": "Could not add Event",
        "url": "/events/add", "errors": {"Event": {"info": ["Info cannot be empty."]}}})
    draft = sample_draft()
    result = MispClient(misp_settings()).push_event(draft)
    assert result.status == "failed"
    assert result.uuid == draft.uuid
    assert "Info cannot be empty" in result.reason


def test_event_that_already_exists_is_updated_with_the_same_content(
    rsps: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    mock_connection(rsps)
    draft = sample_draft()
    rsps.post(f"{URL}/events/add", status=404, json=ALREADY_EXISTS)
    rsps.post(f"{URL}/events/edit/{draft.uuid}", json=stored_event(draft))

    result = MispClient(misp_settings()).push_event(draft)

    assert result.status == "updated"
    edit = calls_to(rsps, f"/events/edit/{draft.uuid}")
    assert len(edit) == 1
    body = sent_json(edit[0])
    assert body == content_for_update(draft.event)
    assert body["uuid"] == draft.uuid
    assert "timestamp" not in body  # MISP refuses edits that are not newer than its copy
    assert all("timestamp" not in a for a in body["Attribute"])
    assert [a["uuid"] for a in body["Attribute"]] == [a["uuid"] for a in draft.event["Attribute"]]
    assert "already exists" not in caplog.text  # the normal re-run path is not an error


def test_tag_misp_dropped_silently_fails_the_event_naming_tag_and_permission(
    rsps: responses.RequestsMock,
) -> None:
    mock_connection(rsps)
    draft = sample_draft()
    rsps.post(f"{URL}/events/add", json=stored_event(draft, tags=["misp-ndr"]))
    result = MispClient(misp_settings()).push_event(draft)
    assert result.status == "failed"
    assert 'flowmon:method="SCANS"' in result.reason
    assert "perm_tagger" in result.reason


def test_attribute_misp_did_not_store_fails_the_event(rsps: responses.RequestsMock) -> None:
    mock_connection(rsps)
    draft = sample_draft()
    kept = draft.event["Attribute"][:1]
    rsps.post(f"{URL}/events/add", json=stored_event(draft, attributes=kept))
    result = MispClient(misp_settings()).push_event(draft)
    assert result.status == "failed"
    assert "1 of 2 attribute" in result.reason


def test_event_stored_unpublished_is_created_with_a_note(rsps: responses.RequestsMock) -> None:
    mock_connection(rsps)
    draft = sample_draft()
    rsps.post(f"{URL}/events/add", json=stored_event(draft, published=False))
    result = MispClient(misp_settings()).push_event(draft)
    assert result.status == "created"
    assert "perm_publish" in result.reason


# --- ensure_tag ---------------------------------------------------------------------------


def test_existing_tag_is_not_created_again(rsps: responses.RequestsMock) -> None:
    mock_connection(rsps)
    rsps.post(f"{URL}/tags/search", json=[{"Tag": {"id": "7", "name": "misp-ndr"}}])
    MispClient(misp_settings()).ensure_tag("misp-ndr")
    assert sent_json(calls_to(rsps, "/tags/search")[0]) == {
        "tagname": "misp-ndr", "strict_tagname": True}
    assert not calls_to(rsps, "/tags/add")


def test_missing_tag_is_created(rsps: responses.RequestsMock) -> None:
    mock_connection(rsps)
    rsps.post(f"{URL}/tags/search", json=[])
    rsps.post(f"{URL}/tags/add", json={"Tag": {"id": "8", "name": "misp-ndr"}})
    MispClient(misp_settings()).ensure_tag("misp-ndr")
    assert sent_json(calls_to(rsps, "/tags/add")[0]) == {"name": "misp-ndr"}


def test_tag_that_cannot_be_created_raises_auth_error_naming_the_permission(
    rsps: responses.RequestsMock,
) -> None:
    mock_connection(rsps)
    rsps.post(f"{URL}/tags/search", json=[])
    rsps.post(f"{URL}/tags/add", status=403, json={
        "name": "You do not have permission to do that.", "message": "Forbidden",
        "url": "/tags/add"})
    with pytest.raises(AuthError, match="perm_tag_editor"):
        MispClient(misp_settings()).ensure_tag("misp-ndr")


# --- server_check ----------------------------------------------------------------------------


def test_server_check_reports_version_user_and_each_permission(
    rsps: responses.RequestsMock,
) -> None:
    role = {**ROLE_ALL, "perm_tag_editor": False, "perm_sighting": "0"}
    mock_connection(rsps, role=role)
    check = MispClient(misp_settings()).server_check()
    assert (check.reachable, check.key_accepted, check.version) == (True, True, "2.5.1")
    assert (check.user, check.organisation, check.role) == (
        "soc@example.org", "ACME CSIRT", "Org Admin")
    assert (check.can_add_events, check.can_tag_events, check.can_publish) == (True, True, True)
    assert (check.can_create_tags, check.can_add_sightings) == (False, False)
    assert check.healthy
    text = check.render_text()
    assert "create tags (perm_tag_editor)" in text and "NO (" in text


def test_server_check_of_a_read_only_key_is_unhealthy(rsps: responses.RequestsMock) -> None:
    mock_connection(rsps, role={"name": "Read Only", "perm_add": False, "perm_tagger": False})
    check = MispClient(misp_settings()).server_check()
    assert check.key_accepted and not check.healthy


def test_server_check_reports_unreachable_and_rejected_key(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(re.compile("https://down.test/.*"), body=requests.ConnectionError("refused"))
    down = MispClient(misp_settings("https://down.test")).server_check()
    assert not down.reachable and not down.healthy
    assert "UNREACHABLE" in down.render_text()

    rsps.get(re.compile(f"{URL}/.*"), status=401, json={"name": "Authentication failed."})
    rejected = MispClient(misp_settings()).server_check()
    assert rejected.reachable and not rejected.key_accepted
    assert "REJECTED" in rejected.render_text()
    assert API_KEY not in rejected.render_text()


def test_non_json_client_error_is_not_reported_as_a_server_outage(
    rsps: responses.RequestsMock,
) -> None:
    mock_connection(rsps)
    rsps.post(f"{URL}/tags/search", status=404, body="<html>Not Found</html>")
    with pytest.raises(RejectedError, match="HTTP 404"):
        MispClient(misp_settings()).ensure_tag("misp-ndr")


def test_a_retry_after_of_hours_is_waited_for_two_minutes_at_most() -> None:
    """A run sleeping for hours would hold its concurrency slot; the schedule retries."""
    policy = retry_policy(MispSettings(url=URL, api_key=API_KEY))
    answer = HTTPResponse(status=503, headers={"Retry-After": "21600"})
    assert policy.get_retry_after(answer) == RETRY_AFTER_MAX_SECONDS == 120

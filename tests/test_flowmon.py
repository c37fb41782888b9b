"""The Flowmon ADS REST client (HTTP mocked) and API events as detections."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
import requests
import responses

from misp_ndr.config import FlowmonSettings
from misp_ndr.errors import AuthError, ConfigError, RejectedError, TransientError
from tasks.detections import DETECTION_COLUMNS, Priority
from tasks.flowmon import FlowmonClient, fetch_flowmon_detections, parse_api_events

BASE = "https://flowmon.example"
TOKEN_URL = f"{BASE}/resources/oauth/token"
EVENTS_URL = f"{BASE}/rest/ads/events"
FILTERS_URL = f"{BASE}/rest/ads/filters"
PERSPECTIVES_URL = f"{BASE}/rest/ads/perspectives"
PASSWORD = "Tr0ub4dor&3-flowmon"
TOKEN = "tok-4f9a1c0e55d2"
SINCE = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
UNTIL = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def flowmon_settings(**overrides: Any) -> FlowmonSettings:
    values: dict[str, Any] = {"url": BASE, "user": "misp-sync", "password": PASSWORD,
                              "retries": 0, "page_size": 2}
    values.update(overrides)
    return FlowmonSettings(**values)


def api_event(event_id: int, **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": event_id, "type": "SCANS", "time": "2026-11-20 08:15:00",
        "detail": "TCP SYN scan", "priority": 4, "source": {"ip": "81.2.69.160"},
        "targets": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
    }
    event.update(overrides)
    return event


def add_login(token: str = TOKEN) -> None:
    responses.add(responses.POST, TOKEN_URL,
                  json={"access_token": token, "refresh_token": "r", "expires_in": 604800})


def query(call_index: int) -> dict[str, list[str]]:
    return parse_qs(urlsplit(responses.calls[call_index].request.url).query)


def every_message_and_repr(error: BaseException, client: FlowmonClient) -> str:
    return f"{error} {error!r} {client!r} {error.__cause__!r} {error.__context__!r}"


@responses.activate
def test_login_posts_the_oauth_password_grant_then_sends_the_bearer_token() -> None:
    add_login()
    responses.add(responses.GET, FILTERS_URL, json=[])

    FlowmonClient(flowmon_settings()).filters()

    form = parse_qs(responses.calls[0].request.body)
    assert form == {"grant_type": ["password"], "client_id": ["invea-tech"],
                    "username": ["misp-sync"], "password": [PASSWORD]}
    assert responses.calls[1].request.headers["Authorization"] == f"bearer {TOKEN}"


@responses.activate
def test_events_are_paged_until_a_short_page() -> None:
    add_login()
    for page in ([api_event(1), api_event(2)], [api_event(3), api_event(4)], [api_event(5)]):
        responses.add(responses.GET, EVENTS_URL, json=page)

    events = FlowmonClient(flowmon_settings()).fetch_events(SINCE, UNTIL)

    assert [event["id"] for event in events] == [1, 2, 3, 4, 5]
    assert [query(i)["offset"] for i in (1, 2, 3)] == [["0"], ["2"], ["4"]]
    assert all(query(i)["limit"] == ["2"] for i in (1, 2, 3))


@responses.activate
def test_an_empty_page_ends_the_paging() -> None:
    add_login()
    responses.add(responses.GET, EVENTS_URL, json=[api_event(1), api_event(2)])
    responses.add(responses.GET, EVENTS_URL, json=[])

    assert len(FlowmonClient(flowmon_settings()).fetch_events(SINCE, UNTIL)) == 2


@responses.activate
def test_appliance_ignoring_offset_cannot_loop_forever_and_duplicates_are_dropped() -> None:
    add_login()
    responses.add(responses.GET, EVENTS_URL, json=[api_event(1), api_event(2)])

    events = FlowmonClient(flowmon_settings()).fetch_events(SINCE, UNTIL)

    assert [event["id"] for event in events] == [1, 2]
    assert len(responses.calls) == 3  # login, first page, the repeated page


@responses.activate
def test_window_is_sent_in_whole_minutes_on_the_appliance_clock() -> None:
    add_login()
    responses.add(responses.GET, EVENTS_URL, json=[])
    since = datetime(2026, 11, 20, 8, 15, 30, tzinfo=UTC)
    until = datetime(2026, 11, 20, 9, 0, 10, tzinfo=UTC)

    FlowmonClient(flowmon_settings(), timezone="Europe/Prague").fetch_events(since, until)

    search = json.loads(query(1)["search"][0])
    assert search == {"from": "2026-11-20 09:15", "to": "2026-11-20 10:01"}


@responses.activate
def test_numeric_perspective_is_sent_as_is() -> None:
    add_login()
    responses.add(responses.GET, EVENTS_URL, json=[])

    FlowmonClient(flowmon_settings(perspective="4")).fetch_events(SINCE, UNTIL)

    assert json.loads(query(1)["search"][0])["perspective"] == 4
    assert len(responses.calls) == 2  # no perspective lookup


@responses.activate
def test_perspective_name_is_resolved_to_its_id() -> None:
    add_login()
    responses.add(responses.GET, PERSPECTIVES_URL,
                  json=[{"id": 1, "name": "Operational issues"}, {"id": 7, "name": "Security"}])
    responses.add(responses.GET, EVENTS_URL, json=[])

    FlowmonClient(flowmon_settings(perspective="security")).fetch_events(SINCE, UNTIL)

    assert json.loads(query(2)["search"][0])["perspective"] == 7


@responses.activate
def test_unknown_perspective_name_is_a_config_error_listing_the_known_ones() -> None:
    add_login()
    responses.add(responses.GET, PERSPECTIVES_URL, json=[{"id": 1, "name": "Operational"}])

    with pytest.raises(ConfigError, match=r"'Securty'.*Operational"):
        FlowmonClient(flowmon_settings(perspective="Securty")).fetch_events(SINCE, UNTIL)


@responses.activate
def test_expired_token_leads_to_one_new_login() -> None:
    add_login("first-token")
    add_login("second-token")
    responses.add(responses.GET, FILTERS_URL, status=401)
    responses.add(responses.GET, FILTERS_URL, json=[{"name": "DMZ", "patterns": []}])

    assert FlowmonClient(flowmon_settings()).filters() == {"DMZ": []}
    assert responses.calls[3].request.headers["Authorization"] == "bearer second-token"


@responses.activate
def test_token_refused_twice_is_an_auth_error() -> None:
    add_login()
    responses.add(responses.GET, FILTERS_URL, status=401)

    with pytest.raises(AuthError, match="HTTP 401"):
        FlowmonClient(flowmon_settings()).filters()
    assert len(responses.calls) == 4  # login, refused, login again, refused again


@responses.activate
@pytest.mark.parametrize("status", [400, 401])
def test_refused_login_is_an_auth_error_without_the_password(status: int) -> None:
    responses.add(responses.POST, TOKEN_URL, status=status,
                  json={"error": "invalid_grant", "error_description": f"bad {PASSWORD}"})
    client = FlowmonClient(flowmon_settings())

    with pytest.raises(AuthError) as caught:
        client.filters()

    assert "misp-sync" in str(caught.value) and "invalid_grant" in str(caught.value)
    assert PASSWORD not in every_message_and_repr(caught.value, client)


@responses.activate
def test_login_answer_without_token_is_an_auth_error() -> None:
    responses.add(responses.POST, TOKEN_URL, json={"token_type": "bearer"})

    with pytest.raises(AuthError, match="access_token"):
        FlowmonClient(flowmon_settings()).filters()


@responses.activate
def test_server_error_echoing_secrets_is_transient_and_redacted() -> None:
    add_login()
    responses.add(responses.GET, FILTERS_URL, status=503,
                  body=f"upstream said: password={PASSWORD} token={TOKEN}")
    client = FlowmonClient(flowmon_settings())

    with pytest.raises(TransientError, match="HTTP 503") as caught:
        client.filters()

    text = every_message_and_repr(caught.value, client)
    assert PASSWORD not in text and TOKEN not in text


@responses.activate
def test_unknown_endpoint_is_rejected_not_retried() -> None:
    add_login()
    responses.add(responses.GET, FILTERS_URL, status=404, body="no such page")

    with pytest.raises(RejectedError, match="HTTP 404"):
        FlowmonClient(flowmon_settings()).filters()


@responses.activate
def test_unreachable_appliance_is_a_transient_error() -> None:
    responses.add(responses.POST, TOKEN_URL, body=requests.ConnectionError("refused"))

    with pytest.raises(TransientError, match="connection failed"):
        FlowmonClient(flowmon_settings()).filters()


@responses.activate
def test_failed_tls_verification_is_a_config_error_not_retried() -> None:
    responses.add(responses.POST, TOKEN_URL, body=requests.exceptions.SSLError("bad cert"))

    with pytest.raises(ConfigError, match="TLS verification failed"):
        FlowmonClient(flowmon_settings()).filters()


@responses.activate
def test_event_list_wrapped_in_an_object_is_accepted() -> None:
    add_login()
    responses.add(responses.GET, EVENTS_URL, json={"events": [api_event(1)], "total": 1})

    assert [e["id"] for e in FlowmonClient(flowmon_settings()).fetch_events(SINCE, UNTIL)] == [1]


@responses.activate
def test_html_instead_of_json_is_rejected_with_a_url_hint() -> None:
    add_login()
    responses.add(responses.GET, FILTERS_URL, body="<html>login page</html>")

    with pytest.raises(RejectedError, match="MISP_NDR_FLOWMON__URL"):
        FlowmonClient(flowmon_settings()).filters()


def test_client_repr_shows_neither_password_nor_token() -> None:
    client = FlowmonClient(flowmon_settings())

    assert PASSWORD not in repr(client)
    assert "flowmon.example" in repr(client)


def test_unconfigured_flowmon_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="MISP_NDR_FLOWMON__URL"):
        FlowmonClient(FlowmonSettings())


@responses.activate
def test_filters_map_names_to_patterns() -> None:
    add_login()
    responses.add(responses.GET, FILTERS_URL, json=[
        {"id": 1, "name": "Servers ", "patterns": [{"pattern": "10.0.0.0/24"},
                                                   {"pattern": "10.0.1.[1-9]"}]},
        {"id": 2, "name": "Guests", "patterns": [{"pattern": "192.168.50.*"}]},
    ])

    assert FlowmonClient(flowmon_settings()).filters() == {
        "Servers": ["10.0.0.0/24", "10.0.1.[1-9]"], "Guests": ["192.168.50.*"]}


@responses.activate
def test_filter_patterns_of_an_unknown_filter_is_a_config_error_naming_the_known() -> None:
    add_login()
    responses.add(responses.GET, FILTERS_URL,
                  json=[{"name": "Servers", "patterns": [{"pattern": "10.0.0.0/24"}]}])
    client = FlowmonClient(flowmon_settings())

    assert client.filter_patterns("Servers") == ["10.0.0.0/24"]
    with pytest.raises(ConfigError, match=r"'Printers'.*Servers"):
        client.filter_patterns("Printers")


def test_api_event_becomes_one_row_per_target() -> None:
    batch = parse_api_events([api_event(991)], Priority.INFO)

    assert list(batch.detections.columns) == list(DETECTION_COLUMNS)
    assert batch.detections["dst_ip"].tolist() == ["10.0.0.1", "10.0.0.2"]
    row = batch.detections.iloc[0]
    assert (row["detection_id"], row["source_system"], row["method"], row["src_ip"]) == (
        "991", "flowmon", "SCANS", "81.2.69.160")
    assert row["time"] == pd.Timestamp("2026-11-20T08:15:00Z")
    assert batch.records_read == 1


@pytest.mark.parametrize(
    ("priority", "expected"),
    [(5, "critical"), (4, "high"), (3, "medium"), (2, "low"), (1, "info"),
     ("Critical", "critical"), ("informational", "info"), ("4", "high")],
)
def test_api_priority_numbers_and_names_map_to_priorities(priority: Any, expected: str) -> None:
    detections = parse_api_events([api_event(1, priority=priority)], Priority.INFO).detections

    assert detections.loc[0, "priority"] == expected


def test_events_below_minimum_priority_are_counted_as_skipped() -> None:
    events = [api_event(1, priority=5), api_event(2, priority=3), api_event(3, priority=2)]

    batch = parse_api_events(events, Priority.MEDIUM)

    assert batch.detections["detection_id"].unique().tolist() == ["1", "2"]
    assert batch.skipped == {"priority below medium": 1}


def test_bad_api_events_are_reported_by_event_id_and_the_rest_goes_through() -> None:
    events = [api_event(1), api_event(991, time="garbage"), "not an event",
              api_event(993, priority=9)]

    batch = parse_api_events(events, Priority.INFO, origin="api")

    assert batch.detections["detection_id"].unique().tolist() == ["1"]
    assert sorted((p.source, p.reason) for p in batch.problems) == [
        ("api event 991", "unreadable time 'garbage'"),
        ("api event 993", "unknown priority '9'"),
        ("api record 3", "not a JSON object"),
    ]
    assert batch.records_read == 4


def test_api_event_tolerates_plain_string_source_and_targets() -> None:
    event = api_event(7, source="81.2.69.161", targets=["10.0.0.5"], typeDesc="Scanning")

    row = parse_api_events([event], Priority.INFO).detections.iloc[0]

    assert (row["src_ip"], row["dst_ip"], row["method_description"]) == (
        "81.2.69.161", "10.0.0.5", "Scanning")


def test_api_times_on_a_local_appliance_clock_become_utc() -> None:
    batch = parse_api_events([api_event(1)], Priority.INFO, timezone="Europe/Prague")

    assert batch.detections.loc[0, "time"] == pd.Timestamp("2026-11-20T07:15:00Z")


@responses.activate
def test_fetch_flowmon_detections_applies_the_configured_minimum_priority() -> None:
    add_login()
    responses.add(responses.GET, EVENTS_URL, json=[api_event(1, priority=5),
                                                   api_event(2, priority=1)])
    responses.add(responses.GET, EVENTS_URL, json=[])

    batch = fetch_flowmon_detections(flowmon_settings(min_priority="low"), SINCE, UNTIL)

    assert batch.detections["detection_id"].unique().tolist() == ["1"]
    assert batch.skipped == {"priority below low": 1}

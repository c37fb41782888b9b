"""Malformed MISP answers and feed files: each bad record is one report naming it, every
good record of the same page or event file is still read, and nothing crashes or hangs.

A record is unusable when it is not an object, lacks a text uuid or type, has no event,
carries a value that is no text (an object, a list, a boolean), a value over
`MAX_VALUE_CHARS` (a 50 MB one here), a lone surrogate or U+FFFD (bytes that were not
UTF-8), or a flag that is none. It is left out of the pulled table, so an incremental
update keeps what the ruleset had for it instead of reading it as "deleted". An answer
that is not an attribute list at all fails the pull: what is missing cannot be known.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import responses

from misp_ndr.config import MispSettings, TlsClientSettings
from misp_ndr.errors import TransientError
from tasks.misp import MispClient, UnexpectedAnswerError
from tasks.misp_feed_source import read_feed_attributes
from tasks.misp_pull import MAX_VALUE_CHARS, AttributeQuery, PullResult, pull_attributes
from tests.misp_stand_in import API_KEY, URL, MispStandIn, mock_connection
from tests.reliability import Recorder

SEARCH_URL = f"{URL}/attributes/restSearch"
NOW = datetime(2026, 11, 25, 10, 30, tzinfo=UTC)
EVENT = {"id": "7", "uuid": "7b8d7e2e-b97e-53d0-a162-1377e3a20daa", "info": "Loader C2",
         "date": "2026-11-20", "published": True, "publish_timestamp": "1795150000",
         "Tag": [{"name": "tlp:green"}]}
HUGE = 50 * 1024 * 1024
BAD = "b0000000-0000-4000-8000-00000000bad0"


def good(number: int) -> dict[str, Any]:
    return {"id": str(number), "uuid": f"00000000-0000-4000-8000-{number:012d}",
            "type": "ip-dst", "category": "Network activity", "value": f"45.155.205.{number}",
            "to_ids": True, "deleted": False, "timestamp": "1795150000", "Event": EVENT}


def bad(**fields: Any) -> dict[str, Any]:
    """A record like the good ones, with `fields` replaced (None: the key is missing)."""
    record = {**good(99), "uuid": BAD, **fields}
    return {key: value for key, value in record.items() if value is not None}


GOOD = [good(number) for number in range(1, 7)]


def page_body(records: list[Any]) -> str:
    return json.dumps({"response": {"Attribute": records}})


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock_connection(mock)
        yield mock


def serve_pages(rsps: responses.RequestsMock, *bodies: str | bytes) -> None:
    """restSearch page n answers bodies[n-1], later pages are empty."""
    def answer(request: Any) -> tuple[int, dict[str, str], str | bytes]:
        number = json.loads(request.body)["page"]
        body = bodies[number - 1] if number <= len(bodies) else page_body([])
        return 200, {"Content-Type": "application/json"}, body
    rsps.add_callback(responses.POST, SEARCH_URL, answer)


def pull() -> PullResult:
    client = MispClient(MispSettings(url=URL, api_key=API_KEY, retries=0, timeout=5))
    return pull_attributes(client, AttributeQuery(max_event_age_days=30), page_size=100,
                           now=NOW)


def good_uuids() -> list[str]:
    return [record["uuid"] for record in GOOD]


# --- restSearch pages with one bad record among good ones ----------------------------------

MALFORMED = {
    "a record that is a string": ("not an object", "just text"),
    "a record that is null": ("not an object", None),
    "a record without uuid": ("has no uuid", bad(uuid=None)),
    "a record whose uuid is a number": ("has no uuid", bad(uuid=12345)),
    "a record without type": ("has no type", bad(type=None)),
    "a record without its event": ("has no event uuid", bad(Event=None)),
    "a record whose event is a list": ("has no event uuid", bad(Event=[EVENT])),
    "a value that is an object": ("dict value, not text", bad(value={"ip": "45.1.2.3"})),
    "a value that is a list": ("list value, not text", bad(value=["45.1.2.3"])),
    "a value that is a boolean": ("bool value, not text", bad(value=True)),
    "a value holding U+FFFD": ("not valid UTF-8", bad(value="evil\ufffd.example",
                                                     type="domain")),
    "to_ids that is no flag": ("to_ids 'maybe', not a flag", bad(to_ids="maybe")),
    "deleted that is an object": ("deleted {}, not a flag", bad(deleted={})),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_record_is_named_and_the_rest_of_the_page_is_read(
    rsps: responses.RequestsMock, reliability: Recorder, case: str,
) -> None:
    reason, record = MALFORMED[case]
    serve_pages(rsps, page_body([*GOOD[:3], record, *GOOD[3:]]))

    result = pull()

    assert len(result.problems) == 1
    problem = result.problems[0]
    assert reason in problem.reason
    named = BAD if isinstance(record, dict) and record.get("uuid") == BAD else "record 4"
    assert named in problem.source, problem
    reliability.check("parsers", f"restSearch page with {case} among 6 good attributes",
                      good_uuids(), list(result.attributes["attribute_uuid"]))


def test_a_50_mb_value_is_refused_without_entering_the_table(
    rsps: responses.RequestsMock, reliability: Recorder,
) -> None:
    serve_pages(rsps, page_body([*GOOD[:3], bad(value="a" * HUGE, type="url"), *GOOD[3:]]))
    arrow_before = pa.total_allocated_bytes()

    result = pull()

    assert pa.total_allocated_bytes() - arrow_before < 1024 * 1024  # the table holds 6 IPs
    [problem] = result.problems
    assert BAD in problem.source and f"over the {MAX_VALUE_CHARS}" in problem.reason
    assert len(problem.excerpt) <= 120
    reliability.check("parsers", "restSearch page with a 50 MB value among 6 good attributes",
                      good_uuids(), list(result.attributes["attribute_uuid"]))


def test_bad_records_on_several_pages_are_each_named_once(
    rsps: responses.RequestsMock, reliability: Recorder,
) -> None:
    serve_pages(rsps, page_body([GOOD[0], bad(value={}), GOOD[1]]),
                page_body([GOOD[2], "junk", GOOD[3]]),
                page_body([GOOD[4], GOOD[5], bad(uuid=BAD.replace("bad0", "bad1"), type=7)]))

    result = pull()

    assert [problem.source for problem in result.problems] == [
        f"MISP attribute {BAD}", "MISP restSearch page 2 record 2",
        f"MISP attribute {BAD.replace('bad0', 'bad1')}"]
    assert result.pages == 3
    reliability.check("parsers", "one malformed record on each of 3 restSearch pages",
                      good_uuids(), list(result.attributes["attribute_uuid"]))


@pytest.mark.parametrize("body", [
    json.dumps({"response": {"Attribute": {"0": good(1)}}}),  # an object, not a list
    json.dumps({"response": {"Attribute": None}}),
    json.dumps({"response": "Attribute"}),
    json.dumps([good(1), good(2)]),  # records without MISP's wrapper
    json.dumps({"response": {"Attribute": [bad(value={}), "junk", None]}}),  # none usable
], ids=["object", "null", "string", "bare list", "nothing usable"])
def test_an_answer_that_is_not_an_attribute_list_fails_the_pull_never_reads_as_empty(
    rsps: responses.RequestsMock, body: str,
) -> None:
    serve_pages(rsps, page_body(GOOD[:3]), body)

    # a JSON string reads like text PyMISP could not parse: retried as transient
    with pytest.raises((UnexpectedAnswerError, TransientError), match=r"page 2"):
        pull()


def not_utf8(body: str) -> bytes:
    """`body` with its one é as the raw latin-1 byte 0xE9."""
    return body.replace("\\u00e9", "\udce9").encode("utf-8", "surrogateescape")


UNREADABLE = {  # what PyMISP's orjson refuses for the whole answer
    "a byte that is not UTF-8": not_utf8(page_body([*GOOD, bad(value="caf\u00e9.example",
                                                                 type="domain")])),
    "a lone surrogate escape": page_body([*GOOD, bad(value="45.1.2.3\ud800")]).encode(),
}


@pytest.mark.parametrize("case", UNREADABLE)
def test_an_answer_orjson_refuses_costs_only_the_attribute_holding_it(
    rsps: responses.RequestsMock, case: str,
) -> None:
    """PyMISP's orjson refuses the whole page and hands back its text; Python's json reads
    it, and the one bad value is refused per record."""
    serve_pages(rsps, UNREADABLE[case])

    result = pull()

    assert sorted(result.attributes["attribute_uuid"]) == good_uuids()


# --- feed event files ---------------------------------------------------------------------

FEED_EVENTS = ("7b8d7e2e-b97e-53d0-a162-1377e3a20daa", "8e71235d-f3a2-5196-9ce0-c93dd8fecc53")


def write_feed(folder: Path, attributes: list[list[Any]], raw: bytes | None = None) -> Path:
    """One event file per attribute list; `raw` replaces the second file's bytes."""
    folder.mkdir()
    manifest = {}
    for event_id, listed in zip(FEED_EVENTS, attributes, strict=True):
        event = {"uuid": event_id, "info": "Loader", "date": "2026-11-20", "published": True,
                 "timestamp": 1795150000, "publish_timestamp": 1795150000, "Tag": [],
                 "Attribute": listed}
        (folder / f"{event_id}.json").write_text(json.dumps({"Event": event}))
        manifest[event_id] = {"info": "Loader", "date": "2026-11-20"}
    if raw is not None:
        (folder / f"{FEED_EVENTS[1]}.json").write_bytes(raw)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def feed_record(record: Any) -> Any:
    return {k: v for k, v in record.items() if k != "Event"} if isinstance(record, dict) \
        else record


def read_feed(folder: Path) -> PullResult:
    return read_feed_attributes(str(folder), AttributeQuery(max_event_age_days=30),
                                TlsClientSettings(retries=0, timeout=5), now=NOW)


@pytest.mark.parametrize("case", ["a record without uuid", "a value that is an object",
                                  "a record that is a string", "to_ids that is no flag"])
def test_a_malformed_feed_attribute_is_named_with_its_event_and_the_rest_is_read(
    tmp_path: Path, reliability: Recorder, case: str,
) -> None:
    reason, record = MALFORMED[case]
    folder = write_feed(tmp_path / "feed", [
        [feed_record(r) for r in GOOD[:3]],
        [feed_record(GOOD[3]), feed_record(record), *(feed_record(r) for r in GOOD[4:])]])

    result = read_feed(folder)

    [problem] = result.problems
    assert reason in problem.reason and FEED_EVENTS[1] in problem.reason
    assert (BAD if isinstance(record, dict) and "uuid" in record else "record 2") \
        in problem.source
    reliability.check("parsers", f"feed event file with {case} among good attributes",
                      good_uuids(), list(result.attributes["attribute_uuid"]))


def test_a_feed_file_with_bytes_that_are_not_utf8_costs_only_that_attribute(
    tmp_path: Path, reliability: Recorder,
) -> None:
    second = {"uuid": FEED_EVENTS[1], "info": "Loader", "date": "2026-11-20",
              "published": True, "timestamp": 1795150000, "publish_timestamp": 1795150000,
              "Attribute": [*(feed_record(r) for r in GOOD[3:]),
                            feed_record(bad(value="caf\u00e9.example", type="domain"))]}
    raw = not_utf8(json.dumps({"Event": second}))
    folder = write_feed(tmp_path / "feed", [[feed_record(r) for r in GOOD[:3]], []], raw=raw)

    result = read_feed(folder)

    [problem] = result.problems
    assert BAD in problem.source and "not valid UTF-8" in problem.reason
    reliability.check("parsers", "feed event file with a byte that is not UTF-8 in one value",
                      good_uuids(), list(result.attributes["attribute_uuid"]))


def test_lone_surrogates_cost_a_feed_value_and_are_replaced_in_event_info_and_tags(
    tmp_path: Path, reliability: Recorder,
) -> None:
    """Python's json (the feed reader's) reads `\\ud800`; arrow refused the whole table."""
    folder = write_feed(tmp_path / "feed", [
        [feed_record(r) for r in GOOD[:3]],
        [*(feed_record(r) for r in GOOD[3:]), feed_record(bad(value="45.1.2.3\ud800"))]])
    second = folder / f"{FEED_EVENTS[1]}.json"
    document = json.loads(second.read_text())
    document["Event"] |= {"info": "Loader \ud800 wave", "Tag": [{"name": "tlp:\udfff"}]}
    second.write_text(json.dumps(document))

    result = read_feed(folder)

    [problem] = result.problems
    assert BAD in problem.source and "lone surrogate" in problem.reason
    assert set(result.attributes["event_info"]) == {"Loader", "Loader ? wave"}
    reliability.check("parsers", "feed event file with lone surrogates in a value, the event "
                      "info and a tag", good_uuids(), list(result.attributes["attribute_uuid"]))


def test_a_50_mb_value_in_a_feed_file_is_refused_alone(
    tmp_path: Path, reliability: Recorder,
) -> None:
    folder = write_feed(tmp_path / "feed", [
        [feed_record(r) for r in GOOD[:3]],
        [feed_record(bad(value="x" * HUGE, type="url")), *(feed_record(r) for r in GOOD[3:])]])

    result = read_feed(folder)

    [problem] = result.problems
    assert BAD in problem.source and len(problem.excerpt) <= 120
    reliability.check("parsers", "feed event file with a 50 MB value among good attributes",
                      good_uuids(), list(result.attributes["attribute_uuid"]))


# --- the whole update: named in the report, the rest in the ruleset --------------------------


@pytest.mark.usefixtures("prefect_harness")
def test_the_rule_update_reports_each_malformed_record_and_builds_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reliability: Recorder,
) -> None:
    from flows.update_rules import update_rules

    monkeypatch.setenv("MISP_NDR_MISP__URL", URL)
    monkeypatch.setenv("MISP_NDR_MISP__API_KEY", API_KEY)
    now = datetime.now(UTC)
    broken = [bad(uuid=f"b0000000-0000-4000-8000-00000000bad{n}", value=value)
              for n, value in enumerate([{"ip": "45.1.2.3"}, "evil\ufffd.example", "a" * HUGE])]
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        misp = MispStandIn(rsps)
        misp.publish_event(EVENT["uuid"], "Loader C2", f"{now:%Y-%m-%d}", int(now.timestamp()),
                           [feed_record(record) for record in GOOD])
        event = misp.attributes[0]["Event"]
        misp.attributes += [{**record, "Event": event} for record in broken]
        report = update_rules(output_dir=str(tmp_path / "rules"))

    named = [problem.source for problem in report.problems]
    assert all(f"MISP attribute {record['uuid']}" in named for record in broken)
    sid_map = csv.DictReader(io.StringIO((tmp_path / "rules" / "sid-map.csv").read_text()))
    listed = (tmp_path / "rules" / "misp-ip.txt").read_text().split()
    reliability.check("rule update", "an object, a U+FFFD and a 50 MB value among 6 good "
                      "attributes in restSearch",
                      [*good_uuids(), *(f"ip {record['value']}" for record in GOOD)],
                      [*(row["attribute_uuid"] for row in sid_map),
                       *(f"ip {value}" for value in listed)])

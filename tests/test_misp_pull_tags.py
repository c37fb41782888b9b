"""The tag columns of pulled attributes, against a plain reading of MISP's tag lists: the
shortcuts taken for the copies of event tags that includeEventTags puts on every attribute
must never change what a row says."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.misp_pull import attribute_table
from tasks.rule_indicators import TAG_SEPARATOR
from tests.test_misp_pull import EVENT, attribute

NAMES = st.sampled_from(["tlp:green", "apt:loader", "c2", "TLP:GREEN", "", f"a{TAG_SEPARATOR}b"])
ENTRIES = st.one_of(
    st.builds(lambda name, number: {"id": str(number), "name": name}, NAMES, st.integers(1, 9)),
    st.builds(lambda name: {"Tag": {"name": name}}, NAMES),  # the nested shape
    st.sampled_from([{"id": "4"}, {"name": None}, "junk", 7]),  # unreadable ones
)
INHERITED = st.sampled_from([1, True, "1", "true", 0, False, None])


def tag_name(entry: Any) -> str | None:
    inner = entry.get("Tag", entry) if isinstance(entry, dict) else None
    name = inner.get("name") if isinstance(inner, dict) else None
    return name.replace(TAG_SEPARATOR, " ") if isinstance(name, str) and name else None


def joined(names: list[str]) -> str:
    return TAG_SEPARATOR.join(dict.fromkeys(names))


def expected(event_tags: Any, attribute_tags: Any) -> tuple[str, str]:
    """(every tag, the event's own tags): the event's names, then the attribute's, or only
    those of the attribute's marked inherited."""
    on_event = [name for entry in event_tags or [] if (name := tag_name(entry))]
    on_attribute = [(name, isinstance(entry, dict) and (
        entry.get("inherited") is True or str(entry.get("inherited")).lower() in ("1", "true")))
        for entry in attribute_tags or [] if (name := tag_name(entry))]
    return (joined(on_event + [name for name, _ in on_attribute]),
            joined(on_event + [name for name, inherited in on_attribute if inherited]))


@st.composite
def attribute_tags(draw: st.DrawFn, event_tags: list[Any] | None) -> Any:
    """Mostly what includeEventTags sends (the event's tags copied and marked inherited,
    then the attribute's own), sometimes anything else."""
    flag = draw(st.sampled_from([1, 1, 1, True]) | INHERITED)  # MISP's: 1 on every copy
    copies = [{**entry, "inherited": flag} if isinstance(entry, dict) else entry
              for entry in event_tags or []]
    own = [{**entry, "inherited": draw(INHERITED)}  # a tag of another event's, say
           if isinstance(entry, dict) and draw(st.booleans()) else entry
           for entry in draw(st.lists(ENTRIES, max_size=3))]
    return draw(st.sampled_from([copies, copies + own, own + copies, own, None]))


@st.composite
def events_and_attributes(draw: st.DrawFn) -> list[tuple[dict[str, Any], Any]]:
    rows = []
    for _ in range(draw(st.integers(1, 6))):
        event_tags = draw(st.one_of(st.none(), st.lists(ENTRIES, max_size=4)))
        # copies of one event (same uuid) may differ: each is read for its own tags
        event = {**EVENT, "Tag": event_tags}
        rows += [(event, draw(attribute_tags(event_tags)))
                 for _ in range(draw(st.integers(1, 4)))]
    return rows


@settings(max_examples=300, deadline=None)
@given(events_and_attributes())
def test_tag_columns_say_what_the_tag_lists_say(rows: list[tuple[dict[str, Any], Any]]) -> None:
    records = [{**attribute(number), "Event": event, "Tag": tags}
               for number, (event, tags) in enumerate(rows, start=1)]
    table = attribute_table((record, record["Event"]) for record in records)
    assert list(zip(table["tags"], table["event_tags"], strict=True)) == [
        expected(event["Tag"], tags) for event, tags in rows]

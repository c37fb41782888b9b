"""The hit table every sightings input produces: one row per time a sensor matched an
indicator that (we think) came from MISP.

A hit names its indicator by MISP attribute UUID when the input knows it (a Suricata rule we
built carries it in its metadata; the sid map has it), else by value (a Flowmon blacklist
hit, a CSV line). Like the detection parsers, hit parsers never drop a record silently:
unreadable records are `ParseProblem`s, deliberate skips are counted by reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from tasks.detections import ParseProblem

HIT_COLUMNS: dict[str, str] = {
    "time": "datetime64[ns, UTC]",  # when the sensor saw it: the sighting's timestamp
    "sensor": "string",  # who saw it, e.g. suricata/edge-ids-1, flowmon/probe-2; never NA
    "value": "string",  # the indicator as the sensor saw it; NA when only the UUID is known
    "attribute_uuid": "string",  # lowercase MISP attribute UUID when known, else NA
    "origin": "string",  # where the hit was read, e.g. "eve.json line 12", for reports
}


def empty_hits() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in HIT_COLUMNS.items()})


def normalize_hits(frame: pd.DataFrame) -> pd.DataFrame:
    """Reorder and cast a parser's output to the hit schema (missing columns -> NA)."""
    out = frame.reindex(columns=list(HIT_COLUMNS))
    return out.astype(HIT_COLUMNS).reset_index(drop=True)


@dataclass
class HitBatch:
    """What a hit parser returns."""

    hits: pd.DataFrame
    problems: list[ParseProblem] = field(default_factory=list)
    records_read: int = 0  # input records seen (lines / events), usable or not
    skipped: dict[str, int] = field(default_factory=dict)  # deliberate skips: reason -> count

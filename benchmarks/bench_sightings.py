"""Sightings: 1M sensor hits on MISP indicators resolved through the indicator store,
aggregated to one sighting per indicator, sensor and hour, and submitted to the MISP
stand-in on loopback. Reports hits vs requests, planning time per size (linear), and
sightings per second by request concurrency."""

from __future__ import annotations

import tempfile
import time

import numpy as np
import pandas as pd

from benchmarks.harness import SEED, Figure, median_seconds, size_label
from benchmarks.misp_server import misp_in_subprocess
from misp_ndr.config import load_settings
from tasks.sighting_delivery import deliver_sightings_to_misp
from tasks.sighting_hits import normalize_hits
from tasks.sighting_plan import plan_sightings
from tests.misp_stand_in import API_KEY

INDICATORS = 5_000
SENSORS = ["edge-ids-1", "edge-ids-2"]
HOURS = 3
CONCURRENCY = [1, 4, 8]
SUBMIT_SAMPLE = 2_000  # sightings sent per concurrency level (all of them at the largest)
T0 = pd.Timestamp("2026-11-30T06:00:00Z")


def indicator_store() -> pd.DataFrame:
    values = [f"45.{n // 65536 % 256}.{n // 256 % 256}.{n % 256 + 1}" for n in range(INDICATORS)]
    uuids = [f"a0000000-0000-4000-8000-{n:012d}" for n in range(INDICATORS)]
    return pd.DataFrame({"value": values, "attribute_uuid": uuids}, dtype="string")


def hits(count: int, store: pd.DataFrame) -> pd.DataFrame:
    """Zipf-like: a few indicators draw most hits, as scanners and C2 beacons do."""
    rng = np.random.default_rng(SEED)
    which = np.minimum(rng.zipf(1.3, count) - 1, INDICATORS - 1)
    seconds = rng.integers(0, HOURS * 3600, count)
    return normalize_hits(pd.DataFrame({
        "time": T0 + pd.to_timedelta(seconds, unit="s"),
        "sensor": np.array(SENSORS)[rng.integers(0, len(SENSORS), count)],
        "value": store["value"].to_numpy()[which], "attribute_uuid": None,
        "origin": "eve.json"}))


def run(quick: bool) -> list[Figure]:
    sizes = [20_000] if quick else [100_000, 1_000_000, 5_000_000]
    runs = 1 if quick else 3
    store = indicator_store()
    figures: list[Figure] = []
    plan = None
    for size in sizes:
        batch = hits(size, store)
        seconds, planned = median_seconds(
            lambda b=batch: plan_sightings(b, store, 60, "{sensor}"), runs)
        label = f"{size_label(size)} hits"
        figures += [Figure("sightings", f"{label}: resolve + aggregate", seconds, "s"),
                    Figure("sightings", f"{label}: per million hits", seconds * 1e6 / size,
                           "s/M"),
                    Figure("sightings", f"{label}: sightings after aggregation",
                           len(planned.sightings), "sightings"),
                    Figure("sightings", f"{label}: hits per request sent",
                           size / len(planned.sightings), "hits")]
        if size == 1_000_000 or quick:
            plan = planned.sightings
    assert plan is not None
    events = [(f"e0000000-0000-4000-8000-{n:012d}",
               [{"uuid": uuid, "type": "ip-dst", "value": value}])
              for n, (value, uuid) in enumerate(zip(store["value"], store["attribute_uuid"],
                                                    strict=True))]
    for concurrency in CONCURRENCY:
        sample = plan if concurrency == CONCURRENCY[-1] else plan.iloc[:SUBMIT_SAMPLE]
        seconds, served = _submit(sample, events, concurrency)
        case = f"{len(sample)} sightings, concurrency {concurrency}"
        figures += [Figure("sightings", case, len(sample) / seconds, "sightings/s"),
                    Figure("sightings", f"{case}: requests per sighting",
                           served["requests"] / len(sample), "requests")]
    return figures


def _submit(sightings: pd.DataFrame, events: list, concurrency: int) -> tuple[float, dict]:
    with misp_in_subprocess(events) as (url, stats), tempfile.TemporaryDirectory() as state:
        settings = load_settings({"misp": {"url": url, "api_key": API_KEY,
                                           "concurrency": concurrency}, "state_dir": state})
        start = time.perf_counter()
        result = deliver_sightings_to_misp(sightings, settings)
        seconds = time.perf_counter() - start
        served = stats()
    assert result.sent == len(sightings) == served["sightings"], (result, served)
    return seconds, served

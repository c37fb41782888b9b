"""The indicator set the current ruleset was built from, kept between updates.

An incremental update pulls only attributes changed since the last one (deleted and
non-IDS ones included), so the store is what tells it the rest: every pulled attribute
replaces its old rows (or removes them, if it is now deleted, not IDS-flagged or
rejected), and rows whose event fell out of the age window expire.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from misp_ndr.atomic_files import write_atomically
from misp_ndr.task_policy import batch_task
from tasks.rule_indicators import RULE_INDICATOR_COLUMNS

STORE_COLUMNS = {**RULE_INDICATOR_COLUMNS, "event_date": "datetime64[ns, UTC]"}
STORE_FILE = "rule-indicators.parquet"  # under the state directory


class IndicatorStore:
    """A parquet file under the state directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> pd.DataFrame | None:
        """None when no ruleset was ever built: the next update must be a full one."""
        if not self.path.exists():
            return None
        return pd.read_parquet(self.path).astype(STORE_COLUMNS)

    def save(self, indicators: pd.DataFrame) -> None:
        buffer = io.BytesIO()
        indicators.reindex(columns=list(STORE_COLUMNS)).to_parquet(buffer, index=False)
        write_atomically(self.path, buffer.getvalue())


@dataclass
class MergedIndicators:
    indicators: pd.DataFrame
    removed_in_misp: int  # attributes pulled again but now deleted, not IDS, or rejected
    expired: int  # rows whose event is older than the age window


def merge_indicators(
    current: pd.DataFrame | None,
    pulled: pd.DataFrame,
    fresh: pd.DataFrame,
    *,
    full: bool,
    max_event_age_days: int,
    now: datetime,
) -> MergedIndicators:
    """`pulled`: the raw pulled attributes; `fresh`: the indicators normalized from them."""
    dates = pulled[["attribute_uuid", "event_date"]].drop_duplicates("attribute_uuid")
    fresh = fresh.merge(dates, on="attribute_uuid", how="left")
    removed = 0
    if full or current is None:
        base = fresh
    else:
        touched = current["attribute_uuid"].isin(pulled["attribute_uuid"])
        gone = touched & ~current["attribute_uuid"].isin(fresh["attribute_uuid"])
        removed = int(current.loc[gone, "attribute_uuid"].nunique())
        base = pd.concat([current[~touched], fresh], ignore_index=True)
    cutoff = pd.Timestamp(now - timedelta(days=max_event_age_days))
    expired = (base["event_date"] < cutoff).fillna(False).astype(bool)
    kept = base[~expired].reindex(columns=list(STORE_COLUMNS)).astype(STORE_COLUMNS)
    return MergedIndicators(kept.reset_index(drop=True), removed, int(expired.sum()))


def load_indicator_store(path: Path) -> pd.DataFrame | None:
    return IndicatorStore(path).load()


def save_indicator_store(path: Path, indicators: pd.DataFrame) -> None:
    IndicatorStore(path).save(indicators)


load_indicator_store_task = batch_task(load_indicator_store, "load-indicator-store")
merge_indicators_task = batch_task(merge_indicators, "merge-indicators")
save_indicator_store_task = batch_task(save_indicator_store, "save-indicator-store")

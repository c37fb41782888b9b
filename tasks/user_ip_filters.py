"""The user's IP filters (the seed's `flowmon_filters`): literals, or ADS filter names.

Names are resolved through the Flowmon ADS REST API and cached on disk, so a flaky
appliance does not stop exports for the cache lifetime, and a webhook-triggered run does
not log in to Flowmon for every batch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from misp_ndr.atomic_files import write_atomically
from misp_ndr.config import FlowmonSettings
from misp_ndr.errors import ConfigError
from misp_ndr.task_policy import batch_task
from tasks.flowmon import FlowmonClient
from tasks.ip_addresses import AddressRanges, is_filter_name


def cached_ads_filters(flowmon: FlowmonSettings, cache_path: Path) -> dict[str, list[str]]:
    """ADS filters from the cache when fresh enough, else from the appliance."""
    if cache_path.exists():
        cached = json.loads(cache_path.read_text(encoding="utf-8"))
        if time.time() - cached["fetched_at"] < flowmon.filter_cache_seconds:
            return cached["filters"]
    filters = FlowmonClient(flowmon).filters()
    payload = {"fetched_at": time.time(), "filters": filters}
    write_atomically(cache_path, json.dumps(payload, indent=2).encode())
    return filters


def resolve_ip_filters(
    entries: list[str], flowmon: FlowmonSettings, cache_path: Path
) -> AddressRanges:
    """All patterns the user's entries stand for, as one searchable range set."""
    names = [entry for entry in entries if is_filter_name(entry)]
    patterns = [entry for entry in entries if not is_filter_name(entry)]
    if names:
        if not flowmon.configured:
            raise ConfigError(
                f"IP filter(s) {', '.join(names)} are Flowmon ADS filter names, but no Flowmon "
                "is configured: set MISP_NDR_FLOWMON__URL/USER/PASSWORD, or use IP/CIDR literals"
            )
        known = cached_ads_filters(flowmon, cache_path)
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ConfigError(
                f"unknown Flowmon ADS filter(s) {', '.join(unknown)} in "
                "MISP_NDR_EXPORT__IP_FILTERS;"
                f" the appliance has: {', '.join(sorted(known)) or 'none'}"
            )
        patterns += [pattern for name in names for pattern in known[name]]
    return AddressRanges.from_patterns(patterns)


resolve_ip_filters_task = batch_task(resolve_ip_filters, "resolve-ip-filters", remote=True)

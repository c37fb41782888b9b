"""The user's IP filters: literals, and Flowmon ADS filter names resolved and cached."""

from __future__ import annotations

from pathlib import Path

import pytest
import responses

from misp_ndr.config import FlowmonSettings
from misp_ndr.errors import ConfigError
from tasks.ip_addresses import parse_addresses
from tasks.user_ip_filters import resolve_ip_filters

BASE = "https://flowmon.example"
ADS_FILTERS = [{"name": "Partners", "patterns": [{"pattern": "81.2.69.0/24"},
                                                 {"pattern": "5.6.7.[1-9]"}]},
               {"name": "Scanners", "patterns": [{"pattern": "45.155.205.233"}]}]


def flowmon(**overrides: object) -> FlowmonSettings:
    return FlowmonSettings(url=BASE, user="misp-sync", password="pw-Flowmon-1", retries=0,
                           **overrides)


def mock_appliance(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{BASE}/resources/oauth/token", json={"access_token": "t", "expires_in": 60})
    rsps.get(f"{BASE}/rest/ads/filters", json=ADS_FILTERS)


def dropped(ranges: object, *addresses: str) -> list[bool]:
    return ranges.contains(parse_addresses(list(addresses))).tolist()  # type: ignore[attr-defined]


def test_literals_need_no_appliance(tmp_path: Path) -> None:
    ranges = resolve_ip_filters(["8.8.8.0/24", "2001:4860::/32"], FlowmonSettings(),
                                tmp_path / "cache.json")
    assert dropped(ranges, "8.8.8.8", "8.8.9.1", "2001:4860::8888") == [True, False, True]


def test_filter_names_are_resolved_through_ads_and_cached(tmp_path: Path) -> None:
    cache = tmp_path / "cache.json"
    with responses.RequestsMock() as rsps:
        mock_appliance(rsps)
        ranges = resolve_ip_filters(["Partners", "1.1.1.1"], flowmon(), cache)
        assert len(rsps.calls) == 2  # login + filters
    assert dropped(ranges, "81.2.69.160", "5.6.7.5", "5.6.7.10", "1.1.1.1", "45.155.205.233") \
        == [True, True, False, True, False]
    with responses.RequestsMock() as rsps:  # no request allowed: the cache answers
        again = resolve_ip_filters(["Partners"], flowmon(), cache)
    assert dropped(again, "81.2.69.160") == [True]


def test_expired_cache_asks_the_appliance_again(tmp_path: Path) -> None:
    cache = tmp_path / "cache.json"
    with responses.RequestsMock() as rsps:
        mock_appliance(rsps)
        resolve_ip_filters(["Scanners"], flowmon(filter_cache_seconds=0), cache)
        resolve_ip_filters(["Scanners"], flowmon(filter_cache_seconds=0), cache)
        assert len([c for c in rsps.calls if c.request.url.endswith("/filters")]) == 2


def test_unknown_filter_name_lists_the_known_ones(tmp_path: Path) -> None:
    with responses.RequestsMock() as rsps, pytest.raises(ConfigError) as error:
        mock_appliance(rsps)
        resolve_ip_filters(["Partnres"], flowmon(), tmp_path / "cache.json")
    assert "Partnres" in str(error.value)
    assert "Partners, Scanners" in str(error.value)


def test_filter_name_without_flowmon_says_what_to_configure(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MISP_NDR_FLOWMON__URL"):
        resolve_ip_filters(["Partners"], FlowmonSettings(), tmp_path / "cache.json")

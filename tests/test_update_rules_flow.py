"""The rule update flow end to end on the bundled MISP feed: files sensors can load."""

from __future__ import annotations

import csv
import io
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import responses
from suricataparser import parse_rule

from flows.update_rules import update_rules
from misp_ndr.errors import TransientError
from tasks import ruleset_files
from tasks.ruleset_files import publish_ruleset, snapshots
from tests.conftest import SAMPLES
from tests.misp_stand_in import API_KEY, URL, MispStandIn

pytestmark = pytest.mark.usefixtures("prefect_harness")
FEED = str(SAMPLES / "misp-feed")


def run(tmp_path: Path, **options: object):
    return update_rules(feed=FEED, output_dir=str(tmp_path / "rules"), max_age_days=3650,
                        **options)


def rules_of(out: Path) -> list[str]:
    text = (out / "misp.rules").read_text()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def sid_map(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((out / "sid-map.csv").read_text())))


def test_feed_indicators_become_rules_blacklists_and_intel(tmp_path: Path) -> None:
    report = run(tmp_path)
    out = tmp_path / "rules"
    rules = rules_of(out)
    parsed = [parse_rule(rule) for rule in rules]
    assert all(rule is not None for rule in parsed)
    sids = [int(next(o.value for o in rule.options if o.name == "sid")) for rule in parsed]
    assert len(sids) == len(set(sids))
    assert {int(row["sid"]) for row in sid_map(out)} == set(sids)
    ips = (out / "misp-ip.txt").read_text().split()
    assert "45.155.205.233" in ips and "185.220.101.4" in ips
    assert "10.20.1.15" not in ips and "203.0.113.50" not in ips  # private; not IDS
    assert "evil-updates.example" in (out / "misp-domain.txt").read_text().split()
    assert (out / "misp.intel").read_text().startswith("#fields\tindicator\tindicator_type")
    assert any("tls.sni" in rule for rule in rules) and any("ja3.hash" in rule for rule in rules)
    rejected = " ".join(f"{p.excerpt} {p.reason}" for p in report.problems)
    assert "10.20.1.15" in rejected and 'bad"domain' in rejected
    assert report.files["misp.rules"] == (out / "misp.rules").stat().st_size


def test_rerun_keeps_every_sid_and_keeps_the_previous_ruleset(tmp_path: Path) -> None:
    run(tmp_path)
    first = {row["sid"]: row["attribute_uuid"] for row in sid_map(tmp_path / "rules")}
    intel = (tmp_path / "rules" / "misp.intel").stat()
    second = run(tmp_path)
    assert {row["sid"]: row["attribute_uuid"] for row in sid_map(tmp_path / "rules")} == first
    assert second.rule_changes == {"added": 0, "removed": 0, "changed": 0}
    assert len(snapshots(tmp_path / "rules")) == 1
    # the same indicators: at most the rules file (its header has the minute) is written
    # again, so Zeek, which re-reads an intel file when it changes, has nothing to reload
    assert set(second.files) - set(second.unchanged_files) <= {"misp.rules"}
    assert (tmp_path / "rules" / "misp.intel").stat().st_mtime_ns == intel.st_mtime_ns
    assert any("unchanged, not rewritten: " in str(row) for row in second.rows())


def test_excluded_tag_leaves_its_events_out(tmp_path: Path) -> None:
    run(tmp_path)
    assert "91.198.174.192" in (tmp_path / "rules" / "misp-ip.txt").read_text()
    run(tmp_path, exclude_tags=["tlp:red"])
    assert "91.198.174.192" not in (tmp_path / "rules" / "misp-ip.txt").read_text()


def test_customizations_survive_updates_but_not_fast_mode(tmp_path: Path) -> None:
    run(tmp_path)
    target = next(r for r in sid_map(tmp_path / "rules") if r["value"] == "45.155.205.233")
    custom = tmp_path / "rule-customizations.conf"  # the default path, in the working dir
    custom.write_text(f"disable {target['sid']}\n")
    run(tmp_path)
    text = (tmp_path / "rules" / "misp.rules").read_text()
    assert any(line.startswith("# ") and f"sid:{target['sid']};" in line
               for line in text.splitlines())
    run(tmp_path, fast=True)
    assert f"sid:{target['sid']};" in "\n".join(rules_of(tmp_path / "rules"))
    assert not custom.exists()
    assert list(tmp_path.glob("rule-customizations.conf.*.bak"))


def test_unreadable_feed_fails_and_keeps_the_good_ruleset(tmp_path: Path) -> None:
    run(tmp_path)
    before = (tmp_path / "rules" / "misp.rules").read_bytes()
    with pytest.raises(Exception, match="nowhere"):
        update_rules(feed=str(tmp_path / "nowhere"), output_dir=str(tmp_path / "rules"))
    assert (tmp_path / "rules" / "misp.rules").read_bytes() == before


def test_a_publish_cut_short_is_undone_first_even_when_the_next_update_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A kill among the renames of a publish leaves two rulesets mixed; the next update
    puts the good one back before it even pulls, so sensors never wait on a long run."""
    run(tmp_path)
    out = tmp_path / "rules"
    good = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}

    class Killed(BaseException):
        pass

    real_replace, renamed = os.replace, []

    def replace(source: object, target: object) -> None:
        if len(renamed) == 2:
            raise Killed
        renamed.append(target)
        real_replace(source, target)

    with monkeypatch.context() as patch:
        patch.setattr(ruleset_files.os, "replace", replace)
        with pytest.raises(Killed):
            publish_ruleset(out, {"misp.rules": b"new\n", "misp-ip.txt": b"192.0.2.1\n",
                                  "misp-domain.txt": b"x.example\n"}, keep=5)
    with pytest.raises(Exception, match="nowhere"):
        update_rules(feed=str(tmp_path / "nowhere"), output_dir=str(out))
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == good


def test_incremental_update_from_misp_adds_new_and_removes_deleted_indicators(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MISP_NDR_MISP__URL", URL)
    monkeypatch.setenv("MISP_NDR_MISP__API_KEY", API_KEY)
    now = datetime.now(UTC)
    t1, u1, t2, u2 = (now - timedelta(hours=h) for h in (4, 3, 2, 1))
    event = "5e1f0c62-6c5a-4c55-9e4e-0a6f7d3b2a10"
    ip_a = {"uuid": "a0000000-0000-4000-8000-000000000001", "type": "ip-dst",
            "value": "45.155.205.233"}
    domain_b = {"uuid": "b0000000-0000-4000-8000-000000000002", "type": "domain",
                "value": "evil-updates.example"}
    ip_c = {"uuid": "c0000000-0000-4000-8000-000000000003", "type": "ip-dst",
            "value": "185.220.101.4"}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        misp = MispStandIn(rsps)
        misp.publish_event(event, "Loader C2", f"{now:%Y-%m-%d}", int(t1.timestamp()),
                           [ip_a, domain_b])
        first = update_rules(output_dir=str(tmp_path / "rules"), until=u1)
        assert "45.155.205.233" in (tmp_path / "rules" / "misp-ip.txt").read_text()
        # the analyst deletes A and adds C, then republishes the event
        misp.publish_event(event, "Loader C2", f"{now:%Y-%m-%d}", int(t2.timestamp()),
                           [{**ip_a, "deleted": True}, domain_b, ip_c])
        second = update_rules(output_dir=str(tmp_path / "rules"), until=u2)
    assert "full" in first.plan and "incremental" in second.plan
    assert misp.searches[-1]["deleted"] == [0, 1] and misp.searches[-1]["to_ids"] == [0, 1]
    ips = (tmp_path / "rules" / "misp-ip.txt").read_text().split()
    assert ips == ["185.220.101.4"]
    assert "evil-updates.example" in (tmp_path / "rules" / "misp-domain.txt").read_text()
    assert second.removed_in_misp == 1
    assert second.rule_changes["added"] == 1 and second.rule_changes["removed"] == 1


def test_misp_outage_during_the_pull_keeps_the_good_ruleset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flows.update_rules as flow_module

    run(tmp_path)
    before = (tmp_path / "rules" / "misp.rules").read_bytes()
    monkeypatch.setenv("MISP_NDR_MISP__URL", URL)
    monkeypatch.setenv("MISP_NDR_MISP__API_KEY", API_KEY)
    monkeypatch.setenv("MISP_NDR_MISP__RETRIES", "0")
    monkeypatch.setattr(flow_module, "pull_misp_attributes_task",
                        flow_module.pull_misp_attributes_task.with_options(retries=0))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        MispStandIn(rsps)
        rsps.replace(responses.POST, f"{URL}/attributes/restSearch", status=503)
        with pytest.raises(TransientError):
            update_rules(output_dir=str(tmp_path / "rules"))
    assert (tmp_path / "rules" / "misp.rules").read_bytes() == before


def test_reload_command_runs_after_the_write_and_its_failure_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    probe = tmp_path / "reloaded"
    script = f"import pathlib,sys; pathlib.Path({str(probe)!r}).touch(); sys.exit('no socket')"
    monkeypatch.setenv("MISP_NDR_RULES__RELOAD_COMMAND", f'{sys.executable} -c "{script}"')
    report = run(tmp_path)
    assert probe.exists() and (tmp_path / "rules" / "misp.rules").exists()
    assert "FAILED" in report.reload and "no socket" in report.reload

"""The `misp-ndr` command line as an operator uses it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import responses
from typer.testing import CliRunner

from flows.update_rules import update_rules
from misp_ndr.cli import app
from tests.conftest import SAMPLES
from tests.misp_stand_in import API_KEY, URL, MispStandIn

runner = CliRunner()
SECRET = "cli-S3cret-key-never-printed-0123456789"


def test_export_help_documents_every_option() -> None:
    result = runner.invoke(app, ["export", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--source", "--input", "--feed-dir", "--feed-only", "--dry-run", "--since",
                   "--until", "--timezone", "--tag", "--to-ids", "--distribution",
                   "--ip-filter", "--publish"):
        assert option in result.output


def test_config_show_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISP_NDR_MISP__URL", "https://misp.example.org")
    monkeypatch.setenv("MISP_NDR_MISP__API_KEY", SECRET)
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 0
    assert "https://misp.example.org" in result.output
    assert SECRET not in result.output
    assert "**********" in result.output


def test_bad_configuration_exits_2_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISP_NDR_EXPORT__DISTRIBUTION", "9")
    result = runner.invoke(app, ["export", "--source", "suricata", "--input", "eve.json"])
    assert result.exit_code == 2
    assert "MISP_NDR_EXPORT__DISTRIBUTION" in result.output


def test_unknown_source_is_a_usage_error() -> None:
    result = runner.invoke(app, ["export", "--source", "zeek"])
    assert result.exit_code == 2
    assert "flowmon-api" in result.output


def test_check_without_misp_says_exports_go_to_a_feed() -> None:
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 0
    assert "not configured" in result.output


@pytest.mark.usefixtures("prefect_harness")
def test_stdin_batch_is_exported_and_its_spool_file_removed(tmp_path: Path) -> None:
    batch = (SAMPLES / "flowmon-batch.tsv").read_text()
    result = runner.invoke(app, ["export", "--source", "flowmon-stdin", "--feed-dir",
                                 str(tmp_path / "feed")], input=batch)
    assert result.exit_code == 0, result.output
    assert "events created" in result.output
    assert list((tmp_path / ".misp-ndr" / "spool").iterdir()) == []


@pytest.mark.usefixtures("prefect_harness")
def test_dry_run_prints_the_events_it_would_send(tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", "--source", "suricata", "--input",
                                 str(SAMPLES / "eve.json"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would send" in result.output
    assert not (tmp_path / "out").exists()


def test_readme_demo_command_runs_on_a_fresh_prefect_home(tmp_path: Path) -> None:
    """README command 1, as a new user runs it: a real process, Prefect's ephemeral API."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "PREFECT_API_URL": "", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    command = [sys.executable, "-m", "misp_ndr", "demo", "--output-dir", str(tmp_path / "demo")]
    first = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    feed = tmp_path / "demo" / "misp-feed"
    match = re.search(r"MISP feed at (.+): (\d+) events", first.stdout)
    assert match and Path(match.group(1)) == feed.resolve() and int(match.group(2)) > 0
    assert (feed / "manifest.json").exists() and (feed / "hashes.csv").exists()
    sightings = (tmp_path / "demo" / "sightings.jsonl").read_text().splitlines()
    assert len(sightings) == 11 and all(json.loads(line)["type"] == "0" for line in sightings)
    again = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    created = re.findall(r"events created\s+(\d+)", again.stdout)
    assert created == ["0", "0", "0"]  # a second run exports nothing twice
    assert (tmp_path / "demo" / "sightings.jsonl").read_text().splitlines() == sightings
    assert re.findall(r"skipped: sent by an earlier run\s+(\d+)", again.stdout) == ["5", "3", "3"]


def test_check_reports_version_and_what_the_key_may_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISP_NDR_MISP__URL", URL)
    monkeypatch.setenv("MISP_NDR_MISP__API_KEY", API_KEY)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        MispStandIn(rsps)
        result = runner.invoke(app, ["check"])
    assert result.exit_code == 0, result.output
    assert "2.5.1" in result.output
    for ability in ("events", "tags", "sightings"):
        assert ability in result.output
    assert API_KEY not in result.output


def test_check_with_unreachable_misp_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISP_NDR_MISP__URL", "http://127.0.0.1:9")  # discard port: refused
    monkeypatch.setenv("MISP_NDR_MISP__API_KEY", API_KEY)
    monkeypatch.setenv("MISP_NDR_MISP__RETRIES", "0")
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 1
    assert "unreachable" in result.output or "not reachable" in result.output


def test_update_rules_without_misp_or_feed_exits_2() -> None:
    result = runner.invoke(app, ["update-rules"])
    assert result.exit_code == 2
    assert "MISP_NDR_MISP__URL" in result.output and "--feed" in result.output


def test_update_rules_help_documents_the_contract_options() -> None:
    result = runner.invoke(app, ["update-rules", "--help"], env={"COLUMNS": "200"})
    for option in ("--since", "--from", "--to", "--max-age", "--tag", "--fast", "--feed",
                   "--output-dir", "--rollback", "--snapshot", "--list-snapshots"):
        assert option in result.output


@pytest.mark.usefixtures("prefect_harness")
def test_update_rules_from_feed_then_rollback_restores_the_previous_files(
    tmp_path: Path,
) -> None:
    feed = ["update-rules", "--feed", str(SAMPLES / "misp-feed"), "--max-age", "3650d"]
    first = runner.invoke(app, feed)
    assert first.exit_code == 0, first.output
    assert "rules added" in first.output
    rules = tmp_path / "out" / "rules" / "misp.rules"
    original = rules.read_bytes()
    # a second CliRunner flow run in one test trips Prefect's console handler (it keeps
    # the first run's closed stream); operators run one process per command
    update_rules(feed=str(SAMPLES / "misp-feed"), max_age_days=3650, exclude_tags=["tlp:red"])
    assert rules.read_bytes() != original
    listed = runner.invoke(app, ["update-rules", "--list-snapshots"])
    assert len(listed.output.split()) == 1
    restored = runner.invoke(app, ["update-rules", "--rollback"])
    assert restored.exit_code == 0 and "restored ruleset" in restored.output
    assert rules.read_bytes() == original


def test_flowmon_api_export_without_flowmon_settings_exits_2_before_any_run() -> None:
    result = runner.invoke(app, ["export", "--source", "flowmon-api"])
    assert result.exit_code == 2
    assert "MISP_NDR_FLOWMON__URL" in result.output


def test_missing_input_file_exits_2_naming_it() -> None:
    result = runner.invoke(app, ["export", "--source", "suricata", "--input", "nope.json"])
    assert result.exit_code == 2
    assert "nope.json" in result.output

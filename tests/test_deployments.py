"""The deployments `misp-ndr deploy` registers, built without a server: schedules from the
settings, forms from the flow signatures, and no secret stored with them."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from pathlib import Path

import pytest
from dateutil.rrule import rrulestr

from deployments.definitions import (
    AUTOMATIC_UPDATE,
    FLOWMON_POLL,
    Job,
    build_deployments,
    deployment_path,
    job_schedules,
)
from misp_ndr.config import load_settings
from misp_ndr.errors import ConfigError

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SECRETS = {"MISP_NDR_MISP__API_KEY": "Mk3y-0f-MISP-n0t-in-deployments-1234",
           "MISP_NDR_FLOWMON__PASSWORD": "Fl0wm0n-pa55-n0t-in-deployments",
           "MISP_NDR_WEBHOOK__TOKEN": "h00k-t0ken-n0t-in-deployments"}


def flowmon_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISP_NDR_FLOWMON__URL", "https://flowmon.example.org")
    monkeypatch.setenv("MISP_NDR_FLOWMON__USER", "misp-ndr")
    monkeypatch.setenv("MISP_NDR_FLOWMON__PASSWORD", SECRETS["MISP_NDR_FLOWMON__PASSWORD"])


def test_automatic_rule_updates_follow_start_date_utc_time_period_and_max_age(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MISP_NDR_RULES__SCHEDULE_START_DATE", "2026-12-05")
    monkeypatch.setenv("MISP_NDR_RULES__SCHEDULE_TIME_UTC", "04:15")
    monkeypatch.setenv("MISP_NDR_RULES__SCHEDULE_EVERY_DAYS", "2")
    monkeypatch.setenv("MISP_NDR_RULES__MAX_EVENT_AGE_DAYS", "14")
    (schedule,) = job_schedules(load_settings(), NOW)[Job.UPDATE_RULES]
    assert schedule.slug == AUTOMATIC_UPDATE and schedule.timezone == "UTC"
    assert schedule.active and schedule.parameters == {"max_age_days": 14}
    assert schedule.rrule is not None
    assert list(islice(rrulestr(schedule.rrule), 3)) == [
        datetime(2026, 12, 5, 4, 15, tzinfo=UTC), datetime(2026, 12, 7, 4, 15, tzinfo=UTC),
        datetime(2026, 12, 9, 4, 15, tzinfo=UTC)]


def test_automatic_rule_updates_can_be_registered_paused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MISP_NDR_RULES__SCHEDULE_ACTIVE", "false")
    (schedule,) = job_schedules(load_settings(), NOW)[Job.UPDATE_RULES]
    assert not schedule.active


def test_flowmon_polling_is_off_by_default() -> None:
    schedules = job_schedules(load_settings(), NOW)
    assert schedules[Job.EXPORT] == [] and schedules[Job.SIGHTINGS] == []


def test_flowmon_polling_reads_the_ads_api_every_n_minutes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flowmon_configured(monkeypatch)
    monkeypatch.setenv("MISP_NDR_EXPORT__POLL_MINUTES", "10")
    monkeypatch.setenv("MISP_NDR_SIGHTINGS__POLL_MINUTES", "5")
    schedules = job_schedules(load_settings(), NOW)
    (export,), (sightings,) = schedules[Job.EXPORT], schedules[Job.SIGHTINGS]
    assert export.interval == timedelta(minutes=10) and sightings.interval == timedelta(minutes=5)
    assert export.slug == sightings.slug == FLOWMON_POLL
    assert export.parameters == sightings.parameters == {"source": "flowmon-api"}


def test_polling_without_a_flowmon_appliance_is_refused_at_deploy_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MISP_NDR_SIGHTINGS__POLL_MINUTES", "5")
    with pytest.raises(ConfigError, match="MISP_NDR_SIGHTINGS__POLL_MINUTES=5 polls the "
                                          "Flowmon ADS API: set MISP_NDR_FLOWMON__URL"):
        job_schedules(load_settings(), NOW)


def test_each_job_is_one_deployment_run_from_the_installed_package(tmp_path: Path) -> None:
    deployments = build_deployments(load_settings(), tmp_path, NOW)
    assert {(d.flow_name, d.name, d.entrypoint) for d in deployments} == {
        ("export-detections", "misp-ndr", "flows.export.export_detections"),
        ("submit-sightings", "misp-ndr", "flows.sightings.submit_sightings"),
        ("update-rules", "misp-ndr", "flows.update_rules.update_rules")}
    assert all(d.job_variables == {"working_dir": str(tmp_path)} for d in deployments)
    assert all(d.concurrency_limit == 1 for d in deployments)
    assert deployment_path(load_settings(), Job.SIGHTINGS) == "submit-sightings/misp-ndr"


def test_the_ui_forms_offer_the_typed_options_of_each_job() -> None:
    forms = {d.flow_name: d._parameter_openapi_schema.model_dump()
             for d in build_deployments(load_settings(), now=NOW)}
    rules = forms["update-rules"]["properties"]
    assert rules["fast"]["type"] == "boolean"
    assert rules["since"]["anyOf"][0] == {"format": "date-time", "type": "string"}
    export = forms["export-detections"]
    assert export["required"] == ["source"]
    assert export["definitions"]["ExportSource"]["enum"] == [
        "flowmon-api", "flowmon-stdin", "suricata"]
    assert export["definitions"]["Distribution"]["enum"] == [0, 1, 2, 3]
    undocumented = [(flow, name) for flow, form in forms.items()
                    for name, field in form["properties"].items() if not field.get("description")]
    assert undocumented == []  # each form field carries its help text from the docstring


def test_no_secret_is_stored_with_any_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    flowmon_configured(monkeypatch)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MISP_NDR_MISP__URL", "https://misp.example.org")
    monkeypatch.setenv("MISP_NDR_EXPORT__POLL_MINUTES", "10")
    for deployment in build_deployments(load_settings(), Path("/srv/misp-ndr"), NOW):
        stored = json.dumps([deployment.parameters, deployment.job_variables,
                             [s.parameters for s in deployment.schedules],
                             deployment._parameter_openapi_schema.model_dump(),
                             deployment.description], default=str)
        assert not any(secret in stored for secret in SECRETS.values())
        names = deployment._parameter_openapi_schema.model_dump()["properties"]
        assert not {"api_key", "password", "token"} & set(names)


def test_without_a_start_date_the_first_automatic_update_is_the_next_time_of_day() -> None:
    (schedule,) = job_schedules(load_settings(), NOW)[Job.UPDATE_RULES]
    assert schedule.rrule is not None
    first = next(iter(rrulestr(schedule.rrule)))
    assert first == datetime.combine(date(2026, 12, 2), datetime.min.time(), UTC).replace(hour=3)

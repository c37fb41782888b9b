"""Settings: env / .env / per-run overrides, seed parameter names, clear errors, no leaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from misp_ndr.config import (
    SEED_PARAMETERS,
    Distribution,
    load_settings,
    masked_settings,
    overrides_from_seed_parameters,
)
from misp_ndr.errors import ConfigError

SECRET = "k3y-Th4t-MUST-n0t-L3ak-0123456789abcdef"


def test_defaults_need_no_external_server() -> None:
    settings = load_settings()
    assert not settings.misp.configured
    assert not settings.flowmon.configured
    assert settings.misp.verify_tls is True
    assert settings.export.to_ids is False
    assert settings.export.distribution is Distribution.OWN_ORGANISATION
    assert settings.export.publish is True
    assert settings.export.ip_filters == []


def test_nested_env_vars_configure_misp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISP_NDR_MISP__URL", "https://misp.example.org")
    monkeypatch.setenv("MISP_NDR_MISP__API_KEY", SECRET)
    monkeypatch.setenv("MISP_NDR_MISP__TIMEOUT", "12.5")
    settings = load_settings()
    assert settings.misp.configured
    assert str(settings.misp.url) == "https://misp.example.org/"
    assert settings.misp.api_key.get_secret_value() == SECRET
    assert settings.misp.timeout == 12.5


@pytest.mark.parametrize(("raw", "expected"), [("0", False), ("1", True), ("false", False),
                                               ("true", True), ("no", False), ("yes", True)])
def test_ids_flag_zero_really_means_off(monkeypatch: pytest.MonkeyPatch, raw: str,
                                        expected: bool) -> None:
    monkeypatch.setenv("MISP_NDR_EXPORT__TO_IDS", raw)
    assert load_settings().export.to_ids is expected


def test_dotenv_file_in_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "MISP_NDR_EXPORT__TAG=from-dotenv\nMISP_NDR_EXPORT__DISTRIBUTION=2\n"
    )
    settings = load_settings()
    assert settings.export.tag == "from-dotenv"
    assert settings.export.distribution is Distribution.CONNECTED_COMMUNITIES


def test_ip_filters_env_is_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISP_NDR_EXPORT__IP_FILTERS", "8.8.8.0/24, Servers ,1.1.1.{1,5,9},9.9.9.*")
    assert load_settings().export.ip_filters == ["8.8.8.0/24", "Servers", "1.1.1.{1,5,9}",
                                                 "9.9.9.*"]


def test_invalid_ip_filter_literal_names_the_variable_and_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MISP_NDR_EXPORT__IP_FILTERS", "8.8.8.0/24,10.0.0.300")
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert "MISP_NDR_EXPORT__IP_FILTERS" in str(error.value)
    assert "10.0.0.300" in str(error.value)


def test_out_of_range_distribution_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISP_NDR_EXPORT__DISTRIBUTION", "7")
    with pytest.raises(ConfigError) as error:
        load_settings()
    message = str(error.value)
    assert "MISP_NDR_EXPORT__DISTRIBUTION" in message
    assert "0 (own organisation)" in message


def test_misp_url_without_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISP_NDR_MISP__URL", "https://misp.example.org")
    with pytest.raises(ConfigError, match="MISP_NDR_MISP__API_KEY"):
        load_settings()


def test_placeholder_api_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISP_NDR_MISP__URL", "https://misp.example.org")
    monkeypatch.setenv("MISP_NDR_MISP__API_KEY", "changeme")
    with pytest.raises(ConfigError, match="placeholder"):
        load_settings()


def test_missing_ca_bundle_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISP_NDR_MISP__CA_BUNDLE", "/nonexistent/ca.pem")
    with pytest.raises(ConfigError, match="MISP_NDR_MISP__CA_BUNDLE"):
        load_settings()


def test_errors_reprs_and_shown_config_never_contain_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MISP_NDR_MISP__URL", "not a url")
    monkeypatch.setenv("MISP_NDR_MISP__API_KEY", SECRET)
    monkeypatch.setenv("MISP_NDR_FLOWMON__PASSWORD", SECRET + "-pw")
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert SECRET not in str(error.value)
    monkeypatch.setenv("MISP_NDR_MISP__URL", "https://misp.example.org")
    settings = load_settings()
    for text in (repr(settings), str(settings), str(masked_settings(settings))):
        assert SECRET not in text
    assert masked_settings(settings)["misp"]["api_key"] == "**********"


def test_per_run_overrides_win_over_env_and_keep_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MISP_NDR_EXPORT__TAG", "env-tag")
    monkeypatch.setenv("MISP_NDR_EXPORT__TO_IDS", "1")
    settings = load_settings({"export": {"tag": "run-tag", "to_ids": None}})
    assert settings.export.tag == "run-tag"
    assert settings.export.to_ids is True


def test_seed_parameter_names_map_onto_the_settings_tree() -> None:
    seed = {
        "misp_server": "https://misp.example.org",
        "misp_api_key": SECRET,
        "misp_tag": "flowmon-ads",
        "misp_ids": "0",
        "misp_distribution": "1",
        "flowmon_filters": "Servers,8.8.8.8",
        "flowmon_user": "admin",
        "flowmon_pass": "s3cret-pass",
        "source": "Flowmon ADS",  # misp_sighting_script.bash
    }
    assert set(seed) == set(SEED_PARAMETERS)
    overrides = overrides_from_seed_parameters(seed)
    overrides["flowmon"]["url"] = "https://flowmon.example.org"
    settings = load_settings(overrides)
    assert str(settings.misp.url) == "https://misp.example.org/"
    assert settings.misp.api_key.get_secret_value() == SECRET
    assert settings.export.tag == "flowmon-ads"
    assert settings.export.to_ids is False  # the seed read "0" as on
    assert settings.export.distribution is Distribution.COMMUNITY
    assert settings.export.ip_filters == ["Servers", "8.8.8.8"]
    assert settings.sightings.source == "Flowmon ADS"
    assert settings.flowmon.user == "admin"
    assert settings.flowmon.password.get_secret_value() == "s3cret-pass"


def test_unknown_seed_parameter_is_named() -> None:
    with pytest.raises(ConfigError, match="misp_sever"):
        overrides_from_seed_parameters({"misp_sever": "x"})


def test_method_tag_template_with_unknown_field_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MISP_NDR_EXPORT__METHOD_TAG_TEMPLATE", "ads:{methd}")
    with pytest.raises(ConfigError, match="MISP_NDR_EXPORT__METHOD_TAG_TEMPLATE"):
        load_settings()


@pytest.mark.parametrize(("token", "problem"), [
    ("short-token", "at least 16 characters"),
    ("changeme", "placeholder"),
])
def test_a_weak_webhook_token_is_refused(monkeypatch: pytest.MonkeyPatch, token: str,
                                         problem: str) -> None:
    monkeypatch.setenv("MISP_NDR_WEBHOOK__TOKEN", token)
    with pytest.raises(ConfigError, match=f"MISP_NDR_WEBHOOK__TOKEN: .*{problem}") as raised:
        load_settings()
    assert token not in str(raised.value)


def test_webhook_tls_needs_both_certificate_and_key(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("MISP_NDR_WEBHOOK__TLS_CERT", str(cert))
    with pytest.raises(ConfigError, match="set both tls_cert and tls_key"):
        load_settings()

"""Secrets kept in Prefect Secret blocks: `prefect-secret:<name>` in a secret setting."""

from __future__ import annotations

import pytest
from prefect.blocks.system import Secret

from misp_ndr.config import load_settings
from misp_ndr.errors import ConfigError

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_harness")]
KEY = "Bl0ck-held-MISP-key-0123456789abcdef"


def test_the_misp_key_is_read_from_the_named_secret_block_when_a_run_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Secret(value=KEY).save("misp-api-key", overwrite=True)
    monkeypatch.setenv("MISP_NDR_MISP__URL", "https://misp.example.org")
    monkeypatch.setenv("MISP_NDR_MISP__API_KEY", "prefect-secret:misp-api-key")
    settings = load_settings()
    assert settings.misp.api_key is not None
    assert settings.misp.api_key.get_secret_value() == KEY
    assert KEY not in repr(settings)


def test_a_rotated_key_is_picked_up_by_the_next_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISP_NDR_WEBHOOK__TOKEN", "prefect-secret:hook-token")
    Secret(value="first-token-0123456789").save("hook-token", overwrite=True)
    assert load_settings().webhook.token.get_secret_value() == "first-token-0123456789"
    Secret(value="rotated-token-0123456789").save("hook-token", overwrite=True)
    assert load_settings().webhook.token.get_secret_value() == "rotated-token-0123456789"


def test_a_missing_block_names_the_variable_and_the_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MISP_NDR_FLOWMON__URL", "https://flowmon.example.org")
    monkeypatch.setenv("MISP_NDR_FLOWMON__USER", "misp-ndr")
    monkeypatch.setenv("MISP_NDR_FLOWMON__PASSWORD", "prefect-secret:no-such-block")
    with pytest.raises(ConfigError, match="MISP_NDR_FLOWMON__PASSWORD: no Prefect Secret "
                                          "block named 'no-such-block'"):
        load_settings()


def test_a_block_holding_a_placeholder_is_refused_like_one_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Secret(value="changeme").save("placeholder-key", overwrite=True)
    monkeypatch.setenv("MISP_NDR_MISP__URL", "https://misp.example.org")
    monkeypatch.setenv("MISP_NDR_MISP__API_KEY", "prefect-secret:placeholder-key")
    with pytest.raises(ConfigError, match="MISP_NDR_MISP__API_KEY: the MISP API key is a "
                                          "placeholder"):
        load_settings()

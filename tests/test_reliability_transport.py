"""TLS to MISP and Flowmon, against a real HTTPS server on 127.0.0.1 with a private CA.

Verification is on by default and refuses the unknown CA with an error that says what to
set; `ca_bundle` naming the CA makes it work, another CA does not; `verify_tls=false` works,
and says so once per system per process, naming the system, without per-request warning
noise. Settings come from the environment, as a deployment gives them. Many hosts (this
one's container image too) export REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE for the system CAs,
and `requests` lets those override a session's own `verify`: each case runs with them unset
and set, so the user's TLS choice is shown to win in both.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from urllib3.exceptions import InsecureRequestWarning

import misp_ndr.http
from misp_ndr.config import load_settings
from misp_ndr.errors import ConfigError
from tasks.flowmon import FlowmonClient
from tasks.misp import MispClient
from tests.loopback_http import LoopbackRouter, serving
from tests.misp_stand_in import MispStandIn
from tests.reliability import Recorder
from tests.tls_certs import serve_over_tls, write_private_ca

MISP_KEY = "Tq4wTransportTestKey0a1b2c3d4e5f6g7h8i9j"
CA_ENV = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
OFF_WARNING = "TLS certificate verification is OFF for"


@dataclass(frozen=True)
class Pki:
    ca: Path  # signed the server's certificate
    other_ca: Path  # a CA that did not
    host_ca: Path  # what a host's REQUESTS_CA_BUNDLE names: trusts neither
    cert: Path
    key: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca, cert, key = write_private_ca(tmp_path / "server-ca")
    other_ca, _, _ = write_private_ca(tmp_path / "other-ca")
    host_ca, _, _ = write_private_ca(tmp_path / "host-ca")
    return Pki(ca, other_ca, host_ca, cert, key)


@pytest.fixture
def server(pki: Pki) -> Iterator[LoopbackRouter]:
    """MISP and a Flowmon appliance behind one HTTPS port; `requests` counts what got
    through the handshake."""
    router = serve_over_tls(LoopbackRouter(), pki.cert, pki.key)
    MispStandIn(router, url=router.url)
    router.add_callback("POST", f"{router.url}/resources/oauth/token", lambda _r: (
        200, {"Content-Type": "application/json"}, '{"access_token": "t", "expires_in": 60}'))
    router.get(f"{router.url}/rest/ads/filters", [{"name": "Servers", "patterns": ["10.0.0.0/8"]}])
    with serving(router):
        yield router


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """'Once per process' is about this test's clients, not those of earlier tests."""
    monkeypatch.setattr(misp_ndr.http, "_warned_insecure", set())


def use_system(monkeypatch: pytest.MonkeyPatch, system: str, url: str,
               tls: dict[str, str]) -> Callable[[], Any]:
    """Configure `system` through its env vars; returns one call that needs the server."""
    prefix = f"MISP_NDR_{system.upper()}__"
    monkeypatch.setenv(prefix + "URL", url)
    monkeypatch.setenv(prefix + "RETRIES", "0")
    for name, value in tls.items():
        monkeypatch.setenv(prefix + name, value)
    if system == "MISP":
        monkeypatch.setenv(prefix + "API_KEY", MISP_KEY)
        return lambda: MispClient(load_settings().misp).server_check()
    monkeypatch.setenv(prefix + "USER", "misp-sync")
    monkeypatch.setenv(prefix + "PASSWORD", "transport-test-password")
    return lambda: FlowmonClient(load_settings().flowmon).filters()


def set_host_ca_environment(monkeypatch: pytest.MonkeyPatch, pki: Pki, exported: bool) -> None:
    for name in CA_ENV:
        if exported:
            monkeypatch.setenv(name, str(pki.host_ca))
        else:
            monkeypatch.delenv(name, raising=False)


@dataclass(frozen=True)
class Case:
    name: str
    tls: dict[str, str]  # field -> "ca" / "other_ca" (a Pki path) or a literal
    trusted: bool  # the connection must work
    warns: bool = False  # verification is really off: one warning is due

    def env(self, pki: Pki) -> dict[str, str]:
        return {field.upper(): str(getattr(pki, value, value))
                for field, value in self.tls.items()}


CASES = [
    Case("default settings", {}, trusted=False),
    Case("ca_bundle names the server's CA", {"ca_bundle": "ca"}, trusted=True),
    Case("ca_bundle names another CA", {"ca_bundle": "other_ca"}, trusted=False),
    Case("verify_tls=false", {"verify_tls": "false"}, trusted=True, warns=True),
    Case("verify_tls=false and ca_bundle naming another CA: the bundle wins",
         {"verify_tls": "false", "ca_bundle": "other_ca"}, trusted=False),
]


def tls_params() -> list[Any]:
    params = []
    for system in ("MISP", "Flowmon"):
        for case in CASES:
            for exported in (False, True):
                where = "REQUESTS_CA_BUNDLE exported" if exported else "no CA env vars"
                params.append(pytest.param(system, case, exported,
                                           id=f"{system}: {case.name}, {where}"))
    return params


@pytest.mark.parametrize(("system", "case", "exported"), tls_params())
def test_tls_verification_follows_the_settings_and_nothing_else(
    system: str, case: Case, exported: bool, server: LoopbackRouter, pki: Pki,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, reliability: Recorder,
) -> None:
    set_host_ca_environment(monkeypatch, pki, exported)
    call = use_system(monkeypatch, system, server.url, case.env(pki))
    caplog.set_level(logging.WARNING, logger="misp_ndr.http")
    failure: ConfigError | None = None
    try:
        call()
    except ConfigError as exc:
        failure = exc
    warned = [r.getMessage() for r in caplog.records if OFF_WARNING in r.getMessage()]
    where = "REQUESTS_CA_BUNDLE exported" if exported else "no CA env vars"
    fault = f"{system} over HTTPS with a private CA: {case.name} ({where})"
    if case.trusted:
        assert failure is None, f"{fault}: {failure}"
        assert server.requests > 0
        assert warned == ([f"{OFF_WARNING} {system} (verify_tls=false)"] if case.warns else [])
        reliability.record("transport", fault, checked=1, lost=0)
        return
    assert failure is not None, f"{fault}: connected to a server it must not trust"
    assert "TLS verification failed" in str(failure)
    if system == "MISP":
        assert "MISP_NDR_MISP__CA_BUNDLE" in str(failure)
    assert warned == []
    reliability.record("transport", fault, checked=1, injected=server.requests)


@pytest.mark.parametrize("system", ["MISP", "Flowmon"])
def test_verification_off_is_said_once_per_system_and_requests_stay_quiet(
    system: str, server: LoopbackRouter, pki: Pki, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, reliability: Recorder,
) -> None:
    set_host_ca_environment(monkeypatch, pki, exported=False)
    call = use_system(monkeypatch, system, server.url, {"VERIFY_TLS": "false"})
    caplog.set_level(logging.WARNING, logger="misp_ndr.http")
    clients = 3
    with warnings.catch_warnings(record=True) as raised:
        warnings.simplefilter("always")
        for _ in range(clients):
            call()
    said = [r for r in caplog.records if OFF_WARNING in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in said] == [
        (logging.WARNING, f"{OFF_WARNING} {system} (verify_tls=false)")]
    insecure = [w for w in raised if issubclass(w.category, InsecureRequestWarning)]
    assert insecure == [] and server.requests >= clients
    reliability.record("transport", f"{system} verify_tls=false, {clients} clients in one "
                       "process: warnings logged", checked=clients, lost=0 if said else 1,
                       duplicated=max(len(said) - 1, 0))


def test_each_system_gets_its_own_warning(
    server: LoopbackRouter, pki: Pki, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, reliability: Recorder,
) -> None:
    set_host_ca_environment(monkeypatch, pki, exported=False)
    calls = [use_system(monkeypatch, system, server.url, {"VERIFY_TLS": "false"})
             for system in ("MISP", "Flowmon")]
    caplog.set_level(logging.WARNING, logger="misp_ndr.http")
    for call in calls * 2:
        call()
    said = [r.getMessage() for r in caplog.records if OFF_WARNING in r.getMessage()]
    reliability.check("transport", "verify_tls=false for MISP and Flowmon in one process: "
                      "warnings, one per system", expected=[
                          f"{OFF_WARNING} MISP (verify_tls=false)",
                          f"{OFF_WARNING} Flowmon (verify_tls=false)"], reached=said)


@pytest.mark.parametrize("system", ["MISP", "Flowmon"])
def test_with_default_settings_a_host_wide_ca_bundle_is_honoured(
    system: str, server: LoopbackRouter, pki: Pki, monkeypatch: pytest.MonkeyPatch,
    reliability: Recorder,
) -> None:
    """How many sites add their private CA: REQUESTS_CA_BUNDLE for every Python client.
    Only an explicit ca_bundle or verify_tls=false should take precedence over it."""
    for name in CA_ENV:
        monkeypatch.setenv(name, str(pki.ca))
    use_system(monkeypatch, system, server.url, {})()
    assert server.requests > 0
    reliability.record("transport", f"{system} over HTTPS, default settings, "
                       "REQUESTS_CA_BUNDLE names the server's CA", checked=1, lost=0)

"""The shared secret: a bearer token, or an HMAC-SHA256 signature of the whole request.

Comparisons are constant-time. A signature covers
`<timestamp>.<path and query, as sent>.<Idempotency-Key or empty>.<body>` and is refused
outside a window around the receiver's clock, so a captured request cannot be replayed
later. Within the window a replay can only be the very same request (same hook, options,
key and body), which the spool turns into the same run: signing the body alone would let a
replay pick another hook, other options (distribution=3) or a fresh key, a new run each.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from pydantic import SecretStr

SIGNATURE_HEADER = "x-misp-ndr-signature"
TIMESTAMP_HEADER = "x-misp-ndr-timestamp"
SIGNATURE_PREFIX = "sha256="
IDEMPOTENCY_HEADER = "idempotency-key"


class AuthFailure(Exception):
    """Why a request was refused (sent back with 401; never contains the secret)."""


def sign(secret: str, timestamp: int, target: str, body: bytes,
         idempotency_key: str = "") -> str:
    """The signature header's value. `target` is the request's path and query string exactly
    as sent (`/hooks/export?distribution=2`), as a client computes it with openssl."""
    signed = f"{timestamp}.{target}.{idempotency_key}.".encode() + body
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def has_bearer(headers: Mapping[str, str]) -> bool:
    return "authorization" in headers


def check_bearer(headers: Mapping[str, str], secret: SecretStr) -> None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthFailure("Authorization must be 'Bearer <token>'")
    if not hmac.compare_digest(token.strip().encode(), secret.get_secret_value().encode()):
        raise AuthFailure("wrong token")


def check_signature_headers(headers: Mapping[str, str], max_age_seconds: int,
                            now: float | None = None) -> None:
    """What can be refused before the body is read: a stranger gets no buffer."""
    signature, stamp = headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER)
    if not signature or not stamp:
        raise AuthFailure("missing credentials: send 'Authorization: Bearer <token>', or "
                          f"{TIMESTAMP_HEADER} and {SIGNATURE_HEADER} (HMAC-SHA256)")
    if not stamp.isdigit():
        raise AuthFailure(f"{TIMESTAMP_HEADER} must be Unix seconds")
    if abs((now or time.time()) - int(stamp)) > max_age_seconds:
        raise AuthFailure(f"{TIMESTAMP_HEADER} is more than {max_age_seconds} s away from "
                          "the receiver's clock (a replay, or a clock to fix)")


def check_signature(headers: Mapping[str, str], target: str, body: bytes,
                    secret: SecretStr) -> None:
    """After `check_signature_headers`: the signature of this request."""
    expected = sign(secret.get_secret_value(), int(headers[TIMESTAMP_HEADER]), target, body,
                    headers.get(IDEMPOTENCY_HEADER, ""))
    if not hmac.compare_digest(headers[SIGNATURE_HEADER].strip().encode(), expected.encode()):
        raise AuthFailure("wrong signature")

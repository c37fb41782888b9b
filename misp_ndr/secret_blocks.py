"""Secrets kept in Prefect Secret blocks instead of environment variables.

A secret setting whose value is `prefect-secret:<block name>` is read from that block when
the settings are built, i.e. when a command or flow run starts. Rotating a key is then one
block update in the Prefect UI; the next run picks it up, no worker restart, and the key is
never stored in a deployment's parameters or job variables.
"""

from __future__ import annotations

from pydantic import SecretStr

REFERENCE_PREFIX = "prefect-secret:"


def is_block_reference(secret: SecretStr) -> bool:
    return secret.get_secret_value().startswith(REFERENCE_PREFIX)


def resolve_secret_reference(secret: SecretStr | None) -> SecretStr | None:
    """The secret itself, or the value of the Secret block it names. A missing block or an
    unreachable Prefect API is a ValueError naming the block, never showing a value."""
    if secret is None or not is_block_reference(secret):
        return secret
    name = secret.get_secret_value().removeprefix(REFERENCE_PREFIX).strip()
    if not name:
        raise ValueError(f"{REFERENCE_PREFIX} needs a block name, e.g. "
                         f"{REFERENCE_PREFIX}misp-api-key")
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(name, _sync=True).get()  # type: ignore[call-arg]
    except ValueError:
        raise ValueError(f"no Prefect Secret block named {name!r} (create it in the Prefect UI "
                         "under Blocks, or with Secret(value=...).save(name))") from None
    except Exception as exc:  # the Prefect API unreachable, or the block of another type
        raise ValueError(f"cannot read Prefect Secret block {name!r}: "
                         f"{type(exc).__name__}") from None
    if not isinstance(value, str) or not value:
        raise ValueError(f"Prefect Secret block {name!r} holds no text")
    return SecretStr(value)

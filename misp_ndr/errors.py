"""Error types shared by every job.

Prefect decides whether to retry a task from the exception class alone (see
`misp_ndr.task_policy.retry_on_transient`), so every failure towards MISP or a sensor is
raised as one of these, never as a bare `requests` or PyMISP exception.
"""


class MispNdrError(Exception):
    """Base class: anything misp-ndr raises on purpose."""


class ConfigError(MispNdrError):
    """Configuration is invalid; raised before any network call, names the field and the fix."""


class TransientError(MispNdrError):
    """Worth retrying: connection refused or reset, timeout, HTTP 5xx or 429."""


class AuthError(MispNdrError):
    """Credentials rejected or missing a permission: retrying cannot help."""


class RejectedError(MispNdrError):
    """The remote side refused one item (validation error); the rest of the batch goes on."""


class InputError(MispNdrError):
    """An input file or batch cannot be read at all (missing file, unknown format)."""

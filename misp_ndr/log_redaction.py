"""Keep secrets out of third-party logs.

PyMISP logs every request's headers at DEBUG level, API key included; a SOC engineer
turning on debug logging to chase a problem must not end up with the key in a log file.
"""

from __future__ import annotations

import logging

MASK = "**********"


class SecretRedactingFilter(logging.Filter):
    """Rewrites a record whose rendered message contains one of the secrets."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(secret in message for secret in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, MASK)
            record.msg, record.args = message, ()
        return True


_filters: dict[str, SecretRedactingFilter] = {}


def redact_secret_in_logger(logger_name: str, secret: str) -> None:
    """From now on, `secret` is masked in everything `logger_name` logs."""
    if logger_name not in _filters:
        _filters[logger_name] = SecretRedactingFilter()
        logging.getLogger(logger_name).addFilter(_filters[logger_name])
    _filters[logger_name].secrets.add(secret)

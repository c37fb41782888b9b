"""The configuration reference documents every setting there is."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from misp_ndr.config import ENV_PREFIX, Settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def env_names(model: type[BaseModel], prefix: str) -> list[str]:
    names = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += env_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.append(f"{prefix}{name.upper()}")
    return names


def test_every_setting_is_in_the_configuration_reference() -> None:
    text = DOC.read_text(encoding="utf-8")
    shared_http = {"VERIFY_TLS", "CA_BUNDLE", "TIMEOUT", "RETRIES", "RETRY_BACKOFF"}
    missing = [
        name for name in env_names(Settings, ENV_PREFIX)
        if name not in text and not (name.startswith("MISP_NDR_FLOWMON__")
                                     and name.rsplit("__", 1)[1] in shared_http)
    ]
    assert missing == []

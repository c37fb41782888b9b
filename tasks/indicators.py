"""Indicators: the (detection, MISP attribute type, value) rows an exported event is made of."""

from __future__ import annotations

INDICATOR_COLUMNS: dict[str, str] = {
    "source_system": "string",
    "detection_id": "string",
    "attribute_type": "string",  # ip-src | ip-dst | domain | hostname
    "value": "string",
}

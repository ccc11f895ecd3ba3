"""``srnode config export``: the settings with the live AEs, destinations and routes, written
as a TOML file that ``srnode serve --config`` reads back."""

from __future__ import annotations

import json
from typing import Any

from dicom_node.config import Settings

_LISTS = ("allow", "destinations", "routes")


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return json.dumps(str(v))  # a TOML basic string is a JSON string


def _table(values: dict[str, Any]) -> list[str]:
    return [f"{k} = {_value(v)}" for k, v in values.items() if v is not None]


def to_toml(settings: Settings, live: dict[str, list[dict[str, Any]]]) -> str:
    """TOML text: every section of ``settings`` and the live lists in place of the file's."""
    raw = settings.model_dump(mode="json", exclude_none=True)
    out = ["# srnode configuration, exported from the live state", ""]
    for section, values in raw.items():
        if section in _LISTS:
            continue
        out += [f"[{section}]", *_table(values), ""]
    for section in _LISTS:
        for entry in live.get(section, []):
            out += [f"[[{section}]]", *_table(entry), ""]
    return "\n".join(out)

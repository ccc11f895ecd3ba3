"""docs/config-reference.md, written from the settings models in dicom_node.config, so
the reference cannot drift from the code (tests/test_config_reference.py compares).

    .venv/bin/python -m dicom_node.config_reference > docs/config-reference.md
"""

from __future__ import annotations

import inspect
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, MaxLen, MinLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from dicom_node import config, config_routing

HEADER = """# Configuration reference

Generated from `dicom_node/config.py` by `python -m dicom_node.config_reference`; do not
edit by hand. The embedded defaults are written out, with comments, in
[`config/srnode.toml`](../config/srnode.toml); a commented hospital setup is in
[`config/examples/hospital.toml`](../config/examples/hospital.toml).

Every key is optional. `srnode serve --config FILE` reads one TOML file; environment
variables `SRNODE_<SECTION>__<KEY>` override single values of a section, e.g.
`SRNODE_NODE__PORT=11113` or `SRNODE_WEB__TOKEN=...`. A bad value stops the node at start
with one line naming the key, e.g. `config: node.port: Input should be less than or equal
to 65535`, and exit status 2; so do a route naming a model or a destination that does not
exist, a destination missing what it needs, a port already in use and an unreadable TLS
file.
"""


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return " \\| ".join(_type_name(a) for a in args)
    if origin is list:
        return f"list of {_type_name(get_args(annotation)[0])}"
    return {
        str: "text",
        int: "integer",
        float: "number",
        bool: "true \\| false",
        Path: "path",
    }.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _toml(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str | Path):
        return f'`"{value}"`'
    if isinstance(value, list):
        return "`[" + ", ".join(_toml(v).strip("`") for v in value) + "]`"
    return f"`{value}`"


def _bounds(info: FieldInfo) -> str:
    out = []
    for m in info.metadata:
        if isinstance(m, Ge):
            out.append(f">= {m.ge}")
        elif isinstance(m, Gt):
            out.append(f"> {m.gt}")
        elif isinstance(m, Le):
            out.append(f"<= {m.le}")
        elif isinstance(m, MinLen):
            out.append(f"at least {m.min_length} characters")
        elif isinstance(m, MaxLen):
            out.append(f"at most {m.max_length} characters")
    return ", ".join(out)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        value = info.default_factory()
        if isinstance(value, list) and value and isinstance(value[0], BaseModel):
            return "see below"
        return _toml(value)
    return _toml(info.default)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(model: type[BaseModel]) -> list[str]:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, info in model.model_fields.items():
        kind = _type_name(info.annotation)
        bounds = _bounds(info)
        if bounds:
            kind += f" ({bounds})"
        rows.append(f"| `{name}` | {kind} | {_default(info)} | {_cell(info.description or '')} |")
    return rows


def _doc(model: type[BaseModel]) -> str:
    doc = inspect.getdoc(model) or ""
    return " ".join(doc.split()).replace("``", "`")


def render() -> str:
    """The Markdown reference of every section and key."""
    out = [HEADER]
    sections: list[tuple[str, type[BaseModel]]] = [
        ("[node]", config.NodeSettings),
        ("[[allow]]", config.AllowedAE),
        ('[[destinations]], kind = "dimse"', config_routing.DimseDestination),
        ('[[destinations]], kind = "stow"', config_routing.StowDestination),
        ("[[routes]]", config_routing.Route),
        ("[derive]", config.DeriveSettings),
        ("[engine]", config.EngineSettings),
        ("[scheduler]", config.SchedulerSettings),
        ("[database]", config.DatabaseSettings),
        ("[spool]", config.SpoolSettings),
        ("[derived]", config.DerivedSettings),
        ("[storage]", config.StorageSettings),
        ("[web]", config.WebSettings),
    ]
    for title, model in sections:
        out.append(f"## `{title}`\n")
        doc = _doc(model)
        if doc:
            out.append(doc + "\n")
        out.extend(_table(model))
        out.append("")
        if model is config_routing.Route:
            out.append("The routes used when the file has none (the embedded defaults):\n")
            out.append("| name | modality | model | destinations |")
            out.append("|---|---|---|---|")
            for r in config.default_routes():
                mods = ", ".join(r.modality)
                dests = ", ".join(r.destinations) or "all"
                out.append(f"| `{r.name}` | {mods} | `{r.model}` | {dests} |")
            out.append("\nA series of any other modality matches no route and is skipped.\n")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")

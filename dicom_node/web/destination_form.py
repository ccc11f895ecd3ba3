"""The console's destination form, built from the destination models of the config: every
field of a ``[[destinations]]`` entry, with the same defaults and descriptions, and the
posted form turned back into an entry (empty fields left out, so the defaults apply)."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicom_node.admin.errors import Invalid
from dicom_node.config_routing import DimseDestination, StowDestination

_KINDS = {"dimse": DimseDestination, "stow": StowDestination}
_FIRST = ("name", "kind")


@dataclass(frozen=True)
class FormField:
    """One input of the form: ``input`` is text, number, checkbox or syntax (a select)."""

    key: str
    label: str
    input: str
    step: str
    default: Any
    help: str
    kinds: tuple[str, ...]


def _base_type(annotation: Any) -> Any:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if args else str
    return annotation


def _field(key: str, info: Any, kinds: tuple[str, ...]) -> FormField:
    t = _base_type(info.annotation)
    if key == "transfer_syntax":
        kind, step = "syntax", ""
    elif t is bool:
        kind, step = "checkbox", ""
    elif t in (int, float):
        kind, step = "number", "1" if t is int else "any"
    else:
        kind, step = "text", ""
    label = key.replace("_", " ").replace("tls", "TLS").replace("ae title", "AE title")
    label = label.replace("url", "URL").replace(" ca", " CA")
    return FormField(
        key, label[0].upper() + label[1:], kind, step, info.default, info.description or "", kinds
    )


def form_fields() -> list[FormField]:
    """Every field of both kinds (name and kind first), in the models' order."""
    seen: dict[str, list[str]] = {}
    infos: dict[str, Any] = {}
    for kind, model in _KINDS.items():
        for key, info in model.model_fields.items():
            seen.setdefault(key, []).append(kind)
            infos.setdefault(key, info)
    fields = [_field(k, infos[k], tuple(seen[k])) for k in infos if k not in _FIRST]
    return sorted(fields, key=lambda f: len(f.kinds))  # the address first, then retries


def syntax_choices() -> list[tuple[str, str]]:
    """(UID, name) of the transfer syntaxes a destination can be given."""
    from dicom_node.derive.encoding import SYNTAX_NAMES

    return [(str(uid), name) for name, uid in SYNTAX_NAMES.items()]


def destination_entry(data: dict[str, Any]) -> dict[str, Any]:
    """The posted form as a destination entry: fields of the other kind and empty ones left
    out (the model's default applies), numbers converted; :class:`Invalid` naming the key."""
    kind = str(data.get("kind", "dimse"))
    out: dict[str, Any] = {"name": str(data.get("name", "")).strip(), "kind": kind}
    model = _KINDS.get(kind)
    if model is None:
        return out  # the validation names the kind
    for f in form_fields():
        if kind not in f.kinds:
            continue
        if f.input == "checkbox":
            out[f.key] = bool(data.get(f.key))
            continue
        v = str(data.get(f.key, "")).strip()
        if not v:
            continue
        t = _base_type(model.model_fields[f.key].annotation)
        if t in (int, float):
            try:
                out[f.key] = t(v)
            except ValueError:
                raise Invalid(f"{f.key}: {v[:20]!r} is not a number") from None
        else:
            out[f.key] = str(Path(v)) if t is Path else v
    return out

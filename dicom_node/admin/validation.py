"""Validation of the live configuration's entries: allowed calling AEs, destinations and
routes from user input (:class:`~dicom_node.admin.errors.Invalid` naming the field), and the
stored entries as the config models routing and export take."""

from __future__ import annotations

import logging
import re
from typing import Any

from pydantic import TypeAdapter, ValidationError

from dicom_node.admin.errors import Invalid
from dicom_node.config import AllowedAE, Settings

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._\-]{0,63}$")

_DEST_LIST = TypeAdapter(Settings.model_fields["destinations"].annotation)
_ROUTE_LIST = TypeAdapter(Settings.model_fields["routes"].annotation)


def _pydantic_message(e: ValidationError, what: str) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"][1:]) or what  # [0] is the list index
    return f"{loc}: {err['msg'].removeprefix('Value error, ')}"


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise Invalid(
            f"{what} name: 1-64 characters, letters, digits, space, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _check_text(value: Any, key: str, limit: int) -> None:
    if isinstance(value, str):
        if len(value) > limit:
            raise Invalid(f"{key}: at most {limit} characters")
        if any(ord(c) < 0x20 for c in value):
            raise Invalid(f"{key}: control characters are not allowed")
    elif isinstance(value, list):
        if len(value) > 64:
            raise Invalid(f"{key}: at most 64 entries")
        for v in value:
            _check_text(v, key, limit)


def _dump(model: Any) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


def _valid_entries(adapter: TypeAdapter, entries: list[dict[str, Any]], kind: str) -> list[Any]:
    """The stored entries as config models. A field this version does not know is dropped
    (said once in the log); an entry that is still invalid is left out, named in the log."""
    out = []
    for body in entries:
        try:
            out.append(adapter.validate_python([body])[0])
            continue
        except ValidationError as e:
            unknown = {
                str(err["loc"][-1]) for err in e.errors() if err["type"] == "extra_forbidden"
            }
        trimmed = {k: v for k, v in body.items() if k not in unknown}
        try:
            out.append(adapter.validate_python([trimmed])[0])
            log.warning(
                "%s %s: stored fields %s are unknown here: ignored",
                kind,
                body.get("name"),
                ", ".join(sorted(unknown)),
            )
        except ValidationError as e:
            log.error(
                "%s %s in the database is not valid here, left out: %s",
                kind,
                body.get("name"),
                _pydantic_message(e, kind),
            )
    return out


def validate_destination(data: dict[str, Any]) -> Any:
    """A destination entry from user input, or :class:`Invalid` naming the field."""
    if not isinstance(data, dict):
        raise Invalid("destination: expected an object")
    for key in ("name", "ae_title", "host"):
        _check_text(data.get(key), key, 255)
    _check_text(data.get("url"), "url", 2048)
    for key in ("tls_ca", "tls_cert", "tls_key"):
        _check_text(data.get(key), key, 1024)
    _check_name(data.get("name"), "destination")
    try:
        dest = _DEST_LIST.validate_python([data])[0]
    except ValidationError as e:
        raise Invalid(_pydantic_message(e, "destination")) from None
    if dest.kind == "dimse":
        missing = [k for k in ("ae_title", "host", "port") if getattr(dest, k) in (None, "")]
        if missing:
            raise Invalid(f"{missing[0]}: required for a DIMSE destination")
        from dicom_node.config_base import _check_ae

        try:
            _check_ae(dest.ae_title)
        except ValueError as e:
            raise Invalid(f"ae_title: {e}") from None
    else:
        url = getattr(dest, "url", None) or ""
        if not re.match(r"^https?://[^\s/]+", url):
            raise Invalid("url: required for a STOW-RS destination, http:// or https://")
    return dest


def validate_route(data: dict[str, Any]) -> Any:
    if not isinstance(data, dict):
        raise Invalid("route: expected an object")
    for key, value in data.items():
        _check_text(value, key, 512)
    _check_name(data.get("name"), "route")
    try:
        return _ROUTE_LIST.validate_python([data])[0]
    except ValidationError as e:
        raise Invalid(_pydantic_message(e, "route")) from None


def validate_ae(ae_title: Any, host: Any) -> AllowedAE:
    _check_text(ae_title, "ae_title", 64)
    _check_text(host, "host", 255)
    if host is not None and not isinstance(host, str):
        raise Invalid("host: expected a string or null")
    if isinstance(host, str) and host.strip() in ("", "*"):
        host = None
    if isinstance(host, str) and not re.match(r"^[A-Za-z0-9.:\-\[\]]{1,255}$", host.strip()):
        raise Invalid("host: a host name or an IP address")
    try:
        return AllowedAE.model_validate({"ae_title": ae_title, "host": host})
    except ValidationError as e:
        raise Invalid(_pydantic_message(e, "ae_title")) from None

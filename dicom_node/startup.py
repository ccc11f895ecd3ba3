"""What is checked before a node process starts anything (:func:`check_startup`): TLS files
readable and loading, every model a route names resolvable, the DICOM and web ports free.
A failure is one :class:`StartupError` line naming the setting."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
from pathlib import Path

from dicom_node.config import Settings


class StartupError(Exception):
    """A setup the node cannot run with, found at start: one line naming the setting."""


def _readable(key: str, path: Path | None) -> None:
    if path is None:
        return
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise StartupError(f"config: {key}: cannot read {path} ({e.strerror or e})") from None


def _check_tls(settings: Settings) -> None:
    """Every TLS file named in the config is readable; the node's certificate and key load."""
    n = settings.node
    for key in ("tls_cert", "tls_key", "tls_ca"):
        _readable(f"node.{key}", getattr(n, key))
    if bool(n.tls_cert) != bool(n.tls_key):
        have, need = ("tls_cert", "tls_key") if n.tls_cert else ("tls_key", "tls_cert")
        raise StartupError(f"config: node.{need}: required with node.{have} (TLS needs both)")
    if n.tls_cert and n.tls_key:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                os.fspath(n.tls_cert), os.fspath(n.tls_key)
            )
        except ssl.SSLError as e:
            raise StartupError(
                f"config: node.tls_cert: {n.tls_cert} and {n.tls_key} are not a PEM "
                f"certificate and its key ({e.reason or e})"
            ) from None


def _check_models(settings: Settings) -> None:
    """Destinations' TLS files readable, every route's model resolves: the checks each live
    change of the configuration runs too (dicom_node.config_checks)."""
    from dicom_node.config import ConfigError
    from dicom_node.config_checks import check_runnable

    try:
        check_runnable(settings)
    except ConfigError as e:
        raise StartupError(str(e)) from None


def port_in_use(key: str, host: str, port: int, hint: str = "") -> StartupError:
    return StartupError(
        f"config: {key}: port {port} on {host} is already in use by another program{hint}"
    )


def bind_listener(key: str, host: str, port: int, *, hint: str = "") -> socket.socket:
    """A listening TCP socket on (host, port), or StartupError naming ``key``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise port_in_use(key, host, port, hint) from None
        raise StartupError(
            f"config: {key}: cannot listen on {host}:{port} ({e.strerror or e})"
        ) from None
    return sock


def check_startup(settings: Settings, role: str = "serve") -> None:
    """Refuse a setup that cannot work before anything starts (StartupError, one line):
    TLS files unreadable, a route's model missing, the DICOM or web port taken. Config
    checks (AE titles, incomplete destinations, routes naming unknown ones) ran when the
    settings were validated."""
    _check_tls(settings)
    _check_models(settings)
    if role != "serve":
        return
    n = settings.node
    with contextlib.closing(bind_listener("node.port", n.host, n.port)):
        pass
    if settings.web.enabled:
        w = settings.web
        with contextlib.closing(
            bind_listener("web.port", w.host, w.port, hint=" (or set web.enabled = false)")
        ):
            pass

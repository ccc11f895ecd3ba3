"""``srnode serve`` and ``srnode worker``, and the options and settings helpers the
command groups share."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import typer

from dicom_node.config import ConfigError, Settings, load_settings, validate_settings
from dicom_node.config_base import ae_title_problem

_AE_HOST = re.compile(r"^(?P<ae>[^@]+)(?:@(?P<host>[^:]+))?$")
_AE_HOST_PORT = re.compile(r"^(?P<ae>[^@]+)@(?P<host>\[[^\]]+\]|[^:]+):(?P<port>\d{1,5})$")

ConfigOpt = typer.Option(
    None, "--config", "-c", metavar="FILE", help="srnode.toml (default: embedded defaults)"
)
DataDirOpt = typer.Option(
    None,
    "--data-dir",
    metavar="DIR",
    help="the node's folder: spool, SQLite database (node.data_dir)",
)


def _fail(msg: str) -> None:
    typer.echo(msg, err=True)
    raise typer.Exit(2)


def parse_allow(value: str) -> dict[str, Any]:
    """``AE`` or ``AE@HOST`` -> an ``[[allow]]`` entry."""
    m = _AE_HOST.match(value.strip())
    if not m:
        raise ConfigError(f"config: allow: {value!r} is not AE or AE@HOST")
    problem = ae_title_problem(m["ae"])
    if problem:
        raise ConfigError(f"config: allow: {problem}")
    return {"ae_title": m["ae"], "host": m["host"]}


def parse_destination(value: str) -> dict[str, Any]:
    """``AE@HOST:PORT`` -> a DIMSE ``[[destinations]]`` entry named after the AE."""
    m = _AE_HOST_PORT.match(value.strip())
    if not m:
        raise ConfigError(f"config: destinations: {value!r} is not AE@HOST:PORT")
    problem = ae_title_problem(m["ae"])
    if problem:
        raise ConfigError(f"config: destinations: {problem}")
    return {
        "name": m["ae"],
        "kind": "dimse",
        "ae_title": m["ae"],
        "host": m["host"].strip("[]"),
        "port": int(m["port"]),
    }


def build_settings(
    config: Path | None,
    *,
    data_dir: Path | None = None,
    aet: str | None = None,
    port: int | None = None,
    web_port: int | None = None,
    allow: list[str] | None = None,
    destination: list[str] | None = None,
    stable_age: float | None = None,
) -> Settings:
    """The config file (or embedded defaults) with the command-line flags on top."""
    base = load_settings(config)
    raw = base.model_dump(mode="json", exclude_none=False)
    if data_dir is not None:
        raw["node"]["data_dir"] = str(data_dir)
    if aet is not None:
        raw["node"]["ae_title"] = aet
    if port is not None:
        raw["node"]["port"] = port
    if web_port is not None:
        raw["web"]["port"] = web_port
    if allow:
        raw["allow"] = [parse_allow(a) for a in allow]
    if destination:
        raw["destinations"] = [parse_destination(d) for d in destination]
    if stable_age is not None:
        raw["scheduler"]["stable_age"] = stable_age
    return validate_settings(raw)


def _settings_or_exit(**kw: Any) -> Settings:
    try:
        return build_settings(**kw)
    except ConfigError as e:
        _fail(str(e))
        raise  # unreachable


def _db(settings: Settings, *, create: bool = False):
    """The node's database, for the admin commands. Never creates one unless ``create``
    (``srnode admin set-password`` before the first start): with SQLite, the data dir
    (node.data_dir, from --config or --data-dir) must hold a node's database."""
    from dicom_node.store.database import Database
    from dicom_node.store.migrate import SchemaError

    if create and settings.database.url is None:
        Path(settings.node.data_dir).mkdir(parents=True, exist_ok=True)
    elif settings.database.url is None:
        data_dir = Path(settings.node.data_dir).resolve()
        if not (data_dir / "srnode.db").is_file():
            _fail(
                f"no srnode database in {data_dir} (node.data_dir); pass the node's "
                "--config (or --data-dir), or start 'srnode serve' there first"
            )
    d = Database.from_settings(settings)
    try:
        d.create_or_migrate()
    except SchemaError as e:
        _fail(str(e))
    return d


def _ago(t: float | None) -> str:
    if t is None:
        return "-"
    dt = t - time.time()
    return f"in {dt:.0f} s" if dt >= 0 else f"{-dt:.0f} s ago"


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str = "info", log_file: Path | None = None) -> None:
    """Root logging for a long-running command: ``level``, to stderr or to ``log_file``.

    A log file is held by a WatchedFileHandler, which reopens it when logrotate has moved
    it away (docs/srnode.logrotate rotates by renaming, with ``create``)."""
    if level.lower() not in LOG_LEVELS:
        _fail(f"--log-level: {level!r} is not one of {', '.join(LOG_LEVELS)}")
    handler: logging.Handler
    if log_file is not None:
        from logging.handlers import WatchedFileHandler

        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            handler = WatchedFileHandler(log_file, encoding="utf-8")
        except OSError as e:
            _fail(f"--log-file: cannot write {log_file} ({e.strerror or e})")
    else:
        handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def _run_node(s: Settings, role: str) -> None:
    """Start the node; a setup it cannot run with is one line and exit status 2."""
    from dicom_node.jobs import warmup
    from dicom_node.service import Node, StartupError

    try:
        Node(s, role=role).serve_forever()
    except StartupError as e:
        _fail(str(e))
    if warmup.stop():
        # an engine still loading at stop (auto's measurement) runs in native code, which
        # aborts when the interpreter finalises around it: the node has stopped cleanly, so
        # leave now; the measurement is made again at the next start
        logging.getLogger(__name__).info("engine warm-up abandoned; it resumes at the next start")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


LogLevelOpt = typer.Option(
    "info", "--log-level", metavar="LEVEL", help="debug, info, warning or error"
)
LogFileOpt = typer.Option(
    None,
    "--log-file",
    metavar="FILE",
    help="write the log to this file instead of stderr (reopened when rotated)",
)


def register(app: typer.Typer) -> None:
    """Add the service commands to the root app."""

    @app.command()
    def serve(
        config: Path | None = ConfigOpt,
        data_dir: Path | None = DataDirOpt,
        aet: str | None = typer.Option(
            None, "--aet", metavar="AE", help="our AE title (node.ae_title)"
        ),
        port: int | None = typer.Option(
            None, "--port", metavar="PORT", help="DICOM port (node.port)"
        ),
        web_port: int | None = typer.Option(
            None,
            "--web-port",
            metavar="PORT",
            help="port of the web console and STOW-RS (web.port)",
        ),
        allow: list[str] | None = typer.Option(
            None,
            "--allow",
            metavar="AE[@HOST]",
            help="calling AE allowed, AE or AE@HOST (repeatable)",
        ),
        destination: list[str] | None = typer.Option(
            None,
            "--destination",
            metavar="AE@HOST:PORT",
            help="DIMSE destination AE@HOST:PORT (repeatable)",
        ),
        stable_age: float | None = typer.Option(
            None,
            "--stable-age",
            metavar="SECONDS",
            help="seconds a series must be quiet to be complete",
        ),
        log_level: str = LogLevelOpt,
        log_file: Path | None = LogFileOpt,
    ) -> None:
        """Run the node: Storage SCP, scheduler, workers and the web console."""
        s = _settings_or_exit(
            config=config,
            data_dir=data_dir,
            aet=aet,
            port=port,
            web_port=web_port,
            allow=allow,
            destination=destination,
            stable_age=stable_age,
        )
        configure_logging(log_level, log_file)
        _run_node(s, "serve")

    @app.command()
    def worker(
        config: Path | None = ConfigOpt,
        data_dir: Path | None = DataDirOpt,
        log_level: str = LogLevelOpt,
        log_file: Path | None = LogFileOpt,
    ) -> None:
        """Run workers only, on the database (and spool) a `srnode serve` shares."""
        s = _settings_or_exit(config=config, data_dir=data_dir)
        configure_logging(log_level, log_file)
        _run_node(s, "worker")

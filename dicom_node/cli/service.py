"""``srnode serve`` and the service commands: status, jobs retry, echo, worker (the AE,
user and config commands are in :mod:`dicom_node.cli.admin`)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import typer

from dicom_node.config import ConfigError, Settings, load_settings

_AE_HOST = re.compile(r"^(?P<ae>[^@]{1,16})(?:@(?P<host>[^:]+))?$")
_AE_HOST_PORT = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>\[[^\]]+\]|[^:]+):(?P<port>\d{1,5})$")

ConfigOpt = typer.Option(None, "--config", "-c", help="srnode.toml (default: embedded defaults)")
DataDirOpt = typer.Option(None, "--data-dir", help="spool, SQLite database and logs live here")


def _fail(msg: str) -> None:
    typer.echo(msg, err=True)
    raise typer.Exit(2)


def parse_allow(value: str) -> dict[str, Any]:
    """``AE`` or ``AE@HOST`` -> an ``[[allow]]`` entry."""
    m = _AE_HOST.match(value.strip())
    if not m:
        raise ConfigError(f"config: allow: {value!r} is not AE or AE@HOST")
    return {"ae_title": m["ae"], "host": m["host"]}


def parse_destination(value: str) -> dict[str, Any]:
    """``AE@HOST:PORT`` -> a DIMSE ``[[destinations]]`` entry named after the AE."""
    m = _AE_HOST_PORT.match(value.strip())
    if not m:
        raise ConfigError(f"config: destinations: {value!r} is not AE@HOST:PORT")
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
    if allow:
        raw["allow"] = [parse_allow(a) for a in allow]
    if destination:
        raw["destinations"] = [parse_destination(d) for d in destination]
    if stable_age is not None:
        raw["scheduler"]["stable_age"] = stable_age
    try:
        return Settings.model_validate(raw)
    except Exception as e:  # pydantic ValidationError -> one line naming the key
        from pydantic import ValidationError

        from dicom_node.config import _format_error

        if isinstance(e, ValidationError):
            raise ConfigError(_format_error(e)) from None
        raise


def _settings_or_exit(**kw: Any) -> Settings:
    try:
        return build_settings(**kw)
    except ConfigError as e:
        _fail(str(e))
        raise  # unreachable


def _db(settings: Settings):
    from dicom_node.jobs.db import Database

    d = Database.from_settings(settings)
    d.create_or_migrate()
    return d


def _ago(t: float | None) -> str:
    if t is None:
        return "-"
    dt = t - time.time()
    return f"in {dt:.0f} s" if dt >= 0 else f"{-dt:.0f} s ago"


def register(app: typer.Typer) -> None:
    """Add the service commands to the root app."""

    @app.command()
    def serve(
        config: Path | None = ConfigOpt,
        data_dir: Path | None = DataDirOpt,
        aet: str | None = typer.Option(None, "--aet", help="our AE title"),
        port: int | None = typer.Option(None, "--port", help="DICOM port"),
        allow: list[str] | None = typer.Option(
            None, "--allow", help="calling AE allowed, AE or AE@HOST (repeatable)"
        ),
        destination: list[str] | None = typer.Option(
            None, "--destination", help="DIMSE destination AE@HOST:PORT (repeatable)"
        ),
        stable_age: float | None = typer.Option(
            None, "--stable-age", help="seconds a series must be quiet to be complete"
        ),
    ) -> None:
        """Run the node: Storage SCP, scheduler, workers and the web console."""
        from dicom_node.service import Node

        s = _settings_or_exit(
            config=config,
            data_dir=data_dir,
            aet=aet,
            port=port,
            allow=allow,
            destination=destination,
            stable_age=stable_age,
        )
        Node(s, role="serve").serve_forever()

    @app.command()
    def worker(
        config: Path | None = ConfigOpt,
        data_dir: Path | None = DataDirOpt,
    ) -> None:
        """Run workers only, on the database (and spool) a `srnode serve` shares."""
        from dicom_node.service import Node

        s = _settings_or_exit(config=config, data_dir=data_dir)
        Node(s, role="worker").serve_forever()

    @app.command()
    def status(
        config: Path | None = ConfigOpt,
        data_dir: Path | None = DataDirOpt,
        limit: int = typer.Option(15, "--limit", "-n", help="recent jobs to show"),
        as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    ) -> None:
        """Queue, recent jobs and destination retries."""
        s = _settings_or_exit(config=config, data_dir=data_dir)
        d = _db(s)
        try:
            counts = d.queue_counts()
            jobs = d.recent_jobs(limit)
            exports = d.export_rows(only_open=False)[:50]
        finally:
            d.close()
        if as_json:
            typer.echo(json.dumps({"queue": counts, "jobs": jobs, "exports": exports}, default=str))
            return
        from rich.console import Console
        from rich.table import Table

        con = Console(width=160)
        con.print("queue: " + "  ".join(f"{k} {v}" for k, v in counts.items()))
        t = Table(title="recent jobs")
        for col in (
            "id",
            "state",
            "modality",
            "series",
            "att",
            "derived",
            "updated",
            "reason / last error",
        ):
            t.add_column(col, overflow="fold")
        for j in jobs:
            t.add_row(
                str(j["id"]),
                j["state"],
                j["modality"] or "-",
                j["series_uid"],
                str(j["attempts"]),
                str(j["derived_count"]),
                _ago(j["updated_at"]),
                (j["last_error"] or j["reason"] or "")[:120],
            )
        con.print(t)
        open_exports = [e for e in exports if e["state"] != "done" or e["attempts"] > 1]
        t = Table(title="destination retries")
        for col in (
            "job",
            "destination",
            "state",
            "attempts",
            "sent",
            "left",
            "next attempt",
            "last error",
        ):
            t.add_column(col, overflow="fold")
        for e in open_exports:
            t.add_row(
                str(e["job_id"]),
                e["destination"],
                e["state"],
                str(e["attempts"]),
                str(e["sent_count"]),
                str(len(json.loads(e["pending"] or "[]"))),
                _ago(e["next_attempt_at"]) if e["state"] == "pending" else "-",
                (e["last_error"] or "")[:100],
            )
        con.print(t)

    jobs_app = typer.Typer(help="Job administration.", no_args_is_help=True)
    app.add_typer(jobs_app, name="jobs")

    @jobs_app.command("retry")
    def jobs_retry(
        job_id: int = typer.Argument(..., help="job id (see srnode status)"),
        config: Path | None = ConfigOpt,
        data_dir: Path | None = DataDirOpt,
    ) -> None:
        """Queue a job again (fresh attempts, every destination)."""
        s = _settings_or_exit(config=config, data_dir=data_dir)
        d = _db(s)
        try:
            ok = d.retry_job(job_id)
        finally:
            d.close()
        if not ok:
            _fail(f"no job {job_id}")
        typer.echo(f"job {job_id} queued again")

    @app.command()
    def echo(
        target: str = typer.Argument(..., help="AE@HOST:PORT"),
        aet: str = typer.Option("SRNODE", "--aet", help="our (calling) AE title"),
        timeout: float = typer.Option(10.0, "--timeout"),
    ) -> None:
        """C-ECHO a DICOM peer."""
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import Verification

        from dicom_node.net import install_tcp_nodelay, scu_without_request_serving

        try:
            p = parse_destination(target)
        except ConfigError as e:
            _fail(str(e).removeprefix("config: destinations: "))
        install_tcp_nodelay()
        ae = AE(ae_title=aet)
        ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = timeout
        ae.add_requested_context(Verification)
        t0 = time.monotonic()
        assoc = ae.associate(
            p["host"],
            p["port"],
            ae_title=p["ae_title"],
            evt_handlers=[(evt.EVT_CONN_OPEN, scu_without_request_serving)],
        )
        if not assoc.is_established:
            why = "rejected" if assoc.is_rejected else "no association"
            _fail(f"echo {target}: {why}")
        st = assoc.send_c_echo()
        assoc.release()
        code = getattr(st, "Status", None)
        if code != 0:
            _fail(f"echo {target}: status {code}")
        typer.echo(f"echo {target}: ok in {(time.monotonic() - t0) * 1000:.0f} ms")

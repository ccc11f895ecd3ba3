"""Admin commands: ``srnode status``, ``jobs retry``, ``echo`` and ``aet``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from dicom_node.cli.service import (
    ConfigOpt,
    DataDirOpt,
    _ago,
    _db,
    _fail,
    _settings_or_exit,
    parse_allow,
    parse_destination,
)
from dicom_node.config import ConfigError


def register(app: typer.Typer) -> None:
    """Add the admin commands to the root app."""
    _status(app)
    _jobs(app)
    _echo(app)
    _aet(app)


def _status(app: typer.Typer) -> None:
    """srnode status."""

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
        from dicom_node.jobs.engines import cached_choices, node_cache_dir
        from dicom_node.receive.reserve import DiskReserve

        disk = DiskReserve(s.node.data_dir, s.storage.min_free_gb)
        engines = cached_choices(node_cache_dir(s.node.data_dir))
        if as_json:
            out = {
                "queue": counts,
                "jobs": jobs,
                "exports": exports,
                "disk": disk.status(),
                "engines": engines,
            }
            typer.echo(json.dumps(out, default=str))
            return
        from rich.console import Console
        from rich.table import Table

        con = Console(width=160)
        con.print("queue: " + "  ".join(f"{k} {v}" for k, v in counts.items()))
        con.print(disk.describe(), markup=False)
        for e in engines:
            con.print(
                f"engine: {e['model']} (sha256 {e['sha256']}) on {e['backend']}, chosen by "
                f"auto on {e['cpu']}, {e['threads']} threads, tile {e['tile']} "
                f"({e['measured_at']})",
                markup=False,
                highlight=False,
            )
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


def _jobs(app: typer.Typer) -> None:
    """srnode jobs retry."""

    jobs_app = typer.Typer(help="Job administration.", no_args_is_help=True)
    app.add_typer(jobs_app, name="jobs")

    @jobs_app.command("retry")
    def jobs_retry(
        job_id: int | None = typer.Argument(None, help="job id (see srnode status)"),
        failed: bool = typer.Option(False, "--failed", help="every failed job"),
        config: Path | None = ConfigOpt,
        data_dir: Path | None = DataDirOpt,
    ) -> None:
        """Queue a job (or with --failed, every failed job) again: fresh attempts, every
        destination."""
        if (job_id is None) == (not failed):
            _fail("give a job id or --failed")
        s = _settings_or_exit(config=config, data_dir=data_dir)
        d = _db(s)
        try:
            from dicom_node.jobs.states import Jobs

            ids = Jobs(d).retry_failed() if failed else [job_id] if Jobs(d).retry(job_id) else []
        finally:
            d.close()
        if failed:
            typer.echo(f"{len(ids)} failed job(s) queued again")
            return
        if not ids:
            _fail(f"no job {job_id}")
        typer.echo(f"job {job_id} queued again")


def _echo(app: typer.Typer) -> None:
    """srnode echo."""

    @app.command()
    def echo(
        target: str = typer.Argument(..., help="AE@HOST:PORT"),
        aet: str = typer.Option("SRNODE", "--aet", help="our (calling) AE title"),
        timeout: float = typer.Option(10.0, "--timeout"),
    ) -> None:
        """C-ECHO a DICOM peer."""
        from pynetdicom import AE
        from pynetdicom.sop_class import Verification

        from dicom_node.net import scu_handlers

        try:
            p = parse_destination(target)
        except ConfigError as e:
            _fail(str(e).removeprefix("config: destinations: "))
        ae = AE(ae_title=aet)
        ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = timeout
        ae.add_requested_context(Verification)
        t0 = time.monotonic()
        assoc = ae.associate(
            p["host"],
            p["port"],
            ae_title=p["ae_title"],
            evt_handlers=scu_handlers(),
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


def _aet(app: typer.Typer) -> None:
    """srnode aet list / add / remove."""

    aet_app = typer.Typer(help="Calling AE titles the node accepts.", no_args_is_help=True)
    app.add_typer(aet_app, name="aet")

    @aet_app.command("list")
    def aet_list(config: Path | None = ConfigOpt, data_dir: Path | None = DataDirOpt) -> None:
        """AE titles from the config and from the database."""
        s = _settings_or_exit(config=config, data_dir=data_dir)
        d = _db(s)
        try:
            rows = d.list_ae_titles()
        finally:
            d.close()
        for a in s.allow:
            typer.echo(f"{a.ae_title}\t{a.host or '*'}\tconfig")
        for ae, host in rows:
            typer.echo(f"{ae}\t{host or '*'}\tdatabase")

    @aet_app.command("add")
    def aet_add(
        entry: str = typer.Argument(..., help="AE or AE@HOST"),
        config: Path | None = ConfigOpt,
        data_dir: Path | None = DataDirOpt,
    ) -> None:
        """Accept a calling AE (optionally only from HOST); a running node sees it within 5 s."""
        from dicom_node.config import AllowedAE

        s = _settings_or_exit(config=config, data_dir=data_dir)
        try:
            a = AllowedAE.model_validate(parse_allow(entry))
        except Exception as e:
            _fail(f"aet add: {entry!r}: {str(e).splitlines()[-1] if str(e) else e}")
        d = _db(s)
        try:
            new = d.add_ae_title(a.ae_title, a.host)
            d.audit("ae_added", ae_title=a.ae_title, host=a.host)
        finally:
            d.close()
        typer.echo(f"{entry}: {'added' if new else 'already present'}")

    @aet_app.command("remove")
    def aet_remove(
        entry: str = typer.Argument(..., help="AE or AE@HOST"),
        config: Path | None = ConfigOpt,
        data_dir: Path | None = DataDirOpt,
    ) -> None:
        """Stop accepting a calling AE added with `aet add`."""
        s = _settings_or_exit(config=config, data_dir=data_dir)
        try:
            p = parse_allow(entry)
        except ConfigError as e:
            _fail(str(e))
        d = _db(s)
        try:
            n = d.remove_ae_title(p["ae_title"], p["host"])
            d.audit("ae_removed", ae_title=p["ae_title"], host=p["host"])
        finally:
            d.close()
        if not n:
            _fail(f"{entry}: not in the database (config entries are changed in the file)")
        typer.echo(f"{entry}: removed")

"""Admin commands: ``srnode status``, ``jobs list/show/retry`` and ``echo`` (the live configuration:
``aet``, ``admin``, ``config``, is in :mod:`dicom_node.cli.live`)."""

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
    parse_destination,
)
from dicom_node.config import ConfigError
from dicom_node.store.states import ExportState


def register(app: typer.Typer) -> None:
    """Add the admin commands to the root app."""
    _status(app)
    _jobs(app)
    _echo(app)


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
        from dicom_node.store import audit
        from dicom_node.store.jobs import Jobs

        s = _settings_or_exit(config=config, data_dir=data_dir)
        d = _db(s)
        try:
            counts = d.queue_counts()
            jobs = d.recent_jobs(limit)
            exports = d.export_rows(only_open=False)[:50]
            _, resent = audit.query(d.engine, kind="series.resent", since=time.time() - 86400)
            tallies = Jobs(d).export_tally([j["id"] for j in jobs])
            for j in jobs:  # "exported 1/2": destinations that have every instance
                done, total = tallies.get(j["id"], (0, 0))
                j["exported"] = f"{done}/{total}" if total else None
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
                "resent": resent,
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
        for r in resent[:10]:
            con.print(
                f"re-sent series {r['target']} ({_ago(r['at'])}): {r.get('detail') or ''}",
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
            "exported",
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
                j["exported"] or "-",
                _ago(j["updated_at"]),
                (j["last_error"] or j["reason"] or "")[:120],
            )
        con.print(t)
        open_exports = [e for e in exports if e["state"] != ExportState.DONE or e["attempts"] > 1]
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
                _ago(e["next_attempt_at"]) if e["state"] == ExportState.PENDING else "-",
                (e["last_error"] or "")[:100],
            )
        con.print(t)


def _jobs(app: typer.Typer) -> None:
    """srnode jobs list / show / retry."""

    jobs_app = typer.Typer(help="Job administration.", no_args_is_help=True)
    app.add_typer(jobs_app, name="jobs")

    @jobs_app.command("list")
    def jobs_list(
        state: str | None = typer.Option(
            None, "--state", help="received, queued, processing, exporting, done, failed or skipped"
        ),
        modality: str | None = typer.Option(None, "--modality", help="e.g. CT"),
        accession: str | None = typer.Option(None, "--accession", help="accession number"),
        limit: int = typer.Option(20, "--limit", "-n", min=1, max=500, help="jobs to show"),
        as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
        config: Path | None = ConfigOpt,
        data_dir: Path | None = DataDirOpt,
    ) -> None:
        """Jobs, newest first (the console's job search)."""
        from dicom_node.admin import jobs as admin_jobs
        from dicom_node.store.states import JOB_STATES

        if state is not None and state not in JOB_STATES:
            _fail(f"--state: one of {', '.join(JOB_STATES)}")
        s = _settings_or_exit(config=config, data_dir=data_dir)
        d = _db(s)
        try:
            f = admin_jobs.JobFilter(
                state=state, modality=modality, accession=accession, limit=limit
            )
            total, items = admin_jobs.search(d.engine, f)
        finally:
            d.close()
        if as_json:
            typer.echo(json.dumps({"total": total, "items": items}, default=str))
            return
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"jobs ({len(items)} of {total})")
        for col in ("id", "state", "modality", "study date", "series", "route", "updated",
                    "reason / last error"):  # fmt: skip
            t.add_column(col, overflow="fold")
        for j in items:
            t.add_row(
                str(j["id"]),
                j["state"],
                j["modality"] or "-",
                j.get("study_date") or "-",
                j["series_description"] or j["series_uid"],
                j["route"] or "-",
                _ago(j["updated_at"]),
                (j["last_error"] or j["reason"] or "")[:120],
            )
        Console(width=160).print(t)

    @jobs_app.command("show")
    def jobs_show(
        job_id: int = typer.Argument(..., help="job id (see srnode jobs list)"),
        as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
        config: Path | None = ConfigOpt,
        data_dir: Path | None = DataDirOpt,
    ) -> None:
        """One job: its series, route, model, error and each destination's export."""
        from dicom_node.admin import jobs as admin_jobs
        from dicom_node.admin.errors import AdminError

        s = _settings_or_exit(config=config, data_dir=data_dir)
        d = _db(s)
        try:
            job = admin_jobs.get(d.engine, job_id)
        except AdminError as e:
            _fail(e.message)
        finally:
            d.close()
        if as_json:
            typer.echo(json.dumps(job, default=str))
            return
        exports = job.pop("exports")
        done = sum(1 for e in exports if e["state"] == ExportState.DONE)
        lines = [f"job {job['id']}: {job['state']}" + (
            f", exported {done}/{len(exports)}" if exports else "")]  # fmt: skip
        for key in ("study_uid", "series_uid", "modality", "body_part", "series_description",
                    "study_description", "study_date", "accession_number", "calling_ae", "via",
                    "route", "model", "reason", "instance_count", "derived_count",
                    "derived_series_uid", "attempts", "last_error"):  # fmt: skip
            if job.get(key) not in (None, ""):
                lines.append(f"  {key}: {job[key]}")
        for e in exports:
            lines.append(
                f"  export {e['destination']}: {e['state']}, {e['attempts']} attempts, "
                f"{e['sent_count']} sent" + (f": {e['last_error']}" if e["last_error"] else "")
            )
        typer.echo("\n".join(lines))

    @jobs_app.command("retry")
    def jobs_retry(
        job_id: int | None = typer.Argument(None, help="job id (see srnode status)"),
        failed: bool = typer.Option(False, "--failed", help="every failed job"),
        destination: str | None = typer.Option(
            None,
            "--destination",
            "-d",
            help="send a failed job's derived series again to this destination alone "
            "(the others keep what they have)",
        ),
        config: Path | None = ConfigOpt,
        data_dir: Path | None = DataDirOpt,
    ) -> None:
        """Queue a job (or with --failed, every failed job) again: fresh attempts, every
        destination; with --destination, only the export to that destination."""
        if (job_id is None) == (not failed):
            _fail("give a job id or --failed")
        if destination is not None and job_id is None:
            _fail("--destination: give a job id")
        s = _settings_or_exit(config=config, data_dir=data_dir)
        from dicom_node.admin import jobs as admin_jobs
        from dicom_node.admin.errors import AdminError
        from dicom_node.cli.live import cli_actor

        d = _db(s)
        try:
            if failed:
                ids = admin_jobs.retry_failed(d, cli_actor())
                typer.echo(f"{len(ids)} failed job(s) queued again")
                return
            admin_jobs.retry(d.engine, d, cli_actor(), job_id, destination)
        except AdminError as e:
            _fail(str(e))
        finally:
            d.close()
        if destination:
            typer.echo(f"job {job_id}: sending to {destination} again")
        else:
            typer.echo(f"job {job_id} queued again")


def _echo(app: typer.Typer) -> None:
    """srnode echo."""

    @app.command()
    def echo(
        target: str = typer.Argument(..., metavar="AE@HOST:PORT", help="the peer to C-ECHO"),
        aet: str | None = typer.Option(
            None,
            "--aet",
            help="our (calling) AE title [default: node.ae_title of --config, else SRNODE]",
        ),
        config: Path | None = ConfigOpt,
        timeout: float = typer.Option(10.0, "--timeout", help="seconds to wait for the peer"),
    ) -> None:
        """C-ECHO a DICOM peer: one line, ok with the round trip, or what went wrong."""
        from dicom_node.config_routing import DimseDestination
        from dicom_node.export.probe import check

        try:
            p = parse_destination(target)
        except ConfigError as e:
            _fail(str(e).removeprefix("config: destinations: "))
        if aet is None:
            aet = _settings_or_exit(config=config).node.ae_title if config else "SRNODE"
        probe = check(DimseDestination.model_validate(p), aet, timeout)
        if not probe.ok:
            _fail(f"echo {target}: {probe.detail}")
        typer.echo(f"echo {target}: ok in {probe.ms:.0f} ms")

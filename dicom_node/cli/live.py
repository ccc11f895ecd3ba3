"""``srnode aet …``, ``srnode admin …`` and ``srnode config export``: the live configuration
from the command line, through the same functions as the REST API (:mod:`dicom_node.admin`).
A running node applies a change within a few seconds."""

from __future__ import annotations

import getpass
import sys
import tomllib
from pathlib import Path
from typing import Any

import typer

from dicom_node.admin.errors import Actor, AdminError
from dicom_node.cli.service import ConfigOpt, DataDirOpt, _db, _fail, _settings_or_exit, parse_allow
from dicom_node.config import ConfigError, load_settings, validate_settings
from dicom_node.config_checks import check_runnable


def cli_actor() -> Actor:
    try:
        user = getpass.getuser()
    except Exception:  # no user name in this environment
        user = "unknown"
    return Actor(f"cli:{user}", "admin", None)


def _live(config: Path | None, data_dir: Path | None) -> Any:
    """The live configuration on the node's database, seeded from the config like a start."""
    from dicom_node.admin.live_config import LiveConfig

    s = _settings_or_exit(config=config, data_dir=data_dir)
    live = LiveConfig(_db(s), s)
    live.seed(s)
    return s, live


def register(app: typer.Typer) -> None:
    aet_app = typer.Typer(help="Calling AE titles the node accepts.", no_args_is_help=True)
    app.add_typer(aet_app, name="aet")

    @aet_app.command("list")
    def aet_list(config: Path | None = ConfigOpt, data_dir: Path | None = DataDirOpt) -> None:
        """Allowed calling AE titles (seeded from the config, changed at run time)."""
        _, live = _live(config, data_dir)
        try:
            for a in live.list_aes():
                typer.echo(f"{a['ae_title']}\t{a['host'] or '*'}\tdatabase")
        finally:
            live.db.close()

    @aet_app.command("add")
    def aet_add(
        entry: str = typer.Argument(..., help="AE or AE@HOST"),
        config: Path | None = ConfigOpt,
        data_dir: Path | None = DataDirOpt,
    ) -> None:
        """Accept a calling AE (optionally only from HOST); a running node sees it within 2 s."""
        try:
            p = parse_allow(entry)
        except ConfigError as e:
            _fail(str(e))
        _, live = _live(config, data_dir)
        try:
            live.add_ae(cli_actor(), p["ae_title"], p["host"])
        except AdminError as e:
            if e.status == 409:
                typer.echo(f"{entry}: already present")
                return
            _fail(f"aet add: {entry!r}: {e.message}")
        finally:
            live.db.close()
        typer.echo(f"{entry}: added")

    @aet_app.command("remove")
    def aet_remove(
        entry: str = typer.Argument(..., help="AE or AE@HOST"),
        config: Path | None = ConfigOpt,
        data_dir: Path | None = DataDirOpt,
    ) -> None:
        """Stop accepting a calling AE (every host, unless @HOST is given)."""
        try:
            p = parse_allow(entry)
        except ConfigError as e:
            _fail(str(e))
        _, live = _live(config, data_dir)
        try:
            live.delete_ae(cli_actor(), p["ae_title"], p["host"])
        except AdminError as e:
            _fail(f"{entry}: {e.message}")
        finally:
            live.db.close()
        typer.echo(f"{entry}: removed")

    admin_app = typer.Typer(help="Console users.", no_args_is_help=True)
    app.add_typer(admin_app, name="admin")

    @admin_app.command("set-password")
    def set_password(
        user: str = typer.Option("admin", "--user", "-u", help="console user name"),
        role: str = typer.Option("admin", "--role", help="admin or read-only"),
        password_stdin: bool = typer.Option(
            False, "--password-stdin", help="read the password from standard input"
        ),
        config: Path | None = ConfigOpt,
        data_dir: Path | None = DataDirOpt,
    ) -> None:
        """Create a console user or change its password (asked twice, or from stdin). With a
        user, the console asks for a login and may listen beyond loopback."""
        from dicom_node.admin import users

        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
        s = _settings_or_exit(config=config, data_dir=data_dir)
        d = _db(s, create=True)  # may come before the node's first start
        try:
            new = users.set_password(d.engine, cli_actor(), user, password, role)
        except AdminError as e:
            _fail(f"set-password: {e.message}")
        finally:
            d.close()
        typer.echo(f"user {user} ({role}) {'created' if new else 'updated'}")

    @admin_app.command("users")
    def list_users(config: Path | None = ConfigOpt, data_dir: Path | None = DataDirOpt) -> None:
        """Console users and their roles."""
        from dicom_node.admin import users

        s = _settings_or_exit(config=config, data_dir=data_dir)
        d = _db(s)
        try:
            for u in users.listing(d.engine):
                typer.echo(f"{u['name']}\t{u['role']}")
        finally:
            d.close()

    config_app = typer.Typer(help="The node's configuration.", no_args_is_help=True)
    app.add_typer(config_app, name="config")

    @config_app.command("check")
    def config_check(config: Path | None = ConfigOpt) -> None:
        """Validate a config file as `srnode serve` does (the schema, route models, TLS
        files): one line naming the key and exit status 2, or "ok"."""
        try:
            check_runnable(load_settings(config))
        except ConfigError as e:
            _fail(str(e))
        typer.echo("ok")

    @config_app.command("export")
    def config_export(
        config: Path | None = ConfigOpt,
        data_dir: Path | None = DataDirOpt,
        out: Path | None = typer.Option(
            None, "--out", "-o", help="file to write (default: stdout)"
        ),
    ) -> None:
        """Write the live configuration (AE titles, destinations, routes as changed at run
        time, and every other setting) as TOML that `srnode serve --config` reads back."""
        from dicom_node.admin.toml_export import to_toml

        s, live = _live(config, data_dir)
        try:
            text = to_toml(s, live.snapshot())
        finally:
            live.db.close()
        try:  # what serve would refuse is not written
            check_runnable(validate_settings(tomllib.loads(text)))
        except ConfigError as e:
            _fail(f"{e} (in the live configuration: change it in the console or the API)")
        if out is None:
            typer.echo(text, nl=False)
        else:
            out.write_text(text)
            typer.echo(f"written to {out}", err=True)

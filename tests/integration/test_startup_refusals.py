"""A setup the node cannot run with is refused at start: one line naming the setting,
exit status 2, no traceback, nothing started (what a new user sees on the terminal)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from pathlib import Path

import pytest

from tests.node_helpers import SRNODE, free_port

pytestmark = pytest.mark.integration


def _serve(tmp_path: Path, body: str, *args: str) -> subprocess.CompletedProcess:
    """``srnode serve`` on a config made of ``body`` on top of a loopback [node] section."""
    cfg = tmp_path / "srnode.toml"
    cfg.write_text(body)
    return subprocess.run(
        [SRNODE, "serve", "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _node(tmp_path: Path, port: int | None = None, web: bool = False) -> str:
    return (
        f'[node]\nhost = "127.0.0.1"\nport = {port or free_port()}\n'
        f'data_dir = "{tmp_path / "data"}"\n'
        f"[web]\nenabled = {'true' if web else 'false'}\nport = {free_port()}\n"
    )


def _refused(r: subprocess.CompletedProcess, tmp_path: Path) -> str:
    """The one line the node printed; it exited 2 and created no data dir."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not (tmp_path / "data").exists()
    return lines[0]


@contextlib.contextmanager
def _listening():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


def test_dicom_port_in_use(tmp_path):
    with _listening() as port:
        line = _refused(_serve(tmp_path, _node(tmp_path, port)), tmp_path)
    assert line == (
        f"config: node.port: port {port} on 127.0.0.1 is already in use by another program"
    )


def test_web_port_in_use(tmp_path):
    with _listening() as port:
        r = _serve(tmp_path, _node(tmp_path, web=True), "--web-port", str(port))
        line = _refused(r, tmp_path)
    assert line.startswith(f"config: web.port: port {port} on 127.0.0.1 is already in use")
    assert "web.enabled = false" in line


def test_route_with_a_model_that_does_not_resolve(tmp_path):
    body = _node(tmp_path) + '[[routes]]\nname = "ct"\nmodality = ["CT"]\nmodel = "ct-x9"\n'
    line = _refused(_serve(tmp_path, body), tmp_path)
    assert line.startswith("config: routes.ct.model: model 'ct-x9' not found; available: ")
    assert "ct-x2" in line


def test_route_naming_a_destination_that_does_not_exist(tmp_path):
    body = _node(tmp_path) + (
        '[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\nport = 104\n'
        '[[routes]]\nname = "ct"\nmodality = ["CT"]\ndestinations = ["archive"]\n'
    )
    line = _refused(_serve(tmp_path, body), tmp_path)
    assert line == (
        "config: routes.ct.destinations: no destination named 'archive' (destinations: pacs)"
    )


def test_dimse_destination_without_port(tmp_path):
    body = _node(tmp_path) + '[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "h"\n'
    line = _refused(_serve(tmp_path, body), tmp_path)
    assert line == "config: destinations.pacs: port required for kind = dimse"


def test_dimse_destination_without_anything(tmp_path):
    body = _node(tmp_path) + '[[destinations]]\nname = "pacs"\n'
    line = _refused(_serve(tmp_path, body), tmp_path)
    assert line == "config: destinations.pacs: ae_title, host, port required for kind = dimse"


def test_stow_destination_without_url(tmp_path):
    body = _node(tmp_path) + '[[destinations]]\nname = "web"\nkind = "stow"\n'
    line = _refused(_serve(tmp_path, body), tmp_path)
    assert line == "config: destinations.web: url required for kind = stow"


def test_unreadable_tls_file(tmp_path):
    missing = tmp_path / "tls" / "node.pem"
    body = _node(tmp_path).replace("[web]", f'tls_cert = "{missing}"\ntls_key = "{missing}"\n[web]')
    line = _refused(_serve(tmp_path, body), tmp_path)
    assert line == f"config: node.tls_cert: cannot read {missing} (No such file or directory)"


def test_tls_file_that_is_not_a_certificate(tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    body = _node(tmp_path).replace("[web]", f'tls_cert = "{junk}"\ntls_key = "{junk}"\n[web]')
    line = _refused(_serve(tmp_path, body), tmp_path)
    assert line.startswith(f"config: node.tls_cert: {junk} and {junk} are not a PEM certificate")


def test_destination_tls_ca_unreadable(tmp_path):
    body = _node(tmp_path) + (
        '[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "h"\nport = 2762\n'
        f'tls = true\ntls_ca = "{tmp_path / "ca.pem"}"\n'
    )
    line = _refused(_serve(tmp_path, body), tmp_path)
    assert line.startswith("config: destinations.pacs.tls_ca: cannot read ")


@pytest.mark.parametrize(
    ("aet", "says"),
    [
        ("RADIOLOGY_ARCHIVE_1", "AE title 'RADIOLOGY_ARCHIVE_1' has more than 16 characters (19)"),
        ("CT\\1", "AE title 'CT\\1': backslash not allowed"),
    ],
)
def test_ae_title_errors_say_what_is_wrong(tmp_path, aet, says):
    body = _node(tmp_path).replace("[node]", f"[node]\nae_title = '{aet}'")
    line = _refused(_serve(tmp_path, body), tmp_path)
    assert line == f"config: node.ae_title: {says}"


def test_ae_title_error_from_the_command_line(tmp_path):
    r = _serve(tmp_path, _node(tmp_path), "--allow", "A_CALLING_AE_TOO_LONG@127.0.0.1")
    line = _refused(r, tmp_path)
    assert (
        line == "config: allow: AE title 'A_CALLING_AE_TOO_LONG' has more than 16 characters (21)"
    )


def test_database_newer_than_this_srnode(tmp_path):
    """A data dir whose database a later srnode upgraded: refused, the database untouched."""
    from sqlalchemy import text

    from dicom_node.store.database import Database, default_url

    d = Database(default_url(tmp_path / "data"))
    d.create_or_migrate()
    with d.engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    d.close()
    r = _serve(tmp_path, _node(tmp_path))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0] == (
        "database: schema revision 9999 is newer than this srnode (it knows up to "
        f"{migrate_head()}); upgrade srnode"
    )
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["srnode.db"]


def migrate_head() -> str:
    from dicom_node.store import migrate

    return migrate.head()

"""The documents a PACS admin reads stay true to the code: the example configuration loads
with the node's own loader, the conformance statement names every SOP class and
transfer syntax the Storage SCP accepts, and the systemd unit and logrotate file pass their
tools' own checks."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dicom_node.config import load_settings
from dicom_node.receive.wire import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES
from sr_engine.registry import resolve_model

ROOT = Path(__file__).resolve().parents[1]
HOSPITAL = ROOT / "config" / "examples" / "hospital.toml"
CONFORMANCE = ROOT / "docs" / "conformance.md"
VERIFICATION = "1.2.840.10008.1.1"


def _uids_in(text: str) -> set[str]:
    """Every DICOM UID (1.2.840.10008...) written anywhere in ``text``."""
    return set(re.findall(r"(?<![\d.])1\.2\.840\.10008(?:\.\d+)+(?![\d.])", text))


@pytest.fixture(scope="module")
def conformance_uids() -> set[str]:
    return _uids_in(CONFORMANCE.read_text(encoding="utf-8"))


def test_hospital_example_loads_with_the_node_loader():
    s = load_settings(HOSPITAL, env={})
    assert s.allow and len(s.destinations) >= 2
    assert {d.kind for d in s.destinations} == {"dimse", "stow"}
    assert s.node.tls_cert is not None and any(d.tls for d in s.destinations)
    assert s.database.url is not None and s.database.url.startswith("postgresql")


def test_hospital_example_routes_name_configured_destinations_and_bundled_models():
    s = load_settings(HOSPITAL, env={})
    names = {d.name for d in s.destinations}
    for route in s.routes:
        unknown = set(route.destinations) - names
        assert not unknown, f"route {route.name!r} names unknown destinations {unknown}"
        if route.model is not None:
            assert resolve_model(route.model).is_file(), route.model
    by_name = {r.name: r for r in s.routes}
    assert by_name["ct"].model == "ct-x2" and by_name["mr"].model == "mr-x2"
    assert by_name["radiographs"].modality == ["CR", "DX"]
    assert s.routes[-1].action == "ignore"


def test_conformance_statement_names_every_sop_class_the_scp_accepts(conformance_uids):
    missing = {n: uid for n, uid in STORAGE_SOP_CLASSES.items() if uid not in conformance_uids}
    assert not missing, f"docs/conformance.md lacks {missing}"
    assert VERIFICATION in conformance_uids


def test_conformance_statement_names_every_transfer_syntax_the_scp_accepts(conformance_uids):
    missing = {ts.name: str(ts) for ts in TRANSFER_SYNTAXES if str(ts) not in conformance_uids}
    assert not missing, f"docs/conformance.md lacks {missing}"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_passes_systemd_analyze_verify(tmp_path):
    """docs/srnode.service, with ExecStart pointed at an executable that exists here
    (systemd checks it), verifies without a warning."""
    exe = tmp_path / "srnode"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    unit = tmp_path / "srnode.service"
    text = (ROOT / "docs" / "srnode.service").read_text()
    assert "/opt/srnode/.venv/bin/srnode" in text
    unit.write_text(text.replace("/opt/srnode/.venv/bin/srnode", str(exe)))
    r = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate not installed")
def test_logrotate_file_passes_logrotate_debug(tmp_path):
    """docs/srnode.logrotate, with this machine's user in place of the srnode user (logrotate
    looks the user up), parses without an error."""
    import grp
    import os
    import pwd

    text = (ROOT / "docs" / "srnode.logrotate").read_text()
    assert text.count("srnode srnode") == 2
    me = f"{pwd.getpwuid(os.getuid()).pw_name} {grp.getgrgid(os.getgid()).gr_name}"
    conf = tmp_path / "srnode.logrotate"
    conf.write_text(text.replace("srnode srnode", me))
    r = subprocess.run(
        ["logrotate", "-d", "-s", str(tmp_path / "state"), str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "error" not in out.lower(), out

"""What the README, the admin guide, the config reference and the command help tell an
admin matches what the node does: the C-STORE error statuses of the conformance statement,
every backend path, the error lines the troubleshooting table quotes, the intended use,
sizing, and how a model is installed."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from dicom_node.config import Settings
from sr_engine.backends import BACKEND_NAMES
from tests.node_helpers import SRNODE

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
GUIDE = (ROOT / "docs" / "admin-guide.md").read_text()


def _troubleshooting() -> str:
    t = GUIDE[GUIDE.index("## Troubleshooting") :]
    return t[: t.index("\n## ", 5)]


def test_readme_names_the_c_store_error_statuses_of_the_conformance_statement():
    conformance = (ROOT / "docs" / "conformance.md").read_text()
    codes = sorted(set(re.findall(r"^\| (0xC00\d) \|", conformance, re.M)))
    assert codes[0] == "0xC000" and len(codes) >= 6
    span = f"`{codes[0]}`–`{codes[-1]}`"
    assert span in README, span
    assert f"{codes[0]}–{codes[-1]}" in _troubleshooting()


def test_every_backend_path_is_in_the_help_and_the_reference():
    r = subprocess.run(
        [SRNODE, "enhance", "--help"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "COLUMNS": "400", "TERM": "dumb"},
    )  # fmt: skip
    help_text = " ".join(r.stdout.split()).replace("- ", "-")  # a name wrapped at its "-"
    reference = (ROOT / "docs" / "config-reference.md").read_text()
    for name in BACKEND_NAMES:
        assert re.search(rf"\b{re.escape(name)}\b", help_text), name
        assert re.search(rf"\b{re.escape(name)}\b", reference), name
    hospital = (ROOT / "config" / "examples" / "hospital.toml").read_text()
    backend_comment = next(ln for ln in hospital.splitlines() if ln.startswith("backend ="))
    assert "else ONNX Runtime" not in backend_comment  # auto measures; it does not default


def test_troubleshooting_quotes_the_schema_error_as_the_node_prints_it(tmp_path):
    from sqlalchemy import text

    from dicom_node.store.database import Database
    from dicom_node.store.migrate import SchemaError

    s = Settings.model_validate({"node": {"data_dir": str(tmp_path)}})
    db = Database.from_settings(s)
    db.create_or_migrate()
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    with pytest.raises(SchemaError) as e:
        db.create_or_migrate()
    db.close()
    said = re.sub(r"revision \S+", "revision N", str(e.value))
    said = re.sub(r"up to \S+\)", "up to M)", said)
    assert f"`{said}`" in _troubleshooting(), said


def test_troubleshooting_quotes_the_refused_association_as_logged():
    from dicom_node.receive.access import REJECT_REASON

    assert f"`association rejected: AE from ADDRESS ({REJECT_REASON})`" in _troubleshooting()


def test_readme_says_the_intended_use_sizing_and_how_to_install_a_model():
    assert "**Intended use.**" in README
    intended = README[README.index("**Intended use.**") :][:600]
    assert "not intended for primary diagnosis" in intended and "research" in intended
    assert "## Sizing" in README
    sizing = README[README.index("## Sizing") :][:1500]
    assert "**Memory:**" in sizing and "**Disk**" in sizing
    assert "### Installing or updating a model" in README and "## Models" in GUIDE
    assert "engine.model_dirs" in README[README.index("### Installing or updating") :][:800]

"""The data directory's layout is spelled out in one place (dicom_node.data_dir.DataDir):
the node's modules ask it for the spool, derived, previews and cache folders and the
SQLite file, and a derived series' folder is always a UID inside ``derived/``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dicom_node.config import Settings
from dicom_node.data_dir import DataDir
from dicom_node.jobs.engines import node_cache_dir
from dicom_node.service import open_intake
from dicom_node.store.database import default_url

ROOT = Path(__file__).resolve().parents[1]
NAMES = {"spool", "derived", "previews", "cache", "srnode.db"}
#: modules that still build a data-directory path themselves (owned elsewhere: the previews
#: folder in derive, the database file check of ``srnode``'s commands)
NOT_YET = {"dicom_node/derive/preview.py", "dicom_node/cli/service.py"}


def test_the_layout(tmp_path):
    d = DataDir.of(Settings.model_validate({"node": {"data_dir": str(tmp_path)}}))
    assert (d.spool, d.derived, d.previews, d.cache, d.database) == (
        tmp_path / "spool",
        tmp_path / "derived",
        tmp_path / "previews",
        tmp_path / "cache",
        tmp_path / "srnode.db",
    )
    assert d.derived_series("1.2.3") == tmp_path / "derived" / "1.2.3"
    assert d.preview(7) == tmp_path / "previews" / "7"
    for bad in ("..", "../spool", "1.2/3", ""):
        with pytest.raises(ValueError):
            d.derived_series(bad)


def test_the_node_uses_it(tmp_path):
    s = Settings.model_validate({"node": {"data_dir": str(tmp_path / "data")}})
    intake = open_intake(s)
    try:
        d = DataDir.of(s)
        assert intake.spool.root == d.spool
        assert default_url(d.root).endswith(str(d.database.resolve()))
        assert d.database.is_file()
        assert node_cache_dir(d.root) == d.cache
    finally:
        intake.db.close()


def test_no_other_module_spells_the_layout():
    """No ``<something> / "spool"`` (or derived, previews, cache, srnode.db) outside
    data_dir.py: before, six modules built these paths each on its own."""
    found = set()
    for path in sorted((ROOT / "dicom_node").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "dicom_node/data_dir.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                right = node.right
                if isinstance(right, ast.Constant) and right.value in NAMES:
                    found.add(rel)
            if isinstance(node, ast.JoinedStr) and any(
                isinstance(v, ast.Constant) and str(v.value).lstrip("/") in NAMES
                for v in node.values
            ):
                found.add(rel)
    assert found <= NOT_YET, sorted(found - NOT_YET)
    assert found >= NOT_YET  # the scan sees what it should (and this list shrinks)

"""One owner for the database: outside ``dicom_node/store/`` no module imports SQLAlchemy or
store's tables; the rest of the node reads and writes through store's functions."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dicom_node"
STORE = PACKAGE / "store"

# modules outside store/ allowed to import SQLAlchemy or store's tables, each with its reason
ALLOWED: dict[str, str] = {}


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def _touches_tables(name: str) -> bool:
    return (
        name == "sqlalchemy"
        or name.startswith("sqlalchemy.")
        or name == "dicom_node.store.schema"
        or name.startswith("dicom_node.store.schema.")
    )


def test_no_module_outside_store_touches_a_table() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if STORE in path.parents:
            continue
        rel = path.relative_to(PACKAGE.parent).as_posix()
        hits = sorted({n for n in _imports(path) if _touches_tables(n)})
        if hits and rel not in ALLOWED:
            offenders[rel] = hits
    assert not offenders, f"query through dicom_node.store instead: {offenders}"


def test_the_allowed_list_is_still_needed() -> None:
    for rel in ALLOWED:
        path = PACKAGE.parent / rel
        assert path.exists() and any(_touches_tables(n) for n in _imports(path)), rel

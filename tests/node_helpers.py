"""Helpers for the node tests: test series with fresh UIDs, free ports, PostgreSQL URLs."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

PG_ADMIN_URLS = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
    "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
)


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_series(
    directory: Path,
    source: str = "CT_small.dcm",
    count: int = 3,
    study_uid: str | None = None,
    description: str | None = None,
) -> tuple[str, str, list[Path]]:
    """``count`` copies of a pydicom test file as one new series; returns (study, series, files)."""
    directory.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    files = []
    for i in range(count):
        ds = pydicom.dcmread(get_testdata_file(source))
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        if "ImagePositionPatient" in ds:
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x, y, z + i * 2.0]
        if description is not None:
            ds.SeriesDescription = description
        p = directory / f"{ds.Modality}_{i:03d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        files.append(p)
    return study_uid, series_uid, files


def pg_database():
    """Create a throwaway PostgreSQL database; returns (url, drop) or (None, reason)."""
    try:
        import psycopg
    except ImportError as e:  # pragma: no cover
        return None, f"psycopg not installed ({e})"
    name = f"srnode_test_{uuid.uuid4().hex[:12]}"
    last = "no URL tried"
    for admin in PG_ADMIN_URLS:
        plain = admin.replace("postgresql+psycopg://", "postgresql://")
        try:
            with psycopg.connect(plain, autocommit=True, connect_timeout=3) as c:
                c.execute(f'CREATE DATABASE "{name}"')
        except Exception as e:
            last = f"{admin}: {e}".splitlines()[0]
            continue
        base = admin.rsplit("/", 1)[0]

        def drop(plain=plain) -> None:
            with contextlib.suppress(Exception), psycopg.connect(plain, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        return f"{base}/{name}", drop
    return None, f"PostgreSQL at 127.0.0.1:5432 unreachable ({last})"


def env_with(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env

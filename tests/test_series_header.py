"""The series header, read once at ingest and stored once: real routing, the routing dry run
and the series catalog read the same stored facts (on SQLite and PostgreSQL), and the
catalog does not go back to the spool files for them."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dicom_node.admin import catalog
from dicom_node.admin.dry_run import dry_run
from dicom_node.admin.live_config import LiveConfig
from dicom_node.config import Settings
from dicom_node.jobs.stability import tick
from dicom_node.receive.series_header import SeriesHeader
from dicom_node.service import open_intake
from dicom_node.store import console
from dicom_node.store.jobs import Jobs
from tests.node_helpers import pg_database

LONG = "Thorax " + "axial soft tissue 1.0 " * 14 + "with contrast"  # over the 256 of a column


def _settings(tmp_path: Path, url: str | None) -> Settings:
    raw: dict = {
        "node": {"data_dir": str(tmp_path / "data")},
        "scheduler": {"stable_age": 0.01},
        "allow": [{"ae_title": "PACS"}],
        "destinations": [{"name": "pacs", "ae_title": "DEST", "host": "127.0.0.1", "port": 9}],
        "routes": [
            {"name": "trauma", "study_description": "^trauma", "destinations": ["pacs"]},
            {"name": "contrast", "series_description": "contrast$", "destinations": ["pacs"]},
            {"name": "rest", "action": "ignore"},
        ],
    }
    if url is not None:
        raw["database"] = {"url": url}
    return Settings.model_validate(raw)


@pytest.fixture(params=["sqlite", "postgresql"])
def node(request, tmp_path):
    url = drop = None
    if request.param == "postgresql":
        url, drop = pg_database()
        if url is None:
            pytest.skip(drop)
    settings = _settings(tmp_path, url)
    intake = open_intake(settings)
    live = LiveConfig(intake.db, settings)
    live.seed(settings)
    yield intake, live, settings
    intake.db.close()
    if drop is not None:
        drop()


def _instance(study_uid: str, **attrs) -> pydicom.Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def test_dry_run_and_real_routing_read_the_same_header(node):
    """Before, the dry run routed a received series from the series and study columns, real
    routing from the header JSON: a second series of a study whose StudyDescription differs
    from the first one's, or a SeriesDescription longer than its column, went one way for
    real and another way in the dry run."""
    intake, live, settings = node
    study = generate_uid()
    sent = [
        _instance(study, StudyDescription="Elective follow-up", SeriesDescription="Head"),
        _instance(study, StudyDescription="Trauma scan", SeriesDescription="Head"),
        _instance(study, StudyDescription="Elective", SeriesDescription=LONG),
    ]
    for ds in sent:
        assert intake.ingestor.store(ds, "PACS").ok
    tick(intake.db, settings, now=4e9)
    jobs = Jobs(intake.db)
    for ds, want in zip(sent, ["rest", "trauma", "contrast"], strict=True):
        uid = str(ds.SeriesInstanceUID)
        (real,) = [j for j in _jobs(intake) if j["series_uid"] == uid]
        guess = dry_run(live, series_uid=uid)
        assert (guess["route"], guess["action"]) == (
            want,
            "ignore" if want == "rest" else "enhance",
        )
        assert real["route"] == guess["route"]
        assert jobs.context(real["id"])["series_uid"] == uid
    header = SeriesHeader.from_stored(
        console.series_header(live.engine, str(sent[2].SeriesInstanceUID))
    )
    assert header.series_description == LONG and header.calling_ae == "PACS"


def _jobs(intake) -> list[dict]:
    _, rows = console.search(intake.db.engine, console.JobFilter(limit=100))
    return rows


def test_the_catalog_reads_the_stored_header_not_the_spool(node):
    intake, live, settings = node
    ds = _instance(generate_uid(), AccessionNumber="ACC77", StudyDate="20250102", SeriesNumber=5)
    assert intake.ingestor.store(ds, "PACS").ok
    for f in intake.spool.root.rglob("*.dcm"):  # the file is gone (retention, a disk swap…)
        f.unlink()
    assert catalog.index_new_series(intake.db.engine) == 1
    (row,) = _jobs_catalog(intake, "ACC77")
    assert row == ("20250102", 5)


def _jobs_catalog(intake, accession: str) -> list[tuple]:
    from sqlalchemy import select

    from dicom_node.store.schema import SeriesCatalog

    with intake.db.engine.connect() as c:
        return c.execute(
            select(SeriesCatalog.study_date, SeriesCatalog.series_number).where(
                SeriesCatalog.accession_number == accession
            )
        ).all()


def test_a_header_from_before_the_catalog_facts_is_read_from_its_file(tmp_path):
    """A series an older srnode stored (header JSON without the catalog's facts) still gets
    them, from its first file, through the same extraction."""
    f = tmp_path / "old.dcm"
    ds = _instance(generate_uid(), AccessionNumber="OLD1", StudyDate="20200101", SeriesNumber=2)
    ds.save_as(f, enforce_file_format=True)
    old = '{"modality": "CT", "calling_ae": "PACS"}'
    assert not SeriesHeader.has_catalog_facts(old)
    assert catalog._facts(1, old, str(f)) == {
        "study_date": "20200101",
        "accession_number": "OLD1",
        "series_number": 2,
    }


def test_header_fields_from_a_real_file():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    ds.StudyDate = "not a date"
    h = SeriesHeader.from_dataset(ds, "PACS")
    assert h.modality == "CT" and h.calling_ae == "PACS"
    assert h.study_date == ""  # not digits: left out
    assert h.series_number == int(ds.SeriesNumber)
    assert not h.derived_by_srnode
    assert SeriesHeader.from_json(h.to_json()) == h
    broken = {"Modality": "CT", "ContributingEquipmentSequence": ["not an item"]}
    assert SeriesHeader.from_dataset(broken).derived_by_srnode  # unreadable: never enhanced

"""A real `srnode serve` between dcmtk's storescu (the PACS sending) and storescp (the PACS
receiving): CT and MR series in, derived series out; unknown AEs refused; malformed
instances refused while the rest flows."""

from __future__ import annotations

import json
import shutil
import subprocess

import pydicom
import pytest

from tests.node_helpers import (
    ECHOSCU,
    SRNODE,
    STORESCP,
    STORESCU,
    dest_config,
    free_port,
    nodelay_env,
    received,
    start_node,
    start_storescp,
    storescu,
    wait_for,
    write_config,
    write_series,
)
from tests.onnx_models import write_test_model

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not all(shutil.which(p) for p in (STORESCU, STORESCP, ECHOSCU)), reason="dcmtk missing"
    ),
]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    t = tmp_path_factory.mktemp("node")
    card = write_test_model(t / "models")
    port, dport = free_port(), free_port()
    dest = dest_config(dport, "PACS_OUT")
    cfg = write_config(
        t / "srnode.toml",
        data_dir=t / "data",
        port=port,
        model_card=card,
        destinations=[dest],
        stable_age=1.0,
    )
    out = t / "out"
    scp = start_storescp(out, dport, t / "storescp.log")
    proc = start_node(t / "node.log", "--config", str(cfg))
    yield {"t": t, "port": port, "out": out, "cfg": cfg, "proc": proc, "card": card}
    proc.close()
    scp.close()


def _status(node) -> dict:
    r = subprocess.run(
        [SRNODE, "status", "--config", str(node["cfg"]), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_ct_and_mr_series_come_back_derived_with_provenance(node):
    t = node["t"]
    study = pydicom.uid.generate_uid()
    _, ct_series, ct = write_series(t / "ct", "CT_small.dcm", 4, study_uid=study)
    _, mr_series, mr = write_series(t / "mr", "MR_small.dcm", 3, study_uid=study)
    src = {str(pydicom.dcmread(f).SOPInstanceUID): pydicom.dcmread(f) for f in ct + mr}
    r = storescu(node["port"], ct + mr)
    assert r.returncode == 0, r.stdout + r.stderr

    def arrived():
        got = {
            u: ds for u, ds in received(node["out"]).items() if str(ds.StudyInstanceUID) == study
        }
        return got if len(got) >= len(src) else None

    # stable age (1 s) + processing of 7 small images + export
    got = wait_for(arrived, 120, what="7 derived instances at storescp")
    assert len(got) == 7
    by_source = {}
    for ds in got.values():
        assert ds.SOPInstanceUID not in src  # new UIDs
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert "[AI SR x2]" in str(ds.SeriesDescription)
        assert "ContributingEquipmentSequence" in ds
        assert "DerivationCodeSequence" in ds
        ref = str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID)
        assert ref in src
        s = src[ref]
        assert ds.Rows == 2 * s.Rows and ds.Columns == 2 * s.Columns
        assert ds.SeriesInstanceUID != s.SeriesInstanceUID
        by_source[ref] = ds
    assert set(by_source) == set(src)
    ct_derived = {
        str(by_source[u].SeriesInstanceUID)
        for u, s in src.items()
        if s.SeriesInstanceUID == ct_series
    }
    mr_derived = {
        str(by_source[u].SeriesInstanceUID)
        for u, s in src.items()
        if s.SeriesInstanceUID == mr_series
    }
    assert len(ct_derived) == 1 and len(mr_derived) == 1 and ct_derived != mr_derived
    st = wait_for(
        lambda: (s := _status(node))["queue"]["done"] >= 2 and s,
        30,
        what="jobs done in srnode status",
    )
    assert {j["modality"] for j in st["jobs"] if j["state"] == "done"} >= {"CT", "MR"}
    # bounded disk: once every destination has them, the derived files and the received
    # ones go, and so do their folders (derived.keep and spool.keep_after_export are off)
    data = t / "data"
    for series in (ct_series, mr_series):
        assert not (data / "derived" / str(series)).exists()
    assert not (data / "spool" / study).exists()


def test_unknown_calling_ae_is_rejected_and_audited(node):
    env = nodelay_env()
    r = subprocess.run(
        [ECHOSCU, "-aet", "UNKNOWN", "-aec", "SRNODE", "127.0.0.1", str(node["port"])],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode != 0
    assert "Calling AE Title Not Recognized" in (r.stdout + r.stderr)
    ok = subprocess.run(
        [ECHOSCU, "-aet", "PACS", "-aec", "SRNODE", "127.0.0.1", str(node["port"])],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    from dicom_node.config import load_settings
    from dicom_node.store.database import Database
    from dicom_node.store.schema import AuditEvent

    d = Database.from_settings(load_settings(node["cfg"], env={}))
    try:
        with d.session() as s:
            ev = s.query(AuditEvent).filter_by(kind="association_rejected").all()
        assert any(e.ae_title == "UNKNOWN" and e.host == "127.0.0.1" for e in ev)
    finally:
        d.close()
    # `srnode aet add` lets it in without a restart (the node re-reads within 5 s)
    r = subprocess.run(
        [SRNODE, "aet", "add", "LATE@127.0.0.1", "--config", str(node["cfg"])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr

    def echo_late():
        return (
            subprocess.run(
                [ECHOSCU, "-aet", "LATE", "-aec", "SRNODE", "127.0.0.1", str(node["port"])],
                env=env,
                capture_output=True,
                timeout=30,
            ).returncode
            == 0
        )

    wait_for(echo_late, 20, interval=1.0, what="LATE accepted after aet add")


def test_malformed_instances_refused_while_the_series_flows(node):
    t = node["t"]
    study, series, good = write_series(t / "mixed", "CT_small.dcm", 3)
    bad_dir = t / "bad"
    bad_dir.mkdir()
    # pixel data cut short (a truncated transfer / broken modality)
    ds = pydicom.dcmread(good[0])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    truncated = bad_dir / "truncated.dcm"
    ds.save_as(truncated, enforce_file_format=True)
    # no SeriesInstanceUID
    ds = pydicom.dcmread(good[1])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    del ds.SeriesInstanceUID
    no_series = bad_dir / "no_series.dcm"
    ds.save_as(no_series, enforce_file_format=True)

    r = storescu(
        node["port"], [good[0], truncated, good[1], no_series, good[2]], "PACS", "-v", "-nh"
    )
    out = r.stdout + r.stderr
    assert out.count("Received Store Response (Error: CannotUnderstand)") == 2, out
    assert out.count("Received Store Response (Success)") == 3, out
    got = wait_for(
        lambda: (
            (g := [d for d in received(node["out"]).values() if str(d.StudyInstanceUID) == study])
            and len(g) >= 3
            and g
        ),
        120,
        what="3 derived instances of the mixed series",
    )
    assert len(got) == 3  # the good ones, no more
    # the node keeps serving
    ok = subprocess.run(
        [ECHOSCU, "-aet", "PACS", "-aec", "SRNODE", "127.0.0.1", str(node["port"])],
        env=nodelay_env(),
        capture_output=True,
        timeout=30,
    )
    assert ok.returncode == 0
    assert node["proc"].alive()


def test_resent_instances_are_idempotent(node):
    t = node["t"]
    study, series, files = write_series(t / "again", "MR_small.dcm", 2)
    assert storescu(node["port"], files).returncode == 0
    assert storescu(node["port"], files).returncode == 0
    got = wait_for(
        lambda: (
            (g := [d for d in received(node["out"]).values() if str(d.StudyInstanceUID) == study])
            and len(g) >= 2
            and g
        ),
        120,
        what="2 derived instances",
    )
    assert len(got) == 2
    from dicom_node.config import load_settings
    from dicom_node.store.database import Database
    from dicom_node.store.schema import Instance, Series

    d = Database.from_settings(load_settings(node["cfg"], env={}))
    try:
        with d.session() as s:
            sr = s.query(Series).filter_by(series_uid=series).one()
            assert sr.instance_count == 2
            assert s.query(Instance).filter_by(series_id=sr.id).count() == 2
    finally:
        d.close()

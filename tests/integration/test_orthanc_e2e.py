"""End to end (issue 5): dcmtk storescu sends a 512x512 CT series and an MR series to a real
Orthanc; Orthanc's auto-routing plugin sends them to a real `srnode serve`; the derived
series come back to Orthanc by C-STORE, and in a second run by STOW-RS. Everything is
checked through Orthanc's REST API with pyorthanc.

The model is the small test graph from tests/onnx_models.py, so the run is fast; what is
checked is the node's plumbing and the derived objects, not image quality."""

from __future__ import annotations

import io
import time

import numpy as np
import pydicom
import pytest

from tests import pacs_peers as peers
from tests.node_helpers import start_node, write_config
from tests.onnx_models import write_test_model

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (peers.have_orthanc() and peers.have_dcmtk()), reason="needs Orthanc + plugins, dcmtk"
    ),
]

CT_SLICES, MR_SLICES = 3, 2
FLAT_HU = 40


@pytest.fixture(scope="module", params=["dimse", "stow"])
def loop(request, tmp_path_factory):
    """Orthanc + srnode wired in a loop; yields after the derived series are in Orthanc."""
    way_back = request.param
    t = tmp_path_factory.mktemp(f"e2e-{way_back}")
    card = write_test_model(t / "models")
    ct = peers.write_phantom_series(t / "ct", "CT", n=CT_SLICES, size=512)
    study = str(pydicom.dcmread(ct[0], stop_before_pixels=True).StudyInstanceUID)
    mr = peers.write_phantom_series(t / "mr", "MR", n=MR_SLICES, size=128, study_uid=study)
    node_port = peers.free_port()
    with peers.orthanc(t / "orthanc", stable_age=1, srnode=f"127.0.0.1:{node_port}") as o:
        if way_back == "dimse":
            dest = {"name": "ORTHANC", "ae_title": "ORTHANC", "host": "127.0.0.1",
                    "port": o.dicom_port}  # fmt: skip
        else:
            dest = {"name": "ORTHANC", "kind": "stow", "url": o.dicomweb}
        dest.update(backoff_initial=0.5, backoff_max=2.0)
        cfg = write_config(
            t / "srnode.toml",
            data_dir=t / "data",
            port=node_port,
            model_card=card,
            destinations=[dest],
            allow=[("ORTHANC", "127.0.0.1")],
            stable_age=1.0,
        )
        node = start_node(t / "node.log", "--config", str(cfg))
        try:
            peers.storescu(o.dicom_port, ct + mr, "MODALITY", called_ae="ORTHANC", check=True)
            client = o.client()
            try:
                peers.wait_until(
                    lambda: (
                        len(peers.find_series(client, study)) >= 4
                        and _all_instances_arrived(client, study)
                    ),
                    240,
                    interval=0.5,
                    what="derived series in Orthanc",
                )
            except TimeoutError:
                print(node.text()[-6000:])
                print(o.log()[-3000:])
                raise
            # Give a loop the chance to show itself: derived series become stable in
            # Orthanc and must not go around again.
            derived_ids = {s["ID"] for s in _derived_series(client, study)}
            peers.wait_until(
                lambda: derived_ids <= peers.stable_series_ids(client), 30, what="stable"
            )
            time.sleep(2.5)
            yield {"client": client, "study": study, "ct": ct, "mr": mr, "orthanc": o,
                   "node": node, "way_back": way_back}  # fmt: skip
        finally:
            node.close()


def _is_derived(client, series: dict) -> bool:
    first = series["Instances"][0]
    tags = client.get_instances_id_tags(first, params={"short": True})
    return "DERIVED" in str(tags.get("0008,0008", "")) and bool(tags.get("0018,a001"))


def _derived_series(client, study: str) -> list[dict]:
    return [s for s in peers.find_series(client, study) if _is_derived(client, s)]


def _all_instances_arrived(client, study: str) -> bool:
    derived = _derived_series(client, study)
    counts = sorted(len(s["Instances"]) for s in derived)
    return counts == sorted([CT_SLICES, MR_SLICES])


def _dataset(client, instance_id: str) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(client.get_instances_id_file(instance_id)))


def _sorted_datasets(client, series: dict) -> list[pydicom.Dataset]:
    dss = [_dataset(client, i) for i in series["Instances"]]
    return sorted(dss, key=lambda d: int(d.InstanceNumber))


def _corners(ds: pydicom.Dataset) -> np.ndarray:
    """Patient coordinates of the outer corners of the image (pixel edges, not centres)."""
    ipp = np.array(ds.ImagePositionPatient, float)
    iop = np.array(ds.ImageOrientationPatient, float)
    row_dir, col_dir = iop[:3], iop[3:]
    dr, dc = (float(v) for v in ds.PixelSpacing)  # between rows, between columns
    out = []
    for i in (-0.5, ds.Rows - 0.5):
        for j in (-0.5, ds.Columns - 0.5):
            out.append(ipp + j * dc * row_dir + i * dr * col_dir)
    return np.array(out)


def _pairs(loop) -> list[tuple[list[pydicom.Dataset], list[pydicom.Dataset]]]:
    """(source datasets, derived datasets) per source series, matched by SourceImageSequence."""
    client, study = loop["client"], loop["study"]
    all_series = peers.find_series(client, study)
    derived = [s for s in all_series if _is_derived(client, s)]
    sources = [s for s in all_series if s not in derived]
    assert len(sources) == 2 and len(derived) == 2, "exactly one derived series per source"
    src_sets = {s["ID"]: _sorted_datasets(client, s) for s in sources}
    pairs = []
    for d in derived:
        dds = _sorted_datasets(client, d)
        refs = {str(i.ReferencedSOPInstanceUID) for ds in dds for i in ds.SourceImageSequence}
        match = [
            sid for sid, sds in src_sets.items() if refs == {str(x.SOPInstanceUID) for x in sds}
        ]
        assert len(match) == 1, "derived series must reference exactly its source series"
        pairs.append((src_sets[match[0]], dds))
    assert {id(p[0]) for p in pairs} == {id(v) for v in src_sets.values()}
    return pairs


def test_one_derived_series_per_source_with_provenance(loop):
    for src, der in _pairs(loop):
        assert len(der) == len(src)
        s0, d0 = src[0], der[0]
        assert d0.StudyInstanceUID == s0.StudyInstanceUID == loop["study"]
        assert d0.SeriesInstanceUID != s0.SeriesInstanceUID
        assert d0.FrameOfReferenceUID == s0.FrameOfReferenceUID
        assert d0.ImageType[0] == "DERIVED"
        assert d0.SeriesDescription.startswith(s0.SeriesDescription)
        assert "srnode" in d0.DerivationDescription
        assert len(d0.DerivationCodeSequence) >= 1
        assert len(d0.SourceImageSequence) >= 1
        assert any(str(i.Manufacturer) == "srnode" for i in d0.ContributingEquipmentSequence)
        assert {x.SOPInstanceUID for x in der}.isdisjoint({x.SOPInstanceUID for x in src})


def test_geometry_doubles_and_overlays_the_source(loop):
    for src, der in _pairs(loop):
        for s, d in zip(src, der, strict=True):
            assert (d.Rows, d.Columns) == (2 * s.Rows, 2 * s.Columns)
            assert np.allclose(
                np.array(d.PixelSpacing, float), np.array(s.PixelSpacing, float) / 2, atol=1e-6
            )
            assert np.abs(_corners(d) - _corners(s)).max() < 0.01  # mm
            assert list(d.ImageOrientationPatient) == list(s.ImageOrientationPatient)


def test_flat_ct_region_keeps_its_hounsfield_units(loop):
    ((ct_src, ct_der),) = [(s, d) for s, d in _pairs(loop) if s[0].Modality == "CT"]
    for s, d in zip(ct_src, ct_der, strict=True):
        hu_src = s.pixel_array * float(s.RescaleSlope) + float(s.RescaleIntercept)
        hu_der = d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept)
        # a flat 40 HU box inside the phantom's disc, away from its edge and the bright rod
        y0, y1, x0, x1 = 230, 280, 130, 180
        assert np.all(hu_src[y0:y1, x0:x1] == FLAT_HU)
        box = hu_der[2 * y0 : 2 * y1, 2 * x0 : 2 * x1]
        assert np.abs(box - FLAT_HU).max() <= 1.0


def test_rendered_preview_is_not_blank(loop):
    from PIL import Image

    client = loop["client"]
    for series in _derived_series(client, loop["study"]):
        png = client.get_instances_id_preview(series["Instances"][0])
        img = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
        assert img.shape[0] >= 128 and img.shape[1] >= 128
        assert img.std() > 10 and img.max() - img.min() > 100, "preview looks blank"


def test_no_loop_and_the_node_log_is_clean(loop):
    client, study = loop["client"], loop["study"]
    assert len(peers.find_series(client, study)) == 4  # 2 sources + 2 derived, nothing more
    log = loop["node"].text()
    assert "Traceback" not in log
    assert "PHANTOM" not in log  # no patient names in logs


def test_derived_series_came_back_the_configured_way(loop):
    client = loop["client"]
    for series in _derived_series(client, loop["study"]):
        origin = client.get_instances_id_metadata_name(series["Instances"][0], "Origin")
        origin = origin.decode() if isinstance(origin, bytes) else str(origin)
        if loop["way_back"] == "dimse":
            assert origin == "DicomProtocol"
            aet = client.get_instances_id_metadata_name(series["Instances"][0], "RemoteAET")
            assert (aet.decode() if isinstance(aet, bytes) else str(aet)) == "SRNODE"
        else:
            assert origin != "DicomProtocol"  # STOW-RS through the DICOMweb plugin

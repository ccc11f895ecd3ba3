"""The disk reserve (storage.min_free_gb): below it new associations are refused (C-ECHO
still answers), C-STORE and STOW-RS get 0xA700, and instances are taken again once space
is back. The reserve is set above (then below) the real free space of the test's disk."""

from __future__ import annotations

import pytest
from pydicom.data import get_testdata_file
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from dicom_node.config import Settings
from dicom_node.receive.ingest import Ingestor
from dicom_node.receive.reserve import GB, free_bytes
from dicom_node.receive.scp import StorageSCP
from dicom_node.receive.store_status import OUT_OF_RESOURCES, SUCCESS
from dicom_node.spool import Spool
from dicom_node.store import database as dbm
from dicom_node.store.database import Database
from tests.node_helpers import free_port, write_series


@pytest.fixture
def node(tmp_path):
    free_gb = free_bytes(tmp_path) / GB
    s = Settings.model_validate(
        {
            "node": {"data_dir": str(tmp_path), "host": "127.0.0.1", "port": free_port()},
            "allow": [{"ae_title": "PACS"}],
            "storage": {"min_free_gb": free_gb + 1000},  # above what the disk has
        }
    )
    d = Database(dbm.default_url(tmp_path))
    d.create_or_migrate()
    ing = Ingestor(d, Spool(tmp_path / "spool"), settings=s)
    yield s, d, ing
    d.close()


def test_below_the_reserve_instances_get_0xA700_and_are_taken_again_later(node, tmp_path, caplog):
    s, d, ing = node
    _, _, files = write_series(tmp_path / "in", count=2)
    with caplog.at_level("INFO"):
        st = ing.store(files[0].read_bytes(), "PACS", via="stow")
        assert st == OUT_OF_RESOURCES and "storage.min_free_gb" in st.reason
        assert d.instance_paths() == set()
        assert "disk reserve reached" in caplog.text
        ing.reserve.min_free = 0  # space is back (the reserve lowered instead)
        ing.reserve.refresh()
        assert ing.store(files[1].read_bytes(), "PACS", via="stow") == SUCCESS
    assert len(d.instance_paths()) == 1


def test_below_the_reserve_new_associations_are_refused_but_echo_answers(node, caplog):
    s, d, ing = node
    scp = StorageSCP(s, ing)
    _, port = scp.start()
    try:
        ae = AE(ae_title="PACS")
        ae.add_requested_context(CTImageStorage)
        with caplog.at_level("WARNING"):
            assoc = ae.associate("127.0.0.1", port, ae_title="SRNODE")
        assert assoc.is_rejected
        rsp = assoc.acceptor.primitive
        assert (rsp.result, rsp.result_source, rsp.diagnostic) == (2, 3, 2)  # transient
        assert "free disk space below storage.min_free_gb" in caplog.text
        echo = AE(ae_title="PACS")
        echo.add_requested_context(Verification)
        assoc = echo.associate("127.0.0.1", port, ae_title="SRNODE")
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
        ing.reserve.min_free = 0
        ing.reserve.refresh()
        assoc = ae.associate("127.0.0.1", port, ae_title="SRNODE")
        assert assoc.is_established
        assert assoc.send_c_store(get_testdata_file("CT_small.dcm")).Status == SUCCESS
        assoc.release()
    finally:
        scp.stop(drain=1)

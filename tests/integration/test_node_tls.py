"""The SCP over TLS (node.tls_cert / tls_key / tls_ca): a TLS client with a certificate
the CA signed gets in; one without TLS does not."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from dicom_node.config import Settings
from dicom_node.receive.ingest import Ingestor
from dicom_node.spool import Spool
from dicom_node.store.database import Database
from tests.node_helpers import free_port, write_series

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not shutil.which("openssl"), reason="openssl missing"),
]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def pki(tmp_path):
    d = tmp_path / "pki"
    d.mkdir()
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        str(d / "ca.key"),
        "-out",
        str(d / "ca.pem"),
    )
    for name in ("server", "client"):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(d / f"{name}.key"),
            "-out",
            str(d / f"{name}.csr"),
        )
        ext = d / f"{name}.ext"
        ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            str(d / f"{name}.csr"),
            "-CA",
            str(d / "ca.pem"),
            "-CAkey",
            str(d / "ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            str(ext),
            "-out",
            str(d / f"{name}.pem"),
        )
    return d


def test_tls_association_stores_and_plain_one_fails(tmp_path, pki):
    from dicom_node.receive.scp import StorageSCP

    port = free_port()
    s = Settings.model_validate(
        {
            "node": {
                "host": "127.0.0.1",
                "port": port,
                "data_dir": str(tmp_path / "data"),
                "tls_cert": str(pki / "server.pem"),
                "tls_key": str(pki / "server.key"),
                "tls_ca": str(pki / "ca.pem"),
                "acse_timeout": 5,
                "network_timeout": 5,
                # tests/run.sh runs this once more with the fast path off
                "fast_receive": os.environ.get("SRNODE_NODE__FAST_RECEIVE", "true"),
            },
            "allow": [{"ae_title": "PACS", "host": "127.0.0.1"}],
        }
    )
    db = Database.from_settings(s)
    db.create_or_migrate()
    scp = StorageSCP(s, Ingestor(db, Spool(tmp_path / "data" / "spool")))
    scp.start()
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.pem"))
        ctx.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
        ae = AE(ae_title="PACS")
        ae.acse_timeout = ae.network_timeout = 5
        ae.add_requested_context(Verification)
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", port, ae_title="SRNODE", tls_args=(ctx, "localhost"))
        assert assoc.is_established
        _, _, files = write_series(tmp_path / "ct", "CT_small.dcm", 1)
        st = assoc.send_c_store(files[0])
        assert st.Status == 0x0000
        assoc.release()
        # what the spool holds: the bytes as sent, behind a valid file meta
        (stored,) = (tmp_path / "data" / "spool").rglob("*.dcm")
        back = pydicom.dcmread(stored)
        src = pydicom.dcmread(files[0])
        assert back.file_meta.SourceApplicationEntityTitle == "PACS"
        assert back.file_meta.MediaStorageSOPInstanceUID == src.SOPInstanceUID
        assert back.PixelData == src.PixelData and back.SOPInstanceUID == src.SOPInstanceUID
        plain = ae.associate("127.0.0.1", port, ae_title="SRNODE")
        assert not plain.is_established
    finally:
        scp.stop(drain=1)
        db.close()

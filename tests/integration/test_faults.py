"""Fault tests of a real ``srnode serve`` on loopback: parallel associations, kill -9 in the
middle of an association, a full disk, malformed instances, a long destination outage,
and patient data that must stay inside the DICOM files.

Each test prints one ``FAULT`` line with its counts (sent, acknowledged, stored,
delivered, lost, duplicated, statuses). Delivered instances are counted at a dcmtk
storescp writing unique file names, so a duplicate delivery shows as a second file.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import struct
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.node_helpers import (
    SRNODE,
    STORESCP,
    STORESCU,
    Proc,
    free_port,
    nodelay_env,
    wait_for,
    wait_port,
    write_config,
    write_series,
)
from tests.onnx_models import write_test_model

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not all(os.path.exists(p) for p in (STORESCU, STORESCP)), reason="dcmtk missing"
    ),
]


# --------------------------------------------------------------------------- helpers
def _dest(port: int, **kw) -> dict:
    d = {"name": "DEST", "ae_title": "DEST", "host": "127.0.0.1", "port": port}
    d.update(kw)
    return d


def _storescp(out: Path, port: int, log: Path) -> Proc:
    """dcmtk storescp that writes every instance it receives to its own file (+uf)."""
    out.mkdir(parents=True, exist_ok=True)
    p = Proc([STORESCP, "-aet", "DEST", "-od", str(out), "+uf", "+xa", str(port)], log)
    wait_port(port, 20, p)
    return p


def _delivered(out: Path) -> Counter:
    """Source SOPInstanceUID -> how many derived instances of it arrived."""
    got: Counter = Counter()
    for f in sorted(out.glob("*")):
        if f.is_file():
            with contextlib.suppress(Exception):
                ds = pydicom.dcmread(f, stop_before_pixels=True)
                got[str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID)] += 1
    return got


def _stored(data: Path) -> set[str]:
    db = data / "srnode.db"
    if not db.exists():
        return set()
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return {u for (u,) in con.execute("SELECT sop_uid FROM instances")}
    finally:
        con.close()


def _status(cfg: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SRNODE, "status", "--config", str(cfg), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _queue(cfg: Path) -> dict:
    r = _status(cfg, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["queue"]


def _report(name: str, sent, acked, stored, delivered: Counter, statuses: Counter) -> dict:
    acked = set(acked)
    lost = acked - {u for u in delivered if delivered[u]}
    dup = sum(n - 1 for n in delivered.values() if n > 1)
    counts = {
        "sent": len(sent),
        "acknowledged": len(acked),
        "stored": len(stored),
        "delivered": len(delivered),
        "lost": len(lost),
        "duplicated": dup,
        "statuses": {
            ("no response" if k < 0 else f"0x{k:04X}"): v for k, v in sorted(statuses.items())
        },
    }
    print(f"FAULT {name}: {json.dumps(counts)}")
    return counts


class _Sender:
    """A pynetdicom SCU that sends files as they are on disk (no decoding, so malformed
    ones go out byte for byte) and records each response status."""

    def __init__(self, port: int, aet: str = "PACS") -> None:
        from pynetdicom import AE, _config
        from pynetdicom.sop_class import CTImageStorage, MRImageStorage

        _config.STORE_SEND_CHUNKED_DATASET = True  # the file's own bytes
        self.ae = AE(ae_title=aet)
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = 30
        for cx in (CTImageStorage, MRImageStorage):
            self.ae.add_requested_context(cx, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        self.port = port

    def send(self, files: list[Path], on_ack=None) -> dict[str, int | None]:
        """SOPInstanceUID -> status (None: no response, the association is gone)."""
        out: dict[str, int | None] = {}
        assoc = self.ae.associate("127.0.0.1", self.port, ae_title="SRNODE")
        assert assoc.is_established, "association not established"
        try:
            for f in files:
                sop = str(pydicom.dcmread(f, stop_before_pixels=True, force=True).SOPInstanceUID)
                if not assoc.is_established:
                    out[sop] = None
                    continue
                try:
                    st = assoc.send_c_store(f)
                except Exception:
                    out[sop] = None
                    continue
                out[sop] = int(st.Status) if "Status" in st else None
                if on_ack is not None and out[sop] == 0:
                    on_ack(out)
        finally:
            if assoc.is_established:
                assoc.release()
        return out


@pytest.fixture
def model_card(tmp_path):
    return write_test_model(tmp_path / "models")


def _config(tmp_path: Path, port: int, card: Path, dest: dict, data: Path, extra: str = ""):
    return write_config(
        tmp_path / "srnode.toml",
        data_dir=data,
        port=port,
        model_card=card,
        destinations=[dest],
        stable_age=1.0,
        extra=extra,
    )


# --------------------------------------------------------------------------- tests
def test_eight_concurrent_associations_lose_and_duplicate_nothing(
    tmp_path, srnode_node, model_card
):
    port, dport = free_port(), free_port()
    data = tmp_path / "data"
    cfg = _config(tmp_path, port, model_card, _dest(dport), data)
    series = [write_series(tmp_path / f"in{i}", count=25) for i in range(8)]
    scp = _storescp(tmp_path / "out", dport, tmp_path / "storescp.log")
    node = srnode_node(tmp_path / "node.log", "--config", str(cfg))
    try:
        results: list[subprocess.CompletedProcess] = []

        def send(files: list[Path]) -> None:
            results.append(
                subprocess.run(
                    [STORESCU, "-v", "-aet", "PACS", "-aec", "SRNODE", "127.0.0.1", str(port)]
                    + [str(f) for f in files],
                    env=nodelay_env(),
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
            )

        threads = [threading.Thread(target=send, args=(s[2],)) for s in series]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        sent = {str(pydicom.dcmread(f).SOPInstanceUID) for s in series for f in s[2]}
        text = "".join(r.stdout + r.stderr for r in results)
        acked_n = text.count("Received Store Response (Success)")
        assert all(r.returncode == 0 for r in results), text[-2000:]
        wait_for(lambda: _queue(cfg)["done"] == 8, 300, interval=1, what="8 jobs done")
        delivered = _delivered(tmp_path / "out")
        c = _report(
            "8 concurrent associations",
            sent,
            sent if acked_n == len(sent) else set(),
            _stored(data),
            delivered,
            Counter({0: acked_n}),
        )
        assert c["acknowledged"] == c["stored"] == c["delivered"] == 200
        assert c["lost"] == c["duplicated"] == 0
        assert set(delivered) == sent
    finally:
        node.close()
        scp.close()


def test_kill_9_mid_association_acknowledged_are_stored_and_processed_once(
    tmp_path, srnode_node, model_card
):
    port, dport = free_port(), free_port()
    data = tmp_path / "data"
    cfg = _config(tmp_path, port, model_card, _dest(dport), data)
    _, _, files = write_series(tmp_path / "in", count=150)
    scp = _storescp(tmp_path / "out", dport, tmp_path / "storescp.log")
    node = srnode_node(tmp_path / "node1.log", "--config", str(cfg))
    killed = threading.Event()

    def kill_after_30(out: dict) -> None:
        if not killed.is_set() and sum(1 for v in out.values() if v == 0) >= 30:
            killed.set()
            node.kill9()

    try:
        statuses = _Sender(port).send(files, on_ack=kill_after_30)
        assert killed.is_set()
        acked = {u for u, st in statuses.items() if st == 0}
        assert 30 <= len(acked) < 150
        stored_after_kill = _stored(data)
        assert acked <= stored_after_kill  # every acknowledged instance is on disk
        node = srnode_node(tmp_path / "node2.log", "--config", str(cfg))
        wait_for(lambda: _queue(cfg)["done"] >= 1, 300, interval=1, what="job done")
        wait_for(lambda: _queue(cfg)["processing"] + _queue(cfg)["exporting"] == 0, 120, interval=1)
        stored = _stored(data)
        delivered = _delivered(tmp_path / "out")
        c = _report(
            "kill -9 mid-association",
            statuses,
            acked,
            stored,
            delivered,
            Counter(-1 if v is None else v for v in statuses.values()),
        )
        assert acked <= stored
        assert set(delivered) == stored  # every stored instance processed...
        assert c["duplicated"] == 0 and c["lost"] == 0  # ...and delivered once
    finally:
        node.close()
        scp.close()


def _mount_tmpfs(where: Path, size_mb: int) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    return r.returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="a small tmpfs needs root (CI runs as root)")
def test_full_disk_refuses_with_a700_recovers_and_loses_nothing(tmp_path, srnode_node, model_card):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, 96):
        pytest.skip("cannot mount a tmpfs here (no CAP_SYS_ADMIN)")
    try:
        port, dport = free_port(), free_port()
        data = disk / "data"
        cfg = _config(
            tmp_path, port, model_card, _dest(dport), data, "[storage]\nmin_free_gb = 0.04\n"
        )
        scp = _storescp(tmp_path / "out", dport, tmp_path / "storescp.log")
        node = srnode_node(tmp_path / "node.log", "--config", str(cfg))
        sender = _Sender(port)
        _, _, before = write_series(tmp_path / "a", count=5)
        _, _, during = write_series(tmp_path / "b", count=5)
        _, _, after = write_series(tmp_path / "c", count=5)
        statuses: Counter = Counter()
        acked: set[str] = set()
        try:
            # an association opened while there is space...
            from pynetdicom import AE

            first = sender.send(before)
            statuses.update(first.values())
            acked |= {u for u, s in first.items() if s == 0}
            ae: AE = sender.ae
            assoc = ae.associate("127.0.0.1", port, ae_title="SRNODE")
            assert assoc.is_established
            # ...then the disk fills up to below the 40 MB reserve
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            filler = disk / "filler"
            with open(filler, "wb") as fh:
                fh.write(b"\0" * max(0, free - 20 * 1024 * 1024))
            time.sleep(1.0)  # the node looks at the disk at most every 0.5 s
            during_st = {}
            for f in during:
                st = assoc.send_c_store(f)
                during_st[str(pydicom.dcmread(f).SOPInstanceUID)] = int(st.Status)
            assoc.release()
            statuses.update(during_st.values())
            assert set(during_st.values()) == {0xA700}
            refused = ae.associate("127.0.0.1", port, ae_title="SRNODE")
            assert refused.is_rejected
            assert "disk reserve reached" in node.text()
            status_text = _status(cfg).stdout
            assert "REFUSING new instances" in status_text
            # space is back: the node takes instances again
            filler.unlink()
            time.sleep(1.0)
            last = sender.send(after)
            statuses.update(last.values())
            acked |= {u for u, s in last.items() if s == 0}
            assert len(acked) == 10
            wait_for(lambda: _queue(cfg)["done"] == 2, 300, interval=1, what="2 jobs done")
            delivered = _delivered(tmp_path / "out")
            sent = [*before, *during, *after]
            c = _report("full disk", sent, acked, _stored(data), delivered, statuses)
            assert c["lost"] == c["duplicated"] == 0 and c["delivered"] == 10
            assert _stored(data) == acked  # nothing refused was kept
        finally:
            node.close()
            scp.close()
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# --------------------------------------------------------------------------- malformed
def _part10(ds: pydicom.Dataset, path: Path) -> bytes:
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def _with_element_before(raw: bytes, before: bytes, element: bytes) -> bytes:
    glen = struct.unpack("<I", raw[140:144])[0]
    at = raw.index(before, 144 + glen)
    return raw[:at] + element + raw[at:]


def _replace_pn(raw: bytes, vr: bytes, value: bytes) -> bytes:
    glen = struct.unpack("<I", raw[140:144])[0]
    at = raw.index(b"\x10\x00\x10\x00PN", 144 + glen)
    (length,) = struct.unpack_from("<H", raw, at + 6)
    elem = struct.pack("<HH2sH", 0x0010, 0x0010, vr, len(value)) + value
    return raw[:at] + elem + raw[at + 8 + length :]


def _malformed(tmp: Path) -> dict[str, Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    ct = get_testdata_file("CT_small.dcm")
    out: dict[str, Path] = {}

    p = tmp / "ob.dcm"
    raw = _part10(pydicom.dcmread(ct), p)
    bad = struct.pack("<HH2sHL", 0x0029, 0x1010, b"OB", 0, 0xFFFFFFF0)
    p.write_bytes(_with_element_before(raw, b"\xe0\x7f\x10\x00", bad))
    out["private OB declaring 0xFFFFFFF0 bytes"] = p

    p = tmp / "nopixels.dcm"
    ds = pydicom.dcmread(ct)
    del ds.PixelData
    _part10(ds, p)
    out["CT without Pixel Data"] = p

    p = tmp / "zero.dcm"
    ds = pydicom.dcmread(ct)
    ds.Rows = ds.Columns = 0
    _part10(ds, p)
    out["Rows = Columns = 0"] = p

    p = tmp / "fd.dcm"
    raw = _part10(pydicom.dcmread(ct), p)
    p.write_bytes(_replace_pn(raw, b"FD", b"Probe^Secret"))
    out["PatientName with VR FD"] = p
    return out


def test_malformed_instances_are_refused_with_a_reason_and_nothing_is_stored(
    tmp_path, srnode_node, model_card
):
    port, dport = free_port(), free_port()
    data = tmp_path / "data"
    cfg = _config(tmp_path, port, model_card, _dest(dport), data)
    files = _malformed(tmp_path / "bad")
    node = srnode_node(tmp_path / "node.log", "--config", str(cfg))
    try:
        statuses = {}
        for name, f in files.items():
            (st,) = _Sender(port).send([f]).values()
            statuses[name] = st
        c = _report(
            "malformed instances",
            files,
            {u for u in statuses if statuses[u] == 0},
            _stored(data),
            Counter(),
            Counter(statuses.values()),
        )
        print("FAULT malformed statuses:", {k: f"0x{v:04X}" for k, v in statuses.items()})
        assert all(0xC000 <= st <= 0xCFFF for st in statuses.values()), statuses
        assert c["stored"] == 0 and not list((data / "spool").rglob("*.dcm"))
        log = node.text()
        for f in files.values():
            sop = str(pydicom.dcmread(f, stop_before_pixels=True, force=True).SOPInstanceUID)
            assert f"refused instance sop={sop}" in log
        assert "Probe^Secret" not in log
    finally:
        node.close()


def test_a_destination_down_longer_than_the_old_budget_then_gets_it_once(
    tmp_path, srnode_node, model_card
):
    """The old default gave up after 8 attempts (with these timings, within ~6 s); the
    destination stays down past 10 attempts and then gets every instance exactly once."""
    port, dport = free_port(), free_port()
    data = tmp_path / "data"
    dest = _dest(dport, backoff_initial=0.2, backoff_max=1.0, probe_every=1.0)
    cfg = _config(tmp_path, port, model_card, dest, data)
    _, _, files = write_series(tmp_path / "in", count=3)
    node = srnode_node(tmp_path / "node.log", "--config", str(cfg))
    scp = None
    try:
        statuses = _Sender(port).send(files)
        acked = {u for u, s in statuses.items() if s == 0}

        def attempts() -> int:
            ex = json.loads(_status(cfg, "--json").stdout)["exports"]
            return ex[0]["attempts"] if ex and ex[0]["state"] == "pending" else 0

        wait_for(lambda: attempts() >= 10, 120, interval=0.5, what="10 failed attempts")
        assert "connection refused by 127.0.0.1" in node.text()
        assert "association aborted" not in node.text()
        scp = _storescp(tmp_path / "out", dport, tmp_path / "storescp.log")
        wait_for(lambda: _queue(cfg)["done"] == 1, 120, interval=0.5, what="job done")
        delivered = _delivered(tmp_path / "out")
        c = _report(
            "destination down past the old budget",
            files,
            acked,
            _stored(data),
            delivered,
            Counter(statuses.values()),
        )
        assert c["delivered"] == 3 and c["lost"] == c["duplicated"] == 0
        assert "ERROR pynetdicom" not in node.text()
    finally:
        node.close()
        if scp is not None:
            scp.close()


# --------------------------------------------------------------------------- PHI
def _phi_variants(tmp: Path, tag: str) -> tuple[list[Path], list[str]]:
    """Instances whose PatientName / PatientID are valid, malformed, of the wrong VR and
    over-long; the markers that must never leave the DICOM files."""
    tmp.mkdir(parents=True, exist_ok=True)
    ct = get_testdata_file("CT_small.dcm")
    study = generate_uid()
    series = generate_uid()
    files, markers = [], []

    def base() -> pydicom.Dataset:
        ds = pydicom.dcmread(ct)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        return ds

    m = f"Phimarkvalid{tag}"
    ds = base()
    ds.PatientName, ds.PatientID = f"{m}^Jane", f"PHIIDVALID{tag}"
    files.append(tmp / "valid.dcm")
    _part10(ds, files[-1])
    markers += [m, f"PHIIDVALID{tag}"]

    m = f"Phimarkbad{tag}"
    ds = base()
    ds.PatientName = f"{m}^a^b^c^d^e^f"
    ds.PatientID = f"PHIIDBAD{tag}\\x"
    files.append(tmp / "malformed.dcm")
    _part10(ds, files[-1])
    markers += [m, f"PHIIDBAD{tag}"]

    m = f"Phimarkvr{tag}"
    ds = base()
    ds.PatientID = f"PHIIDVR{tag}"
    files.append(tmp / "wrongvr.dcm")
    raw = _part10(ds, files[-1])
    value = m.encode() + b"^J"
    value += b"x" * (len(value) % 8 == 0)  # not a whole number of doubles
    files[-1].write_bytes(_replace_pn(raw, b"FD", value))
    markers += [m, f"PHIIDVR{tag}"]

    m = f"Phimarklong{tag}"
    ds = base()
    ds.PatientName = m + "x" * 120
    ds.PatientID = f"PHIIDLONG{tag}" + "9" * 80
    files.append(tmp / "long.dcm")
    _part10(ds, files[-1])
    markers += [m, f"PHIIDLONG{tag}"]
    return files, markers


def _stow(web_port: int, files: list[Path]) -> int:
    import requests

    boundary = uuid.uuid4().hex
    body = (
        b"".join(
            b"--"
            + boundary.encode()
            + b"\r\nContent-Type: application/dicom\r\n\r\n"
            + f.read_bytes()
            + b"\r\n"
            for f in files
        )
        + b"--"
        + boundary.encode()
        + b"--\r\n"
    )
    r = requests.post(
        f"http://127.0.0.1:{web_port}/dicom-web/studies",
        data=body,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
        },
        timeout=60,
    )
    return r.status_code


def test_patient_data_never_leaves_the_dicom_files(tmp_path, srnode_node, model_card):
    import requests

    port, dport, wport = free_port(), free_port(), free_port()
    data = tmp_path / "data"
    cfg = _config(tmp_path, port, model_card, _dest(dport), data)
    dimse_files, m1 = _phi_variants(tmp_path / "dimse", "D")
    stow_files, m2 = _phi_variants(tmp_path / "stow", "S")
    markers = m1 + m2
    scp = _storescp(tmp_path / "out", dport, tmp_path / "storescp.log")
    env = nodelay_env({"SRNODE_WEB__ENABLED": "true", "SRNODE_WEB__PORT": str(wport)})
    node = srnode_node(tmp_path / "node.log", "--config", str(cfg), env=env)
    try:
        wait_port(wport, 30)
        statuses = _Sender(port).send(dimse_files)
        http = _stow(wport, stow_files)
        acked = {u for u, s in statuses.items() if s == 0}
        wait_for(
            lambda: (
                (q := _queue(cfg))["done"] + q["failed"] + q["skipped"] >= 2
                and q["queued"] + q["processing"] + q["exporting"] + q["received"] == 0
            ),
            300,
            interval=1,
            what="both series settled",
        )
        time.sleep(1.5)  # a last scheduler tick and WAL write
        texts = {
            "node log": node.text(),
            "storescp log": (tmp_path / "storescp.log").read_text(errors="replace"),
            "srnode status": _status(cfg).stdout,
            "srnode status --json": _status(cfg, "--json").stdout,
            "console page": requests.get(f"http://127.0.0.1:{wport}/", timeout=30).text,
            "/api/status": requests.get(f"http://127.0.0.1:{wport}/api/status", timeout=30).text,
        }
        blobs = {p.name: p.read_bytes() for p in data.glob("srnode.db*")}
        assert "srnode.db" in blobs
        leaks = [
            (where, m) for m in markers for where, t in texts.items() if m.lower() in t.lower()
        ] + [
            (name, m)
            for m in markers
            for name, b in blobs.items()
            if m.lower().encode() in b.lower()
        ]
        _report(
            "PHI grep (DIMSE part)",
            dimse_files,
            acked,
            _stored(data),
            _delivered(tmp_path / "out"),
            Counter(statuses.values()),
        )
        print(
            f"FAULT PHI grep: STOW HTTP {http}; places searched {sorted(texts) + sorted(blobs)};"
            f" markers {len(markers)}; leaks {leaks}"
        )
        assert leaks == []
    finally:
        node.close()
        scp.close()

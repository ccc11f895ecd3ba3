"""dicom_node.compat against the installed pydicom and pynetdicom: every internal in its
table exists as written, and the behaviour the node builds on holds, with real associations
from dcmtk's echoscu and a real Part-10 file. A library upgrade that changes one of them
fails here, naming it."""

from __future__ import annotations

import importlib
import inspect
import io
import socket
import subprocess
import threading

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.filereader import read_dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from dicom_node import compat
from tests.node_helpers import ECHOSCU, free_port, nodelay_env


def _instance(kind: str, ae: AE) -> object:
    assoc = Association(ae, "requestor")
    return {
        "ApplicationEntity": ae,
        "Association": assoc,
        "DULServiceProvider": assoc.dul,
    }.get(kind)


@pytest.mark.parametrize("internal", compat.INTERNALS, ids=lambda i: f"{i.owner}.{i.name}")
def test_every_internal_is_there_as_written(internal):
    module, owner_name, name, want, user = internal
    assert hasattr(compat, user), f"{user} (which relies on {name}) is gone from compat"
    mod = importlib.import_module(module)
    owner = getattr(mod, owner_name) if owner_name else mod
    if want == "attribute":
        obj = _instance(owner_name, AE())
        if obj is None:  # the socket's own attribute: seen on a live one below
            assert name in inspect.getsource(owner.__init__), f"{owner_name}.{name} is gone"
        else:
            assert hasattr(obj, name), f"{owner_name}.{name} is gone"
        return
    assert name in vars(owner), f"{module}.{owner_name}.{name} is gone"
    if want == "property":
        assert isinstance(vars(owner)[name], property), f"{owner_name}.{name} is no property"
        return
    params = inspect.signature(getattr(owner, name)).parameters
    assert f"({', '.join(params)})" == want, f"{name} changed its parameters"


def test_read_file_meta_leaves_the_stream_at_the_data_set():
    with open(get_testdata_file("CT_small.dcm"), "rb") as f:
        raw = f.read()
    fp = io.BytesIO(raw)
    fp.seek(132)
    meta = compat.read_file_meta(fp)
    whole = dcmread(io.BytesIO(raw))
    assert meta.TransferSyntaxUID == whole.file_meta.TransferSyntaxUID
    ds = read_dataset(fp, False, True)
    assert ds.SOPInstanceUID == whole.SOPInstanceUID


class _Recording(compat.NegotiatingAE):
    """Accepts one calling AE title; records what it saw while negotiating."""

    def __init__(self) -> None:
        super().__init__(ae_title="COMPAT")
        self.seen: list[tuple[str, bool, str | None]] = []
        self.limit = 5
        self.nodelay: list[int] = []

    def accepts(self, assoc, calling_ae):
        threaded = compat.negotiating_association() is assoc
        self.seen.append((calling_ae, threaded, assoc.requestor.address))
        return calling_ae == "GOOD"

    def association_limit(self, assoc, configured):
        assert configured == 7 and compat.negotiating_association() is assoc
        return self.limit


def _echo(port: int, calling: str) -> int:
    cmd = [ECHOSCU, "-aet", calling, "-aec", "COMPAT", "127.0.0.1", str(port)]
    return subprocess.run(cmd, capture_output=True, env=nodelay_env(), timeout=30).returncode


def test_negotiation_hooks_socket_and_server_shutdown_with_real_associations():
    ae = _Recording()
    ae.maximum_associations = 7
    assert ae.maximum_associations == 7  # outside a negotiation: pynetdicom's own value
    ae.add_supported_context(Verification)

    def on_open(event):
        s = compat.association_socket(event.assoc)
        assert isinstance(s, socket.socket)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ae.nodelay.append(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    port = free_port()
    server = ae.make_server(
        ("127.0.0.1", port),
        evt_handlers=[(evt.EVT_CONN_OPEN, on_open)],
        server_class=compat.OwnedServer,
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert _echo(port, "GOOD") == 0
        assert _echo(port, "BAD") != 0  # rejected: calling AE title not recognised
        ae.limit = 0
        assert _echo(port, "GOOD") != 0  # rejected: no association allowed now
    finally:
        server.shutdown()  # no ValueError: the AE did not start it
    # asked in the association's own thread, for every association
    assert {s[:2] for s in ae.seen} == {("GOOD", True), ("BAD", True)}
    assert ae.seen[0][2] == "127.0.0.1"
    assert ae.nodelay and all(ae.nodelay)


def test_pynetdicom_still_raises_on_shutting_down_a_server_it_did_not_start():
    """Why OwnedServer exists: if pynetdicom stops raising here, it can go."""
    ae = AE()
    ae.add_supported_context(Verification)
    server = ae.make_server(("127.0.0.1", free_port()), server_class=ThreadedAssociationServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with pytest.raises(ValueError):
        server.shutdown()


def test_no_private_name_of_either_library_is_imported_elsewhere():
    """Outside compat.py and the fast path, srnode imports only public names of pydicom and
    pynetdicom (before, instance_input.py imported pydicom's _read_file_meta_info), and
    subclasses no pynetdicom class (before, access.py and scp.py did)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    allowed = {"dicom_node/compat.py"} | {
        f"dicom_node/receive/fastpath{part}.py" for part in ("", "_dul", "_reactor")
    }
    found = []
    for path in sorted((root / "dicom_node").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel in allowed:
            continue
        tree = ast.parse(path.read_text())
        pynetdicom_names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in {
                "pydicom",
                "pynetdicom",
            }:
                private = [a.name for a in node.names if a.name.startswith("_")]
                private += [p for p in (node.module or "").split(".") if p.startswith("_")]
                found += [f"{rel}: {node.module}.{n}" for n in private]
                if node.module.startswith("pynetdicom"):
                    pynetdicom_names |= {a.asname or a.name for a in node.names}
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
                found += [f"{rel}: class {node.name}({b})" for b in bases & pynetdicom_names]
    assert not found, found

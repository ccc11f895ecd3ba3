"""The web layer under broken clients, over real HTTP (uvicorn): a body that stalls gets 408,
a client that goes away mid-body is one log line, neither leaves a traceback."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from dicom_node.config import Settings
from dicom_node.web import app as web_app
from tests import node_helpers as nh


@pytest.fixture
def server(tmp_path, monkeypatch, caplog):
    import uvicorn

    monkeypatch.setattr(web_app, "BODY_READ_TIMEOUT", 1.0)
    settings = Settings.model_validate({"node": {"data_dir": str(tmp_path / "data")}})
    stored: list = []
    app = web_app.create_app(settings, lambda *a, **k: stored.append(a) or 0, None)
    port = nh.free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    srv.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    nh.wait_port(port, 30)
    yield port, stored
    srv.should_exit = True
    thread.join(10)


STOW_HEAD = (
    "POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
    "Content-Length: 100000\r\n\r\n"
)


def _records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(("dicom_node", "uvicorn"))]


@pytest.mark.slow
def test_a_stalled_body_gets_408(server, caplog):
    port, stored = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(STOW_HEAD.encode() + b"--b\r\nContent-Type: application/dicom\r\n\r\nDICM")
        reply = s.recv(4096).decode(errors="replace")
    assert reply.startswith("HTTP/1.1 408") and stored == []
    assert not any(r.exc_info for r in _records(caplog))


@pytest.mark.slow
def test_a_client_gone_mid_body_is_one_line(server, caplog):
    port, stored = server
    caplog.set_level(logging.INFO, logger="dicom_node")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(STOW_HEAD.encode() + b"--b\r\nContent-Type: application/dicom\r\n\r\n")
    nh.wait_for(
        lambda: any("client went away" in r.getMessage() for r in caplog.records), 10,
        what="the disconnect line",
    )  # fmt: skip
    time.sleep(0.5)
    lines = [r for r in _records(caplog) if "POST /dicom-web/studies" in r.getMessage()]
    assert len(lines) == 1 and stored == []
    assert not any(r.exc_info for r in _records(caplog))

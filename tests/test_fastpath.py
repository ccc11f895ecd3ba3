"""The pynetdicom fast path is written against one pynetdicom release: every name it uses or
replaces must exist there with the signature it was written for, and on any other release it
must stay off (stock pynetdicom) and say so."""

from __future__ import annotations

import importlib
import inspect
import logging

import pynetdicom
import pytest
from pynetdicom import AE
from pynetdicom.association import Association

from dicom_node.receive import fastpath


def test_the_pinned_release_is_installed():
    # pyproject.toml pins it; a different one means the pin and PYNETDICOM drifted apart
    assert pynetdicom.__version__ == fastpath.PYNETDICOM


@pytest.mark.parametrize("target", sorted(fastpath.TARGETS), ids=".".join)
def test_every_patched_or_called_name_has_its_signature(target):
    module, cls, name = target
    owner = getattr(importlib.import_module(f"pynetdicom.{module}"), cls)
    assert name in vars(owner), f"{cls}.{name} is gone"
    params = inspect.signature(getattr(owner, name)).parameters
    assert f"({', '.join(params)})" == fastpath.TARGETS[target]


def test_every_instance_attribute_it_reads_exists():
    ae = AE()
    assoc = Association(ae, "requestor")
    objects = {
        "Association": assoc,
        "DULServiceProvider": assoc.dul,
        "DIMSEServiceProvider": assoc.dimse,
    }
    for kind, names in fastpath.ATTRIBUTES.items():
        missing = [n for n in names if not hasattr(objects[kind], n)]
        assert not missing, f"{kind} lacks {missing}"
    assert assoc.dul.state_machine.current_state == "Sta1"  # state names as written
    assert fastpath.DATA_TRANSFER in __import__("pynetdicom.fsm", fromlist=["x"]).STATES


def test_another_release_keeps_pynetdicom_stock(monkeypatch, caplog):
    monkeypatch.setattr(fastpath, "_installed", False)
    monkeypatch.setattr(pynetdicom, "__version__", "9.9.9")
    before = pynetdicom.transport.AssociationSocket.recv
    with caplog.at_level(logging.WARNING, logger="dicom_node.receive.fastpath"):
        assert fastpath.install() is False
    assert "fast path is off" in caplog.text
    assert pynetdicom.transport.AssociationSocket.recv is before
    assert fastpath.scp_handlers(object(), 0) == []
    from dicom_node import net

    assert len(net.scu_handlers()) == 1 + len(net.SCU_HANDLERS)

"""Every internal of pydicom and pynetdicom that srnode relies on, outside the receive fast
path (which has its own table: :data:`dicom_node.receive.fastpath.TARGETS`), in one place.

:data:`INTERNALS` lists each one with the parameters it was written against and what here
uses it; ``tests/test_compat.py`` checks every entry against the installed releases (and
the behaviour the node depends on, with real associations), so a library upgrade that
changes one fails there, by name, instead of somewhere in the receive path. Everywhere else
the node uses the libraries' public API only.

* :func:`read_file_meta`: the file meta group of a Part-10 stream already past its preamble
  (pydicom's public ``read_file_meta_info`` takes a path and reads the preamble itself).
* :class:`NegotiatingAE`: pynetdicom reads ``AE.require_calling_aet`` and
  ``AE.maximum_associations`` in the requesting association's own thread while it
  negotiates; overriding the two properties lets the node decide per association (the
  calling AE title *and* the peer's address, the disk reserve).
* :func:`association_socket`: the TCP socket of an association (for TCP_NODELAY).
* :class:`OwnedServer`: pynetdicom's threaded server run by us; its ``shutdown`` ends by
  leaving the AE's list of the servers that ``AE.start_server`` started, which this one is
  not on.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any, BinaryIO, NamedTuple

from pydicom.dataset import FileMetaDataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.transport import ThreadedAssociationServer


class Internal(NamedTuple):
    """One internal: where it is, what it was when srnode was written against it (its
    parameters, or ``property`` / ``attribute``), and what here relies on it."""

    module: str
    owner: str  # a class in ``module``, or "" for a module-level function
    name: str
    written_as: str
    used_by: str


#: every third-party internal the node uses outside the receive fast path
INTERNALS: tuple[Internal, ...] = (
    Internal("pydicom.filereader", "", "_read_file_meta_info", "(fp)", "read_file_meta"),
    # the two properties pynetdicom's ACSE reads while negotiating, and the attribute the
    # stock getter returns
    Internal(
        "pynetdicom.ae", "ApplicationEntity", "require_calling_aet", "property", "NegotiatingAE"
    ),
    Internal(
        "pynetdicom.ae", "ApplicationEntity", "maximum_associations", "property", "NegotiatingAE"
    ),
    Internal(
        "pynetdicom.ae", "ApplicationEntity", "_maximum_associations", "attribute", "NegotiatingAE"
    ),
    Internal("pynetdicom.association", "Association", "dul", "attribute", "association_socket"),
    Internal("pynetdicom.dul", "DULServiceProvider", "socket", "attribute", "association_socket"),
    Internal(
        "pynetdicom.transport", "AssociationSocket", "socket", "attribute", "association_socket"
    ),
    Internal("pynetdicom.transport", "AssociationServer", "shutdown", "(self)", "OwnedServer"),
)


def read_file_meta(fp: BinaryIO) -> FileMetaDataset:
    """The file meta group read from ``fp`` (positioned after the 128-byte preamble and
    ``DICM``); ``fp`` is left at the first element of the data set."""
    from pydicom.filereader import _read_file_meta_info

    return _read_file_meta_info(fp)


def negotiating_association() -> Association | None:
    """The association whose negotiation is running in this thread, if any."""
    t = threading.current_thread()
    return t if isinstance(t, Association) else None


class NegotiatingAE(AE):
    """A pynetdicom AE that decides, per requesting association, whether its calling AE
    title is accepted (:meth:`accepts`) and how many associations it may join
    (:meth:`association_limit`). Subclasses override those two; outside a negotiation
    both properties behave as pynetdicom's own."""

    def accepts(self, assoc: Association, calling_ae: str) -> bool:
        """Whether ``assoc`` (calling AE title ``calling_ae``, stripped) may associate."""
        return True

    def association_limit(self, assoc: Association, configured: int) -> int:
        """How many associations may run as ``assoc`` asks (0: rejected, transient)."""
        return configured

    @property  # type: ignore[override]
    def maximum_associations(self) -> int:
        configured = self._maximum_associations
        assoc = negotiating_association()
        return configured if assoc is None else self.association_limit(assoc, configured)

    @maximum_associations.setter
    def maximum_associations(self, value: int) -> None:
        AE.maximum_associations.fset(self, value)  # type: ignore[attr-defined]

    @property  # type: ignore[override]
    def require_calling_aet(self) -> list[str]:
        assoc = negotiating_association()
        if assoc is None or assoc.requestor.primitive is None:
            return []
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()
        # an empty string never equals a calling AE title: pynetdicom then rejects with
        # result 0x01, source 0x01, reason 0x03 (calling AE title not recognised)
        return [calling] if self.accepts(assoc, calling) else [""]

    @require_calling_aet.setter
    def require_calling_aet(self, value: list[str]) -> None:  # pragma: no cover - unused
        pass


def association_socket(assoc: Any) -> socket.socket | None:
    """The TCP socket under an association (None once it is gone)."""
    return getattr(getattr(getattr(assoc, "dul", None), "socket", None), "socket", None)


class OwnedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, made with ``AE.make_server`` and run by us."""

    def shutdown(self) -> None:
        # pynetdicom's shutdown ends by leaving the AE's list of the servers it started
        # itself (AE.start_server); this one is not on it
        with contextlib.suppress(ValueError):
            super().shutdown()

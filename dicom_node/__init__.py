"""srnode's DICOM node: SCP/SCU, spool, database, scheduling, routing, derive, export, CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("srnode")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.1.0"

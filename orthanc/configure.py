"""Write a runnable copy of orthanc/orthanc.json: absolute paths and per-run overrides.

Orthanc resolves ``PythonScript`` and ``StorageDirectory`` against its working directory,
not the configuration file's, so run.sh and the tests start it from a copy written here.
Standard library only (run.sh calls it with the system python3).

    python3 orthanc/configure.py --storage DIR [--http-port N] [--dicom-port N]
        [--srnode HOST:PORT] [--srnode-stow URL] [--stable-age S] [--no-autoroute] > cfg.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def build(
    storage: str | Path,
    http_port: int | None = None,
    dicom_port: int | None = None,
    srnode: str | None = None,
    srnode_stow: str | None = None,
    stable_age: int | None = None,
    autoroute: bool = True,
    base: str | Path = HERE / "orthanc.json",
    autoroute_settings: dict | None = None,
    srnode_token: str | None = None,
) -> dict:
    """The configuration as a dict (see the module docstring for the arguments)."""
    cfg = json.loads(Path(base).read_text())
    storage = str(Path(storage).resolve())
    cfg["StorageDirectory"] = storage
    cfg["IndexDirectory"] = storage
    cfg["PythonScript"] = str(HERE / "autoroute.py")
    if http_port is not None:
        cfg["HttpPort"] = int(http_port)
    if dicom_port is not None:
        cfg["DicomPort"] = int(dicom_port)
    if stable_age is not None:
        cfg["StableAge"] = int(stable_age)
    if srnode:
        host, _, port = srnode.rpartition(":")
        entry = cfg["DicomModalities"]["SRNODE"]
        entry["Host"] = host or "127.0.0.1"
        entry["Port"] = int(port)
    if srnode_stow:
        # with srnode's web.token: HTTP Basic, any user name, the token as password
        server = [srnode_stow] + (["orthanc", srnode_token] if srnode_token else [])
        cfg.setdefault("DicomWeb", {}).setdefault("Servers", {})["SRNODE"] = server
    cfg.setdefault("SrnodeAutoroute", {})["Enable"] = bool(autoroute)
    cfg["SrnodeAutoroute"].update(autoroute_settings or {})
    return cfg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", required=True)
    p.add_argument("--http-port", type=int)
    p.add_argument("--dicom-port", type=int)
    p.add_argument("--srnode", help="HOST:PORT of srnode's Storage SCP (AE SRNODE)")
    p.add_argument(
        "--srnode-stow", help="srnode's DICOMweb root, e.g. http://127.0.0.1:8080/dicom-web/"
    )
    p.add_argument("--srnode-token", help="srnode's web.token (HTTP Basic password)")
    p.add_argument("--stable-age", type=int)
    p.add_argument("--no-autoroute", action="store_true")
    a = p.parse_args(argv)
    cfg = build(
        a.storage,
        a.http_port,
        a.dicom_port,
        a.srnode,
        a.srnode_stow,
        a.stable_age,
        autoroute=not a.no_autoroute,
        srnode_token=a.srnode_token,
    )
    json.dump(cfg, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Make the README's review screenshots: a head CT goes around the Orthanc -> srnode ->
Orthanc loop, then headless chromium photographs

  orthanc/review-explorer.png      Orthanc Explorer's study page: original + derived series
  orthanc/review-side-by-side.png  Orthanc's rendered previews of one slice, original and
                                   derived, at the same displayed size

    .venv/bin/python orthanc/screenshot.py [--model ct-x2|CARD.json|test] [--out orthanc]

Needs the venv (dev tool, not part of the Orthanc plugin), Debian's chromium, Orthanc and
dcmtk. The CT is InVesalius' Cranium example (invesalius-examples, GPL-2) when installed,
else pydicom's CT_small.
"""

from __future__ import annotations

import argparse
import html
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from tests import pacs_peers as peers  # noqa: E402
from tests.node_helpers import nodelay_env, start_node, write_config  # noqa: E402

CRANIUM = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def head_ct(out: Path, n: int = 3) -> list[Path]:
    """``n`` axial slices of a head CT as a new series (fresh UIDs)."""
    files = peers.write_phantom_series(out, "CT", n=n, size=128)
    if not CRANIUM.exists():
        return files
    from training.data.readers import read_inv3

    vol = read_inv3(CRANIUM)
    mid = vol.n_slices // 2
    dz, dy, dx = vol.spacing
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        img = vol.array[mid - n // 2 + i]
        ds.Rows, ds.Columns = img.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.PixelData = img.astype(np.uint16).tobytes()
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = 40, 120
        ds.PixelSpacing = [dy, dx]
        ds.SliceThickness = dz
        ds.ImagePositionPatient = [0.0, 0.0, i * dz]
        ds.SeriesDescription = "Head CT (Cranium example)"
        ds.save_as(f, enforce_file_format=True)
    return files


def chromium_png(url: str, png: Path, size: str) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", f"--user-data-dir={profile}", "--hide-scrollbars",
             "--virtual-time-budget=8000", f"--window-size={size}", f"--screenshot={png}", url],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="ct-x2")
    p.add_argument("--out", default=str(ROOT / "orthanc"))
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="srnode-shot-") as tmp:
        t = Path(tmp)
        if a.model == "test":
            from tests.onnx_models import write_test_model

            card = write_test_model(t / "models")
        else:
            from sr_engine.registry import resolve_model

            card = Path(resolve_model(a.model))
        files = head_ct(t / "ct")
        for f in files:  # one fresh study per run
            ds = pydicom.dcmread(f)
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(f, enforce_file_format=True)
        study = str(pydicom.dcmread(files[0]).StudyInstanceUID)
        node_port = peers.free_port()
        with peers.orthanc(t / "orthanc", stable_age=1, srnode=f"127.0.0.1:{node_port}") as o:
            dest = {"name": "ORTHANC", "ae_title": "ORTHANC", "host": "127.0.0.1",
                    "port": o.dicom_port}  # fmt: skip
            cfg = write_config(
                t / "srnode.toml", data_dir=t / "data", port=node_port, model_card=card,
                destinations=[dest], allow=[("ORTHANC", "127.0.0.1")], stable_age=1.0,
            )  # fmt: skip
            node = start_node(t / "node.log", "--config", str(cfg), env=nodelay_env())
            try:
                peers.storescu(o.dicom_port, files, "MODALITY", called_ae="ORTHANC", check=True)
                client = o.client()

                def both() -> list[dict] | None:
                    series = peers.find_series(client, study)
                    full = [s for s in series if len(s["Instances"]) == len(files)]
                    return series if len(series) == 2 and len(full) == 2 else None

                series = peers.wait_until(both, 600, interval=0.5, what="derived series")
            finally:
                node.close()
            series.sort(key=lambda s: "SR x" in s["MainDicomTags"].get("SeriesDescription", ""))
            (study_id,) = client.post_tools_find(
                json={"Level": "Study", "Query": {"StudyInstanceUID": study}}
            )
            chromium_png(
                f"{o.url}/app/explorer.html#study?uuid={study_id}",
                out / "review-explorer.png",
                "900,520",
            )
            cells = []
            for s in series:
                inst = sorted(
                    client.get_series_id_instances(s["ID"]),
                    key=lambda i: int(i["MainDicomTags"].get("InstanceNumber", 0)),
                )[len(files) // 2]
                tags = client.get_instances_id_simplified_tags(inst["ID"])
                label = html.escape(
                    f"{tags.get('SeriesDescription', '')} - {tags['Rows']}x{tags['Columns']}, "
                    f"{float(tags['PixelSpacing'].split(chr(92))[0]):.3f} mm"
                )
                cells.append(
                    f'<figure><img src="{o.url}/instances/{inst["ID"]}/preview">'
                    f"<figcaption>{label}</figcaption></figure>"
                )
            page = t / "side-by-side.html"
            page.write_text(
                "<!doctype html><html><body style='margin:0;background:#111;color:#eee;"
                "font:14px sans-serif;display:flex;gap:12px;padding:12px'>"
                "<style>img{width:420px;height:420px;image-rendering:auto;display:block}"
                "figure{margin:0}figcaption{padding:6px 0}</style>"
                + "".join(cells)
                + "</body></html>"
            )
            chromium_png(page.as_uri(), out / "review-side-by-side.png", "888,490")
    from PIL import Image

    for name in ("review-explorer.png", "review-side-by-side.png"):
        img = Image.open(out / name).convert("RGB")  # 256 colours keep the file small
        img.quantize(256, dither=Image.Dither.NONE).save(out / name, optimize=True)
        print(out / name, (out / name).stat().st_size, "bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Regenerate the calibration tiles the fidelity gate measures reduced precision on.

    python sr_engine/models/calibration/make_tiles.py --pyradiomics DIR

``DIR`` is the unpacked sdist of PyPI ``pyradiomics==3.0.1`` (BSD-3-Clause), fetched once
into a cache folder outside the repository::

    pip download --no-deps --no-binary pyradiomics --no-build-isolation pyradiomics==3.0.1
    tar xzf pyradiomics-3.0.1.tar.gz

Writes ``tiles.npz`` (one uint16 array per tile, stored values as a scanner writes them)
and ``tiles.json`` (what each tile is and its pixel facts) beside this script. Needs only
numpy. Only images stored at their native bit depth: an 8-bit template (Colin27) would
make one unit of rounding 0.4 % of the range, more than the MR gate's maximum.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def read_nrrd(path: Path) -> np.ndarray:
    """A gzip- or raw-encoded NRRD volume as (z, y, x)."""
    raw = path.read_bytes()
    head, _, body = raw.partition(b"\n\n")
    fields = {}
    for line in head.decode().splitlines()[1:]:
        if ": " in line and not line.startswith("#"):
            k, v = line.split(": ", 1)
            fields[k] = v
    dtype = {"short": "<i2", "unsigned short": "<u2", "int": "<i4", "uchar": "u1"}[fields["type"]]
    if fields.get("encoding") == "gzip":
        body = gzip.decompress(body)
    sizes = [int(v) for v in fields["sizes"].split()]
    return np.frombuffer(body, dtype).reshape(sizes[::-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pyradiomics", type=Path, required=True, help="unpacked sdist folder")
    args = ap.parse_args()
    data = args.pyradiomics / "data"
    lung = read_nrrd(data / "lung1_image.nrrd")  # HU, int16, 512x512x48, 0.57 mm
    brain = read_nrrd(data / "brain1_image.nrrd")  # contrast T1 MR, int16, 256x256x25
    brain2 = read_nrrd(data / "brain2_image.nrrd")  # another patient, 256x256x23
    src_py = "PyPI sdist pyradiomics==3.0.1, data/{} (BSD-3-Clause)"
    # stored as a scanner writes them: CT as 12-bit unsigned with intercept -1024 (the
    # volume spans -1024..3071 HU), the MR as 12-bit unsigned (0..3057)
    ct = (lung.astype(np.int32) + 1024).astype(np.uint16)
    tiles = {
        # chest CT: mediastinum + both lungs, and the chest wall with ribs and spine
        "ct_lung1_z24_mediastinum": (ct[24, 160:352, 160:352], src_py.format("lung1_image.nrrd")),
        "ct_lung1_z30_spine": (ct[30, 300:492, 160:352], src_py.format("lung1_image.nrrd")),
        "mr_brain1_z12": (
            brain[12, 32:224, 32:224].astype(np.uint16),
            src_py.format("brain1_image.nrrd"),
        ),
        "mr_brain2_z11": (
            brain2[11, 32:224, 32:224].astype(np.uint16),
            src_py.format("brain2_image.nrrd"),
        ),
    }
    meta = {
        "ct": {
            "modality": "CT",
            "bits_stored": 12,
            "pixel_representation": 0,
            "rescale_intercept": -1024.0,
        },
        "mr": {"modality": "MR", "bits_stored": 12, "pixel_representation": 0},
    }
    arrays, index = {}, []
    for name, (a, source) in tiles.items():
        m = meta.get(name, meta[name.split("_", 1)[0]])
        arrays[name] = np.ascontiguousarray(a)
        index.append(
            {
                "name": name,
                "shape": list(a.shape),
                "dtype": str(a.dtype),
                "source": source,
                "rescale_slope": 1.0,
                "rescale_intercept": 0.0,
                **m,
            }
        )
    np.savez_compressed(HERE / "tiles.npz", **arrays)
    (HERE / "tiles.json").write_text(json.dumps(index, indent=2) + "\n")
    size = (HERE / "tiles.npz").stat().st_size
    print(f"wrote {len(index)} tiles, {size / 1024:.0f} KiB: {', '.join(arrays)}")


if __name__ == "__main__":
    main()

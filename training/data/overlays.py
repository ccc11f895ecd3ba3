"""What a real projection radiograph holds besides anatomy, drawn into the DRRs.

Real CR/DX images carry sharp man-made edges that a CT projection never has, and they are
where a super-resolution network earns most over interpolation:

* **collimation**: the X-ray field is a rectangle (turned by a few degrees) set by lead
  blades; outside it only scatter reaches the detector. Drawn as extra attenuation
  outside the field, its edge blurred by the focal spot's penumbra;
* **lead markers**: side markers ("L", "R", often mirrored when read from the back) and
  position markers taped to the cassette, nearly opaque, sharp-edged, some 5-15 mm tall;
* **burned-in text and electronic shutters**: added by the modality after the image is
  formed, so they are exact stored values (the top or the bottom of the range) with no
  blur and no noise.

Letters are drawn from the outlines of matplotlib's bundled DejaVu Sans (no font is
downloaded), supersampled 4x and averaged, so their edges carry partial-pixel coverage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MARKERS = ("L", "R", "PA", "AP", "LAT", "ERECT", "SUPINE", "1", "2", "3")
TEXT = ("L", "R", "AP", "PA", "LAT", "SUPINE", "ERECT", "CHEST", "KNEE", "HAND", "x1.0", "DX")
SUPERSAMPLE = 4


def glyph_mask(
    text: str, height: float, shape: tuple[int, int], centre: tuple[float, float],
    angle_deg: float = 0.0, mirror: bool = False,
) -> np.ndarray:  # fmt: skip
    """Coverage in [0, 1] of ``text`` written ``height`` pixels tall at ``centre`` (row,
    col) of an image of ``shape``, turned by ``angle_deg``, mirrored left-right if asked."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    path = TextPath((0, 0), text, size=1.0, prop=FontProperties(family="DejaVu Sans"))
    verts = path.vertices.copy()
    lo, hi = verts.min(0), verts.max(0)
    scale = height / max(hi[1] - lo[1], 1e-6)
    verts = (verts - (lo + hi) / 2) * scale  # centred, x right, y up
    if mirror:
        verts[:, 0] = -verts[:, 0]
    t = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    verts = verts @ rot.T
    half = np.abs(verts).max(0) + 2
    r0 = int(max(0, np.floor(centre[0] - half[1])))
    r1 = int(min(shape[0], np.ceil(centre[0] + half[1])))
    c0 = int(max(0, np.floor(centre[1] - half[0])))
    c1 = int(min(shape[1], np.ceil(centre[1] + half[0])))
    out = np.zeros(shape, np.float32)
    if r1 <= r0 or c1 <= c0:
        return out
    ss = SUPERSAMPLE
    rr = r0 + (np.arange((r1 - r0) * ss) + 0.5) / ss
    cc = c0 + (np.arange((c1 - c0) * ss) + 0.5) / ss
    gy, gx = np.meshgrid(rr, cc, indexing="ij")
    # image rows grow downwards: y up = -(row - centre)
    pts = np.stack([gx.ravel() - centre[1], -(gy.ravel() - centre[0])], axis=1)
    from matplotlib.path import Path as MplPath

    inside = MplPath(verts, path.codes).contains_points(pts).reshape(gy.shape)
    cover = inside.reshape(r1 - r0, ss, c1 - c0, ss).mean(axis=(1, 3))
    out[r0:r1, c0:c1] = cover
    return out


def field_mask(
    shape: tuple[int, int], margins: tuple[float, float, float, float], angle_deg: float,
    penumbra_px: float,
) -> np.ndarray:  # fmt: skip
    """1 inside the collimated field, 0 outside, with a blurred (penumbra) edge: a
    rectangle inset by ``margins`` (top, bottom, left, right, fractions of the image),
    turned by ``angle_deg`` about the image centre."""
    from scipy import ndimage

    h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    t = np.deg2rad(angle_deg)
    y = (yy - cy) * np.cos(t) - (xx - cx) * np.sin(t) + cy
    x = (yy - cy) * np.sin(t) + (xx - cx) * np.cos(t) + cx
    top, bottom, left, right = margins
    inside = (y >= top * h) & (y <= h - 1 - bottom * h) & (x >= left * w) & (x <= w - 1 - right * w)
    m = inside.astype(np.float32)
    return ndimage.gaussian_filter(m, penumbra_px) if penumbra_px > 0 else m


@dataclass(frozen=True)
class Overlays:
    """Which of the man-made parts one radiograph gets (drawn at random, recorded)."""

    collimation: tuple[float, float, float, float] | None = None  # margins, or none
    collimation_angle: float = 0.0
    penumbra_px: float = 1.0
    blade_attenuation: float = 5.0  # extra line integral outside the field
    markers: tuple[tuple[str, float, float, float, float, bool], ...] = ()
    # (text, height px, row frac, col frac, angle, mirrored)
    text: tuple[tuple[str, float, float, float], ...] = ()  # (text, height px, row, col)
    text_value: str = "top"  # burned-in text at the top or the bottom of the range
    shutter: str | None = None  # "top" | "bottom": electronic shutter outside the field

    def as_dict(self) -> dict:
        return {
            "collimation": list(self.collimation) if self.collimation else None,
            "collimation_angle": round(self.collimation_angle, 2),
            "penumbra_px": round(self.penumbra_px, 2),
            "markers": [m[0] for m in self.markers],
            "text": [t[0] for t in self.text],
            "shutter": self.shutter,
        }


def random_overlays(rng: np.random.Generator) -> Overlays:
    """Collimation in 80 % of images, 1-2 lead markers in 85 %, burned-in text in 60 %, an
    electronic shutter in a quarter of the collimated ones."""
    coll = None
    if rng.random() < 0.8:
        coll = tuple(float(v) for v in rng.uniform(0.0, 0.22, 4))
    words = [str(rng.choice(MARKERS)) for _ in range(int(rng.integers(1, 3)))]
    markers = tuple(
        (w, float(rng.uniform(16, 64) if len(w) == 1 else rng.uniform(10, 30)),
         float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.1, 0.9)), float(rng.normal(0, 8)),
         bool(rng.random() < 0.3))
        for w in (words if rng.random() < 0.85 else [])
    )  # fmt: skip
    text = tuple(
        (str(rng.choice(TEXT)), float(rng.uniform(8, 24)), float(rng.uniform(0.03, 0.97)),
         float(rng.uniform(0.05, 0.95)))
        for _ in range(int(rng.integers(1, 4)) if rng.random() < 0.6 else 0)
    )  # fmt: skip
    return Overlays(
        collimation=coll,  # type: ignore[arg-type]
        collimation_angle=float(rng.normal(0, 3)),
        penumbra_px=float(rng.uniform(0.3, 2.0)),
        blade_attenuation=float(rng.uniform(3.0, 7.0)),
        markers=markers,
        text=text,
        text_value="top" if rng.random() < 0.7 else "bottom",
        shutter=(("top" if rng.random() < 0.5 else "bottom") if coll and rng.random() < 0.25
                 else None),
    )  # fmt: skip


def attenuate(proj: np.ndarray, ov: Overlays) -> np.ndarray:
    """Line integrals with the collimator blades and the lead markers added (before the
    exposure: they get the detector's noise and blur like the anatomy)."""
    out = proj.astype(np.float64).copy()
    shape = out.shape
    if ov.collimation is not None:
        field = field_mask(shape, ov.collimation, ov.collimation_angle, ov.penumbra_px)
        out += ov.blade_attenuation * (1.0 - field)
    for text, height, fr, fc, angle, mirror in ov.markers:
        centre = (fr * shape[0], fc * shape[1])
        out += 8.0 * glyph_mask(text, height, shape, centre, angle, mirror)
    return out


def burn_in(stored: np.ndarray, ov: Overlays, top: int) -> np.ndarray:
    """Electronic shutter and burned-in text on the stored image (exact values)."""
    out = stored.copy()
    shape = out.shape
    if ov.shutter is not None and ov.collimation is not None:
        field = field_mask(shape, ov.collimation, ov.collimation_angle, 0.0)
        out[field < 0.5] = top if ov.shutter == "top" else 0
    value = top if ov.text_value == "top" else 0
    for text, height, fr, fc in ov.text:
        cover = glyph_mask(text, height, shape, (fr * shape[0], fc * shape[1]))
        out = np.rint(out * (1.0 - cover) + value * cover).astype(out.dtype)
    return out

"""Training data: readers, adapters, splits and the engine-identical intensity mapping."""

from __future__ import annotations

import gzip
import io
import json
import plistlib
import tarfile
from pathlib import Path

import numpy as np
import pytest

from training.data import adapters, readers
from training.data.intensity import StoredMeta, meta_to_dict, to_unit
from training.data.prepare import _slabs_by_world_z, load_prepared, prepare_volumes
from training.data.split import slab_split, split_of_index, split_subjects


# -- splits ---------------------------------------------------------------------------
def test_slab_split_fractions_and_gaps() -> None:
    slabs = slab_split(181, gap=4)
    used = {s: sum(b - a for a, b in r) for s, r in slabs.items()}
    usable = 181 - 4 * 3
    assert abs(used["train"] / usable - 0.70) < 0.02
    assert abs(used["val"] / usable - 0.15) < 0.02
    assert abs(used["test"] / usable - 0.15) < 0.02
    ranges = sorted((a, b, s) for s, r in slabs.items() for a, b in r)
    for (_, b0, s0), (a1, _, s1) in zip(ranges, ranges[1:], strict=False):
        assert a1 - b0 >= 4 and s0 != s1  # a gap between different splits
    assert split_of_index(slabs, ranges[0][1]) is None  # first gap slice


def test_patient_split_is_seeded_and_complete() -> None:
    ids = [f"p{i:03d}" for i in range(40)]
    a, b = split_subjects(ids, seed=3), split_subjects(list(reversed(ids)), seed=3)
    assert a == b and set(a) == set(ids)
    counts = {s: list(a.values()).count(s) for s in ("train", "val", "test")}
    assert counts == {"train": 28, "val": 6, "test": 6}
    assert split_subjects(ids, seed=4) != a


def test_fine_volume_follows_reference_slabs() -> None:
    z_ref = np.arange(20, dtype=float)  # 1 mm
    ref = slab_split(20, gap=2)
    z_fine = np.arange(-0.25, 19.5, 0.5)
    fine = _slabs_by_world_z(z_fine, z_ref, ref)
    for s, ranges in fine.items():
        for a, b in ranges:
            for k in range(a, b):
                i = int(np.floor(z_fine[k] + 0.5))
                assert split_of_index(ref, i) == s


# -- intensity: identical to the engine -------------------------------------------------
@pytest.mark.parametrize(
    "intensity,meta",
    [
        ({"model": "ct_hu", "window": [-1024, 3071]}, StoredMeta("CT", 12, 0, 1.0, -1024.0)),
        ({"model": "ct_hu", "window": [-160, 240]}, StoredMeta("CT", 16, 1, 1.0, 0.0)),
        ({"model": "percentile", "percentiles": [0, 99.8]}, StoredMeta("MR", 16, 0)),
        ({"model": "percentile", "percentiles": [1, 99]}, StoredMeta("MR", 12, 0, 2.0, 5.0)),
        ({"model": "bits_stored"}, StoredMeta("CR", 15, 0, 1.0, 0.0, "MONOCHROME1")),
        ({"model": "bits_stored"}, StoredMeta("DX", 12, 1)),
    ],
)
def test_to_unit_matches_engine(intensity: dict, meta: StoredMeta) -> None:
    """What training feeds the network is what the engine feeds it, on the engine's path."""
    from sr_engine.intensity import IntensityMap
    from sr_engine.model_card import Intensity

    rng = np.random.default_rng(0)
    lo, hi = meta.stored_min, min(meta.stored_max, 4000)
    frame = rng.integers(lo, hi, size=(33, 47)).astype(np.int32)
    engine = IntensityMap.fit(Intensity(**intensity), meta, frame).forward(frame)
    ours = to_unit(frame, intensity, meta)
    assert ours.dtype == np.float32
    assert 0.0 <= float(np.median(ours)) <= 1.0
    np.testing.assert_array_equal(ours, engine)
    # the round trip through the card's JSON keeps the meta
    assert StoredMeta(**meta_to_dict(meta)) == meta


# -- readers -----------------------------------------------------------------------------
def test_read_nifti(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    a = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    nib.save(nib.Nifti1Image(a, np.diag([0.5, 0.6, 2.0, 1.0])), tmp_path / "v.nii.gz")
    v = readers.read_nifti(tmp_path / "v.nii.gz", "MR")
    assert v.array.shape == (6, 5, 4) and v.array.dtype == np.int16
    assert v.spacing == pytest.approx((2.0, 0.6, 0.5))
    assert v.meta.pixel_representation == 1


def _write_ct_series(folder: Path, n: int = 3, shape: tuple[int, int] = (16, 20)) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir()
    series = generate_uid()
    for k in range(n):
        ds = pydicom_dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = series
        ds.Modality = "CT"
        ds.PatientID = "anon-001"
        ds.Rows, ds.Columns = shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelSpacing = [0.7, 0.7]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, 2.5 * (n - 1 - k)]  # written in reverse order
        ds.InstanceNumber = k + 1
        ds.PixelData = np.full(shape, 100 * (n - 1 - k), np.uint16).tobytes()
        ds.save_as(folder / f"{k}.dcm", enforce_file_format=True)


def pydicom_dataset():  # noqa: ANN201
    from pydicom.dataset import Dataset

    return Dataset()


def test_read_dicom_series_sorted(tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    _write_ct_series(tmp_path / "s")
    v = readers.read_dicom_series(tmp_path / "s")
    assert v.array.shape == (3, 16, 20)
    assert [int(v.array[k, 0, 0]) for k in range(3)] == [0, 100, 200]  # by position
    assert v.spacing == pytest.approx((2.5, 0.7, 0.7))
    assert v.meta.rescale_intercept == -1024 and v.meta.bits_stored == 12
    assert v.subject == "anon-001"


def test_read_dicom_series_refuses_what_the_node_cannot_enhance(tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    from sr_engine.errors import UnsupportedInput

    _write_ct_series(tmp_path / "s", shape=(8, 10))
    with pytest.raises(UnsupportedInput, match="10x8 pixels"):
        readers.read_dicom_series(tmp_path / "s")


def test_read_png_8_and_16_bit(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    a16 = (np.arange(12 * 9).reshape(12, 9) * 500).astype(np.uint16)
    Image.fromarray(a16).save(tmp_path / "imgs" / "a.png")
    a8 = (np.arange(12 * 9).reshape(12, 9) % 256).astype(np.uint8)
    Image.fromarray(a8).save(tmp_path / "imgs" / "b.tif")
    got = dict(readers.read_image_folder(tmp_path / "imgs"))
    b16 = got[tmp_path / "imgs" / "a.png"]
    assert b16.dtype == np.uint16 and np.array_equal(b16, a16)  # no 8-bit rounding
    assert readers.image_meta(b16).bits_stored == 16
    assert np.array_equal(got[tmp_path / "imgs" / "b.tif"], a8)


def test_read_inv3(tmp_path: Path) -> None:
    vol = (np.arange(3 * 4 * 5).reshape(3, 4, 5) * 10 - 1024).astype(np.int16)
    plist = {
        "matrix": {"dtype": "int16", "filename": "matrix.dat", "shape": [3, 4, 5]},
        "modality": "CT",
        "spacing": [0.9, 0.9, 1.5],
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in (
            ("p/main.plist", plistlib.dumps(plist)),
            ("p/matrix.dat", vol.tobytes()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "x.inv3").write_bytes(gzip.compress(raw.getvalue()))
    v = readers.read_inv3(tmp_path / "x.inv3")
    assert v.array.shape == (3, 4, 5) and v.spacing == (1.5, 0.9, 0.9)
    hu = v.array.astype(np.int32) * v.meta.rescale_slope + v.meta.rescale_intercept
    np.testing.assert_array_equal(hu, vol)


# -- adapters ----------------------------------------------------------------------------
def test_chestxray14_layout(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "images").mkdir()
    rows = ["Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age"]
    for i, pid in enumerate([1, 1, 2, 3, 4, 5, 6, 7]):
        name = f"{pid:08d}_{i:03d}.png"
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "images" / name)
        rows.append(f"{name},No Finding,{i},{pid},50")
    rows.append("99999999_000.png,No Finding,0,99,50")  # listed but missing: skipped
    (tmp_path / "Data_Entry_2017.csv").write_text("\n".join(rows) + "\n")
    items = adapters.chestxray14(tmp_path)
    assert len(items) == 8 and items[0].modality == "DX"
    split = adapters.split_items(items, seed=0)
    where = {it.subject: s for s, its in split.items() for it in its}
    same = [s for s, its in split.items() for it in its if it.subject == items[0].subject]
    assert len(set(same)) == 1 and len(where) == 7  # patient 1's two images together


def test_ixi_layout(tmp_path: Path) -> None:
    for name in ("IXI002-Guys-0828-T1.nii.gz", "IXI002-Guys-0828-T2.nii.gz",
                 "IXI012-HH-1211-T1.nii.gz", "IXI013-HH-1212-MRA.nii.gz", "notes.txt"):  # fmt: skip
        (tmp_path / name).write_bytes(b"")
    items = adapters.ixi(tmp_path)
    assert [(i.subject, i.kind) for i in items] == [
        ("IXI002", "T1"), ("IXI002", "T2"), ("IXI012", "T1"),
    ]  # fmt: skip
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="IXI"):
        adapters.ixi(tmp_path / "empty")


def test_prepare_volumes_patient_level(tmp_path: Path) -> None:
    vols = [
        readers.Volume(
            np.full((2, 8, 8), i, np.uint16), (1, 1, 1), StoredMeta("MR", 16), f"s{i // 2}"
        )
        for i in range(10)
    ]
    paths = prepare_volumes(tmp_path, vols, "u", seed=1)
    docs = load_prepared(tmp_path)
    assert len(paths) == len(docs) == 10
    by_subject: dict[str, set[str]] = {}
    for d in docs:
        (split,) = [s for s, r in d["slabs"].items() if r]
        by_subject.setdefault(d["subject"], set()).add(split)
        assert d["volume"].dtype == np.uint16
    assert all(len(s) == 1 for s in by_subject.values())
    assert json.loads(paths[0].read_text())["split_level"] == "patient"


def _band_power(x: np.ndarray, lo: float) -> float:
    """Share of the (mean-removed) power at spatial frequencies above ``lo`` x Nyquist."""
    n = x.shape[0]
    hann = np.hanning(n)[:, None] * np.hanning(n)[None, :]  # no leakage from the patch edges
    spec = np.abs(np.fft.fftshift(np.fft.fft2((x - x.mean()) * hann))) ** 2
    k = np.abs(np.arange(n) - n // 2) / (n / 2)
    r = np.maximum(k[:, None], k[None, :])
    return float(spec[r > lo].sum() / spec.sum())


def test_fourier_upsample_is_band_limited_and_keeps_the_image() -> None:
    torch = pytest.importorskip("torch")
    from training.data.dataset import fourier_upsample

    rng = np.random.default_rng(0)
    img = rng.random((48, 48)).astype(np.float32)  # white noise: power up to Nyquist
    up = fourier_upsample(torch.from_numpy(img)[None, None], 96)[0, 0].numpy()
    assert up.shape == (96, 96) and up.min() >= 0
    assert _band_power(img, 0.6) > 0.4
    assert _band_power(up, 0.6) < 0.01  # nothing above the small matrix's Nyquist
    # the samples of the small matrix come back (every other pixel, away from the clamp)
    assert np.abs(up[::2, ::2] - img).mean() < 0.02


def test_patch_sampler_interpolated_share() -> None:
    torch = pytest.importorskip("torch")
    from training.data.dataset import Augment, PatchSampler

    rng = np.random.default_rng(1)
    images = [rng.random((128, 128)).astype(np.float32) for _ in range(2)]
    aug = Augment(rot_flip=False, scale_range=(1.0, 1.0), interp_prob=1.0, min_std=0.0)
    patches = PatchSampler(images, 64, augment=aug, seed=0).sample(8).numpy()[:, 0]
    assert patches.shape == (8, 64, 64)
    assert max(_band_power(p, 0.75) for p in patches) < 0.01
    aug = Augment(rot_flip=False, scale_range=(1.0, 1.0), min_std=0.0)
    plain = PatchSampler(images, 64, augment=aug, seed=0)
    assert min(_band_power(p, 0.75) for p in plain.sample(4).numpy()[:, 0]) > 0.2
    del torch


def test_fourier_upsample_of_a_rectangular_matrix_is_band_limited_per_axis() -> None:
    torch = pytest.importorskip("torch")
    from training.data.dataset import fourier_upsample

    rng = np.random.default_rng(2)
    img = rng.random((24, 48)).astype(np.float32)  # 24 phase lines, 48 readout samples
    up = fourier_upsample(torch.from_numpy(img)[None, None], 96)[0, 0].numpy()
    spec = np.abs(np.fft.fftshift(np.fft.fft2(up - up.mean()))) ** 2
    f = np.abs(np.fft.fftshift(np.fft.fftfreq(96)))
    rows, cols = spec.sum(1), spec.sum(0)  # power by vertical / horizontal frequency
    # vertical detail ends at 24/96 of the sampling rate, horizontal at 48/96
    assert rows[f > 0.15].sum() / rows.sum() < 0.03  # (the clamp at 0 leaks a little)
    assert cols[(f > 0.15) & (f < 0.24)].sum() / cols.sum() > 0.1
    assert cols[f > 0.27].sum() / cols.sum() < 0.03
    assert np.abs(up[::4, ::2] - img).mean() < 0.03  # the acquired samples come back


def test_patch_sampler_anisotropic_interpolation_smooths_one_axis_more() -> None:
    pytest.importorskip("torch")
    from training.data.dataset import Augment, PatchSampler

    rng = np.random.default_rng(3)
    images = [rng.random((256, 256)).astype(np.float32) for _ in range(2)]
    aug = Augment(rot_flip=False, scale_range=(1.0, 1.0), interp_prob=1.0,
                  interp_factor=(2.0, 2.0), interp_anisotropic=1.0, min_std=0.0)  # fmt: skip
    patches = PatchSampler(images, 64, augment=aug, seed=0).sample(16).numpy()[:, 0]
    dy = np.abs(np.diff(patches, axis=1)).mean(axis=(1, 2))
    dx = np.abs(np.diff(patches, axis=2)).mean(axis=(1, 2))
    ratio = np.maximum(dy, dx) / np.minimum(dy, dx)
    assert (ratio > 1.15).mean() > 0.6  # most patches: one axis is smoother than the other
    iso = Augment(rot_flip=False, scale_range=(1.0, 1.0), interp_prob=1.0,
                  interp_factor=(2.0, 2.0), min_std=0.0)  # fmt: skip
    p2 = PatchSampler(images, 64, augment=iso, seed=0).sample(16).numpy()[:, 0]
    r2 = np.abs(np.diff(p2, axis=1)).mean() / np.abs(np.diff(p2, axis=2)).mean()
    assert 0.9 < r2 < 1.1

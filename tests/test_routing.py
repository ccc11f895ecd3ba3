"""Routing rules: first match wins, skips say why, srnode's own series never route again."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_node.config import DeriveSettings, Settings
from dicom_node.config_routing import Route
from dicom_node.jobs.routing import decide, route_matches
from dicom_node.receive.series_header import SeriesHeader, is_srnode_derived

DESTS = ["PACS", "ARCHIVE"]


def facts(**kw) -> SeriesHeader:
    base = dict(
        modality="CT",
        body_part="HEAD",
        series_description="Head 2.0 H30s",
        study_description="CT Head w/o",
        calling_ae="ORTHANC",
    )
    base.update(kw)
    return SeriesHeader(**base)


def routes(*items: dict) -> list[Route]:
    """Routes as validated one by one (a whole config would also refuse routes naming
    destinations it does not have, see test_startup_refusals)."""
    return [Route.model_validate(i) for i in items]


def test_no_routes_enhances_every_image_series_to_all_destinations():
    d = decide([], facts(), DESTS)
    assert (d.action, d.route, d.model, d.destinations) == ("enhance", None, None, DESTS)
    assert "no routes" in d.reason


def test_no_routes_skips_non_image_series_and_missing_destinations():
    assert decide([], facts(modality="SR"), DESTS).action == "skip"
    d = decide([], facts(), [])
    assert d.action == "skip" and "destination" in d.reason


def test_first_match_wins():
    rs = routes(
        {"name": "ct-head", "modality": ["CT"], "body_part": ["head"], "model": "ct-head-x2"},
        {"name": "ct-any", "modality": ["CT"], "model": "ct-x2"},
    )
    d = decide(rs, facts(), DESTS)
    assert (d.action, d.route, d.model, d.destinations) == (
        "enhance",
        "ct-head",
        "ct-head-x2",
        DESTS,
    )
    d = decide(rs, facts(body_part="CHEST"), DESTS)
    assert (d.route, d.model) == ("ct-any", "ct-x2")


def test_ignore_route_stops_matching():
    rs = routes(
        {
            "name": "no-scouts",
            "series_description": r"topogram|scout|localizer",
            "action": "ignore",
        },
        {"name": "all"},
    )
    d = decide(rs, facts(series_description="Topogram 0.6 T20f"), DESTS)
    assert (d.action, d.route) == ("ignore", "no-scouts")
    assert decide(rs, facts(), DESTS).action == "enhance"


def test_unmatched_is_skipped_with_reason():
    rs = routes({"name": "mr-only", "modality": ["MR"]})
    d = decide(rs, facts(modality="CT", body_part="CHEST", calling_ae="CT01"), DESTS)
    assert d.action == "skip" and d.route is None
    assert "no route matched" in d.reason and "modality=CT" in d.reason and "CT01" in d.reason


@pytest.mark.parametrize(
    "cond,match",
    [
        ({"calling_ae": ["orthanc"]}, True),
        ({"calling_ae": ["CT01"]}, False),
        ({"study_description": "^ct head"}, True),
        ({"study_description": "abdomen"}, False),
        ({"series_description": r"\bH30s$"}, True),
        ({"body_part": ["CHEST", "HEAD"]}, True),
        ({"modality": ["MR", "CR"]}, False),
    ],
)
def test_each_condition(cond, match):
    (route,) = routes({"name": "r", **cond})
    assert route_matches(route, facts()) is match


def test_destinations_subset_and_unknown_names():
    rs = routes({"name": "r", "destinations": ["ARCHIVE", "GONE"]})
    d = decide(rs, facts(), DESTS)
    assert d.destinations == ["ARCHIVE"] and "GONE" in d.reason
    rs = routes({"name": "r", "destinations": ["GONE"]})
    d = decide(rs, facts(), DESTS)
    assert d.action == "skip" and "no destination" in d.reason


def test_srnode_derived_series_are_never_routed():
    rs = routes({"name": "all"})
    for r in (rs, []):
        d = decide(r, facts(derived_by_srnode=True), DESTS)
        assert d.action == "skip" and "derived by srnode" in d.reason


def _ct() -> Dataset:
    return pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)


def test_is_srnode_derived_by_contributing_equipment():
    ds = _ct()
    assert not is_srnode_derived(ds, DeriveSettings())
    item = Dataset()
    item.Manufacturer = "srnode"
    item.ManufacturerModelName = "ct-x2"
    other = Dataset()
    other.Manufacturer = "Other Vendor"
    ds.ContributingEquipmentSequence = Sequence([other, item])
    assert is_srnode_derived(ds, DeriveSettings())


def test_is_srnode_derived_by_image_type_and_description():
    ds = _ct()
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.DerivationDescription = "Lossy compression by another vendor"
    assert not is_srnode_derived(ds, DeriveSettings())
    ds.DerivationDescription = "srnode 0.1.0 super-resolution x2; model ct-x2 1.0"
    assert is_srnode_derived(ds, DeriveSettings())
    ds.ImageType = "ORIGINAL"  # single value, not a list
    assert not is_srnode_derived(ds, DeriveSettings())


def test_facts_from_dataset():
    ds = _ct()
    ds.BodyPartExamined = "HEAD"
    f = SeriesHeader.from_dataset(ds, calling_ae="ORTHANC")
    assert (f.modality, f.body_part, f.calling_ae, f.derived_by_srnode) == (
        "CT",
        "HEAD",
        "ORTHANC",
        False,
    )


def test_snapshot_round_trip_and_unknown_fields():
    f = facts(derived_by_srnode=True)
    assert SeriesHeader.from_json(f.to_json()) == f
    # a snapshot written by another srnode version: unknown keys ignored, missing ones empty
    g = SeriesHeader.from_json('{"modality": "MR", "scanner_color": "red"}')
    assert g.modality == "MR" and g.body_part == "" and not g.derived_by_srnode


def test_the_configured_manufacturer_decides():
    ds = _ct()
    item = Dataset()
    item.Manufacturer = "Acme SR"
    ds.ContributingEquipmentSequence = Sequence([item])
    assert not is_srnode_derived(ds, DeriveSettings())
    assert is_srnode_derived(ds, DeriveSettings(manufacturer="Acme SR"))
    settings = Settings.model_validate({"derive": {"manufacturer": "acme sr"}})
    assert SeriesHeader.from_dataset(ds, "PACS", settings).derived_by_srnode


def _orthanc_tags(ds: Dataset) -> dict:
    """``ds`` the way Orthanc's /instances/ID/tags?short gives it (keys "gggg,eeee")."""
    out: dict = {}
    for elem in ds:
        key = f"{elem.tag.group:04x},{elem.tag.element:04x}"
        if elem.VR == "SQ":
            out[key] = [_orthanc_tags(item) for item in elem.value]
        elif elem.VM > 1:
            out[key] = "\\".join(str(v) for v in elem.value)
        elif elem.value is not None and not isinstance(elem.value, bytes):
            out[key] = str(elem.value)
    return out


def test_orthanc_plugin_copy_agrees():
    """orthanc/autoroute.py runs inside Orthanc with the standard library only, so it keeps
    its own copy of is_srnode_derived: both must give the same answer."""
    import importlib.util
    import sys
    import types
    from pathlib import Path

    stub = types.ModuleType("orthanc")  # the module Orthanc gives its plugins
    stub.GetConfiguration = lambda: "{}"
    stub.LogError = stub.LogWarning = stub.LogInfo = lambda *a: None
    stub.RegisterOnChangeCallback = lambda *a: None
    stub.ChangeType = types.SimpleNamespace()
    path = Path(__file__).resolve().parents[1] / "orthanc" / "autoroute.py"
    sys.modules["orthanc"] = stub
    try:
        spec = importlib.util.spec_from_file_location("srnode_autoroute_copy", path)
        plugin = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(plugin)
    finally:
        del sys.modules["orthanc"]

    def variants():
        ds = _ct()
        yield ds
        for maker in ("srnode", "SRNODE ", "Other Vendor", "Acme SR"):
            d = _ct()
            item = Dataset()
            item.Manufacturer = maker
            d.ContributingEquipmentSequence = Sequence([item])
            yield d
        for image_type, description in (
            (["DERIVED", "SECONDARY"], "srnode 0.1.0 super-resolution x2"),
            (["DERIVED", "SECONDARY"], "Lossy compression"),
            (["ORIGINAL", "PRIMARY"], "srnode 0.1.0 super-resolution x2"),
            ("DERIVED", "Acme SR x2"),
        ):
            d = _ct()
            d.ImageType = image_type
            d.DerivationDescription = description
            yield d

    seen = set()
    for manufacturer in ("srnode", "Acme SR"):
        derive = DeriveSettings(manufacturer=manufacturer)
        for ds in variants():
            ours = is_srnode_derived(ds, derive)
            theirs = plugin.is_srnode_derived(_orthanc_tags(ds), manufacturer.strip().lower())
            assert ours == theirs, (manufacturer, ds.get("ImageType"))
            seen.add(ours)
    assert seen == {True, False}

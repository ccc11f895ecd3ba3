"""Routing rules: first match wins, skips say why, srnode's own series never route again."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_node.config import Route, Settings
from dicom_node.jobs.routing import SeriesFacts, decide, is_srnode_derived, route_matches

DESTS = ["PACS", "ARCHIVE"]


def facts(**kw) -> SeriesFacts:
    base = dict(
        modality="CT",
        body_part="HEAD",
        series_description="Head 2.0 H30s",
        study_description="CT Head w/o",
        calling_ae="ORTHANC",
    )
    base.update(kw)
    return SeriesFacts(**base)


def routes(*items: dict) -> list[Route]:
    return Settings.model_validate({"routes": list(items)}).routes


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
    assert not is_srnode_derived(ds)
    item = Dataset()
    item.Manufacturer = "srnode"
    item.ManufacturerModelName = "ct-x2"
    other = Dataset()
    other.Manufacturer = "Other Vendor"
    ds.ContributingEquipmentSequence = Sequence([other, item])
    assert is_srnode_derived(ds)


def test_is_srnode_derived_by_image_type_and_description():
    ds = _ct()
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.DerivationDescription = "Lossy compression by another vendor"
    assert not is_srnode_derived(ds)
    ds.DerivationDescription = "srnode 0.1.0 super-resolution x2; model ct-x2 1.0"
    assert is_srnode_derived(ds)
    ds.ImageType = "ORIGINAL"  # single value, not a list
    assert not is_srnode_derived(ds)


def test_facts_from_dataset():
    ds = _ct()
    ds.BodyPartExamined = "HEAD"
    f = SeriesFacts.from_dataset(ds, calling_ae="ORTHANC")
    assert (f.modality, f.body_part, f.calling_ae, f.derived_by_srnode) == (
        "CT",
        "HEAD",
        "ORTHANC",
        False,
    )

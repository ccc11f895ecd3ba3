"""What a radiologist and a PACS admin see on a derived series: it says it is AI output
(SeriesDescription, ImageComments), who made it (InstanceCreatorUID, file meta), and it
carries none of the source's private attributes unless configured. Real files, with the
stand-in engine of test_derive."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest

from dicom_node import __version__
from dicom_node.config import DeriveSettings, Settings, load_settings
from dicom_node.derive.process import enhance_instance
from dicom_node.implementation import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    INSTANCE_CREATOR_UID,
)
from dicom_node.jobs.routing import decide
from dicom_node.receive.series_header import SeriesHeader
from sr_engine.model_card import load_card
from tests.onnx_models import write_test_model
from tests.test_derive import NearestEngine, _load

ROOT_CONFIG = Path(__file__).resolve().parents[1] / "config" / "srnode.toml"


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> NearestEngine:
    return NearestEngine(load_card(write_test_model(tmp_path_factory.mktemp("models"))))


def test_description_says_ai_and_is_never_just_the_suffix(engine) -> None:
    src = _load("CT_small.dcm")  # a GE CT without SeriesDescription
    assert "SeriesDescription" not in src
    out, _ = enhance_instance(src, engine)
    assert out.SeriesDescription == f"CT series {src.SeriesNumber} [AI SR x2]"
    src.SeriesDescription = "Abdomen 1.0 B30f"
    out, _ = enhance_instance(src, engine)
    assert out.SeriesDescription == "Abdomen 1.0 B30f [AI SR x2]"


def test_image_comments_notice_then_the_source_comments(engine) -> None:
    src = _load("CT_small.dcm")
    assert src.ImageComments == "Uncompressed"
    out, _ = enhance_instance(src, engine)
    card = engine.card
    assert out.ImageComments == (
        f"Super-resolved by srnode {__version__}, model {card.name} {card.version}; "
        "not the acquired image\nUncompressed"
    )
    custom = DeriveSettings(image_comments="AI {model} x{scale}: not for diagnosis")
    del src.ImageComments
    out, _ = enhance_instance(src, engine, custom)
    assert out.ImageComments == f"AI {card.name} x2: not for diagnosis"


def test_bad_placeholder_is_refused_naming_the_key() -> None:
    from dicom_node.config import ConfigError

    with pytest.raises(ConfigError, match=r"^config: derive\.image_comments: unknown placeholder"):
        load_settings(None, env={"SRNODE_DERIVE__IMAGE_COMMENTS": "by {author}"})


def test_private_tags_dropped_unless_configured(engine) -> None:
    src = _load("CT_small.dcm")
    private = [e.tag for e in src if e.tag.is_private]
    assert private  # GE's (0009,xxxx) group
    out, _ = enhance_instance(src, engine)
    assert not [e.tag for e in out if e.tag.is_private]
    kept, _ = enhance_instance(src, engine, DeriveSettings(keep_private_tags=True))
    assert [e.tag for e in kept if e.tag.is_private] == private


def test_creator_and_implementation_are_srnodes(engine) -> None:
    src = _load("CT_small.dcm")
    src.InstanceCreatorUID = "1.2.840.113619.1.1"  # the scanner's
    out, _ = enhance_instance(src, engine)
    assert out.InstanceCreatorUID == INSTANCE_CREATOR_UID
    buf = io.BytesIO()
    out.save_as(buf, enforce_file_format=True)
    back = pydicom.dcmread(io.BytesIO(buf.getvalue()))
    assert back.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert back.file_meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert IMPLEMENTATION_CLASS_UID.startswith("2.25.") and IMPLEMENTATION_CLASS_UID.is_valid
    assert INSTANCE_CREATOR_UID != IMPLEMENTATION_CLASS_UID


@pytest.mark.parametrize("value", ["YES", "NO"])
def test_burned_in_annotation_kept(engine, value: str) -> None:
    src = _load("emri_small.dcm")  # an MR that has the attribute
    src.BurnedInAnnotation = value
    out, _ = enhance_instance(src, engine)
    assert out.BurnedInAnnotation == value


def test_embedded_config_lists_its_routes_and_equals_the_defaults() -> None:
    from_file = load_settings(ROOT_CONFIG, env={})
    assert from_file.model_dump() == Settings().model_dump()
    names = [(r.name, r.modality, r.model) for r in from_file.routes]
    assert names == [
        ("ct", ["CT"], "ct-x2"),
        ("mr", ["MR"], "mr-x2"),
        ("radiographs", ["CR", "DX"], "general-x2"),
    ]


@pytest.mark.parametrize(
    ("modality", "action", "model"),
    [
        ("CT", "enhance", "ct-x2"),
        ("MR", "enhance", "mr-x2"),
        ("CR", "enhance", "general-x2"),
        ("DX", "enhance", "general-x2"),
        ("US", "skip", None),
        ("SR", "skip", None),
    ],
)
def test_default_routes(modality: str, action: str, model: str | None) -> None:
    s = Settings()
    d = decide(s.routes, SeriesHeader(modality=modality), ["pacs"])
    assert (d.action, d.model) == (action, model)
    if action == "skip":
        assert d.reason == f"no route matched (modality={modality})"

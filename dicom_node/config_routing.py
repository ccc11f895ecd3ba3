"""Where series go: the destinations derived series are sent to (DIMSE or STOW-RS), and
the routes that decide which series are enhanced, with which model, sent where. Part of
the settings in :mod:`dicom_node.config`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Discriminator, Field, Tag, field_validator

from dicom_node.config_base import _check_ae, _Section


class _DestinationBase(_Section):
    name: str = Field(description="what routes and logs call this destination")
    max_attempts: int | None = Field(
        None,
        ge=1,
        description="when set, also end the retries after that many attempts (unset: "
        "retry_for_hours alone decides)",
    )
    backoff_initial: float = Field(
        2.0, gt=0, description="seconds before the second attempt; doubles each time"
    )
    backoff_max: float = Field(300.0, gt=0, description="longest wait between attempts (s)")
    retry_for_hours: float = Field(
        24.0,
        gt=0,
        description="how long exports keep retrying (capped exponential backoff) after the "
        "first failure before they fail; `srnode jobs retry --failed` sends failed ones again",
    )
    probe_every: float = Field(
        30.0,
        gt=0,
        description="while exports to it wait for their next attempt, the destination is "
        "probed (C-ECHO, or an HTTP request for STOW) this often (s); when it answers they "
        "are retried at once",
    )
    transfer_syntax: str | None = Field(
        None,
        description="how derived instances are sent: explicit-vr-little-endian, "
        "jpeg2000-lossless, jpegls-lossless, rle-lossless, deflated, or a transfer syntax "
        "UID. Unset: JPEG 2000 lossless when the source came compressed losslessly, else "
        "explicit VR little endian. A DIMSE peer that refuses it gets explicit VR little "
        "endian",
    )
    timeout: float = Field(
        60.0,
        gt=0,
        description="seconds to wait for the peer's answer (association, each C-STORE or "
        "STOW-RS request) before the attempt fails and is retried",
    )
    connect_timeout: float = Field(
        10.0, gt=0, description="seconds to wait for the TCP connection to the peer"
    )

    @field_validator("transfer_syntax")
    @classmethod
    def _syntax(cls, v: str | None) -> str | None:
        if v is None:
            return None
        from dicom_node.derive.encoding import parse_syntax

        return str(parse_syntax(v))


class DimseDestination(_DestinationBase):
    """A Storage SCP, sent to with C-STORE (also a C-GET / C-MOVE source for pull)."""

    kind: Literal["dimse"] = Field("dimse", description="dimse (the default) or stow")
    ae_title: str | None = Field(None, description="the peer's (called) AE title; required")
    host: str | None = Field(None, description="the peer's address; required")
    port: int | None = Field(None, ge=1, le=65535, description="the peer's port; required")
    tls: bool = Field(False, description="DICOM TLS to the peer")
    tls_ca: Path | None = Field(
        None, description="CA bundle that signs the peer (default: the system CAs)"
    )
    tls_cert: Path | None = Field(
        None, description="our client certificate, where the peer asks for one"
    )
    tls_key: Path | None = Field(None, description="private key of tls_cert")

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, v: str | None) -> str | None:
        return None if v is None else _check_ae(v)

    @property
    def address(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    def missing(self) -> list[str]:
        """The settings this destination cannot work without that are not set."""
        return [k for k in ("ae_title", "host", "port") if not getattr(self, k)]


class StowDestination(_DestinationBase):
    """A DICOMweb server, sent to with STOW-RS (also a QIDO/WADO-RS source for pull)."""

    kind: Literal["stow"] = Field(description="stow")
    url: str | None = Field(
        None, description="DICOMweb base URL (https:// for TLS), e.g. http://pacs:8042/dicom-web"
    )

    @property
    def address(self) -> str:
        return str(self.url)

    @property
    def tls(self) -> bool:
        return str(self.url or "").startswith("https://")

    def missing(self) -> list[str]:
        """The settings this destination cannot work without that are not set."""
        return [] if self.url else ["url"]


def _destination_kind(value: object) -> str:
    kind = value.get("kind", "dimse") if isinstance(value, dict) else getattr(value, "kind", "")
    return kind if kind in ("dimse", "stow") else "dimse"  # an unknown kind fails on the field


#: a destination, by ``kind`` (default ``dimse``); one exporter per kind (dicom_node.export)
Destination = Annotated[
    Annotated[DimseDestination, Tag("dimse")] | Annotated[StowDestination, Tag("stow")],
    Discriminator(_destination_kind),
]


class Route(_Section):
    """Which series are enhanced, with which model, sent where. The first route whose
    conditions all hold decides; a series no route matches is skipped. Empty conditions
    match anything."""

    name: str = Field(description="shown in srnode status and the logs")
    modality: list[str] = Field(
        default_factory=list, description='Modality values, e.g. ["CT"] (empty: any)'
    )
    body_part: list[str] = Field(
        default_factory=list, description="BodyPartExamined values (empty: any)"
    )
    series_description: str | None = Field(
        None, description="regular expression searched in SeriesDescription, any case"
    )
    study_description: str | None = Field(
        None, description="regular expression searched in StudyDescription, any case"
    )
    calling_ae: list[str] = Field(
        default_factory=list, description="AE titles of the sender (empty: any)"
    )
    action: Literal["enhance", "ignore"] = Field(
        "enhance", description="enhance, or ignore (the series is skipped, with this reason)"
    )
    model: str | None = Field(
        None,
        description="bundled model name (ct-x2, mr-x2, general-x2...) or a card path "
        "(unset: the model for the series' modality)",
    )
    destinations: list[str] = Field(
        default_factory=list, description="names of [[destinations]] (empty: all of them)"
    )

    @field_validator("series_description", "study_description")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"not a valid regular expression ({e})") from None
        return v

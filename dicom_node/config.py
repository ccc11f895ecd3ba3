"""srnode's configuration: one TOML file validated by pydantic, ``SRNODE_*`` environment
variables override. A bad value is reported as one line naming the key.

The embedded default is ``config/srnode.toml`` (copied into the package as
``dicom_node/default_config.toml`` is not needed: the defaults below are the same values).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)


class ConfigError(Exception):
    """One line naming the offending key, e.g. ``config: node.port: must be <= 65535``."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


_AE_RE = re.compile(r"^[\x20-\x7e]{1,16}$")


def _check_ae(v: str) -> str:
    v = v.strip()
    if not _AE_RE.match(v) or "\\" in v:
        raise ValueError("AE title must be 1-16 printable ASCII characters without backslash")
    return v


class NodeSettings(_Section):
    ae_title: str = "SRNODE"
    host: str = "0.0.0.0"
    port: int = Field(11112, ge=1, le=65535)
    data_dir: Path = Path("srnode-data")
    max_associations: int = Field(10, ge=1)
    max_pdu: int = Field(262144, ge=0)
    acse_timeout: float = Field(30, gt=0)
    dimse_timeout: float = Field(60, gt=0)
    network_timeout: float = Field(60, gt=0)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    drain_timeout: float = Field(30.0, ge=0)  # on stop: how long in-flight associations get
    receivers: int = Field(1, ge=1, le=64)  # processes accepting associations (Linux)
    fast_receive: bool = True  # the pynetdicom fast path of the storage SCP

    _ae = field_validator("ae_title")(_check_ae)


class AllowedAE(_Section):
    ae_title: str
    host: str | None = None  # None = any host

    _ae = field_validator("ae_title")(_check_ae)


class _DestinationBase(_Section):
    name: str
    # exports retry with capped exponential backoff (backoff_initial doubling up to
    # backoff_max) for retry_for_hours after the first failure, then fail (visible in
    # `srnode status`; `srnode jobs retry --failed` sends them again). max_attempts, when
    # set, also ends the retries after that many attempts.
    max_attempts: int | None = Field(None, ge=1)
    backoff_initial: float = Field(2.0, gt=0)
    backoff_max: float = Field(300.0, gt=0)
    retry_for_hours: float = Field(24.0, gt=0)
    # while exports to it wait for their next attempt, the destination is probed (C-ECHO,
    # or an HTTP request for STOW) this often; when it answers they are retried at once
    probe_every: float = Field(30.0, gt=0)


class DimseDestination(_DestinationBase):
    """A Storage SCP, sent to with C-STORE (also a C-GET / C-MOVE source for pull)."""

    kind: Literal["dimse"] = "dimse"
    ae_title: str | None = None
    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    tls: bool = False
    tls_ca: Path | None = None  # CA bundle that signs the peer (default: the system CAs)
    tls_cert: Path | None = None  # our client certificate, where the peer asks for one
    tls_key: Path | None = None

    @property
    def address(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


class StowDestination(_DestinationBase):
    """A DICOMweb server, sent to with STOW-RS (also a QIDO/WADO-RS source for pull)."""

    kind: Literal["stow"]
    url: str | None = None  # DICOMweb base URL

    @property
    def address(self) -> str:
        return str(self.url)

    @property
    def tls(self) -> bool:
        return str(self.url or "").startswith("https://")


def _destination_kind(value: object) -> str:
    kind = value.get("kind", "dimse") if isinstance(value, dict) else getattr(value, "kind", "")
    return kind if kind in ("dimse", "stow") else "dimse"  # an unknown kind fails on the field


#: a destination, by ``kind`` (default ``dimse``); one exporter per kind (dicom_node.export)
Destination = Annotated[
    Annotated[DimseDestination, Tag("dimse")] | Annotated[StowDestination, Tag("stow")],
    Discriminator(_destination_kind),
]


class Route(_Section):
    name: str
    modality: list[str] = Field(default_factory=list)  # empty = any
    body_part: list[str] = Field(default_factory=list)
    series_description: str | None = None  # regex, case-insensitive
    study_description: str | None = None
    calling_ae: list[str] = Field(default_factory=list)
    action: Literal["enhance", "ignore"] = "enhance"
    model: str | None = None  # None = pick by modality
    destinations: list[str] = Field(default_factory=list)  # names; empty = all

    @field_validator("series_description", "study_description")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"not a valid regular expression ({e})") from None
        return v


class DeriveSettings(_Section):
    description_suffix: str = " [SR x{scale}]"
    series_number_offset: int = Field(1000, ge=0)
    manufacturer: str = "srnode"
    data_consistency: bool = True


class EngineSettings(_Section):
    backend: str = "auto"  # one of sr_engine.backends.BACKEND_NAMES
    threads: int = Field(0, ge=0)  # 0 = all cores
    model_dirs: list[Path] = Field(default_factory=list)

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        from sr_engine.backends import BACKEND_NAMES

        if v not in BACKEND_NAMES:
            raise ValueError(f"must be one of {', '.join(BACKEND_NAMES)}")
        return v


class SchedulerSettings(_Section):
    stable_age: float = Field(10.0, gt=0)
    tick: float = Field(1.0, gt=0)
    workers: int = Field(1, ge=1)
    job_max_attempts: int = Field(3, ge=1)
    job_retry_delay: float = Field(10.0, ge=0)  # before a failed processing attempt reruns
    job_lease: float = Field(300.0, gt=0)  # a claim not renewed for this long is free again


class DatabaseSettings(_Section):
    url: str | None = None  # None = SQLite under data_dir
    # SQLite only. "normal": a commit is not fsynced (WAL keeps it safe from a killed
    # process; after a power loss the node re-indexes fsynced spool files on start);
    # "full": every commit is fsynced too (one more disk flush per received instance).
    sqlite_synchronous: Literal["normal", "full"] = "normal"


class SpoolSettings(_Section):
    keep_after_export: bool = False
    retention_hours: float = Field(24.0, ge=0)
    fsync: bool = True  # fsync each instance and its folder before acknowledging


class StorageSettings(_Section):
    # below this much free space on the data dir's file system, new associations are
    # refused and C-STORE / STOW-RS answer 0xA700 (out of resources) until space is back
    min_free_gb: float = Field(5.0, ge=0)


class WebSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    # one STOW-RS request is held in memory while its parts are stored: larger ones get 413
    max_request_mb: float = Field(1024.0, gt=0)
    # when set, every route but /healthz needs "Authorization: Bearer <token>" or HTTP Basic
    # with the token as password (what Orthanc's DICOMweb client and browsers send)
    token: str | None = Field(None, min_length=12)


class Settings(_Section):
    node: NodeSettings = Field(default_factory=NodeSettings)
    allow: list[AllowedAE] = Field(default_factory=list)
    destinations: list[Destination] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    derive: DeriveSettings = Field(default_factory=DeriveSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    web: WebSettings = Field(default_factory=WebSettings)


def _format_error(err: ValidationError) -> str:
    e = err.errors()[0]
    key = ".".join(str(p) for p in e["loc"])
    msg = e["msg"].removeprefix("Value error, ")
    return f"config: {key}: {msg}"


def _env_overrides(env: dict[str, str]) -> dict[str, dict[str, str]]:
    """``SRNODE_NODE__PORT=11113`` -> ``{"node": {"port": "11113"}}`` (scalars only)."""
    out: dict[str, dict[str, str]] = {}
    for k, v in env.items():
        if not k.startswith("SRNODE_") or "__" not in k:
            continue
        section, _, key = k[len("SRNODE_") :].lower().partition("__")
        out.setdefault(section, {})[key] = v
    return out


def load_settings(path: str | Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Load the TOML file (or the embedded defaults), apply ``SRNODE_*`` overrides, validate."""
    raw: dict = {}
    if path is not None:
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config: file {p} not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config: {p.name}: not valid TOML ({e})") from None
    for section, values in _env_overrides(dict(os.environ if env is None else env)).items():
        target = raw.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"config: {section}: cannot override a list from the environment")
        target.update(values)
    try:
        return Settings.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_error(e)) from None

"""srnode's configuration: one TOML file validated by pydantic, ``SRNODE_*`` environment
variables override. A bad value is reported as one line naming the key.

The embedded default is ``config/srnode.toml`` (copied into the package as
``dicom_node/default_config.toml`` is not needed: the defaults below are the same values).
The destination and route models are in :mod:`dicom_node.config_routing`, the section base
and the AE title check in :mod:`dicom_node.config_base`.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from dicom_node.config_base import _check_ae, _Section
from dicom_node.config_routing import Destination, Route
from sr_engine.backends import BACKEND_NAMES


class ConfigError(Exception):
    """One line naming the offending key, e.g. ``config: node.port: must be <= 65535``."""


class NodeSettings(_Section):
    """The node's DICOM side: its AE, where it listens, where it keeps its data."""

    ae_title: str = Field("SRNODE", description="the node's AE title (called AE for senders)")
    host: str = Field("0.0.0.0", description="address the Storage SCP listens on")
    port: int = Field(11112, ge=1, le=65535, description="DICOM port of the Storage SCP")
    data_dir: Path = Field(
        Path("srnode-data"),
        description="spool, derived files and the SQLite database. A relative path is "
        "taken from the folder the node starts in: give an absolute one in production "
        "(the systemd unit runs in /var/lib/srnode)",
    )
    max_associations: int = Field(10, ge=1, description="associations served at once")
    max_pdu: int = Field(262144, ge=0, description="largest PDU the node receives (0: any)")
    acse_timeout: float = Field(30, gt=0, description="seconds for association negotiation")
    dimse_timeout: float = Field(60, gt=0, description="seconds to wait for a DIMSE message")
    network_timeout: float = Field(60, gt=0, description="seconds an idle association stays open")
    tls_cert: Path | None = Field(
        None, description="PEM certificate: with tls_key, the SCP speaks DICOM TLS only"
    )
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    tls_ca: Path | None = Field(
        None, description="CA bundle: when set, senders must present a certificate it signed"
    )
    drain_timeout: float = Field(
        30.0, ge=0, description="on stop: seconds in-flight associations get to finish"
    )
    receivers: int = Field(
        1,
        ge=1,
        le=64,
        description="processes accepting associations on the port (Linux, SO_REUSEPORT)",
    )
    fast_receive: bool = Field(
        True,
        description="the fast receive path of the Storage SCP (for the pinned pynetdicom "
        "release; false: stock pynetdicom)",
    )

    _ae = field_validator("ae_title")(_check_ae)


class AllowedAE(_Section):
    """A calling AE title the node accepts associations from (none listed: none accepted;
    ``srnode aet add`` adds more at run time)."""

    ae_title: str = Field(description="the sender's (calling) AE title")
    host: str | None = Field(None, description="only from this address (unset: any host)")

    _ae = field_validator("ae_title")(_check_ae)


#: the default ImageComments of a derived instance (see DeriveSettings.image_comments)
DEFAULT_IMAGE_COMMENTS = (
    "Super-resolved by srnode {version}, model {model} {model_version}; not the acquired image"
)


def default_routes() -> list[Route]:
    """The routes of the embedded config (config/srnode.toml writes them out): CT, MR and
    radiographs with their bundled models; any other series matches none and is skipped
    ("no route matched (modality=US)")."""
    return [
        Route(name="ct", modality=["CT"], model="ct-x2"),
        Route(name="mr", modality=["MR"], model="mr-x2"),
        Route(name="radiographs", modality=["CR", "DX"], model="general-x2"),
    ]


class DeriveSettings(_Section):
    """How a derived series is labelled (what a radiologist sees in the PACS)."""

    description_suffix: str = Field(
        " [AI SR x{scale}]",
        description="appended to the source's SeriesDescription ({scale}: the factor); a "
        "source without one gets '<Modality> series <SeriesNumber>' first, so the derived "
        "description always says what it is",
    )
    image_comments: str = Field(
        DEFAULT_IMAGE_COMMENTS,
        max_length=10240,
        description="ImageComments of every derived instance ({version}: srnode's, {model} "
        "and {model_version}: the model's); the source's comments follow on a new line",
    )
    series_number_offset: int = Field(1000, ge=0, description="added to the source's SeriesNumber")
    manufacturer: str = Field(
        "srnode",
        description="Manufacturer in the ContributingEquipmentSequence item srnode adds; "
        "also how srnode recognises its own output (never routed again)",
    )
    data_consistency: bool = Field(
        True,
        description="project the output back onto the acquired pixels (the result, "
        "downsampled, equals the source); off gives other UIDs",
    )
    keep_private_tags: bool = Field(
        False,
        description="copy the source's private (odd group) attributes into the derived "
        "instances; off: dropped, since they may describe the acquired pixels",
    )

    @field_validator("description_suffix", "image_comments")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        try:
            v.format(scale=2, version="1", model="m", model_version="1")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(
                f"unknown placeholder or stray brace ({e}); placeholders: "
                "{scale}, {version}, {model}, {model_version}"
            ) from None
        return v


class EngineSettings(_Section):
    """How the networks run."""

    backend: str = Field(
        "auto",
        description="auto (the fastest path measured on this host at a model's first load, "
        "within the fidelity gate; at serve start for the routed models) or one path: "
        + ", ".join(BACKEND_NAMES[1:]),
    )
    threads: int = Field(0, ge=0, description="CPU threads (0: all cores)")
    model_dirs: list[Path] = Field(
        default_factory=list, description="more folders with model cards (*.json + weights)"
    )

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        if v not in BACKEND_NAMES:
            raise ValueError(f"must be one of {', '.join(BACKEND_NAMES)}")
        return v


class SchedulerSettings(_Section):
    """When a series is complete, and the workers that enhance it."""

    stable_age: float = Field(
        10.0, gt=0, description="a series is complete after this many quiet seconds"
    )
    tick: float = Field(1.0, gt=0, description="seconds between completeness checks")
    workers: int = Field(1, ge=1, description="series enhanced at the same time")
    job_max_attempts: int = Field(3, ge=1, description="processing attempts before a job fails")
    job_retry_delay: float = Field(
        10.0, ge=0, description="seconds before a failed processing attempt reruns"
    )
    job_lease: float = Field(
        300.0, gt=0, description="a claim not renewed for this long is free again (crashed worker)"
    )
    resent_series: Literal["process", "ignore"] = Field(
        "process",
        description="a series whose instances all arrive again after its job ended: "
        "process (enhance and export it again; the derived UIDs are the same, so the PACS "
        "gets no duplicates) or ignore. Either way the log and the audit trail "
        "(series.resent) say so",
    )


class DatabaseSettings(_Section):
    """Where jobs, series and the audit trail are kept."""

    url: str | None = Field(
        None,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://srnode@db/srnode (unset: "
        "SQLite in data_dir/srnode.db)",
    )
    # "normal": a commit is not fsynced (WAL keeps it safe from a killed process; after a
    # power loss the node re-indexes fsynced spool files on start)
    sqlite_synchronous: Literal["normal", "full"] = Field(
        "normal",
        description="SQLite only. normal: commits are not fsynced (the fsynced spool is "
        "re-indexed on start after a power loss); full: every commit is fsynced too",
    )


class SpoolSettings(_Section):
    """Received instances on disk (``<data_dir>/spool``). Retention times are hours since
    the series' job ended; 0 keeps those files for good. ``srnode gc`` shows and frees
    what they allow now; a running node applies them every 10 minutes."""

    keep_after_export: bool = Field(
        False,
        description="keep the source files of a series once every destination has its "
        "derived series (then retention_hours applies); off: deleted at once",
    )
    retention_hours: float = Field(
        24.0, ge=0, description="how long source files kept after export stay"
    )
    skipped_retention_hours: float = Field(
        24.0,
        ge=0,
        description="how long source files of series that were not enhanced (no route "
        "matched, a route said ignore, the engine refused every image) stay",
    )
    failed_retention_hours: float = Field(
        168.0,
        ge=0,
        description="how long source and derived files of failed jobs stay (time for "
        "'srnode jobs retry')",
    )
    fsync: bool = Field(
        True, description="fsync each instance and its folder before answering Success"
    )


class DerivedSettings(_Section):
    """Derived instances on disk (``<data_dir>/derived``) once they were sent."""

    keep: bool = Field(
        False,
        description="keep derived files once every destination has them (then "
        "retention_hours applies); off: deleted at once",
    )
    retention_hours: float = Field(
        72.0, ge=0, description="how long kept derived files stay (0: for good)"
    )


class StorageSettings(_Section):
    """The disk reserve of the data dir's file system."""

    min_free_gb: float = Field(
        5.0,
        ge=0,
        description="below this much free space (GB) new associations are refused and "
        "C-STORE / STOW-RS answer 0xA700 (out of resources) until space is back; C-ECHO "
        "still works",
    )


class WebSettings(_Section):
    """The web console, the REST API, /metrics and the STOW-RS endpoint."""

    enabled: bool = Field(True, description="serve the web side at all")
    host: str = Field("127.0.0.1", description="address it listens on")
    port: int = Field(8080, ge=1, le=65535, description="its port")
    max_request_mb: float = Field(
        1024.0,
        gt=0,
        description="largest STOW-RS request (held in memory while stored); larger get 413",
    )
    token: str | None = Field(
        None,
        min_length=12,
        description="when set, every route but /healthz needs 'Authorization: Bearer "
        "<token>' or HTTP Basic with the token as password (better: SRNODE_WEB__TOKEN)",
    )


class Settings(_Section):
    """The whole configuration: one TOML file, every key optional."""

    node: NodeSettings = Field(default_factory=NodeSettings)
    allow: list[AllowedAE] = Field(default_factory=list)
    destinations: list[Destination] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=default_routes)
    derive: DeriveSettings = Field(default_factory=DeriveSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    derived: DerivedSettings = Field(default_factory=DerivedSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    web: WebSettings = Field(default_factory=WebSettings)

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        """Destinations complete and uniquely named, routes naming known destinations:
        the errors that would otherwise fail every job later."""
        names: set[str] = set()
        for d in self.destinations:
            if d.name in names:
                raise ValueError(f"destinations: the name {d.name!r} is used twice")
            names.add(d.name)
            missing = d.missing()
            if missing:
                raise ValueError(
                    f"destinations.{d.name}: {', '.join(missing)} required for kind = {d.kind}"
                )
        for r in self.routes:
            unknown = [n for n in r.destinations if n not in names]
            if unknown:
                known = ", ".join(sorted(names)) or "none configured"
                raise ValueError(
                    f"routes.{r.name}.destinations: no destination named {unknown[0]!r} "
                    f"(destinations: {known})"
                )
        return self


def _format_error(err: ValidationError, raw: object = None) -> str:
    """The first error as one line naming the key; a list entry is named by its ``name``
    (``routes.skip-scouts.model``) where ``raw``, the validated input, gives one."""
    e = err.errors()[0]
    # a tagged union adds the tag to the location (destinations.0.dimse.port): drop it
    loc = [
        p
        for i, p in enumerate(e["loc"])
        if not (i and isinstance(e["loc"][i - 1], int) and p in ("dimse", "stow"))
    ]
    node = raw
    for i, p in enumerate(loc):
        try:
            node = node[p]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            break
        if isinstance(p, int) and isinstance(node, dict) and isinstance(node.get("name"), str):
            loc[i] = node["name"]
    msg = e["msg"].removeprefix("Value error, ")
    if not loc:  # a model-level check: its message starts with the key
        return f"config: {msg}"
    return f"config: {'.'.join(str(p) for p in loc)}: {msg}"


def validate_settings(raw: dict) -> Settings:
    """The one validation of a whole configuration (the file with its overrides, the
    command line, each live change): :class:`ConfigError` with one line naming the key."""
    try:
        return Settings.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_error(e, raw)) from None


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
    return validate_settings(raw)

"""``srnode serve``: the Storage SCP, the scheduler, the workers and (if enabled) the web
console in one process; ``srnode worker``: workers only, on a shared database.

SIGTERM / Ctrl-C stop cleanly: the SCP stops accepting and lets in-flight associations
finish (``node.drain_timeout``), workers stop between instances and leave their job
resumable (claim released; the next start, or another worker, takes it up).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from dicom_node.admin.live_config import LiveConfig
from dicom_node.admin.runtime import LiveSync, start_live
from dicom_node.config import Settings
from dicom_node.data_dir import DataDir
from dicom_node.jobs import warmup
from dicom_node.jobs.engines import EngineCache
from dicom_node.jobs.scheduler import NodeScheduler
from dicom_node.jobs.worker import Worker
from dicom_node.receive import fastpath, ingest
from dicom_node.receive.access import REJECT_REASON, Allowlist
from dicom_node.receive.ingest import Ingestor
from dicom_node.spool import Spool
from dicom_node.startup import StartupError, bind_listener, check_startup, port_in_use
from dicom_node.store.database import Database
from dicom_node.store.jobs import Jobs
from dicom_node.store.migrate import SchemaError

log = logging.getLogger(__name__)


@dataclass
class Intake:
    """The database, spool and ingest of one node process."""

    db: Database
    spool: Spool
    ingestor: Ingestor


def open_intake(settings: Settings, *, migrate: bool = True) -> Intake:
    """The one place a database, its spool and the ingest on them are wired together
    (``srnode serve`` and its receiver processes, ``srnode worker``, ``srnode pull``)."""
    data = DataDir.of(settings)
    data.root.mkdir(parents=True, exist_ok=True)
    db = Database.from_settings(settings)
    if migrate:
        try:
            db.create_or_migrate()
        except SchemaError as e:
            db.close()
            raise StartupError(str(e)) from None
    spool = Spool(data.spool, fsync=settings.spool.fsync)
    return Intake(db, spool, Ingestor(db, spool, settings=settings))


def storage_scp(settings: Settings, intake: Intake, *, reuse_port: bool) -> Any:
    """The Storage SCP on ``intake``, with calling AE titles from the config and the
    database, and refusals audited."""
    from dicom_node.receive.scp import StorageSCP

    db = intake.db
    return StorageSCP(
        settings,
        intake.ingestor,
        reuse_port=reuse_port,
        dynamic_aes=db.list_ae_titles,
        on_reject=lambda ae, host: db.audit(
            "association_rejected", ae_title=ae, host=host, detail=REJECT_REASON
        ),
    )


def node_claim_prefix(settings: Settings) -> str:
    """Claims of this node (host + data dir): released at start, since we were the holder."""
    key = hashlib.sha1(str(DataDir.of(settings).root.resolve()).encode()).hexdigest()[:10]
    return f"{socket.gethostname()}:serve:{key}:"


class Node:
    """All parts of one node process. ``start()`` returns; ``stop()`` is idempotent."""

    def __init__(self, settings: Settings, *, role: str = "serve") -> None:
        self.settings = settings
        self.role = role
        self.data_dir = DataDir.of(settings).root
        self.db: Database | None = None
        self.spool: Spool | None = None
        self.ingestor: Ingestor | None = None
        self.scp: Any = None
        self.scheduler: NodeScheduler | None = None
        self.workers: list[Worker] = []
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self._web: Any = None
        self.live: LiveConfig | None = None
        self._live_sync: LiveSync | None = None
        self._web_thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._receivers: list[Any] = []
        self._receiver_stop: Any = None
        self.port: int | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        s = self.settings
        check_startup(s, self.role)
        # our own lines say what happened, once per event; theirs are per PDU / per tick
        for noisy in ("pynetdicom", "apscheduler"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        if s.node.fast_receive:  # the SCP's receive path, and exports (see fastpath)
            fastpath.install()
        try:
            intake = open_intake(s)
        except StartupError:  # the database refused: nothing started, nothing to stop
            self._stopped.set()
            raise
        self.db, self.spool = intake.db, intake.spool
        self.live, self._live_sync = start_live(self.db, s, catalog_series=self.role == "serve")
        if self.role == "serve":
            n = self.spool.clean_temp()
            released = Jobs(self.db).release_claims(node_claim_prefix(s))
            if n or released:
                log.info(
                    "recovered after restart: %d partial files removed, %d jobs resumed",
                    n,
                    released,
                )
            self.ingestor = intake.ingestor
            self.ingestor.reconcile()
            ingest.configure(self.ingestor)
            self.scp = storage_scp(s, intake, reuse_port=s.node.receivers > 1)
            # the live allowlist (seeded from the config): read for every association
            self.scp.ae.allowlist = Allowlist([], self.live.allowed_aes, refresh=0)
            try:
                _, self.port = self.scp.start()
            except OSError as e:  # taken since check_startup
                if e.errno == errno.EADDRINUSE:
                    raise port_in_use("node.port", s.node.host, s.node.port) from None
                raise
            if s.node.receivers > 1:
                self._start_receivers(self.port)
        self.scheduler = NodeScheduler(self.db, s, self.spool, on_queued=self._on_queued)
        self.scheduler.start()
        engines = EngineCache.from_settings(s)
        warmup.start(engines, s)  # the routed models' backends, before the first job
        prefix = node_claim_prefix(s) if self.role == "serve" else f"{socket.gethostname()}:worker:"

        for i in range(s.scheduler.workers):
            w = Worker(
                self.db,
                s,
                f"{prefix}{os.getpid()}:{i}",
                engines=engines,
                spool=self.spool,
                wake=self.wake,
                stop=self.stopping,
            )
            w.start()
            self.workers.append(w)
        if self.role == "serve" and s.web.enabled:
            from dicom_node.web.auth import bind_host

            self._start_web(
                bind_listener(
                    "web.port",
                    bind_host(s, self.db),
                    s.web.port,
                    hint=" (or set web.enabled = false)",
                )
            )
        log.info(
            "srnode %s started: AE %s port %s, data %s, db %s, %d worker(s)",
            self.role,
            s.node.ae_title,
            self.port,
            self.data_dir.resolve(),  # a relative node.data_dir depends on the start folder
            "sqlite" if self.db.is_sqlite else "postgresql",
            len(self.workers),
        )
        if self.role == "serve" and not s.allow and not self.db.list_ae_titles():
            log.warning(
                "no calling AE title is allowed yet: every association will be rejected; "
                "add one with --allow AE[@HOST], [[allow]] in the config, or 'srnode aet add'"
            )
        if self.role == "serve" and not s.destinations:
            log.warning("no destination configured: received series are kept but not sent")

    def _start_receivers(self, port: int) -> None:
        """node.receivers - 1 more processes accepting on the same port (SO_REUSEPORT)."""
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        raw = self.settings.model_dump(mode="json")
        raw["node"]["port"] = port
        raw["allow"] = []  # receivers read the live allowlist from the database
        js = Settings.model_validate(raw).model_dump_json()
        self._receiver_stop = ctx.Event()
        for i in range(self.settings.node.receivers - 1):
            ready = ctx.Event()
            p = ctx.Process(
                target=run_receiver,
                args=(js, self._receiver_stop, ready),
                name=f"srnode-receiver-{i + 1}",
                daemon=False,
            )
            p.start()
            if not ready.wait(60):
                log.error("receiver %d did not start", i + 1)
            self._receivers.append(p)
        log.info("%d receiver processes share port %d", len(self._receivers) + 1, port)

    def _stop_receivers(self) -> None:
        if not self._receivers:
            return
        self._receiver_stop.set()
        for p in self._receivers:
            p.join(self.settings.node.drain_timeout + 10)
            if p.is_alive():
                p.terminate()
                p.join(5)
        self._receivers = []

    def _on_queued(self, job_ids: list[int]) -> None:
        self.wake.set()

    def _start_web(self, sock: socket.socket) -> None:
        """The web app on ``sock`` (bound by the caller, so a taken port fails the start)."""
        try:
            import uvicorn

            from dicom_node.web.app import create_app
            from dicom_node.web.auth import bind_host
        except ImportError as e:
            sock.close()
            log.warning("web console not started: %s", e)
            return
        try:
            app = create_app(self.settings, self.ingestor.store, self.db, self.live)
        except Exception:
            sock.close()
            log.exception("web console not started: create_app failed")
            return
        w = self.settings.web
        host = bind_host(self.settings, self.db)
        config = uvicorn.Config(app, host=host, port=w.port, log_level="warning", access_log=False)
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._web = server
        self._web_thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="web", daemon=True
        )
        self._web_thread.start()
        log.info("web console on http://%s:%s", host, w.port)

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("srnode stopping")
        t0 = time.monotonic()
        if self._receiver_stop is not None:
            self._receiver_stop.set()  # all receivers drain at the same time
        if self.scp is not None:
            self.scp.stop(drain=self.settings.node.drain_timeout)
        self._stop_receivers()
        if self._web is not None:
            self._web.should_exit = True
            if self._web_thread is not None:
                self._web_thread.join(10)
        self.stopping.set()
        self.wake.set()
        if self.scheduler is not None:
            self.scheduler.stop()
        if self._live_sync is not None:
            self._live_sync.stop()
        for w in self.workers:
            w.join(60)
        ingest.configure(None)
        if self.db is not None:
            self.db.close()
        log.info("srnode stopped in %.1f s", time.monotonic() - t0)

    def serve_forever(self) -> None:
        """Run until SIGTERM / SIGINT, then stop cleanly."""
        done = threading.Event()

        def _signal(signum: int, _frame: Any) -> None:
            log.info("signal %s received", signal.Signals(signum).name)
            done.set()

        check_startup(self.settings, self.role)  # before anything starts or logs
        signal.signal(signal.SIGTERM, _signal)
        signal.signal(signal.SIGINT, _signal)
        try:
            self.start()
            while not done.wait(1.0):
                pass
        finally:
            self.stop()


# --------------------------------------------------------------------------- receivers
def run_receiver(settings_json: str, stop: Any, ready: Any) -> None:
    """An extra receiver process (``node.receivers > 1``): its own SCP on the shared port
    (SO_REUSEPORT), its own database connections and GIL. Stops when ``stop`` is set or
    the parent process is gone; in-flight associations finish first."""
    import multiprocessing
    import signal as _signal

    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)  # the parent decides when we stop
    _signal.signal(_signal.SIGTERM, lambda *_: stop.set())
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[receiver]: %(message)s"
    )
    for noisy in ("pynetdicom", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = Settings.model_validate_json(settings_json)
    intake = open_intake(settings, migrate=False)  # the parent migrated
    scp = storage_scp(settings, intake, reuse_port=True)
    scp.start()
    ready.set()
    parent = multiprocessing.parent_process()
    try:
        while not stop.wait(0.5):
            if parent is not None and not parent.is_alive():
                break
    finally:
        scp.stop(drain=settings.node.drain_timeout)
        intake.db.close()

"""The node's side of the live configuration: seed it from the settings at start, keep the
running node in step with it (changes made by another process, such as ``srnode aet add``
or a second node on the same database), and catalogue new series for the job search."""

from __future__ import annotations

import logging
import threading

from dicom_node.admin import catalog
from dicom_node.admin.live_config import LiveConfig
from dicom_node.config import Settings

log = logging.getLogger(__name__)


class LiveSync:
    """A daemon thread: every ``interval`` s, reload a changed configuration and (``catalog``)
    catalogue new series."""

    def __init__(self, live: LiveConfig, *, catalog_series: bool, interval: float = 2.0) -> None:
        self.live = live
        self.catalog_series = catalog_series
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-config", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.interval):
            try:
                if self.live.maybe_reload():
                    log.info("live configuration changed elsewhere: reloaded")
                if self.catalog_series:
                    catalog.index_new_series(self.live.engine)
                failing = False
            except Exception as e:  # the database hiccups: say it once, keep going
                if not failing:
                    log.warning("live configuration: %s (will retry)", type(e).__name__)
                failing = True


def start_live(
    db: object, settings: Settings, *, catalog_series: bool
) -> tuple[LiveConfig, LiveSync]:
    """Seed the live configuration from ``settings``, apply it to them, start the sync."""
    live = LiveConfig(db, settings)
    live.seed(settings)
    sync = LiveSync(live, catalog_series=catalog_series)
    sync.start()
    return live, sync

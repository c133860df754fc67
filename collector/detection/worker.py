"""The detection stage in a process of its own, so that ingest keeps its core and detection gets the other.

The serve process starts one worker (``DetectionWorker.start``); the worker opens the store itself and
runs ``DetectionStage`` over the stored stream until told to stop, then runs until idle once more, so
what was stored is looked at before the collector ends. Its positions live in the store, as they do
when detection runs in a thread: a worker that crashes, or is killed, is started again by the serve
process (``ensure_running``) and goes on from the last recorded position, neither skipping an event
nor raising an alert twice. SIGHUP to the worker re-reads the rules file; a file that fails keeps the
last good rules (the serve process forwards its own SIGHUP). The detection lag is the store's
(``/metrics`` ``shoumi_detection_lag_events``), wherever detection runs.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
from typing import Any

from collector.settings import CollectorSettings

__all__ = ["DetectionWorker", "run_worker"]

log = logging.getLogger("shoumi.collector.detection")

# A round that found events, but fewer than _BACKLOG, waits _TRICKLE_WAITS x detection_seconds (1 s by
# default) before the next; a round that found more goes on at once; one that found none waits
# detection_seconds.
_BACKLOG = 2_000
_TRICKLE_WAITS = 4


class DetectionWorker:
    """Starts, watches and stops the detection process of one serve process."""

    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        self._ctx = mp.get_context("spawn")  # a fresh interpreter: no threads or connections of the parent
        self._stop: Any = None
        self._proc: Any = None
        self.starts = 0
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The worker's process id while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.is_alive() else None

    def start(self) -> None:
        """Starts the worker process."""
        with self._lock:
            self._stop = self._ctx.Event()
            self._proc = self._ctx.Process(target=run_worker, args=(self.settings.model_dump_json(), self._stop),
                                           name="shoumi-detection", daemon=True)
            self._proc.start()
            self.starts += 1

    def ensure_running(self) -> None:
        """Starts the worker again if it ended on its own (a crash): it goes on from the stored positions."""
        with self._lock:
            proc = self._proc
            if proc is None or proc.is_alive() or self._stop.is_set():
                return
            log.error("the detection worker ended (exit code %s); starting it again", proc.exitcode)
        self.start()

    def reload(self) -> None:
        """Tells the worker to re-read the rules file."""
        pid = self.pid
        if pid is not None:
            os.kill(pid, signal.SIGHUP)

    def stop(self, timeout: float = 20.0) -> None:
        """Lets the worker finish what is stored (until idle), then ends it."""
        with self._lock:
            proc, stop = self._proc, self._stop
        if proc is None:
            return
        stop.set()
        proc.join(timeout)
        if proc.is_alive():
            log.error("the detection worker did not stop within %.0f s; terminating it", timeout)
            proc.terminate()
            proc.join(10)


def run_worker(settings_json: str, stop: Any) -> None:
    """The worker process: detection over the stored stream until ``stop`` is set."""
    from collector.detection.config import RulesError, load_rules, summarize
    from collector.detection.service import DetectionStage
    from collector.ingest.gate import WriteGate
    from collector.storage import open_store
    from collector.wiring import detection_rules

    parent = os.getppid()
    _end_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the serve process stops us
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s [detection] %(message)s")
    settings = CollectorSettings.model_validate_json(settings_json)
    store = open_store(settings.store_location())
    stage = DetectionStage(store, rules=detection_rules(settings),
                           write_gate=WriteGate.for_store(settings.data_dir, settings.database_url))
    from collector import gc_tuning

    gc_tuning.tune()
    reload = threading.Event()
    signal.signal(signal.SIGHUP, lambda _s, _f: reload.set())
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())
    try:
        while not stop.is_set():
            if os.getppid() != parent:  # the serve process was killed: no orphan goes on
                return
            if reload.is_set() and settings.rules_file is not None:
                reload.clear()
                try:
                    rules = load_rules(settings.rules_file)
                    stage.use(rules)
                    log.warning("rules reloaded from %s: %s", settings.rules_file, summarize(rules))
                except RulesError as exc:
                    log.error("rules reload failed, keeping the last good rules: %s", exc.render())
            try:
                looked = stage.run_once()
            except Exception:  # a store away, a bug in one run: logged, tried again (the positions are stored)
                log.exception("detection run failed")
                looked = 0
            if looked == 0:
                stop.wait(settings.detection_seconds)
            elif looked < _BACKLOG:  # a trickle: let it gather (a round costs its states' reads and writes)
                stop.wait(settings.detection_seconds * _TRICKLE_WAITS)
        stage.run_until_idle()  # what was stored is looked at before the collector ends
    finally:
        store.close()


def _end_with_parent() -> None:
    """Asks Linux to send SIGTERM when the serve process dies (kill -9 included); elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

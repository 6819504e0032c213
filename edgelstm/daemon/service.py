"""The daemon: one thread drives everything.

A selector watches every link's descriptor and a wake-up pipe. Each turn reads what arrived
(at most max_batch messages per link), steps every ready stream in one bank.step, publishes
the predictions, hands acks to the ledger, and flushes each link once. Only what can block
runs aside, bounded: the TCP/TLS connect (mqtt_link), replies to a slow board (serial_link)
and the metrics HTTP server.

Start-up and shutdown, in order (run()):
  lock the checkpoint -> restore -> open links -> settle the heap -> metrics server ->
  READY -> loop -> final commit (predictions confirmed, checkpoint, acks) -> close links
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Callable

from ..engine import Model
from ..errors import CheckpointError, ConfigError
from ..kernels import entries
from ..model.loader import load
from ..transports.base import Link
from ..transports.mqtt_link import MqttLink
from ..transports.selector import LinkSelector
from ..transports.serial_link import SerialLink
from . import checkpoint, systemd
from .config import DaemonConfig
from .heap import HeapKeeper, settle_heap
from .ledger import Ledger
from .metrics import Metrics
from .outputs import Outputs, Sink
from .pipeline import Pipeline

log = logging.getLogger(__name__)
IDLE_WAIT_S = 0.05          # the longest a turn waits for input: timers are checked this often
EVICT_PER_TURN = 256        # idle streams forgotten per sweep step: live streams never wait long


class Daemon:
    def __init__(self, cfg: DaemonConfig, sink: Sink | None = None, clock: Callable[[], float] = time.monotonic,
                 status: Callable[[str], None] | None = None):
        """status: told, if the first model's kernels take a while, what is happening (Model.warmup);
        None logs it."""
        self.cfg = cfg
        self.clock = clock
        self.metrics = Metrics()
        count = self.metrics.drops.inc
        model = self._load_model(status)
        self.mqtt = MqttLink(cfg.mqtt, model.input_size, count) if cfg.mqtt.url else None
        self.serial = SerialLink(cfg.serial, model.input_size, count) if cfg.serial.port else None
        self.links: list[Link] = [link for link in (self.mqtt, self.serial) if link is not None]
        mode = cfg.effective_ack
        interval = cfg.commit_interval_s if mode == "checkpoint" else cfg.checkpoint_interval_s
        self.ledger = Ledger(mode, cfg.checkpoint, interval, checkpoint.save,
                             lambda: self.metrics.checkpoint_failures.inc())
        self.outputs = Outputs(cfg, model, self.mqtt, sink, count, self.metrics.discovery.inc)
        self.pipeline = Pipeline(cfg, model, self.metrics, self.ledger, self.outputs)
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._selector = LinkSelector(self.links)
        self._due = {"log": 0.0, "evict": 0.0, "watchdog": 0.0}
        self._heap = HeapKeeper(self.clock())
        self._watchdog_s = systemd.watchdog_interval()          # 0: no watchdog

    # -- control from outside (signal handlers, other threads) ---------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self._wake()

    def request_reload(self) -> None:
        self._reload.set()
        self._wake()

    def _wake(self) -> None:
        self._selector.wake()

    # -- lifecycle ------------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stop(); returns the exit code."""
        try:
            lock = checkpoint.acquire_lock(self.cfg.checkpoint) if self.cfg.checkpoint else None
        except CheckpointError as exc:
            log.error("%s", exc)
            return 1
        try:
            return self._serve()
        finally:
            if lock is not None:
                lock.release()

    def _serve(self) -> int:
        now = self.clock()
        self.pipeline.restore_from(self.cfg.checkpoint, now)
        for link in self.links:
            link.open(now)
        settle_heap()
        try:
            self._start_metrics_server()
        except ConfigError as exc:
            log.error("%s", exc)
            return 1
        if threading.current_thread() is threading.main_thread():
            self._install_signal_handlers()
        systemd.notify("READY=1\nSTATUS=running")
        try:
            while not self._stop.is_set():
                self._turn()
        finally:
            self._shutdown()
        return 0

    def _load_model(self, status: Callable[[str], None] | None = None) -> Model:
        t0 = time.perf_counter()
        model = load(self.cfg.model)
        # a cold cache compiles for a while: say so (status line, or the log)
        model.warmup(status=status or (lambda text: log.info("model %s: %s", self.cfg.model, text)))
        log.info("model %s ready in %.2f s (%s kernels): %d -> %d, hash %s", self.cfg.model,
                 time.perf_counter() - t0, entries.origin(), model.input_size, model.output_size,
                 model.content_hash[:12])
        return model

    def _start_metrics_server(self) -> None:
        if not self.cfg.metrics_port:
            return
        from prometheus_client import start_http_server
        host, port = self.cfg.metrics_host, self.cfg.metrics_port
        try:
            start_http_server(port, addr=host, registry=self.metrics.registry)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {host}:{port} ({exc.strerror}): choose another "
                              "metrics_port, or 0 to turn metrics off") from None
        log.info("metrics at http://%s:%d/metrics", host, port)

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())

    def _shutdown(self) -> None:
        """Readings still held for reordering stay unacknowledged: the broker delivers them again."""
        systemd.notify("STOPPING=1")
        confirmed = True
        if self.mqtt is not None and self.outputs.published():
            mark = self.outputs.published()
            confirmed = self.mqtt.drive(lambda: self.outputs.confirmed(mark), timeout=3.0)
        if not self.ledger.commit_all(self.pipeline.snapshot(self.clock()), confirmed):
            unconfirmed = len(self.mqtt.publications) if self.mqtt is not None else 0
            log.warning("final commit not made (%d predictions unconfirmed by the broker, or the checkpoint failed): "
                        "the last checkpoint is kept and the broker will deliver the unacknowledged readings again "
                        "on restart", unconfirmed)
        for link in self.links:
            link.flush()
            link.close()
        self._selector.close()
        self.log_summary()
        log.info("stopped cleanly")

    # -- the loop ---------------------------------------------------------------------------------

    def _turn(self) -> None:
        self._selector.watch()
        messages = self._selector.gather(IDLE_WAIT_S, self.cfg.max_batch, self.clock)
        if messages and len(messages) < self.cfg.max_batch and self.cfg.linger_s:
            # more per turn: fewer wake-ups per reading
            messages += self._selector.gather(self.cfg.linger_s, self.cfg.max_batch, self.clock)
        if messages:
            self.pipeline.handle(messages, self.clock())
        now = self.clock()
        self.pipeline.handle([], now)               # the reorder buffer's timeouts
        self.ledger.tick(now, lambda: self.pipeline.snapshot(now), self.outputs)
        for link in self.links:
            link.tick(now)
            link.flush()
        self._periodic(now)

    def _periodic(self, now: float) -> None:
        due = self._due
        if self._reload.is_set():
            self._reload.clear()
            self.reload()
        if self._watchdog_s and now >= due["watchdog"]:
            systemd.notify("WATCHDOG=1")
            due["watchdog"] = now + self._watchdog_s
        if now >= due["evict"]:
            self.metrics.streams.set(len(self.pipeline.seq))
            more = self.pipeline.evict_idle(now, EVICT_PER_TURN) == EVICT_PER_TURN
            due["evict"] = now if more else now + 1.0
            self._log_evictions(more)
        self._heap.tick(now)
        if now >= due["log"]:
            if due["log"]:
                self.log_summary()
            due["log"] = now + self.cfg.log_every_s

    def _log_evictions(self, sweep_goes_on: bool) -> None:
        evicted = self.pipeline.evicted
        if sweep_goes_on or not any(evicted.values()):
            return
        log.info("forgot %d streams silent for over %.0f s and %d to make room for new ones (capacity %d)",
                 evicted["idle"], self.cfg.policy.stream_ttl_s, evicted["capacity"], self.cfg.capacity)
        evicted["idle"] = 0
        evicted["capacity"] = 0

    def reload(self) -> None:
        """SIGHUP: load the model file again; a file that fails to load changes nothing."""
        try:
            new = self._load_model()
        except Exception as exc:               # a bad new file must not stop a running service
            log.error("reload failed, keeping the current model: %s", exc)
            return
        if not self.pipeline.swap_model(new):
            return
        settle_heap()                          # the old model's cycles are collected here

    def log_summary(self) -> None:
        s = self.metrics.summary()
        log.info("streams %d | readings %d predictions %d | duplicates %d replayed %d gaps %d resyncs %d "
                 "nonfinite %d | bad payloads %d drops %d | held %d unacked %d | step p50 %.3f ms p99 %.3f ms | "
                 "e2e p50 %.2f ms p99 %.2f ms",
                 len(self.pipeline.seq), s["readings"], s["predictions"], s["duplicates"], s["replays"], s["gaps"],
                 s["resyncs"], s["nonfinite"], s["bad_payloads"], s["drops"], self.pipeline.seq.held_count(),
                 self.ledger.unacknowledged(), s.get("step_p50_ms", 0), s.get("step_p99_ms", 0),
                 s.get("e2e_p50_ms", 0), s.get("e2e_p99_ms", 0))

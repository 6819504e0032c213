"""The daemon: I/O threads hand readings over a bounded queue to one inference thread, which
owns every stream's state, steps all streams with new data in one kernel call, publishes the
predictions, checkpoints, and acknowledges readings once their state is committed."""

from __future__ import annotations

import gc
import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass

import numpy as np

from ..engine import Model, StreamState
from ..errors import NumericalError
from ..model.loader import load
from ..protocol.payload import prediction_json
from . import checkpoint, systemd
from .config import DaemonConfig
from .metrics import Metrics
from .replay import ReplayCache
from .streams import WRAP, StreamInfo, advance, classify

log = logging.getLogger(__name__)


@dataclass
class Window:
    acks: list                                  # acknowledgements to send, in arrival order
    pubs: list                                  # paho MessageInfo of the window's predictions
    snapshot: checkpoint.Checkpoint             # the state these readings led to


def send_acks(acks: list) -> None:
    for ack in acks:                            # in arrival order, as MQTT requires
        ack()


def settle_heap() -> None:
    """Put what start-up left alive (numba, llvmlite, the model: ~100k objects) beyond the garbage
    collector's reach. A full collection over them took 42 ms on a 2-core VM: a pause that
    every reading in flight waited out, the daemon's p99 latency. Called again after a reload."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class Daemon:
    def __init__(self, cfg: DaemonConfig, sink=None):
        self.cfg = cfg
        self.metrics = Metrics()
        self.queue: queue.Queue = queue.Queue(maxsize=cfg.queue_size)
        self.drops: dict = {}                      # counted by I/O threads at hand-off
        self._drops_seen: dict = {}
        self.stop_event = threading.Event()
        self.reload_event = threading.Event()
        self.info: dict[str, StreamInfo] = {}
        self.pending_acks: list = []
        self.pending_pubs: list = []               # this commit window's prediction publishes
        self.closing: Window | None = None         # the window waiting for its predictions' PUBACKs
        self.dirty = False                         # state changed since the last checkpoint
        self.held: dict[str, dict[int, object]] = {}   # stream -> seq -> Inbound (the reorder buffer)
        self.sink = sink                           # callable(stream, seq, t_in, y, replay) overriding outputs
        self.replay = ReplayCache(cfg.policy.replay_window)
        self.model = self._load_model()
        self.bank = self.model.bank(cfg.capacity, backend=cfg.backend)
        self.sources: list = []
        self.mqtt = None

    # -- set-up ----------------------------------------------------------------------------------

    def _load_model(self) -> Model:
        t0 = time.perf_counter()
        model = load(self.cfg.model)
        model.warmup()
        log.info("model %s loaded and compiled in %.2f s: %d -> %d, hash %s", self.cfg.model,
                 time.perf_counter() - t0, model.input_size, model.output_size, model.content_hash[:12])
        return model

    def restore(self) -> None:
        path = self.cfg.checkpoint
        if not path:
            return
        try:
            ckpt = checkpoint.load(path)
        except FileNotFoundError:
            log.info("no checkpoint at %s yet: starting every stream from zero state", path)
            return
        except (checkpoint.CheckpointError, OSError) as exc:
            log.error("checkpoint %s is unusable (%s): ignoring it, streams start from zero state", path, exc)
            return
        if ckpt.model_hash != self.model.content_hash:
            log.warning("checkpoint %s was written for model %s, not %s: ignoring it", path,
                        ckpt.model_hash[:12], self.model.content_hash[:12])
            return
        for meta, values in zip(ckpt.streams, ckpt.states):
            self.bank.set_state(meta["id"], StreamState(self.model.content_hash, values))
            self.info[meta["id"]] = StreamInfo(meta["last_seq"], meta.get("boot"), meta.get("last_t"), time.time())
        log.info("restored %d streams from %s", len(ckpt.streams), path)

    def snapshot(self) -> checkpoint.Checkpoint:
        """Every stream's state and sequence position now, copied."""
        ids = [s for s in self.bank.ids if s in self.info and self.info[s].last_seq is not None]
        states = np.array([self.bank.get_state(s).values for s in ids], np.float32).reshape(
            len(ids), self.model.state_size)
        streams = [{"id": s, "last_seq": self.info[s].last_seq, "boot": self.info[s].boot,
                    "last_t": self.info[s].last_t} for s in ids]
        return checkpoint.Checkpoint(self.model.content_hash, self.model.state_size, streams, states)

    def save_checkpoint(self) -> None:
        if self.cfg.checkpoint:
            checkpoint.save(self.cfg.checkpoint, self.snapshot())

    def open_links(self) -> None:
        from ..transports.mqtt_link import MqttLink
        from ..transports.serial_link import SerialSource
        if self.cfg.mqtt.url:
            self.mqtt = MqttLink(self.cfg.mqtt, self.model.input_size, self.queue, self.drops)
            self.mqtt.start()
        if self.cfg.serial.port:
            src = SerialSource(self.cfg.serial, self.model.input_size, self.queue, self.drops)
            src.start()
            self.sources.append(src)

    # -- the inference thread --------------------------------------------------------------------

    def run(self) -> int:
        """Run until stop_event is set; then drain, checkpoint and return the exit code 0."""
        self.restore()
        self.open_links()
        settle_heap()
        systemd.notify("READY=1\nSTATUS=running")
        watchdog = systemd.watchdog_interval()
        last = {"watchdog": 0.0, "checkpoint": time.monotonic(),
                "log": time.monotonic(), "evict": time.monotonic()}
        try:
            while not self.stop_event.is_set():
                items = self._take(timeout=0.05)
                if items:
                    self.process(items)
                now = time.monotonic()
                if watchdog and now - last["watchdog"] >= watchdog:
                    systemd.notify("WATCHDOG=1")
                    last["watchdog"] = now
                self._maybe_commit(now, last)
                if self.held:
                    self.process(self._release_held(now))
                if self.reload_event.is_set():
                    self.reload_event.clear()
                    self.reload()
                if self.cfg.policy.stream_ttl_s and now - last["evict"] >= 1.0:
                    self.evict_idle()
                    last["evict"] = now
                if now - last["log"] >= self.cfg.log_every_s:
                    self.log_summary()
                    last["log"] = now
        finally:
            self.shutdown()
        return 0

    def _take(self, timeout: float) -> list:
        try:
            first = self.queue.get(timeout=timeout)
        except queue.Empty:
            return []
        items = [first]
        while len(items) < self.cfg.max_batch:
            try:
                items.append(self.queue.get_nowait())
            except queue.Empty:
                break
        self.metrics.queue_depth.set(self.queue.qsize())
        return items

    def _maybe_commit(self, now: float, last: dict) -> None:
        """With ack = "checkpoint", a commit window closes every commit_interval_s: its readings'
        acks, its predictions and a snapshot of the state they led to are set aside, and intake
        goes on. Once the broker has confirmed those predictions, the snapshot is written and the
        readings acknowledged. A crash before that makes the broker deliver the window's readings
        again, and the older checkpoint re-applies them to the same predictions."""
        if not (self.cfg.ack == "checkpoint" and self.mqtt is not None):
            if self.cfg.checkpoint and now - last["checkpoint"] >= self.cfg.checkpoint_interval_s and self.dirty:
                self.save_checkpoint()
                self.dirty = False
                last["checkpoint"] = now
            self._ack_pending()
            return
        if self.closing is None and now - last["checkpoint"] >= self.cfg.commit_interval_s and (
                self.pending_acks or self.dirty):
            self.closing = Window(self.pending_acks, self.pending_pubs, self.snapshot())
            self.pending_acks, self.pending_pubs, self.dirty = [], [], False
            last["checkpoint"] = now
        if self.closing is not None:
            self.closing.pubs = self._unconfirmed(self.closing.pubs)
            if not self.closing.pubs:             # else: broker busy or away, try again next turn
                checkpoint.save(self.cfg.checkpoint, self.closing.snapshot)
                send_acks(self.closing.acks)
                self.closing = None

    def _unconfirmed(self, pubs: list) -> list:
        return [info for info in pubs if not self.mqtt.confirmed(info)]

    def _predictions_confirmed(self, wait_s: float = 0.0) -> bool:
        deadline = time.monotonic() + wait_s
        while True:
            self.pending_pubs = self._unconfirmed(self.pending_pubs)
            if not self.pending_pubs or time.monotonic() >= deadline:
                return not self.pending_pubs
            time.sleep(0.01)

    def _ack_pending(self) -> None:
        send_acks(self.pending_acks)
        self.pending_acks.clear()

    def process(self, items: list) -> None:
        """Handle a list of inbound items in arrival order, stepping each stream at most once
        per kernel call (a second reading of the same stream waits for the next call)."""
        self.dirty = True
        while items:
            batch, deferred, seen = [], [], set()
            for item in items:
                if item.stream in seen:
                    deferred.append(item)
                    continue
                if self._admit(item):
                    batch.append(item)
                    seen.add(item.stream)
            if batch:
                self._step(batch)
            items = deferred or self._release_held(time.monotonic())
        self._count_io_drops()

    def _release_held(self, now: float) -> list:
        """Readings leaving the reorder buffer, in sequence order: those that now follow on, and
        (after reorder_timeout_s or when the window is full) the next one past a real gap."""
        out, pol = [], self.cfg.policy
        for stream, held in list(self.held.items()):
            info = self.info.get(stream)
            cursor = info.last_seq if info is not None else None
            while held:
                nxt = (cursor + 1) % WRAP if cursor is not None else None
                if nxt in held:
                    seq = nxt
                # held keeps arrival order, so its first entry is the one waiting longest
                elif (now - next(iter(held.values())).held_at > pol.reorder_timeout_s
                      or len(held) > pol.reorder_window):
                    seq = min(held, key=lambda s: (s - cursor) % WRAP if cursor is not None else s)
                else:
                    break
                item = held.pop(seq)
                item.released = True
                out.append(item)
                cursor = seq
            if not held:
                del self.held[stream]
        return out

    def _admit(self, item) -> bool:
        """Bookkeeping before a step; True if the reading should be applied now. A reading
        that skips ahead waits, unacknowledged, in the reorder buffer for the missing ones."""
        m, pol = self.metrics, self.cfg.policy
        if item.reading is None:
            self._ack_later(item)
            self._control(item)
            return False
        r, info = item.reading, self.info.setdefault(item.stream, StreamInfo())
        held = self.held.get(item.stream, {})
        if not item.released:
            m.readings.inc(item.stream)
        verdict = classify(info, r.seq, r.boot, r.t, pol.max_gap_s, zero_is_reboot=item.serial)
        if verdict.duplicate or (not item.released and r.seq in held):
            self._ack_later(item)
            m.duplicates.inc(item.stream)
            if verdict.duplicate:
                self._replay(item.stream, r.seq)
            return False
        # A serial link delivers in order: a reading that skips ahead there is a real gap.
        if (not item.serial and not item.released and not verdict.reboot
                and 0 < verdict.missing <= pol.reorder_window):
            item.held_at = time.monotonic()
            self.held.setdefault(item.stream, {})[r.seq] = item
            return False
        self._ack_later(item)
        if verdict.missing:
            m.gaps.inc(item.stream, by=verdict.missing)
        if verdict.reboot:
            self.replay.forget(item.stream)                  # its seqs start over
            self._reset(item.stream, "reboot", pol.reboot)
        if verdict.time_gap:
            self._reset(item.stream, "time_gap", pol.gap)
        if not np.isfinite(r.x).all():
            m.nonfinite.inc(item.stream)
            self._reset(item.stream, "nonfinite", pol.nonfinite)
            advance(info, r.seq, r.boot, None, time.time())
            return False
        if item.stream not in self.bank and len(self.bank) >= self.bank.capacity:
            self.evict_idle(force_one=True)
        return True

    def _replay(self, stream: str, seq: int) -> None:
        """Answer a reading sent again with the prediction made the first time, if still kept."""
        hit = self.replay.lookup(stream, seq)
        if hit is not None:
            self.emit(stream, seq, hit[0], hit[1], replay=True)
            self.metrics.replays.inc(stream)

    def _ack_later(self, item) -> None:
        if item.ack is not None:
            self.pending_acks.append(item.ack)

    def _control(self, item) -> None:
        """A message that is not a reading: a bad payload, a RESET or a HELLO frame."""
        if item.bad_reason:
            self.metrics.bad_payloads.inc(item.bad_reason)
        elif item.reset:
            if item.stream in self.bank:
                self.bank.reset(item.stream)
                self.metrics.resets.inc(item.stream, "requested")
        elif item.boot is not None:                                      # HELLO after a boot
            info = self.info.setdefault(item.stream, StreamInfo())
            if info.boot is not None and info.boot != item.boot:
                self.replay.forget(item.stream)
                self._reset(item.stream, "reboot", self.cfg.policy.reboot)
                info.last_seq = None
                for stale in self.held.pop(item.stream, {}).values():    # readings of the old boot
                    self._ack_later(stale)
                    self.metrics.drops.inc("stale_after_reboot")
            info.boot = item.boot

    def _reset(self, stream: str, reason: str, policy: str) -> None:
        if policy == "reset":
            if stream in self.bank:
                self.bank.reset(stream)
            self.metrics.resets.inc(stream, reason)

    def _step(self, batch: list) -> None:
        ids = [it.stream for it in batch]
        X = np.stack([it.reading.x for it in batch])
        t0 = time.perf_counter()
        try:
            Y = self.bank.step(ids, X)
            failed = set()
        except NumericalError as exc:
            Y, failed = exc.outputs, set(exc.failed_ids)
        self.metrics.observe("step", [time.perf_counter() - t0])
        now = time.time()
        received = []                           # t_recv of the readings answered
        for it, y in zip(batch, Y):
            r, info = it.reading, self.info[it.stream]
            advance(info, r.seq, r.boot, r.t, now)
            if it.stream in failed:
                self._reset(it.stream, "numerical", "reset")
                continue
            t_in = r.t if r.t is not None else it.t_recv
            self.emit(it.stream, r.seq, t_in, y)
            self.replay.remember(it.stream, r.seq, t_in, y)
            self.metrics.predictions.inc(it.stream)
            received.append(it.t_recv)
        if received:
            now = time.time()
            self.metrics.observe("e2e", [now - t for t in received])

    def emit(self, stream: str, seq: int, t_in: float, y: np.ndarray, replay: bool = False) -> None:
        if self.cfg.serial.reply:
            for src in self.sources:
                if not src.send_prediction(stream, seq, y):
                    self.metrics.drops.inc("serial_reply")
        if self.sink is not None:
            self.sink(stream, seq, t_in, y, replay)
            return
        data = prediction_json(stream, seq, t_in, time.time(), self.model.content_hash, y, replay=replay)
        if self.cfg.output_kind == "mqtt" and self.mqtt is not None:
            info = self.mqtt.publish(self.cfg.mqtt.publish.format(stream=stream), data, self.cfg.mqtt.qos)
            if info is None:
                self.metrics.drops.inc("publish_queue_full")
            elif self.cfg.mqtt.qos and self.cfg.ack == "checkpoint":
                self.pending_pubs.append(info)
        else:
            os.write(1, data + b"\n")

    def _count_io_drops(self) -> None:
        for reason, n in list(self.drops.items()):
            new = n - self._drops_seen.get(reason, 0)
            if new:
                self.metrics.drops.inc(reason, by=new)
                self._drops_seen[reason] = n

    def evict_idle(self, force_one: bool = False) -> None:
        ttl, now = self.cfg.policy.stream_ttl_s, time.time()
        idle = sorted((info.last_seen, s) for s, info in self.info.items() if s in self.bank)
        for last_seen, stream in idle:
            if (ttl and now - last_seen > ttl) or force_one:
                self.bank.evict(stream)
                self.replay.forget(stream)
                del self.info[stream]
                self.metrics.forget(stream)
                self.metrics.drops.inc("evicted_idle" if not force_one else "evicted_capacity")
                log.info("stream %s evicted (idle %.0f s)", stream, now - last_seen)
                force_one = False
        self.metrics.streams.set(len(self.bank))

    def reload(self) -> None:
        """SIGHUP: load the model file again; keep state if the architecture is unchanged."""
        try:
            new = self._load_model()
        except Exception as exc:               # a bad new file must not stop a running service
            log.error("reload failed, keeping the current model: %s", exc)
            return
        self.replay.clear()
        if new.spec.architecture() == self.model.spec.architecture():
            states = {s: self.bank.get_state(s).values for s in self.bank.ids}
            self.model, self.bank = new, new.bank(self.cfg.capacity, backend=self.cfg.backend)
            for s, values in states.items():
                self.bank.set_state(s, StreamState(new.content_hash, values))
            log.info("model reloaded (hash %s); %d stream states kept", new.content_hash[:12], len(states))
        else:
            self.model, self.bank = new, new.bank(self.cfg.capacity, backend=self.cfg.backend)
            for info in self.info.values():
                info.last_t = None
            log.warning("model reloaded with a different architecture: every stream starts from zero state")
        settle_heap()                          # the old model's cycles are collected here

    def log_summary(self) -> None:
        s = self.metrics.summary()
        log.info("streams %d | readings %d predictions %d | duplicates %d replayed %d gaps %d nonfinite %d | "
                 "bad payloads %d drops %d | queue %d | step p50 %.3f ms p99 %.3f ms | e2e p50 %.2f ms p99 %.2f ms",
                 len(self.bank), s["readings"], s["predictions"], s["duplicates"], s["replays"], s["gaps"],
                 s["nonfinite"], s["bad_payloads"], s["drops"], self.queue.qsize(), s.get("step_p50_ms", 0),
                 s.get("step_p99_ms", 0), s.get("e2e_p50_ms", 0), s.get("e2e_p99_ms", 0))

    def shutdown(self) -> None:
        """Stop intake, process what is queued, checkpoint, acknowledge, close the links."""
        systemd.notify("STOPPING=1")
        if self.mqtt is not None:
            self.mqtt.stopping = True
        for src in self.sources:
            src.stop()
        leftover = []
        while True:
            try:
                leftover.append(self.queue.get_nowait())
            except queue.Empty:
                break
        if leftover:
            self.process(leftover)
        if self.closing is not None:               # one commit covers both windows now
            self.pending_acks = self.closing.acks + self.pending_acks
            self.pending_pubs = self.closing.pubs + self.pending_pubs
            self.closing = None
        confirmed = self.mqtt is None or self._predictions_confirmed(wait_s=3.0)
        if self.cfg.checkpoint and confirmed:
            self.save_checkpoint()
            self._ack_pending()
        elif not confirmed:
            log.warning("broker did not confirm %d predictions: the last checkpoint is kept and the broker "
                        "will deliver the unacknowledged readings again on restart", len(self.pending_pubs))
        else:
            self._ack_pending()
        if self.mqtt is not None:
            self.mqtt.stop()
        self.log_summary()
        log.info("stopped cleanly")

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop_event.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_event.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_event.set())

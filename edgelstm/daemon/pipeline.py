"""Messages in, predictions out: the sequencer's decisions applied to the model's stream bank.

Owns the model, the bank and the sequencer, and keeps them consistent: a stream the
sequencer forgets loses its bank row and metric series at the same moment. Every message
ends here as a prediction or a counted rejection, and is handed to the ledger for its ack.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from ..engine import Model, StreamState
from ..errors import CheckpointError, NumericalError
from ..protocol.frame import VERSION
from . import checkpoint
from .config import DaemonConfig
from .ledger import Ledger
from .messages import HelloMsg, Message, ReadingMsg, RejectedMsg, ResetMsg
from .metrics import Metrics
from .outputs import Outputs
from .sequencer import Answer, Apply, Drop, Sequencer
from .snapshots import Delta

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(self, cfg: DaemonConfig, model: Model, metrics: Metrics, ledger: Ledger, outputs: Outputs):
        self.cfg = cfg
        self.model = model
        self.metrics = metrics
        self.ledger = ledger
        self.outputs = outputs
        # no matrix products: every answer stays bit for bit what Stream.step gives, so a
        # replay of a recording (edgelstm replay) reproduces it, whatever the batch sizes were
        self.bank = model.bank(cfg.capacity, backend=cfg.backend, products=False)
        self.seq = Sequencer(cfg.policy, cfg.capacity, model.output_size, self._forget,
                             track_changes=bool(cfg.checkpoint))
        self._full_snapshot = True                      # the next snapshot holds every stream (a new image)
        self.evicted = {"idle": 0, "capacity": 0}       # since the last summary line
        self._hello_seen: set[tuple[str, int]] = set()

    # -- messages -------------------------------------------------------------------------------

    def handle(self, messages: list[Message], now: float) -> None:
        """In arrival order; each stream steps at most once per kernel call (a second reading
        of a stream in the same batch waits for the next call). Then whatever the reorder
        buffer releases (what now follows on, or waited past reorder_timeout_s)."""
        released = False
        while True:
            if not messages:
                messages = list(self.seq.release(now))
                released = True
                if not messages:
                    break
            batch: list[ReadingMsg] = []
            seen: set[str] = set()
            deferred: list[Message] = []
            for msg in messages:
                if isinstance(msg, RejectedMsg):
                    self._control(msg, now)
                elif msg.stream in seen:                # keeps each stream's order
                    deferred.append(msg)
                elif not isinstance(msg, ReadingMsg):
                    self._control(msg, now)
                elif self._admit(msg, now, released):
                    batch.append(msg)
                    seen.add(msg.stream)
            if batch:
                self._step(batch)
            messages = deferred
        for stale in self.seq.take_stale():
            self.metrics.drops.inc("stale")
            self.ledger.handled(stale.origin)

    def _admit(self, msg: ReadingMsg, now: float, released: bool) -> bool:
        """True: step it now. Counted and handed to the ledger here, except while held."""
        decision = self.seq.admit(msg, now, released)
        if isinstance(decision, Drop) and decision.counter == "capacity":
            self.ledger.handled(msg.origin)
            self.metrics.drops.inc("capacity")      # no per-stream series: the stream has no place
            return False
        if not released:
            self.metrics.readings.inc(msg.stream)
        if decision is None:
            return False                            # held for reordering: acked when it leaves
        self.ledger.handled(msg.origin)
        if isinstance(decision, Apply):
            self._reset(msg.stream, decision.resets)
            self._count_skips(msg.stream, decision)
            return True
        if isinstance(decision, Answer):
            self.metrics.duplicates.inc(msg.stream)
            self.metrics.replays.inc(msg.stream)
            self.outputs.emit(msg, decision.t_in, decision.y, replay=True)
        else:
            self._reset(msg.stream, decision.resets)
            getattr(self.metrics, decision.counter).inc(msg.stream)
        self.ledger.changed()
        return False

    def _count_skips(self, stream: str, apply: Apply) -> None:
        if apply.missing:
            self.metrics.gaps.inc(stream, by=apply.missing)
        if apply.resync:
            self.metrics.resyncs.inc(stream)

    def _control(self, msg: Message, now: float) -> None:
        self.ledger.handled(msg.origin)
        if type(msg) is RejectedMsg:
            self.metrics.bad_payloads.inc(msg.reason)
        elif type(msg) is ResetMsg:
            if msg.stream in self.bank:
                self.bank.reset(msg.stream)
                self.seq.mark_changed(msg.stream)
                self.metrics.resets.inc(msg.stream, "requested")
                self.ledger.changed()
        elif type(msg) is HelloMsg:
            self._reset(msg.stream, self.seq.hello(msg, now))
            self._check_hello(msg)

    def _check_hello(self, msg: HelloMsg) -> None:
        """PROTOCOL.md: the host logs a board whose protocol or input count differs, once per boot."""
        h = msg.hello
        if (msg.stream, h.boot) in self._hello_seen or len(self._hello_seen) > self.cfg.capacity:
            return
        self._hello_seen.add((msg.stream, h.boot))
        if h.protocol != VERSION or h.n_inputs != self.model.input_size:
            log.warning("board stream %s (boot %d) speaks protocol %d with %d inputs; this host: protocol %d, "
                        "model with %d inputs: flash matching firmware or load the matching model",
                        msg.stream, h.boot, h.protocol, h.n_inputs, VERSION, self.model.input_size)

    def _reset(self, stream: str, reasons: tuple[str, ...]) -> None:
        for reason in reasons:
            if stream in self.bank:
                self.bank.reset(stream)
                self.seq.mark_changed(stream)
            self.metrics.resets.inc(stream, reason)

    def _step(self, batch: list[ReadingMsg]) -> None:
        ids = [msg.stream for msg in batch]
        X = np.stack([msg.reading.x for msg in batch])      # (B, I)
        t0 = time.perf_counter()
        try:
            Y = self.bank.step(ids, X)                          # (B, O)
            failed: set[str] = set()
        except NumericalError as exc:
            Y, failed = exc.outputs, set(exc.failed_ids)
        self.metrics.observe("step", [time.perf_counter() - t0])
        received = []
        for msg, y in zip(batch, Y):
            t_in = msg.reading.t if msg.reading.t is not None else msg.origin.t_recv
            if msg.stream in failed:
                self.seq.applied(msg, t_in, None)
                self._reset(msg.stream, ("numerical",))
                continue
            self.seq.applied(msg, t_in, y)
            self.outputs.emit(msg, t_in, y)
            self.metrics.predictions.inc(msg.stream)
            received.append(msg.origin.t_recv)
        self.ledger.changed()
        now = time.time()
        self.metrics.observe("e2e", [now - t for t in received])

    # -- streams --------------------------------------------------------------------------------

    def _forget(self, stream: str, why: str) -> None:
        if stream in self.bank:
            self.bank.evict(stream)
        self.outputs.forget(stream)
        self.metrics.forget(stream)
        self.metrics.drops.inc(f"evicted_{why}")
        self.evicted[why] += 1

    def evict_idle(self, now: float, limit: int) -> int:
        ttl = self.cfg.policy.stream_ttl_s
        return len(self.seq.evict_idle(now, ttl, limit)) if ttl else 0

    def snapshot(self, now: float) -> Delta:
        """The state and position of every stepped stream changed since the previous snapshot
        (of every one, the first time and after a model swap), copied, and the streams gone."""
        tracks = self.seq.tracks
        changed, everything = self.seq.changed()
        full = self._full_snapshot or everything
        candidates = tracks.keys() if full else changed
        ids = [s for s in candidates if (t := tracks.get(s)) is not None and t.last_seq is not None and s in self.bank]
        removed = [] if full else list(changed.difference(ids))
        states = self.bank.states(ids).reshape(len(ids), self.model.state_size)
        rows = [(t.last_seq, -1 if t.boot is None else t.boot, math.nan if t.last_t is None else t.last_t,
                 t.last_seen) for t in map(tracks.__getitem__, ids)]
        positions = np.array(rows, checkpoint.POSITION)
        delta = Delta(self.model.content_hash, self.model.state_size, ids, positions, states, now, time.time(),
                      removed, full)
        self.seq.clear_changed()                    # only once the delta exists: nothing is lost if it failed
        self._full_snapshot = False
        return delta

    def restore_from(self, path: str, now: float) -> None:
        """Start from the checkpoint at `path` when it is usable and of this model."""
        if not path:
            log.info("no checkpoint configured: stream state lives in memory only and starts from zero after a "
                     "restart; readings are acknowledged once stepped (set checkpoint = PATH to keep state)")
            return
        try:
            ckpt = checkpoint.load(path)
        except FileNotFoundError:
            log.info("no checkpoint at %s yet: starting every stream from zero state", path)
            return
        except (CheckpointError, OSError) as exc:
            log.error("checkpoint %s is unusable (%s): ignoring it, streams start from zero state", path, exc)
            return
        known = (self.model.content_hash, *self.model.former_hashes)
        if ckpt.model_hash not in known or ckpt.state_size != self.model.state_size:
            log.warning("checkpoint %s was written for model %s, not %s: ignoring it", path,
                        ckpt.model_hash[:12], self.model.content_hash[:12])
            return
        log.info("restored %d streams from %s", self.restore(ckpt, now), path)

    def restore(self, ckpt: checkpoint.Checkpoint, now: float) -> int:
        """Streams from a checkpoint of this model, least recently seen first (so the LRU order
        holds); at most capacity of them, the most recent."""
        wall = time.time()
        if len(ckpt.ids) > self.cfg.capacity:
            log.warning("checkpoint holds %d streams, capacity is %d: keeping the %d most recent (raise capacity "
                        "to keep them all)", len(ckpt.ids), self.cfg.capacity, self.cfg.capacity)
            ckpt = ckpt.most_recent(self.cfg.capacity)
        streams = ckpt.streams
        order = sorted(range(len(streams)), key=lambda i: streams[i].get("seen", 0.0))
        for i in order:
            meta = streams[i]
            self.bank.set_state(meta["id"], StreamState(self.model.content_hash, ckpt.states[i]))
            seen = now - max(0.0, wall - meta.get("seen", wall))
            self.seq.restore(meta["id"], meta["last_seq"], meta["boot"], meta["last_t"], seen)
        return len(order)

    def swap_model(self, new: Model) -> bool:
        """SIGHUP: the same architecture keeps every stream's state, another one starts them from
        zero. Other input or output sizes are refused (the links decode and publish for these)."""
        old = self.model
        if (new.input_size, new.output_size) != (old.input_size, old.output_size):
            log.error("reload refused, keeping the current model: the new one maps %d -> %d values, the running "
                      "one %d -> %d; restart the daemon to change sizes", new.input_size, new.output_size,
                      old.input_size, old.output_size)
            return False
        same = new.spec.architecture() == self.model.spec.architecture()
        ids = self.bank.ids if same else []
        states = self.bank.states(ids)
        self.model = new
        self.outputs.use_model(new)
        self.bank = new.bank(self.cfg.capacity, backend=self.cfg.backend, products=False)
        for s, values in zip(ids, states):
            self.bank.set_state(s, StreamState(new.content_hash, values))
        self.seq.forget_answers()
        self._full_snapshot = True                  # another model's image: written anew
        if not same:
            for track in self.seq.tracks.values():
                track.last_t = None
            log.warning("model reloaded with a different architecture: every stream starts from zero state")
        else:
            log.info("model reloaded (hash %s); %d stream states kept", new.content_hash[:12], len(ids))
        self.ledger.changed()
        return True

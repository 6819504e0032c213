"""`edgelstm record`: readings from MQTT and/or serial into rotating files, for training.

The daemon's links (transports/mqtt_link.py, serial_link.py) decode and count exactly as they do
for the daemon, in the daemon's kind of loop (transports/selector.py), on one thread. Each turn:

    read      at most MAX_BATCH messages per link
    record    a reading becomes a row (duplicates and rejections are counted, never written)
    commit    the writer flushes (CSV) or closes a file (Parquet; time, size, or acks held too long)
    ack       MQTT messages whose rows are committed, in arrival order (QoS 1, manual acks)

So a reading is acknowledged only once its row would survive this process dying; one not yet
acknowledged is delivered again by the broker after a restart (persistent session). If its row
was written before the crash (it died between commit and ack), the redelivered copy is a duplicate:
the recorder starts by remembering the last rows of the newest files (RecentKeys), and skips it.

SIGTERM/SIGINT stop the loop: the last file is flushed, closed and renamed, the remaining acks
sent, the links closed; run() returns 0.
"""

from __future__ import annotations

import collections
import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..daemon.config import DaemonConfig
from ..daemon.messages import HelloMsg, Message, Origin, ReadingMsg, RejectedMsg
from ..errors import RecordingError
from ..transports.base import Link
from ..transports.mqtt_link import MqttLink
from ..transports.selector import LinkSelector
from ..transports.serial_link import SerialLink
from .files import Row
from .reader import last_keys, recording_files
from .writer import DirectoryLock, RecordingWriter, recover_leftovers

log = logging.getLogger(__name__)
IDLE_WAIT_S = 0.05              # the longest a turn waits for input: rotation and status are checked this often
MAX_BATCH = 512                 # messages taken from one link per turn
MAX_COUNTED_STREAMS = 65_536    # distinct stream ids remembered for the status line (then "65536+")


@dataclass(frozen=True)
class RecordConfig:
    links: DaemonConfig         # only its [mqtt] and [serial] sections: where readings come from
    n_inputs: int               # values per reading (the decoders refuse other counts, as the daemon does)
    directory: str
    format: str = "csv"         # or "parquet" (needs pyarrow)
    rotate_bytes: int = 64_000_000
    rotate_s: float = 3600.0
    status_every_s: float = 10.0


@dataclass(frozen=True)
class RecorderStatus:
    readings_per_s: float       # over the last status interval
    readings: int               # decoded readings received, duplicates included
    written: int
    streams: int
    rejected: int               # undecodable messages (bad payloads)
    duplicates: int
    file: Path | None           # the .part file being written

    def line(self) -> str:
        streams = f"{self.streams}+" if self.streams >= MAX_COUNTED_STREAMS else str(self.streams)
        return (f"recording {self.readings_per_s:,.1f} readings/s | {streams} streams | {self.written:,} written | "
                f"rejected {self.rejected:,} | duplicates {self.duplicates:,} | "
                f"{self.file.name if self.file else 'no file open'}")


class RecentKeys:
    """The last `capacity` (stream, boot, seq) recorded from a link that redelivers (MQTT): a reading
    among them is a duplicate. QoS 1 delivers again what was not acknowledged (an ack lost with a
    connection); the broker holds at most receive_maximum of those, so that many suffice."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._keys: collections.OrderedDict[tuple, None] = collections.OrderedDict()

    def seen(self, key: tuple) -> bool:
        """True if `key` was added before; else it is added now."""
        if key in self._keys:
            return True
        self._keys[key] = None
        if len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        return False


class Recorder:
    def __init__(self, cfg: RecordConfig, on_status: Callable[[RecorderStatus], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.clock = clock
        self.on_status = on_status
        self.drops: collections.Counter[str] = collections.Counter()         # the links' drops, by reason
        self.bad_payloads: collections.Counter[str] = collections.Counter()  # the daemon's reasons
        self.readings = self.duplicates = 0
        links = cfg.links
        self.mqtt = MqttLink(links.mqtt, cfg.n_inputs, self._count_drop) if links.mqtt.url else None
        self.serial = SerialLink(links.serial, cfg.n_inputs, self._count_drop) if links.serial.port else None
        self.links: list[Link] = [link for link in (self.mqtt, self.serial) if link is not None]
        self.writer = RecordingWriter(cfg.directory, cfg.n_inputs, cfg.format, cfg.rotate_bytes, cfg.rotate_s,
                                      clock=clock)
        self._selector = LinkSelector(self.links)
        self._stop = threading.Event()
        # (rows the writer must have committed, origin), in arrival order: acks wait for their rows
        self._acks: collections.deque[tuple[int, Origin]] = collections.deque()
        receive_maximum = links.mqtt.receive_maximum
        self._max_held = max(1, receive_maximum // 2)     # Parquet: close the file before the broker stops sending
        self._recent = RecentKeys(receive_maximum)
        self._boots: dict[str, int] = {}        # serial stream -> boot id from its board's last HELLO
        self._streams: set[str] = set()
        self._last_status = (0.0, 0)            # (clock, readings) at the last status

    def _count_drop(self, reason: str) -> None:
        self.drops[reason] += 1

    # -- control --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the current turn, close the last file and return from run(); safe from a signal handler."""
        self._stop.set()
        self._selector.wake()

    def run(self) -> int:
        """Record until stop() (or SIGTERM/SIGINT on the main thread); the exit code."""
        directory = Path(self.cfg.directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RecordingError(f"cannot create the recording directory {directory} ({exc.strerror}): choose "
                                 "another -o DIR, or create it writable by this user") from None
        lock = DirectoryLock(directory)
        rc = 0
        try:
            for note in recover_leftovers(directory):
                log.warning("%s", note)
            if self.mqtt is not None:
                self._remember_last_rows(directory)
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, lambda *_: self.stop())
                signal.signal(signal.SIGINT, lambda *_: self.stop())
            now = self.clock()
            for link in self.links:
                link.open(now)
            self._last_status = (now, 0)
            log.info("recording %s into %s (%s; a new file every %s)", self._inputs(), directory, self.cfg.format,
                     self._rotation())
            while not self._stop.is_set():
                self._turn()
        except OSError as exc:
            log.error("cannot write the recording in %s (%s): stopping; readings not acknowledged stay at the "
                      "broker", directory, exc)
            rc = 1
        finally:
            rc = self._shutdown() or rc
            lock.release()
        return rc

    def _remember_last_rows(self, directory: Path) -> None:
        """Redeliveries after a crash belong to the newest file, or the one before if it had just rotated."""
        try:
            paths = recording_files(directory)[-2:]
        except RecordingError:
            return                              # nothing recorded here yet
        try:
            for key in last_keys(paths, self._recent.capacity):
                self._recent.seen(key)
        except RecordingError as exc:
            log.warning("cannot read back the last recorded readings (%s): readings a crash left unacknowledged "
                        "may be recorded twice", exc)

    def _inputs(self) -> str:
        mqtt, serial = self.cfg.links.mqtt, self.cfg.links.serial
        return " and ".join(filter(None, [f"mqtt {mqtt.subscribe}" if self.mqtt else "",
                                          f"serial {serial.port} ({serial.mode})" if self.serial else ""]))

    def _rotation(self) -> str:
        limits = [f"{self.cfg.rotate_bytes / 1e6:g} MB" if self.cfg.rotate_bytes else "",
                  f"{self.cfg.rotate_s:g} s" if self.cfg.rotate_s else ""]
        return " or ".join(filter(None, limits)) or "run (no rotation)"

    # -- the loop -------------------------------------------------------------------------------

    def _turn(self) -> None:
        self._selector.watch()
        messages = self._selector.gather(IDLE_WAIT_S, MAX_BATCH, self.clock)
        if messages:
            self.record(messages)
        self.commit()
        now = self.clock()
        for link in self.links:
            link.tick(now)
            link.flush()
        if self.on_status is not None and now - self._last_status[0] >= self.cfg.status_every_s:
            self.on_status(self.status(now))

    def record(self, messages: list[Message]) -> None:
        """Rows for the readings among `messages`; every MQTT message queued for its ack."""
        rows: list[Row] = []
        before = self.writer.rows_written
        for msg in messages:
            if type(msg) is ReadingMsg:
                row = self._row(msg)
                if row is not None:
                    rows.append(row)
            elif type(msg) is RejectedMsg:
                self.bad_payloads[msg.reason] += 1
            elif type(msg) is HelloMsg:         # a board (re)booted: its readings carry this boot id from now on
                self._boots[msg.stream] = msg.hello.boot
            if msg.origin.ack_id is not None:   # serial and QoS 0 messages have nothing to acknowledge
                self._acks.append((before + len(rows), msg.origin))
        self.writer.write(rows)

    def _row(self, msg: ReadingMsg) -> Row | None:
        reading = msg.reading
        boot = reading.boot if reading.boot is not None else self._boots.get(msg.stream)
        self.readings += 1
        if not msg.origin.in_order and self._recent.seen((msg.stream, boot, reading.seq)):
            self.duplicates += 1
            return None
        if len(self._streams) < MAX_COUNTED_STREAMS:
            self._streams.add(msg.stream)
        t = reading.t if reading.t is not None else msg.origin.t_recv     # as the daemon's t_in
        return Row(msg.stream, reading.seq, t, boot, reading.x, reading.label)

    def commit(self) -> None:
        """Flush, rotate, and acknowledge what the writer committed."""
        writer = self.writer
        writer.flush()
        writer.tick()
        if len(self._acks) >= self._max_held and writer.rows_committed < writer.rows_written:
            writer.close_file()                 # Parquet: rows are committed when their file closes
        self._ack_committed()

    def _ack_committed(self) -> None:
        committed = self.writer.rows_committed
        acks = self._acks
        while acks and acks[0][0] <= committed:
            origin = acks.popleft()[1]
            origin.link.ack(origin)

    def status(self, now: float) -> RecorderStatus:
        since, readings_then = self._last_status
        rate = (self.readings - readings_then) / (now - since) if now > since else 0.0
        self._last_status = (now, self.readings)
        return RecorderStatus(rate, self.readings, self.writer.rows_written, len(self._streams),
                              sum(self.bad_payloads.values()), self.duplicates, self.writer.current)

    def _shutdown(self) -> int:
        rc = 0
        try:
            self.writer.close()
        except OSError as exc:
            log.error("cannot close the last recording file %s (%s): its readings are not acknowledged",
                      self.writer.current, exc)
            rc = 1
        self._ack_committed()
        for link in self.links:
            link.flush()
            link.close()
        self._selector.close()
        rejected = ", ".join(f"{reason} {n}" for reason, n in sorted(self.bad_payloads.items())) or "none"
        log.info("recorded %d readings of %d streams into %d file(s) in %s; duplicates %d, rejected: %s%s",
                 self.writer.rows_written, len(self._streams), self.writer.files_closed, self.cfg.directory,
                 self.duplicates, rejected, f"; drops {dict(self.drops)}" if self.drops else "")
        return rc

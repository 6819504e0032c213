"""A thin, version-pinned fast path over stock paho-mqtt for a client driven from one thread.

Stock paho 2.x spends most of its per-message CPU on a few things a streaming subscriber
hits on every message (shared/notes/mqtt-throughput.md, section 1): about three
recv() calls per packet, a full v5 Properties object built and cleared for every PUBLISH
even when it carries no properties, a loop_read() that ignores its max_packets argument,
one send() per queued packet (each PUBACK), and, for each confirmed QoS 1 publish, another
ReasonCode and Properties built from scratch. A relay that publishes a QoS 1 prediction per
reading also pays for publish() itself: a threading.Condition per message nobody waits on, the
topic encoded and checked again, the packet built piece by piece. `accelerate(client)` replaces
those six functions on one client instance; the class and every other client stay stock.

The replacements lean on paho's private internals, so they are only installed on the
paho versions listed in SUPPORTED and only when those internals look as expected; anything
else gets one INFO line and stock paho. tests/test_paho_fast.py fails loudly when a new
paho moves them, and benchmarks/bench_paho_fast.py measures what each patch buys.

A client driven by its own select loop must treat `buffered(client)` as "readable": bytes
the read-ahead buffer (or a TLS socket) already holds are invisible to select().
"""

from __future__ import annotations

import inspect
import logging
import threading
import types
from typing import Any, Callable, Literal

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

# Versions whose private code these patches were read against and tested on.
SUPPORTED = ("2.1.0", "2.2.0")
PATCHES = ("read_ahead", "loop_read", "empty_properties", "empty_acks", "coalesce_writes", "fast_publish")

READ_AHEAD = 64 * 1024          # one recv() fills this much; reads this big or bigger go straight to the socket
COALESCE_BYTES = 64 * 1024      # small queued packets are joined into one send() up to this size
DRAIN_CAP = 1000                # loop_read() without max_packets (paho's own loop) may stop after this many

_Rc = mqtt.MQTTErrorCode
_PUBLISH, _DISCONNECT = int(mqtt.PUBLISH), int(mqtt.DISCONNECT)

# name -> parameter names, for every private method the patches call or replace
_METHODS = {
    "_sock_recv": ("self", "bufsize"),
    "_sock_send": ("self", "buf"),
    "loop_read": ("self", "max_packets"),
    "_packet_read": ("self",),
    "_packet_write": ("self",),
    "_loop_rc_handle": ("self", "rc"),
    "_handle_publish": ("self",),
    "_handle_on_message": ("self", "message"),
    "_send_puback": ("self", "mid"),
    "_handle_pubackcomp": ("self", "cmd"),
    "_do_on_publish": ("self", "mid", "reason_code", "properties"),
    "_easy_log": ("self", "level", "fmt", "args"),
    "publish": ("self", "topic", "payload", "qos", "retain", "properties"),
    "_send_publish": ("self", "mid", "topic", "payload", "qos", "retain", "dup", "info", "properties"),
    "_packet_queue": ("self", "command", "packet", "mid", "qos", "info"),
    "_mid_generate": ("self",),
}
# replaced on the instance, or (_send_publish) bypassed by the replacement: a subclass's override would be lost
_REPLACED = ("_sock_recv", "loop_read", "_handle_publish", "_handle_pubackcomp", "_packet_write", "publish",
             "_send_publish")
_ATTRS = ("_sock", "_in_packet", "_out_packet", "_out_messages", "_out_message_mutex", "_protocol", "_manual_ack",
          "_transport", "_msgtime_mutex", "_last_msg_out", "_callback_mutex", "_in_callback_mutex",
          "_callback_api_version", "_userdata", "_logger", "on_log", "on_publish", "suppress_exceptions",
          "_inflight_messages", "_max_inflight_messages", "_max_queued_messages")
# module names the replacements use
_MODULE_NAMES = ("time_func", "mqtt_ms_invalid", "mqtt_ms_publish", "mqtt_ms_queued", "mqtt_ms_wait_for_puback")
_IN_PACKET_KEYS = {"command", "have_remaining", "remaining_count", "remaining_mult", "remaining_length", "packet",
                   "to_process", "pos"}
# every slot, as fast_publish sets each one and stock code may read any
_MESSAGE_SLOTS = {"_topic", "dup", "info", "mid", "payload", "properties", "qos", "retain", "state", "timestamp"}
_INFO_SLOTS = {"_condition", "_iterpos", "_published", "mid", "rc"}

# Stock builds a fresh Properties(PUBLISH) per message, and unpack(b"\x00") leaves it exactly as
# built; this is that state, copied into each empty-properties message (see _fresh).
_EMPTY_PROPERTIES = {t: vars(Properties(t)).copy() for t in (PacketTypes.PUBLISH, PacketTypes.PUBACK,
                                                               PacketTypes.PUBCOMP)}
_ACK_TYPES = {"PUBACK": PacketTypes.PUBACK, "PUBCOMP": PacketTypes.PUBCOMP}
_REASONS: dict[tuple[int, int | None], dict] = {}     # (packet type, reason byte or None) -> a stock ReasonCode's state


class _ReadAhead:
    """Bytes received from `sock` beyond what paho asked for; buf[pos:] is still unread."""

    __slots__ = ("sock", "buf", "pos")

    def __init__(self):
        self.sock, self.buf, self.pos = None, b"", 0


# -- public API ----------------------------------------------------------------------------------


def why_not(client: mqtt.Client) -> str | None:
    """Why `accelerate` would leave this client stock (names the paho version and the missing
    internal), or None when the fast path fits."""
    version = paho.mqtt.__version__
    if version not in SUPPORTED:
        return f"paho-mqtt {version} is not one of the versions the fast path was checked against {SUPPORTED}"
    reason = _changed_method(client) or _overridden(client) or _changed_data(client)
    if reason:
        return reason
    if client._transport not in ("tcp", "unix"):
        return f"transport {client._transport!r}: the fast path was only checked on plain and TLS sockets"
    return None


def _overridden(client: mqtt.Client) -> str | None:
    """A method the fast path replaces (or bypasses) that the client's class overrides."""
    for name in _REPLACED:
        if getattr(type(client), name) is not getattr(mqtt.Client, name):
            return f"{type(client).__name__} overrides Client.{name}, which the fast path would replace"
    return None


def _changed_method(client: mqtt.Client) -> str | None:
    """A private method the patches call, replace or copy that is gone or changed its parameters."""
    version = paho.mqtt.__version__
    for name, params in _METHODS.items():
        method = getattr(type(client), name, None)
        if not callable(method):
            return f"paho-mqtt {version}: Client.{name} is missing"
        try:
            found = tuple(inspect.signature(method).parameters)
        except (TypeError, ValueError):
            return f"paho-mqtt {version}: Client.{name} has no readable signature"
        if found != params:
            return f"paho-mqtt {version}: Client.{name}{found} no longer takes {params}"
    return None


def _changed_data(client: mqtt.Client) -> str | None:
    """An attribute, module name or message layout the patches read or fill in that changed."""
    version = paho.mqtt.__version__
    for name in _ATTRS:
        if not hasattr(client, name):
            return f"paho-mqtt {version}: Client has no attribute {name}"
    for name in _MODULE_NAMES:
        if not hasattr(mqtt, name):
            return f"paho-mqtt {version}: paho.mqtt.client has no {name}"
    if not isinstance(client._in_packet, dict) or set(client._in_packet) != _IN_PACKET_KEYS:
        return f"paho-mqtt {version}: Client._in_packet is not the dict of {sorted(_IN_PACKET_KEYS)}"
    if set(getattr(mqtt.MQTTMessage, "__slots__", ())) != _MESSAGE_SLOTS:
        return f"paho-mqtt {version}: MQTTMessage's slots are not {sorted(_MESSAGE_SLOTS)}"
    if set(getattr(mqtt.MQTTMessageInfo, "__slots__", ())) != _INFO_SLOTS:
        return f"paho-mqtt {version}: MQTTMessageInfo's slots are not {sorted(_INFO_SLOTS)}"
    for name in ("_set_as_published", "wait_for_publish", "is_published"):
        if not callable(getattr(mqtt.MQTTMessageInfo, name, None)):
            return f"paho-mqtt {version}: MQTTMessageInfo.{name} is missing"
    return None


def accelerate(client: mqtt.Client, patches: tuple[str, ...] = PATCHES) -> bool:
    """Install the fast path on this one client (before or after connect, never while its
    network loop runs). True when installed (or already there); False, with one INFO line,
    when paho is not a version or shape we checked, and the client stays stock.

    `patches` picks a subset, for the benchmark; read_ahead needs loop_read (stock loop_read
    reads one packet per select, which would strand read-ahead bytes that select cannot see)."""
    unknown = set(patches) - set(PATCHES)
    if unknown or ("read_ahead" in patches and "loop_read" not in patches):
        raise ValueError(f"patches must be a subset of {PATCHES}, with loop_read if read_ahead: {patches}")
    if "_edgelstm_read_ahead" in vars(client):
        return True
    reason = why_not(client)
    if reason:
        log.info("mqtt: stock paho (fast path off): %s", reason)
        return False
    # per-instance state the replacements keep on the client, which paho's Client does not declare
    client._edgelstm_read_ahead = _ReadAhead()      # type: ignore[attr-defined]
    client._edgelstm_topics = {}                    # type: ignore[attr-defined]
    replacements: dict[str, tuple[str, Callable[..., Any]]] = {
        "read_ahead": ("_sock_recv", _sock_recv), "loop_read": ("loop_read", _loop_read),
        "empty_properties": ("_handle_publish", _handle_publish),
        "empty_acks": ("_handle_pubackcomp", _handle_pubackcomp),
        "coalesce_writes": ("_packet_write", _packet_write), "fast_publish": ("publish", _publish)}
    for patch in patches:
        name, function = replacements[patch]
        setattr(client, name, types.MethodType(function, client))     # this instance only; paho calls self.<name>
    return True


def buffered(client: mqtt.Client) -> bool:
    """True when bytes are already received but not yet parsed: call loop_read again without
    waiting for select(). Also covers a TLS socket's decrypted backlog (stock or not)."""
    ahead = vars(client).get("_edgelstm_read_ahead")
    sock = client._sock
    if ahead is not None and ahead.sock is sock and sock is not None and ahead.pos < len(ahead.buf):
        return True
    pending = getattr(sock, "pending", None)
    return bool(pending and pending())


# -- 1. read-ahead: replaces Client._sock_recv ---------------------------------------------------


def _sock_recv(self, bufsize: int) -> bytes:
    """Stock _packet_read asks for 1 byte (command), 1 byte per remaining-length byte, then the
    body: three syscalls for a small packet. Serve those from one large recv() instead. The
    socket call itself is still stock _sock_recv, so TLS (SSLWantReadError -> BlockingIOError),
    EOF (b"") and OSError reach _packet_read exactly as before. Bytes belong to the socket they
    came from: after a reconnect, what the old one left unread is dropped."""
    ahead = self._edgelstm_read_ahead
    buf, pos = ahead.buf, ahead.pos
    if pos < len(buf) and ahead.sock is self._sock:
        ahead.pos = pos + bufsize
        return buf[pos:pos + bufsize]             # may be short, as recv() may be; _packet_read loops
    if bufsize >= READ_AHEAD:                      # a large body: no point copying it through the buffer
        return mqtt.Client._sock_recv(self, bufsize)
    data = mqtt.Client._sock_recv(self, READ_AHEAD)
    if len(data) <= bufsize:
        return data
    ahead.sock, ahead.buf, ahead.pos = self._sock, data, bufsize
    return data[:bufsize]


# -- 2. loop_read that honours max_packets: replaces Client.loop_read -----------------------------


def _loop_read(self, max_packets: int | None = None) -> mqtt.MQTTErrorCode:
    """Stock loop_read overwrites max_packets with the number of QoS>0 messages in flight
    (at least 1), so a subscriber parses one packet per select(). Here max_packets (>= 1) caps
    the packets parsed; the loop also ends when the socket and read-ahead buffer are drained.
    Called without it (as paho's own loop() does), it drains, yielding after DRAIN_CAP packets
    only once the read-ahead buffer is empty, so no bytes stay hidden from that select().
    Return codes are stock: errors go through _loop_rc_handle, "nothing more to read" is success."""
    if self._sock is None:
        return _Rc.MQTT_ERR_NO_CONN
    limit = max(max_packets, 1) if max_packets is not None else None
    ahead = vars(self).get("_edgelstm_read_ahead")
    count = 0
    while True:
        if self._sock is None:
            return _Rc.MQTT_ERR_NO_CONN
        rc = self._packet_read()
        if rc > 0:
            return self._loop_rc_handle(rc)
        if rc == _Rc.MQTT_ERR_AGAIN:
            return _Rc.MQTT_ERR_SUCCESS
        count += 1
        if limit is not None and count >= limit:
            return _Rc.MQTT_ERR_SUCCESS
        if limit is None and count >= DRAIN_CAP and (ahead is None or ahead.pos >= len(ahead.buf)):
            return _Rc.MQTT_ERR_SUCCESS


# -- 3. empty v5 PUBLISH properties: replaces Client._handle_publish ------------------------------


def _fresh(cls, state: dict):
    """A new Properties or ReasonCode in `state`, the state a stock constructor (and unpack)
    leaves it in, without rerunning them: Properties.__init__ rebuilds two tables and calls
    list.index about 27 times, clear() runs hasattr over every property name, ReasonCode copies
    its name table and searches it. The constant lookup tables (names, types, properties) are
    shared between objects; paho only ever reads them. Attributes a caller sets stay its own."""
    obj = cls.__new__(cls)
    vars(obj).update(state)
    return obj


def _debug_logged(self) -> bool:
    """Whether stock's per-packet _easy_log(DEBUG, ...) would reach anyone."""
    return self.on_log is not None or (self._logger is not None and self._logger.isEnabledFor(logging.DEBUG))


def _handle_publish(self) -> mqtt.MQTTErrorCode:
    """The common case, an MQTT v5 QoS 0/1 PUBLISH whose property length is 0, decoded here;
    everything else (v3, QoS 2, any property, a malformed packet) goes to stock _handle_publish,
    so non-empty properties decode exactly as stock. The rest mirrors stock: same message fields,
    same debug log line (but the topic is only decoded for it when someone listens), same
    on_message dispatch and auto-ack."""
    packet, header = self._in_packet["packet"], self._in_packet["command"]
    qos = (header & 0x06) >> 1
    if self._protocol != mqtt.MQTTv5 or qos > 1 or len(packet) < 3:
        return mqtt.Client._handle_publish(self)
    end = 2 + ((packet[0] << 8) | packet[1])       # the topic is packet[2:end]
    props_at = end + 2 if qos else end
    if len(packet) <= props_at or packet[props_at] != 0:
        return mqtt.Client._handle_publish(self)
    mid = (packet[end] << 8) | packet[end + 1] if qos else 0
    message = mqtt.MQTTMessage(mid=mid, topic=bytes(packet[2:end]))
    message.dup = (header & 0x08) != 0
    message.qos = qos
    message.retain = (header & 0x01) != 0
    message.properties = _fresh(Properties, _EMPTY_PROPERTIES[PacketTypes.PUBLISH])
    message.payload = bytes(memoryview(packet)[props_at + 1:])      # stock payloads are bytes, not bytearray
    if _debug_logged(self):
        try:
            print_topic = message._topic.decode("utf-8")
        except UnicodeDecodeError:
            print_topic = f"TOPIC WITH INVALID UTF-8: {message._topic!r}"
        self._easy_log(mqtt.MQTT_LOG_DEBUG,
                       "Received PUBLISH (d%d, q%d, r%d, m%d), '%s', properties=%s, ...  (%d bytes)",
                       message.dup, message.qos, message.retain, message.mid, print_topic, message.properties,
                       len(message.payload))
    message.timestamp = mqtt.time_func()
    self._handle_on_message(message)
    if qos == 0 or self._manual_ack:
        return _Rc.MQTT_ERR_SUCCESS
    return self._send_puback(mid)


# -- 3b. v5 PUBACK/PUBCOMP without properties: replaces Client._handle_pubackcomp -----------------


def _reason(packet_type: int, code: int | None) -> ReasonCode:
    """The ReasonCode stock would build for this ack (code None: the 2-byte form, Success),
    made once by stock code (which raises for a code that is not valid here) and then copied."""
    state = _REASONS.get((packet_type, code))
    if state is None:
        reason = ReasonCode(packet_type)
        if code is not None:
            reason.unpack(bytes([code]))
        state = _REASONS[(packet_type, code)] = vars(reason).copy()
    return _fresh(ReasonCode, state)


def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> mqtt.MQTTErrorCode:
    """Every confirmed QoS 1 prediction costs stock a ReasonCode and a Properties built from
    scratch (both twice over when the broker adds a reason byte). For the forms brokers send,
    2 bytes (mid) or 3 (mid, reason) with no properties, hand on_publish stock-equal copies
    instead; longer acks, v3 and anything unexpected go to stock _handle_pubackcomp."""
    packet = self._in_packet["packet"]
    packet_type = _ACK_TYPES.get(cmd)
    if self._protocol != mqtt.MQTTv5 or packet_type is None or len(packet) not in (2, 3):
        return mqtt.Client._handle_pubackcomp(self, cmd)
    try:
        reason = _reason(packet_type, packet[2] if len(packet) == 3 else None)
    except Exception:                     # noqa: BLE001 - an invalid reason code: stock reports it its own way
        return mqtt.Client._handle_pubackcomp(self, cmd)
    mid = (packet[0] << 8) | packet[1]
    if _debug_logged(self):
        self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received %s (Mid: %d)", cmd, mid)
    with self._out_message_mutex:
        if mid in self._out_messages:     # only inform the client the message has been sent once
            return self._do_on_publish(mid, reason, _fresh(Properties, _EMPTY_PROPERTIES[packet_type]))
    return _Rc.MQTT_ERR_SUCCESS


# -- 4. coalesced writes: replaces Client._packet_write -------------------------------------------


def _take_run(out) -> list:
    """Pop the head packet and the small ones behind it, up to COALESCE_BYTES, stopping before a
    DISCONNECT. Given the same queue head it always takes the same prefix (or a longer one once
    more is queued), which a TLS write retried after SSLWantWriteError requires."""
    run = [out.popleft()]
    size = run[0]["to_process"]
    while out:
        head = out[0]                      # other threads only append at the right; the head stays put
        if head["command"] & 0xF0 == _DISCONNECT or size + head["to_process"] > COALESCE_BYTES:
            break
        run.append(out.popleft())
        size += head["to_process"]
    return run


def _packet_write(self) -> mqtt.MQTTErrorCode:
    """Stock _packet_write makes one send() per queued packet (each PUBACK, each prediction).
    This sends a run of queued packets in one send() and then does stock's per-packet
    bookkeeping for each one fully written: pos/to_process advance packet by packet, a partly
    written packet goes back to the head of the queue, QoS 0 PUBLISHes get on_publish and are
    marked published (QoS 1/2 state lives in _out_messages and is untouched here, as in stock).
    A DISCONNECT at the head is left to stock _packet_write, which closes the socket after it.
    Error handling and return codes are stock's."""
    out = self._out_packet
    while out:
        if out[0]["command"] & 0xF0 == _DISCONNECT:
            return mqtt.Client._packet_write(self)
        run = _take_run(out)
        first = run[0]
        data = first["packet"][first["pos"]:]
        if len(run) > 1:
            data = b"".join([data, *(p["packet"] for p in run[1:])])
        try:
            sent = self._sock_send(data)
        except (AttributeError, ValueError):
            out.extendleft(reversed(run))
            return _Rc.MQTT_ERR_SUCCESS
        except BlockingIOError:
            out.extendleft(reversed(run))
            return _Rc.MQTT_ERR_AGAIN
        except OSError as err:
            out.extendleft(reversed(run))
            self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return _Rc.MQTT_ERR_CONN_LOST
        if sent <= 0:                      # stock drops the packet here; keeping it queued is the safe side
            out.extendleft(reversed(run))
            break
        written = _advance(run, sent)
        out.extendleft(reversed(run[written:]))     # back on the queue before any callback can queue more
        _finish(self, run[:written])
    with self._msgtime_mutex:
        self._last_msg_out = mqtt.time_func()
    return _Rc.MQTT_ERR_SUCCESS


def _advance(run: list, sent: int) -> int:
    """Spread `sent` bytes over the run in order, as stock does for one packet; returns how many
    packets are now fully written."""
    for i, packet in enumerate(run):
        step = min(sent, packet["to_process"])
        packet["to_process"] -= step
        packet["pos"] += step
        sent -= step
        if packet["to_process"]:
            return i
    return len(run)


def _finish(self, written: list) -> None:
    """Stock's bookkeeping for each fully written packet. If an on_publish raises (with
    suppress_exceptions off), the rest are still finished and the first error is raised."""
    error = None
    for packet in written:
        try:
            _written(self, packet)
        except Exception as exc:          # noqa: BLE001 - re-raised below, after the others are done
            error = error or exc
    if error is not None:
        raise error


def _written(self, packet: dict) -> None:
    """Mirrors the QoS 0 branch of stock _packet_write: on_publish, then mark published."""
    if packet["command"] & 0xF0 != _PUBLISH or packet["qos"] != 0:
        return
    with self._callback_mutex:
        on_publish = self.on_publish
    if on_publish:
        with self._in_callback_mutex:
            try:
                if self._callback_api_version == mqtt.CallbackAPIVersion.VERSION1:
                    on_publish(self, self._userdata, packet["mid"])
                elif self._callback_api_version == mqtt.CallbackAPIVersion.VERSION2:
                    on_publish(self, self._userdata, packet["mid"], ReasonCode(PacketTypes.PUBACK),
                               Properties(PacketTypes.PUBACK))
                else:
                    raise RuntimeError("Unsupported callback API version")
            except Exception as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_publish: %s", err)
                if not self.suppress_exceptions:
                    raise
    if packet["info"] is not None:         # stock assumes it is set; a QoS 0 PUBLISH always has one
        packet["info"]._set_as_published()


# -- 5. QoS 1 publish without per-call overhead: replaces Client.publish -------------------------


_CONDITION_LOCK = threading.Lock()
TOPIC_CACHE = 4096                # encoded topics kept per client; past that the cache starts over
_MAX_REMAINING = 268_435_455      # the largest MQTT remaining length; bigger packets are stock's to refuse
_PUBLISH_QOS1 = int(mqtt.PUBLISH) | 0x02


class _PublishInfo(mqtt.MQTTMessageInfo):
    """Stock MQTTMessageInfo builds a threading.Condition (a lock, a deque, bound methods) for
    every message, and _set_as_published takes it for every PUBACK, though a daemon that only
    reads rc and mid never waits on it. This one makes its Condition when something first asks
    for `_condition` (stock wait_for_publish and is_published do, unchanged); everything else is
    inherited. _CONDITION_LOCK orders making the Condition against _set_as_published, so a waiter
    either finds the message published or holds a Condition that will be notified."""

    __slots__ = ("_made",)

    def __init__(self, mid: int):                 # stock __init__ without the Condition
        self.mid = mid
        self._published = False
        self._made = None
        self.rc = _Rc.MQTT_ERR_SUCCESS
        self._iterpos = 0

    @property
    def _condition(self):
        with _CONDITION_LOCK:
            if self._made is None:
                self._made = threading.Condition()
            return self._made

    def _set_as_published(self) -> None:
        with _CONDITION_LOCK:
            self._published = True
            condition = self._made
        if condition is not None:                 # someone waits or has asked: wake them as stock does
            with condition:
                condition.notify()


def _topic_entry(self, topic: str) -> tuple[bytes, bytes] | None:
    """(topic bytes, the same with its 2-byte length) for a topic stock would accept as is, made
    once per topic string; None sends the call to stock (empty topic, wildcard, too long, not
    encodable), which raises or handles it its own way."""
    cache = self._edgelstm_topics
    entry = cache.get(topic)
    if entry is None:
        try:
            encoded = topic.encode("utf-8")
        except UnicodeEncodeError:
            return None
        if not encoded or b"+" in encoded or b"#" in encoded or len(encoded) > 65535:
            return None
        if len(cache) >= TOPIC_CACHE:
            cache.clear()
        entry = cache[topic] = (encoded, len(encoded).to_bytes(2, "big") + encoded)
    return entry


def _fixed_header(command: int, remaining: int) -> bytes:
    """The command byte and MQTT's variable-length remaining length, as stock
    _pack_remaining_length writes it; the one- and two-byte forms (small predictions) directly."""
    if remaining < 0x80:
        return bytes((command, remaining))
    if remaining < 0x4000:
        return bytes((command, remaining & 0x7F | 0x80, remaining >> 7))
    out = bytearray((command,))
    while remaining:
        remaining, digit = remaining >> 7, remaining & 0x7F
        out.append(digit | 0x80 if remaining else digit)
    return bytes(out)


def _publish(self, topic: str, payload=None, qos: int = 0, retain: bool = False, properties=None):
    """Stock publish for the daemon's case, a QoS 1 bytes payload without properties to a plain
    topic: the same checks, mid, MQTTMessage fields and states, queue and in-flight limits, return
    codes and _packet_queue call, with a cheaper MQTTMessageInfo, the topic encoded and checked
    once, and the packet built in one join. Any other call (QoS 0 or 2, properties, a payload
    that is not bytes, a retain that is not a bool, an unusual topic) is stock publish's."""
    if (qos != 1 or type(qos) is not int or properties is not None or type(payload) is not bytes
            or (retain is not True and retain is not False) or type(topic) is not str):
        return mqtt.Client.publish(self, topic, payload, qos, retain, properties)
    entry = _topic_entry(self, topic)
    if entry is None:
        return mqtt.Client.publish(self, topic, payload, qos, retain, properties)
    props = b"\x00" if self._protocol == mqtt.MQTTv5 else b""     # v5: an empty property list
    remaining = len(entry[1]) + 2 + len(props) + len(payload)
    if remaining > _MAX_REMAINING:
        return mqtt.Client.publish(self, topic, payload, qos, retain, properties)
    mid = self._mid_generate()
    info = _PublishInfo(mid)
    message = _out_message(mid, entry[0], payload, retain, info)
    with self._out_message_mutex:
        if self._max_queued_messages > 0 and len(self._out_messages) >= self._max_queued_messages:
            info.rc = _Rc.MQTT_ERR_QUEUE_SIZE
            return info
        if mid in self._out_messages:
            info.rc = _Rc.MQTT_ERR_QUEUE_SIZE
            return info
        self._out_messages[mid] = message
        if self._max_inflight_messages != 0 and self._inflight_messages >= self._max_inflight_messages:
            message.state = mqtt.mqtt_ms_queued          # sent by stock _update_inflight when a slot frees
            return info
        if self._sock is None:                           # stock counts it in flight, then takes that back
            message.state = mqtt.mqtt_ms_publish         # sent by stock _handle_connack after reconnecting
            info.rc = _Rc.MQTT_ERR_NO_CONN
            return info
        self._inflight_messages += 1
        message.state = mqtt.mqtt_ms_wait_for_puback
        if _debug_logged(self):
            _log_publish(self, mid, entry[0], len(payload), retain)
        packet = b"".join((_fixed_header(_PUBLISH_QOS1 | retain, remaining), entry[1], mid.to_bytes(2, "big"), props,
                           payload))
        rc = self._packet_queue(mqtt.PUBLISH, packet, mid, 1, info)
        if rc == _Rc.MQTT_ERR_NO_CONN:                   # as stock, though queueing only reports this from loop_write
            self._inflight_messages -= 1
            message.state = mqtt.mqtt_ms_publish
        info.rc = rc
        return info


def _out_message(mid: int, topic: bytes, payload: bytes, retain: bool, info: _PublishInfo) -> mqtt.MQTTMessage:
    """The MQTTMessage stock publish keeps in _out_messages (every slot set as stock sets it),
    without stock's constructor, which would build an MQTTMessageInfo of its own."""
    message = mqtt.MQTTMessage.__new__(mqtt.MQTTMessage)
    message.timestamp = mqtt.time_func()
    message.state = mqtt.mqtt_ms_invalid
    message.dup = False
    message.mid = mid
    message._topic = topic
    message.payload = payload
    message.qos = 1
    message.retain = retain
    message.info = info
    message.properties = None
    return message


def _log_publish(self, mid: int, topic: bytes, size: int, retain: bool) -> None:
    """Stock _send_publish's debug line, word for word."""
    v5 = self._protocol == mqtt.MQTTv5
    if size == 0 and v5:
        self._easy_log(mqtt.MQTT_LOG_DEBUG, "Sending PUBLISH (d%d, q%d, r%d, m%d), '%s', properties=%s (NULL payload)",
                       False, 1, retain, mid, topic, None)
    elif size == 0:
        self._easy_log(mqtt.MQTT_LOG_DEBUG, "Sending PUBLISH (d%d, q%d, r%d, m%d), '%s' (NULL payload)",
                       False, 1, retain, mid, topic)
    elif v5:
        self._easy_log(mqtt.MQTT_LOG_DEBUG, "Sending PUBLISH (d%d, q%d, r%d, m%d), '%s', properties=%s, ... (%d bytes)",
                       False, 1, retain, mid, topic, None, size)
    else:
        self._easy_log(mqtt.MQTT_LOG_DEBUG, "Sending PUBLISH (d%d, q%d, r%d, m%d), '%s', ... (%d bytes)",
                       False, 1, retain, mid, topic, size)

"""The MQTT link (paho-mqtt 2.x, MQTT v5), driven by the daemon's thread: readings in,
predictions and status out.

No paho thread: the daemon's selector watches paho's socket and calls read/write/flush, so a
message is decoded, stepped, answered and acknowledged on one thread without hand-offs.
Only the blocking TCP/TLS connect runs aside, in a short-lived thread; while it runs the
daemon's thread leaves the client alone. Readings are acknowledged manually once committed
(daemon/ledger.py), so a crash before that makes the broker deliver them again. A persistent
session (fixed client id, clean_start=False, a session expiry) keeps readings queued at the
broker while we are away; subscriptions are made on every connect.
"""

from __future__ import annotations

import collections
import logging
import select
import socket
import ssl
import threading
import time
from typing import Callable

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ..daemon.config import MqttConfig
from ..daemon.messages import Message, Origin, ReadingMsg, RejectedMsg
from ..errors import Rejected
from ..protocol import payload
from ..protocol.stream_id import check_stream_id
from ..protocol.topics import StreamTopics
from . import paho_fast
from .presence import Presence
from .publications import Publications

log = logging.getLogger(__name__)
SESSION_TAKEN_OVER = 142            # MQTT v5 DISCONNECT reason 0x8E (Mosquitto 2.0 just closes the socket)
MISC_EVERY_S = 1.0                  # keepalive and timeout checks


def no_nagle(client, userdata, sock) -> None:
    """paho leaves Nagle's algorithm on: a small PUBLISH or PUBACK then waits for the previous
    segment's ACK (delayed up to 40 ms) whenever one is outstanding, which dominates latency."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):            # not a TCP socket (e.g. a websocket wrapper)
        pass


class MqttLink:
    name = "mqtt"

    def __init__(self, cfg: MqttConfig, n_inputs: int, count: Callable[[str], None], subscribe: bool = True):
        self.cfg = cfg
        self.n_inputs = n_inputs
        self._count = count                     # counts a drop: edgelstm_drops_total{reason}
        self._subscribe = subscribe and bool(cfg.subscribe)
        self.status_topic = cfg.status_topic.format(client_id=cfg.client_id)
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.connects = 0
        self.taken_over = False                 # a newer daemon uses our client id: we stepped back
        self.presence = Presence(self.status_topic)
        self.publications = Publications()
        self._inbox: list[Message] = []
        # topic, data, token, t, retain
        self._waiting: collections.deque[tuple[str, bytes, int, float, bool]] = collections.deque()
        self._connector: threading.Thread | None = None
        self._connect_error: BaseException | None = None
        self._next_attempt = 0.0
        self._delay = cfg.reconnect_min_s
        self._last_misc = 0.0
        self._packets = 0                       # packets handled, to see when a read made progress
        self._stopping = False
        self._attempted = False                 # connect() once, reconnect() after that
        self._attempts = 0                      # connection attempts started
        self._lost_attempt = -1                 # the attempt whose loss was handled
        self._topics = StreamTopics(cfg.subscribe)
        self.client = self._make_client()
        self.fast = paho_fast.accelerate(self.client)

    def _make_client(self) -> mqtt.Client:
        cfg = self.cfg
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id, protocol=mqtt.MQTTv5,
                        manual_ack=True)
        c.enable_logger(logging.getLogger("edgelstm.paho"))
        c.suppress_exceptions = True            # an exception in a callback never breaks the loop
        c.max_queued_messages_set(cfg.max_queued_out)
        c.max_inflight_messages_set(cfg.max_inflight_out)
        c.will_set(self.status_topic, b"offline", qos=1, retain=True)
        username, password = cfg.credentials()
        if username:
            c.username_pw_set(username, password)
        if cfg.tls:
            c.tls_set(ca_certs=cfg.tls_ca or None, certfile=cfg.tls_cert or None, keyfile=cfg.tls_key or None,
                      tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.on_socket_open = no_nagle
        # With a write callback set, paho queues packets instead of writing each one at once:
        # the daemon writes a whole batch with one flush().
        c.on_socket_register_write = lambda *_: None
        c.on_socket_unregister_write = lambda *_: None
        return c

    # -- the Link contract ------------------------------------------------------------------------

    def open(self, now: float) -> None:
        self._next_attempt = now

    def selectable(self) -> object | None:
        return None if self._busy() else self.client.socket()

    def wants_write(self) -> bool:
        return not self._busy() and self.client.want_write()

    def pending(self) -> bool:
        """Bytes already taken from the socket (read-ahead, TLS) wait to be parsed: the selector
        cannot see them, so the daemon reads again without waiting."""
        return not self._busy() and paho_fast.buffered(self.client)

    def read(self, now: float, limit: int) -> list[Message]:
        if self._busy():
            return []
        if self.fast:
            self.client.loop_read(limit)
        else:
            self._read_stock(limit)
        inbox = self._inbox
        self._inbox = []
        return inbox

    def _read_stock(self, limit: int) -> None:
        """Stock paho reads one packet per loop_read here: read until one makes no progress."""
        for _ in range(limit):
            before = self._packets
            if self.client.loop_read() != mqtt.MQTT_ERR_SUCCESS or self._packets == before:
                return

    def write(self) -> None:
        if not self._busy():
            self.client.loop_write()

    def tick(self, now: float) -> None:
        if self._busy():
            return
        if self._connector is not None:
            self._connect_finished(now)
        if self.client.socket() is None:
            if not (self.taken_over or self._stopping) and now >= self._next_attempt:
                self._start_connect()
            return
        if now - self._last_misc >= MISC_EVERY_S:
            self._last_misc = now
            self.client.loop_misc()
        self._expire_waiting(now)

    def ack(self, origin: Origin) -> None:
        """Packet ids belong to the session, not the connection: a reading not acknowledged
        before a disconnect is delivered again under its id, so a later ack still names it.
        While disconnected the ack cannot be sent; the redelivered copy is a duplicate."""
        if origin.ack_id is not None and self.connected.is_set() and not self._busy():
            self.client.ack(origin.ack_id, 1)

    def reply(self, origin: Origin, seq: int, y: np.ndarray) -> bool:
        return False                            # MQTT answers go out as publications, not replies

    def flush(self) -> None:
        if self._busy():
            return
        self._send_waiting()
        if self.client.socket() is not None:
            self.client.loop_write()

    def close(self) -> None:
        """Publish "offline" (retained) and disconnect cleanly; the Last Will covers a crash."""
        self._stopping = True
        if self._connector is not None:
            self._connector.join(timeout=10)
        if self.connected.is_set():
            info = self.client.publish(self.status_topic, b"offline", qos=1, retain=True)
            self.drive(lambda: info.is_published(), timeout=2.0)
            self.client.disconnect()
            self.client.loop_write()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    # -- publishing -------------------------------------------------------------------------------

    def publish(self, topic: str, data: bytes, retain: bool = False) -> None:
        """Hand a prediction out. Queued while disconnected (at most max_queued_out, then dropped
        and counted); while connected and paho's queue is full, it waits up to publish_wait_s.
        retain: a retained message (Home Assistant discovery), sent with QoS 1 whatever mqtt.qos."""
        token = self.publications.issue()
        if self._waiting or not self.connected.is_set() or self._busy():
            self._wait(topic, data, token, retain)
            return
        if not self._hand_to_paho(topic, data, token, retain):
            self._wait(topic, data, token, retain)

    def _hand_to_paho(self, topic: str, data: bytes, token: int, retain: bool) -> bool:
        qos = 1 if retain else self.cfg.qos
        info = self.client.publish(topic, data, qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            return False
        if qos == 0 or info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
            self.publications.settle(token)
        else:
            self.publications.sent(token, info.mid)
        return True

    def _wait(self, topic: str, data: bytes, token: int, retain: bool) -> None:
        """Away: at most max_queued_out wait. Connected, the broker only confirms slowly: the
        daemon holds step-mode acks meanwhile (congested()), so MQTT input stops at
        receive_maximum readings; the extra room is theirs."""
        room = self.cfg.max_queued_out + (self.cfg.receive_maximum if self.connected.is_set() else 0)
        if len(self._waiting) >= room:
            self.publications.settle(token)
            self._count("publish_queue_full")
            return
        self._waiting.append((topic, data, token, time.monotonic(), retain))

    def congested(self) -> bool:
        """Predictions wait for room in paho's queue."""
        return bool(self._waiting)

    def _send_waiting(self) -> None:
        if not self.connected.is_set():
            return
        while self._waiting:
            topic, data, token, _, retain = self._waiting[0]
            if not self._hand_to_paho(topic, data, token, retain):
                return
            self._waiting.popleft()

    def _expire_waiting(self, now: float) -> None:
        """Connected but the broker confirms too slowly: after publish_wait_s a prediction is dropped."""
        while self._waiting and now - self._waiting[0][3] > self.cfg.publish_wait_s:
            self.publications.settle(self._waiting.popleft()[2])
            self._count("publish_timeout")

    def drive(self, done: Callable[[], bool], timeout: float) -> bool:
        """Run the socket until done() or timeout (shutdown only: the daemon's loop has stopped,
        so what arrives now is not stepped; unacknowledged readings come again after a restart)."""
        deadline = time.monotonic() + timeout
        while not done():
            now = time.monotonic()
            if now >= deadline:
                return False
            self.tick(now)
            self.flush()
            sock = None if self._busy() else self.client.socket()
            if sock is None:
                time.sleep(0.01)
                continue
            if self.pending() or select.select([sock], [sock] if self.wants_write() else [], [], 0.05)[0]:
                self.read(now, 1000)
        return True

    # -- connecting -------------------------------------------------------------------------------

    def _busy(self) -> bool:
        """A connect is running in its thread: the client is not ours to touch until it ends."""
        connector = self._connector
        return connector is not None and connector.is_alive()

    def _start_connect(self) -> None:
        self._connect_error = None
        first = not self._attempted
        self._attempted = True
        self._attempts += 1
        self._connector = threading.Thread(target=self._connect, args=(first,), name="mqtt-connect", daemon=True)
        self._connector.start()

    def _connect(self, first: bool) -> None:
        try:
            if first:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = self.cfg.session_expiry_s
                props.ReceiveMaximum = self.cfg.receive_maximum
                props.MaximumPacketSize = self.cfg.max_packet_bytes
                host, port = self.cfg.host_port
                self.client.connect(host, port, keepalive=self.cfg.keepalive_s, clean_start=False, properties=props)
            else:
                self.client.reconnect()
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._connect_error = exc

    def _connect_finished(self, now: float) -> None:
        self._connector = None
        if self._connect_error is None:
            self._last_misc = now
            return
        host, port = self.cfg.host_port
        log.warning("mqtt: cannot connect to %s:%d (%s); retrying in %.1f s", host, port, self._connect_error,
                    self._delay)
        self._retry_later(now)
        sock = self.client.socket()
        if sock is not None:                    # a TLS handshake that failed after the TCP connect
            sock.close()

    def _retry_later(self, now: float) -> None:
        self._next_attempt = now + self._delay
        self._delay = min(self._delay * 2, self.cfg.reconnect_max_s)

    # -- paho callbacks (on the daemon's thread, from inside read/write/tick) --------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._packets += 1
        if reason_code.is_failure:
            log.warning("mqtt: the broker refused the connection: %s", reason_code)
            return
        self.connects += 1
        self._delay = self.cfg.reconnect_min_s
        broker_max = getattr(properties, "ReceiveMaximum", 65_535)
        if broker_max < self.cfg.max_inflight_out and self.connects == 1:
            log.info("mqtt: the broker's Receive Maximum is %d, mqtt.max_inflight_out %d: if it refuses predictions "
                     "(edgelstm_drops_total{reason=\"publish_rejected\"}), lower mqtt.max_inflight_out to %d or raise "
                     "the broker's max_inflight_messages", broker_max, self.cfg.max_inflight_out, broker_max)
        log.info("mqtt: connected to %s:%d (session present: %s)", *self.cfg.host_port, flags.session_present)
        # The broker answers the presence subscription with the retained announcement made before
        # ours (no_local: never our own), which says whether a newer daemon uses this client id.
        topics = [(self.presence.topic, SubscribeOptions(qos=1, noLocal=True))]
        if self._subscribe:
            topics.insert(0, (self.cfg.subscribe, SubscribeOptions(qos=self.cfg.qos)))
        rc, _ = client.subscribe(topics)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            log.error("mqtt: cannot subscribe to %s: %s", self.cfg.subscribe, mqtt.error_string(rc))
        client.publish(self.presence.topic, self.presence.announcement(), qos=1, retain=True)
        client.publish(self.status_topic, b"online", qos=1, retain=True)
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        """The broker's answer to the subscription made in _on_connect. Readings published before
        it (on a first connect: no session yet) were never routed to us; after it, the session
        keeps them while we are away."""
        self._packets += 1
        if not self._subscribe:
            return
        granted = reason_codes[0]
        if granted.is_failure:
            log.warning("mqtt: the broker refused the subscription to %s (%s): no readings will arrive; "
                        "check the broker's ACL for this client id or user", self.cfg.subscribe, granted)
            return
        if granted.value < self.cfg.qos:
            log.warning("mqtt: subscribed to %s with QoS %d only, not %d: the broker neither keeps readings for "
                        "us while we are away nor redelivers unacknowledged ones; raise its max_qos",
                        self.cfg.subscribe, granted.value, self.cfg.qos)
        else:
            log.info("mqtt: subscribed to %s (QoS %d)", self.cfg.subscribe, granted.value)
        self.subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if self._stopping or self._lost_attempt == self._attempts:
            return                              # paho reports a broken pipe twice: back off once
        self._lost_attempt = self._attempts
        now = time.monotonic()
        if self.taken_over:
            return
        if reason_code == SESSION_TAKEN_OVER:
            log.warning("mqtt: another client connected with client id %r and took the session over",
                        self.cfg.client_id)
        log.warning("mqtt: disconnected (%s); reconnecting in %.1f s", reason_code, self._delay)
        self._retry_later(now)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._packets += 1
        self.publications.confirmed_mid(mid)
        if reason_code.is_failure:                  # e.g. not authorized to publish on that topic
            self._count("publish_rejected")
            log.debug("mqtt: the broker refused a publication (%s): check its ACL for %s", reason_code,
                      self.cfg.publish)

    def _on_message(self, client, userdata, msg) -> None:
        self._packets += 1
        if msg.topic == self.presence.topic:
            self._check_presence(msg)
            return
        origin = Origin(self, msg.mid if msg.qos > 0 else None, None, False, time.time())
        try:
            stream = check_stream_id(self._topics.stream_of(msg.topic))
            self._inbox.append(ReadingMsg(stream, payload.decode_mqtt(msg.payload, self.n_inputs), origin))
        except Rejected as exc:
            self._inbox.append(RejectedMsg(exc.reason, origin))
        except UnicodeDecodeError:                  # a topic that is not UTF-8
            self._inbox.append(RejectedMsg("topic", origin))
        except Exception:                           # a decoder bug: count it, never leave it unacknowledged
            log.exception("mqtt: decoding a message failed unexpectedly (counted as bad payload 'internal')")
            self._inbox.append(RejectedMsg("internal", origin))

    def _check_presence(self, msg) -> None:
        if msg.qos:
            self.client.ack(msg.mid, msg.qos)
        newer = self.presence.newer_than_me(msg.payload)
        if newer is None:
            return
        self.taken_over = True
        log.error("mqtt: another edgelstm (host %s, pid %s) started later with client id %r and takes the broker "
                  "session; this daemon stops using MQTT rather than take it back in a loop. Give each daemon its "
                  "own mqtt.client_id and restart this one", newer.get("host"), newer.get("pid"), self.cfg.client_id)
        self.connected.clear()
        self.client.disconnect()

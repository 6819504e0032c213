"""The MQTT link (paho-mqtt 2.x, MQTT v5): readings in, predictions and status out.

paho's network thread only decodes and enqueues (blocking while the queue is full, which
pushes back through TCP to the broker instead of losing readings). Readings are acknowledged
by the inference thread once their state update is committed (manual ack), so a crash before
that makes the broker deliver them again. A persistent session (fixed client id,
clean_start=False, a session expiry interval) keeps readings queued at the broker while we
are away. Subscriptions are made in on_connect, so they come back after every reconnect.
"""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..protocol import payload
from . import Inbound, count_drop

log = logging.getLogger(__name__)


def no_nagle(client, userdata, sock) -> None:
    """paho leaves Nagle's algorithm on: a small PUBLISH or PUBACK then waits for the previous
    segment's ACK (delayed up to 40 ms) whenever one is outstanding, which dominates latency."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):            # not a TCP socket (e.g. a websocket wrapper)
        pass


class MqttLink:
    def __init__(self, cfg, n_inputs: int, out: queue.Queue | None, drops: dict):
        self.cfg, self.n_inputs, self.out, self.drops = cfg, n_inputs, out, drops
        self.status_topic = cfg.status_topic.format(client_id=cfg.client_id)
        self.connected = threading.Event()
        self.stopping = False
        self.connects = 0
        c = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id,
                                      protocol=mqtt.MQTTv5, manual_ack=True)
        c.enable_logger(logging.getLogger("edgelstm.paho"))
        c.suppress_exceptions = True            # an exception in a callback never kills the loop
        c.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)
        c.max_queued_messages_set(cfg.max_queued_out)
        c.max_inflight_messages_set(cfg.max_inflight_out)
        c.will_set(self.status_topic, b"offline", qos=1, retain=True)
        if cfg.username:
            c.username_pw_set(cfg.username, cfg.password())
        if cfg.tls:
            c.tls_set(ca_certs=cfg.tls_ca or None, certfile=cfg.tls_cert or None, keyfile=cfg.tls_key or None,
                      tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.on_connect, c.on_disconnect, c.on_message = self._on_connect, self._on_disconnect, self._on_message
        c.on_publish, c.on_subscribe = self._on_publish, self._on_subscribe
        c.on_socket_open = no_nagle
        prefix, _, suffix = cfg.subscribe.partition("+")
        self._prefix, self._suffix = prefix, suffix

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        props.ReceiveMaximum = self.cfg.receive_maximum
        props.MaximumPacketSize = self.cfg.max_packet_bytes
        host, port = self.cfg.host_port
        # connect_async + loop_start: the broker may be absent at start-up; paho keeps trying.
        self.client.connect_async(host, port, keepalive=self.cfg.keepalive_s, clean_start=False, properties=props)
        self.client.loop_start()

    def stop(self) -> None:
        self.stopping = True
        if self.connected.is_set():
            info = self.client.publish(self.status_topic, b"offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    # -- paho callbacks (network thread) ---------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning("mqtt: connection refused: %s", reason_code)
            return
        self.connects += 1
        # MQTT v5: a broker may refuse publishes beyond its Receive Maximum ("quota exceeded",
        # counted as publish_rejected). paho neither applies it nor lets us change the limit now.
        broker_max = getattr(properties, "ReceiveMaximum", 65_535)
        if broker_max < self.cfg.max_inflight_out and self.connects == 1:
            log.info("mqtt: the broker's Receive Maximum is %d, mqtt.max_inflight_out %d: if it refuses predictions "
                     "(edgelstm_drops_total{reason=\"publish_rejected\"}), lower mqtt.max_inflight_out to %d or raise "
                     "the broker's max_inflight_messages", broker_max, self.cfg.max_inflight_out, broker_max)
        log.info("mqtt: connected to %s:%d (session present: %s)", *self.cfg.host_port, flags.session_present)
        if self.out is not None and self.cfg.subscribe:
            client.subscribe(self.cfg.subscribe, qos=self.cfg.qos)
        client.publish(self.status_topic, b"online", qos=1, retain=True)
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        """The broker's answer to the subscription made in _on_connect. Readings published before
        it (on a first connect: no session yet) were never routed to us; after it, the session
        keeps them while we are away."""
        granted = reason_codes[0]
        if granted.is_failure:
            log.warning("mqtt: the broker refused the subscription to %s (%s): no readings will arrive; "
                        "check the broker's ACL for this client id or user", self.cfg.subscribe, granted)
        elif granted.value < self.cfg.qos:
            log.warning("mqtt: subscribed to %s with QoS %d only, not %d: the broker neither keeps readings for "
                        "us while we are away nor redelivers unacknowledged ones; raise its max_qos",
                        self.cfg.subscribe, granted.value, self.cfg.qos)
        else:
            log.info("mqtt: subscribed to %s (QoS %d)", self.cfg.subscribe, granted.value)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected.clear()
        if not self.stopping:
            log.warning("mqtt: disconnected (%s); reconnecting with backoff", reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        if reason_code.is_failure:                  # e.g. not authorized to publish on that topic
            count_drop(self.drops, "publish_rejected")
            log.warning("mqtt: the broker refused a prediction (%s): check its ACL for %s", reason_code,
                        self.cfg.publish)

    def _on_message(self, client, userdata, msg):
        topic = msg.topic
        stream = topic[len(self._prefix):len(topic) - len(self._suffix)] if topic.startswith(self._prefix) \
            and topic.endswith(self._suffix) else ""
        ack = self._acker(msg.mid) if msg.qos > 0 else None
        if not stream or "/" in stream:
            item = Inbound("", None, bad_reason="topic", ack=ack)
        else:
            try:
                item = Inbound(stream, payload.decode_mqtt(msg.payload, self.n_inputs), ack=ack)
            except payload.PayloadError as exc:
                item = Inbound(stream, None, bad_reason=exc.reason, ack=ack)
        while True:                     # back-pressure: wait for room rather than lose a reading
            try:
                self.out.put(item, timeout=1.0)
                return
            except queue.Full:
                if self.stopping:
                    count_drop(self.drops, "shutdown")
                    return

    def _acker(self, mid: int):
        """The ack for one message. Packet ids belong to the session, not the connection: the
        broker resends an unacknowledged message after a reconnect under its original id, so
        an ack that waited across a reconnect still names the right message."""
        def ack():
            if self.connected.is_set():
                self.client.ack(mid, 1)
        return ack

    # -- publishing (inference thread) -----------------------------------------------------------

    def publish(self, topic: str, data: bytes, qos: int = 1):
        """Queue a publish: its MessageInfo, or None (counted by the caller) when the outgoing
        queue is full. Messages queued while disconnected are sent after reconnecting; while
        connected, a full queue means the broker is slower than we are, and this waits up to
        publish_wait_s for it to confirm earlier ones (back-pressure that reaches the readings'
        producers through the broker), rather than drop a prediction the broker would take.
        Never while the input queue is full: paho's thread may be waiting there, and only that
        thread takes the broker's confirmations (waiting would be a deadlock)."""
        deadline = None
        while True:
            info = self.client.publish(topic, data, qos=qos)
            if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                return info
            if (info.rc != mqtt.MQTT_ERR_QUEUE_SIZE or not self.connected.is_set() or self.stopping
                    or (self.out is not None and self.out.full())):
                return None
            now = time.monotonic()
            deadline = deadline or now + self.cfg.publish_wait_s
            if now >= deadline:
                return None
            time.sleep(0.001)

    @staticmethod
    def confirmed(info) -> bool:
        """Whether the broker acknowledged a publish. (MessageInfo.is_published() raises for a
        message queued while disconnected, even after it went out; the flag itself is accurate.)"""
        return bool(getattr(info, "_published", False))

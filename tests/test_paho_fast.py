"""edgelstm.transports.paho_fast against stock paho, both on a real Mosquitto, each client driven
by a single-thread select loop like the daemon's (loop_read, acks and publishes, one loop_write)."""

from __future__ import annotations

import logging
import select
import socket
import time
from operator import itemgetter

import paho.mqtt
import paho.mqtt.client as mqtt
import pytest
from broker import Broker
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgelstm.transports import paho_fast

BATCH = 64


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("broker"))
    yield b.start()
    b.stop()


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("tls_broker"), tls=True)
    yield b.start()
    b.stop()


class Driver:
    """One client, driven like the daemon: after each loop_read batch, publish `predict`'s
    predictions, ack every QoS 1 reading, then one loop_write."""

    def __init__(self, broker, client_id: str, fast: bool, tls: bool = False, predict=None, tiny_sndbuf=False,
                 client_class=mqtt.Client):
        c = self.client = client_class(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                                       manual_ack=True)
        if tls:
            c.tls_set(ca_certs=str(broker.ca))
        c.max_inflight_messages_set(0)
        c.max_queued_messages_set(0)
        self.fast = paho_fast.accelerate(c) if fast else False
        self.broker, self.predict = broker, predict
        self.received, self.batch, self.published, self.infos = [], [], [], []
        self.connected, self.session_present, self.disconnects = False, None, []
        self.short_sends = 0
        c.on_connect = self._on_connect
        c.on_disconnect = lambda cl, u, f, rc, p: rc.is_failure and self.disconnects.append(rc)   # not ours
        c.on_message = lambda cl, u, msg: self.batch.append(msg)
        c.on_publish = lambda cl, u, mid, rc, p: self.published.append(
            (mid, rc.value, str(rc), vars(rc).copy(), p.json(), str(p), p.isEmpty(), vars(p).copy()))
        c.on_socket_register_write = lambda *a: None          # queue; one loop_write per batch
        c.on_socket_unregister_write = lambda *a: None
        if tiny_sndbuf:                                         # forces partial writes and BlockingIOError
            c.on_socket_open = lambda cl, u, sock: sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            stock_send = c._sock_send

            def counting_send(buf):
                try:
                    n = stock_send(buf)
                except BlockingIOError:            # TLS never sends part of a buffer: it raises instead
                    self.short_sends += 1
                    raise
                self.short_sends += n < len(buf)
                return n
            c._sock_send = counting_send

    def _on_connect(self, client, userdata, flags, rc, props):
        self.connected, self.session_present = True, flags.session_present

    def connect(self, clean_start=False):
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", self.broker.port, clean_start=clean_start, properties=props)
        return self

    def ready(self) -> bool:
        return paho_fast.buffered(self.client)

    def turn(self, readable: bool) -> None:
        c = self.client
        if readable or self.ready():
            c.loop_read(BATCH)
        for msg in self.batch:
            self.received.append(record(msg))
            if self.predict:
                for topic, data, qos in self.predict(msg):
                    self.infos.append(c.publish(topic, data, qos=qos))
            if msg.qos == 1:
                c.ack(msg.mid, 1)
        self.batch.clear()
        if c.want_write():
            c.loop_write()
        c.loop_misc()


def record(msg) -> tuple:
    props = msg.properties
    assert type(props) is Properties
    return (msg.topic, msg.payload, msg.qos, msg.mid, msg.retain, props.json(), str(props), props.isEmpty(),
            props.pack(), type(msg.payload))


def pump(drivers, until, timeout=30.0) -> None:
    deadline = time.time() + timeout
    while not until():
        assert time.time() < deadline, "timed out; received " + ", ".join(str(len(d.received)) for d in drivers)
        socks = {d.client.socket(): d for d in drivers if d.client.socket() is not None}
        wait = 0 if any(d.ready() for d in drivers) else 0.02
        r, _, _ = select.select(list(socks), [s for s, d in socks.items() if d.client.want_write()], [], wait)
        for sock, d in socks.items():
            d.turn(sock in r)


def settle(drivers, seconds: float) -> None:
    end = time.time() + seconds
    pump(drivers, lambda: time.time() > end, timeout=seconds + 5)


def subscribe(drivers, topic: str) -> None:
    for d in drivers:
        d.connect(clean_start=True)
    pump(drivers, lambda: all(d.connected for d in drivers))
    acked = []
    for d in drivers:
        d.client.on_subscribe = lambda *a: acked.append(1)
        d.client.subscribe(topic, qos=1)
    pump(drivers, lambda: len(acked) == len(drivers))


def stream(prefix: str) -> list[tuple]:
    """(topic, payload, qos, properties or None): QoS 0 and 1, payloads 0..70 KB (some bigger than
    the read-ahead buffer), no properties and every kind a publisher may set."""
    sizes = [0, 1, 35, 35, 35, 200, 4095, 16_384, 35, 65_535, 65_536, 70_000, 35, 0, 35]
    out = []
    for i in range(240):
        size = sizes[i % len(sizes)]
        payload = bytes((i + j) % 251 for j in range(size))
        props = None
        kind = i % 6
        if kind == 1:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = [("stream", f"s{i}"), ("unit", "°C")]
        elif kind == 2:
            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = "application/json"
            props.MessageExpiryInterval = 86_400
            props.PayloadFormatIndicator = 0
        elif kind == 4:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = "reply/x"
            props.CorrelationData = b"\x00\x01corr"
            props.UserProperty = ("only", "one")
        out.append((f"{prefix}/s{i % 7}", payload, (i // 3) % 2, props))
    return out


def without_expiry(records):
    """Mosquitto forwards the remaining Message Expiry Interval, which ticks between two drains."""
    out = []
    for r in records:
        js = dict(r[5])
        if "MessageExpiryInterval" in js:
            assert 86_390 <= js.pop("MessageExpiryInterval") <= 86_400
        out.append((*r[:5], js, *r[7:]))
    return out


def predictor(name: str):
    """One QoS 1 prediction per reading (to pred/<name>/...), some big enough to be split over
    sends, plus QoS 0, 1 and 2 ones for some mids, to topics nobody reads."""
    def predict(msg):
        out = [(f"pred/{name}/{msg.topic}", b"p" * (len(msg.payload) // 3), 1)]
        if msg.mid % 5 == 0:
            out.append((f"pred0/{name}/{msg.topic}", b"q", 0))
        if msg.mid % 7 == 0:                   # no subscriber: Mosquitto's PUBACK carries a reason byte
            out.append((f"nobody/{name}/{msg.topic}", b"r", 1))
        if msg.mid % 11 == 0:                  # QoS 2: confirmed by PUBCOMP
            out.append((f"pred2/{name}/{msg.topic}", b"s", 2))
        return out
    return predict


def expected_predictions(name: str, received) -> list[tuple]:
    return [(f"pred/{name}/{r[0]}", b"p" * (len(r[1]) // 3)) for r in received]


# -- tests ---------------------------------------------------------------------------------------


def test_paho_internals_we_patch_are_where_we_expect():
    version = paho.mqtt.__version__
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    reason = paho_fast.why_not(client)
    assert reason is None, (
        f"paho-mqtt {version} no longer has what edgelstm/transports/paho_fast.py patches: {reason}. "
        "The daemon still works (stock paho, slower). Re-read paho's client.py against paho_fast.py, "
        "then fix the patches and SUPPORTED.")
    assert paho_fast.accelerate(client), f"accelerate() refused paho-mqtt {version}"
    for name in ("_sock_recv", "loop_read", "_handle_publish", "_packet_write"):
        assert name in vars(client), f"{name} was not patched on the instance"
        assert name not in vars(mqtt.Client) or vars(mqtt.Client)[name] is not vars(client)[name]
    assert paho_fast.accelerate(client), "a second accelerate() must be a no-op"


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_stock_and_fast_receive_identical_streams_and_every_ack_lands(request, tls):
    broker = request.getfixturevalue("tls_broker" if tls else "broker")
    tag = f"diff-{'tls' if tls else 'tcp'}"
    stock = Driver(broker, f"{tag}-stock", fast=False, tls=tls, predict=predictor("stock"))
    fast = Driver(broker, f"{tag}-fast", fast=True, tls=tls, predict=predictor("fast"), tiny_sndbuf=True)
    pub = Driver(broker, f"{tag}-pub", fast=False, tls=tls)
    assert fast.fast and not stock.fast
    subscribe([stock, fast], f"{tag}/#")
    subscribe([pub], "pred/#")                               # checks what the subscribers predicted

    # 1. queued while both are away: QoS 1 only (Mosquitto does not queue QoS 0 for offline clients)
    for d in (stock, fast):
        d.client.disconnect()
    pump([stock, fast], lambda: stock.client.socket() is None and fast.client.socket() is None)
    queued = [m for m in stream(f"{tag}/q") if m[2] == 1] * 3
    for topic, payload, qos, props in queued:
        pub.client.publish(topic, payload, qos=qos, properties=props)
    pump([pub], lambda: len(pub.published) == len(queued))
    for d in (stock, fast):
        d.connected = False
        d.connect()
    # 2. live, QoS 0 and 1, while both are connected
    live = stream(f"{tag}/live")
    pump([stock, fast, pub], lambda: stock.connected and fast.connected)
    for topic, payload, qos, props in live:
        pub.client.publish(topic, payload, qos=qos, properties=props)
    total = len(queued) + len(live)
    pump([stock, fast, pub], lambda: len(stock.received) == total and len(fast.received) == total
         and all(not d.client.want_write() for d in (stock, fast)), timeout=60)

    assert stock.session_present and fast.session_present
    assert without_expiry(fast.received) == without_expiry(stock.received)
    sent = [(t, p, q, (pr or Properties(PacketTypes.PUBLISH)).json()) for t, p, q, pr in queued + live]
    got = [(r[0], r[1], r[2], r[5]) for r in without_expiry(fast.received)]
    assert got == [(t, p, q, {k: v for k, v in js.items() if k != "MessageExpiryInterval"}) for t, p, q, js in sent]
    assert {r[7] for r in fast.received} == {True, False}     # both the fast path and stock decoding ran
    assert all(r[9] is bytes for r in fast.received)
    assert fast.short_sends > 0, "the tiny send buffer never split or blocked a write"
    assert not fast.disconnects and not stock.disconnects

    # every prediction confirmed (QoS 1 by PUBACK, QoS 0 once written) and delivered, in order
    pump([stock, fast, pub], lambda: len(fast.published) == len(fast.infos) and len(stock.published) == len(stock.infos)
         and len(pub.received) >= 2 * total, timeout=60)
    assert len(fast.infos) == len(stock.infos) > total
    assert all(info.is_published() for info in fast.infos)
    mid = itemgetter(0)                        # QoS 0 ones are confirmed on write, QoS 1 on PUBACK: order by mid
    assert sorted(fast.published, key=mid) == sorted(stock.published, key=mid)   # equal ReasonCode and Properties
    used = {(PacketTypes.PUBACK, None), (PacketTypes.PUBACK, 16), (PacketTypes.PUBCOMP, None)}
    assert used <= set(paho_fast._REASONS), f"ack fast path unused: {set(paho_fast._REASONS)}"
    assert {p[1] for p in fast.published} == {0, 16}, "expected Success and No matching subscribers"

    assert not fast.client._out_messages and not fast.client._out_packet
    for name, d in (("fast", fast), ("stock", stock)):
        got = [r[:2] for r in pub.received if r[0].startswith(f"pred/{name}/")]
        assert got == expected_predictions(name, d.received), f"{name}'s predictions"

    # the broker redelivers nothing: every PUBACK landed
    for d in (stock, fast):
        d.client.disconnect()
    pump([stock, fast], lambda: stock.client.socket() is None and fast.client.socket() is None)
    again = [Driver(broker, f"{tag}-stock", fast=False, tls=tls), Driver(broker, f"{tag}-fast", fast=True, tls=tls)]
    for d in again:
        d.connect()
    pump(again, lambda: all(d.connected for d in again))
    settle(again, 1.0)
    assert all(d.session_present for d in again)
    assert [len(d.received) for d in again] == [0, 0], "the broker redelivered readings whose PUBACK was sent"


def test_loop_read_honours_max_packets(broker):
    pub = Driver(broker, "maxp-pub", fast=False)
    fast = Driver(broker, "maxp-fast", fast=True)
    stock = Driver(broker, "maxp-stock", fast=False)
    subscribe([fast, stock], "maxp/#")
    for d in (fast, stock):
        d.client.disconnect()
    pump([fast, stock], lambda: fast.client.socket() is None and stock.client.socket() is None)
    pub.connect(clean_start=True)
    for i in range(50):
        pub.client.publish(f"maxp/{i}", b"x" * 35, qos=1)
    pump([pub], lambda: len(pub.published) == 50)
    for d in (fast, stock):
        d.connect()
        d.client.loop_write()
        time.sleep(0.3)                      # CONNACK and all 50 are in the kernel by now
        d.client.loop_read(1)
        assert d.connected
        d.client.loop_read(5)
    assert len(fast.batch) == 5 and paho_fast.buffered(fast.client)
    assert len(stock.batch) == 1                             # stock ignores max_packets
    fast.client.loop_read(1000)
    assert len(fast.batch) == 50 and not paho_fast.buffered(fast.client)

    # the fast path's empty Properties: stock's state, one object per message
    first, second = fast.batch[0].properties, fast.batch[1].properties
    assert vars(first) == vars(Properties(PacketTypes.PUBLISH)) and first is not second
    first.UserProperty = ("set", "by a caller")
    assert not hasattr(second, "UserProperty") and second.isEmpty() and str(second) == "[]"


def test_read_ahead_is_dropped_on_reconnect(broker):
    """Bytes read ahead from the old socket must never be parsed as the new connection's."""
    pub = Driver(broker, "rc-pub", fast=False)
    fast = Driver(broker, "rc-fast", fast=True)
    subscribe([fast], "rc/#")
    fast.client.disconnect()
    pump([fast], lambda: fast.client.socket() is None)
    pub.connect(clean_start=True)
    for i in range(300):
        pub.client.publish(f"rc/{i}", f"{i:04d}".encode() * 250, qos=1)     # 300 KB: the buffer ends mid-packet
    pump([pub], lambda: len(pub.published) == 300)
    fast.connect()
    fast.client.loop_write()
    time.sleep(0.3)
    fast.client.loop_read(10)
    assert paho_fast.buffered(fast.client)
    fast.batch.clear()                        # never acked: the broker must send these again
    fast.connected = False
    early = []                                # PUBLISHes parsed before the new connection's CONNACK
    fast.client.on_message = lambda cl, u, msg: (fast.batch if fast.connected else early).append(msg)
    fast.client.reconnect()
    assert not paho_fast.buffered(fast.client)
    pump([fast], lambda: fast.connected and len({r[0] for r in fast.received}) == 300)
    assert not early and not fast.disconnects
    assert {r[0] for r in fast.received} == {f"rc/{i}" for i in range(300)}


def test_falls_back_when_an_internal_is_missing_and_the_client_still_works(broker, caplog):
    class Changed(mqtt.Client):
        _handle_publish = None                # as if a new paho renamed it

    caplog.set_level(logging.INFO, logger=paho_fast.__name__)
    d = Driver(broker, "fallback", fast=True, client_class=Changed)
    assert d.fast is False
    assert [r.getMessage() for r in caplog.records if r.name == paho_fast.__name__] == [
        f"mqtt: stock paho (fast path off): paho-mqtt {paho.mqtt.__version__}: Client._handle_publish is missing"]
    assert "loop_read" not in vars(d.client) and "_sock_recv" not in vars(d.client)
    d.client._handle_publish = mqtt.Client._handle_publish.__get__(d.client)    # let it receive again
    pub = Driver(broker, "fallback-pub", fast=False)
    subscribe([d], "fb/#")
    pub.connect(clean_start=True)
    pub.client.publish("fb/1", b"hello", qos=1)
    pump([d, pub], lambda: len(d.received) == 1)
    assert d.received[0][:3] == ("fb/1", b"hello", 1)


def test_unsupported_paho_version_stays_stock(monkeypatch, caplog):
    monkeypatch.setattr(paho.mqtt, "__version__", "9.0.0")
    caplog.set_level(logging.INFO, logger=paho_fast.__name__)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    assert paho_fast.accelerate(client) is False
    assert "paho-mqtt 9.0.0 is not one of the versions" in caplog.text
    assert not {"loop_read", "_sock_recv", "_handle_publish", "_packet_write"} & set(vars(client))


def test_subclass_overriding_a_patched_method_stays_stock():
    class Custom(mqtt.Client):
        def loop_read(self, max_packets: int = 1):
            return super().loop_read(max_packets)

    client = Custom(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    assert "overrides Client.loop_read" in paho_fast.why_not(client)
    assert paho_fast.accelerate(client) is False


def test_paho_own_threaded_loop_still_works_when_accelerated(broker):
    """loop_start() calls loop_read() without max_packets: it must drain the read-ahead buffer
    (select cannot see it), and coalesced writes must take publishes queued from another thread."""
    pub = Driver(broker, "thr-pub", fast=False)
    subscribe([pub], "thr-pred/#")
    got, confirmed = [], []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="thr-fast", protocol=mqtt.MQTTv5)
    assert paho_fast.accelerate(client)
    client.max_inflight_messages_set(0)
    client.on_message = lambda c, u, msg: got.append(msg.payload)
    client.on_publish = lambda c, u, mid, rc, p: confirmed.append(mid)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("thr/#", qos=1)
    client.on_subscribe = lambda *a: got.append(b"subscribed")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        deadline = time.time() + 10
        while got != [b"subscribed"] and time.time() < deadline:
            time.sleep(0.01)
        for i in range(2000):
            pub.client.publish(f"thr/{i}", f"{i}".encode(), qos=1)
            if i % 100 == 0:                  # this thread publishes while paho's thread reads and writes
                client.publish(f"thr-pred/{i}", b"p" * 3000, qos=1)
                client.publish(f"thr-pred0/{i}", b"q", qos=0)
        pump([pub], lambda: len(got) == 2001 and len(confirmed) == 40 and len(pub.received) == 20, timeout=30)
    finally:
        client.disconnect()
        client.loop_stop()
    assert got[1:] == [f"{i}".encode() for i in range(2000)]
    assert [r[0] for r in pub.received] == [f"thr-pred/{i}" for i in range(0, 2000, 100)]

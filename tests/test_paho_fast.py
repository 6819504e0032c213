"""edgelstm.transports.paho_fast against stock paho, both on a real Mosquitto, each client driven
by a single-thread select loop like the daemon's (loop_read, acks and publishes, one loop_write)."""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from operator import itemgetter

import paho.mqtt
import paho.mqtt.client as mqtt
import pytest
from broker import Broker
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

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
        self.received, self.batch, self.published, self.infos, self.qos_sent = [], [], [], [], []
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
                for topic, data, qos, retain in self.predict(msg):
                    self.infos.append(c.publish(topic, data, qos=qos, retain=retain))
                    self.qos_sent.append(qos)
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


def subscribe(drivers, topic: str, options: SubscribeOptions | None = None) -> None:
    for d in drivers:
        d.connect(clean_start=True)
    pump(drivers, lambda: all(d.connected for d in drivers))
    acked = []
    for d in drivers:
        d.client.on_subscribe = lambda *a: acked.append(1)
        if options is None:
            d.client.subscribe(topic, qos=1)
        else:
            d.client.subscribe(topic, options=options)
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
    sends, some retained, plus QoS 0, 1 and 2 ones for some mids, to topics nobody reads."""
    def predict(msg):
        out = [(f"pred/{name}/{msg.topic}", b"p" * (len(msg.payload) // 3), 1, msg.mid % 4 == 0)]
        if msg.mid % 5 == 0:
            out.append((f"pred0/{name}/{msg.topic}", b"q", 0, False))
        if msg.mid % 7 == 0:                   # no subscriber: Mosquitto's PUBACK carries a reason byte
            out.append((f"nobody/{name}/{msg.topic}", b"r", 1, False))
        if msg.mid % 11 == 0:                  # QoS 2: confirmed by PUBCOMP
            out.append((f"pred2/{name}/{msg.topic}", b"s", 2, False))
        return out
    return predict


def expected_predictions(name: str, received) -> list[tuple]:
    """(topic, payload, qos, retain, packed properties) as a retain-as-published subscriber sees them."""
    return [(f"pred/{name}/{r[0]}", b"p" * (len(r[1]) // 3), 1, r[3] % 4 == 0, b"\x00") for r in received]


# what a subscriber sees of predictions: retain as published, and no retained backlog from earlier tests
AS_PUBLISHED = SubscribeOptions(qos=1, retainAsPublished=True, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)


def as_received(records, prefix: str) -> list[tuple]:
    """(topic, payload, qos, retain, packed properties) of the records under `prefix`."""
    return [(r[0], r[1], r[2], r[4], r[8]) for r in records if r[0].startswith(prefix)]


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
    for name in ("_sock_recv", "loop_read", "_handle_publish", "_handle_pubackcomp", "_packet_write", "publish"):
        assert name in vars(client), f"{name} was not patched on the instance"
        assert name not in vars(mqtt.Client) or vars(mqtt.Client)[name] is not vars(client)[name]
    assert paho_fast.accelerate(client), "a second accelerate() must be a no-op"


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
@pytest.mark.integration
def test_stock_and_fast_receive_identical_streams_and_every_ack_lands(request, tls):
    broker = request.getfixturevalue("tls_broker" if tls else "broker")
    tag = f"diff-{'tls' if tls else 'tcp'}"
    stock = Driver(broker, f"{tag}-stock", fast=False, tls=tls, predict=predictor("stock"))
    fast = Driver(broker, f"{tag}-fast", fast=True, tls=tls, predict=predictor("fast"), tiny_sndbuf=True)
    pub = Driver(broker, f"{tag}-pub", fast=False, tls=tls)
    assert fast.fast and not stock.fast
    subscribe([stock, fast], f"{tag}/#")
    subscribe([pub], "pred/#", AS_PUBLISHED)                 # checks what the subscribers predicted

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
    # QoS 1 went through fast_publish, QoS 0 and 2 through stock publish
    assert [type(i) for i in fast.infos] == [paho_fast._PublishInfo if q == 1 else mqtt.MQTTMessageInfo
                                             for q in fast.qos_sent]
    assert {type(i) for i in stock.infos} == {mqtt.MQTTMessageInfo} and set(fast.qos_sent) == {0, 1, 2}
    mid = itemgetter(0)                        # QoS 0 ones are confirmed on write, QoS 1 on PUBACK: order by mid
    assert sorted(fast.published, key=mid) == sorted(stock.published, key=mid)   # equal ReasonCode and Properties
    used = {(PacketTypes.PUBACK, None), (PacketTypes.PUBACK, 16), (PacketTypes.PUBCOMP, None)}
    assert used <= set(paho_fast._REASONS), f"ack fast path unused: {set(paho_fast._REASONS)}"
    assert {p[1] for p in fast.published} == {0, 16}, "expected Success and No matching subscribers"

    assert not fast.client._out_messages and not fast.client._out_packet
    for name, d in (("fast", fast), ("stock", stock)):     # byte for byte what stock sent, retain flag included
        assert as_received(pub.received, f"pred/{name}/") == expected_predictions(name, d.received), name
    assert {r[3] for r in as_received(pub.received, "pred/fast/")} == {True, False}

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


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
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
    assert not {"loop_read", "_sock_recv", "_handle_publish", "_packet_write", "publish"} & set(vars(client))


def test_subclass_overriding_a_patched_method_stays_stock():
    class Custom(mqtt.Client):
        def loop_read(self, max_packets: int = 1):
            return super().loop_read(max_packets)

    client = Custom(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    assert "overrides Client.loop_read" in paho_fast.why_not(client)
    assert paho_fast.accelerate(client) is False


@pytest.mark.integration
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


# -- fast_publish --------------------------------------------------------------------------------


@pytest.fixture
def own_broker(tmp_path):
    """A broker this test may stop and start again."""
    b = Broker(tmp_path)
    yield b.start()
    b.stop()


def queueing_client(broker, protocol, fast: bool, logs: list) -> mqtt.Client:
    """Connected (socket open, CONNECT queued) but never driven, so every publish stays queued."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"q-{fast}-{protocol}", protocol=protocol)
    c.max_inflight_messages_set(0)
    c.on_socket_register_write = lambda *a: None
    c.on_log = lambda cl, u, level, buf: logs.append(buf)
    if fast:
        assert paho_fast.accelerate(c)
    c.connect("127.0.0.1", broker.port)
    return c


def publish_outcome(client, args, kwargs) -> tuple:
    """What one publish() leaves: its result, the packet queued and the message kept, field by field."""
    try:
        info = client.publish(*args, **kwargs)
    except Exception as exc:              # noqa: BLE001 - stock's exceptions are part of what must match
        return ("raised", type(exc), str(exc))
    out = ["queued", info.rc, info.mid, tuple(info), str(info), info[0], info[1], client._inflight_messages]
    if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:            # refused: what the mid names is an older message
        return tuple(out)
    packet = client._out_packet[-1]
    if packet["mid"] == info.mid and packet["command"] & 0xF0 == mqtt.PUBLISH:
        assert packet["info"] is info
        out.append((packet["command"], packet["mid"], packet["qos"], packet["pos"], packet["to_process"],
                    bytes(packet["packet"])))
    m = client._out_messages.get(info.mid)
    if m is not None:
        assert m.info is info and abs(m.timestamp - mqtt.time_func()) < 5
        out.append((m.mid, m._topic, m.topic, m.payload, type(m.payload), m.qos, m.retain, m.dup, m.state,
                    m.properties))
    return tuple(out)


PROPS = Properties(PacketTypes.PUBLISH)
PROPS.UserProperty = ("k", "v")
FAST_CALLS = [                            # (topic, payload, retain) that fast_publish handles itself
    ("pred/x", b"0.5", False), ("pred/x", b"0.5", True), ("pred/°C/é", b"", False), ("pred/y", b"\x00" * 120, False),
    ("pred/y", bytes(range(256)) * 80, True),           # a two-byte remaining length
    ("p", b"z" * 2_100_000, False),                     # a four-byte one
    ("pred/" + "t" * 300, b"1", False), ("pred/x", b"0.5", False)]
OTHER_CALLS = [                           # (args, kwargs) it hands to stock publish, which may raise
    (("pred/x", b"0.5"), {}), (("pred/x", b"0.5", 0), {}), (("pred/x", b"0.5", 2), {}),
    (("pred/x", b"1", 1), {"properties": PROPS}), (("pred/x", bytearray(b"0.5"), 1), {}), (("pred/x", "text", 1), {}),
    (("pred/x", None, 1), {}), (("pred/x", 3.5, 1), {}),
    (("pred/x", b"1"), {"qos": 1, "retain": 1}), (("pred/x", b"1"), {"qos": True}), (("", b"1", 1), {}),
    (("a/+", b"1", 1), {}), (("a/#/b", b"1", 1), {}), (("t" * 65536, b"1", 1), {}), (("\ud800", b"1", 1), {}),
    ((b"pred/bytes", b"1", 1), {}), (("pred/x", b"1", 3), {}), (("pred/x", [1], 1), {})]


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["v5", "v311"])
@pytest.mark.integration
def test_fast_publish_queues_the_packet_and_message_stock_would(broker, protocol):
    """Call for call, a fast_publish client and a stock one (same mids) queue byte-identical
    PUBLISH packets, keep equal MQTTMessages, return equal results or raise the same errors, and
    log the same debug lines."""
    stock_logs, fast_logs = [], []
    stock = queueing_client(broker, protocol, False, stock_logs)
    fast = queueing_client(broker, protocol, True, fast_logs)
    calls = [((t, p), {"qos": 1, "retain": r}) for t, p, r in FAST_CALLS] + OTHER_CALLS
    for args, kwargs in calls + calls[::-1]:
        expected = publish_outcome(stock, args, kwargs)
        assert publish_outcome(fast, args, kwargs) == expected, (args[0][:20], args[1:], kwargs)
    for c in (stock, fast):                # mids wrap around onto messages still unacknowledged: refused
        c._last_mid = 65534
    for args, kwargs in calls[:3]:
        expected = publish_outcome(stock, args, kwargs)
        assert publish_outcome(fast, args, kwargs) == expected
        assert expected[1] == mqtt.MQTT_ERR_QUEUE_SIZE or expected[2] == 65535
    handled = [type(m.info) is paho_fast._PublishInfo for m in fast._out_messages.values()]
    assert sum(handled) == 2 * len(FAST_CALLS) + 1 and not all(handled)     # + the one at mid 65535
    assert fast._edgelstm_topics and len(fast._out_packet) == len(stock._out_packet)
    assert [line for line in fast_logs if "PUBLISH" in line] == [line for line in stock_logs if "PUBLISH" in line]
    assert len([line for line in fast_logs if "Sending PUBLISH" in line]) > 2 * len(FAST_CALLS)


def published_states(infos) -> list:
    """is_published() of each, or what it raised (stock raises for an info whose rc was NO_CONN,
    even once the message went out after reconnecting)."""
    out = []
    for info in infos:
        try:
            out.append(info.is_published())
        except (ValueError, RuntimeError) as exc:
            out.append(type(exc))
    return out


def snapshot(d: Driver) -> list[tuple]:
    """The client's outgoing messages as stock reconnect logic sees them (topics without the client's name)."""
    name = d.client._client_id.decode().rsplit("-", 1)[1]
    return [(m.mid, m.topic.replace(name, "*"), m.payload, m.qos, m.retain, m.dup, m.state)
            for m in d.client._out_messages.values()]


@pytest.mark.integration
def test_fast_publish_while_the_broker_is_down_queues_and_sends_after_reconnect(own_broker):
    """Publishes still queued at the outage and publishes made while it lasts reach the
    subscriber after the restart, and the bookkeeping along the way is stock's."""
    stock, fast = Driver(own_broker, "down-stock", fast=False), Driver(own_broker, "down-fast", fast=True)
    for d in (stock, fast):
        d.connect(clean_start=True)
    pump([stock, fast], lambda: stock.connected and fast.connected)
    name = {stock: "stock", fast: "fast"}
    infos = {stock: [], fast: []}
    for d in (stock, fast):                # queued, never written: the outage comes first
        for i in range(5):
            infos[d].append(d.client.publish(f"out/{name[d]}/{i}", f"early {i}".encode(), qos=1, retain=i == 2))
    assert [i.rc for i in infos[fast]] == [i.rc for i in infos[stock]] == [mqtt.MQTT_ERR_SUCCESS] * 5
    own_broker.stop()
    pump([stock, fast], lambda: stock.client.socket() is None and fast.client.socket() is None)
    for d in (stock, fast):
        for i in range(5, 12):
            infos[d].append(d.client.publish(f"out/{name[d]}/{i}", f"away {i}".encode(), qos=1, retain=i == 7))
    assert [i.rc for i in infos[fast]] == [i.rc for i in infos[stock]] == [0] * 5 + [mqtt.MQTT_ERR_NO_CONN] * 7
    assert snapshot(fast) == snapshot(stock) and fast.client._inflight_messages == stock.client._inflight_messages
    assert published_states(infos[fast]) == published_states(infos[stock]) == [False] * 5 + [RuntimeError] * 7

    own_broker.start()                     # the subscriber first, so that it sees what the two resend
    sub = Driver(own_broker, "down-sub", fast=False)
    subscribe([sub], "out/#", AS_PUBLISHED)
    for d in (stock, fast):
        d.connected = False
        d.connect()
    pump([stock, fast, sub], lambda: len(stock.published) == len(fast.published) == 12 and len(sub.received) == 24)
    assert stock.connected and fast.connected
    assert published_states(infos[fast]) == published_states(infos[stock]) == [True] * 5 + [RuntimeError] * 7
    assert all(i._published for i in infos[fast])
    assert not fast.client._out_messages and not stock.client._out_messages
    assert [p[0] for p in fast.published] == [p[0] for p in stock.published]
    assert sorted(fast.published) == sorted(stock.published)
    for d in (stock, fast):
        got = as_received(sub.received, f"out/{name[d]}/")
        assert got == [(f"out/{name[d]}/{i}", f"{'early' if i < 5 else 'away'} {i}".encode(), 1, i in (2, 7), b"\x00")
                       for i in range(12)], name[d]


@pytest.mark.integration
def test_fast_publish_queue_and_inflight_limits_are_stock(broker):
    """max_inflight_messages and max_queued_messages: the same return codes (MQTT_ERR_QUEUE_SIZE
    when full), states and exceptions from the info; what was queued goes out, in stock's order."""
    stock, fast = Driver(broker, "lim-stock", fast=False), Driver(broker, "lim-fast", fast=True)
    for d in (stock, fast):
        d.client.max_inflight_messages_set(2)
        d.client.max_queued_messages_set(5)
        d.connect(clean_start=True)
    pump([stock, fast], lambda: stock.connected and fast.connected)
    infos = {stock: [], fast: []}

    def publish_all(label: str) -> None:
        for d in (stock, fast):
            infos[d] += [d.client.publish(f"lim/{label}/{i}", b"x", qos=1) for i in range(7)]
        assert [(i.rc, i.mid) for i in infos[fast]] == [(i.rc, i.mid) for i in infos[stock]]
        assert [m.state for m in fast.client._out_messages.values()] == [
            m.state for m in stock.client._out_messages.values()]
        assert fast.client._inflight_messages == stock.client._inflight_messages

    publish_all("on")                      # connected: 2 in flight, 3 queued, 2 refused
    assert [i.rc for i in infos[fast]] == [0] * 5 + [mqtt.MQTT_ERR_QUEUE_SIZE] * 2
    assert [m.state for m in fast.client._out_messages.values()] == [mqtt.mqtt_ms_wait_for_puback] * 2 + [
        mqtt.mqtt_ms_queued] * 3
    for info in (infos[fast][-1], infos[stock][-1]):
        with pytest.raises(ValueError, match="ERR_QUEUE_SIZE"):
            info.is_published()
        with pytest.raises(ValueError, match="ERR_QUEUE_SIZE"):
            info.wait_for_publish(0.01)
    pump([stock, fast], lambda: len(stock.published) == len(fast.published) == 5)
    assert [p[0] for p in fast.published] == [p[0] for p in stock.published]

    for d in (stock, fast):
        d.client.disconnect()
    pump([stock, fast], lambda: stock.client.socket() is None and fast.client.socket() is None)
    publish_all("off")                     # away: none counts as in flight, so 5 wait to be sent, 2 are refused
    assert [i.rc for i in infos[fast][7:]] == [mqtt.MQTT_ERR_NO_CONN] * 5 + [mqtt.MQTT_ERR_QUEUE_SIZE] * 2
    for d in (stock, fast):
        d.connected = False
        d.connect()
    pump([stock, fast], lambda: len(stock.published) == len(fast.published) == 10)
    assert [p[0] for p in fast.published] == [p[0] for p in stock.published]
    assert published_states(infos[fast]) == published_states(infos[stock])
    assert all(i._published for i in infos[fast] if i.rc != mqtt.MQTT_ERR_QUEUE_SIZE)
    assert not fast.client._out_messages and fast.client._inflight_messages == stock.client._inflight_messages == 0


@pytest.mark.integration
def test_fast_publish_info_can_be_waited_on(broker):
    """wait_for_publish and is_published on fast_publish's info: a waiter that starts before the
    PUBACK is woken by it, one that starts after returns at once, a timeout returns unpublished."""
    fast = Driver(broker, "wait-fast", fast=True)
    fast.connect(clean_start=True)
    pump([fast], lambda: fast.connected)
    early = fast.client.publish("wait/1", b"x", qos=1)
    assert type(early) is paho_fast._PublishInfo and not early.is_published()
    early.wait_for_publish(timeout=0.05)               # times out, as stock: no error, still unpublished
    assert not early.is_published()
    waiter = threading.Thread(target=early.wait_for_publish)    # no timeout: only the PUBACK ends it
    waiter.start()
    time.sleep(0.1)
    assert waiter.is_alive()
    later = fast.client.publish("wait/2", b"y", qos=1, retain=True)
    pump([fast], lambda: len(fast.published) == 2)
    waiter.join(timeout=5)
    assert not waiter.is_alive() and early.is_published() and later.is_published()
    later.wait_for_publish()
    assert (later.rc, later.mid) == tuple(later) == (mqtt.MQTT_ERR_SUCCESS, early.mid + 1)


def test_fast_publish_info_never_misses_a_wakeup():
    """The Condition is made by the first waiter while the PUBACK may be arriving on another
    thread: whichever comes first, the waiter returns."""
    for mid in range(1, 2001):
        info = paho_fast._PublishInfo(mid)
        waiter = threading.Thread(target=info.wait_for_publish)
        waiter.start()
        info._set_as_published()
        waiter.join(timeout=5)
        assert not waiter.is_alive(), f"waiter {mid} missed _set_as_published"
    assert info.is_published() and str(info) == str((mqtt.MQTT_ERR_SUCCESS, 2000))


class _OwnSendPublish(mqtt.Client):
    def _send_publish(self, mid, topic, payload=b"", qos=0, retain=False, dup=False, info=None, properties=None):
        return super()._send_publish(mid, topic, payload, qos, retain, dup, info, properties)


class _OwnPublish(mqtt.Client):
    def publish(self, topic, payload=None, qos=0, retain=False, properties=None):
        return super().publish(topic, payload, qos, retain, properties)


class _OldQueue(mqtt.Client):
    def _packet_queue(self, command, packet, mid, qos):
        return super()._packet_queue(command, packet, mid, qos)


@pytest.mark.parametrize("change, reason", [
    ("subclass _send_publish", "_OwnSendPublish overrides Client._send_publish"),
    ("subclass publish", "_OwnPublish overrides Client.publish"),
    ("subclass _packet_queue", "Client._packet_queue('self', 'command', 'packet', 'mid', 'qos') no longer takes"),
    ("message slots", "MQTTMessage's slots are not"),
    ("info slots", "MQTTMessageInfo's slots are not"),
    ("no message state", "paho.mqtt.client has no mqtt_ms_queued"),
    ("no queue limit", "Client has no attribute _max_queued_messages"),
], ids=lambda v: v.replace(" ", "-") if v.count(" ") < 3 else None)
def test_why_not_covers_what_fast_publish_relies_on(monkeypatch, change, reason):
    cls = {"subclass _send_publish": _OwnSendPublish, "subclass publish": _OwnPublish,
           "subclass _packet_queue": _OldQueue}.get(change, mqtt.Client)
    if change == "message slots":
        monkeypatch.setattr(mqtt.MQTTMessage, "__slots__", (*mqtt.MQTTMessage.__slots__, "new"))
    elif change == "info slots":
        monkeypatch.setattr(mqtt.MQTTMessageInfo, "__slots__", ("mid", "rc", "_published", "_event"))
    elif change == "no message state":
        monkeypatch.delattr(mqtt, "mqtt_ms_queued")
    client = cls(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if change == "no queue limit":
        del client._max_queued_messages
    assert reason in (paho_fast.why_not(client) or "")
    assert paho_fast.accelerate(client) is False and "publish" not in vars(client)

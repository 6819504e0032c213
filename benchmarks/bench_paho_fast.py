"""Stock paho-mqtt against edgelstm.transports.paho_fast, in the daemon's single-thread loop.

K queued QoS 1 messages of 35 bytes are drained from a persistent session (MQTT v5, manual
ack) by one thread driving paho from select(): loop_read(batch), then ack() every message of
the batch (and, in the relay scenario, publish one QoS 1 prediction per message), then one
loop_write(). CPU is this process's getrusage (user + system) over the drain only; the broker
runs in its own process. Configurations run interleaved, median of --runs.

    .venv/bin/python benchmarks/bench_paho_fast.py [--messages 50000] [--runs 3] [--quick]

Writes benchmarks/results/bench_paho_fast.json.
"""

from __future__ import annotations

import argparse
import resource
import select
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import paho.mqtt
import paho.mqtt.client as mqtt
from broker import Broker
from common import machine, progress, write_json
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgelstm.transports import paho_fast

PAYLOAD_BYTES = 35
BATCH = 256                  # packets per loop_read, as a daemon batch of readings


def configs(quick: bool) -> dict[str, tuple[str, ...] | None]:
    """None is stock paho; a tuple names the patches installed. "all but X" shows what X pays
    on top of the others (read_ahead cannot go without loop_read: see paho_fast.accelerate).
    --quick keeps "all but fast_publish", as the relay with and without it is the question
    fast_publish has to answer."""
    every = paho_fast.PATCHES
    out = {"stock": None, "all patches": every,
           "all but fast_publish": tuple(p for p in every if p != "fast_publish")}
    if not quick:
        out["loop_read only"] = ("loop_read",)
        for patch in every:
            rest = tuple(p for p in every if p != patch and not (patch == "loop_read" and p == "read_ahead"))
            out[f"all but {patch}"] = rest
    return out


# -- setup: a persistent session with K messages queued -------------------------------------------


def make_session(url_port: int, client_id: str, topic: str) -> None:
    """Subscribe once with a persistent session, then leave: the broker queues what follows."""
    client = new_client(client_id)
    done = []
    client.on_subscribe = lambda *a: done.append(1)
    client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
    client.connect("127.0.0.1", url_port, clean_start=True, properties=session_props())
    deadline = time.time() + 10
    while not done and time.time() < deadline:
        client.loop(0.1)
    client.disconnect()
    client.loop(0.1)
    if not done:
        raise RuntimeError("no SUBACK")


def raw_publish(port: int, topic: str, count: int) -> None:
    """Queue `count` QoS 1 messages fast: v3.1.1 PUBLISH packets written straight to a socket
    (the publisher is not what is measured), then wait for every PUBACK."""
    def remaining(n: int) -> bytes:
        out = bytearray()
        while True:
            n, digit = n >> 7, n & 0x7F
            out.append(digit | (0x80 if n else 0))
            if not n:
                return bytes(out)

    client_id = f"pub-{topic.replace('/', '-')}".encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"\x10" + remaining(len(body)) + body)
    if sock.recv(4)[:2] != b"\x20\x02":
        raise RuntimeError("publisher not connected")
    t = topic.encode()
    acked = bytearray()
    for start in range(0, count, 2000):
        chunk = bytearray()
        for i in range(start, min(count, start + 2000)):
            payload = f"{{\"seq\":{i:09d},\"x\":[0.1,0.25]}}".encode().ljust(PAYLOAD_BYTES, b" ")
            var = len(t).to_bytes(2, "big") + t + (i % 65535 + 1).to_bytes(2, "big")
            chunk += b"\x32" + remaining(len(var) + len(payload)) + var + payload
        sock.sendall(chunk)
        sock.setblocking(False)
        try:
            acked += sock.recv(1 << 20)
        except BlockingIOError:
            pass
        sock.setblocking(True)
    while len(acked) < 4 * count:
        acked += sock.recv(1 << 20)
    sock.close()


def session_props() -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    return props


def new_client(client_id: str) -> mqtt.Client:
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True)


# -- the measured part: a daemon-like loop -------------------------------------------------------


def drain(port: int, client_id: str, count: int, patches, relay: bool) -> dict:
    client = new_client(client_id)
    client.max_inflight_messages_set(0)             # predictions: no client-side window (the broker has none either)
    client.max_queued_messages_set(0)
    if patches is not None and not paho_fast.accelerate(client, patches):
        raise RuntimeError(paho_fast.why_not(client))
    batch, seen, published = [], [0], [0]
    client.on_message = lambda c, u, msg: batch.append(msg.mid)
    client.on_publish = lambda *a: published.__setitem__(0, published[0] + 1)
    # as the daemon: packets queue up (no write per publish/ack) until the one loop_write per batch
    client.on_socket_register_write = lambda *a: None
    client.on_socket_unregister_write = lambda *a: None
    ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    client.connect("127.0.0.1", port, clean_start=False, properties=session_props())
    sock = client.socket()
    last_misc = time.monotonic()
    deadline = time.time() + 120
    while seen[0] < count or client.want_write() or (relay and published[0] < count):
        if time.time() > deadline:
            raise RuntimeError(f"stalled: {seen[0]} of {count} received, {published[0]} published")
        if not paho_fast.buffered(client):
            select.select([sock], [sock] if client.want_write() else [], [], 0.05)
        client.loop_read(BATCH)
        for mid in batch:
            if relay:
                client.publish("pred/x", b"0.5", qos=1)
            client.ack(mid, 1)
        seen[0] += len(batch)
        batch.clear()
        client.loop_write()
        if time.monotonic() - last_misc >= 1.0:
            client.loop_misc()
            last_misc = time.monotonic()
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    client.disconnect()
    client.loop_write()
    if seen[0] != count:
        raise RuntimeError(f"received {seen[0]}, expected {count}")
    return {"cpu_us_per_msg": cpu / count * 1e6, "msg_per_s": count / wall}


def fast_publish_effect(summary: dict) -> dict:
    """Median CPU per message with every patch, with and without fast_publish, per scenario."""
    out = {}
    for scenario, rows in summary.items():
        with_it, without = rows["all patches"]["cpu_us_per_msg"], rows["all but fast_publish"]["cpu_us_per_msg"]
        out[scenario] = {"with": with_it, "without": without, "saved_us_per_msg": without - with_it}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="stock and all patches only")
    args = parser.parse_args()
    cfgs = configs(args.quick)
    scenarios = ("drain (ack only)", "relay (ack + QoS 1 prediction)")
    results = {s: {name: [] for name in cfgs} for s in scenarios}
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp)).start()
        try:
            n = 0
            for rep in range(args.runs):
                for scenario in scenarios:
                    for name, patches in cfgs.items():
                        n += 1
                        client_id, topic = f"bench-{n}", f"bench/{n}"
                        make_session(broker.port, client_id, topic)
                        raw_publish(broker.port, topic, args.messages)
                        r = drain(broker.port, client_id, args.messages, patches, scenario.startswith("relay"))
                        results[scenario][name].append(r)
                        progress(f"run {rep + 1} {scenario:<32} {name:<28} {r['cpu_us_per_msg']:6.1f} µs/msg "
                                 f"{r['msg_per_s']:9,.0f} msg/s")
        finally:
            broker.stop()

    summary = {}
    print(f"\n{'scenario':<33}{'configuration':<30}{'CPU µs/msg':>11}{'msg/s':>10}{'vs stock':>10}"
          f"   (medians of {args.runs}, {args.messages:,} messages, paho {paho.mqtt.__version__})")
    for scenario, by_cfg in results.items():
        summary[scenario] = {}
        for name, runs in by_cfg.items():
            if not runs:
                continue
            cpu = statistics.median(r["cpu_us_per_msg"] for r in runs)
            rate = statistics.median(r["msg_per_s"] for r in runs)
            summary[scenario][name] = {"cpu_us_per_msg": cpu, "msg_per_s": rate}
        stock = summary[scenario]["stock"]["cpu_us_per_msg"]
        for name, row in summary[scenario].items():
            print(f"{scenario:<33}{name:<30}{row['cpu_us_per_msg']:>11.1f}{row['msg_per_s']:>10,.0f}"
                  f"{stock / row['cpu_us_per_msg']:>9.2f}×")
    effect = fast_publish_effect(summary)
    for scenario, row in effect.items():
        print(f"fast_publish, {scenario}: {row['without']:.1f} -> {row['with']:.1f} CPU µs/msg "
              f"({row['saved_us_per_msg']:+.1f} saved)")
    path = write_json("bench_paho_fast", {
        "machine": machine(), "paho": paho.mqtt.__version__, "messages": args.messages, "runs": args.runs,
        "batch": BATCH, "payload_bytes": PAYLOAD_BYTES, "configs": {k: v and list(v) for k, v in cfgs.items()},
        "median": summary, "fast_publish": effect, "raw": results})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

"""End-to-end latency through a local Mosquitto: a reading published -> its prediction received.

    .venv/bin/python benchmarks/bench_e2e.py [--seconds 4]

For each (rate, streams) the publisher sends JSON readings at a fixed rate, round-robin over the
streams, with its send time in "t"; the daemon (`edgelstm run` in its own process, as deployed,
with the default ack = "checkpoint") predicts; a subscriber takes receive time minus "t".
Reports p50/p99 latency, loss, and the highest rate sustained without loss or backlog.
Writes benchmarks/results/bench_e2e.{json,png}. Publisher, broker, daemon and subscriber
share this machine's 2 cores, so the numbers are a lower bound for a dedicated device.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))         # the test suite's private-broker helper
sys.path.insert(0, str(ROOT))
from broker import Broker  # noqa: E402
from common import RESULTS, machine, progress, write_json  # noqa: E402
from daemon_helpers import DaemonProcess, v5_client  # noqa: E402


def run_point(broker, workdir, rate, streams, seconds):
    cid = f"bench-{rate}-{streams}"
    point_dir = workdir / cid
    point_dir.mkdir()
    daemon = DaemonProcess(point_dir, broker.url, client_id=cid,
                           mqtt_extra=f'subscribe = "b/{cid}/+/r"\npublish = "b/{cid}/{{stream}}/p"').start()
    lat, lock, got = [], threading.Lock(), set()

    def on_message(client, userdata, msg):
        d = json.loads(msg.payload)
        with lock:
            lat.append(time.time() - d["t_in"])
            got.add((d["stream"], d["seq"]))

    sub = v5_client(broker.port, f"{cid}-sub", on_message)
    sub.on_connect = lambda c, *a: c.subscribe(f"b/{cid}/+/p", qos=1)
    sub.loop_start()
    pub = v5_client(broker.port, f"{cid}-pub", inflight=1000)
    pub.loop_start()
    time.sleep(0.5)
    n = int(rate * seconds)
    x = [0.1, -0.9, 0.3]
    t0 = time.time()
    for k in range(n):
        due = t0 + k / rate
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        s, seq = k % streams, k // streams
        pub.publish(f"b/{cid}/s{s}/r", json.dumps({"seq": seq, "t": time.time(), "x": x}), qos=1)
    send_s = time.time() - t0
    deadline = time.time() + 10
    while len(got) < n and time.time() < deadline:
        time.sleep(0.05)
    drained_after = time.time() - t0 - send_s
    daemon.terminate()
    for c in (sub, pub):
        c.disconnect()
        c.loop_stop()
    ms = np.array(lat) * 1e3
    return {"rate": rate, "streams": streams, "sent": n, "received": len(got),
            "late": n - len(got),            # not received within 10 s after publishing stopped
            "achieved_rate": n / send_s, "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None, "drain_s": drained_after}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="publishing time per point")
    parser.add_argument("--rates", default="500,2000,5000,10000", help="readings per second to try")
    parser.add_argument("--streams", default="10,100", help="stream counts to try")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "broker").mkdir()
        broker = Broker(work / "broker").start()
        try:
            for streams in map(int, args.streams.split(",")):
                for rate in map(int, args.rates.split(",")):
                    r = run_point(broker, work, rate, streams, args.seconds)
                    rows.append(r)
                    progress(f"{rate}/s over {streams} streams: p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms, "
                             f"late {r['late']}, achieved {r['achieved_rate']:.0f}/s")
        finally:
            broker.stop()
    print(f"\n{'rate/s':>8}{'streams':>9}{'achieved/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'late':>6}{'drain s':>9}"
          "   (late: not received within 10 s after publishing stopped)")
    for r in rows:
        print(f"{r['rate']:>8}{r['streams']:>9}{r['achieved_rate']:>12.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
              f"{r['late']:>6}{r['drain_s']:>9.2f}")
    ok = [r for r in rows if r["late"] == 0 and r["drain_s"] < 1.0 and r["achieved_rate"] > 0.95 * r["rate"]]
    best = max((r["rate"] for r in ok), default=0)
    print(f"\nhighest rate sustained without loss or backlog: {best} readings/s")
    write_json("bench_e2e", {"machine": machine(), "rows": rows, "sustained_rate": best, "seconds": args.seconds})
    plot(rows)


def plot(rows):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for streams in sorted({r["streams"] for r in rows}):
        pts = [r for r in rows if r["streams"] == streams and r["p50_ms"] is not None]
        ax.plot([r["rate"] for r in pts], [r["p50_ms"] for r in pts], "o-", label=f"p50, {streams} streams")
        ax.plot([r["rate"] for r in pts], [r["p99_ms"] for r in pts], "s--", label=f"p99, {streams} streams")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("readings per second (published)")
    ax.set_ylabel("reading published -> prediction received (ms)")
    ax.set_title("edgelstm end to end through a local Mosquitto (2-core VM, all on one box)")
    ax.legend()
    fig.tight_layout()
    path = RESULTS / "bench_e2e.png"
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

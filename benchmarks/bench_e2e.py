"""End-to-end latency through a local Mosquitto: a reading published -> its answer received.

    .venv/bin/python benchmarks/bench_e2e.py [--seconds 3] [--repeats 3] [--rates 500,2000] [--streams 100]

Each point: a publisher (paho, QoS 1, paced) sends JSON readings round-robin over the streams,
stamping its send time in "t"; the service under test answers; a subscriber in its own process
(sharing no interpreter lock with the publisher) records receive time minus "t". Two services,
side by side on the same broker and load:

  edgelstm    `edgelstm run` as deployed: its own process, default ack = "checkpoint"
  paho relay  benchmarks/paho_relay.py: the daemon's threading (paho thread -> queue -> worker,
              QoS 1 answer, manual ack) with no model, state or checkpoint; the floor for any
              Python service built on paho on this machine

Reports, per point, medians over --repeats runs of p50/p99 latency and of the readings still
unanswered 10 s after publishing stopped ("late": a backlog, not a loss), the highest rate each
sustains, and edgelstm / relay ratios. Writes benchmarks/results/bench_e2e.{json,png}.
Broker, services and load generator share this machine's cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))         # the test suite's private-broker helpers
sys.path.insert(0, str(ROOT))
from broker import Broker  # noqa: E402
from common import RESULTS, machine, progress, write_json  # noqa: E402
from daemon_helpers import DaemonProcess, v5_client  # noqa: E402

SERVICES = ("edgelstm", "paho relay")
DRAIN_S = 10.0


# -- the subscriber, in its own process ---------------------------------------------------------

def subscriber_main(port: int, topic_filter: str) -> None:
    """stdin "count" -> answers received so far; "dump" -> their latencies (ms) as JSON, then exit."""
    first: dict = {}
    lock = threading.Lock()

    def on_message(client, userdata, msg):
        now = time.time()
        d = json.loads(msg.payload)
        with lock:
            first.setdefault((d["stream"], d["seq"]), (now - d["t_in"]) * 1e3)

    c = v5_client(port, f"sub-{uuid.uuid4().hex[:8]}", on_message)
    subscribed = threading.Event()
    c.on_connect = lambda client, *a: client.subscribe(topic_filter, qos=1)
    c.on_subscribe = lambda *a: subscribed.set()
    c.loop_start()
    subscribed.wait(10)
    print("ready", flush=True)
    for line in sys.stdin:
        with lock:
            if line.strip() == "count":
                print(len(first), flush=True)
            else:
                print(json.dumps(list(first.values())), flush=True)
                break
    c.disconnect()
    c.loop_stop()


class Subscriber:
    def __init__(self, port: int, topic_filter: str):
        self.proc = subprocess.Popen([sys.executable, __file__, "--subscriber", str(port), topic_filter],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the subscriber process did not start")

    def _ask(self, what: str) -> str:
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline()

    def count(self) -> int:
        return int(self._ask("count"))

    def latencies_ms(self) -> np.ndarray:
        out = np.array(json.loads(self._ask("dump")))
        self.proc.wait(timeout=10)
        return out


# -- the services under test --------------------------------------------------------------------

class Relay:
    def __init__(self, port: int, in_filter: str, out_pattern: str):
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "paho_relay.py"), str(port), in_filter,
                                      out_pattern], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("paho_relay.py did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def start_service(service: str, broker, workdir: Path, cid: str):
    in_filter, out_pattern = f"b/{cid}/+/r", f"b/{cid}/{{stream}}/p"
    if service == "paho relay":
        return Relay(broker.port, in_filter, out_pattern)
    workdir.mkdir()
    daemon = DaemonProcess(workdir, broker.url, client_id=cid,
                           mqtt_extra=f'subscribe = "{in_filter}"\npublish = "{out_pattern}"').start()
    daemon.stop = daemon.terminate
    return daemon


# -- one measurement ----------------------------------------------------------------------------

def run_point(broker, workdir: Path, service: str, rate: int, streams: int, seconds: float) -> dict:
    cid = f"{service.split()[0]}-{rate}-{streams}-{uuid.uuid4().hex[:6]}"
    svc = start_service(service, broker, workdir / cid, cid)
    sub = Subscriber(broker.port, f"b/{cid}/+/p")
    pub = v5_client(broker.port, f"{cid}-pub", inflight=1000)
    pub.loop_start()
    time.sleep(0.5)
    n, x = int(rate * seconds), [0.1, -0.9, 0.3]
    t0 = time.time()
    for k in range(n):
        delay = t0 + k / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        pub.publish(f"b/{cid}/s{k % streams}/r", json.dumps({"seq": k // streams, "t": time.time(), "x": x}), qos=1)
    send_s = time.time() - t0
    deadline = time.time() + DRAIN_S
    while sub.count() < n and time.time() < deadline:
        time.sleep(0.05)
    drain_s = time.time() - t0 - send_s
    ms = sub.latencies_ms()
    svc.stop()
    pub.disconnect()
    pub.loop_stop()
    return {"service": service, "rate": rate, "streams": streams, "sent": n, "late": n - len(ms),
            "achieved_rate": n / send_s, "drain_s": drain_s,
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None}


def median_row(runs: list[dict]) -> dict:
    row = dict(runs[0])
    for key in ("late", "achieved_rate", "drain_s", "p50_ms", "p99_ms"):
        values = [r[key] for r in runs if r[key] is not None]
        row[key] = statistics.median(values) if values else None
    row["runs"] = runs
    return row


def sustained(rows: list[dict], service: str) -> int:
    ok = [r["rate"] for r in rows if r["service"] == service and r["late"] == 0 and r["drain_s"] < 1.0
          and r["achieved_rate"] > 0.95 * r["rate"]]
    return max(ok, default=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="publishing time per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per point; medians are reported")
    parser.add_argument("--rates", default="500,1000,2000,3000,5000,10000", help="readings per second to try")
    parser.add_argument("--streams", default="100", help="stream counts to try")
    args = parser.parse_args()
    points = [(s, r) for s in map(int, args.streams.split(",")) for r in map(int, args.rates.split(","))]
    runs: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "broker").mkdir()
        broker = Broker(work / "broker").start()
        try:
            for rep in range(args.repeats):              # services interleaved: both see the same noise
                for streams, rate in points:
                    for service in SERVICES:
                        r = run_point(broker, work, service, rate, streams, args.seconds)
                        runs.setdefault((service, rate, streams), []).append(r)
                        progress(f"run {rep + 1}/{args.repeats} {service:>10}: {rate}/s over {streams} streams: "
                                 f"p50 {r['p50_ms'] or 0:.2f} ms p99 {r['p99_ms'] or 0:.2f} ms, late {r['late']}")
        finally:
            broker.stop()
    rows = [median_row(v) for v in runs.values()]
    print_table(rows, args)
    best = {s: sustained(rows, s) for s in SERVICES}
    for s in SERVICES:
        print(f"highest rate sustained without backlog, {s}: {best[s]} readings/s")
    write_json("bench_e2e", {"machine": machine(), "rows": rows, "sustained_rate": best, "seconds": args.seconds,
                             "repeats": args.repeats})
    plot(rows)


def print_table(rows: list[dict], args) -> None:
    print(f"\nmedians of {args.repeats} runs of {args.seconds:g} s; late = unanswered {DRAIN_S:g} s after publishing "
          "stopped (a backlog, not a loss)")
    print(f"{'rate/s':>7}{'streams':>8} | {'edgelstm p50':>12}{'p99':>8}{'late':>6} | {'relay p50':>10}{'p99':>8}"
          f"{'late':>6} | {'p50 ratio':>9}{'p99 ratio':>10}")
    by = {(r["service"], r["rate"], r["streams"]): r for r in rows}
    for (service, rate, streams), d in sorted(by.items(), key=lambda kv: (kv[0][2], kv[0][1])):
        if service != "edgelstm":
            continue
        b = by[("paho relay", rate, streams)]
        ratios = [f"{d[k] / b[k]:.2f}x" if d[k] and b[k] else "-" for k in ("p50_ms", "p99_ms")]
        print(f"{rate:>7}{streams:>8} | {d['p50_ms']:>12.2f}{d['p99_ms']:>8.1f}{d['late']:>6.0f} | "
              f"{b['p50_ms']:>10.2f}{b['p99_ms']:>8.1f}{b['late']:>6.0f} | {ratios[0]:>9}{ratios[1]:>10}")


def plot(rows):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for service, color in zip(SERVICES, ("tab:blue", "tab:gray")):
        for streams in sorted({r["streams"] for r in rows}):
            pts = sorted((r for r in rows if r["service"] == service and r["streams"] == streams and r["p50_ms"]),
                         key=lambda r: r["rate"])
            ax.plot([r["rate"] for r in pts], [r["p50_ms"] for r in pts], "o-", color=color,
                    label=f"{service} p50, {streams} streams")
            ax.plot([r["rate"] for r in pts], [r["p99_ms"] for r in pts], "s--", color=color,
                    label=f"{service} p99, {streams} streams")
    ax.plot([2000], [1.0], "k*", markersize=12, label="target p50 at 2,000/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("readings per second (published)")
    ax.set_ylabel("reading published -> answer received (ms)")
    ax.set_title("End to end through a local Mosquitto (all on one 2-core VM; medians)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = RESULTS / "bench_e2e.png"
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--subscriber":
        subscriber_main(int(sys.argv[2]), sys.argv[3])
    else:
        main()

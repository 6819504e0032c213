"""End-to-end latency through a local Mosquitto: a reading published -> its answer received.

    .venv/bin/python benchmarks/bench_e2e.py [--seconds 3] [--repeats 3] [--rates 500,2000] [--streams 100]

The load is `mqtt_load` (benchmarks/mqtt_load.c, compiled here with the system compiler): one C
process that publishes JSON readings (QoS 1, paced, round-robin over the streams, send time in
"t") and subscribes to the answers, timing receive time - "t_in". Written in C so that the load
takes almost no CPU from the service under test: broker, service and load share this machine's
cores. Services side by side, on the same broker and load:

  edgelstm         `edgelstm run` as deployed: its own process, default ack = "checkpoint"
  paho relay       benchmarks/paho_relay.py: the daemon's threading (paho thread -> queue ->
                   worker, QoS 1 answer, manual ack), no model, state or checkpoint: the floor
                   for a Python service built on paho the way the daemon must be
  paho 1-thread    paho_relay.py --single-thread: answers inside on_message, no hand-off: the
                   floor for any Python service on paho
  C relay          mqtt_load relay: the same answers from C, a write per read: the floor of this
                   broker and machine

--profile RATE also samples edgelstm with py-spy at RATE readings/s (flame graph and a
self-time table: benchmarks/results/bench_e2e_profile.{svg,txt}).

Before each timed run every stream sends one reading (untimed), so the run measures streams the
service knows already, as in a deployment; --cold-streams times their first readings too.

Reports, per point, medians over --repeats runs of p50/p99 latency, of the readings still
unanswered 10 s after publishing stopped ("late": a backlog, not a loss) and of the service's
CPU time per reading; the highest rate each sustains; ratios to the paho relay. Writes
benchmarks/results/bench_e2e.{json,png}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))         # the test suite's private-broker helpers
sys.path.insert(0, str(ROOT))
from broker import Broker  # noqa: E402
from common import RESULTS, machine, progress, write_json  # noqa: E402
from daemon_helpers import DaemonProcess  # noqa: E402

SERVICES = ("edgelstm", "paho relay", "paho 1-thread", "C relay")
DRAIN_S = 10.0
LOAD_SRC = ROOT / "benchmarks" / "mqtt_load.c"
LOAD_EXE = ROOT / "build" / "mqtt_load"


def build_load() -> Path:
    """Compile mqtt_load.c when the binary is missing or older than its source."""
    if LOAD_EXE.exists() and LOAD_EXE.stat().st_mtime >= LOAD_SRC.stat().st_mtime:
        return LOAD_EXE
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("bench_e2e needs a C compiler for its load generator: apt-get install gcc")
    LOAD_EXE.parent.mkdir(exist_ok=True)
    subprocess.run([cc, "-O2", "-std=c99", "-Wall", "-o", str(LOAD_EXE), str(LOAD_SRC), "-lm"], check=True)
    return LOAD_EXE


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the services under test --------------------------------------------------------------------

class Relay:
    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.pid = self.proc.pid
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{argv[1]} did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def start_service(service: str, broker, workdir: Path, cid: str):
    in_filter, out_pattern = f"b/{cid}/+/r", f"b/{cid}/{{stream}}/p"
    relay = [sys.executable, str(ROOT / "benchmarks" / "paho_relay.py"), str(broker.port), in_filter, out_pattern]
    if service == "paho relay":
        return Relay(relay)
    if service == "paho 1-thread":
        return Relay(relay + ["--single-thread"])
    if service == "C relay":
        return Relay([str(LOAD_EXE), "relay", str(broker.port), f"b/{cid}"])
    workdir.mkdir()
    daemon = DaemonProcess(workdir, broker.url, client_id=cid,
                           mqtt_extra=f'subscribe = "{in_filter}"\npublish = "{out_pattern}"').start()
    daemon.stop, daemon.pid = daemon.terminate, daemon.proc.pid
    return daemon


# -- one measurement ----------------------------------------------------------------------------

def run_load(broker, cid: str, rate: int, seconds: float, streams: int, seq0: int = 0) -> str:
    load = subprocess.run([str(LOAD_EXE), "load", str(broker.port), f"b/{cid}", str(rate), str(seconds), str(streams),
                           str(DRAIN_S), str(seq0)], capture_output=True, text=True, timeout=seconds + DRAIN_S + 30)
    if load.returncode != 0:
        raise RuntimeError(f"mqtt_load failed: {load.stderr.strip()}")
    return load.stdout


def run_point(broker, workdir: Path, service: str, rate: int, streams: int, seconds: float,
              warm: bool = True) -> dict:
    """One run; warm: every stream sends one reading first (untimed), so the run measures streams
    the service already knows, not their first reading (a new track, bank row and metric series)."""
    cid = f"{service.split()[0]}-{rate}-{streams}-{uuid.uuid4().hex[:6]}"
    svc = start_service(service, broker, workdir / cid, cid)
    time.sleep(0.5)
    if warm:
        run_load(broker, cid, rate, streams / rate, streams)
    cpu0 = cpu_seconds(svc.pid)
    out = run_load(broker, cid, rate, seconds, streams, seq0=1 if warm else 0)
    cpu = cpu_seconds(svc.pid) - cpu0
    svc.stop()
    head, *lines = out.splitlines()
    words = head.split()                      # sent N received R send_s S drain_s D
    sent, received, send_s, drain_s = int(words[1]), int(words[3]), float(words[5]), float(words[7])
    ms = np.array([float(v) for v in lines])
    return {"service": service, "rate": rate, "streams": streams, "sent": sent, "late": sent - received,
            "achieved_rate": sent / send_s, "drain_s": drain_s, "cpu_us_per_reading": 1e6 * cpu / max(received, 1),
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None}


def profile_point(broker, workdir: Path, rate: int, streams: int, seconds: float) -> None:
    """py-spy samples `edgelstm run` while it serves `rate` readings/s: a flame graph, and the
    functions where the daemon's one thread spends its time (self time, top 15)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    cid = f"profile-{rate}-{uuid.uuid4().hex[:6]}"
    svc = start_service("edgelstm", broker, workdir / cid, cid)
    raw = RESULTS / "bench_e2e_profile.txt"
    svg = RESULTS / "bench_e2e_profile.svg"
    recorders = [subprocess.Popen([spy, "record", "-p", str(svc.pid), "-d", str(int(seconds) + 1), "-r", "200",
                                   "--nonblocking", "-f", fmt, "-o", str(out)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for fmt, out in (("raw", raw), ("flamegraph", svg))]
    subprocess.run([str(LOAD_EXE), "load", str(broker.port), f"b/{cid}", str(rate), str(seconds), str(streams),
                    str(DRAIN_S)], capture_output=True, text=True, timeout=seconds + DRAIN_S + 30)
    for r in recorders:
        r.wait(timeout=60)
    svc.stop()
    self_time: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        leaf = stack.split(";")[-1].rsplit(":", 1)[0] + ")"        # the function, not the line
        self_time[leaf] = self_time.get(leaf, 0) + int(count)
        total += int(count)
    print(f"\npy-spy, edgelstm at {rate}/s over {streams} streams: where the daemon's samples are (self time)")
    for leaf, count in sorted(self_time.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {100 * count / max(total, 1):5.1f} %  {leaf}")
    print(f"flame graph: {svg}")


def median_row(runs: list[dict]) -> dict:
    row = dict(runs[0])
    for key in ("late", "achieved_rate", "drain_s", "cpu_us_per_reading", "p50_ms", "p99_ms"):
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
    parser.add_argument("--services", default=",".join(SERVICES), help="which services to run, comma-separated")
    parser.add_argument("--cold-streams", action="store_true",
                        help="no warm-up: each stream's first reading falls inside the timed run")
    parser.add_argument("--profile", type=int, default=0, metavar="RATE",
                        help="also sample edgelstm with py-spy at this rate (first stream count)")
    args = parser.parse_args()
    points = [(s, r) for s in map(int, args.streams.split(",")) for r in map(int, args.rates.split(","))]
    build_load()
    runs: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "broker").mkdir()
        broker = Broker(work / "broker").start()
        try:
            for rep in range(args.repeats):              # services interleaved: both see the same noise
                for streams, rate in points:
                    for service in args.services.split(","):
                        r = run_point(broker, work, service, rate, streams, args.seconds, not args.cold_streams)
                        runs.setdefault((service, rate, streams), []).append(r)
                        progress(f"run {rep + 1}/{args.repeats} {service:>13}: {rate}/s over {streams} streams: "
                                 f"p50 {r['p50_ms'] or 0:.2f} ms p99 {r['p99_ms'] or 0:.2f} ms, late {r['late']}, "
                                 f"{r['cpu_us_per_reading']:.0f} us CPU per reading")
            if args.profile:
                profile_point(broker, work, args.profile, points[0][0], args.seconds)
        finally:
            broker.stop()
    rows = [median_row(v) for v in runs.values()]
    print_table(rows, args)
    best = {s: sustained(rows, s) for s in SERVICES}
    for s in SERVICES:
        print(f"highest rate sustained without backlog, {s}: {best[s]} readings/s")
    write_json("bench_e2e", {"machine": machine(), "rows": rows, "sustained_rate": best, "seconds": args.seconds,
                             "repeats": args.repeats, "warm_streams": not args.cold_streams})
    plot(rows)


def print_table(rows: list[dict], args) -> None:
    print(f"\nmedians of {args.repeats} runs of {args.seconds:g} s; late = unanswered {DRAIN_S:g} s after publishing "
          "stopped (a backlog, not a loss); ratios are to the paho relay")
    print(f"{'rate/s':>7}{'streams':>8}  {'service':<14}{'p50 ms':>9}{'p99 ms':>9}{'late':>7}{'CPU us/reading':>16}"
          f"{'p50 ratio':>11}{'p99 ratio':>11}")
    by = {(r["service"], r["rate"], r["streams"]): r for r in rows}
    for streams, rate in sorted({(r["streams"], r["rate"]) for r in rows}):
        base = by.get(("paho relay", rate, streams))
        for service in SERVICES:
            d = by.get((service, rate, streams))
            if d is None:
                continue
            ratios = [f"{d[k] / base[k]:.2f}x" if base and d[k] and base[k] else "-" for k in ("p50_ms", "p99_ms")]
            print(f"{rate:>7}{streams:>8}  {service:<14}{d['p50_ms'] or 0:>9.2f}{d['p99_ms'] or 0:>9.1f}"
                  f"{d['late']:>7.0f}{d['cpu_us_per_reading']:>16.0f}{ratios[0]:>11}{ratios[1]:>11}")


def plot(rows):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for service, color in zip(SERVICES, ("tab:blue", "tab:gray", "tab:orange", "tab:green")):
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
    main()

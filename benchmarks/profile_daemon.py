"""Per-reading cost of the daemon's pipeline, without a broker: Pipeline.handle() on decoded
readings, each prediction formatted as the MQTT output formats it (prediction_json) and
then discarded. The socket side is measured by bench_paho_fast.py and, end to end, by
bench_e2e.py --profile.

    .venv/bin/python benchmarks/profile_daemon.py [--repeats 5]

Prints the median microseconds per reading for batches of 1 (a quiet line: every reading is
its own kernel call) and of 100 (a busy one), and the top functions of a cProfile run.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from edgelstm.daemon.config import load  # noqa: E402
from edgelstm.daemon.messages import Origin, ReadingMsg  # noqa: E402
from edgelstm.daemon.service import Daemon  # noqa: E402
from edgelstm.protocol import payload  # noqa: E402

STREAMS = 100


class Discard:
    """A link that takes acks and replies and does nothing with them."""

    name = "discard"

    def ack(self, origin) -> None:
        pass

    def reply(self, origin, seq, y) -> bool:
        return True


def formatted(stream, seq, t_in, y, replay) -> None:
    payload.prediction_json(stream, seq, t_in, time.time(), "0" * 64, y, replay=replay)


def readings(first: int, n: int) -> list:
    out = []
    link = Discard()
    for k in range(first, first + n):
        raw = json.dumps({"seq": k // STREAMS, "t": time.time(), "x": [0.1, -0.9, 0.3]}).encode()
        origin = Origin(link, k % 65535 + 1, None, False, time.time())
        out.append(ReadingMsg(f"s{k % STREAMS}", payload.decode_mqtt(raw, 3), origin))
    return out


def us_per_reading(daemon, first: int, n: int, batch: int) -> float:
    batches = [readings(first + i, batch) for i in range(0, n, batch)]
    t0 = time.perf_counter()
    for b in batches:
        daemon.pipeline.handle(b, time.monotonic())
        daemon.ledger.tick(time.monotonic(), lambda: daemon.pipeline.snapshot(time.monotonic()), daemon.outputs)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    cfg = load(None, {"model": str(ROOT / "edgelstm" / "data" / "activity.elstm"), "checkpoint": f"{tmp}/s.ckpt",
                      "mqtt": {"url": "mqtt://127.0.0.1:1", "subscribe": "b/+/r", "publish": "b/{stream}/p"}})
    daemon = Daemon(cfg, sink=formatted)
    k = 0
    daemon.pipeline.handle(readings(k, STREAMS), time.monotonic())
    k += STREAMS
    for batch in (1, 100):
        runs = []
        for _ in range(args.repeats):
            runs.append(us_per_reading(daemon, k, 2000, batch))
            k += 2000
        print(f"batch {batch:>3}: {statistics.median(runs):.1f} us per reading (median of {args.repeats}; "
              f"runs {', '.join(f'{r:.1f}' for r in runs)})")
    profile = cProfile.Profile()
    profile.enable()
    us_per_reading(daemon, k, 3000, 1)
    profile.disable()
    pstats.Stats(profile).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()

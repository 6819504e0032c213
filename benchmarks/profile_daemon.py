"""Per-reading cost of the daemon's inference thread, without MQTT: Daemon.process() on decoded
readings, predictions handed to a stand-in link that accepts everything.

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
from edgelstm.daemon.service import Daemon  # noqa: E402
from edgelstm.protocol import payload  # noqa: E402
from edgelstm.transports import Inbound  # noqa: E402

STREAMS = 100


class AcceptingLink:
    """Stands in for MqttLink.publish/confirmed: every prediction is taken and confirmed at once."""

    class Info:
        _published = True

    def publish(self, topic, data, qos=1):
        return self.Info()

    @staticmethod
    def confirmed(info) -> bool:
        return True


def readings(first: int, n: int) -> list:
    out = []
    for k in range(first, first + n):
        raw = json.dumps({"seq": k // STREAMS, "t": time.time(), "x": [0.1, -0.9, 0.3]}).encode()
        out.append(Inbound(f"s{k % STREAMS}", payload.decode_mqtt(raw, 3), ack=lambda: None))
    return out


def us_per_reading(daemon, first: int, n: int, batch: int) -> float:
    batches = [readings(first + i, batch) for i in range(0, n, batch)]
    t0 = time.perf_counter()
    for b in batches:
        daemon.process(b)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    cfg = load(None, {"model": str(ROOT / "edgelstm" / "data" / "activity.elstm"), "checkpoint": f"{tmp}/s.ckpt",
                      "mqtt": {"url": "mqtt://127.0.0.1:1", "subscribe": "b/+/r", "publish": "b/{stream}/p"}})
    daemon = Daemon(cfg)
    daemon.mqtt = AcceptingLink()
    k = 0
    daemon.process(readings(k, STREAMS))
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

"""The daemon's counters, served in the Prometheus text format and summarised in logs.

Everything is updated from the inference thread (I/O threads only count drops at hand-off),
so per-stream series and totals agree exactly.
"""

from __future__ import annotations

import collections

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.readings = Counter("edgelstm_readings", "Readings received", ["stream"], registry=r)
        self.predictions = Counter("edgelstm_predictions", "Predictions produced", ["stream"], registry=r)
        self.duplicates = Counter("edgelstm_duplicates", "Readings seen before (not applied)", ["stream"], registry=r)
        self.gaps = Counter("edgelstm_gap_readings", "Readings missing between received ones", ["stream"],
                            registry=r)
        self.replays = Counter("edgelstm_replayed_predictions", "Predictions sent again for a reading sent again",
                               ["stream"], registry=r)
        self.resets = Counter("edgelstm_resets", "Stream state resets", ["stream", "reason"], registry=r)
        self.nonfinite = Counter("edgelstm_nonfinite_readings", "Readings holding NaN/Inf", ["stream"], registry=r)
        self.bad_payloads = Counter("edgelstm_bad_payloads", "Messages that could not be decoded", ["reason"],
                                    registry=r)
        self.drops = Counter("edgelstm_drops", "Messages dropped", ["reason"], registry=r)
        self.queue_depth = Gauge("edgelstm_queue_depth", "Readings waiting for the inference thread", registry=r)
        self.streams = Gauge("edgelstm_streams", "Streams held in the bank", registry=r)
        self.step_latency = Histogram("edgelstm_step_seconds", "Kernel time per batch", buckets=_LATENCY_BUCKETS,
                                      registry=r)
        self.e2e_latency = Histogram("edgelstm_e2e_seconds", "Reading received to prediction handed out",
                                     buckets=_LATENCY_BUCKETS, registry=r)
        self.quantiles = Gauge("edgelstm_latency_quantile_seconds", "Recent latency quantiles",
                               ["kind", "quantile"], registry=r)
        self._recent = {"step": collections.deque(maxlen=4096), "e2e": collections.deque(maxlen=4096)}

    def observe(self, kind: str, seconds: float) -> None:
        (self.step_latency if kind == "step" else self.e2e_latency).observe(seconds)
        self._recent[kind].append(seconds)

    def summary(self) -> dict:
        """p50/p99 of recent latencies (also published as gauges) and totals, for the logs."""
        out = {}
        for kind, values in self._recent.items():
            if values:
                p50, p99 = np.percentile(np.fromiter(values, float), [50, 99])
                self.quantiles.labels(kind, "0.5").set(p50)
                self.quantiles.labels(kind, "0.99").set(p99)
                out[f"{kind}_p50_ms"], out[f"{kind}_p99_ms"] = p50 * 1e3, p99 * 1e3
        for name in ("readings", "predictions", "duplicates", "gaps", "nonfinite", "bad_payloads", "drops", "replays"):
            out[name] = total(getattr(self, name))
        return out

    def forget(self, stream: str) -> None:
        """Drop an evicted stream's series so label sets stay bounded."""
        for c in (self.readings, self.predictions, self.duplicates, self.gaps, self.nonfinite, self.replays):
            try:
                c.remove(stream)
            except KeyError:
                pass


def total(counter) -> float:
    return sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))

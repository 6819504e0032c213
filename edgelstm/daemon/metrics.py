"""The daemon's counters, served in the Prometheus text format and summarised in logs.

Everything is updated from the daemon's one thread, so per-stream series and totals agree
exactly. Counters and latency histograms are plain
lists read by the HTTP thread at scrape time: they are updated for every
reading, where prometheus_client's labels().inc() and observe() (a label lookup and a lock
each, ~3 us) were a measurable share of the per-reading cost.
"""

from __future__ import annotations

import bisect
import collections
import itertools

import numpy as np
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

_LATENCY_BUCKETS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)


class LabelledCounter:
    """A counter family: label values -> count. Exposed as NAME_total."""

    def __init__(self, name: str, documentation: str, labels: list[str], registry: CollectorRegistry):
        self.name, self.documentation, self.label_names = name, documentation, labels
        self.values: dict[tuple, float] = {}
        self._keys_of: dict[str, list[tuple]] = {}     # first label -> its keys (families of 2+ labels)
        registry.register(self)

    def inc(self, *label_values: str, by: float = 1) -> None:
        values = self.values
        if len(label_values) > 1 and label_values not in values:
            self._keys_of.setdefault(label_values[0], []).append(label_values)
        values[label_values] = values.get(label_values, 0) + by

    def total(self) -> float:
        return sum(self.values.values())

    def forget(self, first_label: str) -> None:
        """Drop every series whose first label is `first_label` (an evicted stream); O(its series)."""
        self.values.pop((first_label,), None)
        for key in self._keys_of.pop(first_label, ()):
            self.values.pop(key, None)

    def collect(self):
        family = CounterMetricFamily(self.name, self.documentation, labels=self.label_names)
        for key, value in dict(self.values).items():       # a copy: the daemon's thread goes on
            family.add_metric(list(key), value)
        yield family


class BatchHistogram:
    """A histogram filled a batch of observations at a time."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry):
        self.name, self.documentation = name, documentation
        self.counts = [0] * (len(_LATENCY_BUCKETS) + 1)     # per bucket; the last one is +Inf
        self.sum = 0.0
        registry.register(self)

    def observe(self, seconds: list[float]) -> None:
        for value in seconds:                                # plain Python: batches are often 1-10
            self.counts[bisect.bisect_left(_LATENCY_BUCKETS, value)] += 1
        self.sum += sum(seconds)

    def collect(self):
        cumulative = list(itertools.accumulate(self.counts))
        buckets = [(repr(b), c) for b, c in zip(_LATENCY_BUCKETS, cumulative)] + [("+Inf", cumulative[-1])]
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, self.sum)
        yield family


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.readings = LabelledCounter("edgelstm_readings", "Readings received", ["stream"], r)
        self.predictions = LabelledCounter("edgelstm_predictions", "Predictions produced", ["stream"], r)
        self.duplicates = LabelledCounter("edgelstm_duplicates", "Readings seen before (not applied)", ["stream"], r)
        self.gaps = LabelledCounter("edgelstm_gap_readings", "Readings missing between received ones", ["stream"], r)
        self.replays = LabelledCounter("edgelstm_replayed_predictions",
                                       "Predictions sent again for a reading sent again", ["stream"], r)
        self.resyncs = LabelledCounter("edgelstm_resyncs", "Readings whose seq jumped beyond policy.resync_after "
                                       "(the stream's position moved there)", ["stream"], r)
        self.checkpoint_failures = LabelledCounter("edgelstm_checkpoint_failures",
                                                   "Checkpoint writes that failed (retried)", [], r)
        self.resets = LabelledCounter("edgelstm_resets", "Stream state resets", ["stream", "reason"], r)
        self.nonfinite = LabelledCounter("edgelstm_nonfinite_readings", "Readings holding NaN/Inf", ["stream"], r)
        self.bad_payloads = LabelledCounter("edgelstm_bad_payloads", "Messages that could not be decoded",
                                            ["reason"], r)
        self.drops = LabelledCounter("edgelstm_drops", "Messages dropped", ["reason"], r)
        self.discovery = LabelledCounter("edgelstm_discovery_messages", "Home Assistant discovery messages "
                                         "published (retained): an entity's config, or its removal", ["kind"], r)
        self.streams = Gauge("edgelstm_streams", "Streams held in the bank", registry=r)
        self.latency = {"step": BatchHistogram("edgelstm_step_seconds", "Kernel time per batch", r),
                        "e2e": BatchHistogram("edgelstm_e2e_seconds", "Reading received to prediction handed out", r)}
        self.quantiles = Gauge("edgelstm_latency_quantile_seconds", "Recent latency quantiles",
                               ["kind", "quantile"], registry=r)
        self._recent = {"step": collections.deque(maxlen=4096), "e2e": collections.deque(maxlen=4096)}

    def observe(self, kind: str, seconds: list[float]) -> None:
        """seconds: the latencies of a batch (one per reading for "e2e", one per call for "step")."""
        self.latency[kind].observe(seconds)
        self._recent[kind].extend(seconds)

    def summary(self) -> dict:
        """p50/p99 of recent latencies (also published as gauges) and totals, for the logs."""
        out = {}
        for kind, values in self._recent.items():
            if values:
                p50, p99 = np.percentile(np.fromiter(values, float), [50, 99])
                self.quantiles.labels(kind, "0.5").set(p50)
                self.quantiles.labels(kind, "0.99").set(p99)
                out[f"{kind}_p50_ms"], out[f"{kind}_p99_ms"] = p50 * 1e3, p99 * 1e3
        for name in ("readings", "predictions", "duplicates", "gaps", "nonfinite", "bad_payloads", "drops", "replays",
                     "resyncs", "checkpoint_failures"):
            out[name] = getattr(self, name).total()
        return out

    def forget(self, stream: str) -> None:
        """Drop an evicted stream's series so label sets stay bounded."""
        for c in (self.readings, self.predictions, self.duplicates, self.gaps, self.nonfinite, self.replays,
                  self.resets, self.resyncs):
            c.forget(stream)

"""The daemon's own counters and histograms expose what prometheus_client's would."""

import random

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from edgelstm.daemon.metrics import _LATENCY_BUCKETS, Metrics


def samples(registry, prefix: str) -> dict:
    out = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name.startswith(prefix) and not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_histogram_matches_prometheus_client():
    rng = random.Random(3)
    values = [10 ** rng.uniform(-6, 1) for _ in range(2000)] + list(_LATENCY_BUCKETS)   # edges: le is <=
    ours, theirs = Metrics(), CollectorRegistry()
    oracle = Histogram("edgelstm_e2e_seconds", "x", buckets=_LATENCY_BUCKETS, registry=theirs)
    for start in range(0, len(values), 37):                  # batches of any size
        ours.observe("e2e", values[start:start + 37])
    for v in values:
        oracle.observe(v)
    got, want = samples(ours.registry, "edgelstm_e2e"), samples(theirs, "edgelstm_e2e")
    assert got.keys() == want.keys()
    for key in want:
        assert abs(got[key] - want[key]) <= 1e-9 * max(1.0, abs(want[key])), key


def test_counters_match_prometheus_client_and_forget_evicted_streams():
    ours, theirs = Metrics(), CollectorRegistry()
    oracle = Counter("edgelstm_resets", "x", ["stream", "reason"], registry=theirs)
    for stream, reason, n in [("a", "reboot", 1), ("b", "gap", 3), ("a", "reboot", 2), ("a", "nonfinite", 1)]:
        ours.resets.inc(stream, reason, by=n)
        oracle.labels(stream, reason).inc(n)
    assert samples(ours.registry, "edgelstm_resets") == samples(theirs, "edgelstm_resets")
    ours.readings.inc("a")
    ours.forget("a")
    text = generate_latest(ours.registry).decode()
    assert 'stream="a"' not in text and 'edgelstm_resets_total{reason="gap",stream="b"} 3.0' in text

"""deploy/grafana-edgelstm.json queries what the daemon exports: metric and label names are read from
a live Metrics registry, so renaming a metric, or dropping a label, fails here rather than on a
blank panel; and every metric the daemon exports has a panel."""

import json
import re
from pathlib import Path

import pytest

from edgelstm.daemon.metrics import LabelledCounter, Metrics

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana-edgelstm.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
TARGET_LABELS = {"job", "instance"}              # added by Prometheus at scrape time, on every series
GRAFANA_VARIABLES = {"__range", "__rate_interval", "__interval"}

# Metric families the daemon exports that no panel shows, each with its reason. Empty: all are shown.
NOT_ON_THE_DASHBOARD: dict[str, str] = {}


def exported() -> tuple[dict[str, set[str]], dict[str, str], dict[str, str]]:
    """(sample name -> its label names, sample name -> its family, family -> its type), from the registry the
    daemon serves. Counters appear only once counted and labelled gauges once set, so fill each first."""
    metrics = Metrics()
    for value in vars(metrics).values():
        if isinstance(value, LabelledCounter):
            value.inc(*("x" for _ in value.label_names))
    for kind in metrics.latency:
        metrics.observe(kind, [1e-3])
    metrics.summary()                                # publishes edgelstm_latency_quantile_seconds
    labels, family_of, type_of = {}, {}, {}
    for family in metrics.registry.collect():
        type_of[family.name] = family.type
        names = [s for s in family.samples if not s.name.endswith("_created")]
        assert names, f"{family.name} exports no sample here: fill it in exported()"
        for sample in names:
            labels.setdefault(sample.name, set()).update(sample.labels)
            family_of[sample.name] = family.name
    return labels, family_of, type_of


LABELS, FAMILY_OF, TYPE_OF = exported()

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)\s*\"")
_RANGE = re.compile(r"\[[^\]]*\]")
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b")
_IDENT = re.compile(r"[A-Za-z_:][\w:]*")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
             "inf", "nan"}
_AGGREGATIONS = {"sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile",
                 "count_values"}


def parse(expr: str) -> dict:
    """The metric names of a PromQL expression with its selectors' label names, its grouping labels, its
    functions, and the $variables it uses."""
    variables = set(re.findall(r"\$(\w+)", expr))
    selectors = []
    for m in _SELECTOR.finditer(expr):
        assert m.group(1), f"a selector without a metric name: {expr}"
        selectors.append((m.group(1), set(_MATCHER.findall(m.group(2)))))
    text = _SELECTOR.sub(lambda m: f" {m.group(1)} ", expr)
    text = _STRING.sub(" ", text)
    grouping = {label.strip() for g in _GROUPING.findall(text) for label in g.split(",") if label.strip()}
    text = _RANGE.sub(" ", _GROUPING.sub(" ", text))
    text = _NUMBER.sub(" ", text)
    metrics, functions = [], set()
    for m in _IDENT.finditer(text):
        name = m.group()
        if re.match(r"\s*\(", text[m.end():]):
            functions.add(name)
        elif name not in _KEYWORDS:
            metrics.append(name)
    return {"metrics": metrics, "selectors": selectors, "grouping": grouping, "functions": functions,
            "variables": variables}


def load():
    return json.loads(DASHBOARD.read_text())


def queries(dash):
    """(where, expr, legend) for every panel target, and for every template variable's query."""
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            yield f"panel {panel['id']} {panel['title']!r} {t['refId']}", t["expr"], t.get("legendFormat", "")
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query)
            assert m, f"variable {var['name']}: only label_values(metric, label) queries are checked: {query}"
            yield f"variable {var['name']}", m.group(1), "{{%s}}" % m.group(2)


def test_parse_reads_names_out_of_promql():
    got = parse('histogram_quantile(0.99, sum by (le, instance) (rate(a_bucket{job=~"$job", kind="x"}[1m]))) '
                '/ ignoring (kind) b_total + 1e-3 or vector(0)')
    assert got["metrics"] == ["a_bucket", "b_total"]
    assert got["selectors"] == [("a_bucket", {"job", "kind"})]
    assert got["grouping"] == {"le", "instance", "kind"}
    assert got["functions"] == {"histogram_quantile", "sum", "rate", "vector"}
    assert got["variables"] == {"job"}


def test_dashboard_header():
    dash = load()
    assert dash["title"] == "edgelstm" and dash["uid"] and dash["id"] is None
    assert dash["schemaVersion"] >= 39
    assert dash["refresh"] == "10s" and dash["time"] == {"from": "now-1h", "to": "now"}
    assert [(i["name"], i["type"], i["pluginId"]) for i in dash["__inputs"]] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")]
    assert {v["name"] for v in dash["templating"]["list"]} == {"job", "instance"}


def test_every_query_names_an_exported_metric_and_its_labels():
    dash = load()
    defined = {v["name"] for v in dash["templating"]["list"]} | GRAFANA_VARIABLES
    problems = []
    for where, expr, legend in queries(dash):
        q = parse(expr)
        if not q["metrics"]:
            problems.append(f"{where}: no metric in {expr}")
        for name in q["metrics"]:
            if name not in LABELS:
                problems.append(f"{where}: {name} is not exported (edgelstm/daemon/metrics.py)")
                continue
            if TYPE_OF[FAMILY_OF[name]] in ("counter", "histogram") and not {"rate", "increase"} & q["functions"]:
                problems.append(f"{where}: {name} is cumulative: take its rate() or increase()")
        for name, matched in q["selectors"]:
            for label in matched - TARGET_LABELS - LABELS.get(name, set()):
                problems.append(f"{where}: {name} has no label {label!r}")
            if name in LABELS and where.startswith("panel") and not TARGET_LABELS <= matched:
                problems.append(f"{where}: {name} is not filtered by $job and $instance")
        legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        for label in (q["grouping"] | legend_labels) - TARGET_LABELS:
            for name in q["metrics"]:
                if name in LABELS and label not in LABELS[name]:
                    problems.append(f"{where}: {name} has no label {label!r} (it has {sorted(LABELS[name])})")
        if _AGGREGATIONS & q["functions"] and where.startswith("panel"):
            for label in legend_labels - q["grouping"]:
                problems.append(f"{where}: legend {{{{{label}}}}} is aggregated away (by {sorted(q['grouping'])})")
        for variable in q["variables"] - defined:
            problems.append(f"{where}: ${variable} is not a template variable")
    assert not problems, "\n".join(problems)


def test_every_exported_metric_has_a_panel():
    dash = load()
    shown = {FAMILY_OF[name] for _, expr, _ in queries(dash) for name in parse(expr)["metrics"] if name in FAMILY_OF}
    missing = set(TYPE_OF) - shown - set(NOT_ON_THE_DASHBOARD)
    assert not missing, f"exported, on no panel: {sorted(missing)} (add a panel, or to NOT_ON_THE_DASHBOARD with why)"
    stale = {name for name in NOT_ON_THE_DASHBOARD if name not in TYPE_OF or name in shown}
    assert not stale, f"NOT_ON_THE_DASHBOARD entries no longer true: {sorted(stale)}"


def test_panels_have_unique_ids_and_do_not_overlap():
    panels = load()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), ids
    boxes = []
    for p in panels:
        g = p["gridPos"]
        assert p["type"] in ("timeseries", "stat"), p["type"]
        assert g["x"] >= 0 and g["y"] >= 0 and g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        assert p["targets"] and p["fieldConfig"]["defaults"]["unit"], p["title"]
        boxes.append((p["title"], g))
    for i, (a, ga) in enumerate(boxes):
        for b, gb in boxes[i + 1:]:
            apart = (ga["x"] + ga["w"] <= gb["x"] or gb["x"] + gb["w"] <= ga["x"]
                     or ga["y"] + ga["h"] <= gb["y"] or gb["y"] + gb["h"] <= ga["y"])
            assert apart, f"{a!r} and {b!r} overlap"
    for p in panels:
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]


def _datasources(node, path="$"):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield path, value
            else:
                yield from _datasources(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _datasources(value, f"{path}[{i}]")


def test_every_datasource_is_the_imported_prometheus():
    dash = load()
    refs = list(_datasources(dash))
    assert len(refs) >= len(dash["panels"]) + len(dash["templating"]["list"])
    wrong = [(path, ds) for path, ds in refs if ds != DATASOURCE]
    assert not wrong, wrong
    for panel in dash["panels"]:
        assert panel["datasource"] == DATASOURCE and all(t["datasource"] == DATASOURCE for t in panel["targets"])


@pytest.mark.parametrize("expr", ["rate(edgelstm_readingz_total[1m])", 'sum by (reason) (rate(edgelstm_readings_total'
                                  '{job=~"$job", instance=~"$instance"}[1m]))'])
def test_the_checks_catch_a_renamed_metric_or_a_missing_label(expr, tmp_path, monkeypatch):
    dash = load()
    dash["panels"][0]["targets"][0]["expr"] = expr
    broken = tmp_path / "dash.json"
    broken.write_text(json.dumps(dash))
    monkeypatch.setitem(globals(), "DASHBOARD", broken)
    with pytest.raises(AssertionError, match="not exported|has no label"):
        test_every_query_names_an_exported_metric_and_its_labels()

"""Alerts, the dashboard and the autoscalers use metrics the services really export.

The metrics Argus defines are read from the source (every `Counter(`, `Gauge(`, `Histogram(`, `Summary(` with a
literal name under services/ and libs/), with the series names prometheus_client gives them (`_total`, `_bucket`,
...) and their label names. Every Argus metric an alert, a dashboard panel, an autoscaler or the Prometheus
adapter names must be one of them, or be listed in PENDING_METRICS with the service that is to export it; a metric
from elsewhere must be one the NATS exporter or kube-state-metrics exports.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.k8s.manifests import K8S, OVERLAYS, ROOT, load_yaml, of_kind, overlay, render

# Metrics the alerts, dashboard and autoscalers rely on that no service exports yet: name -> who is to export it.
PENDING_METRICS: dict[str, str] = {}
# From the NATS exporter (promExporter of the NATS chart, -jsz=all) and kube-state-metrics.
EXTERNAL_METRICS = {
    "jetstream_consumer_num_pending",
    "jetstream_consumer_num_ack_pending",
    "jetstream_stream_total_messages",
    "jetstream_stream_total_bytes",
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas",
}
# Labels every scraped series has (the PodMonitor adds service).
TARGET_LABELS = {"namespace", "pod", "service", "job", "instance", "container", "endpoint"}
# prometheus_client's ProcessCollector, which every Runtime registers.
PROCESS_METRICS = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
    "process_max_fds",
}
_METRIC = re.compile(r"\b((?:argus|jetstream|kube|process)_[a-zA-Z0-9_]+)\b")
_SELECTOR = re.compile(r"\b(argus_[a-zA-Z0-9_]+)\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_SUFFIXES = {
    "Counter": ("_total", "_created"),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("", "_sum", "_count", "_created"),
}


@dataclass
class Metric:
    kind: str
    labels: set[str] = field(default_factory=set)


def defined_metrics() -> dict[str, Metric]:
    """Series names the code exports, each with its metric's label names."""
    found: dict[str, Metric] = {}
    sources = [*ROOT.glob("services/*/src/**/*.py"), *ROOT.glob("libs/*/src/**/*.py")]
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            kind = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            if kind not in _SUFFIXES or not node.args or not isinstance(node.args[0], ast.Constant):
                continue
            name = node.args[0].value
            if not isinstance(name, str):
                continue
            labels = _label_names(node)
            base = name.removesuffix("_total") if kind == "Counter" else name
            for suffix in _SUFFIXES[kind]:
                found[base + suffix] = Metric(kind, labels | ({"le"} if suffix == "_bucket" else set()))
    assert "argus_service_ready" in found, "the runtime's readiness gauge was not found: is the scan broken?"
    return found


def _label_names(call: ast.Call) -> set[str]:
    nodes = [kw.value for kw in call.keywords if kw.arg == "labelnames"]
    if len(call.args) >= 3:
        nodes.append(call.args[2])
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.List | ast.Tuple):
            names |= {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return names


# --- where metrics are used ---------------------------------------------------------------------------------------


def rule_expressions() -> Iterator[tuple[str, str]]:
    (rule,) = of_kind(render(K8S / "monitoring"), "PrometheusRule")
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            yield r.get("alert", r.get("record", "")), r["expr"]


def dashboard() -> dict[str, object]:
    loaded = json.loads((K8S / "monitoring" / "argus-dashboard.json").read_text())
    assert isinstance(loaded, dict)
    return loaded


def dashboard_expressions() -> Iterator[tuple[str, str]]:
    panels = dashboard()["panels"]
    assert isinstance(panels, list)
    for panel in panels:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def autoscaler_metrics() -> set[str]:
    names = set()
    for name in OVERLAYS:
        for hpa in of_kind(overlay(name), "HorizontalPodAutoscaler"):
            names |= {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    return names


def adapter_metrics() -> set[str]:
    values = load_yaml(K8S / "monitoring" / "prometheus-adapter-values.yaml")
    names = set()
    for rule in values["rules"]["custom"]:
        names |= set(_METRIC.findall(rule["seriesQuery"]))
    return names


def all_uses() -> Iterator[tuple[str, str]]:
    for where, expr in rule_expressions():
        yield f"alert {where}", expr
    for where, expr in dashboard_expressions():
        yield f"panel {where}", expr
    for name in autoscaler_metrics():
        yield "autoscaler", name
    for name in adapter_metrics():
        yield "prometheus adapter", name


# --- tests --------------------------------------------------------------------------------------------------------


def test_metrics_exist() -> None:
    defined = defined_metrics()
    for where, expr in all_uses():
        for name in _METRIC.findall(expr):
            if name in PENDING_METRICS:
                continue
            known = name in defined or name in EXTERNAL_METRICS or name in PROCESS_METRICS
            assert known, f"{where}: {name} is exported by no service (add it to PENDING_METRICS with who owes it)"


def test_pending_metrics_are_still_pending() -> None:
    """When a service starts exporting a pending metric, it leaves the list (and its labels get checked)."""
    defined = defined_metrics()
    used = {n for _, expr in all_uses() for n in _METRIC.findall(expr)}
    for name, owner in PENDING_METRICS.items():
        assert name not in defined, f"{name} is exported now ({owner}): remove it from PENDING_METRICS"
        assert name in used, f"{name} is pending but nothing uses it"


def test_labels_exist() -> None:
    defined = defined_metrics()
    for where, expr in all_uses():
        for name, matchers in _SELECTOR.findall(expr):
            if name in PENDING_METRICS:
                continue
            for label in _MATCHER.findall(matchers):
                ok = label in defined[name].labels or label in TARGET_LABELS
                assert ok, f"{where}: {name} has no label {label} (it has {sorted(defined[name].labels)})"


@pytest.mark.parametrize(("where", "expr"), list(rule_expressions()) + list(dashboard_expressions()))
def test_expressions_are_balanced(where: str, expr: str) -> None:
    stack = []
    pairs = {")": "(", "]": "[", "}": "{"}
    in_string = False
    for ch in expr:
        if ch == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            assert stack, f"{where}: unbalanced {ch} in {expr}"
            assert stack.pop() == pairs[ch], f"{where}: unbalanced {ch} in {expr}"
    assert not stack, f"{where}: unbalanced {expr}"
    assert not in_string, f"{where}: unbalanced quotes in {expr}"


def test_autoscaler_metrics_reach_the_adapter() -> None:
    assert autoscaler_metrics() <= adapter_metrics(), "every custom metric an HPA uses has an adapter rule"


def test_alerts_name_their_service() -> None:
    services = {p.name for p in (ROOT / "services").iterdir() if p.is_dir()}
    (rule,) = of_kind(render(K8S / "monitoring"), "PrometheusRule")
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert len({a["alert"] for a in alerts}) == len(alerts), "alert names are unique"
    for alert in alerts:
        service = alert["labels"].get("service")
        assert service is None or service in services, alert["alert"]
    names = {a["alert"] for a in alerts}
    # The list: cameras offline, recording gaps, spool filling, segment upload latency, viewer count,
    # audit backlog.
    for wanted in (
        "ArgusCamerasOffline",
        "ArgusRecordingGaps",
        "ArgusSpoolFilling",
        "ArgusSegmentUploadSlow",
        "ArgusLiveviewSaturated",
        "ArgusAuditBacklog",
    ):
        assert wanted in names


def test_dashboard() -> None:
    board = dashboard()
    assert board["uid"]
    assert board["title"]
    panels = board["panels"]
    assert isinstance(panels, list)
    assert panels
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids), "panel ids are unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"], panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
    variables = {v["name"] for v in board["templating"]["list"]}  # type: ignore[index]
    assert {"datasource", "namespace"} <= variables
    (cm,) = [c for c in of_kind(render(K8S / "monitoring"), "ConfigMap")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["argus-dashboard.json"]) == board

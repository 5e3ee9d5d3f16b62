"""docs/operations.md keeps up with the manifests: its flow table is k8s/flows.yaml, it says what every alert means,
and it names every Secret the pods and the operators' resources read."""

from __future__ import annotations

import re

from tests.k8s.manifests import DEPS, K8S, OVERLAYS, ROOT, flows_file, of_kind, overlay, render, workloads

GUIDE = ROOT / "docs" / "operations.md"
_ROW = re.compile(r"^\|\s*`([a-z]+)`\s*\|\s*`([a-z]+)`\s*\|\s*([^|]+?)\s*\|\s*([^|]+?)\s*\|", re.MULTILINE)


def table_ports(flow: dict[str, object]) -> str:
    ports = flow["ports"]
    assert isinstance(ports, list)
    texts = []
    for p in ports:
        port = "any" if p["port"] is None else str(p["port"]) + (f"-{p['end_port']}" if p.get("end_port") else "")
        texts.append(f"{port}/{p.get('protocol', 'TCP')}")
    return ", ".join(texts)


def test_flow_table_is_flows_yaml() -> None:
    section = GUIDE.read_text().split("## Network flows", 1)[1].split("\n## ", 1)[0]
    rows = [(a, b, ports, overlays) for a, b, ports, overlays in _ROW.findall(section)]
    expected = [(f["from"], f["to"], table_ports(f), ", ".join(f["overlays"])) for f in flows_file()["flows"]]
    assert rows == expected, "docs/operations.md's Network flows table differs from k8s/flows.yaml"


def test_every_alert_is_explained() -> None:
    text = GUIDE.read_text()
    (rule,) = of_kind(render(K8S / "monitoring"), "PrometheusRule")
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            if "alert" in r:
                assert f"**{r['alert']}**" in text, f"docs/operations.md does not explain {r['alert']}"


def test_every_secret_is_named() -> None:
    text = GUIDE.read_text()
    names: set[str] = set()
    for name in OVERLAYS:
        objs = overlay(name)
        for w in workloads(objs):
            spec = w["spec"]["template"]["spec"]
            names |= {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
            for c in spec["containers"]:
                names |= {
                    e["valueFrom"]["secretKeyRef"]["name"]
                    for e in c.get("env", [])
                    if "secretKeyRef" in e.get("valueFrom", {})
                }
        names |= {t["secretName"] for i in of_kind(objs, "Ingress") for t in i["spec"].get("tls", [])}
    for deps in DEPS:
        names |= {e["spec"]["target"]["name"] for e in of_kind(render(K8S / "deps" / deps), "ExternalSecret")}
    assert names
    for name in sorted(names):
        assert f"`{name}`" in text, f"docs/operations.md does not name Secret {name}"

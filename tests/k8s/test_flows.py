"""The NetworkPolicies allow exactly the flows of k8s/flows.yaml, and each flow is one docs/architecture.md shows.

Three checks: each flow's evidence is in the architecture (an edge of the data-flow diagram, parsed from its
mermaid block; a subject of the Subjects table; or the Config section of the service that needs it), and every
diagram edge between a service and what it talks to has a flow; every rule of every NetworkPolicy of every overlay
is a flow of that overlay; every flow of an overlay is allowed there, on both ends when both are Argus pods.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest

from argus_core.db import DatabaseConfig
from argus_core.storage import S3Config
from tests.k8s.manifests import (
    OVERLAYS,
    ROOT,
    Obj,
    config_type,
    flows_file,
    labels_match,
    networks,
    of_kind,
    overlay,
    role,
    workloads,
)

ARCHITECTURE = ROOT / "docs" / "architecture.md"
ARGUS = {"api", "audit", "ingest", "liveview", "ptz", "recorder", "retention", "simcam"}
CONFIG_SECTIONS: dict[str, type] = {"db": DatabaseConfig, "s3": S3Config}
CONFIG_PEERS = {"postgres": "db", "minio": "s3"}

_MERMAID = re.compile(r"```mermaid\n(.*?)```", re.DOTALL)
_LABELLED = re.compile(r"<?--\s+[^-][^>]*?\s+-->|-\.\s+[^.]*?\s+\.->")
_ARROW = re.compile(r"\s*(?:<-->|-->|---)\s*")
_NODE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)(?:[\[({].*)?$")
_SUBJECT_ROW = re.compile(r"^\|\s*`(argus\.[^`]+)`\s*\|", re.MULTILINE)


# --- the architecture ---------------------------------------------------------------------------------------------


def diagram_edges() -> set[frozenset[str]]:
    """Edges of the data-flow diagram as unordered pairs of node ids (`A & B -- x --> C --> D` gives A-C, B-C, C-D)."""
    match = _MERMAID.search(ARCHITECTURE.read_text())
    assert match, "docs/architecture.md has no mermaid diagram"
    edges: set[frozenset[str]] = set()
    for raw in match.group(1).splitlines():
        line = _LABELLED.sub(" --> ", raw.strip())
        if not line or line.startswith(("flowchart", "subgraph", "end", "%%")) or not _ARROW.search(line):
            continue
        groups = []
        for part in _ARROW.split(line):
            names = []
            for node in part.split("&"):
                found = _NODE.match(node.strip())
                assert found, f"cannot read node {node!r} in {raw!r}"
                names.append(found.group(1))
            groups.append(names)
        for left, right in zip(groups, groups[1:], strict=False):
            edges |= {frozenset((a, b)) for a in left for b in right}
    assert edges, "no edges in the diagram"
    return edges


def diagram_nodes() -> set[str]:
    return {node for edge in diagram_edges() for node in edge}


def architecture_subjects() -> set[str]:
    return set(_SUBJECT_ROW.findall(ARCHITECTURE.read_text()))


# --- flows --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One allowed (opener, listener, protocol, port, end port) in an overlay; port None is every port."""

    source: str
    target: str
    protocol: str
    port: int | None
    end_port: int | None

    def __str__(self) -> str:
        span = "any" if self.port is None else f"{self.port}" + (f"-{self.end_port}" if self.end_port else "")
        return f"{self.source} -> {self.target} {span}/{self.protocol}"


def flows() -> list[dict[str, Any]]:
    found = flows_file()["flows"]
    assert isinstance(found, list)
    return found


def flow_rules(overlay_name: str) -> set[Rule]:
    rules = set()
    for flow in flows():
        if role(overlay_name) not in flow["overlays"]:
            continue
        for p in flow["ports"]:
            rules.add(Rule(flow["from"], flow["to"], p.get("protocol", "TCP"), p["port"], p.get("end_port")))
    return rules


def test_flow_evidence_is_in_the_architecture() -> None:
    spec = flows_file()
    nodes = spec["nodes"]
    assert set(nodes) == diagram_nodes(), "k8s/flows.yaml names the diagram's nodes, all of them"
    edges = diagram_edges()
    subjects = architecture_subjects()
    text = ARCHITECTURE.read_text()
    for flow in flows():
        name = f"{flow['from']} -> {flow['to']}"
        assert flow["from"] in spec["peers"], name
        assert flow["to"] in spec["peers"], name
        assert set(flow["overlays"]) <= set(spec["overlays"]), name
        evidence = 0
        for edge in flow.get("edges", []):
            a, b = edge.split("->")
            assert frozenset((a, b)) in edges, f"{name}: {edge} is not an edge of the data-flow diagram"
            ends = set(nodes[a]) | set(nodes[b])
            assert {flow["from"], flow["to"]} <= ends, f"{name}: {edge} joins {sorted(ends)}"
            evidence += 1
        for subject in flow.get("subjects", []):
            assert subject in subjects, f"{name}: {subject} is not in the Subjects table"
            evidence += 1
        if "config" in flow:
            section = flow["config"]
            assert CONFIG_PEERS.get(flow["to"]) == section, f"{name}: config {section}"
            hints = config_type(flow["from"]).__annotations__
            assert section in hints, f"{name}: {flow['from']}'s Config has no {section} section"
            evidence += 1
        if "text" in flow:
            assert flow["text"] in text, f"{name}: {flow['text']!r} is not in docs/architecture.md"
            evidence += 1
        if "infrastructure" in flow:
            assert flow["to"] == "dns", f"{name}: only DNS is infrastructure"
            evidence += 1
        assert evidence, f"{name}: no evidence in docs/architecture.md"
        if flow["to"] in CONFIG_PEERS and flow["from"] in ARGUS:
            assert flow.get("config") == CONFIG_PEERS[flow["to"]], f"{name}: check the service's Config too"


def test_every_service_edge_has_a_flow() -> None:
    """An edge between a service and a dependency, camera or browser is a connection: some flow carries it."""
    nodes = flows_file()["nodes"]
    carried = {frozenset(e.split("->")) for f in flows() for e in f.get("edges", [])}
    for edge in diagram_edges():
        a, b = sorted(edge)
        kinds = [set(nodes[a]) & ARGUS, set(nodes[b]) & ARGUS]
        if any(kinds) and not all(kinds):
            assert edge in carried, f"the diagram's {a} - {b} has no flow in k8s/flows.yaml"


def test_services_reach_what_their_code_needs() -> None:
    """A service whose Config has a database or S3 section has the flow to Postgres or MinIO (the diagram does not
    draw every one: ingest and ptz read the register, the api reads recordings); one that connects to the bus has
    the flow to NATS, and one that does not, none."""
    for service in ARGUS:
        hints = config_type(service).__annotations__
        for peer, section in CONFIG_PEERS.items():
            needs = section in hints
            has = any(f["from"] == service and f["to"] == peer for f in flows())
            assert needs == has, f"{service} -> {peer}: its Config {'has' if needs else 'has no'} {section}"
        source = "".join(p.read_text() for p in (ROOT / "services" / service / "src").rglob("*.py"))
        needs_bus = "connect_bus(" in source
        has_bus = any(f["from"] == service and f["to"] == "nats" for f in flows())
        assert needs_bus == has_bus, f"{service} -> nats: it {'connects' if needs_bus else 'does not connect'}"


# --- NetworkPolicies ----------------------------------------------------------------------------------------------


def resolve_peer(overlay_name: str, peer: Obj) -> str:
    """The flows.yaml party a NetworkPolicy peer names."""
    spec = flows_file()
    nets = networks(overlay_name)
    if "ipBlock" in peer:
        assert set(peer) == {"ipBlock"}, peer
        assert "except" not in peer["ipBlock"], peer
        cidr = peer["ipBlock"]["cidr"]
        names = [k for k, v in nets.items() if v == cidr]
        assert len(names) == 1, f"{overlay_name}: {cidr} is none (or several) of networks.yaml's ranges"
        return _party_of({"network": names[0]}, overlay_name)
    namespace = None
    if "namespaceSelector" in peer:
        labels = peer["namespaceSelector"]["matchLabels"]
        assert set(labels) == {"kubernetes.io/metadata.name"}, f"select namespaces by name: {labels}"
        namespace = labels["kubernetes.io/metadata.name"]
    pods = peer.get("podSelector", {}).get("matchLabels") if "podSelector" in peer else None
    for name, want in spec["peers"].items():
        want_ns = want.get("namespace")
        if isinstance(want_ns, dict):
            want_ns = nets[want_ns["network"]]
        if want_ns == namespace and want.get("pods") == pods and "network" not in want:
            return str(name)
    raise AssertionError(f"{overlay_name}: NetworkPolicy peer {peer} is no party of k8s/flows.yaml")


def _party_of(address: dict[str, str], overlay_name: str) -> str:
    spec = flows_file()
    reach = spec["overlays"][role(overlay_name)].get("reach", {})
    for name, how in reach.items():
        if how == address:
            return str(name)
    for name, want in spec["peers"].items():
        if want == address:
            return str(name)
    raise AssertionError(f"{overlay_name}: {address} is no party of k8s/flows.yaml")


def selected(policy: Obj) -> str:
    labels = policy["spec"]["podSelector"].get("matchLabels", {})
    if not labels:
        return "*"
    for name, want in flows_file()["peers"].items():
        if "namespace" not in want and want.get("pods") == labels:
            return str(name)
    raise AssertionError(f"NetworkPolicy {policy['metadata']['name']} selects {labels}, no party of k8s/flows.yaml")


def policy_rules(overlay_name: str) -> list[tuple[str, Rule]]:
    found = []
    for policy in of_kind(overlay(overlay_name), "NetworkPolicy"):
        who = selected(policy)
        spec = policy["spec"]
        for direction, peers_key in (("egress", "to"), ("ingress", "from")):
            assert direction.capitalize() in spec["policyTypes"] or direction not in spec, policy["metadata"]["name"]
            for rule in spec.get(direction, []):
                assert who != "*", f"{policy['metadata']['name']}: rules for every pod"
                assert rule.get(peers_key), f"{policy['metadata']['name']}: a rule open to everyone"
                assert rule.get("ports"), f"{policy['metadata']['name']}: a rule on every protocol"
                for peer in rule[peers_key]:
                    other = resolve_peer(overlay_name, peer)
                    for p in rule["ports"]:
                        source, target = (who, other) if direction == "egress" else (other, who)
                        port = p.get("port")
                        assert port is None or isinstance(port, int), f"numeric ports only: {p}"
                        allowed = Rule(source, target, p.get("protocol", "TCP"), port, p.get("endPort"))
                        found.append((direction, allowed))
    return found


@pytest.mark.parametrize("name", OVERLAYS)
def test_default_deny(name: str) -> None:
    denies = [
        p
        for p in of_kind(overlay(name), "NetworkPolicy")
        if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress") and not p["spec"].get("egress")
    ]
    assert len(denies) == 1, f"{name}: one default-deny policy"
    assert set(denies[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}


@pytest.mark.parametrize("name", OVERLAYS)
def test_policies_allow_only_flows(name: str) -> None:
    allowed = flow_rules(name)
    for direction, rule in policy_rules(name):
        assert rule in allowed, f"{name}: {direction} rule {rule} is not a flow of k8s/flows.yaml in this overlay"


@pytest.mark.parametrize("name", OVERLAYS)
def test_flows_are_allowed(name: str) -> None:
    rules = policy_rules(name)
    egress = {r for d, r in rules if d == "egress"}
    ingress = {r for d, r in rules if d == "ingress"}
    running = {
        w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] for w in workloads(overlay(name))
    }
    for flow in sorted(flow_rules(name), key=str):
        ours = {flow.source, flow.target} & (ARGUS | {"argus"})
        assert ours, f"{flow}: neither end is an Argus pod"
        for end in ours - {"argus"}:
            assert end in running, f"{name}: {flow} names {end}, which this overlay does not run"
        if flow.source in ARGUS | {"argus"}:
            assert flow in egress, f"{name}: {flow} has no egress rule on {flow.source}"
        if flow.target in ARGUS | {"argus"}:
            assert flow in ingress, f"{name}: {flow} has no ingress rule on {flow.target}"


@pytest.mark.parametrize("name", OVERLAYS)
def test_policies_select_running_pods(name: str) -> None:
    objs = overlay(name)
    pods = [w["spec"]["template"]["metadata"]["labels"] for w in workloads(objs)]
    for policy in of_kind(objs, "NetworkPolicy"):
        labels = policy["spec"]["podSelector"].get("matchLabels", {})
        assert any(labels_match(labels, p) for p in pods), f"{name}: {policy['metadata']['name']} selects no pod"


def test_diagram_parser() -> None:
    """The parser reads chains, groups and labelled, dotted and two-way arrows as the diagram uses them."""
    edges = diagram_edges()
    for a, b in (
        ("CAM", "ING"),
        ("API", "PTZSUB"),
        ("PTZSUB", "PTZ"),
        ("LIVESUB", "LIVE"),
        ("ING", "LIVESUB"),
        ("ING", "KV"),
        ("RET", "AUDITS"),
    ):
        assert frozenset((a, b)) in edges, (a, b)
    assert frozenset(("API", "PTZ")) not in edges
    assert frozenset(("ING", "PG")) not in edges

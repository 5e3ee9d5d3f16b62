"""Every kustomization under k8s/ renders with Debian's `kubectl kustomize`, and every object it makes is valid.

Objects of the Kubernetes API are validated against its JSON schemas (kubernetes-validate, strict: an unknown
field fails) for the oldest and newest Kubernetes versions the manifests are meant for. Objects of operators'
CRDs, which those schemas do not know, are checked here by hand: their apiVersion and kind, and the fields the
operator needs and Argus relies on.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.k8s.manifests import DEPS, K8S, OVERLAYS, Obj, load_yaml, of_kind, render, secret_keys

# The oldest Kubernetes the manifests are written for (persistentVolumeClaimRetentionPolicy, endPort, autoscaling/v2
# behavior, PodDisruptionBudget policy/v1 are all there), and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())

KUSTOMIZATIONS = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))
RENDERS = [K8S / "overlays" / o for o in OVERLAYS] + [K8S / "deps" / d for d in DEPS]

_CNPG_SCHEDULE = re.compile(r"^(\S+\s+){5}\S+$")  # six fields: seconds first
_DURATION = re.compile(r"^\d+(ms|s|m|h|d|w|y)$")
_SEVERITIES = {"critical", "warning"}


def ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(K8S)) for p in paths]


def test_every_render_is_listed() -> None:
    """The overlays and dependency sets the tests render are all that exist (a new one gets tested too)."""
    assert {p.name for p in (K8S / "overlays").iterdir() if p.is_dir()} == set(OVERLAYS), (
        "an overlay without kustomization"
    )
    assert {p.name for p in (K8S / "deps").iterdir() if (p / "kustomization.yaml").is_file()} == set(DEPS)


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=ids(KUSTOMIZATIONS))
def test_kustomization_renders(path: Path) -> None:
    objs = render(path)
    assert objs, f"{path} renders nothing"
    seen: set[tuple[str, str, str]] = set()
    for obj in objs:
        key = (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        assert key not in seen, f"{path}: {key} twice"
        seen.add(key)


@pytest.mark.parametrize("path", RENDERS, ids=ids(RENDERS))
def test_objects_validate(path: Path) -> None:
    checked = 0
    for obj in render(path):
        if obj["apiVersion"] in CRDS_BY_API:
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{obj['kind']} {obj['metadata']['name']} (Kubernetes {version}): {exc.message}")
            except kubernetes_validate.SchemaNotFoundError:
                pytest.fail(f"{obj['kind']} {obj['apiVersion']} is neither a Kubernetes kind nor a known CRD")
        checked += 1
    assert checked


@pytest.mark.parametrize("path", RENDERS, ids=ids(RENDERS))
def test_custom_resources(path: Path) -> None:
    objs = render(path)
    for obj in objs:
        checks = CRDS_BY_API.get(obj["apiVersion"])
        if checks is None:
            continue
        assert obj["kind"] in checks, f"{obj['apiVersion']} has no kind {obj['kind']} that these manifests use"
        assert obj["metadata"].get("name"), f"{obj['kind']} without a name"
        checks[obj["kind"]](obj, objs)


@pytest.mark.parametrize("path", RENDERS, ids=ids(RENDERS))
def test_namespaced(path: Path) -> None:
    """Every namespaced object lands in the overlay's namespace (kustomize sets it)."""
    objs = render(path)
    namespaces = {o["metadata"]["name"] for o in of_kind(objs, "Namespace")}
    assert len(namespaces) == 1, f"{path}: one Namespace expected, found {namespaces}"
    for obj in objs:
        if obj["kind"] == "Namespace":
            continue
        assert obj["metadata"].get("namespace") in namespaces, f"{obj['kind']} {obj['metadata']['name']}"


def test_object_lock_buckets() -> None:
    """The evidence and audit buckets are made with object lock; the recordings bucket as the services expect it
    (ARGUS_S3_RECORDINGS_OBJECT_LOCK: legal holds on held footage), since a bucket cannot gain object lock later."""
    expected = set()
    for name in OVERLAYS:
        for cm in of_kind(render(K8S / "overlays" / name), "ConfigMap"):
            if "ARGUS_S3_RECORDINGS_OBJECT_LOCK" in cm.get("data", {}):
                expected.add(cm["data"]["ARGUS_S3_RECORDINGS_OBJECT_LOCK"].lower() in ("true", "1", "yes"))
    assert len(expected) == 1, "every overlay expects the same of the recordings bucket"
    for deps in DEPS:
        (tenant,) = of_kind(render(K8S / "deps" / deps), "Tenant")
        locks = {b["name"]: bool(b.get("objectLock", False)) for b in tenant["spec"]["buckets"]}
        (recordings,) = expected
        assert locks == {"argus-recordings": recordings, "argus-evidence": True, "argus-audit": True}


# --- hand checks of the operators' resources ------------------------------------------------------------------------


def _require(obj: Obj, path: str) -> Any:
    value: Any = obj
    for part in path.split("."):
        assert isinstance(value, dict), f"{obj['kind']} {obj['metadata']['name']}: no {path}"
        assert part in value, f"{obj['kind']} {obj['metadata']['name']}: no {path}"
        value = value[part]
    return value


def check_external_secret(obj: Obj, objs: list[Obj]) -> None:
    ref = _require(obj, "spec.secretStoreRef")
    assert ref.get("kind", "SecretStore") in ("SecretStore", "ClusterSecretStore")
    stores = {s["metadata"]["name"] for s in of_kind(objs, ref.get("kind", "SecretStore"))}
    assert ref["name"] in stores, f"ExternalSecret {obj['metadata']['name']}: store {ref['name']} is not rendered"
    assert _require(obj, "spec.target.name")
    data = obj["spec"].get("data", [])
    assert data or obj["spec"].get("dataFrom"), "an ExternalSecret fetches nothing"
    for item in data:
        assert item["secretKey"], item
        assert item["remoteRef"]["key"], item
    secret_keys([obj])  # templates use only fetched values


def check_secret_store(obj: Obj, objs: list[Obj]) -> None:
    provider = _require(obj, "spec.provider")
    assert len(provider) == 1, "a SecretStore has one provider"


def check_prometheus_rule(obj: Obj, objs: list[Obj]) -> None:
    groups = _require(obj, "spec.groups")
    names: set[str] = set()
    for group in groups:
        assert group["name"] not in names
        names.add(group["name"])
        assert group["rules"]
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule), rule
            assert isinstance(rule["expr"], str)
            assert rule["expr"].strip()
            if "for" in rule:
                assert _DURATION.match(rule["for"]), rule["for"]
            if "alert" in rule:
                assert rule["labels"]["severity"] in _SEVERITIES, rule["alert"]
                assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def check_pod_monitor(obj: Obj, objs: list[Obj]) -> None:
    assert _require(obj, "spec.selector.matchLabels")
    for endpoint in _require(obj, "spec.podMetricsEndpoints"):
        assert endpoint["port"]
        assert endpoint["path"] == "/metrics"


def check_tenant(obj: Obj, objs: list[Obj]) -> None:
    for pool in _require(obj, "spec.pools"):
        assert pool["name"]
        assert pool["servers"] * pool["volumesPerServer"] >= 4, "MinIO needs at least 4 drives per pool"
        assert pool["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"]
    config = _require(obj, "spec.configuration.name")
    made = {k[0]: k for k in secret_keys(objs)}
    assert config in made
    assert "config.env" in {k for s, k in secret_keys(objs) if s == config}
    for user in obj["spec"].get("users", []):
        keys = {k for s, k in secret_keys(objs) if s == user["name"]}
        assert keys == {"CONSOLE_ACCESS_KEY", "CONSOLE_SECRET_KEY"}, f"tenant user {user['name']}: {keys}"


def check_cluster(obj: Obj, objs: list[Obj]) -> None:
    assert _require(obj, "spec.instances") >= 1
    assert _require(obj, "spec.storage.size")
    owner = _require(obj, "spec.bootstrap.initdb")
    keys = {k for s, k in secret_keys(objs) if s == owner["secret"]["name"]}
    assert keys == {"username", "password"}, f"bootstrap secret {owner['secret']['name']}: {keys}"
    backup = obj["spec"].get("backup")
    if backup is not None:
        store = backup["barmanObjectStore"]
        assert store["destinationPath"].startswith("s3://")
        for ref in store["s3Credentials"].values():
            assert (ref["name"], ref["key"]) in secret_keys(objs), f"backup credentials {ref}"


def check_scheduled_backup(obj: Obj, objs: list[Obj]) -> None:
    assert _CNPG_SCHEDULE.match(_require(obj, "spec.schedule")), "CloudNativePG schedules have six fields"
    clusters = {c["metadata"]["name"] for c in of_kind(objs, "Cluster")}
    assert _require(obj, "spec.cluster.name") in clusters
    cluster = next(c for c in of_kind(objs, "Cluster") if c["metadata"]["name"] == obj["spec"]["cluster"]["name"])
    assert "backup" in cluster["spec"], "a scheduled backup of a cluster without a backup destination"


Check = Callable[[Obj, list[Obj]], None]

CRDS_BY_API: dict[str, dict[str, Check]] = {
    "external-secrets.io/v1": {"ExternalSecret": check_external_secret, "SecretStore": check_secret_store},
    "monitoring.coreos.com/v1": {"PrometheusRule": check_prometheus_rule, "PodMonitor": check_pod_monitor},
    "minio.min.io/v2": {"Tenant": check_tenant},
    "postgresql.cnpg.io/v1": {"Cluster": check_cluster, "ScheduledBackup": check_scheduled_backup},
}


@pytest.mark.parametrize("path", RENDERS, ids=ids(RENDERS))
def test_no_secret_values(path: Path) -> None:
    """Secrets are referenced by name and made from the store; the manifests hold no Secret, no literal password."""
    for obj in render(path):
        assert obj["kind"] != "Secret", f"{path}: Secret {obj['metadata']['name']} in the manifests"
        if obj["kind"] == "ConfigMap":
            for key, value in obj.get("data", {}).items():
                if re.search(r"PASSWORD|SECRET|ACCESS_KEY|PRIVATE|SIGNING", key):
                    assert value.startswith("/"), f"{path}: {key} in a ConfigMap must name a mounted file"


def _limits_conf() -> dict[str, str]:
    text = (K8S.parent / "deploy" / "nats" / "limits.conf").read_text()
    limits = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, _, value = line.partition(":")
            limits[key.strip()] = value.strip().strip('"')
    assert "max_payload" in limits
    return limits


@pytest.mark.parametrize("role", ["central", "site", "dev"])
def test_nats_values(role: str) -> None:
    """The NATS chart values carry deploy/nats/limits.conf, and each role's shape: a cluster of three with JetStream
    at the centre, a leaf node without JetStream at a site, one server with JetStream in dev."""
    values = load_yaml(K8S / "deps" / "nats" / f"values-{role}.yaml")
    config = values["config"]
    merged = {k: str(v).removeprefix("<<").removesuffix(">>").strip() for k, v in config["merge"].items()}
    assert merged == _limits_conf(), f"values-{role}.yaml differs from deploy/nats/limits.conf"
    assert config["monitor"]["enabled"] is True
    if role == "central":
        assert config["cluster"] == {"enabled": True, "replicas": 3}
        assert config["jetstream"]["enabled"] is True
        assert config["jetstream"]["fileStore"]["enabled"] is True
        assert config["leafnodes"]["enabled"] is True
        assert config["leafnodes"]["tls"]["merge"]["verify"] is True
    elif role == "site":
        assert config["jetstream"]["enabled"] is False
        assert config["cluster"]["enabled"] is False
        (remote,) = config["leafnodes"]["remotes"]
        assert remote["url"].startswith("tls://")
        assert remote["tls"]["enabled"] is True
    else:
        assert config["cluster"]["enabled"] is False
        assert config["jetstream"]["fileStore"]["enabled"] is True
    assert values["promExporter"]["enabled"] is True, "the backlog alerts need the exporter's JetStream metrics"

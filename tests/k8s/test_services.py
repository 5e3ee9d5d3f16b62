"""The workloads of every overlay agree with the services they run.

For each Argus service in an overlay: its workload's environment (ConfigMaps, Secrets made by ExternalSecrets,
the downward API) is exactly what its `Config` reads and completes it (`load_config` succeeds); every setting it
does not set is one k8s/defaults.yaml says is left at its default (so a new setting fails here until someone
decides); the probes hit /readyz and /healthz on the port the service listens on (ARGUS_HTTP_PORT); the grace
period covers the preStop hook and the shutdown budget; files the config names are mounted from the Secret that
holds them, and folders it writes are writable volumes; the pod runs hardened as the image's user.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from argus_core.config import load_config, unknown_variables, variables
from argus_core.runtime import RuntimeConfig
from tests.k8s.manifests import (
    K8S,
    OVERLAYS,
    ROOT,
    SERVICES,
    Obj,
    config_type,
    container,
    environment,
    flows_file,
    labels_match,
    load_yaml,
    mount_for,
    of_kind,
    overlay,
    overlay_services,
    pod_spec,
    role,
    secret_keys,
    service_of,
    strings_in,
    workloads,
)

# Settings that shape the JetStream streams and buckets every pod declares: equal wherever pods share one NATS.
TOPOLOGY = ("ARGUS_NATS_REPLICAS", "ARGUS_MEDIA_MAX_AGE_S", "ARGUS_LEASE_TTL_S")
# Services whose load scales with cameras or viewers, and so have an autoscaler (except in dev).
AUTOSCALED = {"ingest", "liveview", "recorder"}
_USER = re.compile(r"^USER\s+(\d+)(?::(\d+))?\s*$", re.MULTILINE)

CASES = [(o, s) for o in OVERLAYS for s in overlay_services(o)]


def workload(objs: list[Obj], service: str) -> Obj:
    found = [w for w in workloads(objs) if service_of(w) == service]
    assert len(found) == 1, f"one workload of {service} expected, found {len(found)}"
    return found[0]


def config_of(objs: list[Obj], service: str) -> RuntimeConfig:
    env = environment(objs, workload(objs, service))
    config = load_config(config_type(service), env)
    assert isinstance(config, RuntimeConfig)
    return config


def pre_stop_seconds(c: Obj) -> float:
    hook = c.get("lifecycle", {}).get("preStop")
    if hook is None:
        return 0.0
    if "sleep" in hook:
        return float(hook["sleep"]["seconds"])
    command = hook["exec"]["command"]
    assert command[0] == "sleep", f"preStop {command}: a plain sleep is expected"
    assert len(command) == 2, f"preStop {command}: a plain sleep is expected"
    return float(command[1])


def test_overlays_run_the_services_they_say() -> None:
    roles = flows_file()["overlays"]
    assert {role(o) for o in OVERLAYS} == set(roles), "an overlay for every role of k8s/flows.yaml"
    for name in OVERLAYS:
        running = sorted(service_of(w) for w in workloads(overlay(name)))
        assert running == sorted(overlay_services(name)), name
    assert {s for r in roles.values() for s in r["services"]} == set(SERVICES)
    assert "simcam" not in roles["central"]["services"] + roles["site"]["services"], "simcam is for dev only"


@pytest.mark.parametrize(("name", "service"), CASES)
def test_environment_is_what_the_config_reads(name: str, service: str) -> None:
    objs = overlay(name)
    env = environment(objs, workload(objs, service))
    assert all(k.startswith("ARGUS_") for k in env), f"{service}: not an Argus setting: {sorted(env)}"
    assert unknown_variables(config_type(service), env) == [], f"{service} does not read these"
    assert "ARGUS_POD_NAME" in env, "ARGUS_POD_NAME comes from the downward API"
    config_of(objs, service)  # complete and valid: no ConfigError


@pytest.mark.parametrize("service", SERVICES)
def test_every_setting_is_set_or_left_on_purpose(service: str) -> None:
    defaults = load_yaml(K8S / "defaults.yaml")
    left = set(defaults.get(service) or [])
    read = set(variables(config_type(service)))
    assert left <= read, f"k8s/defaults.yaml lists settings {service} does not read: {sorted(left - read)}"
    for name in OVERLAYS:
        objs = overlay(name)
        if service not in overlay_services(name):
            continue
        env = set(environment(objs, workload(objs, service)))
        assert not env & left, f"{name}: {service} sets {sorted(env & left)}, which k8s/defaults.yaml leaves alone"
        missing = read - env - left
        assert not missing, (
            f"{name}: {service} reads {sorted(missing)}, which k8s/ neither sets nor lists in k8s/defaults.yaml: "
            "set it in k8s/base/<service> (or k8s/base/shared), or list it as left at its default"
        )


@pytest.mark.parametrize(("name", "service"), CASES)
def test_ports_and_probes(name: str, service: str) -> None:
    objs = overlay(name)
    w = workload(objs, service)
    c = container(w)
    port = config_of(objs, service).http_port
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports.get("http") == port, f"{service}: container port http {ports.get('http')} != ARGUS_HTTP_PORT {port}"
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path, f"{service} {probe}"
        assert get["port"] in ("http", port), f"{service} {probe} port {get['port']}"
    services = [
        s
        for s in of_kind(objs, "Service")
        if labels_match(s["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
    ]
    assert len(services) == 1, f"{service}: one Service expected"
    (http,) = [p for p in services[0]["spec"]["ports"] if p["name"] == "http"]
    assert http["targetPort"] in ("http", port)


@pytest.mark.parametrize(("name", "service"), CASES)
def test_grace_period_covers_the_drain(name: str, service: str) -> None:
    objs = overlay(name)
    w = workload(objs, service)
    budget = config_of(objs, service).shutdown_budget_s
    grace = pod_spec(w)["terminationGracePeriodSeconds"]
    pre_stop = pre_stop_seconds(container(w))
    # Kubernetes counts the preStop hook inside the grace period; the interpreter needs a moment to exit after.
    assert grace >= pre_stop + budget + 5, f"{service}: grace {grace} s < preStop {pre_stop} + budget {budget} + 5"


@pytest.mark.parametrize(("name", "service"), CASES)
def test_paths_are_mounted(name: str, service: str) -> None:
    """Files a setting names come from the mounted Secret that holds them; folders it writes are writable."""
    objs = overlay(name)
    w = workload(objs, service)
    made = secret_keys(objs)
    for variable, value in strings_in(config_of(objs, service)):
        if not value.startswith("/"):
            continue
        mount = mount_for(w, value)
        assert mount is not None, (
            f"{service}: {variable}={value} is not on any volume (the root filesystem is read-only)"
        )
        if variable.endswith("_DIR"):
            assert not mount.read_only, f"{service}: {variable} is on a read-only mount"
            assert {"emptyDir", "persistentVolumeClaim"} & set(mount.volume), f"{service}: {variable} needs a volume"
            continue
        assert "secret" in mount.volume, f"{service}: {variable}={value} should come from a Secret"
        secret = mount.volume["secret"]["secretName"]
        key = value[len(mount.path.rstrip("/")) + 1 :]
        assert (secret, key) in made, (
            f"{service}: {variable} names {key} of Secret {secret}, which no ExternalSecret makes"
        )


@pytest.mark.parametrize(("name", "service"), CASES)
def test_hardened(name: str, service: str) -> None:
    objs = overlay(name)
    w = workload(objs, service)
    spec = pod_spec(w)
    c = container(w)
    dockerfile = (ROOT / "services" / service / "Dockerfile").read_text()
    users = _USER.findall(dockerfile)
    assert users, f"{service}: the Dockerfile sets no numeric USER"
    uid = int(users[-1][0])
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == uid
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in sc or sc["privileged"] is False
    tmp = mount_for(w, "/tmp")
    assert tmp is not None, f"{service}: /tmp must be an emptyDir"
    assert tmp.path == "/tmp", f"{service}: /tmp must be an emptyDir"
    assert "emptyDir" in tmp.volume, f"{service}: /tmp must be an emptyDir"
    assert spec["automountServiceAccountToken"] is False
    # Service links would put ARGUS_<SERVICE>_PORT=tcp://... and the like into the environment of every pod: names
    # a Config may read (the recorder's settings are ARGUS_RECORDER_*).
    assert spec["enableServiceLinks"] is False
    (account,) = [a for a in of_kind(objs, "ServiceAccount") if a["metadata"]["name"] == spec["serviceAccountName"]]
    assert account["automountServiceAccountToken"] is False
    assert spec.get("hostNetwork", False) is False
    assert spec.get("hostPID", False) is False
    image = c["image"]
    assert re.search(rf"(^|/)argus/{service}:[\w.-]+$", image), f"{service} runs {image}"


@pytest.mark.parametrize(("name", "service"), CASES)
def test_resources_and_disruption(name: str, service: str) -> None:
    objs = overlay(name)
    w = workload(objs, service)
    resources = container(w)["resources"]
    for kind in ("cpu", "memory"):
        assert resources["requests"][kind], f"{service}: {kind} request"
        assert resources["limits"][kind], f"{service}: {kind} limit"
    assert _quantity(resources["requests"]["memory"]) <= _quantity(resources["limits"]["memory"])
    assert _quantity(resources["requests"]["cpu"]) <= _quantity(resources["limits"]["cpu"])
    labels = w["spec"]["template"]["metadata"]["labels"]
    budgets = [
        p for p in of_kind(objs, "PodDisruptionBudget") if labels_match(p["spec"]["selector"]["matchLabels"], labels)
    ]
    assert len(budgets) == 1, f"{service}: one PodDisruptionBudget expected"
    if w["kind"] == "Deployment":
        rolling = w["spec"]["strategy"]["rollingUpdate"]
        assert rolling["maxUnavailable"] == 0, f"{service}: never unavailable"
        assert rolling["maxSurge"] >= 1, f"{service}: surge"


@pytest.mark.parametrize("name", OVERLAYS)
def test_autoscalers(name: str) -> None:
    objs = overlay(name)
    scalers = of_kind(objs, "HorizontalPodAutoscaler")
    running = {service_of(w) for w in workloads(objs)}
    expected = set() if role(name) == "dev" else AUTOSCALED & running
    targets = set()
    for hpa in scalers:
        ref = hpa["spec"]["scaleTargetRef"]
        (target,) = [w for w in workloads(objs) if w["kind"] == ref["kind"] and w["metadata"]["name"] == ref["name"]]
        targets.add(service_of(target))
        assert hpa["spec"]["minReplicas"] >= 2, "a pod's cameras or viewers need another pod to move to"
        kinds = {m["type"] for m in hpa["spec"]["metrics"]}
        assert kinds == {"Pods", "Resource"}, f"{ref['name']}: a per-pod custom metric and CPU"
    assert targets == expected, name
    if role(name) == "dev":
        for w in workloads(objs):
            assert w["spec"]["replicas"] == 1, f"dev runs one {w['metadata']['name']}"


def test_topology_settings_agree() -> None:
    """Pods sharing one NATS system (the centre and its sites) declare the same streams and buckets."""
    seen: dict[str, dict[str, str]] = {}
    for name in OVERLAYS:
        objs = overlay(name)
        values = {tuple(environment(objs, w).get(k, "") for k in TOPOLOGY) for w in workloads(objs)}
        assert len(values) == 1, f"{name}: pods disagree on {TOPOLOGY}: {values}"
        seen[name] = dict(zip(TOPOLOGY, values.pop(), strict=True))
    for name in OVERLAYS:
        if role(name) == "site":
            assert seen[name] == seen["central"], f"{name} must declare the centre's streams exactly as the centre does"
    assert int(seen["central"]["ARGUS_NATS_REPLICAS"]) == 3, "three replicas on the central cluster of three"


def test_recorder_spool_is_persistent() -> None:
    """The recorder acknowledges packets once they are in its spool: the spool must outlive the pod."""
    for name in ("central", "dev"):
        objs = overlay(name)
        w = workload(objs, "recorder")
        assert w["kind"] == "StatefulSet"
        spool = config_of(objs, "recorder").recorder.spool_dir  # type: ignore[attr-defined]
        mount = mount_for(w, spool)
        assert mount is not None
        assert "persistentVolumeClaim" in mount.volume
        claim = mount.volume["persistentVolumeClaim"]
        size = _quantity(claim["spec"]["resources"]["requests"]["storage"])
        limit = config_of(objs, "recorder").recorder.spool_max_bytes  # type: ignore[attr-defined]
        assert size >= limit * 1.1, f"{name}: the spool volume ({size} bytes) must hold ARGUS_RECORDER_SPOOL_MAX_BYTES"


def _quantity(text: str | int | float) -> float:
    value = str(text)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, scale in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * scale
    return float(value)


def test_dockerfiles_exist() -> None:
    for service in SERVICES:
        assert Path(ROOT / "services" / service / "Dockerfile").is_file()


_ROUTE = re.compile(r"\.add_(?:get|post|put|patch|delete|route)\(\s*(?:\"[A-Z]+\",\s*)?f?\"(/[^\"]*)\"")
_RUNTIME_ROUTES = {"/healthz", "/readyz", "/metrics"}


def served_routes(service: str) -> set[str]:
    """The literal route paths a service registers (up to the first placeholder), as written in its source."""
    routes = set()
    for path in (ROOT / "services" / service / "src").rglob("*.py"):
        for route in _ROUTE.findall(path.read_text()):
            routes.add(route.split("{", 1)[0])
    return routes


def test_ingress_routes_what_the_services_serve() -> None:
    """Every route the api and liveview serve to browsers is routed by the Ingress; health and metrics are not."""
    objs = overlay("central")
    (ingress,) = of_kind(objs, "Ingress")
    paths: dict[str, list[tuple[str, str]]] = {}
    for rule in ingress["spec"]["rules"]:
        for p in rule["http"]["paths"]:
            paths.setdefault(p["backend"]["service"]["name"], []).append((p["path"], p["pathType"]))

    def routed(service: str, route: str) -> bool:
        for path, kind in paths.get(f"argus-{service}", []):
            if kind == "Exact" and route == path:
                return True
            if kind == "Prefix" and (route == path or route.startswith(path.rstrip("/") + "/")):
                return True
        return False

    assert set(paths) == {"argus-api", "argus-liveview"}
    for service in ("api", "liveview"):
        for route in served_routes(service) - _RUNTIME_ROUTES:
            assert routed(service, route), f"the Ingress does not route {service}'s {route}"
        for route in _RUNTIME_ROUTES:
            assert not routed(service, route), f"the Ingress exposes {service}'s {route}"
    assert "/api/v1/cameras" in served_routes("api"), "the route scan finds nothing: is it broken?"

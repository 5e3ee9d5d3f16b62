"""Rendering and reading the Kubernetes manifests under k8s/, for the tests in this folder.

`render(path)` runs Debian's `kubectl kustomize` on a kustomization (cached per process) and returns its objects;
the rest resolves what a pod would see: its environment (ConfigMaps, Secrets made by ExternalSecrets, the downward
API), its mounts, and which Argus service a workload runs.
"""

from __future__ import annotations

import functools
import importlib
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = tuple(sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file()))
DEPS = ("central", "dev")
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").is_file())
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
EXAMPLE_POD_NAME = "argus-example-7d9f8c6b5-x2x7q"

Obj = dict[str, Any]

_TEMPLATE_VALUE = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")


def kubectl() -> str:
    found = shutil.which("kubectl")
    assert found, "kubectl is not installed: `./dev setup` installs Debian's (the k8s tests need it)"
    return found


@functools.cache
def _render(path: str) -> tuple[str, ...]:
    result = subprocess.run([kubectl(), "kustomize", path], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return (result.stdout,)


def render(path: Path) -> list[Obj]:
    """The objects `kubectl kustomize path` prints (a fresh copy each call: tests may change them)."""
    (text,) = _render(str(path))
    docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a rendered document is not a mapping"
    return docs


def overlay(name: str) -> list[Obj]:
    return render(K8S / "overlays" / name)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def flows_file() -> dict[str, Any]:
    loaded = load_yaml(K8S / "flows.yaml")
    assert isinstance(loaded, dict)
    return loaded


def role(overlay_name: str) -> str:
    """The role of an overlay in k8s/flows.yaml: its name, or for a copy such as site-north, the part before `-`."""
    roles = flows_file()["overlays"]
    found = overlay_name if overlay_name in roles else overlay_name.split("-", 1)[0]
    assert found in roles, f"overlay {overlay_name} has no role in k8s/flows.yaml (overlays: {sorted(roles)})"
    return found


def overlay_services(overlay_name: str) -> list[str]:
    services = flows_file()["overlays"][role(overlay_name)]["services"]
    assert isinstance(services, list)
    return [str(s) for s in services]


def networks(overlay_name: str) -> dict[str, str]:
    """The overlay's local-config ConfigMap of address ranges and namespaces (networks.yaml)."""
    doc = load_yaml(K8S / "overlays" / overlay_name / "networks.yaml")
    assert isinstance(doc, dict)
    assert doc["kind"] == "ConfigMap"
    data = doc["data"]
    assert isinstance(data, dict)
    return {str(k): str(v) for k, v in data.items()}


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def named(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def workloads(objs: list[Obj]) -> list[Obj]:
    return [o for o in objs if o["kind"] in WORKLOAD_KINDS]


def service_of(workload: Obj) -> str:
    """The Argus service a workload runs: its app.kubernetes.io/component label (argus-<service>)."""
    labels = workload["spec"]["template"]["metadata"]["labels"]
    name = labels["app.kubernetes.io/component"]
    assert workload["metadata"]["name"] == f"argus-{name}", f"{workload['metadata']['name']} runs {name}?"
    return str(name)


def pod_spec(workload: Obj) -> Obj:
    spec = workload["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def container(workload: Obj) -> Obj:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1, f"{workload['metadata']['name']}: one container expected"
    c = containers[0]
    assert isinstance(c, dict)
    return c


def config_type(service: str) -> type[msgspec.Struct]:
    module = importlib.import_module(f"argus_{service}.config")
    config = module.Config
    assert isinstance(config, type)
    assert issubclass(config, msgspec.Struct)
    return config


# --- Secrets made by ExternalSecrets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretKey:
    secret: str
    key: str
    example: str


def secret_keys(objs: list[Obj]) -> dict[tuple[str, str], SecretKey]:
    """Every (Secret, key) the ExternalSecrets of a render make, with an example value of the right shape."""
    keys: dict[tuple[str, str], SecretKey] = {}
    for es in of_kind(objs, "ExternalSecret"):
        spec = es["spec"]
        target = spec.get("target", {}).get("name", es["metadata"]["name"])
        fetched = {d["secretKey"]: f"example-{d['secretKey'].lower()}" for d in spec.get("data", [])}
        template = spec.get("target", {}).get("template", {}).get("data")
        if template:
            for key, text in template.items():
                names = _TEMPLATE_VALUE.findall(str(text))
                assert set(names) <= set(fetched), (
                    f"ExternalSecret {target}: template of {key} uses a value not fetched"
                )
                value = str(text)
                for name in names:
                    value = re.sub(r"\{\{\s*\." + name + r"\s*\}\}", fetched[name], value)
                keys[(target, key)] = SecretKey(target, key, value)
        else:
            for key, value in fetched.items():
                keys[(target, key)] = SecretKey(target, key, value)
    return keys


# --- what a container sees ----------------------------------------------------------------------------------------


def config_maps(objs: list[Obj]) -> dict[str, dict[str, str]]:
    return {o["metadata"]["name"]: dict(o.get("data", {})) for o in of_kind(objs, "ConfigMap")}


def environment(objs: list[Obj], workload: Obj) -> dict[str, str]:
    """The environment of the workload's container, with Secrets and downward API values filled with examples."""
    c = container(workload)
    cms = config_maps(objs)
    secrets = secret_keys(objs)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"{workload['metadata']['name']}: envFrom {source} (ConfigMaps only)"
        name = source["configMapRef"]["name"]
        assert name in cms, f"{workload['metadata']['name']}: ConfigMap {name} is not in the overlay"
        env.update(cms[name])
    for item in c.get("env", []):
        name = item["name"]
        if "value" in item:
            env[name] = str(item["value"])
            continue
        ref = item["valueFrom"]
        if "fieldRef" in ref:
            assert ref["fieldRef"]["fieldPath"] == "metadata.name", f"{name}: unexpected fieldRef {ref}"
            env[name] = EXAMPLE_POD_NAME
        elif "secretKeyRef" in ref:
            key = (ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
            who = workload["metadata"]["name"]
            assert key in secrets, f"{who}: {name} reads Secret {key[0]} key {key[1]}, which no ExternalSecret makes"
            env[name] = secrets[key].example
        elif "configMapKeyRef" in ref:
            cm = ref["configMapKeyRef"]
            env[name] = cms[cm["name"]][cm["key"]]
        else:
            raise AssertionError(f"{workload['metadata']['name']}: {name} from {ref}")
    return env


@dataclass(frozen=True)
class Mount:
    path: str
    volume: Obj
    read_only: bool


def mounts(workload: Obj) -> list[Mount]:
    spec = pod_spec(workload)
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for claim in workload["spec"].get("volumeClaimTemplates", []):
        volumes[claim["metadata"]["name"]] = {"name": claim["metadata"]["name"], "persistentVolumeClaim": claim}
    found = []
    for m in container(workload).get("volumeMounts", []):
        assert m["name"] in volumes, f"{workload['metadata']['name']}: mount of unknown volume {m['name']}"
        found.append(Mount(m["mountPath"], volumes[m["name"]], bool(m.get("readOnly", False))))
    return found


def mount_for(workload: Obj, path: str) -> Mount | None:
    best: Mount | None = None
    for m in mounts(workload):
        if (path == m.path or path.startswith(m.path.rstrip("/") + "/")) and (
            best is None or len(m.path) > len(best.path)
        ):
            best = m
    return best


def strings_in(value: object, where: str = "") -> Iterator[tuple[str, str]]:
    """Every string inside a loaded config, with the ARGUS_ variable it came from."""
    if isinstance(value, msgspec.Struct):
        for field in value.__struct_fields__:
            yield from strings_in(
                getattr(value, field), f"{where}_{field}".upper() if where else f"ARGUS_{field}".upper()
            )
    elif isinstance(value, str):
        yield where, value
    elif isinstance(value, tuple | list):
        for item in value:
            yield from strings_in(item, where)


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())

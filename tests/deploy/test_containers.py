"""The container images and deploy/compose.yaml agree with the services they run.

No Docker engine is available where these tests run, so the images are not built here: the Dockerfiles are parsed
and checked for what the images promise (multi-stage, only that service's files and dependencies, a non-root
numeric user, `python -m argus_<name>`, a /healthz check), and every Argus service in the compose file is checked
against its own `Config`: each ARGUS_* variable it sets is one the service reads, the config loads from them, the
health check hits the port the service listens on, and it may stop for longer than its shutdown budget.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml  # type: ignore[import-untyped]

from argus_api.config import Config as ApiConfig
from argus_core.config import load_config, unknown_variables
from argus_core.identity import TokenIssuer, TokenVerifier, load_public_keys
from argus_core.runtime import RuntimeConfig

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").is_file())

# Compose interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; $$ is a literal $.
_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)")
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_HEALTH_URL = re.compile(r"https?://(?:127\.0\.0\.1|localhost):(\d+)/healthz\b")


# --- helpers ---------------------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict), "compose.yaml is not a mapping"
    return loaded


def compose_service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"compose.yaml has no service {name!r}"
    service = services[name]
    assert isinstance(service, dict)
    return service


def required_variables() -> set[str]:
    """Variables compose.yaml requires with ${VAR:?message}."""
    return {m.group(1) for m in _INTERPOLATION.finditer(COMPOSE_FILE.read_text()) if m.group(2) in ("?", ":?")}


def dummy_value(variable: str) -> str:
    # URL-safe, since a password ends up inside ARGUS_DB_URL.
    return f"dummy-{variable.lower().replace('_', '-')}"


def interpolate(value: object) -> str:
    """A compose value as the container would see it, with every required variable set to a dummy value."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        variable, op, arg = match.group(1), match.group(2), match.group(3)
        if op in ("-", ":-"):
            return arg or ""
        return dummy_value(variable)

    text = str(value).lower() if isinstance(value, bool) else str(value)
    return _INTERPOLATION.sub(substitute, text)


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in raw)
        return {key: interpolate(value) for key, value in pairs}
    assert isinstance(raw, dict)
    return {str(key): interpolate("" if value is None else value) for key, value in raw.items()}


def service_config_type(name: str) -> type[RuntimeConfig]:
    module_name = f"argus_{name}.config"
    if importlib.util.find_spec(module_name) is None:
        pytest.skip(f"{module_name} is not written yet, so its compose settings cannot be checked")
    config_type = importlib.import_module(module_name).Config
    assert isinstance(config_type, type)
    assert issubclass(config_type, RuntimeConfig), f"{module_name}.Config does not extend RuntimeConfig"
    return config_type


def seconds(duration: object) -> float:
    text = str(duration)
    parts = _DURATION.findall(text)
    assert parts, f"not a duration: {text!r}"
    assert "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def volume_targets(service: Mapping[str, Any]) -> dict[str, str]:
    """Mount target -> source for the service's short-syntax volumes."""
    targets: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        source, target = str(volume).split(":")[:2]
        targets[target] = source
    return targets


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile_stages(path: Path) -> list[list[Instruction]]:
    """The instructions of each stage (each FROM starts one), continuation lines joined, comments dropped."""
    stages: list[list[Instruction]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        pending = ""
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, f"{path}: {instruction.keyword} before the first FROM"
        stages[-1].append(instruction)
    assert not pending, f"{path}: ends inside a continued line"
    return stages


def copy_sources(instruction: Instruction) -> tuple[dict[str, str], list[str]]:
    """(flags, sources) of a COPY instruction in shell form."""
    words = instruction.args.split()
    flags = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
    paths = [w for w in words if not w.startswith("--")]
    return flags, paths[:-1]


# --- images ----------------------------------------------------------------------------------------------------


def test_every_service_has_an_image_and_a_compose_service() -> None:
    assert SERVICES, "no services found"
    services = compose()["services"]
    for name in SERVICES:
        assert (ROOT / "services" / name / "Dockerfile").is_file(), f"services/{name}/Dockerfile is missing"
        assert name in services, f"compose.yaml has no service {name!r}"


@pytest.mark.parametrize("name", SERVICES)
def test_dockerfile_is_multi_stage_and_runs_the_service_as_non_root(name: str) -> None:
    path = ROOT / "services" / name / "Dockerfile"
    stages = dockerfile_stages(path)
    assert len(stages) >= 2, f"{path} is not multi-stage"
    final = stages[-1]

    users = [i.args for i in final if i.keyword == "USER"]
    assert users, f"{path}: the final stage sets no USER"
    user, _, group = users[-1].partition(":")
    assert user.isdigit(), f"{path}: USER {users[-1]} is not numeric (Kubernetes runAsNonRoot needs a uid)"
    assert int(user) != 0, f"{path}: runs as root"
    assert not group or (group.isdigit() and int(group) != 0), f"{path}: group {group!r} is root or not numeric"

    entrypoints = [i.args for i in final if i.keyword == "ENTRYPOINT"]
    assert entrypoints, f"{path}: no ENTRYPOINT"
    assert json.loads(entrypoints[-1]) == ["python", "-m", f"argus_{name}"]

    health = [i.args for i in final if i.keyword == "HEALTHCHECK"]
    assert health, f"{path}: no HEALTHCHECK"
    assert "/healthz" in health[-1]
    assert "ARGUS_HTTP_PORT" in health[-1], "the health check must follow the configured port"
    exposed = " ".join(i.args for i in final if i.keyword == "EXPOSE").split()
    assert "8080" in exposed, f"{path}: the health port 8080 is not exposed"
    assert [i.args for i in final if i.keyword == "STOPSIGNAL"] == ["SIGTERM"]

    # The runtime stage gets the virtualenv built in an earlier stage, and nothing from the build context.
    copies = [copy_sources(i) for i in final if i.keyword == "COPY"]
    assert copies, f"{path}: the final stage copies nothing"
    assert all("from" in flags for flags, _ in copies), f"{path}: the final stage copies from the build context"
    assert any("/app/.venv" in sources for _, sources in copies)


@pytest.mark.parametrize("name", SERVICES)
def test_dockerfile_installs_only_this_service(name: str) -> None:
    path = ROOT / "services" / name / "Dockerfile"
    project = tomllib.loads((ROOT / "services" / name / "pyproject.toml").read_text())["project"]["name"]
    assert project == f"argus-{name}"
    stages = dockerfile_stages(path)
    # The builder is the stage that installs with uv (the api has a stage before it that fetches hls.js).
    builder = next((st for st in stages if any(i.keyword == "RUN" and "uv sync" in i.args for i in st)), stages[0])

    syncs = [i.args for i in builder if i.keyword == "RUN" and "uv sync" in i.args]
    assert syncs, f"{path}: the builder never runs uv sync"
    for args in syncs:
        words = args.split()
        for flag in ("--frozen", "--no-dev", "--no-editable"):
            assert flag in words, f"{path}: uv sync without {flag}"
        assert words[words.index("--package") + 1] == project, f"{path}: uv sync is not limited to {project}"

    # From the build context: the lock, every member's pyproject.toml (uv needs them to resolve the workspace),
    # the shared library and this service; never another service's code.
    allowed = {
        "pyproject.toml",
        "uv.lock",
        "libs/*/pyproject.toml",
        "services/*/pyproject.toml",
        "libs/argus_core",
        f"services/{name}",
    }
    context_sources = [
        source
        for flags, sources in (copy_sources(i) for i in builder if i.keyword == "COPY")
        if "from" not in flags
        for source in sources
    ]
    assert f"services/{name}" in context_sources
    assert set(context_sources) <= allowed, f"{path} copies {sorted(set(context_sources) - allowed)}"


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    patterns = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    patterns.discard("")
    for needed in (".git", "**/.venv", "**/.state", "**/__pycache__", "tests", "docs"):
        assert needed in patterns, f".dockerignore does not exclude {needed}"
    for used in ("libs", "services", "pyproject.toml", "uv.lock"):
        assert used not in patterns, f".dockerignore excludes {used}, which the images need"


# --- compose ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SERVICES)
def test_compose_service_is_built_from_its_dockerfile_and_hardened(name: str) -> None:
    service = compose_service(name)
    build = service["build"]
    assert (DEPLOY / build["context"]).resolve() == ROOT, "images are built with the repository root as context"
    assert build["dockerfile"] == f"services/{name}/Dockerfile"
    assert service.get("read_only") is True
    assert "/tmp" in service.get("tmpfs", [])
    assert service.get("cap_drop") == ["ALL"]
    assert not service.get("cap_add")
    assert "no-new-privileges:true" in service.get("security_opt", [])
    assert service.get("user") in (None, "10001", "10001:10001"), "the image's non-root user is overridden"
    if name == "simcam":
        assert service.get("profiles") == ["dev"], "simcam must stay out of production-like runs"
    else:
        assert not service.get("profiles"), f"{name} would be left out of a plain `up`"


@pytest.mark.parametrize("name", SERVICES)
def test_compose_environment_is_what_the_config_reads(name: str) -> None:
    service = compose_service(name)
    config_type = service_config_type(name)
    env = environment(service)
    assert unknown_variables(config_type, env) == [], f"{name} sets variables its Config does not read"
    config = load_config(config_type, env)  # raises ConfigError naming a missing or bad variable

    health = service.get("healthcheck") or {}
    test = " ".join(health.get("test", [])) if isinstance(health.get("test"), list) else str(health.get("test"))
    url = _HEALTH_URL.search(test)
    assert url, f"{name}: the health check does not fetch /healthz over loopback: {test!r}"
    assert int(url.group(1)) == config.http_port, f"{name}: health check port is not ARGUS_HTTP_PORT"
    assert seconds(service["stop_grace_period"]) > config.shutdown_budget_s, (
        f"{name}: Docker would kill it before its {config.shutdown_budget_s} s shutdown budget is spent"
    )


@pytest.mark.parametrize("name", SERVICES)
def test_compose_service_waits_for_what_its_config_needs(name: str) -> None:
    services = compose()["services"]
    service = compose_service(name)
    config_type = service_config_type(name)
    config = load_config(config_type, environment(service))
    depends = service.get("depends_on") or {}
    assert isinstance(depends, dict), f"{name}: depends_on must give conditions"

    for dependency, spec in depends.items():
        assert dependency in services, f"{name} depends on unknown service {dependency!r}"
        condition = spec.get("condition")
        if condition == "service_healthy":
            assert services[dependency].get("healthcheck"), f"{dependency} has no healthcheck to wait for"
        else:
            assert condition == "service_completed_successfully", f"{name} -> {dependency}: {condition}"
            assert services[dependency].get("restart") == "no", f"{dependency} is not a one-shot"

    # simcam stands in for cameras: it never connects to the bus.
    needs = {"nats": "service_healthy"} if name != "simcam" else {}
    fields = set(msgspec.structs.asdict(config))
    if "db" in fields:
        needs["postgres"] = "service_healthy"
    if "s3" in fields:
        needs["minio"] = "service_healthy"
    if "tokens" in fields:
        needs["keys"] = "service_completed_successfully"
        mounts = volume_targets(service)
        tokens = msgspec.structs.asdict(config)["tokens"]
        for key_file in [*tokens.public_keys, tokens.private_key]:
            if key_file:
                folder = str(Path(key_file).parent)
                assert mounts.get(folder) == "keys", f"{name}: {key_file} is not on the keys volume"
    for dependency, condition in needs.items():
        assert dependency in depends, f"{name} does not wait for {dependency}"
        assert depends[dependency]["condition"] == condition


def test_infrastructure_services() -> None:
    services = compose()["services"]
    nats = services["nats"]
    assert nats["image"] == "nats:2.10-alpine"
    assert "./nats:/etc/nats:ro" in nats["volumes"]
    config_flag = nats["command"].index("-c")
    conf = nats["command"][config_flag + 1]
    assert conf.startswith("/etc/nats/")
    assert (DEPLOY / "nats" / Path(conf).name).is_file(), f"deploy/nats/{Path(conf).name} is missing"
    assert services["postgres"]["image"] == "postgres:15"
    assert services["minio"]["image"].startswith("minio/minio")
    for name in ("nats", "postgres", "minio"):
        assert services[name].get("healthcheck"), f"{name} has no healthcheck for depends_on to wait on"


def test_secrets_are_required_variables_listed_in_env_example() -> None:
    """No default credential in compose.yaml: every secret is a ${VAR:?} the operator must set."""
    secret_key = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|ROOT_USER|DB_URL")
    for name, service in compose()["services"].items():
        raw = service.get("environment") or {}
        assert isinstance(raw, dict), f"{name}: environment should be a mapping"
        for key, value in raw.items():
            if secret_key.search(key):
                assert re.search(r"\$\{[A-Z0-9_]+:\?", str(value)), f"{name}: {key} is not a required variable"
    example = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    }
    assert required_variables(), "compose.yaml requires no variables: where are the credentials?"
    assert required_variables() <= example, f"deploy/.env.example lacks {sorted(required_variables() - example)}"


def test_keys_job_makes_a_signing_key_pair_once(tmp_path: Path) -> None:
    """Run the keys service's script as written in compose.yaml against a folder standing in for its volume."""
    keys = compose_service("keys")
    assert keys.get("restart") == "no"
    assert volume_targets(keys).get("/keys") == "keys"
    assert keys["image"] == compose_service("api")["image"], "keys runs in the api image, which has argus_core"
    python, flag, script, folder = keys["entrypoint"]
    assert (python, flag, folder) == ("python", "-c", "/keys")
    script = interpolate(script)

    def run_job() -> None:
        subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=60)

    run_job()
    api = load_config(ApiConfig, environment(compose_service("api")))
    private = tmp_path / Path(api.tokens.private_key).name
    public = [tmp_path / Path(p).name for p in api.tokens.public_keys]
    assert private.is_file()
    assert all(p.is_file() for p in public)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    first = private.read_bytes()

    run_job()
    assert private.read_bytes() == first, "the keys job replaced an existing signing key"

    issuer = TokenIssuer.from_file(str(private), issuer=api.tokens.issuer, audience=api.tokens.audience, ttl_s=60)
    verifier = TokenVerifier(
        load_public_keys(str(p) for p in public),
        issuer=api.tokens.issuer,
        audience=api.tokens.audience,
        leeway_s=0,
    )
    assert verifier.verify(issuer.issue("operator-1", ["operator"], [])).subject == "operator-1"


def test_docker_compose_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker client is not installed, so `docker compose config` cannot run")
    version = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False)
    if version.returncode != 0:
        pytest.skip("the docker compose plugin is not installed, so `docker compose config` cannot run")
    env = {**os.environ, **{variable: dummy_value(variable) for variable in required_variables()}}
    for profile in ([], ["--profile", "dev"]):
        result = subprocess.run(
            [docker, "compose", "-f", str(COMPOSE_FILE), *profile, "config", "-q"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr

"""Service configuration read from the environment into frozen msgspec Structs.

Every field of a config Struct maps to one environment variable, `ARGUS_` followed by the field name in upper
case (`http_port` -> `ARGUS_HTTP_PORT`). A field may also be read from a file named by `<VAR>_FILE`, which is how
Kubernetes secrets are mounted. Values are converted with msgspec's lax rules (strings to ints, floats, bools,
lists from comma-separated text) and validated with `msgspec.Meta` constraints; a bad value raises `ConfigError`
naming the variable, so a service stops with a message an operator can act on.

Config is read once, in `__main__`, and passed down: no module reads the environment itself.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec

from argus_core.errors import ConfigError

PREFIX = "ARGUS_"

C = TypeVar("C", bound=msgspec.Struct)

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]

_MISSING_RE = re.compile(r"missing required field `([A-Za-z0-9_]+)`")


def env_name(field: str) -> str:
    return PREFIX + field.upper()


def _unwrap(tp: Any) -> Any:
    return typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp


def _is_sequence(tp: Any) -> bool:
    return typing.get_origin(_unwrap(tp)) in (list, tuple, frozenset, set)


def _is_struct(tp: Any) -> bool:
    tp = _unwrap(tp)
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _field_types(config_type: type[msgspec.Struct]) -> dict[str, Any]:
    hints = typing.get_type_hints(config_type, include_extras=True)
    return {name: hints[name] for name in config_type.__struct_fields__}


def _read_raw(config_type: type[msgspec.Struct], environ: Mapping[str, str], prefix: str) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    info = msgspec.structs.fields(config_type)
    required = {f.name for f in info if f.required}
    for field, tp in _field_types(config_type).items():
        var = prefix + field.upper()
        if _is_struct(tp):
            nested = _read_raw(_unwrap(tp), environ, var + "_")
            if nested or field in required:
                raw[field] = nested
            continue
        value = environ.get(var)
        file_var = var + "_FILE"
        if value is None and file_var in environ:
            path = Path(environ[file_var])
            try:
                value = path.read_text().strip()
            except OSError as exc:
                raise ConfigError(file_var, f"cannot read {path}: {exc.strerror}") from exc
        if value is None:
            continue
        if _is_sequence(tp):
            raw[field] = [item.strip() for item in value.split(",") if item.strip()]
        else:
            raw[field] = value
    return raw


def load_config(config_type: type[C], environ: Mapping[str, str]) -> C:
    """Build `config_type` from `environ`; raise `ConfigError` naming the first bad variable.

    A field whose type is itself a Struct reads its fields from `ARGUS_<FIELD>_<SUBFIELD>`.
    """
    raw = _read_raw(config_type, environ, PREFIX)
    try:
        return msgspec.convert(raw, type=config_type, strict=False)
    except msgspec.ValidationError as exc:
        raise _config_error(str(exc)) from exc


def _config_error(message: str) -> ConfigError:
    problem, _, where = message.partition(" - at `")
    path = [part for part in where.rstrip("`").split(".")[1:] if part and not part.startswith("[")]
    missing = _MISSING_RE.search(problem)
    if missing:
        path.append(missing.group(1))
        problem = "is required but not set"
    variable = PREFIX + "_".join(path).upper() if path else PREFIX + "*"
    return ConfigError(variable, problem)


def _all_names(config_type: type[msgspec.Struct], prefix: str) -> set[str]:
    names: set[str] = set()
    for field, tp in _field_types(config_type).items():
        var = prefix + field.upper()
        if _is_struct(tp):
            names |= _all_names(_unwrap(tp), var + "_")
        else:
            names |= {var, var + "_FILE"}
    return names


def variables(config_type: type[msgspec.Struct]) -> list[str]:
    """Every environment variable a config reads (without the `_FILE` variants), for docs and manifests."""
    return sorted(name for name in _all_names(config_type, PREFIX) if not name.endswith("_FILE"))


def unknown_variables(config_type: type[msgspec.Struct], environ: Mapping[str, str]) -> list[str]:
    """ARGUS_ variables that this config does not read: usually a typo worth a warning."""
    known = _all_names(config_type, PREFIX)
    return sorted(k for k in environ if k.startswith(PREFIX) and k not in known)

"""Policies by name, from the ``gpusim.policies`` entry-point group (``scheduler.fifo``, ``placer.random``).

A user's own package plugs in a policy exactly like the built-ins: declare an entry point
``"scheduler.my-policy" = "mypkg.module:MyScheduler"`` in its pyproject.toml. A policy instance can
also be passed straight to ``Simulation`` without registering anything.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from sim.contracts import Policy
from sim.errors import ConfigError, UnknownNameError, did_you_mean

ENTRY_POINT_GROUP = "gpusim.policies"


@lru_cache(maxsize=1)
def _entry_points() -> dict[tuple[str, str], Any]:
    found = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        kind, _, name = ep.name.partition(".")
        found[(kind, name)] = ep
    return found


def available(kind: str) -> list[str]:
    """Registered policy names of one kind (``scheduler``, ``placer``, ...)."""
    return sorted(name for k, name in _entry_points() if k == kind)


def policy_class(kind: str, name: str) -> type[Policy]:
    """The class registered as ``kind.name``; the error lists the valid names."""
    ep = _entry_points().get((kind, name))
    if ep is None:
        valid = available(kind)
        if not valid:
            raise UnknownNameError(kind, name, ["(none registered: is gpusim installed, e.g. pip install -e .?)"])
        raise UnknownNameError(kind, name, valid)
    cls = ep.load()
    if not (isinstance(cls, type) and issubclass(cls, Policy)) or cls.kind != kind:
        raise ConfigError(f"entry point {kind}.{name} -> {ep.value} is not a {kind} policy class")
    return cls


def create(kind: str, spec: str | Mapping[str, Any] | Policy, *, where: str = "policy") -> Policy:
    """Build a policy from a name or a mapping ``{name: ..., param: value}``; an instance is copied, so
    state a policy keeps during a run never leaks into another run."""
    if isinstance(spec, Policy):
        if spec.kind != kind:
            raise ConfigError(f"{where}: expected a {kind} policy, got a {spec.kind} ({type(spec).__name__})")
        return copy.deepcopy(spec)
    if isinstance(spec, str):
        name, params = spec, {}
    elif isinstance(spec, Mapping):
        if "name" not in spec:
            raise ConfigError(f"{where}: a mapping must name the {kind} with key 'name'")
        params = {k: v for k, v in spec.items() if k != "name"}
        name = spec["name"]
    else:
        raise ConfigError(f"{where}: expected a {kind} name or mapping, got {type(spec).__name__}")
    cls = policy_class(kind, name)
    fields = cls.parameters()
    kwargs = {}
    for key, value in params.items():
        if key not in fields:
            raise ConfigError(f"{where}.{key}: {kind} {name!r} has no parameter {key!r}"
                              f"{did_you_mean(key, fields)}; valid: {', '.join(fields) or '(none)'}")
        kwargs[key] = _coerce(value, fields[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {kind} {name!r}: {exc}") from exc


def _coerce(value: Any, field: dataclasses.Field[Any], where: str) -> Any:
    """Match a config value to the parameter's default type (int -> float, list -> tuple)."""
    default = field.default if field.default is not dataclasses.MISSING else None
    if default is None and field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, tuple) and isinstance(value, (list, tuple)):
        return tuple(float(v) if isinstance(v, int) and not isinstance(v, bool) and default
                     and isinstance(default[0], float) else v for v in value)
    if not isinstance(value, type(default)) or isinstance(value, bool) != isinstance(default, bool):
        raise ConfigError(f"{where}: expected {type(default).__name__}, got {value!r}")
    return value

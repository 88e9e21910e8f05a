"""Policies by name, from the ``gpusim.policies`` entry-point group (``scheduler.fifo``, ``placer.random``).

A user's own package plugs in a policy exactly like the built-ins: declare an entry point
``"scheduler.my-policy" = "mypkg.module:MyScheduler"`` in its pyproject.toml. In code (a notebook, a script),
``register(MyScheduler)`` makes its name usable in configs, sweeps and the CLI of that process. A policy instance
can also be passed straight to ``Simulation`` without registering anything.

A plug-in cannot break the others: one that fails to import is named (entry point and package) when it is
used, and only then; one that takes a built-in's name (the built-in keeps it) or declares a kind not in
``KINDS`` (ignored) gives a ``PluginWarning`` when the entry points are first read, and ``problems()`` lists them.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import warnings
from collections.abc import Mapping
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sim.errors import ConfigError, UnknownNameError, did_you_mean
from sim.training.contracts import Policy

ENTRY_POINT_GROUP = "gpusim.policies"

CONTRACTS: Mapping[str, str] = MappingProxyType({
    "scheduler": "sim.Scheduler", "placer": "sim.Placer", "router": "sim.serving.contracts.Router",
    "autoscaler": "sim.serving.contracts.Autoscaler", "colocation": "sim.serving.contracts.Colocation",
    "tenant_order": "sim.training.contracts.TenantOrder"})
"""Each policy kind and the class its policies subclass."""

KINDS: tuple[str, ...] = tuple(CONTRACTS)
"""The policy kinds, in the order ``gpusim policies`` lists them; an entry point is named ``KIND.NAME``."""

BUILTIN_PACKAGE = "gpusim"
"""The distribution whose entry points are the built-in policies."""


class PluginWarning(UserWarning):
    """A plug-in's entry point was left out or lost its name to a built-in; the message names both."""


def _package(ep: EntryPoint) -> str:
    """The distribution (package) that declares ``ep``, or ``"unknown package"``."""
    dist = getattr(ep, "dist", None)
    name = getattr(dist, "name", None) if dist is not None else None
    return str(name) if name else "unknown package"


def _builtin(ep: EntryPoint) -> bool:
    return _package(ep).lower().replace("_", "-") == BUILTIN_PACKAGE


def _describe(ep: EntryPoint) -> str:
    """``entry point scheduler.x = mypkg.mod:X of package mypkg``, for messages."""
    return f"entry point {ep.name} = {ep.value} of package {_package(ep)}"


@lru_cache(maxsize=1)
def _discover() -> tuple[dict[tuple[str, str], EntryPoint], tuple[str, ...]]:
    """The usable entry points by (kind, name) and the problems found reading them (each also warned once)."""
    found: dict[tuple[str, str], EntryPoint] = {}
    problems: list[str] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        kind, _, name = ep.name.partition(".")
        if kind not in KINDS:
            problems.append(f"plug-in {_describe(ep)} declares policy kind {kind!r}, which does not exist"
                            f"{did_you_mean(kind, KINDS)}; valid kinds: {', '.join(KINDS)} (ignored)")
            continue
        if not name:
            problems.append(f"plug-in {_describe(ep)} has no policy name: entry points are named KIND.NAME, e.g. "
                            f"{kind}.my-policy (ignored)")
            continue
        previous = found.get((kind, name))
        if previous is not None:
            if previous.value == ep.value and _package(previous) == _package(ep):
                continue
            if _builtin(ep) and not _builtin(previous):
                previous, ep = ep, previous
            if _builtin(previous) and not _builtin(ep):
                problems.append(f"plug-in {_describe(ep)} reuses the name of the built-in {kind} {name!r} "
                                f"({previous.value}); the built-in keeps the name: rename the plug-in's entry point")
            else:
                problems.append(f"{kind} {name!r} is registered twice: {_describe(previous)} (used) and "
                                f"{_describe(ep)} (ignored)")
            found[(kind, name)] = previous
            continue
        found[(kind, name)] = ep
    for problem in problems:
        warnings.warn(problem, PluginWarning, stacklevel=2)
    return found, tuple(problems)


def _entry_points() -> dict[tuple[str, str], EntryPoint]:
    return _discover()[0]


def problems() -> list[str]:
    """What was wrong with the entry points (a kind that does not exist, a name taken twice), one line each.
    Entry points that fail to import show only when loaded (``policy_class``)."""
    return list(_discover()[1])


def refresh() -> None:
    """Read the entry points again (after installing a plug-in in a running process)."""
    _discover.cache_clear()


_REGISTERED: dict[tuple[str, str], type[Policy]] = {}
"""Policies registered in code (``register``), by (kind, name)."""


def register(cls: type[Policy], name: str | None = None) -> type[Policy]:
    """Make policy class ``cls`` usable by ``name`` (default: ``cls.name``) in this process: configs, sweeps (their
    worker processes import the module that registers it, as they import the script) and the CLI. Usable as a
    class decorator. A name a built-in or an entry point already has, or another class registered under it, is a
    ``ConfigError`` naming both."""
    if not (isinstance(cls, type) and issubclass(cls, Policy)) or getattr(cls, "kind", None) not in KINDS:
        raise ConfigError(f"register: expected a policy class (a subclass of one of {', '.join(CONTRACTS.values())}),"
                          f" got {cls!r}")
    kind = cls.kind
    name = cls.name if name is None else name
    if not isinstance(name, str) or not name or name == Policy.name:
        raise ConfigError(f"register: {cls.__name__} needs a name (set its class attribute name, or pass name=...)")
    ep = _entry_points().get((kind, name))
    if ep is not None:
        raise ConfigError(f"register: {kind} {name!r} is already {_describe(ep)}; register {cls.__name__} under "
                          "another name")
    previous = _REGISTERED.get((kind, name))
    if previous is not None and previous is not cls and previous.__qualname__ != cls.__qualname__:
        raise ConfigError(f"register: {kind} {name!r} is already registered as {previous.__module__}."
                          f"{previous.__qualname__}; register {cls.__name__} under another name")
    _REGISTERED[(kind, name)] = cls
    return cls


def available(kind: str) -> list[str]:
    """Registered policy names of one kind (``scheduler``, ``placer``, ...): entry points (including plug-ins
    that fail to load) and classes registered in code."""
    return sorted({name for k, name in _entry_points() if k == kind} | {name for k, name in _REGISTERED if k == kind})


def _reinstall_hint(kind: str, name: str) -> str:
    """When the pyproject.toml of the working directory declares ``kind.name`` but it is not installed: say so."""
    path = Path("pyproject.toml")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
    if ENTRY_POINT_GROUP in text and re.search(rf"""["']?{re.escape(kind)}\.{re.escape(name)}["']?\s*=""", text):
        return (f"{path.resolve()} declares the entry point {kind}.{name}, but it is not installed: reinstall the "
                "package (pip install -e .) so that its entry points are registered")
    return ""


def policy_class(kind: str, name: str) -> type[Policy]:
    """The class registered as ``kind.name``; the error lists the valid names, or names the entry point and its
    package when the plug-in fails to load."""
    if (kind, name) in _REGISTERED:
        return _REGISTERED[(kind, name)]
    ep = _entry_points().get((kind, name))
    if ep is None:
        valid = available(kind)
        if not valid:
            raise UnknownNameError(kind, name, ["(none registered: is gpusim installed, e.g. pip install -e .?)"])
        raise UnknownNameError(kind, name, valid, hint=_reinstall_hint(kind, name))
    try:
        cls = ep.load()
    except Exception as exc:
        detail = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(f"{kind} {name!r} cannot be loaded: {_describe(ep)} failed to import: "
                          f"{type(exc).__name__}{': ' + detail if detail else ''}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Policy)) or cls.kind != kind:
        raise ConfigError(f"{kind} {name!r}: {_describe(ep)} is not a {kind} policy class (a subclass of "
                          f"{CONTRACTS.get(kind, 'sim.training.contracts.Policy')}), got {cls!r}")
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

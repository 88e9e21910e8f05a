"""The grid of a sweep: config keys mapped to lists of values, checked against the config schema.

Keys are dotted config paths (``policy.scheduler``, ``workload.training.interarrival.mean``); a list element
is a numeric segment (``workload.inference.services.0.arrivals.rate``). Values are plain data (numbers,
strings, booleans, null, lists and mappings), so a grid is recorded in ``manifest.json`` as it was given.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import yaml

from sim.errors import ConfigError
from sim.experiments.config import Config, load_yaml_list

Grid = dict[str, list[Any]]

FREE_FORM_KINDS = ("mapping", "policy", "any", "trace")  # config fields whose insides the schema does not list


def normalize_grid(grid: Mapping[str, Any] | None) -> Grid:
    """The grid as ``{key: [plain values]}``; every key is checked against the config schema and every value
    list must be non-empty and free of repeats."""
    if grid is None:
        return {}
    if not isinstance(grid, Mapping):
        raise ConfigError(f"grid: expected a mapping of config keys to lists of values, got {type(grid).__name__}")
    out: Grid = {}
    for key, values in grid.items():
        if not isinstance(key, str) or not key.strip():
            raise ConfigError(f"grid: keys must be dotted config keys such as 'policy.scheduler', got {key!r}")
        key = canonical_key(key)
        check_key(key)
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, (Sequence, np.ndarray, range)):
            raise ConfigError(f"grid key {key!r}: give a list of values, e.g. [{values!r}], got {values!r}")
        plain = [to_plain(v, f"grid key {key!r}") for v in values]
        if not plain:
            raise ConfigError(f"grid key {key!r}: the list of values is empty")
        seen: set[str] = set()
        for value in plain:
            token = json.dumps(value, sort_keys=True)
            if token in seen:
                raise ConfigError(f"grid key {key!r} lists the value {value!r} twice")
            seen.add(token)
        out[key] = plain
    keys = list(out)
    for a in keys:
        for b in keys:
            if a != b and b.startswith(a + "."):
                raise ConfigError(f"grid keys {a!r} and {b!r} overlap: sweep one of them (put {b.split('.')[-1]!r} "
                                  f"inside the values of {a!r})")
    return out


def canonical_key(key: str) -> str:
    """``services[0].arrivals`` -> ``services.0.arrivals``; surrounding spaces removed."""
    return re.sub(r"\[(\d+)\]", r".\1", key.strip())


def check_key(key: str) -> None:
    """Raise ``ConfigError`` naming ``key`` and the closest valid key when it is not a config path."""
    parts = key.split(".")
    if parts == ["seed"]:
        raise ConfigError("grid key 'seed': replications are seeds=N (--seeds N), derived from the root seed "
                          "(root_seed=, default: the config's seed); the seed is not a grid parameter")
    cls: type = Config
    i = 0
    while i < len(parts):
        part = parts[i]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            close = difflib.get_close_matches(part, list(fields), n=1, cutoff=0.5)
            hint = f" (did you mean {'.'.join([*parts[:i], close[0], *parts[i + 1:]])!r}?)" if close else ""
            where = f" under {'.'.join(parts[:i])}" if i else ""
            raise ConfigError(f"grid key {key!r} is not a config key{hint}; valid keys{where}: {', '.join(fields)}")
        meta = fields[part].metadata
        kind, nested = meta["kind"].rstrip("?"), meta["nested"]
        rest = parts[i + 1:]
        if not rest or kind in FREE_FORM_KINDS:
            return
        if kind == "nested":
            cls, i = nested, i + 1
            continue
        if kind == "list" and nested is not None:
            if not rest[0].isdigit():
                raise ConfigError(f"grid key {key!r}: {'.'.join(parts[:i + 1])} is a list; index it, e.g. "
                                  f"{'.'.join([*parts[:i + 1], '0', *rest])!r}")
            if len(rest) == 1:
                return
            cls, i = nested, i + 2
            continue
        raise ConfigError(f"grid key {key!r}: {'.'.join(parts[:i + 1])} is a single value ({kind}), it has no "
                          f"key {rest[0]!r}")


def set_key(data: dict[str, Any], key: str, value: Any) -> None:
    """Set dotted ``key`` to ``value`` in nested config data (copying each level it passes through); a policy
    given by name becomes ``{name: ...}`` when a parameter is set under it, as with ``--set``."""
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        child = _get(node, part, key, parts[:i + 1])
        if isinstance(child, str) and parts[0] == "policy":
            child = {"name": child}
        elif child is None:
            child = {}
        if isinstance(child, Mapping):
            child = dict(child)
        elif isinstance(child, (list, tuple)):
            child = list(child)
        else:
            raise ConfigError(f"grid key {key!r}: {'.'.join(parts[:i + 1])} is {child!r}, not a mapping or list")
        _put(node, part, child, key, parts[:i + 1])
        node = child
    _put(node, parts[-1], value, key, parts)


def _get(node: Any, part: str, key: str, path: list[str]) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, key, path)]
    return node.get(part)


def _put(node: Any, part: str, value: Any, key: str, path: list[str]) -> None:
    if isinstance(node, list):
        node[_index(node, part, key, path)] = value
    else:
        node[part] = value


def _index(node: list[Any], part: str, key: str, path: list[str]) -> int:
    where = ".".join(path[:-1])
    if not part.isdigit():
        raise ConfigError(f"grid key {key!r}: {where} is a list; index it with a number, not {part!r}")
    if int(part) >= len(node):
        raise ConfigError(f"grid key {key!r}: {where} has {len(node)} element(s) in the base config, so there is no "
                          f"index {part}")
    return int(part)


def to_plain(value: Any, where: str) -> Any:
    """``value`` as JSON/YAML-friendly data (numpy scalars and arrays, tuples become Python numbers and lists)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: values must be finite numbers, got {value!r}")
        return value
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{where}: mapping keys must be strings, got {value!r}")
        return {k: to_plain(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [to_plain(v, where) for v in value]
    raise ConfigError(f"{where}: values must be plain data (numbers, strings, booleans, null, lists, mappings) so "
                      f"the sweep can record them, got {type(value).__name__} {value!r}")


def label(value: Any) -> Any:
    """A value as a table cell: scalars as they are, lists and mappings as YAML flow text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=math.inf).strip()


def parse_grid_option(text: str) -> tuple[str, list[Any]]:
    """``KEY=V1,V2,...`` (each value a YAML scalar) or ``KEY=[V1, V2, ...]`` (a YAML flow list, for values
    holding commas: ``policy.scheduler=[{name: las, thresholds: [3600]}, fifo]``)."""
    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise ConfigError(f"--grid {text!r}: expected KEY=V1,V2,..., e.g. --grid policy.scheduler=fifo,las")
    parsed = load_yaml_list(values, f"--grid {text!r}", "quote values that hold commas, or give a YAML list: "
                            "KEY='[a, {b: 1}]'")
    return key.strip(), parsed

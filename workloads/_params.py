"""Checking numeric parameters of config mappings, and building an object from ``{KIND_KEY: kind, ...}``."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import numpy as np

from workloads._names import unknown_name
from workloads.errors import WorkloadError

T = TypeVar("T")


class BadParameter(WorkloadError):
    """A parameter is invalid; ``make_distribution`` prefixes the config path to ``key``."""

    def __init__(self, key: str, detail: str) -> None:
        self.key = key
        self.detail = detail
        super().__init__(f"{key}: {detail}")


def real(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise BadParameter(key, f"must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise BadParameter(key, f"must be finite, got {value!r}")
    return number


def positive(key: str, value: object) -> float:
    number = real(key, value)
    if number <= 0:
        raise BadParameter(key, f"must be > 0, got {value!r}")
    return number


def numbers(key: str, values: object) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise BadParameter(key, f"must be a list of numbers, got {values!r}")
    if len(values) == 0:
        raise BadParameter(key, "must not be empty")
    if isinstance(values, np.ndarray) and values.dtype.kind in "iuf":
        array = values.astype(float).ravel()
        bad = np.flatnonzero(~np.isfinite(array))
        if bad.size:
            raise BadParameter(key, f"item {bad[0]} must be finite, got {array[bad[0]]!r}")
        return tuple(array.tolist())
    return tuple(real(f"{key}[{i}]", value) for i, value in enumerate(values))


def build_from_spec(spec: object, kind_key: str, kinds: Mapping[str, Callable[[Mapping[str, object], str], T]],
                    example: str, *, where: str) -> T:
    """Build from ``{kind_key: kind, ...}`` with the builder ``kinds[kind]``; every error names ``where``."""
    if not isinstance(spec, Mapping):
        raise WorkloadError(f"{where}: expected a mapping with a {kind_key!r} key (e.g. {example}), got {spec!r}")
    if kind_key not in spec:
        raise WorkloadError(f"{where}: missing key {kind_key!r}; valid: {', '.join(sorted(kinds))}")
    kind = spec[kind_key]
    builder = kinds.get(kind) if isinstance(kind, str) else None
    if builder is None:
        raise unknown_name(kind_key, kind, sorted(kinds), where=where)
    try:
        return builder(spec, where)
    except BadParameter as exc:
        raise WorkloadError(f"{where}.{exc.key}: {exc.detail}") from None

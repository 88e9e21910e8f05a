"""What runs on a worker: one point of a sweep, from plain data to plain data.

``run_point`` is a module-level function of picklable arguments (the resolved config as a dict, the seed's
entropy and spawn key, the names of the tables to keep), so any ``concurrent.futures.Executor`` can run it:
in-process, a process pool, or a Dask cluster. It never raises for a failing run: the error comes back as a
record, and the sweep goes on with the other points.
"""

from __future__ import annotations

import json
import math
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from sim.experiments.config import load_config
from sim.experiments.scenario import run_config

TABLES = ("jobs", "requests", "timeline", "replicas", "replica_timeline", "replica_samples", "links", "accounting",
          "services", "events")
"""Per-run tables a sweep can keep for every point (``Results`` attributes)."""

WALL_CLOCK_KEYS = ("wall_seconds", "network.recompute_ms")
"""Summary keys (and prefixes) measured in wall-clock time: they go to the point's status record, never into
the result tables, which must not depend on the machine or the executor."""


def run_point(config: Mapping[str, Any], entropy: int, spawn_key: Sequence[int],
              tables: Sequence[str] = ()) -> dict[str, Any]:
    """Run one point: ``{"status": "ok" | "failed", "tables": {"summary": one-row frame, name: frame, ...},
    "timing": {...}, "error": None | {"type", "message", "traceback"}}``."""
    started = time.perf_counter()
    try:
        results = run_config(load_config(config), seed=np.random.SeedSequence(entropy, spawn_key=tuple(spawn_key)),
                             progress=False)
        summary, timing = flatten_summary(results.summary())
        out = {"summary": pd.DataFrame([summary])}
        for name in tables:
            table = getattr(results, name)
            if table is not None:
                out[name] = plain_table(table)
    except Exception as exc:
        return {"status": "failed", "tables": {}, "error": error_record(exc),
                "timing": {"wall_seconds": time.perf_counter() - started}}
    timing["point_seconds"] = time.perf_counter() - started
    return {"status": "ok", "tables": out, "timing": timing, "error": None}


def flatten_summary(summary: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(metrics, timing)``: the nested summary as dotted keys (``jobs.jct.p99``), lists as JSON text and
    nulls as NaN, with the wall-clock keys split off into ``timing``."""
    flat: dict[str, Any] = {}
    _flatten(summary, "", flat)
    timing = {k: v for k, v in flat.items() if _is_wall_clock(k)}
    return {k: v for k, v in flat.items() if not _is_wall_clock(k)}, timing


def _is_wall_clock(key: str) -> bool:
    return any(key == w or key.startswith(w + ".") for w in WALL_CLOCK_KEYS)


def _flatten(node: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            _flatten(value, f"{prefix}{key}.", out)
        return
    key = prefix[:-1]
    if isinstance(node, np.generic):
        node = node.item()
    if node is None:
        node = math.nan
    elif isinstance(node, (list, tuple)):
        node = json.dumps(node, default=str)
    out[key] = node


def plain_table(table: pd.DataFrame) -> pd.DataFrame:
    """A copy that Parquet and CSV store alike and exactly: a plain range index; text columns as ``str`` with
    missing text as ``""`` (CSV cannot tell them apart), anything else in them (a seed's ``{entropy,
    spawn_key}``) as JSON text; a text column with no value at all as a float column of NaN."""
    table = table.reset_index(drop=True).copy()
    for column in table.columns:
        values = table[column]
        if not (values.dtype == object or pd.api.types.is_string_dtype(values.dtype)):
            continue
        if len(values) and values.isna().all():
            table[column] = np.full(len(values), math.nan)
            continue
        text = ["" if _missing(v) else v if isinstance(v, str) else json.dumps(_jsonable(v), default=str)
                for v in values]
        table[column] = pd.Series(text, dtype=str, index=table.index)
    return table


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (str, list, tuple, dict, np.ndarray)):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def error_record(exc: BaseException) -> dict[str, str]:
    """Type, message and traceback of an exception, as plain strings."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"type": f"{type(exc).__module__}.{type(exc).__qualname__}", "message": str(exc), "traceback": text}

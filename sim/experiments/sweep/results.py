"""A sweep's results, read from its directory as tidy pandas tables.

Every table starts with the columns ``point`` (the point's id), one column per grid key (named by the key,
e.g. ``policy.scheduler``; list and mapping values as YAML flow text) and ``replication`` (the seed index),
so results of any sweep are a ``groupby`` away from a comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.experiments.sweep.grid import label
from sim.experiments.sweep.points import Point, make_points
from sim.experiments.sweep.stats import aggregate
from sim.experiments.sweep.store import Store

STATUSES = ("ok", "failed", "died", "damaged", "missing")


@dataclass(frozen=True)
class RunReport:
    """What one ``Experiment.run`` did: points run now, skipped (finished before), and their outcomes;
    ``damaged``: the problems (each naming its file) of finished points whose results were missing or
    unreadable, and which ran again."""

    ran: int
    skipped: int
    ok: int
    failed: int
    died: int
    not_run: int
    stopped: str | None
    executor: str
    seconds: float
    damaged: tuple[str, ...] = ()


class Sweep:
    """The results directory of an experiment: per-point status, the summary table, kept per-run tables and
    the mean and confidence interval of every metric across replications."""

    def __init__(self, directory: str | Path, *, manifest: dict[str, Any] | None = None,
                 last_run: RunReport | None = None) -> None:
        self.store = Store.open(directory)
        if manifest is not None:
            self.store.manifest = manifest
        self.directory = Path(directory)
        self.last_run = last_run
        """The ``RunReport`` of the ``Experiment.run`` that returned this sweep (None when opened)."""

    @classmethod
    def open(cls, directory: str | Path) -> Sweep:
        """The sweep a previous run wrote to ``directory``."""
        return cls(directory)

    @property
    def manifest(self) -> dict[str, Any]:
        """``manifest.json``: resolved base config, grid, seeds, root seed, kept tables, code version."""
        return self.store.manifest

    @property
    def grid(self) -> dict[str, list[Any]]:
        return dict(self.manifest["grid"])

    @property
    def params(self) -> list[str]:
        """The grid keys, i.e. the parameter columns."""
        return list(self.manifest["grid"])

    @property
    def seeds(self) -> int:
        return int(self.manifest["seeds"])

    @cached_property
    def _points(self) -> list[Point]:
        return make_points(self.manifest["grid"], self.seeds)

    @cached_property
    def _statuses(self) -> dict[str, dict[str, Any]]:
        return self.store.statuses()

    def _ok(self) -> list[Point]:
        ok = [p for p in self._points if self._statuses.get(p.id, {}).get("status") == "ok"]
        return sorted(ok, key=lambda p: (p.grid_index, p.replication))

    def counts(self) -> dict[str, int]:
        """Points by status: ``ok``, ``failed``, ``died``, ``damaged`` (finished, but a result file is missing or
        unreadable: ``damaged()``), ``missing`` (not run yet)."""
        out = dict.fromkeys(STATUSES, 0)
        for point in self._points:
            out[self._statuses.get(point.id, {}).get("status", "missing")] += 1
        return out

    def damaged(self) -> dict[str, list[str]]:
        """The damaged points' problems, one per file, naming it (``.../g0003-r001.parquet: missing``), by point
        id: they are left out of the tables, and running the sweep again computes them again."""
        return {point.id: list(self._statuses[point.id].get("damage", []))
                for point in sorted(self._points, key=lambda p: (p.grid_index, p.replication))
                if self._statuses.get(point.id, {}).get("status") == "damaged"}

    @property
    def complete(self) -> bool:
        """Every point finished ok."""
        return self.counts()["ok"] == len(self._points)

    def points(self) -> pd.DataFrame:
        """One row per point of the sweep, in grid order: status (ok / failed / died / damaged / missing),
        attempts, wall-clock seconds of the run, error type and message (a damaged point's problems)."""
        rows = []
        for point in sorted(self._points, key=lambda p: (p.grid_index, p.replication)):
            record = self._statuses.get(point.id, {})
            error = record.get("error") or {"message": "; ".join(record.get("damage", []))}
            timing = record.get("timing") or {}
            rows.append({"status": record.get("status", "missing"), "attempts": int(record.get("attempts", 0)),
                         "wall_seconds": float(timing.get("point_seconds", timing.get("wall_seconds", math.nan))),
                         "error_type": error.get("type", ""), "error": error.get("message", ""),
                         "finished": record.get("finished", "")})
        points = sorted(self._points, key=lambda p: (p.grid_index, p.replication))
        return pd.concat([self._meta(points, [1] * len(points)), pd.DataFrame(rows)], axis=1)

    def errors(self) -> pd.DataFrame:
        """The failed, died and damaged points, with their error (``traceback`` column included)."""
        table = self.points()
        table = table[table["status"].isin(["failed", "died", "damaged"])].reset_index(drop=True)
        table["traceback"] = [(self._statuses[p].get("error") or {}).get("traceback", "") for p in table["point"]]
        return table

    def summary(self) -> pd.DataFrame:
        """One row per finished point: parameters, replication and every summary figure as a dotted column
        (``jobs.jct.mean``, ``utilization.mean``, ``requests.ttft.p99`` ...)."""
        return self.table("summary")

    def table(self, name: str = "summary") -> pd.DataFrame:
        """A kept per-run table (``jobs``, ``requests`` ... as given to ``run(tables=...)``) of every finished
        point, concatenated, with the parameter columns in front."""
        if name != "summary" and name not in self.manifest.get("tables", []):
            kept = ", ".join(self.manifest.get("tables", [])) or "none"
            raise KeyError(f"table {name!r} was not kept by this sweep (kept: summary, {kept}); run it with "
                           f"tables=({name!r},) (--tables {name})")
        parts, points, lengths = [], [], []
        for point in self._ok():
            shard = self.store.read_table(name, point.id)
            if shard is not None:
                parts.append(shard)
                points.append(point)
                lengths.append(len(shard))
        meta = self._meta(points, lengths)
        if not parts:
            return meta
        data = pd.concat(parts, ignore_index=True)
        return pd.concat([meta, data], axis=1)

    def _meta(self, points: list[Point], repeats: list[int]) -> pd.DataFrame:
        columns: dict[str, Any] = {"point": np.repeat([p.id for p in points], repeats).astype(object)}
        for i, key in enumerate(self.params):
            values = pd.Series([label(p.params[i][1]) for p in points])
            columns[key] = values.repeat(repeats).reset_index(drop=True) if len(values) else values
        columns["replication"] = np.repeat(np.array([p.replication for p in points], dtype=np.int64), repeats)
        meta = pd.DataFrame(columns)
        meta["point"] = meta["point"].astype(str)
        return meta

    def metrics(self) -> list[str]:
        """The numeric summary columns (not the run's identifiers under ``run.``, nor flags)."""
        summary = self.summary()
        skip = {"point", "replication", *self.params}
        return [c for c in summary.columns if c not in skip and not c.startswith("run.")
                and pd.api.types.is_numeric_dtype(summary[c]) and not pd.api.types.is_bool_dtype(summary[c])]

    def aggregate(self, metrics: list[str] | None = None, confidence: float = 0.95) -> pd.DataFrame:
        """Mean and Student-t confidence interval across replications of every numeric metric (or
        ``metrics``), one row per grid point and metric: the parameters, ``metric``, ``n`` (replications
        with a value), ``mean``, ``std`` and ``ci95`` (the half-width: the interval is mean +- ci95)."""
        summary = self.summary()
        chosen = self.metrics() if metrics is None else list(metrics)
        missing = [m for m in chosen if m not in summary.columns]
        if missing and not summary.empty:
            raise KeyError(f"no metric {', '.join(map(repr, missing))} in the summary; see Sweep.metrics()")
        return aggregate(summary, self.params, [m for m in chosen if m in summary.columns], confidence)

    def plot(self, metric: str, **kwargs: Any) -> Any:
        """``metric`` against the first numeric grid key with its confidence band
        (``sim.experiments.sweep.plot_sweep``)."""
        from sim.experiments.sweep.report import plot_sweep

        return plot_sweep(self, metric, **kwargs)

    def report(self, out: str | Path | None = None) -> Path:
        """Write plots and ``report.md`` (default: ``DIR/report/``); returns the report's directory."""
        from sim.experiments.sweep.report import write_report

        return write_report(self, out)

    def __repr__(self) -> str:
        counts = ", ".join(f"{v} {k}" for k, v in self.counts().items() if v)
        return f"Sweep({str(self.directory)!r}: {len(self._points)} points, {counts})"

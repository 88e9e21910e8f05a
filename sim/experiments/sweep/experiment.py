"""An experiment: a base config, a grid of overrides and a number of replications, run on any executor
into a results directory that a stopped run resumes."""

from __future__ import annotations

import copy
import datetime
import json
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sim import registry
from sim.errors import ConfigError, GpusimError, did_you_mean
from sim.experiments.config import Config, config_to_dict, load_config
from sim.experiments.sweep.errors import PointsDiedError, SweepError
from sim.experiments.sweep.executors import make_backend
from sim.experiments.sweep.grid import normalize_grid, set_key
from sim.experiments.sweep.guard import ADVICE, in_worker_import, unguarded_call
from sim.experiments.sweep.points import Point, grid_combinations, make_points, replication_seed
from sim.experiments.sweep.progress import SweepProgress
from sim.experiments.sweep.results import RunReport, Sweep
from sim.experiments.sweep.runner import run_points
from sim.experiments.sweep.store import FORMAT, Store, default_format
from sim.experiments.sweep.version import code_version
from sim.experiments.sweep.worker import TABLES, run_point

POLICY_KINDS = ("scheduler", "placer", "router", "autoscaler", "colocation")


class Experiment:
    """Every combination of ``grid`` values applied to ``base``, each run ``seeds`` times.

    ``base`` is a config file, a mapping or a ``Config`` (``overrides`` are ``key=value`` strings applied
    first, as ``--set``). ``grid`` maps dotted config keys to lists of values:
    ``{"policy.scheduler": ["fifo", "las"], "workload.training.interarrival.mean": [20, 30, 60]}``.
    Replication ``i`` runs with ``SeedSequence(root_seed, spawn_key=(i,))`` (``root_seed`` defaults to the
    config's ``seed``), the same for every grid point. Every point's config is checked here, before anything
    runs: unknown keys, wrong types and unknown policy names are ``ConfigError`` naming the key and value.
    """

    def __init__(self, base: str | Path | Mapping[str, Any] | Config | None = None,
                 grid: Mapping[str, Sequence[Any]] | None = None, *, seeds: int = 1, root_seed: int | None = None,
                 overrides: Sequence[str] = ()) -> None:
        if isinstance(base, Config):
            config = load_config(config_to_dict(base), overrides) if overrides else base
        else:
            config = load_config(base, overrides)
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ConfigError(f"seeds must be a positive integer (the number of replications), got {seeds!r}")
        root = config.seed if root_seed is None else root_seed
        if isinstance(root, bool) or not isinstance(root, int) or root < 0:
            raise ConfigError(f"root_seed must be a non-negative integer, got {root!r}")
        self.base: Config = config
        self.base_dict: dict[str, Any] = config_to_dict(config)
        self.grid = normalize_grid(grid)
        self.seeds = seeds
        self.root_seed = root
        self.points: list[Point] = make_points(self.grid, seeds)
        self._configs = [self._resolve(combo) for combo in grid_combinations(self.grid)]

    @property
    def params(self) -> list[str]:
        """The grid's keys: the parameter columns of the result tables."""
        return list(self.grid)

    def config(self, point: Point | int) -> Config:
        """The resolved config of a point (or of a grid index)."""
        index = point.grid_index if isinstance(point, Point) else point
        return load_config(self._configs[index])

    def seed(self, point: Point | int) -> Any:
        """The ``SeedSequence`` of a point (or of a replication index)."""
        return replication_seed(self.root_seed, point.replication if isinstance(point, Point) else point)

    def _resolve(self, combo: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
        data = copy.deepcopy(self.base_dict)
        where = "grid point " + ", ".join(f"{k}={v!r}" for k, v in combo) if combo else "base config"
        try:
            for key, value in combo:
                set_key(data, key, copy.deepcopy(value))
            config = load_config(data)
            for kind in POLICY_KINDS:
                _check_policy(kind, getattr(config.policy, kind))
        except GpusimError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return config_to_dict(config)

    def run(self, directory: str | Path | None = None, *, tables: Sequence[str] = (), executor: Any = None,
            workers: int | None = None, scheduler: str | None = None, retries: int = 2, overwrite: bool = False,
            progress: bool = True, storage: str | None = None,
            point_function: Callable[..., dict[str, Any]] = run_point) -> Sweep:
        """Run the points not yet finished in ``directory`` and return the ``Sweep`` of all its results.

        ``tables``: per-run tables to keep for every point (``jobs``, ``requests``, ``timeline`` ...).
        ``executor``: ``"processes"`` (default: one worker per core, or ``workers``), ``"serial"``, ``"dask"``
        (the scheduler at ``scheduler``, or a local cluster), a ``concurrent.futures.Executor`` or a
        ``distributed.Client``. A point whose worker dies runs again up to ``retries`` times; one that raises is
        recorded as failed and the others go on; points whose worker died on every attempt make it raise
        ``PointsDiedError`` at the end (its ``sweep`` holds the finished points). ``directory`` holding another
        sweep is an error unless ``overwrite``; None: a new temporary directory. Finished points whose result
        files are missing or unreadable run again (``RunReport.damaged``). ``storage``: ``parquet`` or ``csv``
        (default: parquet when pyarrow is installed). ``point_function``: a module-level function with
        ``run_point``'s signature. With worker processes (spawn, forkserver), a script must run its sweep under
        ``if __name__ == "__main__":``; without, this is a ``SweepError`` before anything runs.
        """
        if in_worker_import():  # a worker importing an unguarded script again: say so once, and stop quietly
            print(f"gpusim sweep: a worker process imported the main script again and reached the sweep; "
                  f"{ADVICE}", file=sys.stderr)
            raise SystemExit(1)
        names = _check_tables(tables)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"retries must be a non-negative integer, got {retries!r}")
        if storage not in (None, "parquet", "csv"):
            raise ConfigError(f"storage must be parquet or csv, got {storage!r}")
        if storage == "parquet" and default_format() != "parquet":
            raise ConfigError("storage='parquet' needs pyarrow: pip install 'gpusim[parquet]' (or pyarrow)")
        backend = make_backend(executor, workers=workers, scheduler=scheduler)
        where = unguarded_call() if backend.reimports_main else None
        if where is not None:
            raise SweepError(f"{where[0]}, line {where[1]}, runs the sweep when the script is imported, and executor "
                             f"{backend.describe()!r} starts worker processes that import it again: each would start "
                             f"the same sweep; {ADVICE}")
        path = Path(tempfile.mkdtemp(prefix="gpusim-sweep-")) if directory is None else Path(directory)
        now = _now()
        manifest = {
            "format": FORMAT, "created": now, "updated": now, "base_config": self.base_dict, "grid": self.grid,
            "seeds": self.seeds, "root_seed": self.root_seed, "tables": names, "storage": storage or default_format(),
            "points": len(self.points), "code": code_version(),
        }
        started = time.perf_counter()
        with Store.create(path, json.loads(json.dumps(manifest)), overwrite=overwrite) as store:
            statuses = store.statuses()
            todo = [p for p in self.points if statuses.get(p.id, {}).get("status") != "ok"]
            prior = {p.id: int(statuses.get(p.id, {}).get("attempts", 0)) for p in todo}
            damaged = tuple(f"{p.id}: {problem}" for p in todo for problem in statuses.get(p.id, {}).get("damage", []))
            deaths: list[tuple[Point, dict[str, Any]]] = []

            def task(point: Point) -> tuple[Any, ...]:
                return self._configs[point.grid_index], self.root_seed, (point.replication,), names

            def finish(point: Point, status: str, attempts: int, payload: dict[str, Any]) -> None:
                if status == "died":
                    deaths.append((point, payload.get("error") or {}))
                shards = payload.get("tables", {}) if status == "ok" else {}
                store.write_point(point.id, shards, {
                    "point": point.id, "grid_index": point.grid_index, "replication": point.replication,
                    "params": point.overrides, "status": status, "attempts": prior[point.id] + attempts,
                    "error": payload.get("error"), "timing": payload.get("timing", {}), "finished": _now(),
                    "executor": backend.describe(), "tables": sorted(shards), "code": code_version()})

            counts = run_points(todo, backend, point_function, task, finish, retries=retries,
                                progress=SweepProgress(len(todo), enabled=progress))
            report = RunReport(ran=len(todo) - counts.not_run, skipped=len(self.points) - len(todo), ok=counts.ok,
                               failed=counts.failed, died=counts.died, not_run=counts.not_run, stopped=counts.stopped,
                               executor=backend.describe(), seconds=time.perf_counter() - started,
                               damaged=damaged)
            manifest = store.manifest
        sweep = Sweep(path, manifest=manifest, last_run=report)
        if deaths:
            point, error = deaths[0]
            cause = str(error.get("message", "")).rstrip(".")
            stopped = f"; {counts.not_run} not run ({counts.stopped})" if counts.not_run else ""
            raise PointsDiedError(
                f"{counts.died} of {len(todo)} points died: their worker process ended before returning (a crash, "
                f"the out-of-memory killer, a lost node){stopped}. The first, {point.id} ({point.describe()}): "
                f"{cause}. The finished points are kept in {str(path)!r} (this error's .sweep, or Sweep.open(DIR)); "
                f"Sweep.errors() lists the dead ones, and running the sweep again retries them",
                sweep, counts.died)
        return sweep


def _check_policy(kind: str, spec: Any) -> None:
    registry.create(kind, spec, where=f"policy.{kind}")


def _check_tables(tables: Sequence[str] | str) -> list[str]:
    if isinstance(tables, str):
        tables = [t.strip() for t in tables.split(",") if t.strip()]
    names = []
    for name in tables:
        if name not in TABLES:
            raise ConfigError(f"unknown table {name!r}{did_you_mean(str(name), TABLES)}; valid: {', '.join(TABLES)} "
                              f"(the summary is always kept)")
        if name not in names:
            names.append(name)
    return sorted(names)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

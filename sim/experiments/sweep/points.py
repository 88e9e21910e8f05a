"""The points of a sweep (grid combination x replication) and the seed of each.

Replication ``i`` of every grid point runs with ``SeedSequence(root, spawn_key=(i,))``: a point's result
depends only on its config and ``(root, i)``, never on the order points run in, and all grid points of one
replication share their workload (common random numbers across the policies compared).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.experiments.sweep.grid import Grid


@dataclass(frozen=True)
class Point:
    """One run of a sweep: the ``grid_index``-th combination of the grid values, replication ``replication``."""

    grid_index: int
    replication: int
    params: tuple[tuple[str, Any], ...]

    @property
    def id(self) -> str:
        """Stable name of the point in the results directory, e.g. ``g0003-r001``."""
        return f"g{self.grid_index:04d}-r{self.replication:03d}"

    @property
    def overrides(self) -> dict[str, Any]:
        """The grid values of this point, by config key."""
        return dict(self.params)

    def describe(self) -> str:
        """``policy.scheduler=las, workload.training.jobs=200, replication 1``."""
        values = [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in self.params]
        return ", ".join([*values, f"replication {self.replication}"])


def grid_combinations(grid: Grid) -> list[tuple[tuple[str, Any], ...]]:
    """Every combination of the grid's values, the last key varying fastest; one empty combination for an
    empty grid."""
    keys = list(grid)
    return [tuple(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def make_points(grid: Grid, seeds: int) -> list[Point]:
    """The points in the order they are submitted: replication by replication (every grid point of
    replication 0 first), so a stopped sweep has whole replications to compare."""
    combos = grid_combinations(grid)
    return [Point(g, r, combo) for r in range(seeds) for g, combo in enumerate(combos)]


def replication_seed(root: int, replication: int) -> np.random.SeedSequence:
    """The seed of replication ``replication``: ``SeedSequence(root, spawn_key=(replication,))``."""
    return np.random.SeedSequence(root, spawn_key=(replication,))

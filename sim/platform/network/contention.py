"""Network contention: one rate factor per job, weighted max-min fair over shared links, solved incrementally.

Model. Links have ids ``0 .. L-1`` and capacities in bytes/s. A running job ``j`` registers a weight
``w_j > 0`` (the share of its step spent in exposed communication) and, for each link ``l`` it crosses, a
demand ``d_jl > 0``: the bytes/s it pushes over ``l`` at its uncontended speed. The solver gives each job
one rate factor ``x_j`` in ``(0, 1]``, the fraction of its uncontended communication speed it gets, so
that it pushes ``x_j * d_jl`` over every link it crosses and no link carries more than its capacity.

Fairness. Each job's *level* is ``x_j / g_j`` with a growth rate ``g_j``:

- ``fairness="bandwidth"`` (default): ``g_j = w_j / D_j``, where ``D_j`` is the job's largest demand over
  its *contended* links (links whose summed demand exceeds their capacity). The level is then the
  bandwidth the job gets on its heaviest contended link per unit of weight, so on one link the capacity is
  split by weight in bytes/s, and a job that needs less than its weighted share keeps ``x = 1`` and leaves
  the rest to the others.
- ``fairness="rate"``: ``g_j = w_j``. The level is the rate factor per unit of weight: jobs on a
  bottleneck are slowed by the same factor (weighted) whatever their demands.

The allocation is the unique feasible ``x`` in which every job with ``x_j < 1`` crosses a saturated link on
which no job has a higher level (weighted max-min fairness of the levels; it lexicographically maximizes
the sorted levels). It is computed by progressive filling: all levels rise together, ``x_j = g_j * t``; a
job reaching ``x_j = 1`` freezes there; when a link saturates, every job still growing on it freezes; the
others keep growing. Consequences (tested): no job exceeds its uncontended rate, no link its capacity,
every slowed job crosses a saturated link (Pareto efficiency), jobs that share no link through any chain
of contended links never affect each other, and the result does not depend on insertion order.

Incremental solving. Links whose summed demand is within capacity can never saturate, so they neither
constrain nor connect jobs. Jobs connected through contended links form components that are solved
independently; :meth:`ContentionSolver.update` re-solves only the components that contain a job added
since the last update, or a job on a link that is or was contended and that an added or removed job
crosses or whose capacity changed (:meth:`ContentionSolver.set_capacity`), and returns only the jobs whose
rate changed. Each component is solved in a canonical order (sorted job ids), so its rates are a function of
its jobs and its links' capacities alone: incremental and from-scratch solves agree bit for bit.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from sim.errors import ConfigError

__all__ = ["ContentionSolver", "UpdateStats"]

Fairness = Literal["bandwidth", "rate"]

# A link is saturated (and the capacity check passes) within this relative tolerance.
SATURATION_RTOL = 1e-9
# Decremented growth sums are recomputed exactly once they cancel down to this fraction of their start.
_CANCELLATION = 1e-6


@dataclass(frozen=True, eq=False)
class _Job:
    links: tuple[int, ...]
    demands: tuple[float, ...]
    weight: float
    link_array: np.ndarray
    demand_array: np.ndarray


@dataclass(frozen=True)
class UpdateStats:
    """What the last :meth:`ContentionSolver.update` re-solved: components, their jobs and contended links."""

    components: int = 0
    jobs: int = 0
    links: int = 0


class ContentionSolver:
    """Job-level weighted max-min sharing of link capacity; see the module docstring for the definition.

    ``link_capacity[l]`` is link ``l``'s capacity in bytes/s. Register running jobs with :meth:`add`, drop
    them with :meth:`remove`, then call :meth:`update` to re-solve what changed.
    """

    def __init__(self, link_capacity: np.ndarray | Sequence[float], *, fairness: Fairness = "bandwidth") -> None:
        capacity = np.array(link_capacity, dtype=float)
        if capacity.ndim != 1:
            raise ConfigError(f"contention: link_capacity must be one-dimensional, got shape {capacity.shape}")
        bad = np.flatnonzero(~(np.isfinite(capacity) & (capacity > 0)))
        if bad.size:
            link = int(bad[0])
            raise ConfigError(f"contention: link {link} has capacity {capacity[link]!r}; "
                              "capacities must be positive and finite bytes/s")
        if fairness not in ("bandwidth", "rate"):
            raise ConfigError(f"contention: fairness must be 'bandwidth' or 'rate', got {fairness!r}")
        capacity.flags.writeable = False
        self.link_capacity = capacity
        self.fairness: Fairness = fairness
        self._cap: list[float] = capacity.tolist()
        self._jobs: dict[Hashable, _Job] = {}
        self._link_jobs: list[dict[Hashable, float]] = [{} for _ in self._cap]
        self._contended: list[bool] = [False] * len(self._cap)
        self._contended_mask = np.zeros(len(self._cap), dtype=bool)
        self._rates: dict[Hashable, float] = {}
        self._load = np.zeros(len(self._cap))  # bytes/s on each link at the current rates, kept incrementally
        self._added: set[Hashable] = set()
        self._touched: set[int] = set()
        self.last_update = UpdateStats()

    # ------------------------------------------------------------------ registration

    def add(self, job_id: Hashable, links: Iterable[int], demands: Sequence[float] | float, weight: float) -> None:
        """Register ``job_id`` crossing ``links``, pushing ``demands`` bytes/s over each (one value: all alike).

        The job gets a rate at the next :meth:`update`. Raises ``ConfigError`` naming the job (and the link) on
        a duplicate job id, an unknown or repeated link, or a demand or weight that is not positive and finite.
        """
        if job_id in self._jobs:
            raise ConfigError(f"contention: job {job_id!r} is already registered")
        link_ids: list[int] = []
        for raw in links:
            try:
                link = operator.index(raw)
            except TypeError:
                raise ConfigError(f"contention: job {job_id!r}: link id {raw!r} is not an integer") from None
            if not 0 <= link < len(self._cap):
                raise ConfigError(f"contention: job {job_id!r}: unknown link {link} "
                                  f"(links are 0..{len(self._cap) - 1})")
            link_ids.append(link)
        if len(set(link_ids)) != len(link_ids):
            repeated = next(link for link in link_ids if link_ids.count(link) > 1)
            raise ConfigError(f"contention: job {job_id!r}: link {repeated} is given twice")
        if isinstance(demands, (Sequence, np.ndarray)) and not isinstance(demands, (str, bytes)):
            values = list(demands)
            if len(values) != len(link_ids):
                raise ConfigError(f"contention: job {job_id!r}: {len(values)} demands for {len(link_ids)} links")
        else:
            values = [demands] * len(link_ids)
        checked: list[float] = []
        for link, value in zip(link_ids, values, strict=True):
            demand = _positive(value)
            if demand is None:
                raise ConfigError(f"contention: job {job_id!r}: demand on link {link} is {value!r}; "
                                  "demands must be positive and finite bytes/s")
            checked.append(demand)
        checked_weight = _positive(weight)
        if checked_weight is None:
            raise ConfigError(f"contention: job {job_id!r}: weight is {weight!r}; it must be positive and finite")
        self._jobs[job_id] = _Job(tuple(link_ids), tuple(checked), checked_weight,
                                  np.array(link_ids, dtype=np.intp), np.array(checked))
        for link, demand in zip(link_ids, checked, strict=True):
            self._link_jobs[link][job_id] = demand
        self._touched.update(link_ids)
        self._added.add(job_id)

    def remove(self, job_id: Hashable) -> None:
        """Unregister ``job_id``; the jobs it shared links with are re-solved at the next :meth:`update`."""
        job = self._jobs.pop(job_id, None)
        if job is None:
            raise KeyError(f"contention: job {job_id!r} is not registered")
        for link in job.links:
            del self._link_jobs[link][job_id]
        self._touched.update(job.links)
        self._added.discard(job_id)
        rate = self._rates.pop(job_id, None)
        if rate is not None:
            self._load[job.link_array] -= rate * job.demand_array

    def set_capacity(self, link: int, capacity: float) -> None:
        """Change ``link``'s capacity (a link failing in part, or repaired); the jobs on it are re-solved at the next
        :meth:`update` if it is contended before or after (else no rate can change). Raises ``ConfigError`` naming
        the link on an unknown id or a capacity that is not positive and finite."""
        try:
            link = operator.index(link)
        except TypeError:
            raise ConfigError(f"contention: link id {link!r} is not an integer") from None
        if not 0 <= link < len(self._cap):
            raise ConfigError(f"contention: unknown link {link} (links are 0..{len(self._cap) - 1})")
        value = _positive(capacity)
        if value is None:
            raise ConfigError(f"contention: link {link}: capacity {capacity!r} must be positive and finite bytes/s")
        array = self.link_capacity.copy()
        array[link] = value
        array.flags.writeable = False
        self.link_capacity = array
        self._cap[link] = value
        self._touched.add(link)

    # ------------------------------------------------------------------ solving

    def update(self) -> dict[Hashable, float]:
        """Re-solve what the adds and removes since the last update touch; return the jobs whose rate changed.

        Jobs added since the last update are always in the result (with their rate, 1.0 included); removed
        jobs never are. Statistics of the work done are in :attr:`last_update`.
        """
        seeds = {job for job in self._added if job in self._jobs}
        for link in self._touched:
            # A link within capacity before and after neither constrains nor connects its jobs: they keep their rates.
            was = self._contended[link]
            self._contended[link] = self._contended_mask[link] = _is_contended(self._link_jobs[link], self._cap[link])
            if was or self._contended[link]:
                seeds.update(self._link_jobs[link])
        self._touched.clear()
        changed: dict[Hashable, float] = {}
        visited: set[Hashable] = set()
        components = jobs_solved = links_solved = 0
        for seed in _canonical(seeds):
            if seed in visited:
                continue
            jobs, links = self._component(seed, visited)
            new = self._solve(jobs, links)
            components += 1
            jobs_solved += len(jobs)
            links_solved += len(links)
            for job, rate in new.items():
                old = self._rates.get(job)
                if old != rate:
                    changed[job] = rate
                    entry = self._jobs[job]
                    self._load[entry.link_array] += (rate - (old or 0.0)) * entry.demand_array
                self._rates[job] = rate
        self._added.clear()
        self.last_update = UpdateStats(components, jobs_solved, links_solved)
        return changed

    def solve_all(self) -> dict[Hashable, float]:
        """Solve every registered job from scratch (state untouched): the reference the incremental path matches."""
        contended = [_is_contended(members, cap) for members, cap in zip(self._link_jobs, self._cap, strict=True)]
        saved = self._contended, self._contended_mask
        self._contended, self._contended_mask = contended, np.array(contended, dtype=bool)
        try:
            rates: dict[Hashable, float] = {}
            visited: set[Hashable] = set()
            for seed in _canonical(self._jobs):
                if seed not in visited:
                    rates.update(self._solve(*self._component(seed, visited)))
            return rates
        finally:
            self._contended, self._contended_mask = saved

    def _component(self, seed: Hashable, visited: set[Hashable]) -> tuple[list[Hashable], list[int]]:
        """The jobs connected to ``seed`` through contended links, and those links (both sorted)."""
        visited.add(seed)
        jobs, links, stack = [seed], set(), [seed]
        while stack:
            job = stack.pop()
            for link in self._jobs[job].links:
                if not self._contended[link] or link in links:
                    continue
                links.add(link)
                for other in self._link_jobs[link]:
                    if other not in visited:
                        visited.add(other)
                        jobs.append(other)
                        stack.append(other)
        return _canonical(jobs), sorted(links)

    def _solve(self, jobs: list[Hashable], links: list[int]) -> dict[Hashable, float]:
        """Progressive filling over one component: its jobs in canonical order and its contended links, sorted."""
        if not links:
            return dict.fromkeys(jobs, 1.0)
        nj, nl = len(jobs), len(links)
        specs = [self._jobs[job_id] for job_id in jobs]
        # Entries: one per (job, contended link), grouped by job in canonical order.
        ent_link = np.concatenate([spec.link_array for spec in specs])
        ent_d = np.concatenate([spec.demand_array for spec in specs])
        ent_job = np.repeat(np.arange(nj), [len(spec.links) for spec in specs])
        keep = self._contended_mask[ent_link]
        ent_d, ent_job = ent_d[keep], ent_job[keep]
        ent_loc = np.searchsorted(np.array(links), ent_link[keep])
        job_start = np.searchsorted(ent_job, np.arange(nj + 1))
        weight = np.array([spec.weight for spec in specs])
        # Bandwidth fairness: a job's level is its bandwidth per weight on its heaviest contended link.
        growth = weight / np.maximum.reduceat(ent_d, job_start[:-1]) if self.fairness == "bandwidth" else weight
        full = 1.0 / growth  # the level at which each job reaches x = 1
        ent_gd = growth[ent_job] * ent_d
        by_link = np.argsort(ent_loc, kind="stable")
        link_jobs = ent_job[by_link]
        link_start = np.searchsorted(ent_loc[by_link], np.arange(nl + 1))
        # Link i carries frozen[i] + rising[i] * t at level t while `unfrozen[i]` of its jobs still grow, so it
        # saturates at level (room[i] - frozen[i]) / rising[i]; room is infinite once no job grows on it.
        room = self.link_capacity[links]
        rising = np.bincount(ent_loc, weights=ent_gd, minlength=nl)
        recheck = _CANCELLATION * rising
        frozen = np.zeros(nl)
        unfrozen = np.diff(link_start)
        sat = np.empty(nl)
        by_full = np.argsort(full, kind="stable")
        full_sorted = full[by_full]
        rate = np.zeros(nj)
        done = np.zeros(nj, dtype=bool)
        level, left, next_full = 0.0, nj, 0
        with np.errstate(divide="ignore", invalid="ignore"):
            while left:
                while done[by_full[next_full]]:
                    next_full += 1
                np.divide(np.subtract(room, frozen, out=sat), rising, out=sat)
                link = int(sat.argmin())
                first_sat = float(sat[link])
                if full_sorted[next_full] <= first_sat:
                    # Freezing only delays saturations: every job reaching x = 1 before the next one freezes now.
                    last = int(full_sorted.searchsorted(first_sat, side="right"))
                    level = max(level, float(full_sorted[last - 1]))
                    freeze = by_full[next_full:last]
                    freeze = freeze[~done[freeze]]
                    x = np.ones(len(freeze))
                else:  # the link saturates: every job still growing on it freezes
                    level = max(level, first_sat)
                    freeze = link_jobs[link_start[link]:link_start[link + 1]]
                    freeze = freeze[~done[freeze]]
                    x = np.minimum(growth[freeze] * level, 1.0)
                    x[full[freeze] <= level] = 1.0
                rate[freeze] = x
                done[freeze] = True
                left -= len(freeze)
                if len(freeze) == 1:
                    first, last = job_start[freeze[0]], job_start[freeze[0] + 1]
                    touched = ent_loc[first:last]  # a job's links are distinct
                    frozen[touched] += x[0] * ent_d[first:last]
                    rising[touched] -= ent_gd[first:last]
                    unfrozen[touched] -= 1
                else:
                    entries = np.concatenate([np.arange(job_start[j], job_start[j + 1]) for j in freeze.tolist()])
                    touched = ent_loc[entries]
                    np.add.at(frozen, touched, rate[ent_job[entries]] * ent_d[entries])
                    np.subtract.at(rising, touched, ent_gd[entries])
                    np.subtract.at(unfrozen, touched, 1)
                drift = rising[touched] < recheck[touched]
                if drift.any():  # links whose jobs all froze, or sums that cancelled down: recompute exactly
                    for i in set(touched[drift].tolist()):
                        if unfrozen[i]:
                            mine = by_link[link_start[i]:link_start[i + 1]]
                            rising[i] = math.fsum(ent_gd[mine[~done[ent_job[mine]]]].tolist())
                            recheck[i] = _CANCELLATION * rising[i]
                        else:
                            room[i], rising[i], recheck[i] = np.inf, 1.0, 0.0
        return dict(zip(jobs, rate.tolist(), strict=True))

    # ------------------------------------------------------------------ queries

    def rates(self) -> dict[Hashable, float]:
        """Every registered job's rate factor as of the last :meth:`update` (jobs added since are missing)."""
        return dict(self._rates)

    def rate(self, job_id: Hashable) -> float:
        """``job_id``'s rate factor as of the last :meth:`update`."""
        return self._rates[job_id]

    def link_load(self) -> np.ndarray:
        """Bytes/s each link carries at the rates of the last :meth:`update` (kept incrementally; a copy)."""
        return np.maximum(self._load, 0.0)

    def link_load_exact(self) -> np.ndarray:
        """The same, summed afresh over every job (the reference :meth:`link_load` is checked against)."""
        load = np.zeros(len(self._cap))
        for job_id, x in self._rates.items():
            job = self._jobs[job_id]
            load[list(job.links)] += x * np.asarray(job.demands)
        return load

    @property
    def pending(self) -> bool:
        """True when adds or removes wait for an :meth:`update`."""
        return bool(self._touched or self._added)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __len__(self) -> int:
        return len(self._jobs)


def _positive(value: object) -> float | None:
    """``value`` as a float when it is a positive finite number, else None."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _is_contended(members: dict[Hashable, float], capacity: float) -> bool:
    """A link can saturate only when its jobs' summed demand exceeds its capacity."""
    return len(members) > 0 and math.fsum(members.values()) > capacity


def _canonical(jobs: Iterable[Hashable]) -> list[Hashable]:
    """Jobs in an order that depends on their ids only: sorted, or sorted by type and repr for mixed ids."""
    jobs = list(jobs)
    try:
        return sorted(jobs)  # type: ignore[type-var]
    except TypeError:
        return sorted(jobs, key=lambda job: (type(job).__name__, repr(job)))

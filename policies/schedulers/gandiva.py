"""Gandiva-style time slicing with packing, as Gavel implements it (Xiao et al., "Gandiva: Introspective Cluster
Scheduling for Deep Learning", OSDI 2018, sections 4-5: time slicing, packing, introspective unpacking; Gavel's
artifact, stanford-futuredata/gavel ``scheduler/policies/gandiva.py``, ``GandivaPolicy``, run by its round mechanism
in ``scheduler/scheduler.py``).

What Gavel's Gandiva does, and this scheduler follows, at each allocation recomputation (``RoundScheduler``: when the
set of jobs changed and ``min_reset_s`` passed; rounds of ``round_s`` in between):

1. it keeps the pairs it formed before, and breaks a pair one of whose jobs has left, or whose *combined normalised
   throughput* (each job's co-located steps/s over its alone steps/s, added up) is below ``unpack_below`` (1: the
   pair does less work per device-second packed than time-sliced);
2. if the jobs ask for no more devices than the cluster has (gang sizes added up), nothing is packed: every job is its
   own unit;
3. otherwise it pairs the unpaired jobs at random: as many tries as there are unpaired jobs, each drawing two of
   them (here from the run's ``packing`` stream: ``ClusterView.packing.rng``) and pairing them if their gangs are
   equal;
4. every unit (a single job or a pair) gets an equal share of time: on each pool, ``devices / units / gang``,
   scaled down to add up to 1 at most (Gavel's ``_get_allocation``), and the rounds lease devices to units by that
   share (a pair is one lease: both jobs on the same devices, ``Assignment.pack_with``).

Where this differs from Gavel, and why:

- the combined normalised throughput of a pair is its *worst* device type among those both jobs may use (Gavel adds
  it up over its three worker types, so a pair at 0.4 + 0.4 of its alone speed on every type counts 2.4 and is
  kept though it is slower than time slicing everywhere); a pair is unpacked below ``unpack_below`` on any type;
- step 3 skips a draw whose pair the co-location table does not measure on some device type both may use (no
  ``job_type``, an unmeasured gang, or ``[0, 0]``; Gavel pairs them and then never runs them packed on that type,
  and breaks them at the next recomputation, since their throughput there counts 0);
- a job that arrives between recomputations runs on devices the units leave idle (``fill_idle``), as in
  ``RoundScheduler``; in Gavel's simulator it waits for the next recomputation (``new_jobs_wait=True``);
- a pair kept across rounds keeps its devices; when a pair breaks, one of its jobs keeps the devices if chosen, and
  the other moves (paying the checkpoint and restore cost) or waits;
- the Gandiva paper's other mechanisms (suspend-resume at minibatch boundaries within a GPU, migration to reduce
  fragmentation, grow-shrink) are not modelled: time slicing is at round granularity, as in Gavel's version.

The cost model of a packed pair (each job at its co-located speed from Gavel's throughputs file, back to alone when
its partner leaves) is ``sim.training.packing``; the engine validates every packed start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from policies.schedulers.rounds import NEVER_RAN, Allocation, RoundScheduler, _OnPool
from sim.training.contracts import Assignment, ClusterView, Decision
from sim.training.jobs import JobView

Unit = tuple[int, ...]
"""One job id, or the two ids of a pair (smaller first)."""


@dataclass
class Gandiva(RoundScheduler):
    """Gandiva's time slicing with random packing and introspective unpacking, as Gavel implements it (module
    docstring). ``unpack_below``: a pair whose combined normalised throughput is below it is broken at the next
    recomputation (Gavel: 1). ``round_s``, ``min_reset_s``, ``global_queue``, ``fill_idle``, ``new_jobs_wait``: see
    ``RoundScheduler``."""

    name = "gandiva"
    packs = True
    unpack_below: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.unpack_below, (int, float)) and math.isfinite(self.unpack_below)
                and self.unpack_below >= 0):
            raise ValueError(f"unpack_below must be a number >= 0, got {self.unpack_below!r}")

    # ------------------------------------------------------------------ the allocation (Gavel's get_allocation)
    @staticmethod
    def combined(a: JobView, b: JobView, view: ClusterView) -> float:
        """The pair's combined normalised throughput on its worst device type among the pools both may use (0 if
        the table does not measure it on one of them, or they share no pool)."""
        book = view.packing
        pools = set(a.allowed_pools) & set(b.allowed_pools)
        if book is None or not pools:
            return 0.0
        return min(book.combined(a.spec, b.spec, view.cluster.pools[p].device) for p in sorted(pools))

    def allocate(self, jobs: list[JobView], view: ClusterView) -> Allocation:
        state = self._state
        pairs: dict[int, int] = state.setdefault("pairs", {})
        by_id = {job.job_id: job for job in jobs}
        for a, b in sorted(pairs.items()):
            if a > b or a not in pairs:
                continue
            if a not in by_id or b not in by_id:
                del pairs[a], pairs[b]
            elif self.combined(by_id[a], by_id[b], view) < self.unpack_below:
                del pairs[a], pairs[b]
                state["unpacked"] = state.get("unpacked", 0) + 1
        requested = sum(job.gpus for job in jobs)
        units: list[Unit]
        if requested <= sum(view.cluster.pool_devices) or view.packing is None:
            units = [(job.job_id,) for job in jobs]  # everything fits: no packing (the pairs are kept for later)
        else:
            rng = view.packing.rng
            unpaired = [job.job_id for job in jobs if job.job_id not in pairs]
            for _ in range(len(unpaired)):
                if len(unpaired) < 2:
                    break
                i, j = (int(k) for k in rng.choice(len(unpaired), size=2, replace=False))
                a, b = by_id[unpaired[i]], by_id[unpaired[j]]
                if a.gpus != b.gpus or self.combined(a, b, view) <= 0:
                    continue
                pairs[a.job_id], pairs[b.job_id] = b.job_id, a.job_id
                state["formed"] = state.get("formed", 0) + 1
                unpaired = [k for k in unpaired if k not in pairs]
            units = sorted({tuple(sorted((k, pairs[k]))) if k in pairs else (k,) for k in by_id})
        state["unit_of"] = {k: unit for unit in units for k in unit}
        devices = view.cluster.pool_devices
        allocation: Allocation = {}
        for unit in units:
            members = [by_id[k] for k in unit]
            pools = set.intersection(*(set(m.allowed_pools) for m in members))
            share = {p: devices[p] / len(units) / members[0].gpus for p in sorted(pools)}
            total = sum(share.values())
            if total > 1:
                share = {p: x / total for p, x in share.items()}
            for k in unit:
                allocation[k] = share
        return allocation

    def report(self) -> dict[str, float]:
        """``RoundScheduler.report``, plus ``pairs_formed`` and ``pairs_unpacked`` (broken for a combined normalised
        throughput below ``unpack_below``)."""
        out = super().report()
        if out:
            out["pairs_formed"] = self._state.get("formed", 0)
            out["pairs_unpacked"] = self._state.get("unpacked", 0)
        return out

    # ------------------------------------------------------------------ the rounds, by unit
    def _units(self, jobs: dict[int, JobView], state: dict[str, Any]) -> list[Unit]:
        """The units now: the allocation's, less the jobs that left; jobs that came since are units of their own."""
        unit_of: dict[int, Unit] = state.get("unit_of", {})
        units = {tuple(k for k in unit_of.get(job_id, (job_id,)) if k in jobs) for job_id in jobs}
        return sorted(units)

    def _choose(self, jobs: dict[int, JobView], view: ClusterView,  # type: ignore[override]
                state: dict[str, Any]) -> list[tuple[Unit, int]]:
        """(unit, pool) for this round, in priority order (``RoundScheduler._choose``, a pair as one lease)."""
        allocation: Allocation = state["allocation"]
        ran: dict[int, dict[int, float]] = state["ran"]
        since = state["since_reset"]
        queues: list[list[tuple[float, float, int, int, Unit]]] = [[] for _ in view.cluster.pools]
        for unit in self._units(jobs, state):
            head = unit[0]
            shares = allocation.get(head, {})
            pools = set.intersection(*(set(jobs[k].allowed_pools) for k in unit))
            for pool in sorted(pools):
                share = shares.get(pool, 0.0)
                if share <= 0 and not self.fill_idle:
                    continue
                fraction = ran.get(head, {}).get(pool, 0.0) / since if since > 0 else 0.0
                priority = 0.0 if share <= 0 else share / fraction if fraction > 0 else share * NEVER_RAN
                queues[pool].append((priority, share, -head, pool, unit))
        if self.global_queue:
            order = sorted((entry for queue in queues for entry in queue), reverse=True)
        else:
            order = [entry for queue in queues for entry in sorted(queue, reverse=True)]
        left = list(view.cluster.pool_devices)
        taken: set[int] = set()
        chosen = []
        for _, _, _, pool, unit in order:
            gpus = jobs[unit[0]].gpus
            if unit[0] in taken or gpus > left[pool]:
                continue
            taken.update(unit)
            left[pool] -= gpus
            if self.new_jobs_wait and unit[0] not in allocation:
                continue  # as in Gavel's simulator (RoundScheduler.new_jobs_wait)
            chosen.append((unit, pool))
        return chosen

    def _lease(self, chosen: list[tuple[Unit, int]], running: dict[int, JobView],  # type: ignore[override]
               view: ClusterView, wake_at: float) -> Decision:
        """Keep chosen units on the devices they run on (a pair whose jobs run together, or one job of a pair that
        keeps its devices, its partner packed onto them), place the others (a pair: its first job, then the second
        packed with it), preempt the running jobs not kept."""
        trial = view.trial()
        released: set[int] = set()
        for job in running.values():  # a packed pair's devices once
            if job.job_id not in released:
                trial.release(job)
                released.add(job.job_id)
                if job.partner is not None:
                    released.add(job.partner)
        pool_of = view.cluster.pool_of_device
        kept: set[int] = set()
        holding: dict[Unit, int] = {}  # unit -> its job that keeps its devices
        reclaimed: set[tuple[int, ...]] = set()
        for unit, pool in chosen:
            for job_id in unit:
                job = running.get(job_id)
                if job is None or pool_of(job.devices[0]) != pool or job.devices in reclaimed:
                    continue
                together = len(unit) == 2 and job.partner == (unit[1] if job_id == unit[0] else unit[0])
                trial.reclaim(job)
                reclaimed.add(job.devices)
                kept.update(unit if together else (job_id,))
                holding[unit] = job_id
                break
        starts = []
        jobs = {job.job_id: job for job in view.queued} | running
        for unit, pool in chosen:
            host = holding.get(unit)
            if host is None:
                devices = trial.place(_OnPool(jobs[unit[0]], pool))
                if devices is None:
                    continue
                host = unit[0]
                starts.append(Assignment(host, devices))
            else:
                devices = running[host].devices
            for job_id in unit:
                if job_id != host and job_id not in kept:
                    starts.append(Assignment(job_id, devices, pack_with=host))
        preempt = tuple(job_id for job_id in running if job_id not in kept)
        return Decision(start=tuple(starts), preempt=preempt, wake_at=wake_at)

"""Replay of a packing run's event log (``pack`` and ``unpack`` events, ``sim.training.packing``): the pairs are well
formed and each job's work is conserved at its packed and alone speeds. ``check_run`` (``sim.policy_checks``) checks
runs in which every device holds one job; this module checks the runs of a scheduler that ``packs``."""

from __future__ import annotations

import math
from collections.abc import Sequence

from sim.errors import ConfigError
from sim.output.results import Results
from sim.platform.cluster import Cluster
from sim.policy_checks import InvariantViolation, phase_speeds
from sim.training.packing import PackingBook
from sim.training.subsystem import PreemptionCost
from workloads.jobs import TrainingJob


def _require(ok: bool, invariant: str, detail: str) -> None:
    if not ok:
        raise InvariantViolation(invariant, detail)


def check_packing(cluster: Cluster, jobs: Sequence[TrainingJob], preemption: PreemptionCost, res: Results,
                  book: PackingBook) -> dict[str, float]:
    """Replay ``res.events`` (a run with ``record_events=True``, no phases, no failures) and raise
    ``InvariantViolation`` (``pack-pair``, ``pack-work``, ``device-exclusive``, ``stop-running``) at the first broken
    rule: a device holds at most two jobs; a packed job joins a job running alone on exactly its devices, of the same
    gang, whose pair ``book`` measures on that device type; a pair ends with an ``unpack`` of the survivor just before
    its partner stops; each job's work (its speed on the pool, times its packing factor from ``book`` while packed,
    nothing during the restore after a preemption) reaches its duration exactly when it finishes and not before.
    Returns figures of the replay: ``max_jobs_per_device``, ``pairs``, ``packed_seconds`` (added over jobs)."""
    if res.events is None:
        raise ConfigError("check_packing needs the event log: run the Simulation with record_events=True")
    spec = {job.job_id: job for job in jobs}
    if any(job.phases is not None for job in jobs):
        raise ConfigError("check_packing replays jobs without phases only")
    speeds = {job.job_id: phase_speeds(cluster, job)[0] for job in jobs}
    holders: dict[int, list[int]] = {}  # device -> the jobs on it
    devices_of: dict[int, tuple[int, ...]] = {}
    partner: dict[int, int] = {}
    factor: dict[int, float] = {}
    pool_of: dict[int, int] = {}
    progress: dict[int, float] = {}  # running job -> time its progress at the current rate starts
    work: dict[int, float] = {}
    packed_since: dict[int, float] = {}
    leaving: dict[int, float] = {}  # job whose partner was unpacked: it must stop at this time
    ran: set[int] = set()
    most = pairs = 0
    packed_seconds = 0.0

    def bank(jid: int, t: float) -> None:
        start = progress[jid]
        if t > start:
            work[jid] = work.get(jid, 0.0) + (t - start) * speeds[jid][pool_of[jid]] * factor[jid]
            progress[jid] = t

    def check_not_over(jid: int, t: float) -> None:
        duration = spec[jid].duration
        _require(work.get(jid, 0.0) <= duration * (1 + 1e-6), "pack-work",
                 f"t={t}: job {jid} has done {work.get(jid, 0.0)!r} s of work, more than its {duration!r} s")

    for ev in res.events.itertuples(index=False):
        t, kind, jid, devices = float(ev.time), ev.event, int(ev.job_id), tuple(int(d) for d in ev.devices)
        if jid in leaving and kind not in ("preempt", "finish", "fail"):
            _require(False, "pack-pair", f"t={t}: job {jid} left its pair (its partner was unpacked) but did not stop")
        if kind in ("start", "pack"):
            _require(jid not in devices_of, "stop-running", f"t={t}: job {jid} starts while running")
            job = spec[jid]
            _require(len(set(devices)) == len(devices) == job.gpus, "pack-pair",
                     f"t={t}: job {jid} ({job.gpus} gpus) starts on {devices}")
            pool = cluster.pool_of_device(devices[0])
            on = {j for d in devices for j in holders.get(d, ())}
            if kind == "start":
                _require(not on, "device-exclusive", f"t={t}: job {jid} starts on {devices}, held by jobs {sorted(on)}")
                factor[jid] = 1.0
            else:
                _require(len(on) == 1, "pack-pair", f"t={t}: job {jid} is packed on {devices}, held by jobs "
                                                    f"{sorted(on)} (exactly one job alone is needed)")
                host = on.pop()
                _require(host not in partner, "pack-pair", f"t={t}: job {jid} packed with job {host}, already packed")
                _require(set(devices_of[host]) == set(devices), "pack-pair",
                         f"t={t}: job {jid} packed on {devices}, its partner {host} runs on {devices_of[host]}")
                _require(spec[host].gpus == job.gpus, "pack-pair",
                         f"t={t}: job {jid} ({job.gpus} gpus) packed with job {host} ({spec[host].gpus} gpus)")
                measured = book.factors(job, spec[host], cluster.pools[pool].device)
                _require(measured is not None, "pack-pair", f"t={t}: job {jid} packed with job {host} on "
                         f"{cluster.pools[pool].device}, a pair the co-location table does not measure there")
                assert measured is not None
                bank(host, t)
                factor[jid], factor[host] = measured
                partner[jid], partner[host] = host, jid
                packed_since[jid] = packed_since[host] = t
                pairs += 1
            for d in devices:
                holders.setdefault(d, []).append(jid)
                most = max(most, len(holders[d]))
            _require(most <= 2, "pack-pair", f"t={t}: a device holds {most} jobs")
            overhead = preemption.for_job(job) if jid in ran else 0.0
            ran.add(jid)
            devices_of[jid], pool_of[jid], progress[jid] = devices, pool, t + overhead
        elif kind == "unpack":
            _require(jid in partner, "pack-pair", f"t={t}: job {jid} is unpacked but is not packed")
            other = partner.pop(jid)
            del partner[other]
            for j in (jid, other):
                bank(j, t)
                packed_seconds += t - packed_since.pop(j)
            factor[jid] = factor[other] = 1.0
            leaving[other] = t
        elif kind in ("preempt", "finish", "fail"):
            _require(jid in devices_of, "stop-running", f"t={t}: job {jid} stops but is not running")
            _require(jid not in partner, "pack-pair",
                     f"t={t}: job {jid} stops while packed with job {partner.get(jid)}, with no unpack first")
            if jid in leaving:
                _require(leaving.pop(jid) == t, "pack-pair", f"t={t}: job {jid} stops after its pair ended")
            bank(jid, t)
            for d in devices_of.pop(jid):
                holders[d].remove(jid)
            if kind == "finish":
                duration = spec[jid].duration
                _require(math.isclose(work.get(jid, 0.0), duration, rel_tol=1e-6), "pack-work",
                         f"t={t}: job {jid} finishes having done {work.get(jid, 0.0)!r} s of its {duration!r} s")
            check_not_over(jid, t)
    _require(not leaving, "pack-pair", f"jobs {sorted(leaving)} left their pairs but never stopped")
    return {"max_jobs_per_device": float(most), "pairs": float(pairs), "packed_seconds": packed_seconds}


__all__ = ["check_packing"]

"""Check a policy against the invariants every built-in policy keeps: a test a policy author runs on their own.

Each check runs the policy on random small scenarios, generated with numpy from ``seed`` (example ``k`` of seed
``s`` is always the same scenario), replays what happened independently of the engine and stops at the first
broken invariant with a ``PolicyCheckError``: the message names the policy, the invariant, the partner policies,
and the scenario, shrunk for training scenarios to the fewest jobs that still fail, as code to paste::

    from sim.policy_checks import check_scheduler, check_placer, check_router

    report = check_scheduler(MyScheduler())        # an instance, a class, a registered name or {name:, params}
    print(report)                                  # examples, runs, partners and invariants checked
    check_scheduler({"name": "my-sched", "quantum": 60.0}, examples=100, seed=7)
    check_placer("my-placer")
    check_router(MyRouter, examples=4)

* ``check_scheduler`` runs a scheduler with every built-in placer, ``check_placer`` a placer with every built-in
  scheduler, on 1-3 pools of 1-4 nodes of 1-8 devices and up to 30 jobs (ties in arrival and duration likely,
  gangs up to 2 above the largest pool, device restrictions, throughputs, phases, preemption costs). Every run
  records its event log, which ``check_run`` replays: a device is never held by two jobs, a gang has exactly its
  size (an elastic job's: within its range) in distinct devices of one allowed pool and one node when it fits one,
  only waiting jobs start and only running ones stop, work is conserved (each run at its pool's speed, in each
  phase that phase's and for an elastic job times its gang's speedup, minus the restore overhead after a
  preemption, adds up to the duration), each phase begins exactly when the work of the one before is done, every
  job that fits an allowed pool finishes and the others are marked unschedulable, and the jobs table and timeline
  agree with the log. A second run of the same scenario and seed must give identical tables and log
  (``check_same_results``), and the jobs given to the run never change.
* ``check_router``, ``check_autoscaler`` and ``check_colocation`` run inference services (continuous batching
  or fixed service times, one or two services, bursts, scaling) next to training jobs, with the built-in
  policies of the other kinds: every request is accounted for (completed + rejected + unfinished == arrived,
  none left unanswered), a router picks only accepting replicas, a replica serves only while it holds its
  devices, no device is held by a replica and a job (or two replicas) at once, training stays off the nodes set
  aside for inference, the training invariants above hold, and the run is deterministic.
* A ``PolicyError`` (the engine refused a decision), a ``StarvationError`` or any other error during a run is a
  failure too, reported with its scenario.

The runs stop at a horizon of ``HORIZON_FACTOR`` (10) times the jobs' serial run time plus an hour, so a policy
that never lets a run end fails ``completion`` instead of hanging (built-in policies end within one serial run
time). Determinism is checked with Python's and numpy's global random states set differently before the two
runs, so a policy that draws from them instead of its ``rng`` is caught; a check leaves both states as it found
them. Nondeterminism across processes (e.g. iterating over a set of strings) is not seen.

Own scenarios (a Hypothesis strategy, a regression case) run through the same code: ``check_scenario(Scenario(
pools, jobs, preemption, seed), scheduler=..., placer=...)`` and ``check_serving_scenario``; ``check_run``
replays any run recorded with ``record_events=True``. ``gpusim check-policy POLICY [--kind KIND]`` runs the
checks from the command line (``add_command``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import itertools
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import numpy as np
import pandas as pd

from sim import registry
from sim.engine import PreemptionCost, Simulation
from sim.errors import ConfigError, GpusimError, PolicyError, StarvationError
from sim.output.results import Results
from sim.platform.cluster import Cluster, PoolSpec
from sim.platform.hardware import get_device
from sim.platform.shared_devices import EPSILON as SHARE_EPSILON
from sim.serving.contracts import Router
from sim.serving.service import ContinuousBatching, FixedService, ServiceRuntime, ServiceSpec
from sim.training.contracts import Policy
from workloads.distributions import Exponential
from workloads.jobs import Phase, TrainingJob
from workloads.models import get_model
from workloads.requests import RequestTrace

__all__ = [
    "DEFAULT_EXAMPLES", "HORIZON_FACTOR", "INVARIANTS", "CheckReport", "InvariantViolation", "PolicyCheckError",
    "Scenario", "ServingScenario", "add_command", "builtin_policies", "check_autoscaler", "check_colocation",
    "check_placer", "check_policy", "check_router", "check_run", "check_same_results", "check_scenario",
    "check_scheduler", "check_serving_run", "check_serving_scenario", "run_command", "serving_scenario",
    "training_scenario",
]

PolicySpec = str | Mapping[str, Any] | Policy | type[Policy]
"""What a check takes: a registered name, a mapping ``{"name": ..., param: value}``, a policy instance or class."""

DEFAULT_EXAMPLES: Mapping[str, int] = {"scheduler": 20, "placer": 20, "router": 10, "autoscaler": 10, "colocation": 10,
                                       "tenant_order": 10}
"""Scenarios a check runs by default, per policy kind (each with every partner policy)."""

REL = 1e-9
"""Relative tolerance of sums of float run lengths (work conservation, device-seconds)."""

INVARIANTS: Mapping[str, str] = {
    # training, replayed from the event log (check_run)
    "log-order": "the event log is in time order",
    "arrival": "each job arrives once, at its arrival time",
    "unschedulable": "a job is marked unschedulable only when no allowed pool can ever hold it",
    "start-waiting": "only a waiting job starts",
    "gang-size": "a job starts on exactly its number of distinct devices of the cluster (an elastic job on min_gpus "
                 "to max_gpus)",
    "device-exclusive": "no device is held by two jobs, or a job and a replica, at once",
    "one-pool": "a gang sits in one pool",
    "allowed-pool": "a job runs only on a pool it allows",
    "one-node": "a gang that fits in one node of its pool gets one node (unless the placer declares splits_gangs)",
    "stop-running": "only a running job is preempted or finishes",
    "capacity": "allocation never exceeds a pool's devices",
    "completion": "every job that fits an allowed pool finishes (no starvation, no run without end)",
    "work": "work is conserved: each run at its pool's speed (its phase's, times an elastic job's gang speedup), "
            "minus the restore overhead, adds up to the duration",
    "phase": "a job enters its next phase exactly when its work reaches the end of its phase, phases in order and "
             "kept across preemptions",
    "speed": "no job finishes sooner than its duration at its best speed (each phase's; an elastic job's best gang)",
    "jobs-table": "the jobs table agrees with the event log",
    "timeline": "the timeline agrees with the event log",
    # packed pairs, replayed from the event log (sim.packing_checks.check_packing)
    "pack-pair": "at most two jobs on a device: a packed job joins one job running alone, on exactly its devices, "
                 "with the same gang, a pair the co-location table measures there",
    "pack-work": "work is conserved across packing: each job at its pool's speed times its packing factor while "
                 "packed (its alone speed otherwise), minus the restore overhead, adds up to its duration",
    # every kind
    "determinism": "the same scenario and seed give identical tables and event log",
    "workload": "the policy never changes the jobs it is given",
    "valid-decisions": "the engine accepts every decision of the policy (no PolicyError)",
    "runs": "the run completes without an error",
    # serving (check_serving_run)
    "requests": "every request is accounted for: completed + rejected + unfinished == arrived, none left waiting",
    "route-accepting": "a router sends a request only to a replica that accepts requests (or -1 when none does)",
    "replica-lifetime": "a replica serves requests only once its weights are loaded and while it holds its devices",
    "replica-shape": "a replica holds devices_per_replica distinct devices in one node of its service's pool",
    "partition": "training never runs on nodes set aside for inference, and replicas run only there",
    "replica-bounds": "a service never has more than max_replicas replicas ready or provisioning",
    "autoscaler-interval": "an autoscaler's interval is a positive, finite number of seconds",
    # tenant orders (check_tenant_order)
    "quota": "under hard quotas no tenant holds more than its nominal quota in a pool",
}
"""Every invariant a check can report, by the name its error uses."""

TRAINING_INVARIANTS = (
    "log-order", "arrival", "unschedulable", "start-waiting", "gang-size", "device-exclusive", "one-pool",
    "allowed-pool", "one-node", "stop-running", "capacity", "completion", "work", "phase", "speed", "jobs-table",
    "timeline", "determinism", "workload", "valid-decisions", "runs")
SERVING_INVARIANTS = (
    "requests", "route-accepting", "replica-lifetime", "replica-shape", "device-exclusive", "partition",
    "replica-bounds", *(name for name in TRAINING_INVARIANTS if name != "device-exclusive"))


class InvariantViolation(GpusimError):
    """One run broke ``invariant`` (a key of ``INVARIANTS``); ``detail`` says where. Raised by ``check_run``,
    ``check_serving_run`` and ``check_same_results``."""

    def __init__(self, invariant: str, detail: str) -> None:
        self.invariant = invariant
        self.detail = detail
        super().__init__(f"{invariant} ({INVARIANTS.get(invariant, '?')}): {detail}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (type(self), (self.invariant, self.detail))


class PolicyCheckError(GpusimError):
    """A policy broke an invariant (or the engine refused one of its decisions) in a check's scenario.

    The message names the policy, the invariant, the partner policies and the scenario; the attributes hold
    them: ``policy`` (its label, e.g. ``scheduler 'mine'``), ``invariant`` (a key of ``INVARIANTS``),
    ``detail``, ``partners`` (e.g. ``{"placer": "first-fit"}``), ``seed`` and ``example`` (rerun it alone
    with ``check_...(policy, seed=seed, example=example)``) and ``scenario`` (a ``Scenario`` or
    ``ServingScenario``, shrunk when the check shrinks).
    """

    def __init__(self, message: str, *, policy: str = "", invariant: str = "", detail: str = "",
                 partners: Mapping[str, str] | None = None, seed: int = 0, example: int = 0,
                 scenario: Scenario | ServingScenario | None = None) -> None:
        super().__init__(message)
        self.policy = policy
        self.invariant = invariant
        self.detail = detail
        self.partners = dict(partners or {})
        self.seed = seed
        self.example = example
        self.scenario = scenario

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (str(self), self.policy, self.invariant, self.detail, self.partners, self.seed,
                                 self.example))


def _rebuild_error(message: str, policy: str, invariant: str, detail: str, partners: dict[str, str], seed: int,
                   example: int) -> PolicyCheckError:
    return PolicyCheckError(message, policy=policy, invariant=invariant, detail=detail, partners=partners,
                            seed=seed, example=example)


@dataclass(frozen=True)
class CheckReport:
    """What a check that passed did: ``examples`` scenarios, ``runs`` simulations, with ``partners`` (the
    policies of the other kinds it was paired with), checking ``invariants``, in ``seconds`` of wall time."""

    policy: str
    kind: str
    examples: int
    runs: int
    seed: int
    partners: tuple[str, ...]
    invariants: tuple[str, ...]
    seconds: float

    def __str__(self) -> str:
        return (f"{self.policy}: passed {self.examples} examples (seed {self.seed}), {self.runs} runs with "
                f"{', '.join(self.partners)}, in {self.seconds:.1f} s; invariants checked: "
                f"{', '.join(self.invariants)}")


# ----------------------------------------------------------------------------------------------- policies
def builtin_policies(kind: str) -> list[str]:
    """Names of gpusim's own policies of ``kind`` (the entry points of the gpusim package, not plug-ins')."""
    if kind not in registry.KINDS:
        raise ConfigError(f"unknown policy kind {kind!r}; valid kinds: {', '.join(registry.KINDS)}")
    names = set()
    for ep in entry_points(group=registry.ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        package = str(getattr(dist, "name", "") or "").lower().replace("_", "-")
        ep_kind, _, name = ep.name.partition(".")
        if ep_kind == kind and name and package == registry.BUILTIN_PACKAGE:
            names.add(name)
    return sorted(names)


def _resolve(kind: str, policy: PolicySpec) -> tuple[str | Mapping[str, Any] | Policy, Policy]:
    """What to give ``Simulation`` for ``policy`` (a class becomes an instance), and one instance of it (which
    also checks the name, the parameters and the kind now)."""
    if isinstance(policy, type):
        if not issubclass(policy, Policy):
            raise ConfigError(f"check: expected a {kind} policy (name, mapping, instance or class), got {policy!r}")
        try:
            policy = policy()
        except TypeError as exc:
            raise ConfigError(f"check: {policy.__name__}() cannot be built without parameters ({exc}); pass an "
                              "instance instead") from exc
    if not isinstance(policy, (str, Mapping, Policy)):
        raise ConfigError(f"check: expected a {kind} policy (name, mapping, instance or class), got {policy!r}")
    instance = registry.create(kind, policy, where=f"check {kind}")
    return policy, instance


def _label(kind: str, instance: Policy) -> str:
    words = {"colocation": "co-location"}.get(kind, kind)
    return f"{words} {instance.name or type(instance).__name__!r}"


def _spec_text(spec: Any) -> str:
    """How a policy spec reads in the code of a scenario (an instance: its repr, e.g. ``MyScheduler(x=1)``)."""
    if isinstance(spec, Mapping):
        return repr(dict(spec))
    return repr(spec)


def _partner_label(spec: Any) -> str:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        params = ", ".join(f"{k}={v!r}" for k, v in spec.items() if k != "name")
        return f"{spec.get('name')}({params})" if params else str(spec.get("name"))
    return getattr(spec, "name", "") or type(spec).__name__


# ----------------------------------------------------------------------------------------------- scenarios
DEVICE_TYPES = ("h100", "a100", "v100", "t4")
_SUBSETS: tuple[tuple[str, ...] | None, ...] = (None,) * 8 + tuple(
    tuple(t for i, t in enumerate(DEVICE_TYPES) if mask >> i & 1) for mask in range(1, 16))
_REFERENCES = (None, *DEVICE_TYPES)
_THROUGHPUTS: tuple[dict[str, float] | None, ...] = (
    (None,) * 6 + ({"h100": 3.0, "a100": 1.5}, {"a100": 1.0, "v100": 0.5, "t4": 0.25}, {"h100": 2.0}))
_PREEMPTION_S = (0.0, 1.5, 30.0)
_RESTORE_S = (0.0, 2.0, 30.0)


def _job_text(job: TrainingJob) -> str:
    """``TrainingJob(3, 1.5, 2, 100.0, allowed_devices=('a100',))``: positional fields, then the others that are
    not their default."""
    extras = []
    for f in dataclasses.fields(job)[4:]:
        value = getattr(job, f.name)
        if value != f.default:
            extras.append(f"{f.name}={value!r}")
    head = f"TrainingJob({job.job_id}, {job.arrival!r}, {job.gpus}, {job.duration!r}"
    return head + "".join(", " + e for e in extras) + ")"


def _pools_text(pools: Sequence[PoolSpec]) -> str:
    return "Cluster([" + ", ".join(f"PoolSpec({p.device!r}, nodes={p.nodes}, devices_per_node={p.devices_per_node})"
                                   for p in pools) + "])"


@dataclass(frozen=True)
class Scenario:
    """A small training scenario: pools, jobs, preemption cost and the run's seed. ``origin`` is the (seed,
    example) it was generated from (``training_scenario``), ``None`` once shrunk."""

    pools: tuple[PoolSpec, ...]
    jobs: tuple[TrainingJob, ...]
    preemption: PreemptionCost
    seed: int
    origin: tuple[int, int] | None = None

    @property
    def cluster(self) -> Cluster:
        return Cluster(list(self.pools))

    def simulation(self, *, scheduler: Any = "fifo", placer: Any = "first-fit", cluster: Cluster | None = None,
                   **options: Any) -> Simulation:
        """The ``Simulation`` of this scenario under these policies, recording its event log."""
        return Simulation(cluster or self.cluster, list(self.jobs), scheduler=scheduler, placer=placer,
                          seed=self.seed, preemption=self.preemption, record_events=True, **options)

    def describe(self) -> str:
        pools = "; ".join(f"{p.device}: {p.nodes} node{'s' * (p.nodes > 1)} x {p.devices_per_node}"
                          for p in self.pools)
        return (f"{pools}; {len(self.jobs)} job{'s' * (len(self.jobs) != 1)}; preemption checkpoint "
                f"{self.preemption.checkpoint_s:g} s + restore {self.preemption.restore_s:g} s; run seed {self.seed}")

    def code(self, scheduler: Any = "fifo", placer: Any = "first-fit", *, determinism: bool = False,
             horizon: float | None = None) -> str:
        """Python that builds and runs this scenario under these policies and replays its invariants (with
        ``determinism``: runs it twice and compares; ``horizon``: stops the run there)."""
        jobs = "".join(f"\n    {_job_text(j)}," for j in self.jobs)
        check = "check_same_results" if determinism else "check_run"
        run = (f"Simulation(cluster, jobs, scheduler={_spec_text(scheduler)}, placer={_spec_text(placer)}, "
               f"seed={self.seed}, preemption=preemption, record_events=True"
               + ("" if horizon is None else f", horizon={horizon!r}") + ").run()")
        last = (f"again = {run}\ncheck_same_results(results, again)\n" if determinism
                else "check_run(cluster, jobs, preemption, results)\n")
        return (
            "from sim import Cluster, PoolSpec, PreemptionCost, Simulation\n"
            f"from sim.policy_checks import {check}\n"
            f"from workloads import {'Phase, ' * any(j.phases for j in self.jobs)}TrainingJob\n\n"
            f"cluster = {_pools_text(self.pools)}\n"
            f"jobs = [{jobs}\n]\n"
            f"preemption = PreemptionCost({self.preemption.checkpoint_s!r}, {self.preemption.restore_s!r})\n"
            f"results = {run}\n" + last)


def _example_rng(seed: int, example: int, salt: int) -> np.random.Generator:
    if not (isinstance(seed, (int, np.integer)) and seed >= 0 and isinstance(example, (int, np.integer))
            and example >= 0):
        raise ConfigError(f"check: seed and example must be integers >= 0, got {seed!r} and {example!r}")
    return np.random.default_rng([int(seed), int(example), salt])


def _tied(rng: np.random.Generator, fresh: int, previous: list[int], p: float = 0.3) -> int:
    """``fresh``, or with probability ``p`` a value drawn before (ties are where policies disagree)."""
    if previous and rng.random() < p:
        return previous[int(rng.integers(len(previous)))]
    return fresh


def _copy(throughputs: dict[str, float] | None) -> dict[str, float] | None:
    """A job's own copy (a policy that changes one must not change the table, nor other jobs)."""
    return None if throughputs is None else dict(throughputs)


def training_scenario(seed: int = 0, example: int = 0) -> Scenario:
    """Example ``example`` of ``seed``: 1-3 pools of distinct device types, 1-4 nodes of 1-8 devices; 1-30 jobs
    whose arrivals (half-seconds up to 200 s) and durations (eighths of a second up to 500 s) are exact binary
    fractions and often tied, gangs of 1-4 or up to 2 above the largest pool, device restrictions, throughputs,
    reference devices, tenants, priorities and duration estimates, some with phases (``PHASED_SHARE``), some one-device
    jobs on a fraction of their device (``FRACTIONAL_SHARE``); a preemption cost; a run seed."""
    rng = _example_rng(seed, example, 1)
    types = [DEVICE_TYPES[i] for i in rng.permutation(len(DEVICE_TYPES))][: int(rng.integers(1, 4))]
    pools = tuple(PoolSpec(t, nodes=int(rng.integers(1, 5)), devices_per_node=int(rng.choice((1, 2, 3, 4, 4, 8, 8))))
                  for t in types)
    largest = max(p.nodes * p.devices_per_node for p in pools)
    count = int(rng.integers(1, 31)) if rng.random() < 0.7 else int(rng.integers(1, 9))
    arrivals: list[int] = []
    durations: list[int] = []
    jobs = []
    for i in range(count):
        arrival = _tied(rng, int(rng.integers(0, 401)), arrivals)
        duration = _tied(rng, int(rng.integers(1, 4001)), durations)
        arrivals.append(arrival)
        durations.append(duration)
        gpus = int(rng.integers(1, 5)) if rng.random() < 0.5 else int(rng.integers(1, largest + 3))
        estimate = None
        if rng.random() < 0.2:
            estimate = duration / 8 * float(rng.choice((0.25, 0.5, 1.0, 2.0, 4.0)))
        jobs.append(TrainingJob(
            i, arrival / 2, gpus, duration / 8, reference_device=_REFERENCES[int(rng.integers(len(_REFERENCES)))],
            allowed_devices=_SUBSETS[int(rng.integers(len(_SUBSETS)))],
            throughputs=_copy(_THROUGHPUTS[int(rng.integers(len(_THROUGHPUTS)))]),
            tenant="default" if rng.random() < 0.7 else str(rng.choice(("a", "b"))),
            priority=int(rng.choice((0, 0, 0, 1, 2))), duration_estimate=estimate))
    preemption = PreemptionCost(float(rng.choice(_PREEMPTION_S)), float(rng.choice(_RESTORE_S)))
    phased = _example_rng(seed, example, 3)  # a stream of its own: the draws above stay as they were
    jobs = [_with_phases(phased, job, duration) for job, duration in zip(jobs, durations, strict=True)]
    fractional = _example_rng(seed, example, 5)  # and another: the phases stay as they were
    jobs = [_with_fraction(fractional, job) for job in jobs]
    return Scenario(pools, tuple(jobs), preemption, int(rng.integers(0, 2**32)), origin=(int(seed), int(example)))


FRACTIONAL_SHARE = 0.2
"""Share of a training scenario's one-device jobs that ask for a fraction of their device (``TrainingJob.gpu_fraction``
0.25, 0.5 or 0.75; ``_with_fraction``), so that every scheduler and placer is checked on shared devices too."""

PHASED_SHARE = 0.15
"""Share of a training scenario's jobs given phases (``training_scenario``). No elastic jobs are generated: the
rigid schedulers run an elastic job at its ``gpus`` exactly as a rigid one, and ``pollux`` is checked on elastic
jobs in tests/test_check_run_phases_elastic.py and tests/test_elastic_jobs.py."""


def _with_phases(rng: np.random.Generator, job: TrainingJob, eighths: int) -> TrainingJob:
    """``job`` (``eighths`` of a second long), or with ``PHASED_SHARE`` the same work in 2-3 phases cut at eighths of
    a second, each with throughputs of its own (scaled) or the job's."""
    if rng.random() >= PHASED_SHARE or eighths < 2:
        return job
    count = int(rng.integers(2, 4)) if eighths >= 3 else 2
    cuts = sorted(int(c) for c in rng.choice(np.arange(1, eighths), count - 1, replace=False))
    phases = []
    for a, b in itertools.pairwise([0, *cuts, eighths]):
        throughputs = _THROUGHPUTS[int(rng.integers(len(_THROUGHPUTS)))]
        factor = float(rng.choice((0.5, 1.0, 2.0)))
        phases.append(Phase((b - a) / 8, None if throughputs is None
                            else {k: v * factor for k, v in throughputs.items()}))
    return dataclasses.replace(job, phases=tuple(phases))


def _with_fraction(rng: np.random.Generator, job: TrainingJob) -> TrainingJob:
    """``job``, or with ``FRACTIONAL_SHARE`` for a one-device job the same job on a quarter, half or three quarters of
    its device (one draw per job, whatever its gang, so that each job's draw does not depend on the others')."""
    draw, fraction = rng.random(), float(rng.choice((0.25, 0.5, 0.75)))
    if job.gpus != 1 or draw >= FRACTIONAL_SHARE:
        return job
    return dataclasses.replace(job, gpu_fraction=fraction)


def _whole(scenario: Scenario) -> Scenario:
    """``scenario`` with every job on whole devices (tenant quotas do not take fractional jobs)."""
    jobs = tuple(job if job.gpu_fraction == 1.0 else dataclasses.replace(job, gpu_fraction=1.0)
                 for job in scenario.jobs)
    return dataclasses.replace(scenario, jobs=jobs)


# ----------------------------------------------------------------------------------------------- training invariants
def _speed(job: TrainingJob, device: str, throughputs: Mapping[str, float] | None) -> float | None:
    """Documented speed of ``job`` on ``device`` relative to its reference device, given the ``throughputs`` in
    force (the job's, or a phase's); None if not allowed. As the engine works it out (``TrainingSubsystem._fit``)."""
    name = get_device(device).name
    if job.allowed_devices is not None and name not in {get_device(d).name for d in job.allowed_devices}:
        return None
    if throughputs is not None:
        tp = {get_device(k).name: v for k, v in throughputs.items()}
        if name not in tp:
            return None
        ref = get_device(job.reference_device).name if job.reference_device else None
        return tp[name] / (tp.get(ref, 1.0) if ref else 1.0)
    if job.reference_device is None:
        return 1.0
    precision = job.precision or "bf16"
    return get_device(device).peak(precision) / get_device(job.reference_device).peak(precision)


def phase_speeds(cluster: Cluster, job: TrainingJob) -> tuple[dict[int, float], ...]:
    """The pools that can ever hold ``job`` (a device type every phase allows, enough devices for its gang: the
    requested ``gpus`` of an elastic job too), with its speed on each, per phase (``phase.throughputs or
    job.throughputs``); one entry for a job without phases."""
    schedules = ([job.throughputs] if job.phases is None
                 else [phase.throughputs or job.throughputs for phase in job.phases])
    per_phase = []
    for throughputs in schedules:
        speeds = {}
        for p, pool in enumerate(cluster.pools):
            s = _speed(job, pool.device, throughputs)
            if s is not None and cluster.pool_devices[p] >= job.gpus:
                speeds[p] = s
        per_phase.append(speeds)
    common = set.intersection(*(set(speeds) for speeds in per_phase))
    return tuple({p: s for p, s in speeds.items() if p in common} for speeds in per_phase)


def allowed_pools(cluster: Cluster, job: TrainingJob) -> dict[int, float]:
    """The pools that can ever hold ``job`` (``phase_speeds``), with its speed on each (in its first phase)."""
    return phase_speeds(cluster, job)[0]


def _phase_lengths(job: TrainingJob) -> tuple[float, ...]:
    """The work of each phase of ``job`` (its duration alone for a job without phases)."""
    return (job.duration,) if job.phases is None else tuple(p.duration for p in job.phases)


def _gang_speedups(job: TrainingJob) -> list[float]:
    low, high = job.gang_range
    return [job.gang_speedup(g) for g in range(low, high + 1)]


def _seconds(job: TrainingJob, speeds: Sequence[Mapping[int, float]], pick: Callable[[Iterable[float]], float],
             default: float = math.nan) -> float:
    """Run time of ``job`` with each phase at ``pick`` (max or min) of its speeds and of its gang speedups."""
    if not all(speeds):
        return default
    gang = pick(_gang_speedups(job))
    return math.fsum(work / (pick(s.values()) * gang) for work, s in zip(_phase_lengths(job), speeds, strict=True))


def _gang_text(job: TrainingJob) -> str:
    low, high = job.gang_range
    return f"{job.gpus} gpus" if job.max_gpus is None else f"{job.gpus} gpus, elastic {low} to {high}"


def _require(ok: bool, invariant: str, detail: str | Callable[[], str]) -> None:
    if not ok:
        raise InvariantViolation(invariant, detail() if callable(detail) else detail)


def _placer_splits_gangs(res: Results) -> bool:
    """Whether the run's placer (by its registered name) declares ``splits_gangs``; False when it is not registered."""
    try:
        return bool(getattr(registry.policy_class("placer", str(res.run.get("placer"))), "splits_gangs", False))
    except GpusimError:
        return False


def _runs_text(job: TrainingJob, runs: Sequence[tuple[float, float, int, int, int]]) -> str:
    """A job's runs as (start, end, pool), with the gang where it is not the job's ``gpus`` (an elastic job)."""
    return str([(s, e, p) if g == job.gpus else (s, e, p, f"{g} gpus") for s, e, p, _, g in runs])


def _passed(work: float, target: float, t: float, due: float) -> bool:
    """Whether ``work`` done by ``t`` overshoots ``target``, the work that was done at ``due``, by more than the
    rounding of a sum of float run lengths (``REL`` of the work, or of the time)."""
    return work > target and not (math.isclose(work, target, rel_tol=REL) or math.isclose(t, due, rel_tol=REL))


def check_run(cluster: Cluster, jobs: Sequence[TrainingJob], preemption: PreemptionCost, res: Results, *,
              complete: bool = True, gangs_may_split: bool | None = None) -> None:
    """Replay a run's event log (``record_events=True``) and check every training invariant against it and against
    the jobs table and timeline; raise ``InvariantViolation`` naming the first one broken. ``complete``: the run
    ended on its own (not at a horizon), so every job must have arrived and every job that fits must finish.
    ``gangs_may_split``: skip the one-node rule (the placer declares ``splits_gangs``); None: ask the registry
    about the run's placer by name.

    The replay follows each job's work as the engine does: a run does no work during the checkpoint and restore
    overhead after a preemption, then goes at the job's speed on its pool; an elastic job (``max_gpus``) may run on
    any gang of ``gang_range``, at that speed times ``gang_speedup`` of its gang, and holds the devices of its gang
    (``device_seconds``); a job with phases goes at each phase's speed (``phase_speeds``) from one ``phase`` event to
    the next, each event due exactly when the work of its phase is done, phases in order and kept across
    preemptions. A fractional job (``gpu_fraction`` < 1) holds that share of its one device: the shares on a device
    never add up to more than one, a device held whole is never shared, and a shared device counts once as
    allocated."""
    if res.events is None:
        raise ConfigError("check_run needs the event log: run the Simulation with record_events=True")
    if gangs_may_split is None:
        gangs_may_split = _placer_splits_gangs(res)
    spec = {j.job_id: j for j in jobs}
    speeds = {j.job_id: phase_speeds(cluster, j) for j in jobs}  # per phase: pool -> speed
    pools_of = {jid: per_phase[0] for jid, per_phase in speeds.items()}
    lengths = {j.job_id: _phase_lengths(j) for j in jobs}  # the work of each phase
    events = list(res.events.itertuples(index=False))
    for a, b in itertools.pairwise(events):
        _require(a.time <= b.time, "log-order", lambda a=a, b=b: f"event {b} logged after {a}")

    holder: dict[int, int] = {}  # device -> job (held whole), or -1 (shared by fractional jobs)
    shares: dict[int, dict[int, float]] = {}  # shared device -> {fractional job: its share}
    running: dict[int, tuple[float, tuple[int, ...], int, float, float]] = {}
    # job -> (start, devices, pool, end of its restore overhead, gang speedup)
    since: dict[int, float] = {}  # running job -> start of its stretch in its current phase (start or phase event)
    phase: dict[int, int] = defaultdict(int)  # job -> the phase it is in (kept across preemptions)
    done: dict[int, float] = defaultdict(float)  # job -> work done in its current phase
    work: dict[int, float] = defaultdict(float)  # job -> work done in all
    arrived: set[int] = set()
    unschedulable: set[int] = set()
    finished: dict[int, float] = {}
    runs: dict[int, list[tuple[float, float, int, int, int]]] = defaultdict(list)  # (start, end, pool, nth, gang)
    first_start: dict[int, float] = {}
    preemptions: dict[int, int] = defaultdict(int)
    states: list[tuple[float, int, int, int]] = []  # (time, allocated, queued, running) after each event
    pool_held = [0] * len(cluster.pools)

    def advance(jid: int, t: float) -> tuple[float, float, float]:
        """(work, rate, progress from) of running job ``jid`` from the start of its current stretch to ``t``."""
        _, _, pool, restored, gang = running[jid]
        rate = speeds[jid][phase[jid]][pool] * gang
        begin = max(since[jid], restored)
        return max(0.0, t - begin) * rate, rate, begin

    for ev in events:
        t, kind, jid, devices = float(ev.time), ev.event, int(ev.job_id), tuple(ev.devices)
        _require(jid in spec, "arrival",
                 lambda jid=jid, kind=kind: f"{kind} of job {jid}, which is not in the workload")
        job = spec[jid]
        if kind == "arrive":
            _require(jid not in arrived, "arrival", f"job {jid} arrives twice (again at t={t})")
            _require(t == job.arrival, "arrival", f"job {jid} arrives at t={t}, not at its arrival {job.arrival}")
            arrived.add(jid)
        elif kind == "unschedulable":
            _require(jid in arrived, "unschedulable", f"job {jid} is marked unschedulable before it arrived")
            _require(not pools_of[jid], "unschedulable", lambda jid=jid: (
                f"job {jid} ({_gang_text(spec[jid])}) fits pools {sorted(pools_of[jid])} but was marked "
                "unschedulable"))
            unschedulable.add(jid)
        elif kind == "start":
            _require(jid in arrived and jid not in running and jid not in finished and jid not in unschedulable,
                     "start-waiting", lambda jid=jid, t=t: (
                         f"t={t}: job {jid} starts but it is " + ("not arrived" if jid not in arrived else "running"
                                                                  if jid in running else "finished" if jid in finished
                                                                  else "unschedulable")))
            low, high = job.gang_range
            _require(low <= len(devices) <= high and len(set(devices)) == len(devices), "gang-size",
                     lambda job=job, t=t, devices=devices: (
                         f"t={t}: job {job.job_id} ({_gang_text(job)}) starts on devices {devices}"))
            _require(all(0 <= d < cluster.num_devices for d in devices), "gang-size",
                     f"t={t}: job {jid} starts on devices {devices}, not all devices of the cluster")
            fraction = job.gpu_fraction
            opened = 0
            for d in devices:
                if fraction != 1.0:
                    _require(holder.get(d, -1) == -1, "device-exclusive", lambda d=d, t=t, jid=jid: (
                        f"t={t}: fractional job {jid} given device {d} while job {holder[d]} holds it whole"))
                    on = shares.setdefault(d, {})
                    opened += not on
                    on[jid] = fraction
                    _require(math.fsum(on.values()) <= 1.0 + SHARE_EPSILON, "device-exclusive",
                             lambda d=d, t=t, on=dict(on): f"t={t}: device {d} shared by jobs {on}: over one device")
                    holder[d] = -1
                    continue
                _require(d not in holder, "device-exclusive",
                         lambda d=d, t=t, jid=jid: (
                             f"t={t}: device {d} given to job {jid} while " + (
                                 f"job {holder[d]} holds it" if holder[d] != -1 else f"jobs {sorted(shares[d])} "
                                 "share it")))
                holder[d] = jid
            nodes = {cluster.device_node[d] for d in devices}
            pools = {cluster.node_pool[n] for n in nodes}
            _require(len(pools) == 1, "one-pool", f"t={t}: job {jid} spans pools {sorted(pools)}")
            pool = pools.pop()
            _require(pool in pools_of[jid], "allowed-pool", lambda pool=pool, jid=jid, t=t: (
                f"t={t}: job {jid} started on pool {pool} ({cluster.pools[pool].device}), allowed "
                f"{sorted(pools_of[jid])}"))
            if len(devices) <= cluster.pools[pool].devices_per_node and not gangs_may_split:
                _require(len(nodes) == 1, "one-node", lambda nodes=nodes, t=t, jid=jid, pool=pool, devices=devices: (
                    f"t={t}: job {jid} (a gang of {len(devices)}) split over nodes {sorted(nodes)} although a node "
                    f"of its pool has {cluster.pools[pool].devices_per_node} devices"))
            first_start.setdefault(jid, t)
            overhead = preemption.for_job(job) if runs[jid] else 0.0  # every run after the first follows a preemption
            running[jid] = (t, devices, pool, t + overhead, job.gang_speedup(len(devices)))
            since[jid] = t
            pool_held[pool] += len(devices) if fraction == 1.0 else opened
            _require(pool_held[pool] <= cluster.pool_devices[pool], "capacity",
                     f"t={t}: pool {pool} has {pool_held[pool]} devices allocated of {cluster.pool_devices[pool]}")
        elif kind == "phase":
            _require(jid in running, "phase", f"t={t}: job {jid} enters a phase, but it is not running")
            k, count = phase[jid], len(lengths[jid])
            _require(k + 1 < count, "phase", f"t={t}: job {jid} enters phase {k + 1}, but it has " + (
                "no phases" if job.phases is None else f"{count} (0 to {count - 1})"))
            gained, rate, begin = advance(jid, t)
            due = begin + (lengths[jid][k] - done[jid]) / rate
            _require(math.isclose(done[jid] + gained, lengths[jid][k], rel_tol=REL) or math.isclose(
                t, due, rel_tol=REL), "phase", lambda jid=jid, k=k, t=t, due=due, got=done[jid] + gained: (
                    f"t={t}: job {jid} enters phase {k + 1} having done {got!r} s of the {lengths[jid][k]!r} s of work "
                    f"of phase {k}, which it reaches at t={due!r}"))
            work[jid] += gained
            phase[jid], done[jid], since[jid] = k + 1, 0.0, t
        elif kind in ("preempt", "finish"):
            _require(jid in running, "stop-running", f"t={t}: {kind} of job {jid}, which is not running")
            gained, rate, begin = advance(jid, t)
            k, count = phase[jid], len(lengths[jid])
            target = lengths[jid][k]
            due = begin + (target - done[jid]) / rate
            if k + 1 < count:  # not in its last phase: it may not finish, nor pass the end of its phase unlogged
                _require(kind == "preempt", "phase",
                         f"t={t}: job {jid} finishes in phase {k} of its {count} phases (0 to {count - 1})")
                _require(not _passed(done[jid] + gained, target, t, due), "phase", lambda jid=jid, k=k, t=t, due=due: (
                    f"job {jid} reaches the end of phase {k} at t={due!r} without a phase event; it is preempted at "
                    f"t={t}"))
            elif kind == "preempt":
                _require(not _passed(done[jid] + gained, target, t, due), "work", lambda jid=jid, t=t, due=due: (
                    f"job {jid} has done all its work ({spec[jid].duration!r} s) at t={due!r} but runs on until it is "
                    f"preempted at t={t}"))
            done[jid] += gained
            work[jid] += gained
            start, held, pool, _, _ = running.pop(jid)
            closed = 0
            for d in held:
                if holder[d] == -1:
                    del shares[d][jid]
                    if shares[d]:
                        continue
                    del shares[d]
                    closed += 1
                del holder[d]
            pool_held[pool] -= closed if job.gpu_fraction != 1.0 else len(held)
            runs[jid].append((start, t, pool, len(runs[jid]), len(held)))
            if kind == "preempt":
                preemptions[jid] += 1
            else:
                finished[jid] = t
        else:
            raise InvariantViolation("log-order", f"unknown event {kind!r} in the log")
        queued = len(arrived) - len(unschedulable) - len(finished) - len(running)
        states.append((t, len(holder), queued, len(running)))

    # Every job arrived; each one either finished (it fits some allowed pool) or is unschedulable.
    if complete:
        missing = sorted(set(spec) - arrived)
        _require(not missing, "arrival", f"jobs {missing[:10]} never arrived")
        _require(not running, "completion", lambda: f"jobs {sorted(running)[:10]} still run at the end of the run")
        for jid in spec:
            if pools_of[jid]:
                _require(jid in finished, "completion", lambda jid=jid: (
                    f"job {jid} ({_gang_text(spec[jid])}, arrived at {spec[jid].arrival}) fits pools "
                    f"{sorted(pools_of[jid])} but did not finish"))
            else:
                _require(jid in unschedulable, "unschedulable",
                         f"job {jid} fits no allowed pool but was not marked unschedulable")

    # Work conservation: each run does (length - overhead) x speed (its phase's, times its gang's speedup) of work,
    # the overhead being the checkpoint + restore charged on every resume; a finished job's work is its duration.
    table = res.jobs.set_index("job_id")
    for jid, t_end in finished.items():
        job = spec[jid]
        _require(math.isclose(work[jid], job.duration, rel_tol=REL), "work", lambda jid=jid: (
            f"job {jid}: its runs {_runs_text(spec[jid], runs[jid])} do {work[jid]!r} s of work, its duration is "
            f"{spec[jid].duration!r} s"))
        row = table.loc[jid]
        # No job finishes before arrival + its run time at its best speeds (float rounding of one sum allowed).
        _require(row["finish"] - job.arrival >= _seconds(job, speeds[jid], max) * (1 - REL), "speed",
                 f"job {jid} finished at {row['finish']}, sooner than arrival + duration at its best speed")
        _require(row["first_start"] == first_start[jid] and row["finish"] == t_end, "jobs-table",
                 f"job {jid}: table says start {row['first_start']}, finish {row['finish']}; the log "
                 f"{first_start[jid]}, {t_end}")
        _require(row["queueing_delay"] == first_start[jid] - job.arrival >= 0, "jobs-table",
                 f"job {jid}: queueing_delay {row['queueing_delay']} != first start - arrival")
        _require(row["preemptions"] == preemptions[jid], "jobs-table",
                 f"job {jid}: {row['preemptions']} preemptions in the table, {preemptions[jid]} in the log")
        # overhead: the restore time spent, the whole checkpoint + restore unless a preemption cut it short
        total = preemption.for_job(job)
        spent = sum(min(total, end - start) for start, end, _, k, _ in runs[jid] if k)
        _require(math.isclose(row["overhead_seconds"], spent, rel_tol=REL, abs_tol=REL), "jobs-table",
                 f"job {jid}: overhead_seconds {row['overhead_seconds']} != {spent} from the log")
        held = sum((end - start) * gang * job.gpu_fraction for start, end, _, _, gang in runs[jid])
        _require(math.isclose(row["device_seconds"], held, rel_tol=REL, abs_tol=REL), "jobs-table",
                 f"job {jid}: device_seconds {row['device_seconds']} != {held} from the log")
        _require(row["device_type"] == cluster.pools[runs[jid][-1][2]].device and row["status"] == "finished",
                 "jobs-table", f"job {jid}: device_type {row['device_type']!r}, status {row['status']!r}")
    for jid in unschedulable:
        _require(table.loc[jid, "status"] == "unschedulable" and pd.isna(table.loc[jid, "first_start"]), "jobs-table",
                 f"job {jid}: unschedulable in the log, {table.loc[jid, 'status']!r} in the table")

    # The timeline: never more allocated than the cluster has, and each sample equals the state the log
    # gives after all events at or before its time.
    tl = res.timeline
    _require(bool((tl["allocated_devices"] <= cluster.num_devices).all() and (tl["allocated_devices"] >= 0).all()
                  and (tl["utilization"] <= 1.0).all()), "timeline", "allocation outside [0, devices]")
    after: dict[float, tuple[int, ...]] = {}  # state after the last event of each instant
    for t, *state in states:
        after[t] = tuple(state)
    previous: tuple[int, ...] = (0, 0, 0)
    changed = set()
    for t, state in after.items():
        if state != previous:
            changed.add(t)
        previous = state
    sampled = set(tl["time"])
    _require(changed <= sampled, "timeline",
             lambda: f"no timeline sample at the changes {sorted(changed - sampled)[:5]}")
    k = -1
    for sample in tl[["time", "allocated_devices", "queued_jobs", "running_jobs"]].itertuples(index=False):
        while k + 1 < len(states) and states[k + 1][0] <= sample.time:
            k += 1
        want = states[k][1:] if k >= 0 else (0, 0, 0)  # a sample before any training event: nothing yet
        got = (sample.allocated_devices, sample.queued_jobs, sample.running_jobs)
        _require(got == want, "timeline", lambda got=got, want=want, sample=sample: (
            f"at t={sample.time} the timeline has (allocated, queued, running) = {got}, the log {want}"))


TABLES = ("jobs", "events", "timeline", "requests", "replicas", "replica_timeline", "replica_samples")
"""The tables two runs of one scenario must agree on (``check_same_results``)."""


def check_same_results(first: Results, second: Results) -> None:
    """Raise ``InvariantViolation("determinism", ...)`` unless two runs have identical tables and event log."""
    for name in TABLES:
        a, b = getattr(first, name, None), getattr(second, name, None)
        if a is None and b is None:
            continue
        if a is None or b is None:
            raise InvariantViolation("determinism", f"one run has a {name} table, the other none")
        try:
            pd.testing.assert_frame_equal(a, b)
        except AssertionError as exc:
            detail = " ".join(str(exc).split())[:400]
            raise InvariantViolation("determinism", f"two runs of the same scenario and seed differ in the {name} "
                                     f"table: {detail}") from None



# ----------------------------------------------------------------------------------------------- serving
SERVING_MODEL = "llama-3.1-8b"


def _mode_text(spec: ServiceSpec) -> str:
    if isinstance(spec.mode, ContinuousBatching) and spec.model is not None:
        cache = spec.mode.prefix_cache
        pools = "" if not spec.disaggregated else ", disaggregated " + ", ".join(
            f"{role} {pool.replicas} (min {pool.min_replicas}, max {pool.max_replicas})"
            for role, pool in (("prefill", spec.prefill), ("decode", spec.decode)))  # type: ignore[union-attr]
        return f"continuous batching {spec.model.name}" + (
            f" with prefix caching ({cache.eviction}, blocks of {cache.block_tokens})"  # type: ignore[union-attr]
            if cache is not None else "") + pools
    return "fixed service"


@dataclass(frozen=True)
class ServingScenario:
    """A small scenario of inference services next to training jobs (``serving_scenario``)."""

    pools: tuple[PoolSpec, ...]
    jobs: tuple[TrainingJob, ...]
    services: tuple[ServiceSpec, ...]
    preemption: PreemptionCost
    seed: int
    origin: tuple[int, int] | None = None

    @property
    def cluster(self) -> Cluster:
        return Cluster(list(self.pools))

    def simulation(self, *, scheduler: Any = "fifo", placer: Any = "first-fit", router: Any = "round-robin",
                   autoscaler: Any = "static", colocation: Any = "shared", **options: Any) -> Simulation:
        """The ``Simulation`` of this scenario under these policies, recording its event log."""
        return Simulation(self.cluster, list(self.jobs), scheduler=scheduler, placer=placer, seed=self.seed,
                          preemption=self.preemption, record_events=True, services=list(self.services),
                          router=router, autoscaler=autoscaler, colocation=colocation, **options)

    def describe(self) -> str:
        pools = "; ".join(f"{p.device}: {p.nodes} node{'s' * (p.nodes > 1)} x {p.devices_per_node}"
                          for p in self.pools)
        services = "; ".join(
            f"{s.name}: {len(s.requests)} requests over {float(s.requests.arrival[-1]) if len(s.requests) else 0:.0f}"
            f" s, {_mode_text(s)}"
            f", {s.replicas} replica{'s' * (s.replicas > 1)} of {s.devices_per_replica} {s.device or 'any'} "
            f"(min {s.min_replicas}, max {s.max_replicas}), dispatch {s.dispatch}"
            for s in self.services)
        jobs = ", ".join(_job_text(j) for j in self.jobs) or "none"
        return f"{pools}; services: {services}; training jobs: [{jobs}]; run seed {self.seed}"

    def code(self, **policies: Any) -> str:
        """Python that rebuilds this scenario (from its seed and example), runs it under these policies and checks
        it (``check_serving_scenario``)."""
        if self.origin is None:
            raise ConfigError("this serving scenario was not made by serving_scenario(seed, example)")
        args = "".join(f", {k}={_spec_text(v)}" for k, v in policies.items())
        return ("from sim.policy_checks import check_serving_scenario, serving_scenario\n\n"
                f"scenario = serving_scenario(seed={self.origin[0]}, example={self.origin[1]})\n"
                f"check_serving_scenario(scenario{args})\n")


def serving_scenario(seed: int = 0, example: int = 0) -> ServingScenario:
    """Example ``example`` of ``seed``: an H100 pool of 2-3 nodes (sometimes an A100 pool too), one or two
    services (continuous batching of llama-3.1-8b on 1-2 devices, half of them with prefix caching and requests
    sharing a few prefixes, 30% of them with prefill and decode pools, or fixed service times; some with a shared
    queue; 0-1 minimum replicas, a few more allowed), 20-200 requests with a burst, up to 8 training jobs."""
    rng = _example_rng(seed, example, 2)
    prefixes = _example_rng(seed, example, 3)  # its own stream: the rest of the scenario is as it was before it
    split = _example_rng(seed, example, 4)  # likewise for disaggregated services
    pools = [PoolSpec("h100", nodes=int(rng.integers(2, 4)), devices_per_node=int(rng.choice((4, 8))))]
    if rng.random() < 0.5:
        pools.append(PoolSpec("a100", nodes=int(rng.integers(1, 3)), devices_per_node=4))
    model = get_model(SERVING_MODEL)
    services = []
    for s in range(1 if rng.random() < 0.7 else 2):
        horizon = float(rng.uniform(60.0, 240.0))
        times = [rng.uniform(0.0, horizon, int(rng.poisson(rng.uniform(0.1, 0.6) * horizon)) + 5)]
        if rng.random() < 0.6:  # a burst
            start, width = rng.uniform(0.0, horizon), rng.uniform(10.0, 40.0)
            times.append(rng.uniform(start, start + width, int(rng.uniform(3.0, 8.0) * width)))
        arrival = np.sort(np.concatenate(times))[:200]
        n = len(arrival)
        trace = RequestTrace(arrival=arrival, prompt_tokens=rng.integers(16, 2049, n),
                             output_tokens=rng.integers(1, 257, n))
        replicas = int(rng.integers(1, 3))
        top = None if rng.random() < 0.1 else replicas + int(rng.integers(0, 4))
        options: dict[str, Any] = {
            "replicas": replicas, "min_replicas": int(rng.integers(0, 2)), "max_replicas": top, "device": "h100",
            "load_bandwidth": float(rng.choice((4e9, 16e9)))}
        if rng.random() < 0.6:
            options |= {"model": model, "devices_per_replica": int(rng.choice((1, 1, 2)))}
            if prefixes.random() < 0.5:
                trace = _with_prefixes(trace, prefixes)
                options["mode"] = ContinuousBatching(prefix_cache={"block_tokens": int(prefixes.choice((1, 16)))})
            if split.random() < 0.3:  # prefill and decode pools
                for role in ("prefill", "decode"):
                    count = int(split.integers(1, 3))
                    options[role] = {"replicas": count, "min_replicas": int(split.integers(0, 2)),
                                     "max_replicas": count + int(split.integers(0, 3)),
                                     "devices_per_replica": options["devices_per_replica"]}
        else:
            options |= {"mode": FixedService(Exponential(float(rng.choice((0.25, 0.5, 1.0, 2.0))))),
                        "dispatch": "shared-queue" if rng.random() < 0.15 else "route"}
        services.append(ServiceSpec(f"service-{s}", trace, **options))
    jobs = []
    for i in range(int(rng.integers(0, 9))):
        pool = pools[int(rng.integers(len(pools)))]
        allowed = None if rng.random() < 0.5 or len(pools) == 1 else (pool.device,)
        smallest = min(p.devices_per_node for p in pools)
        gpus = int(rng.integers(1, (pool.devices_per_node if allowed else smallest) + 1))
        jobs.append(TrainingJob(i, int(rng.integers(0, 401)) / 2, gpus, int(rng.integers(80, 4801)) / 8,
                                allowed_devices=allowed))
    preemption = PreemptionCost(float(rng.choice(_PREEMPTION_S)), float(rng.choice(_RESTORE_S)))
    return ServingScenario(tuple(pools), tuple(jobs), tuple(services), preemption, int(rng.integers(0, 2**32)),
                           origin=(int(seed), int(example)))


def _with_prefixes(trace: RequestTrace, rng: np.random.Generator) -> RequestTrace:
    """``trace`` with some requests starting with one of four shared prefixes (a random share of their prompt)."""
    n = len(trace)
    ids = np.where(rng.random(n) < 0.7, rng.integers(0, 4, n), -1)
    tokens = np.where(ids >= 0, np.floor(rng.random(n) * trace.prompt_tokens).astype(np.int64), 0)
    return RequestTrace(arrival=trace.arrival, prompt_tokens=trace.prompt_tokens, output_tokens=trace.output_tokens,
                        prefix_id=ids, prefix_tokens=tokens)


class _GuardedRouter(Router):
    """Routes with ``inner`` and checks that the chosen replica accepts requests (``route-accepting``)."""

    def __init__(self, inner: Router) -> None:
        self.inner = inner

    def route(self, request: Any, replicas: Sequence[Any], rng: np.random.Generator) -> int:
        choice = self.inner.route(request, replicas, rng)
        if (isinstance(choice, (int, np.integer)) and not isinstance(choice, bool) and 0 <= choice < len(replicas)
                and not replicas[choice].accepting):
            state = getattr(replicas[choice], "state", "not accepting")
            raise InvariantViolation("route-accepting", f"request {request.request_id} (t={request.arrival:g}) sent "
                                     f"to replica {int(choice)}, which is {state}")
        return choice


def _guarded(router: Any) -> Router:
    inner: Router = registry.create("router", router, where="check router")  # type: ignore[assignment]
    cls = type(f"Guarded{type(inner).__name__}", (_GuardedRouter,), {"name": inner.name or type(inner).__name__})
    return cls(inner)


def _check_request_counts(runtime: ServiceRuntime, rows: pd.DataFrame | None, complete: bool) -> None:
    """Every request of the service arrived is finished, rejected (with a reason) or still waiting."""
    spec = runtime.spec
    name = spec.name
    # requests: every one arrived is finished, rejected (with a reason) or still waiting
    _require(rows is not None and len(rows) == len(spec.requests), "requests",
             f"service {name!r}: {0 if rows is None else len(rows)} rows for {len(spec.requests)} requests")
    status = rows["status"].value_counts().to_dict()
    done, rejected, waiting = (int(status.get(k, 0)) for k in ("finished", "rejected", "waiting"))
    arrived = int(runtime.log.arrived)
    _require(done + rejected + waiting == arrived, "requests",
             f"service {name!r}: completed {done} + rejected {rejected} + unfinished {waiting} != arrived "
             f"{arrived}")
    _require(set(status) <= {"finished", "rejected", "waiting", "not_arrived"}, "requests",
             f"service {name!r}: request statuses {sorted(status)}")
    if complete:
        _require(waiting == 0 and arrived == len(spec.requests), "requests",
                 f"service {name!r}: {waiting} requests unanswered and {len(spec.requests) - arrived} never "
                 "arrived when the run ended")
    bad = rows[(rows["status"] == "rejected") & (rows["reason"].astype(str) == "")]
    _require(bad.empty, "requests", lambda bad=bad, name=name: (
        f"service {name!r}: request {int(bad['request_id'].iloc[0])} rejected without a reason"))


def check_serving_run(sim: Simulation, res: Results, *, complete: bool = True) -> None:
    """Check a finished run with services (``sim`` after ``sim.run()`` returned ``res``, with ``record_events``):
    every request accounted for, replicas serving only while they hold their devices, no device held by a replica
    and a job (or two replicas) at once, training off the inference partition, replica counts within bounds, and
    every training invariant (``check_run``). ``complete``: the run ended on its own, not at a horizon."""
    cluster = sim.cluster
    requests = res.requests
    end = float(sim.end_time)
    holds: list[tuple[float, float, tuple[int, ...], str]] = []  # (from, to, devices, who)
    partition = set(getattr(sim.ledger, "partition_nodes", ()) or ())
    for s, runtime in enumerate(sim.services):
        spec = runtime.spec
        name = runtime.label  # a disaggregated service's pools: NAME/prefill and NAME/decode
        # requests: every one arrived is finished, rejected (with a reason) or still waiting
        rows = requests[requests["service"] == spec.name] if requests is not None else requests
        if runtime.role != "decode":  # a disaggregated service's requests are checked once, with its prefill pool
            _check_request_counts(runtime, rows, complete)
        # replicas: shape, and serving only once ready and while holding their devices
        for r, devices in enumerate(runtime.devices):
            nodes = {cluster.device_node[d] for d in devices}
            _require(len(devices) == spec.devices_per_replica and len(set(devices)) == len(devices) and len(nodes) == 1
                     and cluster.node_pool[next(iter(nodes))] == runtime.pool, "replica-shape",
                     f"service {name!r}: replica {r} holds devices {devices} (needs {spec.devices_per_replica} in one "
                     f"node of pool {runtime.pool})")
            if partition:
                _require(nodes <= partition, "partition", f"service {name!r}: replica {r} on nodes {sorted(nodes)}, "
                         f"outside the inference partition {sorted(partition)}")
            retired = runtime.retired[r]
            holds.append((runtime.created[r], end if math.isnan(retired) else retired, tuple(devices),
                          f"replica {r} of service {name!r}"))
        served = rows[rows["status"] == "finished"]
        if not served.empty:
            # a prefill pool's replicas took the requests in (admitted) and let them go once their KV cache moved,
            # before they finished; a decode pool's gave their first token and finished them
            column = "prefill_replica" if runtime.role == "prefill" else "replica"
            replica = served[column].to_numpy().astype(np.int64)
            _require(bool(((replica >= 0) & (replica < len(runtime.replicas))).all()), "requests",
                     f"service {name!r}: finished requests name replicas outside 0..{len(runtime.replicas) - 1}")
            ready = np.asarray(runtime.ready, dtype=float)[replica]
            retired = np.asarray(runtime.retired, dtype=float)[replica]
            admitted, finish = served["admitted"].to_numpy(float), served["finish"].to_numpy(float)
            if runtime.role == "decode":
                admitted = served["first_token"].to_numpy(float)
            elif runtime.role == "prefill":
                finish = admitted
            early = admitted < ready
            if "kv_losses" in served:  # a request whose KV cache a failure took was first admitted on a lost replica
                early &= ~(served["kv_losses"].to_numpy(float) > 0)
            late = ~np.isnan(retired) & (finish > retired)
            order = ~((served["arrival"].to_numpy(float) <= admitted) & (admitted <= finish))
            for mask, what in ((early, "before its replica was ready"), (late, "after its replica gave its devices "
                                                                              "back"), (order, "out of order")):
                if mask.any():
                    i = int(np.flatnonzero(mask)[0])
                    row = served.iloc[i]
                    raise InvariantViolation("replica-lifetime", (
                        f"service {name!r}: request {int(row['request_id'])} on replica {int(replica[i])} "
                        f"served {what} (arrival {row['arrival']:g}, admitted {row['admitted']:g}, finish "
                        f"{row['finish']:g}; replica ready {ready[i]:g}, retired {retired[i]:g})"))
        # replica counts
        top = sim.serving.scaling[s].max_replicas
        counts = res.replica_timeline[res.replica_timeline["service"] == name]
        over = counts[counts["ready"] + counts["provisioning"] > top]
        _require(over.empty, "replica-bounds", lambda over=over, name=name, top=top: (
            f"service {name!r}: {int(over['ready'].iloc[0] + over['provisioning'].iloc[0])} replicas ready or "
            f"provisioning at t={over['time'].iloc[0]:g}, max_replicas {top}"))
    # training: its invariants, off the partition; and no device held by a replica and a job at once
    events = res.events
    if events is not None:
        open_runs: dict[int, tuple[float, tuple[int, ...]]] = {}
        for ev in events.itertuples(index=False):
            if ev.event == "start":
                devices = tuple(ev.devices)
                open_runs[int(ev.job_id)] = (float(ev.time), devices)
                if partition:
                    nodes = {cluster.device_node[d] for d in devices}
                    _require(not nodes & partition, "partition", f"t={ev.time:g}: job {ev.job_id} starts on nodes "
                             f"{sorted(nodes & partition)}, set aside for inference")
            elif ev.event in ("preempt", "finish") and int(ev.job_id) in open_runs:
                start, devices = open_runs.pop(int(ev.job_id))
                holds.append((start, float(ev.time), devices, f"job {ev.job_id}"))
        holds.extend((start, end, devices, f"job {jid}") for jid, (start, devices) in open_runs.items())
    by_device: dict[int, list[tuple[float, float, str]]] = defaultdict(list)
    for start, stop, devices, who in holds:
        for d in devices:
            by_device[d].append((start, stop, who))
    for d, spans in by_device.items():
        spans.sort()
        for (s1, e1, w1), (s2, e2, w2) in itertools.pairwise(spans):
            _require(s2 >= e1 or (s1 == e1) or (s2 == e2), "device-exclusive",
                     f"device {d} held by {w1} over [{s1:g}, {e1:g}] and by {w2} over [{s2:g}, {e2:g}]")
    check_run(cluster, list(sim.jobs), sim.preemption, res, complete=complete,
              gangs_may_split=sim.placer.splits_gangs)


# ----------------------------------------------------------------------------------------------- running checks
class _KeepGlobalRandom:
    """Restore Python's and numpy's global random states on exit (a check leaves them as it found them)."""

    def __enter__(self) -> None:
        self.saved = random.getstate(), np.random.get_state()

    def __exit__(self, *exc: object) -> None:
        random.setstate(self.saved[0])
        np.random.set_state(self.saved[1])


class _GlobalRandom:
    """Set Python's and numpy's global random states from ``seed`` for a run, and restore them after."""

    def __init__(self, seed: int | None) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        if self.seed is not None:
            self.saved = random.getstate(), np.random.get_state()
            random.seed(self.seed)
            np.random.seed(self.seed)

    def __exit__(self, *exc: object) -> None:
        if self.seed is not None:
            random.setstate(self.saved[0])
            np.random.set_state(self.saved[1])


HORIZON_FACTOR = 10.0
"""A check stops a run at ``HORIZON_FACTOR`` times (the last arrival plus every job run one after another at its
slowest allowed speed, each phase's and on an elastic job's slowest gang, with a preemption each) plus an hour;
built-in policies end within one such time."""


ENDLESS = "the run had not ended by"


def _horizon(jobs: Iterable[TrainingJob], preemption: PreemptionCost, cluster: Cluster, extra: float = 0.0) -> float:
    """A time by which any sensible run has ended (``HORIZON_FACTOR``)."""
    serial, last = extra, 0.0
    for job in jobs:
        slowest = _seconds(job, phase_speeds(cluster, job), min, default=job.duration)
        serial += slowest + preemption.for_job(job) + 1.0
        last = max(last, job.arrival)
    return HORIZON_FACTOR * (last + serial) + 3600.0


def _run(make: Callable[[float], Simulation], jobs: Sequence[TrainingJob], horizon: float,
         global_seed: int | None) -> tuple[Simulation, Results]:
    """Build and run one simulation; the engine's errors become ``InvariantViolation``s, a change of the jobs too."""
    before = [repr(j) for j in jobs]
    try:
        with _GlobalRandom(global_seed):
            sim = make(horizon)
            res = sim.run()
    except InvariantViolation:
        raise
    except PolicyError as exc:
        raise InvariantViolation("valid-decisions", f"the engine raised PolicyError: {exc}") from exc
    except StarvationError as exc:
        raise InvariantViolation("completion", f"the engine raised StarvationError: {exc}") from exc
    except Exception as exc:
        raise InvariantViolation("runs", f"the run raised {type(exc).__name__}: {exc}") from exc
    changed = [(a, b) for a, b in zip(before, (repr(j) for j in jobs), strict=True) if a != b]
    _require(not changed, "workload", lambda: f"a job changed during the run: {changed[0][0]} became {changed[0][1]}")
    if sim.end_time >= horizon:
        unfinished = res.jobs[~res.jobs["status"].isin(("finished", "unschedulable"))]
        _require(unfinished.empty, "completion", lambda: (
            f"{ENDLESS} t={horizon:g} ({HORIZON_FACTOR:g} times the jobs' serial run time): jobs "
            f"{unfinished['job_id'].tolist()[:10]} still {', '.join(sorted(set(unfinished['status'])))}"))
    return sim, res


def check_scenario(scenario: Scenario, *, scheduler: Any, placer: Any, determinism: bool = False) -> Results:
    """Run a training ``scenario`` under ``scheduler`` and ``placer`` (with a horizon far past any sensible end)
    and check it: the engine's errors and every invariant of ``check_run`` raise ``InvariantViolation``, as does a
    change of the jobs; with ``determinism``, a second run (under other global random states) must give identical
    tables and log. Returns the (first) run's results. For one's own scenarios, e.g. a Hypothesis strategy."""
    cluster = scenario.cluster
    horizon = _horizon(scenario.jobs, scenario.preemption, cluster)

    def make(h: float) -> Simulation:
        return scenario.simulation(scheduler=scheduler, placer=placer, cluster=cluster, horizon=h)

    sim, first = _run(make, scenario.jobs, horizon, 1 if determinism else None)
    check_run(cluster, scenario.jobs, scenario.preemption, first, gangs_may_split=sim.placer.splits_gangs)
    if determinism:
        _, second = _run(make, scenario.jobs, horizon, 2)
        check_same_results(first, second)
    return first


def check_serving_scenario(scenario: ServingScenario, *, router: Any = "round-robin", autoscaler: Any = "static",
                           colocation: Any = "shared", scheduler: Any = "fifo", placer: Any = "first-fit",
                           determinism: bool = True) -> Results:
    """Run a serving ``scenario`` under these policies and check it (``check_serving_run``, and that the router
    picks only accepting replicas); with ``determinism``, a second run must give identical tables. The engine's
    errors raise ``InvariantViolation``. Returns the (first) run's results."""
    cluster = scenario.cluster
    spans = [float(s.requests.arrival[-1]) for s in scenario.services if len(s.requests)]
    horizon = _horizon(scenario.jobs, scenario.preemption, cluster, extra=max(spans, default=0.0))

    def make(h: float) -> Simulation:
        return scenario.simulation(router=_guarded(router), autoscaler=autoscaler, colocation=colocation,
                                   scheduler=scheduler, placer=placer, horizon=h)

    sim, first = _run(make, scenario.jobs, horizon, 1 if determinism else None)
    check_serving_run(sim, first, complete=sim.end_time < horizon)
    if determinism:
        _, second = _run(make, scenario.jobs, horizon, 2)
        check_same_results(first, second)
    return first


def _failing(case: Callable[[], None]) -> InvariantViolation | None:
    try:
        case()
    except InvariantViolation as violation:
        return violation
    return None


def _shrink(scenario: Scenario, fails: Callable[[Scenario], bool], budget: int = 150,
            seconds: float = 10.0) -> Scenario:
    """A smaller scenario that still ``fails``: fewer jobs (chunks, then one by one), fewer pools and nodes; at
    most ``budget`` runs and about ``seconds`` of wall time."""
    tries = 0
    deadline = time.perf_counter() + seconds

    def attempt(candidate: Scenario) -> bool:
        nonlocal tries
        tries += 1
        if time.perf_counter() > deadline:
            tries = budget
        return fails(candidate)

    jobs = list(scenario.jobs)
    chunk = max(1, len(jobs) // 2)
    while chunk >= 1 and tries < budget:
        i, removed = 0, False
        while i < len(jobs) and tries < budget:
            kept = jobs[:i] + jobs[i + chunk:]
            if kept and attempt(dataclasses.replace(scenario, jobs=tuple(kept))):
                jobs, removed = kept, True
            else:
                i += chunk
        if chunk == 1 and not removed:
            break
        chunk = max(1, chunk // 2) if chunk > 1 else 1
    current = dataclasses.replace(scenario, jobs=tuple(jobs))
    for p in reversed(range(len(current.pools))):
        if len(current.pools) > 1 and tries < budget:
            candidate = dataclasses.replace(current, pools=current.pools[:p] + current.pools[p + 1:])
            if attempt(candidate):
                current = candidate
    for p in range(len(current.pools)):
        while current.pools[p].nodes > 1 and tries < budget:
            pools = list(current.pools)
            pools[p] = dataclasses.replace(pools[p], nodes=pools[p].nodes - 1)
            candidate = dataclasses.replace(current, pools=tuple(pools))
            if not attempt(candidate):
                break
            current = candidate
    return current


def _report_failure(label: str, kind: str, spec: Any, violation: InvariantViolation, partners: Mapping[str, Any],
                    seed: int, example: int, scenario: Scenario | ServingScenario, code: str, note: str,
                    function: str) -> PolicyCheckError:
    with_ = ", ".join(f"{k} {_partner_label(v)!r}" for k, v in partners.items())
    code = "\n".join("    " + line if line else "" for line in code.rstrip().splitlines())
    message = (f"{label} breaks the invariant {violation.invariant!r} ({INVARIANTS.get(violation.invariant, '?')})"
               f" with {with_}:\n  {violation.detail}\n"
               f"scenario: example {example} of seed {seed} ({function}(..., seed={seed}, example={example}) runs it "
               f"alone){note}: {scenario.describe()}\n"
               f"reproduce it:\n{code}")
    return PolicyCheckError(message, policy=label, invariant=violation.invariant, detail=violation.detail,
                            partners={k: _partner_label(v) for k, v in partners.items()}, seed=seed, example=example,
                            scenario=scenario)


def _examples(kind: str, examples: int | None, example: int | None) -> range:
    if example is not None:
        if isinstance(example, bool) or not isinstance(example, int) or example < 0:
            raise ConfigError(f"check: example must be an integer >= 0, got {example!r}")
        return range(example, example + 1)
    n = DEFAULT_EXAMPLES[kind] if examples is None else examples
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"check: examples must be a positive integer, got {n!r}")
    return range(n)


def _partners(kind: str, given: Iterable[Any] | None, *, packing: bool = True) -> list[Any]:
    """The policies of ``kind`` a check pairs with: ``given``, or every built-in one; without ``packing`` (runs
    with services or quotas, where packing is refused) the built-in schedulers that pack are left out."""
    if given is None:
        partners = [name for name in builtin_policies(kind)
                    if packing or not getattr(_resolve(kind, name)[1], "packs", False)]
    else:
        partners = list(given)
    if not partners:
        raise ConfigError(f"check: no {kind} to pair with (none given, no built-in registered: is gpusim installed?)")
    for spec in partners:
        _resolve(kind, spec)
    return partners


def _check_training(kind: str, policy: PolicySpec, others: Iterable[Any] | None, examples: int | None, seed: int,
                    example: int | None, shrink: bool) -> CheckReport:
    wall = time.perf_counter()
    spec, instance = _resolve(kind, policy)
    label = _label(kind, instance)
    other = "placer" if kind == "scheduler" else "scheduler"
    partners = _partners(other, others)
    function = f"check_{kind}"
    indices = _examples(kind, examples, example)
    runs = 0
    for k in indices:
        scenario = training_scenario(seed, k)
        for j, partner in enumerate(partners):
            policies = {kind: spec, other: partner}
            determinism = j == k % len(partners)
            violation = _failing(lambda scenario=scenario, policies=policies, determinism=determinism:
                                 check_scenario(scenario, determinism=determinism, **policies))
            runs += 1 + determinism
            if violation is None:
                continue
            failing = scenario
            note = ""
            if shrink:
                def fails(candidate: Scenario, policies: Mapping[str, Any] = policies, determinism: bool = determinism,
                          invariant: str = violation.invariant) -> bool:
                    found = _failing(lambda: check_scenario(candidate, determinism=determinism, **policies))
                    return found is not None and found.invariant == invariant

                failing = _shrink(scenario, fails)
                if failing != scenario:
                    violation = _failing(lambda failing=failing, policies=policies, determinism=determinism:
                                         check_scenario(failing, determinism=determinism, **policies)) or violation
                    note = (f", shrunk from {len(scenario.jobs)} to {len(failing.jobs)} "
                            f"job{'s' * (len(failing.jobs) != 1)}")
            horizon = (_horizon(failing.jobs, failing.preemption, failing.cluster)
                       if violation.detail.startswith(ENDLESS) else None)
            code = failing.code(scheduler=policies["scheduler"], placer=policies["placer"],
                                determinism=violation.invariant == "determinism", horizon=horizon)
            raise _report_failure(label, kind, spec, violation, {other: partner}, seed, k, failing, code, note,
                                  function) from None
    return CheckReport(label, kind, len(indices), runs, seed, tuple(_partner_label(p) for p in partners),
                       TRAINING_INVARIANTS, time.perf_counter() - wall)


AUTOSCALER_SETTINGS: Mapping[str, Mapping[str, Any]] = {
    "queue-length": {"interval": 5.0, "cooldown": 20.0, "per_replica": 4.0},
    "target-utilization": {"interval": 10.0, "cooldown": 30.0, "utilization": 0.5},
}
"""Parameters that make the built-in autoscalers act within a check's short services (used when they apply)."""
COLOCATION_SETTINGS: Mapping[str, Mapping[str, Any]] = {"partitioned": {"nodes": 1}}
"""Parameters of the built-in co-location policies in checks (a partition of one node)."""


def _tuned(kind: str, name: str) -> Any:
    settings = (AUTOSCALER_SETTINGS if kind == "autoscaler" else COLOCATION_SETTINGS if kind == "colocation"
                else {}).get(name)
    if settings:
        spec = {"name": name, **settings}
        try:
            registry.create(kind, spec)
            return spec
        except ConfigError:
            pass
    return name


def _check_serving(kind: str, policy: PolicySpec, given: Mapping[str, Iterable[Any] | None], examples: int | None,
                   seed: int, example: int | None) -> CheckReport:
    with _KeepGlobalRandom():
        return _serving_examples(kind, policy, given, examples, seed, example)


def _serving_examples(kind: str, policy: PolicySpec, given: Mapping[str, Iterable[Any] | None],
                      examples: int | None, seed: int, example: int | None) -> CheckReport:
    wall = time.perf_counter()
    spec, instance = _resolve(kind, policy)
    label = _label(kind, instance)
    if kind == "autoscaler" and instance.name != "static":
        interval = getattr(instance, "interval", None)
        ok = isinstance(interval, (int, float)) and not isinstance(interval, bool) and math.isfinite(interval) and (
            interval > 0)
        if not ok:
            raise PolicyCheckError(f"{label} breaks the invariant 'autoscaler-interval' "
                                   f"({INVARIANTS['autoscaler-interval']}): its interval is {interval!r}",
                                   policy=label, invariant="autoscaler-interval", detail=f"interval {interval!r}",
                                   seed=seed)
    kinds = ("router", "autoscaler", "colocation", "scheduler", "placer")
    partners: dict[str, list[Any]] = {}
    for other in kinds:
        if other == kind:
            continue
        names = given.get(other)
        partners[other] = _partners(other, None if names is None else list(names), packing=False)
        if names is None:
            partners[other] = [_tuned(other, name) for name in partners[other]]
    indices = _examples(kind, examples, example)
    stride = {"router": 1, "autoscaler": 1, "colocation": 2, "scheduler": 1, "placer": 3}
    for k in indices:
        scenario = serving_scenario(seed, k)
        chosen = {other: options[(k * stride[other] + len(options) // 2 * (k // len(options))) % len(options)]
                  for other, options in partners.items()}
        policies = {kind: spec, **chosen}
        violation = _failing(lambda scenario=scenario, policies=policies: check_serving_scenario(scenario, **policies))
        if violation is not None:
            raise _report_failure(label, kind, spec, violation, chosen, seed, k, scenario, scenario.code(**policies),
                                  "", f"check_{kind}") from None
    pairs = tuple(f"{other}s {', '.join(_partner_label(p) for p in options)}" for other, options in partners.items())
    return CheckReport(label, kind, len(indices), 2 * len(indices), seed, pairs, SERVING_INVARIANTS,
                       time.perf_counter() - wall)


# ----------------------------------------------------------------------------------------------- public checks
def check_scheduler(scheduler: PolicySpec, *, examples: int | None = None, seed: int = 0,
                    placers: Iterable[Any] | None = None, example: int | None = None,
                    shrink: bool = True) -> CheckReport:
    """Check a scheduler (a registered name, a mapping with parameters, an instance or a class) on ``examples``
    random training scenarios of ``seed`` (default ``DEFAULT_EXAMPLES["scheduler"]``), each with every placer of
    ``placers`` (default: the built-in ones); one pair per scenario is run twice for determinism. ``example``
    runs that scenario alone. Raises ``PolicyCheckError`` at the first broken invariant, with the scenario
    (``shrink``: cut to the fewest jobs, pools and nodes that still break it); returns a ``CheckReport``."""
    with _KeepGlobalRandom():
        return _check_training("scheduler", scheduler, placers, examples, seed, example, shrink)


def check_placer(placer: PolicySpec, *, examples: int | None = None, seed: int = 0,
                 schedulers: Iterable[Any] | None = None, example: int | None = None,
                 shrink: bool = True) -> CheckReport:
    """Check a placer as ``check_scheduler`` checks a scheduler, with every scheduler of ``schedulers`` (default:
    the built-in ones)."""
    with _KeepGlobalRandom():
        return _check_training("placer", placer, schedulers, examples, seed, example, shrink)


def check_router(router: PolicySpec, *, examples: int | None = None, seed: int = 0, example: int | None = None,
                 autoscalers: Iterable[Any] | None = None, colocations: Iterable[Any] | None = None,
                 schedulers: Iterable[Any] | None = None, placers: Iterable[Any] | None = None) -> CheckReport:
    """Check a router on ``examples`` random serving scenarios of ``seed`` (default
    ``DEFAULT_EXAMPLES["router"]``); each scenario takes the next autoscaler, co-location policy, scheduler and
    placer (default: the built-in ones, autoscalers with short intervals, schedulers that pack left out) in turn
    and runs twice (determinism). Raises ``PolicyCheckError`` at the first broken invariant; returns a
    ``CheckReport``."""
    return _check_serving("router", router, {"autoscaler": autoscalers, "colocation": colocations,
                                             "scheduler": schedulers, "placer": placers}, examples, seed, example)


def check_autoscaler(autoscaler: PolicySpec, *, examples: int | None = None, seed: int = 0,
                     example: int | None = None, routers: Iterable[Any] | None = None,
                     colocations: Iterable[Any] | None = None, schedulers: Iterable[Any] | None = None,
                     placers: Iterable[Any] | None = None) -> CheckReport:
    """Check an autoscaler as ``check_router`` checks a router (its interval must be a positive finite number of
    seconds; its targets within the service's bounds, which the engine checks)."""
    return _check_serving("autoscaler", autoscaler, {"router": routers, "colocation": colocations,
                                                     "scheduler": schedulers, "placer": placers}, examples, seed,
                          example)


def check_colocation(colocation: PolicySpec, *, examples: int | None = None, seed: int = 0,
                     example: int | None = None, routers: Iterable[Any] | None = None,
                     autoscalers: Iterable[Any] | None = None, schedulers: Iterable[Any] | None = None,
                     placers: Iterable[Any] | None = None) -> CheckReport:
    """Check a co-location policy as ``check_router`` checks a router."""
    return _check_serving("colocation", colocation, {"router": routers, "autoscaler": autoscalers,
                                                     "scheduler": schedulers, "placer": placers}, examples, seed,
                          example)


CHECKS: Mapping[str, Callable[..., CheckReport]] = {
    "scheduler": check_scheduler, "placer": check_placer, "router": check_router, "autoscaler": check_autoscaler,
    "colocation": check_colocation, "tenant_order": lambda policy, **options: check_tenant_order(policy, **options)}
"""The check of each policy kind."""


def check_policy(kind: str | None, policy: PolicySpec, **options: Any) -> CheckReport:
    """The check of ``kind`` (``scheduler``, ``placer``, ``router``, ``autoscaler``, ``colocation``,
    ``tenant_order``; None: the kind of a policy class or instance, or the only kind a name is registered under)
    run on ``policy``."""
    if kind is None:
        kind = _kind_of(policy)
    if kind not in CHECKS:
        raise ConfigError(f"unknown policy kind {kind!r}; valid kinds: {', '.join(CHECKS)}")
    return CHECKS[kind](policy, **options)


def _kind_of(policy: PolicySpec) -> str:
    if isinstance(policy, Policy) or (isinstance(policy, type) and issubclass(policy, Policy)):
        return policy.kind
    name = policy.get("name") if isinstance(policy, Mapping) else policy
    kinds = [k for k in registry.KINDS if name in registry.available(k)]
    if len(kinds) != 1:
        raise ConfigError(f"check: give the kind of {name!r} ({' or '.join(kinds) if kinds else 'not registered'}):"
                          f" one of {', '.join(registry.KINDS)}")
    return kinds[0]


# ----------------------------------------------------------------------------------------------- command line
def add_command(sub: Any) -> None:
    """Add ``gpusim check-policy POLICY [--kind KIND] [--examples N] [--seed S] [--example K]`` to the CLI's
    subcommands (``sub``: the ``add_subparsers()`` result)."""
    parser = sub.add_parser("check-policy", help="check a policy against the invariants the built-in ones keep")
    parser.add_argument("policy", help="a registered name, a YAML mapping ('{name: las, thresholds: [3600]}') or "
                                       "module:Class")
    parser.add_argument("--kind", choices=tuple(CHECKS), default=None,
                        help="the policy's kind (default: the only kind the name is registered under)")
    parser.add_argument("--examples", type=int, default=None, metavar="N",
                        help="random scenarios to run (default per kind: "
                             + ", ".join(f"{k} {n}" for k, n in DEFAULT_EXAMPLES.items()) + ")")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the scenarios (default 0)")
    parser.add_argument("--example", type=int, default=None, metavar="K", help="run only scenario K of the seed")
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    """``gpusim check-policy``: print the report (exit 0) or the broken invariant and its scenario (exit 1)."""
    text = args.policy.strip()
    policy: Any = text
    if text.startswith("{"):
        import yaml

        policy = yaml.safe_load(text)
        if not isinstance(policy, Mapping):
            raise ConfigError(f"check-policy: {text!r} is not a mapping")
    elif ":" in text:
        module, _, attr = text.partition(":")
        try:
            policy = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"check-policy: cannot import {text!r}: {exc}") from exc
    try:
        report = check_policy(args.kind, policy, examples=args.examples, seed=args.seed, example=args.example)
    except PolicyCheckError as exc:
        print(f"gpusim: check failed: {exc}")
        return 1
    print(report)
    return 0


# ----------------------------------------------------------------------------------------------- tenant orders
QUOTA_MODES_CHECKED = ("borrow", "reclaim")
"""The quota mode of example k is ``QUOTA_MODES_CHECKED[k % 2]`` (modes in which a job is unschedulable only when
the cluster cannot hold it, as ``check_run`` checks)."""


def tenant_scenario_quotas(scenario: Scenario, example: int) -> dict[str, Any]:
    """Quotas for a training scenario's tenants: each pool split evenly among them (rounded down), in the mode of
    ``example`` (``QUOTA_MODES_CHECKED``)."""
    cluster = scenario.cluster
    tenants = sorted({job.tenant for job in scenario.jobs})
    nominal = {t: {pool.name: cluster.pool_devices[p] // len(tenants) for p, pool in enumerate(cluster.pools)}
               for t in tenants}
    return {"nominal": nominal, "mode": QUOTA_MODES_CHECKED[example % len(QUOTA_MODES_CHECKED)]}


def _check_quota_run(cluster: Cluster, quotas: Mapping[str, Any], res: Results) -> None:
    """Replay the event log: under hard quotas no tenant holds more than its nominal quota in a pool; every job
    ends finished, or unschedulable with a reason."""
    nominal = {(t, p): row.get(pool.name, 0)
               for t, row in quotas["nominal"].items() for p, pool in enumerate(cluster.pools)}
    tenant = dict(zip(res.jobs["job_id"], res.jobs["tenant"], strict=True))
    held: dict[int, tuple[int, ...]] = {}
    use: dict[tuple[str, int], int] = {}
    assert res.events is not None
    for time_, kind, job_id, devices in zip(res.events["time"], res.events["event"], res.events["job_id"],
                                            res.events["devices"], strict=True):
        if kind == "start":
            held[job_id] = tuple(devices)
            key = (tenant[job_id], cluster.pool_of_device(devices[0]))
            use[key] = use.get(key, 0) + len(devices)
            _require(quotas["mode"] != "hard" or use[key] <= nominal[key], "quota", lambda key=key, t=time_: (
                f"at t={t:g} tenant {key[0]!r} holds {use[key]} devices of pool {key[1]}, above its quota of "
                f"{nominal[key]}"))
        elif kind in ("preempt", "finish"):
            devices = held.pop(job_id)
            key = (tenant[job_id], cluster.pool_of_device(devices[0]))
            use[key] -= len(devices)
    table = res.jobs
    ended = table["status"].isin(("finished", "unschedulable"))
    _require(bool(ended.all()), "completion", lambda: f"jobs {table[~ended]['job_id'].tolist()[:10]} did not end")
    silent = table[(table["status"] == "unschedulable") & (table["reason"] == "")]
    _require(silent.empty, "completion", lambda: f"jobs {silent['job_id'].tolist()[:10]} unschedulable, no reason")


def _check_tenant_pair(scenario: Scenario, quotas: Mapping[str, Any], scheduler: Any, tenant_order: Any,
                       determinism: bool) -> None:
    """Run ``scenario`` under ``quotas``, ``scheduler`` and ``tenant_order`` and check it (``check_tenant_order``)."""
    cluster = scenario.cluster
    horizon = _horizon(scenario.jobs, scenario.preemption, cluster)

    def make(h: float) -> Simulation:
        return scenario.simulation(scheduler=scheduler, cluster=cluster, horizon=h, quotas=quotas,
                                   tenant_order=tenant_order)

    sim, first = _run(make, scenario.jobs, horizon, 1 if determinism else None)
    check_run(cluster, scenario.jobs, scenario.preemption, first, complete=False,
              gangs_may_split=sim.placer.splits_gangs)
    _check_quota_run(cluster, quotas, first)
    if determinism:
        _, second = _run(make, scenario.jobs, horizon, 2)
        check_same_results(first, second)


def check_tenant_order(tenant_order: PolicySpec, *, examples: int | None = None, seed: int = 0,
                       schedulers: Iterable[Any] | None = None, example: int | None = None) -> CheckReport:
    """Check a tenant-order policy on ``examples`` random training scenarios of ``seed`` (their tenants given
    even quotas, in borrow and reclaim mode in turn; ``tenant_scenario_quotas``), each with every scheduler
    of ``schedulers`` (default: the built-in ones but those that pack) and the first-fit placer: every run keeps
    the training invariants (``check_run``), its answers are valid orders, every job ends; one pair per
    scenario runs twice for determinism. Raises ``PolicyCheckError`` naming the scenario; returns a
    ``CheckReport``."""
    with _KeepGlobalRandom():
        wall = time.perf_counter()
        spec, instance = _resolve("tenant_order", tenant_order)
        label = _label("tenant_order", instance)
        partners = _partners("scheduler", schedulers, packing=False)
        indices = _examples("tenant_order", examples, example)
        runs = 0
        for k in indices:
            scenario = _whole(training_scenario(seed, k))
            quotas = tenant_scenario_quotas(scenario, k)
            for j, partner in enumerate(partners):
                determinism = j == k % len(partners)
                case = functools.partial(_check_tenant_pair, scenario, quotas, partner, spec, determinism)
                violation = _failing(case)
                runs += 1 + determinism
                if violation is not None:
                    message = (f"{label} breaks the invariant {violation.invariant!r} with scheduler "
                               f"{_partner_label(partner)!r} under {quotas['mode']} quotas {quotas['nominal']}:\n  "
                               f"{violation.detail}\nscenario: example {k} of seed {seed} (check_tenant_order(..., "
                               f"seed={seed}, example={k}) runs it alone): {scenario.describe()}")
                    raise PolicyCheckError(message, policy=label, invariant=violation.invariant,
                                           detail=violation.detail, partners={"scheduler": _partner_label(partner)},
                                           seed=seed, example=k, scenario=scenario) from None
        return CheckReport(label, "tenant_order", len(indices), runs, seed, tuple(_partner_label(p) for p in partners),
                           (*TRAINING_INVARIANTS, "quota"), time.perf_counter() - wall)

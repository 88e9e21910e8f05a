"""The public policy checker (``sim.policy_checks``): every built-in policy passes it, and deliberately broken
policies are caught with the invariant they break and a scenario that reproduces it."""

from __future__ import annotations

import argparse
import dataclasses
import random
import textwrap
from dataclasses import dataclass

import numpy as np
import pytest

from sim import registry
from sim.engine import PreemptionCost, Simulation
from sim.errors import ConfigError, GpusimError, PolicyError, StarvationError, UnknownNameError
from sim.platform.cluster import Cluster, PoolSpec
from sim.policy_checks import (
    DEFAULT_EXAMPLES,
    INVARIANTS,
    CheckReport,
    InvariantViolation,
    PolicyCheckError,
    Scenario,
    add_command,
    builtin_policies,
    check_autoscaler,
    check_colocation,
    check_placer,
    check_policy,
    check_router,
    check_run,
    check_same_results,
    check_scenario,
    check_scheduler,
    check_tenant_order,
    serving_scenario,
    training_scenario,
)
from sim.serving.contracts import Autoscaler, Colocation, Router, ServiceView
from sim.training.contracts import Assignment, ClusterView, Decision, Placer, Scheduler
from workloads.jobs import TrainingJob

CHECKS = {"scheduler": check_scheduler, "placer": check_placer, "router": check_router,
          "autoscaler": check_autoscaler, "colocation": check_colocation, "tenant_order": check_tenant_order}


# ------------------------------------------------------------------------------------------------ broken policies
def greedy(view: ClusterView, jobs) -> list[Assignment]:
    """Start ``jobs`` in order wherever the simulation's placer finds room (skipping those that do not fit)."""
    trial, starts = view.trial(), []
    for job in jobs:
        devices = trial.place(job)
        if devices is not None:
            starts.append(Assignment(job.job_id, devices))
    return starts


@dataclass
class DoubleStart(Scheduler):
    """Starts its first job twice in one decision."""

    name = "double-start"

    def schedule(self, view: ClusterView) -> Decision:
        starts = greedy(view, view.queued)
        return Decision(start=tuple(starts + starts[:1]))


@dataclass
class BusyDevices(Scheduler):
    """Starts the oldest waiting job on the lowest device ids of its first allowed pool, free or not."""

    name = "busy-devices"

    def schedule(self, view: ClusterView) -> Decision:
        for job in view.queued:
            if job.allowed_pools:
                first = view.cluster.devices_of_node(view.cluster.pool_nodes[job.allowed_pools[0]][0])[0]
                return Decision(start=(Assignment(job.job_id, tuple(range(first, first + job.gpus))),))
        return Decision()


@dataclass
class Starver(Scheduler):
    """Never starts job 0."""

    name = "starver"

    def schedule(self, view: ClusterView) -> Decision:
        return Decision(start=tuple(greedy(view, [j for j in view.queued if j.job_id != 0])))


@dataclass
class Livelock(Scheduler):
    """Every second, preempts whatever runs and restarts whatever waits: with a restore cost above a second no
    job ever progresses, and the run never ends by itself."""

    name = "livelock"
    preemptive = True

    def schedule(self, view: ClusterView) -> Decision:
        return Decision(start=tuple(greedy(view, view.queued)), preempt=tuple(j.job_id for j in view.running),
                        wake_at=view.now + 1.0)


@dataclass
class Shuffler(Scheduler):
    """Starts jobs in an order drawn from Python's global random state instead of its own stream."""

    name = "shuffler"

    def schedule(self, view: ClusterView) -> Decision:
        jobs = list(view.queued)
        random.shuffle(jobs)
        return Decision(start=tuple(greedy(view, jobs)))


@dataclass
class SpeedHacker(Scheduler):
    """FIFO, but it doubles the throughputs of the jobs it sees (they are the user's workload)."""

    name = "speed-hacker"

    def schedule(self, view: ClusterView) -> Decision:
        for job in view.queued:
            if job.spec.throughputs:
                for key in list(job.spec.throughputs):
                    job.spec.throughputs[key] *= 2.0
        return Decision(start=tuple(greedy(view, view.queued)))


@dataclass
class Splitter(Placer):
    """Spreads every gang over as many nodes as it can, even when one node would hold it."""

    name = "splitter"

    def place(self, job, free, rng):
        for pool in job.allowed_pools:
            if free.pool_free[pool] >= job.gpus:
                columns = [free.free_on(n) for n in free.nodes_with(pool)]
                devices: list[int] = []
                depth = 0
                while len(devices) < job.gpus:
                    devices += [col[depth] for col in columns if depth < len(col)][: job.gpus - len(devices)]
                    depth += 1
                return tuple(devices)
        return None


@dataclass
class OutOfRange(Router):
    """Sends every request to the replica after the last one."""

    name = "out-of-range"

    def route(self, request, replicas, rng) -> int:
        return len(replicas)


@dataclass
class Newest(Router):
    """Sends every request to the newest replica, even while it loads its weights or drains."""

    name = "newest"

    def route(self, request, replicas, rng) -> int:
        return len(replicas) - 1


@dataclass
class Overshoot(Autoscaler):
    """Asks for one replica more than the service may have."""

    name = "overshoot"
    interval: float = 5.0

    def target(self, view: ServiceView) -> int:
        return view.max_replicas + 1


@dataclass
class Undershoot(Autoscaler):
    """Asks for one replica fewer than the service must keep."""

    name = "undershoot"
    interval: float = 5.0

    def target(self, view: ServiceView) -> int:
        return view.min_replicas - 1


@dataclass
class NoInterval(Autoscaler):
    name = "no-interval"
    interval: float = 0.0

    def target(self, view: ServiceView) -> int:
        return view.current


@dataclass
class GhostVictims(Colocation):
    """Preempts a job that does not exist whenever a replica finds no room."""

    name = "ghost-victims"

    def victims(self, pool, count, free, running, cluster, now) -> tuple[int, ...]:
        return (10_000,)


def code_of(error: PolicyCheckError) -> str:
    """The reproduction the message ends with, ready to exec."""
    return textwrap.dedent(str(error).split("reproduce it:\n", 1)[1])


def assert_reported(error: PolicyCheckError, invariant: str, policy: str) -> None:
    """The message names the policy, the invariant and its meaning, the scenario and how to rerun it."""
    message = str(error)
    assert error.invariant == invariant
    assert message.startswith(f"{policy} breaks the invariant {invariant!r} ({INVARIANTS[invariant]})")
    assert f"example {error.example} of seed {error.seed}" in message
    assert f"seed={error.seed}, example={error.example}) runs it alone" in message
    assert "reproduce it:\n" in message
    assert isinstance(error, GpusimError)


# ------------------------------------------------------------------------------------------------ built-ins pass
@pytest.mark.parametrize(("kind", "name"), [(kind, name) for kind in CHECKS for name in builtin_policies(kind)])
def test_every_builtin_policy_passes(kind, name):
    report = CHECKS[kind](name)
    assert isinstance(report, CheckReport)
    assert report.examples == DEFAULT_EXAMPLES[kind] and report.runs >= report.examples
    assert report.kind == kind and name in report.policy


def test_builtin_policies_are_the_gpusim_entry_points():
    assert {"fifo", "sjf", "srtf", "las", "easy-backfill"} <= set(builtin_policies("scheduler"))
    assert {"first-fit", "consolidate", "spread", "random"} <= set(builtin_policies("placer"))
    assert {"round-robin", "least-outstanding"} <= set(builtin_policies("router"))
    assert {"static", "queue-length"} <= set(builtin_policies("autoscaler"))
    assert {"shared", "inference-priority"} <= set(builtin_policies("colocation"))
    with pytest.raises(ConfigError, match="unknown policy kind 'schedular'"):
        builtin_policies("schedular")


def test_a_scheduler_is_paired_with_every_builtin_placer_and_the_report_says_so():
    report = check_scheduler({"name": "fifo", "blocking": False}, examples=3, seed=11)
    assert report.partners == tuple(builtin_policies("placer"))
    assert report.runs == 3 * len(builtin_policies("placer")) + 3  # and one determinism rerun per example
    assert set(report.invariants) >= {"device-exclusive", "one-node", "work", "completion", "determinism"}
    text = str(report)
    assert text.startswith("scheduler 'fifo': passed 3 examples (seed 11)") and "first-fit" in text


def test_a_policy_is_given_as_a_name_a_mapping_an_instance_or_a_class():
    fifo = registry.policy_class("scheduler", "fifo")
    for spec in ("fifo", {"name": "fifo", "blocking": True}, fifo(blocking=False), fifo):
        assert check_scheduler(spec, examples=1, placers=["first-fit"]).runs == 2
    assert check_policy(None, fifo, examples=1, placers=["first-fit"]).kind == "scheduler"
    assert check_policy("placer", "spread", examples=1, schedulers=["fifo"]).kind == "placer"


def test_wrong_kinds_and_names_are_usage_errors_not_check_failures():
    with pytest.raises(UnknownNameError):
        check_scheduler("first-fit")
    with pytest.raises(ConfigError, match="expected a scheduler policy, got a placer"):
        check_scheduler(registry.policy_class("placer", "first-fit")())
    with pytest.raises(ConfigError, match="give the kind of 'random'"):
        check_policy(None, "random")
    with pytest.raises(ConfigError, match="examples must be a positive integer"):
        check_scheduler("fifo", examples=0)


def test_scenarios_are_reproducible_from_seed_and_example():
    assert training_scenario(3, 5) == training_scenario(3, 5)
    assert training_scenario(3, 5) != training_scenario(3, 6) != training_scenario(4, 5)
    a, b = serving_scenario(1, 2), serving_scenario(1, 2)
    assert a.pools == b.pools and a.jobs == b.jobs and a.seed == b.seed
    assert all(np.array_equal(x.requests.arrival, y.requests.arrival) for x, y in zip(a.services, b.services,
                                                                                      strict=True))
    # the scenarios vary: pools, gang sizes beyond the cluster, device restrictions, tied arrivals
    many = [training_scenario(0, k) for k in range(40)]
    assert {len(s.pools) for s in many} == {1, 2, 3}
    assert any(j.gpus > sum(p.nodes * p.devices_per_node for p in s.pools) for s in many for j in s.jobs)
    assert any(j.allowed_devices for s in many for j in s.jobs)
    assert any(len({j.arrival for j in s.jobs}) < len(s.jobs) for s in many)
    assert {j.gpu_fraction for s in many for j in s.jobs} == {0.25, 0.5, 0.75, 1.0}  # shared devices checked too


def test_tenant_checks_run_their_scenarios_on_whole_devices():
    # quotas count whole devices and refuse fractional jobs: the tenant-order check takes each scenario whole
    k = next(k for k in range(40) if any(j.gpu_fraction < 1 for j in training_scenario(0, k).jobs))
    report = check_tenant_order("quota-share", example=k, schedulers=["fifo"])
    assert report.examples == 1 and report.runs >= 1


# ------------------------------------------------------------------------------------------------ broken schedulers
@pytest.mark.parametrize("broken", [DoubleStart, BusyDevices])
def test_a_scheduler_the_engine_refuses_is_reported_with_its_scenario(broken):
    with pytest.raises(PolicyCheckError) as info:
        check_scheduler(broken())
    error = info.value
    assert_reported(error, "valid-decisions", f"scheduler {broken.name!r}")
    assert "the engine raised PolicyError" in error.detail
    assert error.partners.keys() == {"placer"}
    assert isinstance(error.scenario, Scenario) and len(error.scenario.jobs) <= 2  # shrunk
    # the code in the message reproduces it
    with pytest.raises(PolicyError, match=f"scheduler {broken.name!r}"):
        exec(code_of(error), {broken.__name__: broken})


def test_a_starving_scheduler_is_caught():
    with pytest.raises(PolicyCheckError) as info:
        check_scheduler(Starver())
    error = info.value
    assert_reported(error, "completion", "scheduler 'starver'")
    assert "StarvationError" in error.detail
    assert [j.job_id for j in error.scenario.jobs] == [0]  # shrunk to the job it starves
    with pytest.raises(StarvationError):
        exec(code_of(error), {"Starver": Starver})


def test_a_scheduler_that_never_lets_the_run_end_is_stopped_at_the_horizon():
    with pytest.raises(PolicyCheckError) as info:
        check_scheduler(Livelock(), placers=["first-fit"])
    error = info.value
    assert_reported(error, "completion", "scheduler 'livelock'")
    assert "had not ended by t=" in error.detail
    assert error.scenario.preemption.total > 1.0
    assert ", horizon=" in code_of(error)  # the reproduction stops there too


def test_a_scheduler_drawing_from_the_global_random_state_is_not_deterministic():
    state = random.getstate()
    with pytest.raises(PolicyCheckError) as info:
        check_scheduler(Shuffler())
    assert random.getstate() == state  # the check restores the global state it sets
    error = info.value
    assert_reported(error, "determinism", "scheduler 'shuffler'")
    assert "differ in the" in error.detail
    assert "check_same_results(results, again)" in code_of(error)


def test_a_scheduler_that_changes_the_workload_is_caught():
    with pytest.raises(PolicyCheckError) as info:
        check_scheduler(SpeedHacker(), placers=["first-fit"])
    assert_reported(info.value, "workload", "scheduler 'speed-hacker'")
    assert "became" in info.value.detail and "throughputs" in info.value.detail


# ------------------------------------------------------------------------------------------------ broken placer
def test_a_placer_splitting_a_gang_that_fits_one_node_is_caught():
    # The engine refuses the start (a gang that fits one node must get one); the check reports it with the
    # scenario, shrunk.
    with pytest.raises(PolicyCheckError) as info:
        check_placer(Splitter())
    error = info.value
    assert_reported(error, "valid-decisions", "placer 'splitter'")
    assert "fits in one node" in error.detail and "split over nodes" in error.detail
    assert error.partners.keys() == {"scheduler"}
    with pytest.raises(PolicyError, match="split over nodes"):
        exec(code_of(error), {"Splitter": Splitter})


# ------------------------------------------------------------------------------------------------ the replay itself
def small_run() -> tuple[Cluster, list[TrainingJob], PreemptionCost, object]:
    cluster = Cluster([PoolSpec("h100", nodes=2, devices_per_node=4)])
    jobs = [TrainingJob(0, 0.0, 2, 100.0), TrainingJob(1, 0.0, 2, 50.0), TrainingJob(2, 10.0, 4, 20.0)]
    preemption = PreemptionCost(0.0, 0.0)
    res = Simulation(cluster, jobs, seed=1, preemption=preemption, record_events=True).run()
    check_run(cluster, jobs, preemption, res)
    return cluster, jobs, preemption, res


def tampered(res, job_id: int, event: str, **changes):
    """The run's results with one event of the log changed (what a broken engine or policy would log)."""
    events = res.events.copy()
    row = events.index[(events["job_id"] == job_id) & (events["event"] == event)][0]
    for key, value in changes.items():
        events.at[row, key] = value
    return dataclasses.replace(res, events=events) if dataclasses.is_dataclass(res) else _with_events(res, events)


def _with_events(res, events):
    import copy

    other = copy.copy(res)
    other.events = events
    return other


@pytest.mark.parametrize(("job_id", "event", "changes", "invariant"), [
    (1, "start", {"devices": (2, 4)}, "one-node"),  # job 1 (2 gpus) over nodes 0 and 1, each of 4
    (1, "start", {"devices": (0, 1)}, "device-exclusive"),  # job 0 holds devices 0 and 1
    (1, "start", {"devices": (2,)}, "gang-size"),
    (1, "finish", {"time": 40.0}, "work"),  # 50 s of work done in 40 s
    (2, "arrive", {"time": 5.0}, "arrival"),  # job 2 arrives at 10
    (0, "arrive", {"time": 60.0}, "log-order"),
])
def test_the_replay_catches_each_broken_invariant_in_a_log(job_id, event, changes, invariant):
    cluster, jobs, preemption, res = small_run()
    with pytest.raises(InvariantViolation) as info:
        check_run(cluster, jobs, preemption, tampered(res, job_id, event, **changes))
    assert info.value.invariant == invariant


def test_determinism_compares_every_table():
    _, _, _, res = small_run()
    _, _, _, again = small_run()
    check_same_results(res, again)
    with pytest.raises(InvariantViolation, match="differ in the events table"):
        check_same_results(res, tampered(again, 2, "start", time=11.0))


def test_check_scenario_runs_ones_own_scenario():
    scenario = Scenario((PoolSpec("a100", 1, 8),), (TrainingJob(0, 0.0, 8, 10.0), TrainingJob(1, 1.0, 9, 10.0)),
                        PreemptionCost(), seed=5)
    res = check_scenario(scenario, scheduler="fifo", placer="first-fit", determinism=True)
    assert list(res.jobs["status"]) == ["finished", "unschedulable"]
    with pytest.raises(InvariantViolation) as info:
        check_scenario(scenario, scheduler=Starver(), placer="first-fit")
    assert info.value.invariant == "completion"


# ------------------------------------------------------------------------------------------------ serving policies
def test_a_router_choosing_a_replica_out_of_range_is_caught():
    with pytest.raises(PolicyCheckError) as info:
        check_router(OutOfRange())
    error = info.value
    assert_reported(error, "valid-decisions", "router 'out-of-range'")
    assert "not a replica index" in error.detail
    assert error.partners.keys() == {"autoscaler", "colocation", "scheduler", "placer"}
    with pytest.raises(InvariantViolation, match="not a replica index"):
        exec(code_of(error), {"OutOfRange": OutOfRange})


def test_a_router_ignoring_accepting_is_caught():
    with pytest.raises(PolicyCheckError) as info:
        check_router(Newest())
    assert_reported(info.value, "route-accepting", "router 'newest'")
    assert info.value.detail.endswith(("which is provisioning", "which is draining", "which is retired"))


def test_without_the_routing_guard_the_engine_refuses_a_replica_that_is_not_accepting():
    # the engine itself checks each routing choice: the same router, run without the checker, is a PolicyError
    refused = []
    for k in range(10):
        sim = serving_scenario(0, k).simulation(router=Newest(), autoscaler={"name": "queue-length", "interval": 5.0,
                                                                             "cooldown": 20.0, "per_replica": 4.0})
        try:
            sim.run()
        except PolicyError as error:
            refused.append(str(error))
    assert refused and all("router 'newest' chose replica" in m and "which is not accepting" in m for m in refused)


@pytest.mark.parametrize("broken", [Overshoot, Undershoot])
def test_an_autoscaler_asking_for_replicas_out_of_bounds_is_caught(broken):
    with pytest.raises(PolicyCheckError) as info:
        check_autoscaler(broken())
    error = info.value
    assert_reported(error, "valid-decisions", f"autoscaler {broken.name!r}")
    assert f"autoscaler {broken.name!r} asks for" in error.detail and "allowed:" in error.detail


def test_an_autoscaler_without_a_positive_interval_is_refused_before_it_runs():
    with pytest.raises(PolicyCheckError, match="autoscaler-interval") as info:
        check_autoscaler(NoInterval())
    assert info.value.invariant == "autoscaler-interval"


def test_a_colocation_policy_preempting_a_job_that_is_not_running_is_caught():
    with pytest.raises(PolicyCheckError) as info:
        check_colocation(GhostVictims(), examples=30)
    error = info.value
    assert_reported(error, "valid-decisions", "co-location 'ghost-victims'")
    assert "preempts job 10000" in error.detail


def test_serving_checks_report_the_partners_they_cycle_through():
    report = check_router("round-robin", examples=5)
    assert report.runs == 10  # each scenario twice: determinism
    assert any(p.startswith("autoscalers ") and "queue-length" in p for p in report.partners)
    assert "requests" in report.invariants and "device-exclusive" in report.invariants


# ------------------------------------------------------------------------------------------------ command line
def command(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpusim")
    add_command(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_the_command_checks_a_registered_policy(capsys, monkeypatch):
    args = command(["check-policy", "{name: fifo, blocking: false}", "--examples", "2", "--kind", "scheduler"])
    assert args.func(args) == 0
    assert "scheduler 'fifo': passed 2 examples (seed 0)" in capsys.readouterr().out
    monkeypatch.setattr(registry, "_REGISTERED", {})
    registry.register(DoubleStart)
    args = command(["check-policy", "double-start", "--examples", "3"])
    assert args.func(args) == 1
    out = capsys.readouterr().out
    assert out.startswith("gpusim: check failed: scheduler 'double-start' breaks the invariant 'valid-decisions'")


def test_a_tenant_order_that_leaves_a_tenant_out_fails_its_check() -> None:
    from dataclasses import dataclass as _dataclass

    from sim import TenantOrder

    @_dataclass
    class Forgetful(TenantOrder):
        name = "forgetful"

        def order(self, tenants, capacity, now):
            return [t.name for t in tenants][1:]

    with pytest.raises(PolicyCheckError, match=r"tenant order 'forgetful' must return each of the tenants"):
        check_tenant_order(Forgetful(), examples=6)

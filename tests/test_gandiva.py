"""Gandiva-style packing: the pair mechanism (``sim.training.packing``, ``Assignment.pack_with``), its replay check
(``sim.packing_checks``) and the ``gandiva`` scheduler (``policies.schedulers.gandiva``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.schedulers import Gandiva
from sim import Cluster, PoolSpec, PreemptionCost, Simulation
from sim.errors import ConfigError, PolicyError
from sim.packing_checks import check_packing
from sim.training.contracts import Assignment, ClusterView, Decision, Scheduler
from sim.training.jobs import JobRecord
from sim.training.packing import PackingBook
from workloads import TrainingJob
from workloads.errors import WorkloadError
from workloads.traces.gavel import Colocations, colocation_slowdown, generate_gavel_jobs, load_gavel_colocations

GAVEL = load_gavel_colocations()


def hand_table(a: tuple[float, float], b_with_c: tuple[float, float] = (0.0, 0.0)) -> Colocations:
    """Types ``a`` (10 steps/s alone), ``b`` (20), ``c`` (5) on V100s, gang 1: ``a`` with ``b`` packed at ``a``
    (steps/s of each), ``b`` with ``c`` at ``b_with_c``; ``a`` with ``c`` recorded [0, 0]."""
    pairs = {(("a", 1), ("b", 1)): a, (("b", 1), ("a", 1)): a[::-1],
             (("b", 1), ("c", 1)): b_with_c, (("c", 1), ("b", 1)): b_with_c[::-1],
             (("a", 1), ("c", 1)): (0.0, 0.0), (("c", 1), ("a", 1)): (0.0, 0.0)}
    return Colocations(pairs={"v100": pairs}, alone={"v100": {("a", 1): 10.0, ("b", 1): 20.0, ("c", 1): 5.0}},
                       source="hand table")


@dataclass
class Script(Scheduler):
    """Carries out ``steps`` ((time, decision) in order: each at the first pass at or after its time)."""

    name = "script"
    preemptive = True
    packs = True
    steps: list[tuple[float, Decision]] = field(default_factory=list)

    def schedule(self, view: ClusterView) -> Decision:
        decision = Decision()
        if self.steps and view.now >= self.steps[0][0] - 1e-9:
            decision = self.steps.pop(0)[1]
        wake = self.steps[0][0] if self.steps else None
        return Decision(decision.start, decision.preempt, wake if wake is not None and wake > view.now else None)


def one_v100(devices: int = 1) -> Cluster:
    return Cluster([PoolSpec("v100", 1, devices)])


def run(jobs, scheduler, *, cluster=None, colocations=None, preemption=None, seed=0):
    return Simulation(cluster or one_v100(), jobs, scheduler=scheduler, colocations=colocations, record_events=True,
                      preemption=preemption or PreemptionCost(0.0, 0.0), seed=seed).run()


def replay(res, jobs, cluster=None, colocations=None, preemption=None):
    book = PackingBook(np.random.default_rng(0), colocations)
    return check_packing(cluster or one_v100(), jobs, preemption or PreemptionCost(0.0, 0.0), res, book)


# ---------------------------------------------------------------------------------------------- the mechanism
def test_a_hand_computed_pair_finishes_when_its_packed_and_alone_speeds_say():
    # a alone 0..100 (100 s of work), then packed with b: a at 6/10, b at 15/20 of their alone speeds; a's 900 s
    # left take 1,500 s, by when b did 1,125 s; b's 1,875 s left run alone again.
    table = hand_table((6.0, 15.0))
    jobs = [TrainingJob(0, 0.0, 1, 1000.0, job_type="a"), TrainingJob(1, 100.0, 1, 3000.0, job_type="b")]
    script = Script(steps=[(0.0, Decision(start=(Assignment(0, (0,)),))),
                           (100.0, Decision(start=(Assignment(1, (0,), pack_with=0),)))])
    res = run(jobs, script, colocations=table)
    j = res.jobs.set_index("job_id")
    assert math.isclose(j.loc[0, "finish"], 1600.0, rel_tol=1e-12)
    assert math.isclose(j.loc[1, "finish"], 1600.0 + 1875.0, rel_tol=1e-12)
    assert math.isclose(j.loc[0, "packed_seconds"], 1500.0) and math.isclose(j.loc[1, "packed_seconds"], 1500.0)
    # each is charged half the device while packed: the two add up to the device's busy time
    assert math.isclose(j.loc[0, "device_seconds"], 100.0 + 750.0)
    assert math.isclose(j.loc[1, "device_seconds"], 750.0 + 1875.0)
    assert math.isclose(j["device_seconds"].sum(), res.jobs["finish"].max())
    kinds = list(res.events["event"])
    assert kinds.count("pack") == 1 and kinds.count("unpack") == 1
    assert replay(res, jobs, colocations=table)["pairs"] == 1


def test_gavel_measured_pair_runs_at_the_files_colocated_speeds():
    # Transformer (batch 16) with ResNet-50 (batch 64) on a V100, as Gavel's file measured them packed (0.20 and
    # 0.57 of their alone speeds: a pair Gandiva would unpack, but the engine runs any measured pair it is given)
    a, b = ("Transformer (batch size 16)", 1), ("ResNet-50 (batch size 64)", 1)
    fa, fb = colocation_slowdown(GAVEL, "v100", a, b)
    assert 0 < fa < 1 and 0 < fb < 1
    jobs = [TrainingJob(0, 0.0, 1, 500.0, job_type=a[0]), TrainingJob(1, 0.0, 1, 2000.0, job_type=b[0])]
    script = Script(steps=[(0.0, Decision(start=(Assignment(0, (0,)), Assignment(1, (0,), pack_with=0))))])
    res = run(jobs, script)
    j = res.jobs.set_index("job_id")
    first = 500.0 / fa
    assert math.isclose(j.loc[0, "finish"], first, rel_tol=1e-9)
    assert math.isclose(j.loc[1, "finish"], first + (2000.0 - first * fb), rel_tol=1e-9)


def test_preempting_one_of_a_pair_puts_the_other_back_to_alone_speed_and_conserves_work():
    # a and b packed at t=0 (0.6 and 0.75); a preempted at 400 (240 s done); b alone from then: 300 s done, 2,700
    # left -> 3,100; a resumes then after 30 s of checkpoint and restore: 760 s left -> 3,890; c last.
    table = hand_table((6.0, 15.0))
    jobs = [TrainingJob(0, 0.0, 1, 1000.0, job_type="a"), TrainingJob(1, 0.0, 1, 3000.0, job_type="b"),
            TrainingJob(2, 0.0, 1, 100.0)]
    script = Script(steps=[(0.0, Decision(start=(Assignment(0, (0,)), Assignment(1, (0,), pack_with=0)))),
                           (400.0, Decision(preempt=(0,))),
                           (3100.0, Decision(start=(Assignment(0, (0,)),))),
                           (3890.0, Decision(start=(Assignment(2, (0,)),)))])
    cost = PreemptionCost(10.0, 20.0)
    res = run(jobs, script, colocations=table, preemption=cost)
    j = res.jobs.set_index("job_id")
    assert math.isclose(j.loc[1, "finish"], 3100.0, rel_tol=1e-12)
    assert math.isclose(j.loc[0, "finish"], 3100.0 + 30.0 + 760.0, rel_tol=1e-12)
    assert math.isclose(j.loc[2, "finish"], 3890.0 + 100.0, rel_tol=1e-12)
    assert j.loc[0, "packed_seconds"] == 400.0 and j.loc[1, "packed_seconds"] == 400.0
    replay(res, jobs, colocations=table, preemption=cost)


def test_a_new_partner_can_join_the_survivor_of_a_pair_in_the_same_decision():
    # preempt a (packed with b) and pack c with b at once: b's devices never free, c runs at 0.5 of alone; once c is
    # done, a packs with b again
    table = hand_table((6.0, 15.0), b_with_c=(10.0, 2.5))
    jobs = [TrainingJob(0, 0.0, 1, 1000.0, job_type="a"), TrainingJob(1, 0.0, 1, 3000.0, job_type="b"),
            TrainingJob(2, 0.0, 1, 100.0, job_type="c")]
    script = Script(steps=[(0.0, Decision(start=(Assignment(0, (0,)), Assignment(1, (0,), pack_with=0)))),
                           (100.0, Decision(preempt=(0,), start=(Assignment(2, (0,), pack_with=1),))),
                           (300.0, Decision(start=(Assignment(0, (0,), pack_with=1),)))])
    res = run(jobs, script, colocations=table)
    j = res.jobs.set_index("job_id")
    assert math.isclose(j.loc[2, "finish"], 100.0 + 100.0 / 0.5, rel_tol=1e-12)  # c at 2.5 of its 5 steps/s
    replay(res, jobs, colocations=table)


def bad(decision: Decision, jobs=None, cluster=None, table=None, scheduler=None):
    jobs = jobs or [TrainingJob(0, 0.0, 1, 100.0, job_type="a"), TrainingJob(1, 0.0, 1, 100.0, job_type="b"),
                    TrainingJob(2, 0.0, 1, 100.0, job_type="c"), TrainingJob(3, 0.0, 2, 100.0, job_type="b")]
    script = scheduler or Script(steps=[(0.0, Decision(start=(Assignment(0, (0,)),))), (1.0, decision)])
    with pytest.raises(PolicyError) as error:
        run(jobs, script, cluster=cluster or one_v100(2),  # (co-located speeds are for a scheduler that packs)
            colocations=(table or hand_table((6.0, 15.0), (4.0, 4.0))) if script.packs else None)
    assert repr(script.name) in str(error.value)
    return str(error.value)


@pytest.mark.parametrize(("decision", "words"), [
    (Decision(start=(Assignment(1, (1,), pack_with=0),)), "exactly its partner's devices"),
    (Decision(start=(Assignment(1, (0,), pack_with=7),)), "not running"),
    (Decision(start=(Assignment(1, (0,), pack_with=1),)), "with itself"),
    (Decision(start=(Assignment(2, (0,), pack_with=0),)), "[0, 0]"),  # a with c: recorded [0, 0]
    (Decision(start=(Assignment(3, (0,), pack_with=0),)), "same size"),
    (Decision(start=(Assignment(0, (0,), pack_with=1),)), "not waiting"),
    (Decision(start=(Assignment(1, (0,), pack_with=0), Assignment(2, (0,), pack_with=0))), "two jobs at most"),
])
def test_a_broken_packing_decision_is_a_policy_error_naming_the_policy(decision, words):
    assert words in bad(decision)


def test_a_third_job_on_a_running_pair_and_an_unknown_type_are_refused():
    steps = [(0.0, Decision(start=(Assignment(0, (0,)), Assignment(1, (0,), pack_with=0)))),
             (1.0, Decision(start=(Assignment(2, (0,), pack_with=0),)))]
    assert "already runs packed" in bad(Decision(), scheduler=Script(steps=steps))
    jobs = [TrainingJob(0, 0.0, 1, 100.0, job_type="a"), TrainingJob(1, 0.0, 1, 100.0)]  # no type
    assert "not measured" in bad(Decision(start=(Assignment(1, (0,), pack_with=0),)), jobs=jobs)


def test_a_scheduler_that_does_not_say_it_packs_cannot_pack():
    @dataclass
    class Quiet(Script):
        name = "quiet"
        packs = False

    steps = [(0.0, Decision(start=(Assignment(0, (0,)), Assignment(1, (0,), pack_with=0))))]
    assert "packs = True" in bad(Decision(), scheduler=Quiet(steps=steps))


def test_packing_refuses_what_assumes_one_job_per_device():
    jobs = [TrainingJob(0, 0.0, 1, 100.0)]
    with pytest.raises(ConfigError, match="network model"):
        Simulation(one_v100(), jobs, scheduler=Gandiva(), network=True)
    with pytest.raises(ConfigError, match="colocations"):
        Simulation(one_v100(), jobs, scheduler=Gandiva(), colocations={"v100": {}})  # type: ignore[arg-type]


def test_job_type_is_checked_and_carried_by_gavel_jobs():
    with pytest.raises(WorkloadError, match="job_type"):
        TrainingJob(0, 0.0, 1, 1.0, job_type="")
    trace = generate_gavel_jobs(5, 100.0, seed=2)
    assert all(job.job_type and job.name.endswith(job.job_type) for job in trace.jobs)


# ---------------------------------------------------------------------------------------------- the policy
def records(specs, cluster):
    return [JobRecord(spec, tuple(range(len(cluster.pools))), {p: 1.0 for p in range(len(cluster.pools))}).view
            for spec in specs]


def test_gandiva_unpacks_a_pair_below_one_combined_throughput_and_keeps_the_others():
    # Gavel's step 1 on a hand table: a-b packed at 0.3 + 0.3 (below 1) is broken, b-c at 1.2 + 0.2... kept
    table = Colocations(
        pairs={"v100": {(("a", 1), ("b", 1)): (3.0, 6.0), (("b", 1), ("a", 1)): (6.0, 3.0),
                        (("c", 1), ("d", 1)): (4.0, 2.0), (("d", 1), ("c", 1)): (2.0, 4.0)}},
        alone={"v100": {("a", 1): 10.0, ("b", 1): 20.0, ("c", 1): 5.0, ("d", 1): 4.0}}, source="hand")
    cluster = one_v100(8)
    specs = [TrainingJob(i, 0.0, 1, 10.0, job_type=t) for i, t in enumerate("abcd")]
    view = SimpleNamespace(packing=PackingBook(np.random.default_rng(0), table), cluster=cluster)
    policy = Gandiva()
    policy._state = {"pairs": {0: 1, 1: 0, 2: 3, 3: 2}}
    jobs = records(specs, cluster)
    assert math.isclose(Gandiva.combined(jobs[0], jobs[1], view), 0.6)
    assert math.isclose(Gandiva.combined(jobs[2], jobs[3], view), 1.3)
    allocation = policy.allocate(jobs, view)  # 4 jobs on 8 devices: everything fits, nothing is paired anew
    assert policy._state["pairs"] == {2: 3, 3: 2} and policy._state["unpacked"] == 1
    assert all(math.isclose(allocation[i][0], 1.0) for i in range(4))  # 8 devices / 4 units, capped at 1
    policy.allocate(jobs[:3], view)  # d left: its pair goes too
    assert policy._state["pairs"] == {}


def test_gandiva_packs_only_when_the_jobs_ask_for_more_devices_than_there_are():
    table = hand_table((6.0, 15.0))
    specs = [TrainingJob(0, 0.0, 1, 10.0, job_type="a"), TrainingJob(1, 0.0, 1, 10.0, job_type="b")]
    for devices, paired in ((2, False), (1, True)):
        cluster = one_v100(devices)
        view = SimpleNamespace(packing=PackingBook(np.random.default_rng(0), table), cluster=cluster)
        policy = Gandiva()
        policy._state = {}
        allocation = policy.allocate(records(specs, cluster), view)
        assert (policy._state["pairs"] == {0: 1, 1: 0}) is paired
        # equal time per unit: one pair on one device gets all of it; two singles on two devices get all of it each
        assert all(math.isclose(allocation[i][0], 1.0) for i in range(2))


def test_gandiva_never_packs_a_pair_recorded_zero_or_a_job_without_a_type():
    table = Colocations(pairs={"v100": {(("a", 1), ("a", 1)): (0.0, 0.0)}}, alone={"v100": {("a", 1): 10.0}},
                        source="all [0, 0]")
    jobs = [TrainingJob(i, 0.0, 1, 500.0 + 100 * i, job_type="a" if i % 2 else None) for i in range(6)]
    res = run(jobs, Gandiva(round_s=60.0, min_reset_s=0.0), cluster=one_v100(2), colocations=table)
    assert (res.jobs["status"] == "finished").all()
    assert res.jobs["packed_seconds"].sum() == 0 and "pack" not in set(res.events["event"])


CLUSTER = Cluster([PoolSpec("k80", 1, 4), PoolSpec("p100", 1, 4), PoolSpec("v100", 1, 4)])


@settings(max_examples=8, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), count=st.integers(8, 30), gap=st.sampled_from([0.0, 300.0, 1200.0]),
       cost=st.sampled_from([0.0, 30.0]))
def test_gandiva_on_gavel_workloads_keeps_pairs_well_formed_and_work_conserved(seed, count, gap, cost):
    trace = generate_gavel_jobs(count, gap, seed=seed % 1000, min_duration_h=0.1, max_duration_h=0.5)
    preemption = PreemptionCost(cost, cost)
    res = run(trace, Gandiva(), cluster=CLUSTER, preemption=preemption, seed=seed)
    figures = replay(res, trace.jobs, cluster=CLUSTER, preemption=preemption)  # pack-pair and pack-work, every event
    assert figures["max_jobs_per_device"] <= 2
    assert (res.jobs["status"] == "finished").all()
    assert math.isclose(figures["packed_seconds"], res.jobs["packed_seconds"].sum(), rel_tol=1e-9, abs_tol=1e-6)
    busy = res.jobs["device_seconds"].sum()  # packed jobs are charged half: never more than the devices had
    assert busy <= CLUSTER.num_devices * res.jobs["finish"].max() * (1 + 1e-9)


def test_gandiva_packs_on_an_overloaded_gavel_workload_and_is_deterministic():
    trace = generate_gavel_jobs(40, 0.0, seed=1, min_duration_h=0.2, max_duration_h=1.0)
    first = run(trace, Gandiva(), cluster=CLUSTER, seed=3)
    again = run(trace, Gandiva(), cluster=CLUSTER, seed=3)
    pd.testing.assert_frame_equal(first.jobs, again.jobs)
    pd.testing.assert_frame_equal(first.events, again.events)
    assert first.jobs["packed_seconds"].sum() > 0
    policy = first.summary()["policy"]
    assert policy["pairs_formed"] > 0


def test_accounting_from_the_event_log_charges_each_packed_job_half_the_devices():
    # the event-log walk (pack and unpack events) and the engine's own device_seconds are computed apart: they agree
    from sim.output.accounting import _training_segments

    trace = generate_gavel_jobs(16, 0.0, seed=4, min_duration_h=0.1, max_duration_h=0.3)
    res = run(trace, Gandiva(), cluster=CLUSTER, preemption=PreemptionCost(10.0, 20.0))
    assert res.jobs["packed_seconds"].sum() > 0
    segments, exact = _training_segments(res, CLUSTER, float(res.jobs["finish"].max()))
    held = segments.groupby("job_id")["held"].sum()
    engine = res.jobs.set_index("job_id")["device_seconds"]
    assert exact
    np.testing.assert_allclose(held.reindex(engine.index).to_numpy(), engine.to_numpy(), rtol=1e-9)


def test_the_device_timeline_shows_packed_jobs_on_their_partners_devices():
    # a packed job holds its partner's devices from its pack event (sim.output.trace_events): the two overlap on those
    # rows, each job's intervals add up to its device_seconds plus the half of its packed stretches it was not
    # charged, and each pack and unpack is an instant event on the devices concerned
    from sim.output.trace_events import device_intervals, trace_events

    trace = generate_gavel_jobs(16, 0.0, seed=4, min_duration_h=0.1, max_duration_h=0.3)
    res = run(trace, Gandiva(), cluster=CLUSTER)
    jobs = res.jobs.set_index("job_id")
    assert jobs["packed_seconds"].sum() > 0
    intervals = device_intervals(res)
    held = (intervals["end"] - intervals["start"]).groupby(intervals["job_id"]).sum()
    expected = jobs["device_seconds"] + jobs["packed_seconds"] * jobs["gpus"] / 2
    np.testing.assert_allclose(held.reindex(jobs.index).to_numpy(), expected.to_numpy(), rtol=1e-9)
    overlap = False
    for _, rows in intervals.groupby("device"):
        starts, ends = rows["start"].to_numpy(), rows["end"].to_numpy()
        overlap |= bool((starts[1:] < ends[:-1]).any())  # (sorted by start)
    assert overlap
    events = res.events
    marks = [e for e in trace_events(res)["traceEvents"] if e["ph"] == "i" and e["cat"] in ("pack", "unpack")]
    for kind in ("pack", "unpack"):
        logged = events[events["event"] == kind]
        assert len(logged) > 0
        assert sum(1 for e in marks if e["cat"] == kind) == sum(len(d) for d in logged["devices"])


def _gandiva_config(tmp_path, colocations=None, scheduler="gandiva"):
    """A config file replaying the first 40 jobs of Gavel's Philly traces under ``scheduler`` on 4 K80, P100 and V100
    each for their first 10 simulated hours, arrivals compressed 20 times so that jobs queue (gandiva packs only
    then)."""
    import yaml

    config = {"cluster": {"preset": None, "pools": [{"device": d, "nodes": 1, "devices_per_node": 4}
                                                    for d in ("k80", "p100", "v100")]},
              "workload": {"training": {"trace": "gavel-philly", "limit": 40, "load_scale": 20}},
              "policy": {"scheduler": scheduler}, "sim": {"progress": False, "horizon": 36_000}}
    if colocations is not None:
        config["sim"]["colocations"] = colocations
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_config_names_its_colocation_file_relative_to_its_folder(tmp_path):
    # sim.colocations: the same file as the bundled one packs as the default does; one with every co-located pair
    # recorded [0, 0] (never measured together) packs nothing
    import gzip
    import json

    from sim import load_config, run_config
    from workloads import bundled_path

    with gzip.open(bundled_path("gavel_simulation_throughputs.json.gz"), "rt") as handle:
        table = json.load(handle)
    (tmp_path / "same.json").write_text(json.dumps(table))
    for device in table.values():
        for values in device.values():
            for other in values:
                if other != "null":
                    values[other] = [0.0, 0.0]
    (tmp_path / "never.json").write_text(json.dumps(table))
    packed = {name: run_config(load_config(_gandiva_config(tmp_path, name))).jobs["packed_seconds"].sum()
              for name in (None, "same.json", "never.json")}
    assert packed[None] > 0 and packed["same.json"] == packed[None] and packed["never.json"] == 0


def test_a_missing_colocation_file_or_one_for_a_scheduler_that_does_not_pack_is_a_config_error(tmp_path):
    from sim import load_config, run_config
    from workloads import bundled_path

    with pytest.raises(ConfigError, match=r"sim.colocations: .*nowhere.json.*not a readable Gavel throughputs file"):
        run_config(load_config(_gandiva_config(tmp_path, "nowhere.json")))
    bundled = str(bundled_path("gavel_simulation_throughputs.json.gz"))
    with pytest.raises(ConfigError, match=r"scheduler 'fifo' does not pack jobs"):
        run_config(load_config(_gandiva_config(tmp_path, bundled, scheduler="fifo")))

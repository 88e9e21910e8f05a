"""Hand-worked cases that tell each rule from its near misses (an off-by-one comparison, the wrong quantity
ranked, a reserve taken in the wrong order): each case sits exactly on the boundary the rule draws, so the
plausible one-line mistake next to it gives a different answer. Times and counts are worked out in comments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from policies.colocation import Partitioned
from sim.engine import PreemptionCost, Simulation
from sim.platform.cluster import Cluster, PoolSpec
from sim.platform.hardware import get_device
from sim.registry import create
from sim.serving.contracts import Autoscaler, ServiceView
from sim.serving.replica import BatchingConfig, BatchingReplica
from sim.serving.service import ContextLimitWarning, FixedService, ServiceSpec
from sim.serving.step_factors import default_step_factors
from sim.serving.step_time import StepCost
from workloads import RequestTrace, get_model
from workloads.distributions import Deterministic
from workloads.jobs import TrainingJob

ONE_GPU = Cluster([PoolSpec("h100", 1, 1)])
TWO_GPUS = Cluster([PoolSpec("h100", 1, 2)])
FOUR_GPUS = Cluster([PoolSpec("h100", 1, 4)])
LLAMA_8B = get_model("llama-3.1-8b")
H100_8B = StepCost.for_replica(LLAMA_8B, get_device("h100"), 1, default_step_factors("h100-sxm"))


def run(cluster: Cluster, jobs: list[TrainingJob], **kwargs):
    return Simulation(cluster, jobs, record_events=True, **kwargs).run()


def log(res, *kinds: str) -> list[tuple[float, str, int]]:
    return [(float(t), e, int(j)) for t, e, j, _ in res.events.itertuples(index=False) if e in kinds]


def trace(arrivals: list[float], prompts: list[int], outputs: list[int]) -> RequestTrace:
    return RequestTrace(arrival=np.array(arrivals, dtype=float), prompt_tokens=np.array(prompts),
                        output_tokens=np.array(outputs))


# ------------------------------------------------------------------------------------------ las
def test_las_promotes_a_lone_waiting_job_exactly_at_its_due_time():
    # Rule: a preempted job is promoted once it has waited promote_knob x its run time, i.e. when
    # due <= now; the scheduler wakes itself at the due time. Near miss: due < now -- the wake-up at
    # exactly the due time then promotes nobody, asks for no further wake-up (the due time is not after
    # now), and with no other event the job waits until the running job ends.
    # 1 x 1 GPU, threshold 100 device-seconds, promote_knob 1, checkpoint 5 + restore 5.
    #   t=0    job 0 (1000 s) starts.
    #   t=150  job 1 (1000 s) arrives in queue 0; job 0 has 150 device-seconds (queue 1): preempted.
    #          Job 0's promotion is due at 150 + 1 x 150 = 300.
    #   t=250  job 1 crosses 100 device-seconds into queue 1, job 0's queue: no preemption.
    #   t=300  job 0 is promoted to queue 0 and preempts job 1 (queue 1). Nothing else happens at 300.
    # Under the near miss job 0 waits until job 1 ends at 1150.
    las = {"name": "las", "thresholds": [100.0], "promote_knob": 1.0}
    jobs = [TrainingJob(0, 0.0, 1, 1000.0), TrainingJob(1, 150.0, 1, 1000.0)]
    res = run(ONE_GPU, jobs, scheduler=las, preemption=PreemptionCost(5.0, 5.0))
    assert log(res, "start", "preempt", "finish")[:5] == [
        (0.0, "start", 0), (150.0, "preempt", 0), (150.0, "start", 1), (300.0, "preempt", 1), (300.0, "start", 0)]


@pytest.mark.parametrize(("min_wait", "resumes"), [(0.0, 300.0), (200.0, 350.0)])
def test_las_promotion_waits_knob_times_the_run_time_and_at_least_min_wait(min_wait, resumes):
    # Rule: due = queued_since + max(min_wait, promote_knob x attained / gpus): the time the job ran (its
    # device-seconds over its gang), not its device-seconds; and never sooner than min_wait.
    # 1 x 2 GPUs, threshold 100, promote_knob 1, 5 + 5 s overhead. Job 0 (2 GPUs) runs 0..150: 300
    # device-seconds (queue 1). Job 1 (2 GPUs) arrives at 150 and preempts it; job 1 reaches queue 1 at
    # 150 + 100 / 2 = 200. Job 0 is due at 150 + max(0, 1 x 300 / 2) = 300, or with min_wait 200 at
    # 150 + max(200, 150) = 350, and then preempts job 1.
    # Near misses: device-seconds instead of run time -> 150 + 300 = 450; min instead of max -> 300.
    las = {"name": "las", "thresholds": [100.0], "promote_knob": 1.0, "min_wait": min_wait}
    jobs = [TrainingJob(0, 0.0, 2, 1000.0), TrainingJob(1, 150.0, 2, 1000.0)]
    res = run(TWO_GPUS, jobs, scheduler=las, preemption=PreemptionCost(5.0, 5.0))
    assert log(res, "start", "preempt")[:5] == [
        (0.0, "start", 0), (150.0, "preempt", 0), (150.0, "start", 1), (resumes, "preempt", 1),
        (resumes, "start", 0)]


def test_las_a_job_preempted_exactly_at_a_threshold_waits_in_the_higher_queue():
    # Rule: queue i holds service in [thresholds[i-1], thresholds[i]): a job preempted with exactly 100
    # device-seconds waits in queue 1. Near miss: the half-open interval closed on the other side
    # (bisect_left) for waiting jobs -- it would wait in queue 0 and, arriving first, go before a newer
    # queue-0 job.
    # 1 x 2 GPUs, threshold 100, no starvation guard, 5 + 5 s overhead.
    #   job 0 (2 GPUs, 1000 s) starts at 0; job 1 (1 GPU, 50 s) arrives at 10 and waits (same queue).
    #   t=50   job 0 reaches 100 device-seconds (queue 1): job 1 preempts it and runs 50..100.
    #   t=60   job 2 (2 GPUs, 30 s) arrives in queue 0 and waits (job 1 holds a device, also queue 0).
    #   t=100  job 1 ends: job 2 (queue 0) goes before job 0 (queue 1): 100..130; job 0 resumes at 130,
    #          10 s overhead + 950 s left -> ends 1090.
    las = {"name": "las", "thresholds": [100.0], "promote_knob": 0.0}
    jobs = [TrainingJob(0, 0.0, 2, 1000.0), TrainingJob(1, 10.0, 1, 50.0), TrainingJob(2, 60.0, 2, 30.0)]
    res = run(TWO_GPUS, jobs, scheduler=las, preemption=PreemptionCost(5.0, 5.0))
    assert log(res, "start", "preempt", "finish") == [
        (0.0, "start", 0), (50.0, "preempt", 0), (50.0, "start", 1), (100.0, "finish", 1), (100.0, "start", 2),
        (130.0, "finish", 2), (130.0, "start", 0), (1090.0, "finish", 0)]


# ------------------------------------------------------------------------------------------ srtf
def test_srtf_ranks_by_work_left_not_by_total_duration():
    # Rule: rank by oracle work left. Case: an arrival shorter than the running job's total but longer
    # than its remaining work. 1 x 1 GPU. Job 0 (100 s) runs from 0; job 1 (50 s) arrives at 60, when job 0
    # has 40 s left: 50 > 40, no preemption; job 1 starts when job 0 ends at 100 and ends at 150.
    # Near miss: ranking by total duration (50 < 100) would preempt job 0 at 60.
    jobs = [TrainingJob(0, 0.0, 1, 100.0), TrainingJob(1, 60.0, 1, 50.0)]
    res = run(ONE_GPU, jobs, scheduler="srtf", preemption=PreemptionCost(7.0, 11.0))
    assert log(res, "start", "preempt", "finish") == [
        (0.0, "start", 0), (100.0, "finish", 0), (100.0, "start", 1), (150.0, "finish", 1)]
    assert res.jobs["preemptions"].tolist() == [0, 0]


def test_srtf_does_not_preempt_a_job_with_equal_work_left():
    # Rule (ShortestRemainingTimeFirst docstring): "a waiting job preempts running jobs with strictly more
    # work left". 1 x 2 GPUs, no network.
    #   t=0    job 0 (1 GPU, 10 s) starts.
    #   t=0.5  job 1 (2 GPUs, 50 s) arrives: one device free, and job 0 (9.5 s left) has less work: waits.
    #   t=1    job 2 (1 GPU, 59 s) arrives: job 1 still cannot start, job 2 fits on the free device.
    #   t=10   job 0 ends. Job 1 has 50 s left; job 2 has 59 - 9 = 50 s left: equal, not strictly more,
    #          so job 2 keeps its device, ends at 60, and job 1 runs 60..110.
    # Near miss (the bug this pins, fixed): comparing the whole key (work left, arrival, id), job 1 (arrived
    # earlier) preempted job 2 at 10, for 18 s of checkpoint and restore and no gain.
    jobs = [TrainingJob(0, 0.0, 1, 10.0), TrainingJob(1, 0.5, 2, 50.0), TrainingJob(2, 1.0, 1, 59.0)]
    res = run(TWO_GPUS, jobs, scheduler="srtf", preemption=PreemptionCost(7.0, 11.0))
    assert log(res, "start", "preempt", "finish") == [
        (0.0, "start", 0), (1.0, "start", 2), (10.0, "finish", 0), (60.0, "finish", 2), (60.0, "start", 1),
        (110.0, "finish", 1)]


# ------------------------------------------------------------------------------------------ restore period
def test_no_work_is_done_during_the_restore_after_a_preemption():
    # Rule: a resumed job holds its devices from its start but progresses only once its checkpoint +
    # restore overhead has passed (progress_start). Case: a resumed job preempted right after its restore.
    # 1 x 1 GPU, srtf, checkpoint 7 + restore 11 = 18 s.
    #   job 0 (100 s) runs 0..10 (90 s left); job 1 (5 s) arrives at 10, preempts it, ends at 15.
    #   job 0 resumes at 15: overhead 15..33, then work. Job 2 (1 s) arrives at 35: job 0 has done
    #   35 - 33 = 2 s of work, 88 s left > 1: preempted. Job 2 runs 35..36; job 0 resumes at 36:
    #   36 + 18 + 88 = 142.
    # Near miss (work counted from the resume at 15, restore included): 90 - 20 = 70 s left -> ends at 124.
    jobs = [TrainingJob(0, 0.0, 1, 100.0), TrainingJob(1, 10.0, 1, 5.0), TrainingJob(2, 35.0, 1, 1.0)]
    res = run(ONE_GPU, jobs, scheduler="srtf", preemption=PreemptionCost(7.0, 11.0))
    assert log(res, "start", "preempt", "finish") == [
        (0.0, "start", 0), (10.0, "preempt", 0), (10.0, "start", 1), (15.0, "finish", 1), (15.0, "start", 0),
        (35.0, "preempt", 0), (35.0, "start", 2), (36.0, "finish", 2), (36.0, "start", 0), (142.0, "finish", 0)]
    table = res.jobs.set_index("job_id")
    # two full overheads of 18 s; devices held 10 + 20 + 106 s; queued only before its first start
    assert table.loc[0, ["preemptions", "overhead_seconds", "device_seconds", "first_start", "queueing_delay"]
                     ].tolist() == [2, 36.0, 136.0, 0.0, 0.0]


def test_srtf_sees_no_progress_during_the_restore_when_ranking():
    # Same rule seen by the scheduler: work left does not shrink during the restore. 1 x 1 GPU, srtf, 7 + 11 s.
    #   job 0 (100 s) is preempted at 10 by job 1 (5 s, ends 15) and resumes at 15; restore until 33.
    #   job 2 (80 s) arrives at 35: job 0 has 90 - 2 = 88 s left > 80: job 2 preempts it, runs 35..115;
    #   job 0 resumes at 115: 115 + 18 + 88 = 221.
    # Near miss (restore counted as work): job 0 would have 70 s left < 80: no preemption; job 0 would end
    # at 15 + 18 + 90 = 123 and job 2 start then.
    jobs = [TrainingJob(0, 0.0, 1, 100.0), TrainingJob(1, 10.0, 1, 5.0), TrainingJob(2, 35.0, 1, 80.0)]
    res = run(ONE_GPU, jobs, scheduler="srtf", preemption=PreemptionCost(7.0, 11.0))
    assert log(res, "start", "preempt", "finish")[5:] == [
        (35.0, "preempt", 0), (35.0, "start", 2), (115.0, "finish", 2), (115.0, "start", 0), (221.0, "finish", 0)]


def test_a_job_preempted_during_its_restore_keeps_its_work_and_pays_only_the_restore_spent():
    # Rule: preempted before its restore ends, a job has done no work, and only the overhead time it
    # actually spent counts in overhead_seconds. 1 x 1 GPU, srtf, 7 + 11 s.
    #   job 0 (100 s) preempted at 10 (90 s left) by job 1 (5 s, ends 15); resumes at 15, restore to 33.
    #   job 2 (1 s) arrives at 25, mid-restore: job 0 still has 90 s left: preempted after 10 s of overhead.
    #   job 2 runs 25..26; job 0 resumes at 26: 26 + 18 + 90 = 134. Overhead 10 + 18 = 28 s.
    # Near misses: progress counted during the restore (80 s left, ends 124); the whole 18 s charged for
    # the interrupted restore (overhead 36).
    jobs = [TrainingJob(0, 0.0, 1, 100.0), TrainingJob(1, 10.0, 1, 5.0), TrainingJob(2, 25.0, 1, 1.0)]
    res = run(ONE_GPU, jobs, scheduler="srtf", preemption=PreemptionCost(7.0, 11.0))
    table = res.jobs.set_index("job_id")
    assert table.loc[0, ["preemptions", "overhead_seconds", "finish"]].tolist() == [2, 28.0, 134.0]


# ------------------------------------------------------------------------------------------ easy backfill
def test_easy_backfill_admits_a_job_that_ends_exactly_at_the_shadow_time():
    # Rule: a later job that would hold devices the head needs is backfilled if it ends no later than the
    # head's reservation (the shadow time): ending exactly then delays nobody.
    # 1 x 4 GPUs. Job 0 (3 GPUs, 100 s) runs 0..100; head job 1 (4 GPUs) arrives at 1: shadow time 100,
    # no device spare then. Job 2 (1 GPU, 97 s) arrives at 3 and would end at 3 + 97 = 100 = the shadow
    # time: backfilled at 3. Job 1 starts at 100 as reserved.
    # Near miss: "ends at or after the shadow time" (>=) refuses it: job 2 would wait until 150.
    jobs = [TrainingJob(0, 0.0, 3, 100.0), TrainingJob(1, 1.0, 4, 50.0), TrainingJob(2, 3.0, 1, 97.0)]
    res = run(FOUR_GPUS, jobs, scheduler="easy-backfill")
    assert log(res, "start") == [(0.0, "start", 0), (3.0, "start", 2), (100.0, "start", 1)]


def test_easy_backfill_reserves_at_the_first_end_that_frees_enough_devices():
    # Rule: the head's shadow time is the earliest time enough devices free up; counting stops as soon as
    # free + freed >= the head's gang (the second end is not needed).
    # 1 x 4 GPUs. Jobs 0 (1 GPU, 50 s) and 1 (2 GPUs, 100 s) start at 0; one device stays free.
    #   job 2 (2 GPUs, 10 s) arrives at 1: 1 free < 2. Shadow: 1 free + job 0's device at 50 = 2: shadow
    #          time 50, nothing spare then.
    #   job 3 (1 GPU, 80 s) arrives at 3: it would end at 83 > 50 and take the device the head needs: waits.
    #   t=50  job 2 runs 50..60; t=60 job 3 runs 60..140.
    # Near miss (stop only when free + freed > the gang): the shadow moves to job 1's end at 100 with 2
    # spare, job 3 is backfilled at 3 and the head is delayed to 83.
    jobs = [TrainingJob(0, 0.0, 1, 50.0), TrainingJob(1, 0.0, 2, 100.0), TrainingJob(2, 1.0, 2, 10.0),
            TrainingJob(3, 3.0, 1, 80.0)]
    res = run(FOUR_GPUS, jobs, scheduler="easy-backfill")
    assert log(res, "start") == [(0.0, "start", 0), (0.0, "start", 1), (50.0, "start", 2), (60.0, "start", 3)]


# ------------------------------------------------------------------------------------------ KV cache
def test_kv_capacity_of_llama_8b_on_one_h100_by_hand():
    # Rule: kv_reserve (10%) is a fraction of HBM kept aside first; the weights come out of the rest.
    #   HBM 80e9 B x (1 - 0.10) = 72e9 B; weights 8.03e9 params x 2 B = 16.06e9 B; KV room 55.94e9 B.
    #   KV per token = 2 (K and V) x 32 layers x 8 KV heads x 128 head_dim x 2 B = 131,072 B.
    #   55.94e9 / 131,072 = 426,788.33 -> 426,788 tokens.
    # Near miss (reserve taken after the weights): (80e9 - 16.06e9) x 0.9 / 131,072 = 439,041 (2.9% more).
    assert LLAMA_8B.weight_bytes == 16.06e9 and LLAMA_8B.kv_bytes_per_token == 131_072
    spec = ServiceSpec("chat", trace([0.0], [10], [1]), replicas=1, model=LLAMA_8B, device="h100")
    sim = Simulation(ONE_GPU, [], services=[spec])
    assert sim.services[0].kv_tokens == 426_788
    assert sim.services[0].replicas[0].kv_capacity == 426_788  # type: ignore[union-attr]


def test_a_request_of_exactly_the_kv_capacity_is_served_and_one_token_more_is_rejected():
    # Rule: a request is served if its whole context fits in the replica's KV cache, prompt + output <=
    # capacity (426,788 tokens above), and admitted when its prompt plus its first decode token fit in
    # the free cache. Request 0: 426,787 + 1 = 426,788 tokens, exactly the capacity: served (admitted into
    # the empty cache, 426,787 + 1 <= 426,788, and done after one prefill step of the whole prompt).
    # Request 1: one token more: rejected, the reason naming both numbers.
    # Near misses: "<" instead of "<=" in either check (request 0 rejected, or never admitted).
    requests = trace([0.0, 100.0], [426_787, 426_788], [1, 1])
    spec = ServiceSpec("chat", requests, replicas=1, model=LLAMA_8B, device="h100", context_limit="allow")
    with pytest.warns(ContextLimitWarning):
        res = Simulation(ONE_GPU, [], services=[spec]).run()
    req = res.requests
    assert req["status"].tolist() == ["finished", "rejected"]
    assert "needs 426789 KV tokens, a replica holds 426788" in req.loc[1, "reason"]


def _serve(requests: list[tuple[int, int]], kv_tokens: int,
           coalesce: bool = True) -> tuple[dict[int, float], list[int]]:
    """Requests (prompt, output) all arriving at 0 on one replica run by hand; (finish times, preempted ids)."""
    calls: list[tuple[float, int, object]] = []
    finished: dict[int, float] = {}
    preempted: list[int] = []

    class Listener:
        def admitted(self, request_id: int, time: float) -> None: ...
        def first_token(self, request_id: int, time: float) -> None: ...

        def finished(self, request_id: int, time: float) -> None:
            finished[request_id] = time

        def evicted(self, request_id: int, time: float) -> None:
            preempted.append(request_id)

    def call_at(time: float, fn) -> None:
        calls.append((time, len(calls), fn))

    replica = BatchingReplica(0, H100_8B, kv_tokens, BatchingConfig(), Listener(), call_at,  # type: ignore[arg-type]
                              coalesce=coalesce)
    for i, (prompt, output) in enumerate(requests):
        replica.arrive(i, prompt, output, 0.0)
    while calls:
        calls.sort(key=lambda c: (c[0], c[1]))
        _, _, fn = calls.pop(0)
        fn()  # type: ignore[operator]
    assert replica.kv_used == 0 and replica.outstanding == 0
    return finished, preempted


@pytest.mark.parametrize("coalesce", [False, True], ids=["step-by-step", "coalesced"])
def test_a_decode_step_that_fills_the_kv_cache_to_the_last_token_preempts_nobody(coalesce):
    # Rule: a decode step writes one token per running sequence and needs kv_used + batch <= capacity.
    # Two requests of prompt 10, output 3, arriving together: both admitted (each needs 10 + 1 tokens free),
    # prefilled in one step (20 tokens held, first token each), then two decode steps of 2 tokens each:
    # 20 -> 22 -> 24. With a capacity of 24 the last step fills the cache exactly: no preemption; with 23
    # the newest request is preempted before it (and recomputed later). Step by step, the check runs before
    # the second decode step at 22 + 2 = 24; coalesced, a run takes at most (capacity - used) // batch
    # steps: both at 24 ((24 - 20) // 2 = 2), one at 23, and the check then preempts.
    # Near miss: kv_used + batch >= capacity would preempt at 24 too.
    finished, preempted = _serve([(10, 3), (10, 3)], kv_tokens=24, coalesce=coalesce)
    assert sorted(finished) == [0, 1] and preempted == []
    finished, preempted = _serve([(10, 3), (10, 3)], kv_tokens=23, coalesce=coalesce)
    assert sorted(finished) == [0, 1] and preempted == [1]


def test_a_prompt_that_leaves_exactly_its_first_token_free_is_admitted():
    # Rule: a waiting request is admitted when its prompt plus the token its first decode writes fit in
    # the free cache (need <= free). Capacity 11: a 10-token prompt with output 2 is admitted at once
    # (10 + 1 = 11), prefilled, decodes its second token into the last free slot and finishes.
    # Near miss: need >= free never admits it (the replica has nothing to step and fails).
    finished, preempted = _serve([(10, 2)], kv_tokens=11)
    assert list(finished) == [0] and preempted == []


# ------------------------------------------------------------------------------------------ SLO
def test_a_request_exactly_at_the_ttft_slo_meets_it():
    # Rule: a request meets its TTFT SLO when ttft <= slo_ttft. Fixed 2 s service, one replica:
    #   request 0 at 0: first token at 2, ttft 2.0 = the SLO: met.
    #   request 1 at 1: waits for request 0, first token at 4, ttft 3.0: missed.
    #   request 2 at 10: ttft 2.0: met. Attainment 2 / 3.
    # Near miss: ttft < slo_ttft would count requests 0 and 2 as missed.
    spec = ServiceSpec("q", trace([0.0, 1.0, 10.0], [10, 10, 10], [5, 5, 5]), replicas=1,
                       mode=FixedService(Deterministic(2.0)), slo_ttft=2.0)
    req = Simulation(ONE_GPU, [], services=[spec]).run().requests
    assert req["ttft"].tolist() == [2.0, 3.0, 2.0]
    assert req["slo_met"].tolist() == [True, False, True]


def test_a_request_exactly_at_the_tpot_slo_meets_it_and_one_token_outputs_always_do():
    # Rule: a request meets its TPOT SLO when tpot <= slo_tpot; a one-token output has no TPOT (NaN) and
    # cannot miss it. Request 0 (100 + 11 tokens) is measured once, then the same run is repeated with
    # slo_tpot set to exactly its TPOT (met) and to the next float below (missed). Request 1 (output 1)
    # meets the SLO both times.
    # Near misses: tpot < slo_tpot; "tpot <= slo_tpot" written so that a NaN TPOT fails it.
    requests = trace([0.0, 5.0], [100, 100], [11, 1])

    def slo_met(slo_tpot: float | None):
        spec = ServiceSpec("c", requests, replicas=1, model=LLAMA_8B, device="h100", slo_tpot=slo_tpot)
        return Simulation(ONE_GPU, [], services=[spec]).run().requests

    tpot = float(slo_met(None)["tpot"].iloc[0])
    assert 0 < tpot < 1
    assert slo_met(tpot)["slo_met"].tolist() == [True, True]
    assert slo_met(math.nextafter(tpot, 0.0))["slo_met"].tolist() == [False, True]


# ------------------------------------------------------------------------------------------ autoscalers
def _view(**kwargs) -> ServiceView:
    options = {"name": "s", "now": 1000.0, "replicas": (), "ready": 4, "provisioning": 0, "num_queued": 0,
               "outstanding": 0, "arrivals": 0, "busy_fraction": 0.5, "min_replicas": 1, "max_replicas": 10}
    return ServiceView(**(options | kwargs))


def test_a_scale_down_is_allowed_exactly_when_the_cooldown_has_passed():
    # Rule: after a change, a scale-down waits until `cooldown` seconds have passed (since >= cooldown
    # allows it). queue-length, 10 per replica, cool-down 100 s:
    #   t=1000: 60 outstanding, 4 ready -> 6 (a change).   t=1099.5: 5 outstanding -> held at 6.
    #   t=1100: exactly 100 s later -> down to ceil(5 / 10) = 1.
    # Near miss: since <= cooldown would still hold at 1100.
    scaler = create("autoscaler", {"name": "queue-length", "per_replica": 10.0, "cooldown": 100.0})
    assert scaler.target(_view(now=1000.0, ready=4, outstanding=60)) == 6
    assert scaler.target(_view(now=1099.5, ready=6, outstanding=5)) == 6
    assert scaler.target(_view(now=1100.0, ready=6, outstanding=5)) == 1


def test_a_scale_up_is_allowed_exactly_when_its_cooldown_has_passed():
    # Same rule for scale_up_cooldown 60 s: a change at 1000, up again at exactly 1060, not at 1059.9.
    scaler = create("autoscaler", {"name": "queue-length", "per_replica": 10.0, "scale_up_cooldown": 60.0})
    assert scaler.target(_view(now=1000.0, ready=4, outstanding=60)) == 6
    assert scaler.target(_view(now=1059.9, ready=6, outstanding=95)) == 6
    assert scaler.target(_view(now=1060.0, ready=6, outstanding=95)) == 10


def test_target_utilization_exactly_at_the_target_keeps_the_replica_count():
    # Rule: ceil(ready x busy / utilization), with ready x busy / utilization an exact integer kept as is.
    # 3 ready replicas busy 10% of the time against a 10% target: 3 x 0.1 / 0.1 = 3 exactly, which in
    # floating point is 3.0000000000000004: the rule tolerates that rounding and keeps 3.
    # Near miss: a bare ceil asks for a fourth replica.
    assert 3 * 0.1 / 0.1 > 3  # the rounding the rule must absorb
    scaler = create("autoscaler", {"name": "target-utilization", "utilization": 0.1, "cooldown": 0.0})
    assert scaler.target(_view(ready=3, busy_fraction=0.1)) == 3
    assert scaler.target(_view(now=2000.0, ready=3, busy_fraction=0.2)) == 6


def test_scaling_down_drains_the_newest_of_equally_loaded_replicas():
    # Rule (engine): replicas drained on a scale-down are those still loading first, then the least loaded,
    # newest first. Three idle replicas of a fixed 1 s service; at the tick at 10 the autoscaler asks for 1:
    # replicas 2 and 1 drain (retire at 10), replica 0 serves request 1 at 100.
    # Near miss: oldest first among equals would keep replica 2.
    @dataclass
    class ToOne(Autoscaler):
        name = "to-one"
        interval: float = 10.0

        def target(self, view: ServiceView) -> int:
            return 1

    spec = ServiceSpec("q", trace([0.0, 100.0], [1, 1], [1, 1]), replicas=3, mode=FixedService(Deterministic(1.0)),
                       max_replicas=3)
    res = Simulation(Cluster([PoolSpec("h100", 1, 3)]), [], services=[spec], autoscaler=ToOne()).run()
    assert res.replicas["retired"].tolist() == [101.0, 10.0, 10.0]
    assert res.requests["replica"].tolist() == [0, 0]


# ------------------------------------------------------------------------------------------ co-location
def test_partitioned_fraction_rounds_the_node_count_up():
    # Rule: `fraction` of the pool's nodes, rounded up, the last ones. 4 nodes x 0.3 = 1.2 -> 2 nodes
    # (nodes 2 and 3); 0.25 -> exactly 1 (node 3).
    # Near misses: rounding down (1 node for 0.3), or up past an exact product (2 nodes for 0.25).
    cluster = Cluster([PoolSpec("h100", 4, 8)])
    assert Partitioned(fraction=0.3).inference_nodes(cluster, [0]) == (2, 3)
    assert Partitioned(fraction=0.25).inference_nodes(cluster, [0]) == (3,)

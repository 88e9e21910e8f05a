"""gpusim reproduces the average JCTs Tiresias' own simulator gives for its 60-job example trace.

The figures come from running SymbioticLab/Tiresias' simulator (``simulator/run_sim.py``, Python 2.7) on
``simulator/60_job.csv`` and averaging the ``JCT`` column of the job log it writes (``log.py`` line 345:
``JCT = end_time - submit_time``, whole seconds; the trace's times are whole seconds, so nothing is rounded away):

    python2.7 run_sim.py --cluster_spec=SPEC --scheme=PLACEMENT --trace_file=60_job.csv --schedule=SCHEDULE

Tiresias' schemes map onto gpusim as: ``fifo`` -> ``fifo`` (strict FIFO, head-of-line blocking); ``dlas-gpu`` ->
``las`` with its defaults (queue limits 3,250 and 7,200 GPU-seconds, no starvation rule); ``dlas`` -> ``las`` with
``measure: time``; placement ``count`` -> placer ``count``; ``yarn`` -> placer ``whole-nodes``. Tiresias charges
nothing for a preemption, so neither does gpusim here (no job is preempted on this trace anyway). Tiresias'
``dlas_sim_jobs`` counts free GPUs whatever ``--scheme`` says, so its ``dlas``/``dlas-gpu`` figures are ``count``
figures.
"""

from __future__ import annotations

import pytest

from policies.placers import Count, WholeNodes
from policies.schedulers import Fifo, LeastAttainedService
from sim.engine import PreemptionCost, Simulation
from sim.platform.cluster import Cluster, PoolSpec
from sim.training.contracts import Placer, Scheduler
from workloads import load_tiresias_jobs

# Tiresias' cluster spec simulator/cluster_spec.csv: 1 switch x 16 nodes x 4 GPUs (128 CPUs, 254 GB per node).
TIRESIAS_NODES = 16
# The smaller cluster of the comparison: 4 nodes x 4 GPUs, the same spec with num_node_p_switch = 4.
SMALL_NODES = 4
GPUS_PER_NODE = 4  # simulator/cluster_spec.csv, num_gpu_p_node
NO_PREEMPTION_COST = PreemptionCost(0.0, 0.0)  # Tiresias' simulator resumes a preempted job at once


def mean_jct(nodes: int, scheduler: Scheduler, placer: Placer) -> tuple[float, int]:
    """Average JCT (s) and number of preemptions of the 60-job trace on ``nodes`` x 4 GPUs."""
    # The device type does not matter: trace jobs have no reference device, so they run at their recorded pace.
    cluster = Cluster([PoolSpec("v100", nodes=nodes, devices_per_node=GPUS_PER_NODE)])
    res = Simulation(cluster, load_tiresias_jobs(), scheduler=scheduler, placer=placer, seed=0,
                     preemption=NO_PREEMPTION_COST).run()
    assert (res.jobs["status"] == "finished").all()
    return float(res.jobs["jct"].mean()), int(res.jobs["preemptions"].sum())


@pytest.mark.parametrize(("scheduler", "placer"), [
    (Fifo(), WholeNodes()),  # run_sim.py --schedule=fifo (default --scheme=yarn)
    (Fifo(), Count()),  # --schedule=fifo --scheme=count
    (LeastAttainedService(), Count()),  # --schedule=dlas-gpu
    (LeastAttainedService(measure="time"), Count()),  # --schedule=dlas
], ids=["fifo-yarn", "fifo-count", "dlas-gpu", "dlas"])
def test_tiresias_cluster_spec(scheduler: Scheduler, placer: Placer) -> None:
    # Tiresias' job logs average 178.42 s for fifo, dlas and dlas-gpu: 64 GPUs never hold a job back, so every
    # JCT is the job's duration (their mean is 10,705 / 60 s).
    jct, preemptions = mean_jct(TIRESIAS_NODES, scheduler, placer)
    assert jct == pytest.approx(178.42, abs=0.005)
    assert preemptions == 0


def test_small_cluster_fifo_with_counting() -> None:
    # Tiresias: --cluster_spec 4 x 4, --scheme=count --schedule=fifo -> 200.82 s.
    jct, _ = mean_jct(SMALL_NODES, Fifo(), Count())
    assert jct == pytest.approx(200.82, abs=0.005)


@pytest.mark.parametrize("measure", ["gpu-time", "time"])
def test_small_cluster_dlas_with_counting(measure: str) -> None:
    # Tiresias: --scheme=count --schedule=dlas-gpu (thresholds 3,250 and 7,200 GPU-seconds, no starvation rule,
    # no preemption cost) -> 190.68 s; --schedule=dlas (the same limits in seconds) gives the same. No job of
    # this trace reaches 3,250 (its largest is 2,440 GPU-seconds, its longest 1,800 s), so all stay in the
    # first queue and the gain over fifo is that a job that does not fit lets later ones that fit start.
    jct, preemptions = mean_jct(SMALL_NODES, LeastAttainedService(measure=measure), Count())
    assert jct == pytest.approx(190.68, abs=0.005)
    assert preemptions == 0


def test_small_cluster_fifo_with_yarn_placement() -> None:
    # Tiresias: --scheme=yarn --schedule=fifo on 4 x 4 -> 219.18 s: 8-GPU jobs need two wholly free nodes.
    jct, _ = mean_jct(SMALL_NODES, Fifo(), WholeNodes())
    assert jct == pytest.approx(219.18, abs=0.005)

"""A run can be paused at the end of an instant and resumed (``Kernel.pause``, ``Simulation.start/advance/finish``),
which the Gymnasium environment uses to hand each decision to an agent: a paused and resumed run is the same run."""

from __future__ import annotations

import pytest

from sim import Cluster, PoolSpec, Simulation
from sim.engine.kernel import EventOrder, Kernel
from workloads.jobs import TrainingJob


def kernel_with_instants(pause_at: set[float]) -> tuple[Kernel, list[tuple[float, str]]]:
    """Events at t = 1, 2, 3, each with an end-of-instant call, which pauses at the times in ``pause_at``."""
    kernel, log = Kernel(), []

    def event(t: float) -> None:
        log.append((t, "event"))

        def end() -> None:
            log.append((t, "end"))
            if t in pause_at:
                kernel.pause()
        kernel.at_end_of_instant(end)

    for t in (1.0, 2.0, 3.0):
        kernel.at(t, EventOrder.ARRIVAL, lambda t=t: event(t))
    return kernel, log


def test_pause_returns_after_the_instants_end_and_run_resumes_there() -> None:
    kernel, log = kernel_with_instants({2.0})
    assert kernel.run(10.0) == 2.0 and kernel.paused and not kernel.exhausted
    assert log == [(1.0, "event"), (1.0, "end"), (2.0, "event"), (2.0, "end")]
    kernel.run(10.0)
    assert not kernel.paused and kernel.exhausted and log[-2:] == [(3.0, "event"), (3.0, "end")]
    plain, plain_log = kernel_with_instants(set())
    plain.run(10.0)
    assert plain_log == log and plain.events == kernel.events == 6


class PauseAtEachArrival:
    """A subsystem that pauses the run at the end of every instant a job arrives."""

    def __init__(self, simulation: Simulation) -> None:
        self.kernel = simulation.kernel
        self.jobs = simulation.jobs

    def start(self) -> None:
        for job in self.jobs:
            self.kernel.at(job.arrival, EventOrder.ARRIVAL, lambda: self.kernel.at_end_of_instant(self.kernel.pause))

    def stop(self, end_time: float) -> None:
        pass

    def may_free_devices(self) -> bool:
        return False


def test_a_run_paused_at_every_arrival_is_the_run() -> None:
    cluster = Cluster([PoolSpec("h100", nodes=1, devices_per_node=8)])
    jobs = [TrainingJob(i, 10.0 * i, 1 + i % 8, 100.0 + 7 * i) for i in range(12)]
    plain = Simulation(cluster, jobs, scheduler="sjf").run()
    paused = Simulation(cluster, jobs, scheduler="sjf", subsystems=[PauseAtEachArrival])
    paused.start()
    pauses = 0
    with pytest.raises(RuntimeError, match="finish"):
        paused.finish()
    while paused.advance():
        pauses += 1
    assert pauses == len(jobs)
    results = paused.finish()
    assert results.jobs[["first_start", "finish"]].equals(plain.jobs[["first_start", "finish"]])
    with pytest.raises(RuntimeError):
        paused.finish()
    with pytest.raises(RuntimeError, match="runs once"):
        paused.run()

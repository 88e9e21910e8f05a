"""Issue 14, item 2: a third kind of work plugs into a run as a subsystem, without edits to the engine."""

from __future__ import annotations

import pytest

from sim import Cluster, ConfigError, PoolSpec, Simulation, StarvationError
from sim.engine.kernel import EventOrder
from workloads.jobs import TrainingJob

CLUSTER = Cluster([PoolSpec("h100", nodes=2, devices_per_node=8)])


class NodeMaintenance:
    """A toy third subsystem: holds node 1 from ``start`` to ``end`` (taken through the ledger, as a replica's
    devices are), then gives it back and wakes training's scheduler."""

    def __init__(self, simulation: Simulation, start: float, end: float | None) -> None:
        self.kernel, self.ledger, self.training = simulation.kernel, simulation.ledger, simulation.training
        self.start_at, self.end_at = start, end
        self.devices = tuple(simulation.cluster.devices_of_node(1))
        self.held = False
        self.log: list[tuple[float, str]] = []

    def start(self) -> None:
        self.kernel.at(self.start_at, EventOrder.ARRIVAL, self._take)

    def _take(self) -> None:
        self.ledger.reserve(self.devices)
        self.held = True
        self.log.append((self.kernel.env.now, "down"))
        if self.end_at is not None:
            self.kernel.at(self.end_at - self.start_at, EventOrder.FINISH, self._give)

    def _give(self) -> None:
        self.ledger.unreserve(self.devices)
        self.held = False
        self.log.append((self.kernel.env.now, "up"))
        self.kernel.last_change = self.kernel.env.now
        self.training.request_pass()

    def stop(self, end_time: float) -> None:
        self.log.append((end_time, "stop"))

    def may_free_devices(self) -> bool:
        return self.held and self.end_at is not None


def test_a_plugged_in_subsystem_holds_devices_and_training_waits_for_them() -> None:
    built: list[NodeMaintenance] = []

    def maintenance(simulation: Simulation) -> NodeMaintenance:
        built.append(NodeMaintenance(simulation, start=0.0, end=500.0))
        return built[0]

    # a 16-GPU job needs both nodes: it starts when node 1 comes back at 500; the 8-GPU job behind it (fifo) waits
    jobs = [TrainingJob(0, 10.0, 16, 100.0), TrainingJob(1, 20.0, 8, 100.0)]
    results = Simulation(CLUSTER, jobs, subsystems=[maintenance]).run()
    table = results.jobs.set_index("job_id")
    assert table.loc[0, "first_start"] == 500.0 and table.loc[0, "finish"] == 600.0
    assert table.loc[1, "first_start"] == 600.0
    assert built[0].log == [(0.0, "down"), (500.0, "up"), (700.0, "stop")]  # stopped with the run


def test_a_subsystem_that_never_gives_devices_back_lets_the_starvation_check_fire() -> None:
    def forever(simulation: Simulation) -> NodeMaintenance:
        return NodeMaintenance(simulation, start=0.0, end=None)

    with pytest.raises(StarvationError):
        Simulation(CLUSTER, [TrainingJob(0, 10.0, 16, 100.0)], subsystems=[forever]).run()


def test_something_that_is_not_a_subsystem_is_refused_by_name() -> None:
    class Half:
        def start(self) -> None: ...

    with pytest.raises(ConfigError, match=r"subsystem Half has no stop\(\) method"):
        Simulation(CLUSTER, [], subsystems=[lambda simulation: Half()])

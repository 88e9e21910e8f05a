"""``SchedulingEnv``: training-job scheduling as a Gymnasium environment.

One step is one scheduling decision of a gpusim run: which of the first ``visible`` (K) queued jobs to start
now, or to wait for the next event. The run is gpusim's own (``sim.engine.Simulation``, its placer, its
validation of every decision); the environment's scheduler (``sim.gym.agent.AgentScheduler``) pauses the kernel
at each decision and carries out the agent's answer.

**Decision points.** A scheduling pass (after an arrival or a completion, and after each start) at which at least
one of the first K queued jobs fits the free devices. Passes at which none does are waited through without
asking. The episode ends (``terminated``) when the run has no event left: every job has finished (jobs no pool
can ever hold are ``unschedulable`` at arrival and never enter the queue).

**Action** ``Discrete(K + 1)``: ``i < K`` starts the i-th queued job (queue order: arrival) on the devices the
run's placer gives it; ``K`` waits until the next arrival or completion. An action that cannot be carried out (an
empty slot, a job that does not fit the free devices, or waiting while nothing runs and no job is left to arrive,
which would leave the queue waiting for ever) is **a no-op with a penalty**: the run does not move, the reward
is ``-invalid_penalty`` and ``info["invalid_action"]`` is True. ``action_masks()`` (and ``info["action_mask"]``)
says which actions are valid. An action outside the action space raises ``sim.errors.ActionError``.

**Reward**: minus the number of jobs in the system (queued or running) integrated over the simulated time the
step covers, in ``time_unit`` seconds (hours by default): ``-(1/time_unit) * integral of N(t) dt``. The steps
of an episode cover it from time 0 to the last completion, so the return is ``-(sum of JCTs) / time_unit`` minus
the penalties: maximizing return is minimizing mean job completion time (the job count is fixed by the
scenario).

**Observation** (``gymnasium.spaces.Dict``), every entry in [0, 1]; a time ``x`` (seconds) reads
``x / (x + time_unit)``: 0 at 0, 1/2 at one time unit, towards 1 for long times.

- ``jobs``: ``(K, 5)`` float32, one row per queue slot (zeros past the queue's end; ``JOB_FEATURES``): present (1),
  GPUs asked over the largest pool's devices, time waited so far, the job's run-time estimate (its
  ``duration_estimate`` when the trace gives one, else its run time on its reference device, the oracle figure
  gpusim's ``sjf`` reads) and the service attained so far (device-seconds, as a time).
- ``action_mask``: ``(K + 1,)`` int8, 1 where the action is valid (the last entry: wait).
- ``free``: ``(pools,)`` float32, each pool's free devices over its devices.
- ``system``: ``(2,)`` float32: jobs queued (all, not only the K shown) as ``q / (q + K)``, and jobs running over
  the cluster's devices.

**Seeding**: ``reset(seed=s)`` runs the scenario with gpusim seed ``s`` (the workload generator's and the
placer's named streams), so an episode reset with ``s`` is the run ``gpusim`` makes with seed ``s``: same seed,
same episode. ``reset()`` without a seed draws the next episode's seed from the environment's ``np_random``.
A decision point asks the placer where each shown job would go; with a placer that draws random numbers
(``random``) those trial placements draw from the placement stream too, so the run is a valid run but not the
one gpusim makes with that seed and a built-in scheduler. Deterministic placers (``first-fit``, the default,
``consolidate``, ...) draw nothing, and the fifo and sjf baselines then make gpusim's ``fifo`` and ``sjf`` runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from sim.engine.simulation import Simulation
from sim.errors import ActionError, ConfigError
from sim.experiments.config import Config, load_config
from sim.experiments.scenario import build_cluster, build_simulation
from sim.gym.agent import AgentScheduler, DecisionPoint
from sim.output.results import Results
from sim.platform.cluster import Cluster
from sim.training.contracts import Assignment
from sim.training.jobs import JobRecord, JobStatus
from workloads.jobs import JobTrace, TrainingJob

JOB_FEATURES = ("present", "gpus_share", "waited", "duration_estimate", "attained_service")
"""The columns of the ``jobs`` observation, in order."""

Workload = JobTrace | Iterable[TrainingJob] | Callable[[int], JobTrace | Iterable[TrainingJob]]


class SchedulingEnv(gymnasium.Env):  # type: ignore[type-arg]
    """Training-job scheduling on a gpusim scenario as a Gymnasium environment (module docstring: spaces, reward,
    invalid actions, seeding).

    The scenario is a gpusim config (a path, a mapping or a ``Config``, as ``gpusim run`` takes; its training
    workload, cluster, placer and preemption costs; no inference services, quotas or horizon), or a ``cluster``
    with ``jobs`` (a list of ``TrainingJob``, a ``JobTrace``, or a function of the episode seed returning
    either) and a ``placer``. ``visible``: the K queue slots an action can start; ``time_unit``: seconds per unit
    of reward and of the time features; ``max_steps``: truncate an episode after that many steps (None: never).
    """

    metadata = {"render_modes": []}  # noqa: RUF012 (gymnasium's class attribute)

    def __init__(self, config: Config | Mapping[str, Any] | str | Path | None = None, *,
                 cluster: Cluster | None = None, jobs: Workload | None = None,
                 placer: str | Mapping[str, Any] = "first-fit",
                 visible: int = 8, time_unit: float = 3600.0, invalid_penalty: float = 1.0,
                 max_steps: int | None = None) -> None:
        if (config is None) == (cluster is None):
            raise ConfigError("SchedulingEnv: give either a config or a cluster with jobs")
        if cluster is not None and jobs is None:
            raise ConfigError("SchedulingEnv: a cluster needs jobs (a list of TrainingJob, a JobTrace or a function "
                              "of the seed)")
        if isinstance(visible, bool) or not isinstance(visible, int) or visible < 1:
            raise ConfigError(f"SchedulingEnv: visible must be a positive integer, got {visible!r}")
        if not (isinstance(time_unit, (int, float)) and math.isfinite(time_unit) and time_unit > 0):
            raise ConfigError(f"SchedulingEnv: time_unit must be positive seconds, got {time_unit!r}")
        if not (isinstance(invalid_penalty, (int, float)) and math.isfinite(invalid_penalty)
                and invalid_penalty >= 0):
            raise ConfigError(f"SchedulingEnv: invalid_penalty must be a finite number >= 0, got {invalid_penalty!r}")
        if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int)
                                      or max_steps < 1):
            raise ConfigError(f"SchedulingEnv: max_steps must be a positive integer or None, got {max_steps!r}")
        self.config: Config | None = None
        if config is not None:
            self.config = config if isinstance(config, Config) else load_config(config)
            _check_config(self.config)
            cluster = build_cluster(self.config.cluster)
        assert cluster is not None
        self.cluster = cluster
        self._jobs = jobs
        self._placer = placer
        self.visible = visible
        self.time_unit = float(time_unit)
        self.invalid_penalty = float(invalid_penalty)
        self.max_steps = max_steps
        self._largest_pool = max(cluster.pool_devices)
        pools = len(cluster.pools)
        self.action_space = spaces.Discrete(visible + 1)
        self.observation_space = spaces.Dict({
            "jobs": spaces.Box(0.0, 1.0, (visible, len(JOB_FEATURES)), np.float32),
            "action_mask": spaces.MultiBinary(visible + 1),
            "free": spaces.Box(0.0, 1.0, (pools,), np.float32),
            "system": spaces.Box(0.0, 1.0, (2,), np.float32),
        })
        self.simulation: Simulation | None = None
        self._agent: AgentScheduler | None = None
        self._results: Results | None = None
        self._done = True
        self._ended = False
        self._steps = 0
        self._area = _Area()
        self._arrivals: _Arrivals | None = None
        self.invalid_actions = 0
        self.episode_seed: int | None = None

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode: the scenario with gpusim seed ``seed`` (or one drawn from ``np_random``), run to its
        first decision point."""
        super().reset(seed=seed)
        self.episode_seed = int(seed) if seed is not None else int(self.np_random.integers(2**63 - 1))
        simulation = self._build(self.episode_seed)
        agent = simulation.scheduler
        assert isinstance(agent, AgentScheduler)
        agent.connect(simulation.kernel.pause, simulation.training.request_pass)
        self.simulation, self._agent, self._results = simulation, agent, None
        self._steps = self.invalid_actions = 0
        self._ended = False
        self._area = _Area()
        self._arrivals = _Arrivals(simulation)
        simulation.start()
        self._done = False
        self._advance()
        return self._observation(), self._info(False)

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Carry out ``action`` (start queue slot ``action`` or, at ``K``, wait) and run to the next decision."""
        if not self.action_space.contains(action):
            raise ActionError(f"SchedulingEnv: action {action!r} is outside the action space {self.action_space} "
                              f"(0..{self.visible - 1} start that queue slot, {self.visible} waits)")
        if self.simulation is None or self._ended:
            raise RuntimeError("SchedulingEnv: call reset() before step(), and again once an episode has ended")
        self._steps += 1
        truncated = self.max_steps is not None and self._steps >= self.max_steps
        if self._done:  # the run ended before any decision (no job, or none schedulable): end the episode
            self._ended = True
            return self._observation(), -self._area.advance(self.simulation, self.time_unit), True, False, \
                self._info(False)
        action = int(action)
        if not self.action_masks()[action]:
            self.invalid_actions += 1
            return self._observation(), -self.invalid_penalty, False, truncated, self._info(True)
        point, agent = self._point, self._agent
        assert point is not None and agent is not None
        if action == self.visible:
            agent.answer(None)
        else:
            devices = point.devices[action]
            assert devices is not None
            agent.answer(Assignment(point.jobs[action].job_id, devices))
        self._advance()
        reward = -self._area.advance(self.simulation, self.time_unit)
        self._ended = self._done
        return self._observation(), reward, self._done, truncated and not self._done, self._info(False)

    def action_masks(self) -> np.ndarray:
        """Which actions are valid now (bool, ``K + 1``; the last is wait): the name sb3-contrib's maskable
        algorithms call."""
        mask = np.zeros(self.visible + 1, dtype=bool)
        point = self._point
        if point is None:
            mask[self.visible] = True  # the run is over: any action ends the episode; wait is the one to give
            return mask
        for i, devices in enumerate(point.devices):
            mask[i] = devices is not None
        simulation = self.simulation
        assert simulation is not None
        assert self._arrivals is not None
        mask[self.visible] = bool(simulation.training.running) or self._arrivals.more_to_come(simulation)
        return mask

    # ------------------------------------------------------------------ what agents and baselines read
    @property
    def decision(self) -> DecisionPoint | None:
        """The pending decision point (the first queued jobs as read-only views, the devices each would get),
        or None once the run is over."""
        return self._point

    def results(self) -> Results:
        """The finished episode's gpusim results (jobs table, summary), as ``Simulation.run()`` returns them."""
        if self._results is None:
            if self.simulation is None or not self._done:
                raise RuntimeError("SchedulingEnv: the episode is not over")
            self._results = self.simulation.finish()
        return self._results

    # ------------------------------------------------------------------ internals
    @property
    def _point(self) -> DecisionPoint | None:
        return None if self._done or self._agent is None else self._agent.point

    def _build(self, seed: int) -> Simulation:
        agent = AgentScheduler(visible=self.visible)
        hold = [lambda simulation: _Deciding(simulation.scheduler)]
        if self.config is not None:
            return build_simulation(self.config, seed=seed, cluster=self.cluster, scheduler=agent, subsystems=hold,
                                    progress=False)
        jobs = self._jobs(seed) if callable(self._jobs) else self._jobs
        assert jobs is not None
        return Simulation(self.cluster, jobs, scheduler=agent, placer=self._placer, seed=seed, subsystems=hold)

    def _advance(self) -> None:
        """Run the kernel to the next decision point, or to the end of the run."""
        simulation = self.simulation
        assert simulation is not None
        if not simulation.advance():
            self._done = True

    def _observation(self) -> dict[str, np.ndarray]:
        jobs = np.zeros((self.visible, len(JOB_FEATURES)), np.float32)
        mask = self.action_masks().astype(np.int8)
        simulation = self.simulation
        assert simulation is not None
        point = self._point
        if point is not None:
            unit = self.time_unit
            for i, job in enumerate(point.jobs):
                spec = job.spec
                estimate = spec.duration if spec.duration_estimate is None else spec.duration_estimate
                times = np.array([point.now - job.queued_since, estimate, job.attained_service(point.now)])
                jobs[i] = (1.0, job.gpus / self._largest_pool, *(times / (times + unit)))
        free = np.asarray(simulation.ledger.free.pool_free, np.float64) / np.asarray(self.cluster.pool_devices)
        queued = len(simulation.training.queue)
        system = np.array([queued / (queued + self.visible),
                           len(simulation.training.running) / sum(self.cluster.pool_devices)], np.float32)
        return {"jobs": jobs, "action_mask": mask, "free": free.astype(np.float32), "system": system}

    def _info(self, invalid: bool) -> dict[str, Any]:
        simulation = self.simulation
        assert simulation is not None
        return {"time": simulation.kernel.now, "invalid_action": invalid, "invalid_actions": self.invalid_actions,
                "action_mask": self.action_masks(),
                "jobs_in_system": len(simulation.training.queue) + len(simulation.training.running)}


class _Area:
    """The area under N(t), jobs in the system, from time 0 up to the time of the last ``advance``: the finished
    jobs' JCTs plus, for each job still in, the time since its arrival. Job records are read in arrival order
    (``TrainingJob.arrival``), so each is looked at when it arrives and when it leaves."""

    def __init__(self) -> None:
        self.seen = 0
        self.open: list[JobRecord] = []
        self.closed = 0.0  # sum of finished jobs' JCTs
        self.last = 0.0  # the area at the last advance

    def advance(self, simulation: Simulation, unit: float) -> float:
        """The area added since the last call, in ``unit`` seconds (now: the kernel's clock, or the run's end)."""
        now = simulation.kernel.now
        records = simulation.training.records
        for record in records[self.seen:]:
            if record.status is not JobStatus.UNSCHEDULABLE:
                self.open.append(record)
        self.seen = len(records)
        still = []
        for record in self.open:
            if record.status is JobStatus.FINISHED:
                self.closed += record.finish - record.spec.arrival
            else:
                still.append(record)
        self.open = still
        area = self.closed + math.fsum(now - r.spec.arrival for r in still)
        added, self.last = area - self.last, area
        return added / unit


class _Arrivals:
    """Whether a job that can enter the queue is still to arrive (jobs no pool can hold never enter it, nor wake
    the scheduler): waiting with nothing running is valid only then."""

    def __init__(self, simulation: Simulation) -> None:
        training = simulation.training
        self.schedulable = sum(1 for spec in simulation.jobs if training.new_record(spec).allowed_pools)
        self.arrived = 0  # schedulable jobs arrived so far
        self.seen = 0

    def more_to_come(self, simulation: Simulation) -> bool:
        records = simulation.training.records
        self.arrived += sum(1 for record in records[self.seen:] if record.status is not JobStatus.UNSCHEDULABLE)
        self.seen = len(records)
        return self.arrived < self.schedulable


class _Deciding:
    """A subsystem with no work of its own that tells the engine's starvation check a decision is pending: while
    the agent holds one, the queue may still change, though no job runs and none is left to arrive."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def start(self) -> None:
        pass

    def stop(self, end_time: float) -> None:
        pass

    def may_free_devices(self) -> bool:
        return self.agent.point is not None


def _check_config(config: Config) -> None:
    """The scenario must be training jobs alone, run to the end."""
    if config.workload.inference.services:
        raise ConfigError("workload.inference.services: SchedulingEnv schedules training jobs only; remove the "
                          "services")
    if config.cluster.quotas is not None:
        raise ConfigError("cluster.quotas: SchedulingEnv does not support tenant quotas; remove them")
    if config.sim.horizon is not None:
        raise ConfigError("sim.horizon: SchedulingEnv runs each episode to its last completion; remove the horizon")


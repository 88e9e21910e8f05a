"""The Gymnasium environment (``sim.gym``): it passes Gymnasium's checker, is seeded through ``reset``, changes
nothing of the simulation (its fifo and sjf agents make gpusim's fifo and sjf runs), its return is minus the total
JCT, and bad actions get the documented treatment."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

gymnasium = pytest.importorskip("gymnasium")

from gymnasium.utils.env_checker import check_env  # noqa: E402

from sim import preset  # noqa: E402
from sim.errors import ActionError, ConfigError, PolicyError  # noqa: E402
from sim.experiments.config import load_config  # noqa: E402
from sim.experiments.scenario import run_config  # noqa: E402
from sim.gym import ENV_ID, JOB_FEATURES, SchedulingEnv, fifo_action, run_episode, sjf_action  # noqa: E402
from workloads import TrainingJob  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# 60 synthetic jobs on two 8-GPU nodes, loaded enough that jobs queue (gang sizes 1 to 16)
SCENARIO: dict[str, Any] = {
    "cluster": {"preset": "dgx-h100", "nodes": 2},
    "sim": {"progress": False},
    "workload": {"training": {"jobs": 60, "interarrival": {"dist": "exponential", "mean": 120}}},
}


def random_agent(seed: int, masked: bool = True) -> Any:
    """Valid actions at random (``masked``), or any action of the space."""
    rng = np.random.default_rng(seed)

    def act(env: SchedulingEnv) -> int:
        if masked:
            return int(rng.choice(np.flatnonzero(env.action_masks())))
        return int(rng.integers(env.action_space.n))
    return act


def test_check_env_passes_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gymnasium.make(ENV_ID, config=SCENARIO, visible=4)
        check_env(env.unwrapped)
        env.close()


def test_observations_lie_in_the_space_over_a_whole_episode() -> None:
    env = SchedulingEnv(SCENARIO, visible=4)
    obs, _ = env.reset(seed=1)
    agent = random_agent(0)
    seen_queue = False
    while True:
        assert env.observation_space.contains(obs)
        assert obs["jobs"].shape == (4, len(JOB_FEATURES))
        assert (obs["action_mask"] == env.action_masks()).all()
        seen_queue |= obs["jobs"][1, 0] == 1.0  # a second job waiting at some decision
        obs, _, terminated, _, _ = env.step(agent(env))
        if terminated:
            break
    assert seen_queue, "the scenario should make jobs queue"
    assert env.observation_space.contains(obs) and obs["jobs"].sum() == 0  # nothing left at the end


def test_same_seed_same_episode_and_another_seed_another() -> None:
    def episode(env: SchedulingEnv, seed: int) -> tuple[list[Any], list[float]]:
        obs, _ = env.reset(seed=seed)
        agent, observations, rewards = random_agent(7), [obs], []
        while True:
            obs, reward, terminated, _, _ = env.step(agent(env))
            observations.append(obs)
            rewards.append(reward)
            if terminated:
                return observations, rewards

    first, second = SchedulingEnv(SCENARIO, visible=4), SchedulingEnv(SCENARIO, visible=4)
    obs_a, rewards_a = episode(first, 5)
    obs_b, rewards_b = episode(second, 5)
    obs_c, rewards_c = episode(first, 5)  # the same env, reset again with the seed
    assert rewards_a == rewards_b == rewards_c
    for a, b, c in zip(obs_a, obs_b, obs_c, strict=True):
        assert all(np.array_equal(a[key], b[key]) and np.array_equal(a[key], c[key]) for key in a)
    _, rewards_other = episode(first, 6)
    assert rewards_other != rewards_a
    # without a seed, episodes follow from the seed of the first reset: reproducible, and not all the same
    first.reset(seed=11)
    first.reset()
    drawn = first.episode_seed
    second.reset(seed=11)
    second.reset()
    assert second.episode_seed == drawn != 11


@pytest.mark.parametrize(("seed", "scheduler"), [(3, "fifo"), (4, "fifo"), (3, "sjf")])
def test_the_baseline_agents_make_gpusims_own_runs(seed: int, scheduler: str) -> None:
    """The key fidelity check: the environment changes nothing of the simulation. Its fifo agent gives every job
    the start and finish gpusim's ``fifo`` gives it on the same scenario and seed; its sjf agent, seeing the whole
    queue, those of gpusim's ``sjf``."""
    env = SchedulingEnv(SCENARIO, visible=60)
    agent = fifo_action if scheduler == "fifo" else sjf_action
    played = run_episode(env, agent, seed=seed)
    own = run_config(load_config(SCENARIO), seed=seed, scheduler=scheduler)
    mine = played.results.jobs.set_index("job_id").sort_index()
    theirs = own.jobs.set_index("job_id").sort_index()
    assert (mine["status"] == "finished").all() and len(mine) == len(theirs) == 60
    assert (mine["queueing_delay"] > 0).sum() >= 10, "jobs must wait for the schedulers to matter"
    for column in ("first_start", "finish", "jct", "pool"):
        np.testing.assert_array_equal(mine[column].to_numpy(), theirs[column].to_numpy())
    assert played.mean_jct == own.summary()["jobs"]["jct"]["mean"]
    assert played.invalid_actions == 0


def test_sjf_beats_fifo_and_seeing_fewer_jobs_costs_sjf() -> None:
    """Scored by the same reward: sjf's return is above fifo's (shorter mean JCT) on this loaded scenario, and an
    sjf that sees only the head of the queue is fifo without head-of-line blocking."""
    returns = {}
    for visible in (1, 60):
        env = SchedulingEnv(SCENARIO, visible=visible)
        returns["fifo", visible] = run_episode(env, fifo_action, seed=3).episode_return
        returns["sjf", visible] = run_episode(env, sjf_action, seed=3).episode_return
    assert returns["fifo", 1] == returns["fifo", 60] == returns["sjf", 1]
    assert returns["sjf", 60] > returns["fifo", 60]


@pytest.mark.parametrize("time_unit", [3600.0, 60.0])
def test_the_return_is_minus_the_total_jct(time_unit: float) -> None:
    """Any agent, invalid actions included: each reward is minus the jobs in the system integrated over the
    simulated time the step covered (worked out again from the finished run's arrivals and finishes), so the
    rewards add up to minus the sum of the jobs' completion times (in ``time_unit``), minus the penalty for each
    invalid action."""
    env = SchedulingEnv(SCENARIO, visible=4, time_unit=time_unit, invalid_penalty=0.25)
    _, info = env.reset(seed=8)
    agent = random_agent(2, masked=False)
    steps = []  # (time before, time after, reward, invalid)
    while True:
        before = info["time"]
        _, reward, terminated, _, info = env.step(agent(env))
        steps.append((before, info["time"], reward, info["invalid_action"]))
        if terminated:
            break
    jobs = env.results().jobs
    arrival, finish = jobs["arrival"].to_numpy(), jobs["finish"].to_numpy()
    assert np.isfinite(finish).all() and sum(invalid for *_, invalid in steps) == env.invalid_actions > 0
    for before, after, reward, invalid in steps:
        in_system = np.clip(np.minimum(finish, after) - np.maximum(arrival, before), 0.0, None).sum()
        assert reward == pytest.approx(-0.25 if invalid else -in_system / time_unit, rel=1e-9, abs=1e-9)
    expected = -(finish - arrival).sum() / time_unit - 0.25 * env.invalid_actions
    assert sum(reward for _, _, reward, _ in steps) == pytest.approx(expected, rel=1e-9)


def small_env(**kwargs: Any) -> SchedulingEnv:
    """One 8-GPU node; three jobs at time 0 (4, 8 and 2 GPUs), one later."""
    jobs = [TrainingJob(0, 0.0, 4, 100.0), TrainingJob(1, 0.0, 8, 100.0), TrainingJob(2, 0.0, 2, 50.0),
            TrainingJob(3, 500.0, 1, 10.0)]
    return SchedulingEnv(cluster=preset("dgx-h100", nodes=1), jobs=jobs, **kwargs)


def test_an_invalid_action_is_a_no_op_with_the_penalty() -> None:
    env = small_env(visible=4, invalid_penalty=2.0)
    env.reset(seed=0)
    assert env.action_masks().tolist() == [True, True, True, False, True]  # slot 3 is empty
    obs, reward, *_ = env.step(0)  # job 0 takes 4 of the 8 GPUs
    assert reward == 0.0  # no time passed
    assert env.action_masks().tolist() == [False, True, False, False, True]  # job 1 (8 GPUs) no longer fits
    for action in (0, 2, 3):  # a job that does not fit; empty slots
        again, reward, terminated, truncated, info = env.step(action)
        assert (reward, terminated, truncated, info["invalid_action"]) == (-2.0, False, False, True)
        assert all(np.array_equal(again[key], obs[key]) for key in obs) and info["time"] == 0.0
    assert env.invalid_actions == 3
    env.step(1)  # job 2 (2 GPUs); job 1 (8 GPUs) fits only once jobs 2 (t = 50) and 0 (t = 100) have finished:
    # the pass at job 2's finish, where it still does not fit, asks nothing
    assert env.decision is not None and env.decision.now == 100.0
    assert [job.job_id for job in env.decision.jobs] == [1]
    played = run_episode(env, fifo_action, seed=0)  # the episode still ends normally
    assert played.results.jobs["status"].eq("finished").all()


def test_waiting_with_nothing_running_and_nothing_to_come_is_invalid() -> None:
    env = SchedulingEnv(cluster=preset("dgx-h100", nodes=1), jobs=[TrainingJob(0, 0.0, 2, 100.0)], visible=2)
    env.reset(seed=0)
    assert env.action_masks().tolist() == [True, False, False]  # waiting would leave the job waiting for ever
    _, reward, terminated, _, info = env.step(2)
    assert info["invalid_action"] and reward == -1.0 and not terminated
    _, reward, terminated, _, _ = env.step(0)
    assert terminated and reward == pytest.approx(-100.0 / 3600)


def test_waiting_while_jobs_run_moves_to_the_next_event() -> None:
    env = small_env(visible=4)
    env.reset(seed=0)
    env.step(0)  # job 0 (4 GPUs) runs until t = 100
    _, reward, _, _, info = env.step(4)  # wait: jobs 1 and 2 wait with job 0 running, until job 0 finishes
    assert info["time"] == 100.0 and not info["invalid_action"]
    assert reward == pytest.approx(-3 * 100.0 / 3600)  # three jobs in the system for 100 s


@pytest.mark.parametrize("action", [5, -1, 1.5, "0", None, np.int64(9)])
def test_an_action_outside_the_space_is_an_error_naming_it(action: Any) -> None:
    env = small_env(visible=4)
    env.reset(seed=0)
    with pytest.raises(ActionError, match=r"action .* is outside the action space Discrete\(5\)"):
        env.step(action)


def test_every_start_goes_through_the_engines_validation() -> None:
    """A decision point whose devices were tampered with: the engine refuses the start, as it would any
    scheduler's."""
    env = small_env(visible=4)
    env.reset(seed=0)
    env.step(0)  # job 0 holds some devices
    agent = env.simulation.scheduler
    busy = env.simulation.records[0].devices[:2]
    assert [job.job_id for job in agent.point.jobs] == [1, 2] and agent.point.devices[1] is not None
    agent.point = dataclasses.replace(agent.point, devices=(None, busy))
    with pytest.raises(PolicyError, match=r"starts job 2 on devices .* is busy"):
        env.step(1)


def test_no_jobs_ends_at_once() -> None:
    env = SchedulingEnv(cluster=preset("dgx-h100", nodes=1), jobs=[], visible=3)
    obs, info = env.reset(seed=0)
    assert obs["jobs"].sum() == 0 and env.action_masks().tolist() == [False, False, False, True]
    assert env.decision is None and info["jobs_in_system"] == 0
    _, reward, terminated, truncated, _ = env.step(3)
    assert (reward, terminated, truncated) == (0.0, True, False)
    assert len(env.results().jobs) == 0
    with pytest.raises(RuntimeError, match="reset"):
        env.step(3)


def test_max_steps_truncates() -> None:
    env = SchedulingEnv(SCENARIO, visible=4, max_steps=5)
    env.reset(seed=1)
    flags = [env.step(env.visible if env.action_masks()[-1] else 0)[3] for _ in range(5)]
    assert flags == [False] * 4 + [True]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"config": {**SCENARIO, "sim": {"horizon": 100}}}, "sim.horizon"),
    ({"config": {**SCENARIO, "cluster": {"preset": "dgx-h100", "nodes": 2, "quotas": {"a": {"h100": 8}}}}},
     "cluster.quotas"),
    ({"config": SCENARIO, "visible": 0}, "visible must be a positive integer"),
    ({"config": SCENARIO, "time_unit": -1}, "time_unit must be positive"),
    ({"config": SCENARIO, "invalid_penalty": float("nan")}, "invalid_penalty"),
    ({"config": SCENARIO, "max_steps": 0}, "max_steps"),
    ({"cluster": preset("dgx-h100", nodes=1)}, "a cluster needs jobs"),
    ({}, "either a config or a cluster"),
])
def test_bad_settings_are_config_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SchedulingEnv(**kwargs)


def test_gpusim_imports_without_gymnasium_and_the_env_says_how_to_get_it() -> None:
    code = ("import sys; sys.modules['gymnasium'] = None\n"
            "import sim, sim.experiments.scenario, policies, workloads\n"
            "try:\n    import sim.gym\nexcept ImportError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert 'pip install "gpusim[rl]"' in out.stdout


def test_waiting_is_invalid_when_only_jobs_no_pool_can_hold_are_to_come() -> None:
    # job 1 (16 GPUs on an 8-GPU node) never enters the queue nor wakes the scheduler: waiting for it would leave
    # job 0 waiting for ever
    jobs = [TrainingJob(0, 0.0, 2, 100.0), TrainingJob(1, 50.0, 16, 100.0)]
    env = SchedulingEnv(cluster=preset("dgx-h100", nodes=1), jobs=jobs, visible=2)
    env.reset(seed=0)
    assert env.action_masks().tolist() == [True, False, False]
    _, _, terminated, _, _ = env.step(0)
    assert terminated
    assert env.results().jobs.set_index("job_id")["status"].to_dict() == {0: "finished", 1: "unschedulable"}

"""Baseline agents for ``SchedulingEnv`` and the loop that plays an episode.

``fifo_action`` is gpusim's ``fifo`` (strict: the head of the queue or nothing) and ``sjf_action`` its ``sjf``
(the shortest job that fits, on oracle run times; over the K jobs shown, so the same as gpusim's ``sjf`` when K
covers the queue), each as a choice among the environment's actions, so that an agent is scored against them by
the same reward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sim.gym.env import SchedulingEnv
from sim.output.results import Results


def fifo_action(env: SchedulingEnv) -> int:
    """Start the job at the head of the queue if it fits, else wait (strict first in, first out)."""
    return 0 if env.action_masks()[0] else env.visible


def sjf_action(env: SchedulingEnv) -> int:
    """Start the shortest of the jobs shown that fit (run time on the reference device; ties: arrival, id), else
    wait."""
    point, mask = env.decision, env.action_masks()
    if point is None:
        return env.visible
    startable = [i for i in range(len(point.jobs)) if mask[i]]
    if not startable:
        return env.visible
    return min(startable, key=lambda i: (point.jobs[i].spec.duration, point.jobs[i].arrival, point.jobs[i].job_id))


@dataclass(frozen=True)
class EpisodeResult:
    """One episode: its return (sum of rewards), steps, invalid actions and gpusim's results of the run."""

    episode_return: float
    steps: int
    invalid_actions: int
    results: Results

    @property
    def mean_jct(self) -> float:
        """Mean job completion time of the finished jobs, seconds."""
        return float(np.mean(self.results.jobs["jct"].dropna()))


def run_episode(env: SchedulingEnv, agent: Callable[[SchedulingEnv], int], seed: int | None = None) -> EpisodeResult:
    """Reset ``env`` (with ``seed``) and step it with ``agent(env) -> action`` until the episode ends."""
    env.reset(seed=seed)
    total, steps = 0.0, 0
    while True:
        _, reward, terminated, truncated, _ = env.step(agent(env))
        total += reward
        steps += 1
        if terminated or truncated:
            break
    return EpisodeResult(total, steps, env.invalid_actions, env.results())

"""Training-job scheduling as a Gymnasium environment (``SchedulingEnv``) with fifo and sjf baselines scored by
its reward. Needs the optional extra: ``pip install "gpusim[rl]"``.

Importing it registers the environment with Gymnasium as ``ENV_ID`` (``gymnasium.make("gpusim/Scheduling-v0",
config=...)``), as Gymnasium's environment packages do."""

try:
    import gymnasium
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError('sim.gym needs gymnasium, an optional extra: pip install "gpusim[rl]"') from exc

from sim.errors import ActionError
from sim.gym.agent import AgentScheduler, DecisionPoint
from sim.gym.baselines import EpisodeResult, fifo_action, run_episode, sjf_action
from sim.gym.env import JOB_FEATURES, SchedulingEnv

ENV_ID = "gpusim/Scheduling-v0"
"""The Gymnasium id of ``SchedulingEnv``; its keyword arguments go through ``gymnasium.make``."""

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="sim.gym.env:SchedulingEnv")

__all__ = ["ENV_ID", "JOB_FEATURES", "ActionError", "AgentScheduler", "DecisionPoint", "EpisodeResult",
           "SchedulingEnv", "fifo_action", "run_episode", "sjf_action"]

"""Shared checks for the statistical tests, a tiny training scenario for sweep tests, and a replica listener that
records what a serving replica reports, and an autoscaler that steps from one replica to two."""

from __future__ import annotations

from dataclasses import dataclass

from sim.serving.contracts import Autoscaler, ServiceView

Z = 4.0  # two-sided, about 6e-5 chance of a false alarm per check


def assert_close(estimate: float, expected: float, standard_error: float, what: str) -> None:
    """``estimate`` lies within ``Z`` standard errors of ``expected``."""
    assert abs(estimate - expected) <= Z * standard_error, (
        f"{what}: {estimate!r} is not within {Z} x {standard_error:.4g} of {expected!r}")


def tiny_training_config(seed: int, jobs: int) -> dict:
    """A small synthetic training scenario (2 DGX H100 nodes) that runs in a fraction of a second."""
    return {
        "seed": seed,
        "cluster": {"preset": "dgx-h100", "nodes": 2},
        "workload": {"training": {"jobs": jobs, "interarrival": {"dist": "exponential", "mean": 30},
                                  "duration": {"dist": "exponential", "mean": 600},
                                  "gpus": {"dist": "choice", "values": [1, 2, 4, 8]}}},
        "sim": {"progress": False},
    }


class Recorder:
    """A replica listener that keeps every reported time and column by request, the evictions (request, time) and,
    when a test's ``call_at`` counts them, the engine events."""

    def __init__(self) -> None:
        self.times: dict[str, dict[int, float]] = {"admitted": {}, "first_token": {}, "finished": {}}
        self.columns: dict[tuple[int, str], float] = {}
        self.evictions: list[tuple[int, float]] = []
        self.events = 0

    def admitted(self, request_id: int, time: float) -> None:
        self.times["admitted"].setdefault(request_id, time)

    def first_token(self, request_id: int, time: float) -> None:
        self.times["first_token"][request_id] = time

    def finished(self, request_id: int, time: float) -> None:
        self.times["finished"][request_id] = time

    def evicted(self, request_id: int, time: float) -> None:
        self.evictions.append((request_id, time))

    def record(self, request_id: int, column: str, value: float) -> None:
        self.columns[request_id, column] = value


@dataclass
class StepUp(Autoscaler):
    """One replica until t=100, then two."""

    name = "step-up"
    interval: float = 100.0

    def target(self, view: ServiceView) -> int:
        return 2 if view.now >= 100 else 1

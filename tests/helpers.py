"""Shared checks for the statistical tests, and a tiny training scenario for sweep tests."""

from __future__ import annotations

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

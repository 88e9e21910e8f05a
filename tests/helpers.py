"""Shared checks for the statistical tests."""

from __future__ import annotations

Z = 4.0  # two-sided, about 6e-5 chance of a false alarm per check


def assert_close(estimate: float, expected: float, standard_error: float, what: str) -> None:
    """``estimate`` lies within ``Z`` standard errors of ``expected``."""
    assert abs(estimate - expected) <= Z * standard_error, (
        f"{what}: {estimate!r} is not within {Z} x {standard_error:.4g} of {expected!r}")

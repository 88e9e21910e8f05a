"""Fit the step-time factors (``sim.serving.step_factors``) to a measured profile of whole steps.

The profile's format: ``sim.serving.profile``.

``calibrate`` fits the factors by least squares on the relative error ``log(predicted / measured)``, with
fractions in [1e-3, 1] and times in [0, 1 s], from several starting points. A profile may not determine every
factor: ``layer_overhead`` and ``step_overhead`` only ever appear as ``n_layers * layer_overhead +
step_overhead``, so a profile determines their sum and one of them stays at its base value; a decode-only
profile never makes attention compute-bound (``attention_compute``) and cannot tell the per-token elementwise
time from the per-sequence overhead (both scale with the batch). These are found from the Jacobian at the
solution, by a pivoted QR of its columns that keeps the factors explaining the most: a factor is not determined
when changing it by its base value moves the predictions by less than 0.1% RMS once the other fitted factors
compensate, or when its standard error (from the residuals) exceeds half its base value. Such factors are left
at the base values and named in ``Calibration.unidentified``; the others are fitted again without them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.optimize
import yaml

from sim.errors import ConfigError, did_you_mean
from sim.platform.hardware import DeviceSpec, get_device
from sim.serving.profile import load_profile, step_work
from sim.serving.step_factors import FACTORS, FRACTIONS, TIMES, StepFactors, default_step_factors
from sim.serving.step_time import StepCost
from workloads.models import LLMSpec, get_model

FRACTION_BOUNDS = (1e-3, 1.0)
TIME_BOUNDS = (0.0, 1.0)

IDENTIFIABLE_RMS = 1e-3
"""A factor is undetermined when changing it by its base value moves the predictions (log) by less than this RMS
once the other fitted factors compensate."""

MAX_STANDARD_ERROR = 0.5
"""... or when its standard error (from the fit's residuals) exceeds this fraction of its base value."""

_TIME_SCALE = 1e-4  # seconds: the scale of a time factor whose base value is 0


# ----------------------------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class VectorModel:
    """``StepCost.step`` over arrays of steps, as a function of the factors (tested equal to ``StepCost``)."""

    unit: StepCost  # the cost with every fraction 1 and every time 0
    per_layer_overhead: float  # seconds of ``fixed`` per second of ``layer_overhead``

    @classmethod
    def build(cls, model: LLMSpec, device: DeviceSpec, devices: int) -> VectorModel:
        """The model of ``model`` on ``devices`` devices of type ``device``."""
        ones = dict.fromkeys(FRACTIONS, 1.0) | dict.fromkeys(TIMES, 0.0)
        unit = StepCost.for_replica(model, device, devices, StepFactors(**ones))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the format warning, if any, was given once above
            layered = StepCost.for_replica(model, device, devices, StepFactors(**(ones | {"layer_overhead": 1.0})))
        return cls(unit, layered.fixed - unit.fixed)

    def seconds(self, f: Mapping[str, float], tokens: np.ndarray, attended: np.ndarray, kv_read: np.ndarray,
                sequences: np.ndarray) -> np.ndarray:
        """Seconds of each step under the factors ``f`` (a mapping with every name of ``FACTORS``)."""
        u = self.unit
        c = (u.flops_per_token * tokens + u.head_flops * sequences) / (u.compute * f["linear_compute"])
        m = u.weight_bytes / (u.bandwidth * f["linear_bandwidth"])
        p = u.transition
        linear = np.hypot(c, m) if p == 2.0 else (c ** p + m ** p) ** (1.0 / p)
        attention = np.maximum(attended * u.attention_per_pair / f["attention_compute"],
                               kv_read * u.kv_read_per_token / f["attention_bandwidth"])
        comm = np.where(tokens > 0, u.comm_latency + tokens * u.comm_per_token, 0.0)
        fixed = u.fixed + self.per_layer_overhead * f["layer_overhead"] + f["step_overhead"]
        return (linear + tokens * u.elementwise_per_token / f["elementwise_bandwidth"] + attention + fixed
                + sequences * f["sequence_overhead"] + comm)


# ----------------------------------------------------------------------------------------------- the fit
@dataclass(frozen=True, eq=False)
class Calibration:
    """The factors fitted to a profile, and how well they reproduce it."""

    factors: StepFactors
    """All factors: the fitted ones and the base values of the others."""
    table: pd.DataFrame
    """Each profile row with ``predicted_ms`` and ``relative_error`` (predicted / measured - 1)."""
    max_error: float
    """Largest ``|relative_error|``."""
    median_error: float
    """Median ``|relative_error|``."""
    fitted: tuple[str, ...]
    """The factors the profile determined (fitted)."""
    unidentified: tuple[str, ...]
    """Factors asked to be fitted that the profile could not determine: left at the base values."""
    base: StepFactors
    """The values of every factor not fitted."""
    uncertainty: Mapping[str, float] = field(default_factory=dict)
    """Relative standard error of each fitted factor (from the residuals; 0 for an exact fit)."""
    profile: str = "profile"
    """Where the profile came from."""
    default: StepFactors | None = None
    """The device's default factors (what a config's ``step_model`` overrides)."""

    def to_yaml(self) -> str:
        """A ``step_model: {factor: value}`` fragment for a service config: the fitted factors and any base value
        that differs from the device's default."""
        default = self.default or self.base
        values = {key: _round(getattr(self.factors, key)) for key in FACTORS
                  if key in self.fitted or getattr(self.factors, key) != getattr(default, key)}
        lines = [f"# gpusim calibrate: {self.factors.source}; relative error max {self.max_error:.1%}, median "
                 f"{self.median_error:.1%}"]
        if self.unidentified:
            lines.append(f"# not determined by the profile (left at the base values): {', '.join(self.unidentified)}")
        body = yaml.safe_dump({"step_model": values}, sort_keys=False, default_flow_style=False)
        return "\n".join(lines) + "\n" + body


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def calibrate(profile: str | Path | pd.DataFrame, model: str | LLMSpec, device: str | DeviceSpec, *,
              devices: int = 1, fit: Sequence[str] | None = None, base: StepFactors | None = None) -> Calibration:
    """Fit the factors ``fit`` (default: all of ``FACTORS``) of ``model`` on ``devices`` devices of type
    ``device`` (tensor parallel) to ``profile`` (a CSV path or a DataFrame with the profile's columns), the
    other factors held at ``base`` (default: the device's defaults). Factors the profile cannot determine are
    left at ``base`` and named in ``Calibration.unidentified``."""
    spec = model if isinstance(model, LLMSpec) else get_model(model)
    if not isinstance(spec, LLMSpec):
        raise ConfigError(f"model {spec.name!r} is a fixed-cost model: it has no step-time factors to calibrate")
    dev = device if isinstance(device, DeviceSpec) else get_device(device)
    default = default_step_factors(dev.name)
    base = default if base is None else base
    names = tuple(FACTORS if fit is None else fit)
    for key in names:
        if key not in FACTORS:
            raise ConfigError(f"fit: unknown factor {key!r}{did_you_mean(key, FACTORS)}; factors: {', '.join(FACTORS)}")
    names = tuple(dict.fromkeys(names))
    purpose = f"fitting {len(names)} factor{'s' * (len(names) != 1)}"
    rows = load_profile(profile, min_rows=len(names), purpose=purpose)
    source = "a DataFrame" if isinstance(profile, pd.DataFrame) else str(profile)
    vector = VectorModel.build(spec, dev, devices)
    work = step_work(rows)
    measured = rows["ms"].to_numpy(float) / 1e3
    fitter = _Fitter(vector, work, measured, base)

    free = list(names)
    values = base.as_dict()
    unidentified: list[str] = []
    if free:
        values = fitter.fit(free, fitter.starts(free, values))
    while free:
        jac = fitter.jacobian(free, values)
        drop = _undetermined(jac, free, fitter, values)
        if not drop:
            break
        for key in drop:
            free.remove(key)
            values[key] = getattr(base, key)
            unidentified.append(key)
        if free:
            values = fitter.fit(free, [values, *fitter.starts(free, base.as_dict())])
    uncertainty = fitter.uncertainty(free, values) if free else {}

    assumed = tuple(a for a in base.assumed if a not in free)
    factors = StepFactors(**{key: float(values[key]) for key in FACTORS},
                          source=f"calibrated to {source} ({len(rows)} rows)", assumed=assumed)

    cost = StepCost.for_replica(spec, dev, devices, factors)
    predicted = np.array([cost.step(*args) for args in zip(*(w.tolist() for w in work), strict=True)])
    fast = vector.seconds(factors.as_dict(), *work)
    if not np.allclose(fast, predicted, rtol=1e-9, atol=0.0):  # pragma: no cover - guards against drift
        raise RuntimeError("sim.serving.calibrate.VectorModel no longer matches StepCost.step; update it")
    table = rows.copy()
    table["predicted_ms"] = predicted * 1e3
    table["relative_error"] = predicted / measured - 1.0
    errors = table["relative_error"].abs()
    return Calibration(factors=factors, table=table, max_error=float(errors.max()),
                       median_error=float(errors.median()), fitted=tuple(k for k in names if k in free),
                       unidentified=tuple(k for k in names if k in unidentified), base=base,
                       uncertainty=uncertainty, profile=source, default=default)


class _Fitter:
    """Least squares on ``log(predicted / measured)`` over scaled factors ``x = value / scale``."""

    def __init__(self, vector: VectorModel, work: tuple[np.ndarray, ...], measured: np.ndarray,
                 base: StepFactors) -> None:
        self.vector = vector
        self.work = work
        self.log_measured = np.log(measured)
        self.scale = {key: (getattr(base, key) or _TIME_SCALE) for key in FACTORS}
        self.bounds = {key: FRACTION_BOUNDS if key in FRACTIONS else TIME_BOUNDS for key in FACTORS}

    def residuals(self, values: Mapping[str, float]) -> np.ndarray:
        seconds = self.vector.seconds(values, *self.work)
        return np.log(np.maximum(seconds, 1e-300)) - self.log_measured

    def _values(self, free: Sequence[str], x: np.ndarray, values: Mapping[str, float]) -> dict[str, float]:
        out = dict(values)
        out.update({key: float(v) * self.scale[key] for key, v in zip(free, x, strict=True)})
        return out

    def starts(self, free: Sequence[str], values: Mapping[str, float]) -> list[dict[str, float]]:
        """Starting points: ``values`` and three spreads around it."""
        starts = [dict(values)]
        for fraction, time in ((0.5, 2.0), (1.5, 0.5), (None, 1.0)):
            start = dict(values)
            for key in free:
                if key in FRACTIONS:
                    start[key] = 0.5 if fraction is None else values[key] * fraction
                else:
                    start[key] = values[key] * time
            starts.append(start)
        return starts

    def fit(self, free: Sequence[str], starts: Sequence[Mapping[str, float]]) -> dict[str, float]:
        """The best of the fits from ``starts`` (only the ``free`` factors move)."""
        lower = np.array([self.bounds[k][0] / self.scale[k] for k in free])
        upper = np.array([self.bounds[k][1] / self.scale[k] for k in free])
        best: tuple[float, dict[str, float]] | None = None
        # lsmr: the exact solver's SVD of a tall Jacobian can be slowed tenfold by BLAS threads on a busy machine;
        # scipy's lsmr path needs at least two parameters
        solver = "lsmr" if len(free) > 2 else "exact"
        for start in starts:
            x0 = np.clip([start[k] / self.scale[k] for k in free], lower, upper)
            result = scipy.optimize.least_squares(
                lambda x, start=start: self.residuals(self._values(free, x, start)), x0, bounds=(lower, upper),
                method="trf", tr_solver=solver, ftol=1e-12, xtol=1e-12, gtol=1e-12, max_nfev=200 * (len(free) + 1))
            values = self._values(free, result.x, start)
            if best is None or result.cost < best[0]:
                best = (float(result.cost), values)
        assert best is not None
        return best[1]

    def jacobian(self, free: Sequence[str], values: Mapping[str, float]) -> np.ndarray:
        """d residuals / d (value / scale) at ``values`` (central differences)."""
        columns = []
        for key in free:
            step = 1e-5 * max(values[key] / self.scale[key], 1e-2)
            up, down = dict(values), dict(values)
            up[key] += step * self.scale[key]
            down[key] -= step * self.scale[key]
            columns.append((self.residuals(up) - self.residuals(down)) / (2 * step))
        return np.column_stack(columns)

    def standard_errors(self, jac: np.ndarray, values: Mapping[str, float]) -> np.ndarray:
        """Standard errors of the scaled factors from the residuals at ``values`` (zeros for an exact fit)."""
        rows, params = jac.shape
        if rows <= params:
            return np.zeros(params)
        residuals = self.residuals(values)
        sigma2 = float(residuals @ residuals) / (rows - params)
        covariance = sigma2 * np.linalg.pinv(jac.T @ jac)
        return np.sqrt(np.maximum(np.diag(covariance), 0.0))

    def uncertainty(self, free: Sequence[str], values: Mapping[str, float]) -> dict[str, float]:
        """Relative standard error of each free factor at ``values``."""
        errors = self.standard_errors(self.jacobian(free, values), values)
        return {key: (float(e * self.scale[key] / values[key]) if values[key] > 0 else math.inf)
                for key, e in zip(free, errors, strict=True)}


def _undetermined(jac: np.ndarray, free: Sequence[str], fitter: _Fitter, values: Mapping[str, float]) -> list[str]:
    """The free factors the profile cannot determine: beyond the numerical rank of the Jacobian (pivoted QR:
    the factors explaining the most are kept), else the one with the largest standard error if it exceeds
    ``MAX_STANDARD_ERROR``."""
    rows = jac.shape[0]
    _, r, order = scipy.linalg.qr(jac, mode="economic", pivoting=True)
    strength = np.abs(np.diag(r)) / math.sqrt(rows)
    weak = [free[order[k]] for k in range(len(free)) if k >= len(strength) or strength[k] < IDENTIFIABLE_RMS]
    if weak:
        return weak
    errors = fitter.standard_errors(jac, values)
    worst = int(np.argmax(errors))
    return [free[worst]] if errors[worst] > MAX_STANDARD_ERROR else []

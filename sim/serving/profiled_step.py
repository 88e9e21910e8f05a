"""Step times read off a measured profile table, interpolated between its points.

A service given a profile (``ContinuousBatching(profile=...)``, YAML ``step_model: {profile: PATH}``) times its
steps from the table instead of from the factors alone. The table has the format ``gpusim calibrate`` reads
(``sim.serving.profile``) and must be of one replica as the service runs it: the same model, device type and
tensor-parallel degree. The service's factor model (the device's defaults with its ``step_model`` overrides)
gives the shape between and beyond the measured points:

- **decode**: the rows are grouped by batch size. Within a group, the step time is a line in the total context,
  ``a + b * context``: least squares through the group's rows when they have two or more distinct contexts,
  else through its one row with the factor model's context slope. Between the profiled batch sizes ``a`` and
  ``b`` are interpolated linearly in the batch size; beyond them, the factor model's decode line is scaled to
  meet the nearest group. Decode steps stay linear in the context, so runs of decode steps keep their closed
  forms (``StepCost.decode_run``).
- **prefill** (and chunked-prefill steps that carry decodes): the factor model's time times the ratio
  measured / model, which is interpolated linearly in ``log(tokens)`` between the profile's prefill rows (rows
  with the same token count: their geometric mean) and held at the nearest row's ratio beyond them.
- a phase with no row in the profile keeps the factor model's times.

A step of a profiled shape takes its measured time (up to the least-squares line when a batch size was profiled
at three or more contexts). Beyond the table the factor model extrapolates, so calibrating the factors on the
same profile first (``gpusim calibrate``) makes the table's edges meet a model of this replica. FLOPs (for MFU
accounting) are counted from the work, as without a profile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from sim.serving.profile import load_profile, step_work
from sim.serving.step_time import StepCost


@dataclass(frozen=True)
class ProfiledStepCost(StepCost):
    """A ``StepCost`` whose step times follow a measured profile (module docstring). Build with ``from_profile``."""

    decode_batches: tuple[float, ...] = ()  # profiled decode batch sizes, ascending
    decode_intercepts: tuple[float, ...] = ()  # seconds: the decode line's ``a`` at each profiled batch size
    decode_slopes: tuple[float, ...] = ()  # seconds per context token: its ``b``
    prefill_log_tokens: tuple[float, ...] = ()  # log(tokens) of the profiled prefill steps, ascending
    prefill_ratios: tuple[float, ...] = ()  # measured / model at each of them
    source: str = "profile"
    model: StepCost | None = None  # the factor model it interpolates with (``from_profile`` sets it)

    @classmethod
    def from_profile(cls, base: StepCost, profile: str | Path | pd.DataFrame, *,
                     source: str | None = None) -> ProfiledStepCost:
        """``base`` (the factor model of the replica) following the measured ``profile`` (a CSV path or a
        DataFrame with the profile's columns; validated, errors name the file, line and field). ``source``
        names the profile in the run's summary (default: the path)."""
        rows = load_profile(profile, purpose="a step-time table")
        tokens, attended, kv_read, sequences = step_work(rows)
        measured = rows["ms"].to_numpy(float) / 1e3
        prefill = (rows["phase"] == "prefill").to_numpy()

        batches: list[float] = []
        intercepts: list[float] = []
        slopes: list[float] = []
        beta = max(base.attention_per_pair, base.kv_read_per_token)
        decode = pd.DataFrame({"batch": sequences[~prefill], "context": kv_read[~prefill], "s": measured[~prefill]})
        for batch, group in decode.groupby("batch", sort=True):
            a, b = _decode_line(group["context"].to_numpy(float), group["s"].to_numpy(float), beta)
            batches.append(float(batch))
            intercepts.append(a)
            slopes.append(b)

        model = np.array([base.step(*work) for work in zip(tokens[prefill], attended[prefill], kv_read[prefill],
                                                          sequences[prefill], strict=True)])
        ratios = pd.DataFrame({"log_tokens": np.log(tokens[prefill]), "log_ratio": np.log(measured[prefill] / model)})
        by_tokens = ratios.groupby("log_tokens", sort=True)["log_ratio"].mean()
        if source is None:
            source = "a DataFrame" if isinstance(profile, pd.DataFrame) else str(profile)
        return cls(**{f.name: getattr(base, f.name) for f in fields(StepCost)},
                   decode_batches=tuple(batches), decode_intercepts=tuple(intercepts), decode_slopes=tuple(slopes),
                   prefill_log_tokens=tuple(float(x) for x in by_tokens.index),
                   prefill_ratios=tuple(float(math.exp(x)) for x in by_tokens.to_numpy()), source=source,
                   model=base)

    # ----------------------------------------------------------------- one step
    def step(self, tokens: float, attended: float, kv_read: float, sequences: float) -> float:
        """Seconds of one step, read off the profile (module docstring)."""
        assert self.model is not None, "build with ProfiledStepCost.from_profile"
        if tokens == sequences and attended == kv_read and sequences > 0:  # a decode step
            alpha, beta = self._decode_line(int(sequences))
            return alpha + beta * kv_read
        model = self.model.step(tokens, attended, kv_read, sequences)
        if not self.prefill_ratios or tokens <= 0:
            return model
        return model * float(np.interp(math.log(tokens), self.prefill_log_tokens, self.prefill_ratios))

    def _decode_line(self, batch: int) -> tuple[float, float]:
        assert self.model is not None, "build with ProfiledStepCost.from_profile"
        batches = self.decode_batches
        if not batches:
            return self.model._decode_line(batch)
        if batches[0] <= batch <= batches[-1]:
            return (float(np.interp(batch, batches, self.decode_intercepts)),
                    float(np.interp(batch, batches, self.decode_slopes)))
        edge = 0 if batch < batches[0] else -1
        model_alpha, _ = self.model._decode_line(batch)
        edge_alpha, _ = self.model._decode_line(int(batches[edge]))
        return model_alpha * self.decode_intercepts[edge] / edge_alpha, self.decode_slopes[edge]


def _decode_line(context: np.ndarray, seconds: np.ndarray, model_slope: float) -> tuple[float, float]:
    """``(a, b)`` of the decode line ``a + b * context`` through one batch size's measured steps."""
    if np.unique(context).size >= 2:
        b, a = np.polyfit(context, seconds, 1)
        if b >= 0 and a > 0:
            return float(a), float(b)
        if b < 0:  # times that fall with the context: noise around a flat line
            return float(seconds.mean()), 0.0
        # the best line crosses zero above zero context: fit a line through the origin instead
        b = float(np.dot(context, seconds) / np.dot(context, context))
        return 0.0, b
    c, s = float(context.mean()), float(seconds.mean())
    a = s - model_slope * c
    if a > 0:
        return a, model_slope
    return 0.0, s / c  # the model's slope alone would exceed the measured time: all of it scales with context

"""Measured step-time profiles: their format and reading.

Profile format: a CSV file (UTF-8) with a header line and one line per measured step. Blank lines and lines
starting with ``#`` are skipped (anywhere, also before the header); column names are case-insensitive and
columns other than these five are ignored:

- ``phase``: ``prefill`` (a step computing whole prompts) or ``decode`` (one new token per sequence);
- ``batch_size``: sequences in the step, a whole number >= 1;
- ``tokens``: tokens computed in the step: the sum of the prompt lengths (prefill, >= batch_size), equal to
  ``batch_size`` (decode);
- ``context``: context tokens attended and read: the sum of the prompt lengths, equal to ``tokens`` (prefill:
  each prompt attends to itself causally); the sum of the sequences' context lengths, >= ``batch_size`` (decode);
- ``ms``: the measured time of the step in milliseconds, > 0.

A prefill row of ``b`` sequences and ``T`` tokens is taken as ``b`` equal prompts of ``T/b`` tokens: it attends
``b (T/b)(T/b + 1)/2`` (query, key) pairs and reads ``T`` KV tokens. A decode row with context ``C`` attends
and reads ``C``. Example::

    # llama-3.1-8b, 1x H100
    phase,batch_size,tokens,context,ms
    prefill,1,512,512,17.1
    prefill,4,8192,8192,205.8
    decode,64,64,65536,15.9

Both ``gpusim calibrate`` (``sim.serving.calibrate``: fit the factors to a profile) and a service that times its
steps from a profile table (``sim.serving.profiled_step``) read this format.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.errors import ConfigError, did_you_mean

COLUMNS: tuple[str, ...] = ("phase", "batch_size", "tokens", "context", "ms")
"""The columns a profile must have (others are ignored)."""

PHASES: tuple[str, ...] = ("prefill", "decode")


def load_profile(profile: str | Path | pd.DataFrame, *, min_rows: int = 1, purpose: str = "") -> pd.DataFrame:
    """A profile's validated rows from a CSV path (``read_profile``) or a DataFrame (``profile_frame``)."""
    if isinstance(profile, pd.DataFrame):
        return profile_frame(profile, min_rows=min_rows, purpose=purpose)
    return read_profile(profile, min_rows=min_rows, purpose=purpose)


def read_profile(path: str | Path, *, min_rows: int = 1, purpose: str = "") -> pd.DataFrame:
    """The validated rows of the profile CSV at ``path`` (format: the module docstring).

    Columns of the result: ``line`` (line number in the file), ``phase``, ``batch_size``, ``tokens``,
    ``context``, ``ms``. Raises ConfigError naming the file, line and field of the first bad value, or saying
    how many rows are needed (for ``purpose``) when there are fewer than ``min_rows``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the profile: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}, line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the profile "
                          "as UTF-8") from None
    header: list[str] | None = None
    header_line = 0
    rows: list[tuple[int, dict[str, str]]] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in next(csv.reader([line]))]
        if header is None:
            header, header_line = [f.lower() for f in fields], number
            _check_header(header, f"{path}, line {number}")
            continue
        if len(fields) != len(header):
            raise ConfigError(f"{path}, line {number}: {len(fields)} fields, the header (line {header_line}) has "
                              f"{len(header)}")
        rows.append((number, dict(zip(header, fields, strict=True))))
    if header is None:
        raise ConfigError(f"{path}: empty profile (no header line); columns: {', '.join(COLUMNS)}")
    return _validate(rows, lambda number: f"{path}, line {number}", str(path), min_rows, purpose)


def _check_header(header: Sequence[str], where: str) -> None:
    duplicated = sorted({name for name in header if header.count(name) > 1 and name in COLUMNS})
    if duplicated:
        raise ConfigError(f"{where}: column(s) {', '.join(map(repr, duplicated))} given twice")
    missing = [name for name in COLUMNS if name not in header]
    if missing:
        hints = "".join(did_you_mean(name, [h for h in header if h not in COLUMNS]) for name in missing)
        raise ConfigError(f"{where}, field(s) {', '.join(map(repr, missing))}: missing column(s) "
                          f"{', '.join(map(repr, missing))}{hints}; a profile has the columns {', '.join(COLUMNS)}")


def profile_frame(frame: pd.DataFrame, *, min_rows: int = 1, purpose: str = "") -> pd.DataFrame:
    """The validated rows of a profile given as a DataFrame with the profile's columns (as ``read_profile``);
    errors name the row (1-based)."""
    columns = [str(c).strip().lower() for c in frame.columns]
    _check_header(columns, "profile")
    renamed = frame.set_axis(columns, axis=1)
    rows = [(i, {name: record[name] for name in COLUMNS})
            for i, record in enumerate(renamed.to_dict("records"), start=1)]
    return _validate(rows, lambda number: f"profile, row {number}", "profile", min_rows, purpose)


def _validate(rows: list[tuple[int, dict[str, Any]]], where: Any, source: str, min_rows: int,
              purpose: str) -> pd.DataFrame:
    out: dict[str, list[Any]] = {name: [] for name in ("line", *COLUMNS)}
    for number, row in rows:
        loc = where(number)
        phase = str(row["phase"]).strip().lower()
        if phase not in PHASES:
            raise ConfigError(f"{loc}, field 'phase': unknown phase {row['phase']!r}"
                              f"{did_you_mean(phase, PHASES)}; valid: {', '.join(PHASES)}")
        values = {name: _number(row[name], f"{loc}, field {name!r}") for name in COLUMNS[1:]}
        batch, tokens, context, ms = values["batch_size"], values["tokens"], values["context"], values["ms"]
        if batch < 1 or batch != int(batch):
            raise ConfigError(f"{loc}, field 'batch_size': must be a whole number >= 1, got {row['batch_size']!r}")
        if ms <= 0:
            raise ConfigError(f"{loc}, field 'ms': the measured time must be > 0, got {row['ms']!r}")
        if tokens < batch:
            raise ConfigError(f"{loc}, field 'tokens': {tokens:g} tokens for {batch:g} sequences; every sequence "
                              "computes at least one token")
        if phase == "decode" and tokens != batch:
            raise ConfigError(f"{loc}, field 'tokens': a decode step computes one token per sequence, so tokens "
                              f"must equal batch_size ({batch:g}), got {tokens:g}")
        if phase == "decode" and context < batch:
            raise ConfigError(f"{loc}, field 'context': the sum of the {batch:g} sequences' contexts must be >= "
                              f"{batch:g}, got {context:g}")
        if phase == "prefill" and context != tokens:
            raise ConfigError(f"{loc}, field 'context': a prefill's context is the sum of its prompt lengths, "
                              f"= tokens ({tokens:g}), got {context:g}")
        out["line"].append(number)
        out["phase"].append(phase)
        out["batch_size"].append(int(batch))
        for name in ("tokens", "context", "ms"):
            out[name].append(values[name])
    if len(rows) < max(min_rows, 1):
        why = f"; {purpose} needs at least {max(min_rows, 1)}" if purpose else f"; at least {max(min_rows, 1)} needed"
        raise ConfigError(f"{source}: {len(rows)} profile row{'s' * (len(rows) != 1)}{why} (more, and both phases "
                          "over a range of batch sizes and lengths, to determine the step time)")
    return pd.DataFrame(out).astype({"line": int, "batch_size": int, "tokens": float, "context": float,
                                     "ms": float})


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, str):
        if not value.strip():
            raise ConfigError(f"{where}: missing value")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    else:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    if number < 0:
        raise ConfigError(f"{where}: must be >= 0, got {value!r}")
    return number


def step_work(profile: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(tokens, attended, kv_read, sequences)`` of each profile row (the arguments of ``StepCost.step``)."""
    tokens = profile["tokens"].to_numpy(float)
    sequences = profile["batch_size"].to_numpy(float)
    context = profile["context"].to_numpy(float)
    prefill = (profile["phase"] == "prefill").to_numpy()
    prompt = tokens / sequences
    attended = np.where(prefill, sequences * prompt * (prompt + 1) / 2, context)
    kv_read = np.where(prefill, tokens, context)
    return tokens, attended, kv_read, sequences

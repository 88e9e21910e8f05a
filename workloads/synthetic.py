"""Synthetic training workloads: arrivals, durations and gang sizes drawn from independent streams."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

import numpy as np

from workloads.distributions import Distribution
from workloads.errors import WorkloadError
from workloads.jobs import JobTrace, TrainingJob

#: Stream names the generator draws from, one per job attribute.
STREAMS = ("arrivals", "durations", "sizes")


class StreamSource(Protocol):
    """Random generators by stream name: a ``Mapping[str, Generator]`` or the simulator's ``RandomStreams``."""

    def __getitem__(self, name: str, /) -> np.random.Generator: ...


def generate_training_jobs(count: int, interarrival: Distribution, duration: Distribution, gpus: Distribution,
                           rngs: StreamSource, *, allowed_devices: Iterable[str] | None = None,
                           reference_device: str | None = None, tenant: str = "default", where: str = ""
                           ) -> JobTrace:
    """``count`` jobs with inter-arrival, duration and gang size drawn from their own streams.

    Inter-arrivals come from ``rngs["arrivals"]``, durations from ``rngs["durations"]`` and gang sizes
    from ``rngs["sizes"]``, so changing one distribution leaves the other attributes bit-identical.
    Arrivals are the cumulative sums of the inter-arrivals (the first job arrives after one
    inter-arrival). Values that are not valid (negative or NaN inter-arrivals, non-positive durations,
    gang sizes that are not positive integers) raise ``WorkloadError`` naming the key (prefixed with
    ``where``, e.g. ``"workload.training"``) instead of being clipped.
    """
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise WorkloadError(f"{_key(where, 'count')}: must be a non-negative integer, got {count!r}")
    count = int(count)
    streams = {}
    for name in STREAMS:
        try:
            streams[name] = rngs[name]
        except KeyError:
            raise WorkloadError(f"rngs: missing random stream {name!r}; needed: {', '.join(STREAMS)}") from None
    gaps = _check(interarrival.sample(streams["arrivals"], count), _key(where, "interarrival"), count,
                  lambda v: v >= 0, "finite and >= 0")
    lengths = _check(duration.sample(streams["durations"], count), _key(where, "duration"), count,
                     lambda v: v > 0, "finite and > 0 seconds")
    sizes = _check(gpus.sample(streams["sizes"], count), _key(where, "gpus"), count,
                   lambda v: (v > 0) & (v == np.floor(v)), "positive integers (gang sizes)")
    devices = None if allowed_devices is None else tuple(allowed_devices)
    arrivals = np.cumsum(gaps)
    jobs = tuple(
        TrainingJob(job_id=i, arrival=arrival, gpus=size, duration=length, reference_device=reference_device,
                    allowed_devices=devices, tenant=tenant)
        for i, (arrival, size, length) in enumerate(zip(
            arrivals.tolist(), sizes.astype(np.int64).tolist(), lengths.tolist(), strict=True))
    )
    return JobTrace(jobs=jobs, source="synthetic")


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _check(values: np.ndarray, key: str, count: int, valid: Callable[[np.ndarray], np.ndarray], expected: str
           ) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.shape != (count,):
        raise WorkloadError(f"{key}: distribution returned shape {values.shape}, expected ({count},)")
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(~(np.isfinite(values) & valid(values)))
    if bad.size:
        first = int(bad[0])
        raise WorkloadError(f"{key}: distribution produced {values[first]!r} for job {first} "
                            f"({bad.size} of {count} bad); values must be {expected}")
    return values

"""Synthetic workloads: training jobs (arrivals, durations and gang sizes) and inference requests (arrival times and
token counts), each attribute drawn from its own random stream."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Protocol

import numpy as np

from workloads.arrivals import ArrivalProcess
from workloads.distributions import Distribution
from workloads.errors import WorkloadError
from workloads.jobs import JobTrace, TrainingJob
from workloads.requests import DEFAULT_SERVICE, RequestTrace

#: Stream names the training-job generator draws from, one per job attribute.
STREAMS = ("arrivals", "durations", "sizes")
#: Stream names ``generate_requests`` draws from.
REQUEST_STREAMS = ("arrivals", "prompt_tokens", "output_tokens")


class StreamSource(Protocol):
    """Random generators by stream name: a ``Mapping[str, Generator]`` or the simulator's ``RandomStreams``."""

    def __getitem__(self, name: str, /) -> np.random.Generator: ...



def named_streams(rngs: StreamSource, names: tuple[str, ...]) -> dict[str, np.random.Generator]:
    """The generators ``rngs`` gives for ``names``; a missing one is a ``WorkloadError`` listing all it needs."""
    streams = {}
    for name in names:
        try:
            streams[name] = rngs[name]
        except KeyError:
            raise WorkloadError(f"rngs: missing random stream {name!r}; needed: {', '.join(names)}") from None
    return streams

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
    streams = named_streams(rngs, STREAMS)
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


def generate_requests(arrivals: ArrivalProcess, prompt_tokens: Distribution, output_tokens: Distribution,
                      rngs: StreamSource, *, count: int | None = None, horizon: float | None = None,
                      service: str = DEFAULT_SERVICE, where: str = "") -> RequestTrace:
    """Synthetic requests: times from ``arrivals``, lengths from two distributions, each on its own stream.

    Times come from ``rngs["arrivals"]``, prompt lengths from ``rngs["prompt_tokens"]`` and output lengths
    from ``rngs["output_tokens"]``. ``count`` and/or ``horizon`` bound the trace as in
    ``ArrivalProcess.times``. Lengths are rounded up to whole tokens (``ceil``: a draw of 0.3 is one
    token, integer-valued distributions such as ``zipf``, ``choice`` or ``empirical`` are unchanged); a
    draw that is not positive and finite raises ``WorkloadError`` naming the key (prefixed with ``where``).
    """
    streams = named_streams(rngs, REQUEST_STREAMS)
    if not isinstance(service, str) or not service:
        raise WorkloadError(f"{_key(where, 'service')}: must be a non-empty string, got {service!r}")
    times = arrivals.times(streams["arrivals"], count=count, horizon=horizon)
    n = int(times.size)
    lengths = [_lengths(dist.sample(streams[name], n), _key(where, name), n)
               for name, dist in (("prompt_tokens", prompt_tokens), ("output_tokens", output_tokens))]
    return RequestTrace(arrival=times, prompt_tokens=lengths[0], output_tokens=lengths[1], source="synthetic",
                        service=None if service == DEFAULT_SERVICE else np.full(n, service, dtype=object))


def _lengths(values: np.ndarray, key: str, n: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (n,):
        raise WorkloadError(f"{key}: distribution returned shape {values.shape}, expected ({n},)")
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(values) & (values > 0) & (values < 2.0**62))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise WorkloadError(f"{key}: distribution produced {float(values[i])!r} for request {i} "
                            f"({int(bad.sum())} of {n} bad); token counts must be positive and finite")
    return np.ceil(values).astype(np.int64)


def resample_jobs(trace: JobTrace, rng: np.random.Generator | int, *, bin_seconds: float = 3600.0) -> JobTrace:
    """A synthetic variant of a job trace, for confidence intervals over replications of one window: arrivals
    are a Poisson process whose rate follows the trace's own, bin by bin (the expected number of arrivals in
    each ``bin_seconds`` bin is the number the trace has there, so the daily rhythm and busy hours stay), and
    each arriving job is a copy of one of the trace's jobs drawn uniformly with replacement (its gang size, run
    time, tenant and every other field but its id and arrival). The expected offered work equals the trace's.
    Jobs are numbered 0..n-1 in arrival order; ``origin`` is kept. ``rng``: a generator or a seed."""
    if not (isinstance(bin_seconds, (int, float)) and np.isfinite(bin_seconds) and bin_seconds > 0):
        raise WorkloadError(f"resample_jobs: bin_seconds must be a positive number of seconds, got {bin_seconds!r}")
    jobs = list(trace.jobs)
    if not jobs:
        raise WorkloadError("resample_jobs: the trace has no jobs to resample")
    rng = np.random.default_rng(rng)
    arrivals = np.fromiter((job.arrival for job in jobs), dtype=float, count=len(jobs))
    bins = np.floor(arrivals / bin_seconds).astype(np.int64)
    counts = np.bincount(bins)
    drawn = rng.poisson(counts)  # arrivals per bin
    starts = np.repeat(np.arange(counts.size) * bin_seconds, drawn)
    times = np.sort(starts + rng.uniform(0.0, bin_seconds, starts.size))
    picks = rng.integers(0, len(jobs), times.size)
    out = tuple(replace(jobs[i], job_id=n, arrival=float(t)) for n, (i, t) in enumerate(zip(picks.tolist(),
                                                                                          times.tolist(), strict=True)))
    return JobTrace(jobs=out, source=f"{trace.source} (resampled)", origin=trace.origin)

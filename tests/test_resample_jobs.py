"""``workloads.resample_jobs``: synthetic variants of a trace window for replications (notebook 01's confidence
intervals). Checked against what its definition implies: Poisson counts per bin with the trace's counts as means,
jobs copied from the trace, the trace's offered work in expectation (a confidence interval over replications)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats

from workloads import JobTrace, TrainingJob, WorkloadError, load_philly_jobs, resample_jobs


def small_trace() -> JobTrace:
    # 3 busy hours and a quiet one, jobs of different sizes, tenants and lengths
    rng = np.random.default_rng(0)
    hours = [rng.uniform(0, 3600, 40), rng.uniform(3600, 7200, 5), rng.uniform(10800, 14400, 60)]
    times = np.sort(np.concatenate(hours))
    jobs = tuple(TrainingJob(i, float(t), int(rng.choice([1, 2, 8])), float(rng.exponential(600)) + 1,
                             tenant=str(rng.choice(["a", "b"])), name=f"j{i}") for i, t in enumerate(times))
    return JobTrace(jobs=jobs, source="small")


def test_jobs_are_copies_of_trace_jobs_numbered_in_arrival_order():
    trace = small_trace()
    out = resample_jobs(trace, 3)
    originals = {job.name: job for job in trace.jobs}
    assert [job.job_id for job in out.jobs] == list(range(len(out)))
    assert all(a.arrival <= b.arrival for a, b in zip(out.jobs, out.jobs[1:], strict=False))
    for job in out.jobs:
        source = originals[job.name]
        assert dataclasses.replace(job, job_id=source.job_id, arrival=source.arrival) == source
    assert out.source == "small (resampled)" and out.origin == trace.origin


def test_no_arrivals_in_bins_the_trace_leaves_empty():
    out = resample_jobs(small_trace(), 5)
    hours = {int(job.arrival // 3600) for job in out.jobs}
    assert 2 not in hours and hours <= {0, 1, 3}


def test_bin_counts_are_poisson_with_the_traces_counts_as_means():
    trace = small_trace()  # 40, 5, 0, 60 arrivals per hour
    counts = np.array([np.bincount([int(j.arrival // 3600) for j in resample_jobs(trace, seed).jobs], minlength=4)[:4]
                       for seed in range(300)])
    for hour, mean in ((0, 40), (1, 5), (3, 60)):
        sample = counts[:, hour]
        low, high = stats.t.interval(0.999, len(sample) - 1, loc=sample.mean(), scale=stats.sem(sample))
        assert low <= mean <= high
        # Poisson: variance equals mean (dispersion test, two-sided at 0.1%)
        dispersion = (len(sample) - 1) * sample.var(ddof=1) / mean
        assert stats.chi2.ppf(0.0005, len(sample) - 1) <= dispersion <= stats.chi2.ppf(0.9995, len(sample) - 1)


def test_offered_work_matches_the_trace_in_expectation():
    trace = load_philly_jobs(window={"start": "2017-10-23", "days": 2})
    work = sum(job.gpus * job.duration for job in trace.jobs)
    sample = np.array([sum(job.gpus * job.duration for job in resample_jobs(trace, seed).jobs) for seed in range(60)])
    low, high = stats.t.interval(0.999, len(sample) - 1, loc=sample.mean(), scale=stats.sem(sample))
    assert low <= work <= high


def test_same_seed_same_jobs_other_seed_other_jobs():
    trace = small_trace()
    assert resample_jobs(trace, 11).jobs == resample_jobs(trace, np.random.default_rng(11)).jobs
    assert resample_jobs(trace, 11).jobs != resample_jobs(trace, 12).jobs


@pytest.mark.parametrize("bad", [0, -5.0, float("nan"), "1h"])
def test_bad_bin_width_is_named(bad):
    with pytest.raises(WorkloadError, match="bin_seconds"):
        resample_jobs(small_trace(), 0, bin_seconds=bad)


def test_empty_trace_is_refused():
    with pytest.raises(WorkloadError, match="no jobs"):
        resample_jobs(JobTrace(jobs=(), source="empty"), 0)

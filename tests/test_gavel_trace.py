"""``load_gavel_jobs``: Gavel's per-VC Philly traces with its throughputs file, checked against the files' own
counts (../shared/traces/README.md: 15 files, 15,264 jobs) and against throughputs read by hand; bad input named."""

from __future__ import annotations

import collections
import gzip
import json

import pytest

from workloads import TRACES, load_gavel_jobs, load_gavel_throughputs
from workloads.errors import SkippedRowsWarning, TraceFormatError
from workloads.traces.bundled import bundled_path


@pytest.fixture(scope="module")
def trace():
    return load_gavel_jobs()


def test_bundled_traces_reproduce_their_counts(trace):
    assert len(trace) == 15_264
    assert len({job.tenant for job in trace.jobs}) == 15
    sizes = collections.Counter(job.gpus for job in trace.jobs)
    assert (sizes[1], sizes[2], sizes[4], sizes[8], sizes[16], sizes[32], sizes[64]) == (10_480, 463, 2_044, 1_916,
                                                                                           255, 91, 1)
    assert collections.Counter(job.tenant for job in trace.jobs)["ee9e8c"] == 2_000
    assert "1548 jobs' throughputs extrapolated" in trace.source
    assert [job.job_id for job in trace.jobs] == list(range(len(trace)))
    assert all(a.arrival <= b.arrival for a, b in zip(trace.jobs, trace.jobs[1:], strict=False))


def test_first_job_of_a_file_by_hand(trace):
    # 0e4a51.trace, line 1: Transformer (batch size 128), 95,121 steps, 1 GPU, arriving at 0; the throughputs file
    # gives it 5.446 steps/s on a V100, 3.074 on a P100 and 0.982 on a K80 alone
    with gzip.open(bundled_path("gavel_simulation_throughputs.json.gz"), "rt") as handle:
        raw = json.load(handle)
    key = "('Transformer (batch size 128)', 1)"
    job = next(job for job in trace.jobs if job.name == "0e4a51:1 Transformer (batch size 128)")
    assert job.arrival == 0.0 and job.gpus == 1 and job.tenant == "0e4a51"
    assert job.duration == pytest.approx(95_121 / raw["v100"][key]["null"])
    assert job.throughputs == {device: raw[device][key]["null"] for device in ("k80", "p100", "v100")}
    assert job.reference_device == "v100"


def test_a_device_type_the_job_does_not_fit_is_not_allowed(trace):
    # ResNet-50 at batch size 128 on 2+ GPUs has zero throughput on the K80 in Gavel's file (out of memory)
    table = load_gavel_throughputs()
    assert table["k80"][("ResNet-50 (batch size 128)", 2)] == 0.0
    jobs = [job for job in trace.jobs if job.name.endswith("ResNet-50 (batch size 128)")]
    multi = [job for job in jobs if job.gpus >= 2]
    assert multi and all(job.allowed_devices == ("p100", "v100") and "k80" not in job.throughputs for job in multi)
    assert all(job.allowed_devices == ("k80", "p100", "v100") for job in jobs if job.gpus == 1)


def test_unmeasured_gang_sizes_extrapolate_from_the_largest_measured_or_are_refused(tmp_path):
    line = "LM (batch size 80)\tcmd\t-n\t1\t1000\t5.0\t16\n"
    (tmp_path / "vc.trace").write_text(line)
    job = load_gavel_jobs(tmp_path / "vc.trace").jobs[0]
    measured = load_gavel_throughputs()["v100"][("LM (batch size 80)", 8)]
    assert job.throughputs["v100"] == pytest.approx(measured * 2) and job.gpus == 16
    with pytest.raises(TraceFormatError, match=r"'LM \(batch size 80\)'.*gang of 16.*measured: 1, 2, 4, 8"):
        load_gavel_jobs(tmp_path / "vc.trace", unmeasured="error")


def test_current_gavel_layout_is_read_too(tmp_path):
    # Gavel's parse_trace layout: job_type, command, working_directory, num_steps_arg, needs_data_dir, total_steps,
    # scale_factor, priority_weight, SLO, arrival_time
    (tmp_path / "a.trace").write_text("ResNet-18 (batch size 64)\tcmd\tdir\t--num_steps\t1\t5000\t2\t1\t-1\t12.5\n")
    job = load_gavel_jobs(tmp_path).jobs[0]
    assert (job.arrival, job.gpus, job.tenant) == (12.5, 2, "a")


@pytest.mark.parametrize(("line", "field"), [
    ("ResNet-18 (batch size 64)\tcmd\t-n\t1\tmany\t0\t1", "total_steps"),
    ("ResNet-18 (batch size 64)\tcmd\t-n\t1\t100\t-3\t1", "arrival_time_s"),
    ("ResNet-18 (batch size 64)\tcmd\t-n\t1\t100\t0\t0", "scale_factor"),
    ("ResNet-18 (batch size 64)\tcmd\t-n\t1\t100", "line"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, line, field):
    path = tmp_path / "bad.trace"
    path.write_text("ResNet-18 (batch size 64)\tcmd\t-n\t1\t100\t0\t1\n" + line + "\n")
    with pytest.raises(TraceFormatError) as caught:
        load_gavel_jobs(path)
    assert caught.value.line == 2 and caught.value.field == field and "bad.trace" in str(caught.value)


def test_unknown_job_type_names_type_and_file(tmp_path):
    (tmp_path / "x.trace").write_text("BERT (batch size 4)\tcmd\t-n\t1\t100\t0\t1\n")
    with pytest.raises(TraceFormatError, match=r"x.trace, line 1, field 'job_type': job type 'BERT \(batch size 4\)'"
                       r" is not in gavel_simulation_throughputs"):
        load_gavel_jobs(tmp_path / "x.trace")


def test_bad_rows_can_be_skipped_and_are_listed(tmp_path):
    good = "ResNet-18 (batch size 64)\tcmd\t-n\t1\t100\t0\t1\n"
    (tmp_path / "v.trace").write_text(good + "BERT (batch size 4)\tcmd\t-n\t1\t100\t0\t1\n" + good)
    with pytest.warns(SkippedRowsWarning, match="1 malformed row"):
        trace = load_gavel_jobs(tmp_path, errors="skip")
    assert len(trace) == 2 and [(row.line, row.field) for row in trace.skipped] == [(2, "job_type")]


def test_limit_keeps_the_first_jobs_by_arrival(trace):
    first = load_gavel_jobs(limit=100)
    assert [job.name for job in first.jobs] == [job.name for job in trace.jobs[:100]]


def test_registered_for_configs():
    assert TRACES["gavel-philly"] is load_gavel_jobs


def test_generated_trace_follows_gavels_generator():
    # Gavel's scripts/utils/generate_trace.py: templates uniform over its 26 job types, gangs 1/2/4 with
    # probabilities 0.7/0.1/0.2 for the 19 distributed ones, run times of 1-4 h on a V100, exponential
    # inter-arrivals of mean lam, arrivals truncated to whole seconds. (Checked once against the trace Gavel's own
    # script writes for seed 0, 200 jobs, lam 1800: the same 200 jobs; that file is not shipped.)
    import numpy as np
    from scipy import stats

    from workloads import generate_gavel_jobs
    from workloads.traces.gavel import GAVEL_JOB_TABLE

    trace = generate_gavel_jobs(3000, 1800.0, seed=3)
    assert len(trace) == 3000 and trace.jobs[0].arrival == 0.0
    assert all(job.arrival == int(job.arrival) for job in trace.jobs)
    hours = np.array([job.duration / 3600 for job in trace.jobs])
    whole = np.round(hours)
    assert set(whole) == {1.0, 2.0, 3.0, 4.0}
    rates = np.array([job.throughputs["v100"] for job in trace.jobs])
    lost = (whole - hours) * 3600 * rates  # steps cut by the truncation to whole steps: under one
    assert (lost >= 0).all() and (lost < 1).all()
    models = collections.Counter(job.name.split(" ", 1)[1] for job in trace.jobs)
    assert set(models) <= {model for model, _ in GAVEL_JOB_TABLE}
    distributed = {model for model, multi in GAVEL_JOB_TABLE if multi}
    gangs = collections.Counter(job.gpus for job in trace.jobs if job.name.split(" ", 1)[1] in distributed)
    n = sum(gangs.values())
    for size, p in ((1, 0.7), (2, 0.1), (4, 0.2)):  # binomial 99.9% intervals
        assert stats.binom.ppf(0.0005, n, p) <= gangs[size] <= stats.binom.ppf(0.9995, n, p)
    assert all(job.gpus == 1 for job in trace.jobs if job.name.split(" ", 1)[1] not in distributed)
    gaps = np.diff([job.arrival for job in trace.jobs])
    low, high = stats.t.interval(0.999, len(gaps) - 1, loc=gaps.mean(), scale=stats.sem(gaps))
    assert low <= 1800.0 <= high
    assert generate_gavel_jobs(50, 1800.0, seed=3).jobs == trace.jobs[:50]
    assert generate_gavel_jobs(50, 1800.0, seed=4).jobs != trace.jobs[:50]

"""Trace loaders: published figures of the bundled traces, filters, and errors on malformed rows."""

from __future__ import annotations

import gzip
import shutil
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from workloads import (
    TRACES,
    JobTrace,
    TraceFormatError,
    WorkloadError,
    bundled_path,
    load_machine_list,
    load_philly_jobs,
    load_tiresias_jobs,
    load_trace,
    trace_loader,
)
from workloads.errors import SkippedRowsWarning

HEADER = "timestamp,duration,num_gpus,gpu_time,cluster"
GOOD_ROWS = [
    "2017-10-02 10:00:00,100.0,1,100.0,vc1",
    "2017-10-01 09:00:00,50.0,2,100.0,vc2",
    "2017-10-01 09:00:00,30.0,4,120.0,vc1",
]


@pytest.fixture(scope="module")
def philly() -> JobTrace:
    return load_philly_jobs()


def write(tmp_path: Path, lines: list[str], name: str = "philly_jobs.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n\n")
    return path


def absolute(trace: JobTrace, arrival: float) -> datetime:
    assert trace.origin is not None
    return trace.origin + timedelta(seconds=arrival)


# --- published figures (traces/README.md) -------------------------------------------------------------


def test_philly_reproduces_published_figures(philly: JobTrace) -> None:
    jobs = philly.jobs
    gpus = np.array([job.gpus for job in jobs])
    durations = np.array([job.duration for job in jobs])
    assert len(philly) == 82_247
    assert len({job.tenant for job in jobs}) == 15
    assert round(100 * np.mean(gpus == 1), 2) == 93.17
    assert np.median(durations) == 1_144
    assert gpus.max() == 128
    assert round(sum(job.gpu_seconds for job in jobs) / 3600) == 978_078
    assert philly.origin == datetime(2017, 9, 4, 10, 30, 41)
    assert absolute(philly, jobs[-1].arrival) == datetime(2017, 12, 22, 8, 2, 11)
    assert philly.skipped == ()


def test_philly_jobs_sorted_numbered_and_device_agnostic(philly: JobTrace) -> None:
    arrivals = np.array([job.arrival for job in philly.jobs])
    assert arrivals[0] == 0
    assert np.all(np.diff(arrivals) >= 0)
    assert [job.job_id for job in philly.jobs] == list(range(len(philly)))
    assert all(job.reference_device is None for job in philly.jobs)
    # same-second submits keep file order
    lines = np.array([int(job.name.removeprefix("philly-")) for job in philly.jobs])
    ties = np.diff(arrivals) == 0
    assert ties.sum() > 100
    assert np.all(np.diff(lines)[ties] > 0)


def test_philly_row_maps_to_its_line(philly: JobTrace) -> None:
    # line 2 of the file: 2017-10-09 07:01:55,66.0,1,66.0,11cb48
    job = next(job for job in philly.jobs if job.name == "philly-2")
    assert (job.duration, job.gpus, job.tenant) == (66.0, 1, "11cb48")
    assert absolute(philly, job.arrival) == datetime(2017, 10, 9, 7, 1, 55)


def test_gzip_is_transparent(philly: JobTrace, tmp_path: Path) -> None:
    plain = tmp_path / "philly_jobs.csv"
    with gzip.open(bundled_path("philly_jobs.csv.gz"), "rb") as src, plain.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    trace = load_philly_jobs(plain)
    assert trace.jobs == philly.jobs
    assert trace.origin == philly.origin


def test_machine_list_figures() -> None:
    machines = load_machine_list()
    assert len(machines) == 552
    assert sum(m.gpus for m in machines) == 2_490
    assert Counter((m.gpus, m.gpu_memory_gb) for m in machines) == {(2, 12): 321, (8, 24): 231}
    assert len({m.machine_id for m in machines}) == 552


def test_tiresias_60_jobs() -> None:
    trace = load_tiresias_jobs()
    assert len(trace) == 60
    arrivals = [job.arrival for job in trace.jobs]
    assert arrivals == sorted(arrivals)
    first = trace.jobs[0]
    assert (first.arrival, first.gpus, first.duration, first.name) == (0.0, 1, 164.0, "vgg19")
    assert {job.gpus for job in trace.jobs} <= {1, 2, 4, 8}


# --- filters ---------------------------------------------------------------------------------------------


def test_window_keeps_only_submits_in_range(philly: JobTrace) -> None:
    start, end = datetime(2017, 10, 1), datetime(2017, 10, 8)
    expected = [job for job in philly.jobs if start <= absolute(philly, job.arrival) < end]
    week = load_philly_jobs(window={"start": "2017-10-01", "days": 7})
    assert len(week) == len(expected) > 1000
    assert week.jobs[0].arrival == 0
    assert week.origin == absolute(philly, expected[0].arrival)
    assert all(start <= absolute(week, job.arrival) < end for job in week.jobs)
    assert [job.name for job in week.jobs] == [job.name for job in expected]
    assert load_philly_jobs(window=(start, "2017-10-08")).jobs == week.jobs
    assert load_philly_jobs(window={"start": start.date(), "end": end}).jobs == week.jobs


def test_window_errors() -> None:
    with pytest.raises(WorkloadError, match="holds no jobs"):
        load_philly_jobs(window=("2018-01-01", "2018-02-01"))
    with pytest.raises(WorkloadError, match="must be after start"):
        load_philly_jobs(window=("2017-10-08", "2017-10-01"))
    with pytest.raises(WorkloadError, match=r"unknown key 'dayz'.*did you mean 'days'"):
        load_philly_jobs(window={"start": "2017-10-01", "dayz": 7})
    with pytest.raises(WorkloadError, match=r"window\.start"):
        load_philly_jobs(window={"start": "October", "days": 7})


def test_virtual_cluster_filter(philly: JobTrace) -> None:
    expected = [job.name for job in philly.jobs if job.tenant in ("6214e9", "0e4a51")]
    trace = load_philly_jobs(virtual_clusters=["6214e9", "0e4a51"])
    assert [job.name for job in trace.jobs] == expected
    assert sum(job.tenant == "6214e9" for job in trace.jobs) == 41_226
    assert trace.jobs[0].arrival == 0


def test_unknown_virtual_cluster_lists_valid_ones() -> None:
    with pytest.raises(WorkloadError) as info:
        load_philly_jobs(virtual_clusters=["6214e8"])
    message = str(info.value)
    assert "virtual_clusters" in message and "'6214e8'" in message
    assert "did you mean '6214e9'" in message
    assert all(name in message for name in ("0e4a51", "11cb48", "795a4c", "ee9e8c"))


def test_trace_registry_and_unknown_names() -> None:
    assert TRACES["philly"] is load_philly_jobs
    assert trace_loader("tiresias-60") is load_tiresias_jobs
    assert len(load_trace("tiresias-60")) == 60
    with pytest.raises(WorkloadError) as info:
        trace_loader("phily")
    assert "philly" in str(info.value) and "tiresias-60" in str(info.value)
    assert "did you mean 'philly'" in str(info.value)
    with pytest.raises(WorkloadError, match=r"cluster_machine_list\.csv"):
        bundled_path("cluster_machines.csv")


# --- malformed rows --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_row", "field"),
    [
        ("2017-13-01 10:00:00,100.0,1,100.0,vc1", "timestamp"),
        ("yesterday,100.0,1,100.0,vc1", "timestamp"),
        ("2017-10-03 10:00:00,NaN,1,100.0,vc1", "duration"),
        ("2017-10-03 10:00:00,-5,1,-5,vc1", "duration"),
        ("2017-10-03 10:00:00,100.0,0,0.0,vc1", "num_gpus"),
        ("2017-10-03 10:00:00,100.0,1.5,150.0,vc1", "num_gpus"),
        ("2017-10-03 10:00:00,100.0,2,100.0,vc1", "gpu_time"),
        ("2017-10-03 10:00:00,100.0,1,100.0,", "cluster"),
        ("2017-10-03 10:00:00,100.0,1,100.0", "columns"),
        ("2017-10-03 10:00:00,100.0,1,100.0,vc1,extra", "columns"),
    ],
)
def test_malformed_row_names_file_line_and_field(tmp_path: Path, bad_row: str, field: str) -> None:
    path = write(tmp_path, [HEADER, GOOD_ROWS[0], bad_row, *GOOD_ROWS[1:]])
    with pytest.raises(TraceFormatError) as info:
        load_philly_jobs(path)
    error = info.value
    assert (error.line, error.field) == (3, field)
    assert error.path == str(path)
    assert "philly_jobs.csv" in str(error) and "line 3" in str(error) and repr(field) in str(error)


@pytest.mark.parametrize("first_line", ["", GOOD_ROWS[0], "timestamp,duration,gpus,gpu_time,cluster"])
def test_missing_or_wrong_header(tmp_path: Path, first_line: str) -> None:
    path = write(tmp_path, [first_line, *GOOD_ROWS])
    with pytest.raises(TraceFormatError) as info:
        load_philly_jobs(path)
    assert (info.value.line, info.value.field) == (1, "header")
    assert HEADER in str(info.value)


def test_empty_file_is_a_header_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(TraceFormatError, match=r"line 1.*empty file"):
        load_philly_jobs(path)


def test_earliest_bad_line_is_reported(tmp_path: Path) -> None:
    short = "2017-10-03 10:00:00,100.0,1"
    bad_time = "2017-10-03 25:00:00,100.0,1,100.0,vc1"
    for rows, field in (([short, bad_time], "columns"), ([bad_time, short], "timestamp")):
        with pytest.raises(TraceFormatError) as info:
            load_philly_jobs(write(tmp_path, [HEADER, GOOD_ROWS[0], *rows]))
        assert (info.value.line, info.value.field) == (3, field)


def test_line_numbers_after_a_field_spanning_lines(tmp_path: Path) -> None:
    path = write(tmp_path, [HEADER, '2017-10-02 10:00:00,100.0,1,100.0,"vc\n1"', GOOD_ROWS[1], "2017-10-03,1,1,1,vc"])
    with pytest.raises(TraceFormatError) as info:
        load_philly_jobs(path)
    assert (info.value.line, info.value.field) == (5, "timestamp")
    with pytest.warns(SkippedRowsWarning, match=r"line 5, field 'timestamp'"):
        trace = load_philly_jobs(path, errors="skip")
    assert sorted(job.name for job in trace.jobs) == ["philly-3", "philly-4"]


def test_skip_keeps_good_rows_and_reports_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, [
        HEADER,
        GOOD_ROWS[0],
        "2017-10-03 10:00:00,nan,1,100.0,vc1",
        GOOD_ROWS[1],
        "2017-10-03 10:00:00,100.0,1",
        GOOD_ROWS[2],
    ])
    with pytest.warns(SkippedRowsWarning, match=r"skipped 2 malformed rows .*line 3, field 'duration'.*line 5, "):
        trace = load_philly_jobs(path, errors="skip")
    assert len(trace) == 3
    assert [(row.line, row.field) for row in trace.skipped] == [(3, "duration"), (5, "columns")]
    assert all(row.path == str(path) for row in trace.skipped)
    # sorted by submit, ties in file order, arrival 0 at the first kept submit
    assert [job.name for job in trace.jobs] == ["philly-4", "philly-6", "philly-2"]
    assert [job.arrival for job in trace.jobs] == [0.0, 0.0, 25 * 3600.0]
    assert trace.origin == datetime(2017, 10, 1, 9)
    assert [job.tenant for job in trace.jobs] == ["vc2", "vc1", "vc1"]


def test_bad_error_policy_and_no_jobs(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="errors must be"):
        load_philly_jobs(write(tmp_path, [HEADER, *GOOD_ROWS]), errors="ignore")  # type: ignore[arg-type]
    with pytest.raises(WorkloadError, match="no jobs"):
        load_philly_jobs(write(tmp_path, [HEADER]))
    with pytest.raises(WorkloadError, match="1 malformed"), pytest.warns(SkippedRowsWarning):
        load_philly_jobs(write(tmp_path, [HEADER, "x,1,1,1,vc"]), errors="skip")
    with pytest.raises(WorkloadError, match="no jobs"):
        load_philly_jobs(write(tmp_path, [HEADER, *GOOD_ROWS]), virtual_clusters=[])


@pytest.mark.parametrize(
    ("row", "field"),
    [("m9,two, 12GB", "number of GPUs"), ("m9,2, 12TB", "single GPU mem"), ("m0,2, 12GB", "machineId"),
     ("m9,2", "columns")],
)
def test_machine_list_errors(tmp_path: Path, row: str, field: str) -> None:
    path = write(tmp_path, ["machineId, number of GPUs, single GPU mem", "m0,2, 12GB", row], "machines.csv")
    with pytest.raises(TraceFormatError) as info:
        load_machine_list(path)
    assert (info.value.line, info.value.field) == (3, field)
    assert "machines.csv" in str(info.value)


def test_tiresias_errors_and_skip(tmp_path: Path) -> None:
    lines = ["job_id,num_gpu,submit_time,iterations,model_name,duration,interval",
             "0,1,10,606,vgg19,164,30", "1,0,30,133,vgg11,147,23", "2,2,5,157,inception4,-1,26"]
    path = write(tmp_path, lines, "60_job.csv")
    with pytest.raises(TraceFormatError) as info:
        load_tiresias_jobs(path)
    assert (info.value.line, info.value.field) == (3, "num_gpu")
    with pytest.warns(SkippedRowsWarning, match=r"60_job\.csv: skipped 2 malformed rows"):
        trace = load_tiresias_jobs(path, errors="skip")
    assert [(row.line, row.field) for row in trace.skipped] == [(3, "num_gpu"), (4, "duration")]
    assert [(job.arrival, job.name) for job in trace.jobs] == [(10.0, "vgg19")]

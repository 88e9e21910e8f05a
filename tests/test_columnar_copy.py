"""The columnar copy of the bundled Philly trace: it holds what parsing the source gives (a stale copy fails here;
``python -m workloads.traces.rebuild`` writes it again), loading from it gives the same jobs, columns and errors
as parsing the file, and a copy that does not match its source is never used. Also the fast job builder it feeds:
the same jobs as ``TrainingJob`` row by row, and the same error for a bad row."""

from __future__ import annotations

import gc
import gzip
import io
import shutil
import zipfile
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import workloads.traces.philly as philly_module
from workloads import JobTrace, TrainingJob, WorkloadError, bundled_path, load_philly_jobs
from workloads.jobs import gc_paused, jobs_from_columns
from workloads.traces import bundled_files, read_philly_columns
from workloads.traces.columnar import VERSION, copy_path, read_copy, write_copy
from workloads.traces.philly import COPY_COLUMNS, PHILLY_FILE, parse_philly_file, write_philly_copy

pytestmark = pytest.mark.filterwarnings("ignore::workloads.errors.SkippedRowsWarning")
HEADER = "timestamp,duration,num_gpus,gpu_time,cluster"
REBUILD = "the columnar copy is stale: run `python -m workloads.traces.rebuild` and commit workloads/data/"
OPTIONS: list[dict[str, Any]] = [
    {},
    {"errors": "skip"},
    {"window": {"start": "2017-10-01", "days": 7}},
    {"virtual_clusters": ["6214e9", "0e4a51"]},
    {"virtual_clusters": "11cb48"},
    {"limit": 1_000},
    {"limit": 50, "virtual_clusters": "11cb48", "window": ("2017-10-05", "2017-10-09")},
]
FAILING: list[dict[str, Any]] = [
    {"window": ("2018-01-01", "2018-02-01")},
    {"virtual_clusters": ["6214e8"]},
    {"virtual_clusters": []},
    {"errors": "ignore"},
    {"limit": 0},
    {"time_ordered": True},
]


def every_field(trace: JobTrace) -> list[tuple[Any, ...]]:
    """Each job's fields (those left out of ``==`` too) with the type of each value."""
    names = [f.name for f in fields(TrainingJob)]
    return [tuple((getattr(job, name), type(getattr(job, name))) for name in names) for job in trace.jobs]


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled file alone in a folder of its own: loading it parses the CSV (no copy beside it)."""
    path = tmp_path_factory.mktemp("plain") / PHILLY_FILE
    shutil.copyfile(bundled_path(PHILLY_FILE), path)
    return path


def test_the_bundled_copy_holds_what_parsing_the_source_gives() -> None:
    source = bundled_path(PHILLY_FILE)
    stored = read_copy(source, COPY_COLUMNS)
    assert stored is not None, REBUILD  # missing, another version, or made from other bytes than the file's
    parsed = parse_philly_file(source)
    assert stored.keys() == parsed.keys() == COPY_COLUMNS.keys()
    for name, values in parsed.items():
        assert stored[name].dtype == values.dtype, (name, REBUILD)
        np.testing.assert_array_equal(stored[name], values, err_msg=f"{name}: {REBUILD}")
    assert parsed["line"].size == 82_247 and parsed["clusters"].size == 15


def test_the_bundled_trace_is_read_from_the_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    # with the CSV reader gone the bundled trace still loads, so the comparisons below compare copy and file
    def no_parsing(*args: object, **kwargs: object) -> None:
        raise AssertionError("the CSV was parsed")

    expected = every_field(load_philly_jobs(limit=10))
    monkeypatch.setattr(philly_module, "TraceFile", no_parsing)
    assert every_field(load_philly_jobs(limit=10)) == expected
    with pytest.raises(AssertionError, match="the CSV was parsed"):  # a time-ordered read checks the rows
        load_philly_jobs(time_ordered=True)


@pytest.mark.parametrize("options", OPTIONS, ids=lambda options: ",".join(options) or "default")
def test_copy_and_file_give_the_same_jobs_and_columns(source_copy: Path, options: dict[str, Any]) -> None:
    from_copy, from_file = load_philly_jobs(**options), load_philly_jobs(source_copy, **options)
    assert every_field(from_copy) == every_field(from_file)
    assert (from_copy.origin, from_copy.skipped) == (from_file.origin, from_file.skipped)
    assert from_copy.source == str(bundled_path(PHILLY_FILE))
    table, parsed = read_philly_columns(**options), read_philly_columns(source_copy, **options)
    for name in ("submit", "duration", "gpus", "cluster", "line"):
        assert getattr(table, name).dtype == getattr(parsed, name).dtype, name
        np.testing.assert_array_equal(getattr(table, name), getattr(parsed, name), err_msg=name)
    assert table.clusters == parsed.clusters


@pytest.mark.parametrize("options", FAILING, ids=lambda options: ",".join(options))
def test_copy_and_file_give_the_same_errors(source_copy: Path, options: dict[str, Any]) -> None:
    with pytest.raises(WorkloadError) as from_copy:
        load_philly_jobs(**options)
    with pytest.raises(WorkloadError) as from_file:
        load_philly_jobs(source_copy, **options)
    assert type(from_copy.value) is type(from_file.value)
    assert str(from_copy.value).replace(str(bundled_path(PHILLY_FILE)), str(source_copy)) == str(from_file.value)


def test_a_copy_that_does_not_match_its_file_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(philly_module, "DATA_DIR", tmp_path)  # tmp_path plays the bundled data folder
    path = tmp_path / "philly_jobs.csv"
    path.write_text(f"{HEADER}\n2017-10-02 10:00:00,100.0,1,100.0,vc1\n2017-10-01 09:00:00,50.0,2,100.0,vc2\n")
    copy = write_philly_copy(path)
    assert copy == tmp_path / "philly_jobs.columns.npz"
    assert [job.name for job in load_philly_jobs(path).jobs] == ["philly-3", "philly-2"]
    path.write_text(f"{HEADER}\n2017-10-02 10:00:00,100.0,1,100.0,vc1\n2017-10-01 09:00:00,50.0,4,200.0,vc9\n")
    assert read_copy(path, COPY_COLUMNS) is None  # made from other bytes
    assert [(job.gpus, job.tenant) for job in load_philly_jobs(path).jobs] == [(4, "vc9"), (1, "vc1")]
    copy.write_bytes(b"not a zip file")
    assert read_copy(path, COPY_COLUMNS) is None
    assert len(load_philly_jobs(path)) == 2
    copy.unlink()
    assert read_copy(path, COPY_COLUMNS) is None


def test_a_copy_of_another_version_or_without_a_column_is_not_used(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("anything\n")
    columns = {"a": np.arange(5, dtype=np.int64), "b": np.linspace(0, 1, 5)}
    write_copy(path, columns)
    stored = read_copy(path, {"a": np.int64, "b": np.float64})
    assert stored is not None
    np.testing.assert_array_equal(stored["a"], columns["a"])
    assert stored["a"].dtype == np.int64  # stored as int8, widened again
    with zipfile.ZipFile(copy_path(path)) as archive:
        assert np.lib.format.read_array(archive.open("a.npy")).dtype == np.int8
    assert read_copy(path, {"a": np.int64, "c": np.float64}) is None
    with zipfile.ZipFile(copy_path(path)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["_version.npy"] = _npy(np.array(VERSION + 1))
    with zipfile.ZipFile(copy_path(path), "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    assert read_copy(path, {"a": np.int64}) is None


def test_a_copy_is_the_same_bytes_when_written_again(tmp_path: Path) -> None:
    path = tmp_path / "philly_jobs.csv"
    with gzip.open(bundled_path(PHILLY_FILE), "rb") as src, path.open("wb") as dst:
        dst.write(b"".join(src.readlines()[:1001]))
    first = write_philly_copy(path).read_bytes()
    assert write_philly_copy(path).read_bytes() == first


def test_the_copy_is_not_listed_as_a_bundled_file() -> None:
    assert PHILLY_FILE in bundled_files()
    assert copy_path(bundled_path(PHILLY_FILE)).is_file()
    assert not any(name.endswith(".npz") for name in bundled_files())


# --- the job builder ---------------------------------------------------------------------------------------


def built(first_id: int, arrival: Any, gpus: Any, duration: Any, tenant: list[str], name: list[str]
          ) -> list[TrainingJob]:
    return [TrainingJob(job_id=first_id + i, arrival=a, gpus=g, duration=d, tenant=t, name=n)
            for i, (a, g, d, t, n) in enumerate(zip(np.asarray(arrival).tolist(), np.asarray(gpus).tolist(),
                                                    np.asarray(duration).tolist(), tenant, name, strict=True))]


def test_jobs_from_columns_are_the_constructors_jobs() -> None:
    arrival, gpus, duration = np.array([0.0, 1.5, 1.5]), np.array([1, 8, 2]), np.array([10.0, 2.5, 1e9])
    tenant, name = ["a", "b", "a"], ["x", "", "z"]
    fast = jobs_from_columns(7, arrival, gpus, duration, tenant, name)
    slow = built(7, arrival, gpus, duration, tenant, name)
    names = [f.name for f in fields(TrainingJob)]
    assert [[(getattr(job, n), type(getattr(job, n))) for n in names] for job in fast] == (
        [[(getattr(job, n), type(getattr(job, n))) for n in names] for job in slow])
    assert fast == slow and [hash(job) for job in fast] == [hash(job) for job in slow]
    assert repr(fast[1]) == repr(slow[1])
    assert jobs_from_columns(0, np.empty(0), np.empty(0, dtype=np.int64), np.empty(0), [], []) == []


@pytest.mark.parametrize(("column", "value"), [
    ("gpus", 0), ("gpus", -3), ("duration", 0.0), ("duration", np.nan), ("duration", np.inf),
    ("arrival", -1.0), ("arrival", np.nan),
])
def test_a_bad_row_raises_what_the_constructor_raises(column: str, value: float) -> None:
    columns: dict[str, Any] = {"arrival": np.array([0.0, 1.0, 2.0]), "gpus": np.array([1, 2, 4]),
                               "duration": np.array([5.0, 6.0, 7.0])}
    columns[column][1] = value
    with pytest.raises(WorkloadError) as expected:
        built(3, **columns, tenant=["t"] * 3, name=["a", "b", "c"])
    with pytest.raises(WorkloadError) as got:
        jobs_from_columns(3, **columns, tenant=["t"] * 3, name=["a", "b", "c"])
    assert str(got.value) == str(expected.value) and "job 4 (b)" in str(got.value)


def test_columns_of_other_types_are_checked_job_by_job() -> None:
    tenant, name = ["t", "t"], ["a", "b"]
    with pytest.raises(WorkloadError, match=r"job 0 \(a\): gpus must be a positive integer, got 1\.0"):
        jobs_from_columns(0, np.array([0.0, 1.0]), np.array([1.0, 2.0]), np.array([1.0, 1.0]), tenant, name)
    ints = jobs_from_columns(0, np.array([0, 1]), np.array([1, 2]), np.array([3, 4]), tenant, name)
    assert ints == built(0, [0, 1], [1, 2], [3, 4], tenant, name)
    assert type(ints[0].duration) is int
    with pytest.raises(WorkloadError, match="different lengths"):
        jobs_from_columns(0, np.array([0.0]), np.array([1, 2]), np.array([1.0]), ["t"], ["a"])


@pytest.mark.parametrize("enabled", [True, False])
def test_gc_paused_restores_the_collector(enabled: bool) -> None:
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        with gc_paused():
            assert not gc.isenabled()
        assert gc.isenabled() is enabled
        with pytest.raises(KeyError), gc_paused():
            raise KeyError
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def _npy(values: np.ndarray) -> bytes:
    data = io.BytesIO()
    np.lib.format.write_array(data, values)
    return data.getvalue()


def test_a_loaded_trace_keeps_its_jobs_as_columns_and_gives_the_constructors_jobs() -> None:
    # issue 13, item 5: no Python object per job until a job is read
    from workloads import ColumnJobs

    trace = load_philly_jobs(window={"start": "2017-10-23", "days": 2})
    table = read_philly_columns(window={"start": "2017-10-23", "days": 2})
    jobs = trace.jobs
    assert isinstance(jobs, ColumnJobs) and len(jobs) == len(table) > 1000
    t0 = int(table.submit[0])
    expected = tuple(TrainingJob(job_id=i, arrival=float(table.submit[i] - t0), gpus=int(table.gpus[i]),
                                 duration=float(table.duration[i]), tenant=table.clusters[table.cluster[i]],
                                 name=f"philly-{table.line[i]}") for i in range(len(table)))
    assert tuple(jobs) == expected and jobs == expected and expected == jobs
    assert jobs[5] == expected[5] and jobs[-1] == expected[-1]
    with pytest.raises(IndexError):
        jobs[len(jobs)]
    part = jobs[100:200]
    assert isinstance(part, ColumnJobs) and tuple(part) == expected[100:200]  # ids kept: 100..199
    assert jobs[::7] == expected[::7]
    assert jobs != expected[:-1] and jobs != "not jobs"
    import pickle

    assert pickle.loads(pickle.dumps(trace)).jobs == expected

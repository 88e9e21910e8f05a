"""Reading trace files: chunked reading gives the same rows and lines, bytes that are not UTF-8 are a
TraceFormatError, ``limit`` and ``window`` apply while reading (and stop it in a time-ordered file), and
skipped rows are named in a warning."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

import workloads.traces._rows as rows_module
from workloads import (
    JobTrace,
    TraceFormatError,
    WorkloadError,
    bundled_path,
    load_azure_llm,
    load_machine_list,
    load_philly_jobs,
    load_request_csv,
    load_tiresias_jobs,
)
from workloads.errors import SkippedRowsWarning
from workloads.traces import describe_skipped, read_philly_columns

pytestmark = pytest.mark.filterwarnings("ignore::workloads.errors.SkippedRowsWarning")
HEADER = "timestamp,duration,num_gpus,gpu_time,cluster"


def row(day: int, duration: float = 100.0, gpus: int = 1, cluster: str = "vc1", hour: int = 10) -> str:
    return f"2017-10-{day:02d} {hour:02d}:00:00,{duration},{gpus},{duration * gpus},{cluster}"


def write(tmp_path: Path, lines: list[str], name: str = "philly_jobs.csv", ending: str = "\n") -> Path:
    path = tmp_path / name
    path.write_bytes((ending.join(lines) + ending).encode())
    return path


def summary(trace: JobTrace) -> list[tuple[float, int, float, str, str]]:
    return [(job.arrival, job.gpus, job.duration, job.tenant, job.name) for job in trace.jobs]


# --- chunks ----------------------------------------------------------------------------------------------


MIXED = [
    HEADER,
    row(5),
    "",
    row(3, gpus=2, cluster=" vc2 "),
    '2017-10-04 10:00:00,10.0,1,10.0,"vc\n3"',  # a quoted field over two lines (lines 5-6)
    row(7, duration=5.5),
    "2017-10-08 10:00:00,abc,1,1.0,vc1",  # bad duration
    "   ",  # one field
    row(2, cluster="vc2"),
    row(9, duration=2.0, gpus=4),
    "2017-10-09 10:00:00,1,1,1",  # 4 columns
    row(1),
    "",
]


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_small_chunks_read_the_same_rows_lines_and_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             ending: str) -> None:
    path = write(tmp_path, MIXED, ending=ending)
    whole = load_philly_jobs(path, errors="skip")
    assert [(row.line, row.field) for row in whole.skipped] == [(8, "duration"), (9, "columns"), (12, "columns")]
    assert [job.name for job in whole.jobs] == ["philly-13", "philly-10", "philly-4", "philly-6", "philly-2",
                                                "philly-7", "philly-11"]
    assert whole.jobs[2].tenant == "vc2"
    for block in (1, 17, 64, 200):  # blocks end mid-way through the file, also inside the quoted field
        monkeypatch.setattr(rows_module, "BLOCK_BYTES", block)
        chunked = load_philly_jobs(path, errors="skip")
        assert summary(chunked) == summary(whole)
        assert chunked.skipped == whole.skipped
        assert chunked.origin == whole.origin


def test_chunked_bundled_traces_match(monkeypatch: pytest.MonkeyPatch) -> None:
    philly, azure = load_philly_jobs(), load_azure_llm()
    monkeypatch.setattr(rows_module, "BLOCK_BYTES", 100_000)
    assert load_philly_jobs().jobs == philly.jobs
    small = load_azure_llm()
    np.testing.assert_array_equal(small.arrival, azure.arrival)
    np.testing.assert_array_equal(small.prompt_tokens, azure.prompt_tokens)
    assert small.origin == azure.origin


def test_columns_without_job_objects_match_the_jobs() -> None:
    philly = load_philly_jobs(window={"start": "2017-10-01", "days": 7})
    table = read_philly_columns(window={"start": "2017-10-01", "days": 7})
    assert len(table) == len(philly)
    assert table.gpus.tolist() == [job.gpus for job in philly.jobs]
    assert [f"philly-{line}" for line in table.line.tolist()] == [job.name for job in philly.jobs]
    assert [table.clusters[i] for i in table.cluster.tolist()] == [job.tenant for job in philly.jobs]
    assert (table.submit - table.submit[0]).tolist() == [job.arrival for job in philly.jobs]


@pytest.mark.parametrize("word", ["true", "False", "TRUE"])
def test_true_and_false_are_not_numbers(tmp_path: Path, word: str) -> None:
    # pandas would read them as 1.0 and 0.0 in a float column
    path = write(tmp_path, [HEADER, row(1), f"2017-10-02 10:00:00,{word},1,1.0,vc1"])
    with pytest.raises(TraceFormatError) as info:
        load_philly_jobs(path)
    assert (info.value.line, info.value.field) == (3, "duration")


# --- encodings -------------------------------------------------------------------------------------------


def latin1_file(tmp_path: Path) -> Path:
    path = tmp_path / "latin1.csv"
    path.write_bytes("\n".join([HEADER, row(1), row(2), row(3, cluster="vcé"), row(4), ""]).encode("latin-1"))
    return path


def test_bytes_that_are_not_utf8_name_file_line_and_column(tmp_path: Path) -> None:
    path = latin1_file(tmp_path)
    with pytest.raises(TraceFormatError) as info:
        load_philly_jobs(path)
    error = info.value
    assert (error.path, error.line, error.field) == (str(path), 4, "cluster")
    assert "not UTF-8" in str(error) and "0xe9" in str(error)


def test_bytes_that_are_not_utf8_are_skipped_like_other_bad_rows(tmp_path: Path) -> None:
    trace = load_philly_jobs(latin1_file(tmp_path), errors="skip")
    assert [job.name for job in trace.jobs] == ["philly-2", "philly-3", "philly-5"]
    assert [(row.line, row.field) for row in trace.skipped] == [(4, "cluster")]


def test_utf16_and_a_bad_header_byte_are_header_errors(tmp_path: Path) -> None:
    utf16 = tmp_path / "utf16.csv"
    utf16.write_bytes("\n".join([HEADER, row(1), ""]).encode("utf-16"))
    with pytest.raises(TraceFormatError, match=r"line 1, field 'header'.*UTF-16"):
        load_philly_jobs(utf16)
    header = tmp_path / "header.csv"
    header.write_bytes(HEADER.encode().replace(b"cluster", b"clust\xe9r") + b"\n" + row(1).encode() + b"\n")
    with pytest.raises(TraceFormatError, match=r"line 1, field 'header': not UTF-8"):
        load_philly_jobs(header)


def test_every_loader_reports_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    azure = tmp_path / "azure.csv"
    azure.write_bytes(b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n"
                      b"2023-11-16 18:15:47.0000000,3\xff4,44\n")
    tiresias = tmp_path / "tiresias.csv"
    tiresias.write_bytes(b"job_id,num_gpu,submit_time,iterations,model_name,duration,interval\n"
                         b"0,1,10,606,vgg19,164,30\n1,1,20,606,vgg\xe919,164,30\n")
    machines = tmp_path / "machines.csv"
    machines.write_bytes(b"machineId, number of GPUs, single GPU mem\nm0,2, 12GB\nm\xe91,2, 12GB\n")
    columns = {"arrival": "TIMESTAMP", "prompt_tokens": "ContextTokens", "output_tokens": "GeneratedTokens"}
    for load, path, field in ((load_azure_llm, azure, "ContextTokens"), (load_tiresias_jobs, tiresias, "model_name"),
                              (load_machine_list, machines, "machineId"),
                              (lambda p: load_request_csv(p, columns=columns, time_unit="datetime"), azure,
                               "ContextTokens")):
        with pytest.raises(TraceFormatError) as info:
            load(path)
        assert (info.value.path, info.value.line, info.value.field) == (str(path), 3, field)


def test_unreadable_files_are_trace_errors(tmp_path: Path) -> None:
    lines = [HEADER, row(1), row(2)]
    carriage = tmp_path / "mac.csv"
    carriage.write_bytes("\r".join(lines).encode())  # no line feeds at all
    with pytest.raises(TraceFormatError, match=r"line 1.*not readable as CSV"):
        load_philly_jobs(carriage)
    damaged = tmp_path / "damaged.csv.gz"
    whole = gzip.compress(("\n".join([HEADER, *(row(1 + i % 28) for i in range(300))]) + "\n").encode())
    damaged.write_bytes(whole[:200])
    with pytest.raises(TraceFormatError, match="cannot be read past here"):
        load_philly_jobs(damaged)


def test_bom_and_gzip_still_read(tmp_path: Path) -> None:
    plain = write(tmp_path, [HEADER, row(2), row(1)])
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    packed = tmp_path / "packed.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert summary(load_philly_jobs(bom)) == summary(load_philly_jobs(packed)) == summary(load_philly_jobs(plain))


# --- limit, window and time order ------------------------------------------------------------------------


def test_limit_keeps_the_earliest_jobs_of_an_unsorted_file(tmp_path: Path) -> None:
    path = write(tmp_path, [HEADER, row(5), row(3), row(9), row(1), row(3, hour=9), row(7)])
    everything = load_philly_jobs(path)
    for limit in (1, 2, 3, 6, 10):
        first = load_philly_jobs(path, limit=limit)
        assert summary(first) == summary(everything)[:limit]
    assert [job.name for job in load_philly_jobs(path, limit=3).jobs] == ["philly-5", "philly-6", "philly-3"]
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(WorkloadError, match="limit: must be a positive integer"):
            load_philly_jobs(path, limit=bad)  # type: ignore[arg-type]


def test_limit_is_applied_while_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, [HEADER, *(row(1 + i % 28, duration=1.0 + i) for i in range(3000))])
    everything = load_philly_jobs(path)
    monkeypatch.setattr(rows_module, "BLOCK_BYTES", 4096)  # many chunks: rows beyond the limit are dropped as read
    assert summary(load_philly_jobs(path, limit=50)) == summary(everything)[:50]
    assert load_philly_jobs(path, limit=50, virtual_clusters="vc1", window=("2017-10-05", "2017-10-09")).jobs == (
        load_philly_jobs(path, virtual_clusters="vc1", window=("2017-10-05", "2017-10-09")).jobs[:50])


def test_time_ordered_file_stops_reading_at_the_limit(tmp_path: Path) -> None:
    # rows after the limit are never read: neither the malformed one nor the one out of order
    path = write(tmp_path, [HEADER, row(1), row(2), row(2, hour=11), "garbage", row(1)])
    with pytest.raises(TraceFormatError):
        load_philly_jobs(path, limit=3)  # without time_ordered every row is read and checked
    trace = load_philly_jobs(path, limit=3, time_ordered=True)
    assert [job.name for job in trace.jobs] == ["philly-2", "philly-3", "philly-4"]
    assert trace.skipped == ()


def test_time_ordered_file_stops_reading_at_the_window_end(tmp_path: Path) -> None:
    path = write(tmp_path, [HEADER, row(1), row(2), row(3), row(4), "garbage"])
    trace = load_philly_jobs(path, window=("2017-10-02", "2017-10-04"), time_ordered=True)
    assert [job.name for job in trace.jobs] == ["philly-3", "philly-4"]
    with pytest.raises(TraceFormatError) as info:
        load_philly_jobs(path, window=("2017-10-02", "2017-10-04"))
    assert info.value.line == 6


def test_time_ordered_checks_the_order(tmp_path: Path) -> None:
    path = write(tmp_path, [HEADER, row(1), row(3), "2017-10-03 10:00:00,nan,1,1,vc1", row(2), row(4)])
    with pytest.raises(TraceFormatError) as info:
        load_philly_jobs(path, time_ordered=True)
    assert (info.value.line, info.value.field) == (4, "duration")  # the earlier bad row comes first
    with pytest.raises(TraceFormatError) as info:
        load_philly_jobs(path, time_ordered=True, errors="skip")
    assert (info.value.line, info.value.field) == (5, "timestamp")
    assert "not in time order" in str(info.value) and "line 3" in str(info.value)
    assert len(load_philly_jobs(path, time_ordered=True, errors="skip", limit=2)) == 2  # stops before line 5


def test_request_traces_limit_and_time_order(tmp_path: Path) -> None:
    azure = load_azure_llm()
    assert load_azure_llm(limit=100) == azure[:100]
    assert load_azure_llm(limit=100, time_ordered=True) == azure[:100]
    for window in ((600, 1200), (0, 60), (3000, None), ("2023-11-16 18:30:00", "2023-11-16 18:40:00")):
        expected = load_azure_llm(window=window)
        assert load_azure_llm(window=window, time_ordered=True) == expected
        assert load_azure_llm(window=window, limit=40) == expected[:40]
    plain = tmp_path / "azure.csv"
    with gzip.open(bundled_path("AzureLLMInferenceTrace_conv.csv.gz"), "rb") as src, plain.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    with plain.open("a") as stream:
        stream.write("\nnot a row\n")  # the file does not end with a line break
    columns = {"arrival": "TIMESTAMP", "prompt_tokens": "ContextTokens", "output_tokens": "GeneratedTokens"}
    head = load_request_csv(plain, columns=columns, time_unit="datetime", limit=10, time_ordered=True)
    np.testing.assert_array_equal(head.arrival, azure.arrival[:10])
    with pytest.raises(TraceFormatError, match="line 19368"):
        load_request_csv(plain, columns=columns, time_unit="datetime", limit=10)


def test_request_csv_relative_window_and_limit_on_an_unsorted_file(tmp_path: Path) -> None:
    times = [5.0, 1.0, 9.0, 3.0, 2.0, 8.0, 4.0, 7.0]
    path = tmp_path / "requests.csv"
    path.write_text("t,p,o\n" + "".join(f"{t},{i + 1},1\n" for i, t in enumerate(times)))
    columns = {"arrival": "t", "prompt_tokens": "p", "output_tokens": "o"}
    window = load_request_csv(path, columns=columns, window=(2, 7))  # seconds after the first request (1.0)
    assert window.prompt_tokens.tolist() == [4, 7, 1, 8]  # times 3, 4, 5, 7
    assert load_request_csv(path, columns=columns, window=(2, 7), limit=2).prompt_tokens.tolist() == [4, 7]
    assert window.arrival.tolist() == [0.0, 1.0, 2.0, 4.0]
    assert load_request_csv(path, columns=columns, limit=3).prompt_tokens.tolist() == [2, 5, 4]


def test_tiresias_limit() -> None:
    everything = load_tiresias_jobs()
    assert load_tiresias_jobs(limit=7).jobs == everything.jobs[:7]


def test_machine_list_reports_the_earliest_bad_row(tmp_path: Path) -> None:
    path = write(tmp_path, ["machineId, number of GPUs, single GPU mem", "m0,2, 12GB", "m1,two, 12GB", "m2,2"],
                 "machines.csv")
    with pytest.raises(TraceFormatError) as info:
        load_machine_list(path)
    assert (info.value.line, info.value.field) == (3, "number of GPUs")


# --- skipped rows: where they are --------------------------------------------------------------------------


def test_skipped_rows_are_named_in_a_warning(tmp_path: Path) -> None:
    bad = [f"2017-10-02 10:00:00,x{i},1,1.0,vc1" for i in range(8)]
    path = write(tmp_path, [HEADER, row(1), *bad, row(3)])
    with pytest.warns(SkippedRowsWarning) as caught:
        trace = load_philly_jobs(path, errors="skip")
    message = str(caught[0].message)
    assert str(path) in message and "skipped 8 malformed rows" in message
    assert "line 3, field 'duration'" in message and "line 7," in message and "line 8," not in message
    assert "and 3 more (lines 8..10)" in message
    assert caught[0].filename == __file__  # points at the caller, not at the loader
    assert [row.line for row in trace.skipped] == list(range(3, 11))
    assert describe_skipped(trace.skipped) == message
    with pytest.warns(SkippedRowsWarning, match=r"skipped 1 malformed row \(errors='skip'\): line 3, field 'ts'"):
        load_request_csv(write(tmp_path, ["ts,p,o", "1,1,1", "x,1,1"], "requests.csv"),
                         columns={"arrival": "ts", "prompt_tokens": "p", "output_tokens": "o"}, errors="skip")

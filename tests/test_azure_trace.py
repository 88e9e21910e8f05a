"""Request-trace loaders: the Azure LLM 2023 trace's published figures, windows, malformed rows, the generic
CSV loader with a column mapping, and resampling lengths from the trace."""

from __future__ import annotations

import gzip
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from workloads import (
    REQUEST_TRACES,
    TRACES,
    Empirical,
    InferenceRequest,
    RequestTrace,
    TraceFormatError,
    TraceReplay,
    WorkloadError,
    bundled_path,
    load_azure_llm,
    load_request_csv,
    load_request_trace,
    make_arrivals,
    make_distribution,
)
from workloads.errors import SkippedRowsWarning

HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens"


@pytest.fixture(scope="module")
def azure() -> RequestTrace:
    return load_azure_llm()


def write(tmp_path: Path, lines: list[str], name: str = "trace.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


# --- published figures (traces/README.md) -------------------------------------------------------------


def test_azure_reproduces_published_figures(azure: RequestTrace) -> None:
    assert len(azure) == 19_366
    assert round(azure.span) == 3_502
    assert round(len(azure) / azure.span, 2) == 5.53
    assert np.median(azure.prompt_tokens) == 1_020
    assert np.median(azure.output_tokens) == 129
    gaps = azure.interarrivals()
    assert round(float(gaps.std() / gaps.mean()), 2) == 1.09
    assert azure.skipped == () and azure.services == ("default",)
    assert azure.origin == datetime(2023, 11, 16, 18, 15, 46, 680590)


def test_azure_rows_sorted_and_mapped(azure: RequestTrace) -> None:
    assert azure.arrival[0] == 0.0 and np.all(np.diff(azure.arrival) >= 0)
    # first and last data rows of the file: 18:15:46.6805900,374,44 and 19:14:08.4025270,197,183
    assert azure[0] == InferenceRequest(0, 0.0, 374, 44)
    last = azure[-1]
    assert (last.request_id, last.prompt_tokens, last.output_tokens) == (19_365, 197, 183)
    assert last.arrival == pytest.approx(3_501.721937, abs=1e-9)
    assert azure[1].arrival == pytest.approx(50.9951690 - 46.6805900, abs=1e-9)
    assert azure.source.endswith("AzureLLMInferenceTrace_conv.csv.gz")


def test_registry_and_gzip_is_transparent(azure: RequestTrace, tmp_path: Path) -> None:
    assert REQUEST_TRACES["azure-conv"] is load_azure_llm and "azure-conv" not in TRACES
    plain = tmp_path / "AzureLLMInferenceTrace_conv.csv"
    with gzip.open(bundled_path("AzureLLMInferenceTrace_conv.csv.gz"), "rb") as src, plain.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    trace = load_azure_llm(plain)
    np.testing.assert_array_equal(trace.arrival, azure.arrival)
    np.testing.assert_array_equal(trace.prompt_tokens, azure.prompt_tokens)
    assert trace.origin == azure.origin
    assert load_request_trace("azure-conv", window=(0, 60)).arrival[-1] < 60
    with pytest.raises(WorkloadError, match=r"unknown request trace 'azure'.*did you mean 'azure-conv'"):
        load_request_trace("azure")


def test_window_in_seconds_and_wall_clock(azure: RequestTrace) -> None:
    keep = (azure.arrival >= 600) & (azure.arrival < 1200)
    minutes = load_azure_llm(window=(600, 1200))
    assert len(minutes) == int(keep.sum())
    np.testing.assert_allclose(minutes.arrival, azure.arrival[keep] - azure.arrival[keep][0], atol=1e-9)
    np.testing.assert_array_equal(minutes.output_tokens, azure.output_tokens[keep])
    assert load_azure_llm(window={"start": 600, "end": 1200}).arrival.tolist() == minutes.arrival.tolist()
    clock = load_azure_llm(window=("2023-11-16 18:30:00", "2023-11-16 18:40:00"))
    assert clock.origin is not None and clock.origin >= datetime(2023, 11, 16, 18, 30)
    assert clock.span < 600 and 0 < len(clock) < len(azure)
    assert len(load_azure_llm(window=(3000, None))) == int((azure.arrival >= 3000).sum())
    with pytest.raises(WorkloadError, match="holds no requests"):
        load_azure_llm(window=(5000, 6000))
    with pytest.raises(WorkloadError, match=r"end 10\.0 must be after start 20\.0"):
        load_azure_llm(window=(20, 10))


# --- malformed rows ---------------------------------------------------------------------------------------


ROWS = [
    HEADER,
    "2023-11-16 18:15:46.6805900,374,44",
    "2023-11-16 18:15:4x.0000000,396,109",
    "2023-11-16 18:15:51.2224670,879,abc",
    "2023-11-16 18:15:51.3910170,0,16",
    "2023-11-16 18:15:52.0000000,12",
    "2023-11-16 18:15:53.0000000,10.5,20",
    "",
    "2023-11-16 18:15:50.0000000,100,200",
]


def test_malformed_rows_raise_with_file_line_field(tmp_path: Path) -> None:
    path = write(tmp_path, ROWS)
    with pytest.raises(TraceFormatError) as info:
        load_azure_llm(path)
    error = info.value
    assert (error.path, error.line, error.field) == (str(path), 3, "TIMESTAMP")
    assert str(path) in str(error) and "line 3" in str(error) and "'TIMESTAMP'" in str(error)


def test_skip_mode_reports_every_bad_row(tmp_path: Path) -> None:
    with pytest.warns(SkippedRowsWarning, match=r"skipped 5 malformed rows .*line 3, field 'TIMESTAMP'"):
        trace = load_azure_llm(write(tmp_path, ROWS), errors="skip")
    assert [(row.line, row.field) for row in trace.skipped] == [
        (3, "TIMESTAMP"), (4, "GeneratedTokens"), (5, "ContextTokens"), (6, "columns"), (7, "ContextTokens")]
    assert "'abc'" in trace.skipped[1].reason
    assert len(trace) == 2  # lines 2 and 9 (the blank line 8 is not a row)
    assert trace.arrival.tolist() == pytest.approx([0.0, 50.0 - 46.68059], abs=1e-9)
    assert trace.prompt_tokens.tolist() == [374, 100]


def test_header_and_options_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path, ["timestamp,context,generated", "2023-11-16 18:15:46.6805900,374,44"])
    with pytest.raises(TraceFormatError, match=r"line 1, field 'header'"):
        load_azure_llm(path)
    with pytest.raises(WorkloadError, match="errors must be 'raise' or 'skip'"):
        load_azure_llm(errors="ignore")  # type: ignore[arg-type]
    with pytest.raises(WorkloadError, match="does not exist"):
        load_azure_llm(tmp_path / "missing.csv")
    bad_only = write(tmp_path, [HEADER, "x,1,1"], name="bad.csv")
    with pytest.raises(WorkloadError, match="no requests to load"), pytest.warns(SkippedRowsWarning):
        load_azure_llm(bad_only, errors="skip")


# --- generic CSV loader --------------------------------------------------------------------------------


def test_request_csv_with_column_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, [
        "model,output_len,ts_ms,input_len,extra",
        "llama,10,1500,100,x",
        "llama,20,500,200,y",
        "mistral,30,2500,300,z",
    ])
    columns = {"arrival": "ts_ms", "prompt_tokens": "input_len", "output_tokens": "output_len", "service": "model"}
    trace = load_request_csv(path, columns=columns, time_unit="ms")
    assert trace.arrival.tolist() == [0.0, 1.0, 2.0]  # sorted, re-based to the first request
    assert trace.prompt_tokens.tolist() == [200, 100, 300] and trace.output_tokens.tolist() == [20, 10, 30]
    assert trace.services == ("llama", "mistral") and trace[2].service == "mistral"
    assert trace.origin is None and trace.source == str(path)
    no_service = load_request_csv(path, columns={k: v for k, v in columns.items() if k != "service"}, time_unit="ms")
    assert no_service.service is None and no_service[0].service == "default"
    seconds = load_request_csv(path, columns=columns)
    assert seconds.arrival.tolist() == [0.0, 1000.0, 2000.0]


def test_request_csv_datetimes_and_the_azure_file(azure: RequestTrace, tmp_path: Path) -> None:
    plain = tmp_path / "azure.csv"
    with gzip.open(bundled_path("AzureLLMInferenceTrace_conv.csv.gz"), "rb") as src, plain.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    trace = load_request_csv(plain, columns={"arrival": "TIMESTAMP", "prompt_tokens": "ContextTokens",
                                             "output_tokens": "GeneratedTokens"}, time_unit="datetime")
    np.testing.assert_array_equal(trace.arrival, azure.arrival)
    np.testing.assert_array_equal(trace.output_tokens, azure.output_tokens)
    assert trace.origin == azure.origin
    zoned = write(tmp_path, ["t,p,o", "2024-01-01T10:00:00+01:00,1,1", "2024-01-01T09:00:30Z,2,2"], name="tz.csv")
    utc = load_request_csv(zoned, columns={"arrival": "t", "prompt_tokens": "p", "output_tokens": "o"},
                           time_unit="datetime")
    assert utc.origin == datetime(2024, 1, 1, 9, 0) and utc.arrival.tolist() == [0.0, 30.0]


def test_request_csv_errors(tmp_path: Path) -> None:
    path = write(tmp_path, ["ts,prompt,output", "0.5,10,5", "nan,10,5", "2.0,10,-1"])
    columns = {"arrival": "ts", "prompt_tokens": "prompt", "output_tokens": "output"}
    with pytest.raises(TraceFormatError) as info:
        load_request_csv(path, columns={**columns, "output_tokens": "outputs"})
    assert (info.value.line, info.value.field) == (1, "outputs")
    assert "columns.output_tokens" in str(info.value) and "did you mean 'output'" in str(info.value)
    with pytest.raises(TraceFormatError) as info:
        load_request_csv(path, columns=columns)
    assert (info.value.line, info.value.field) == (3, "ts")
    with pytest.warns(SkippedRowsWarning, match=r"line 3, field 'ts'.*line 4, field 'output'"):
        skipped = load_request_csv(path, columns=columns, errors="skip")
    assert [(row.line, row.field) for row in skipped.skipped] == [(3, "ts"), (4, "output")]
    assert len(skipped) == 1
    with pytest.raises(WorkloadError, match=r"columns: missing key 'output_tokens'"):
        load_request_csv(path, columns={"arrival": "ts", "prompt_tokens": "prompt"})
    with pytest.raises(WorkloadError, match=r"columns: unknown key 'prompt'.*did you mean 'prompt_tokens'"):
        load_request_csv(path, columns={**columns, "prompt": "prompt"})
    with pytest.raises(WorkloadError, match=r"unknown time_unit 'sec'"):
        load_request_csv(path, columns=columns, time_unit="sec")  # type: ignore[arg-type]
    with pytest.raises(WorkloadError, match="window: with time_unit='s', give"):
        load_request_csv(path, columns=columns, window=("2024-01-01", "2024-01-02"), errors="skip")
    empty = write(tmp_path, [""], name="empty.csv")
    with pytest.raises(TraceFormatError, match="line 1, field 'header'"):
        load_request_csv(empty, columns=columns)


# --- lengths and arrivals from the trace ------------------------------------------------------------------


def test_empirical_lengths_from_the_trace(azure: RequestTrace) -> None:
    prompt = make_distribution({"dist": "empirical", "trace": "azure-conv", "field": "prompt"}, where="p")
    output = make_distribution({"dist": "empirical", "trace": "azure-conv", "field": "output"}, where="o")
    assert isinstance(prompt, Empirical) and prompt.source == "azure-conv:prompt"
    assert prompt.mean == pytest.approx(azure.prompt_tokens.mean())
    assert output.mean == pytest.approx(azure.output_tokens.mean())
    draws = output.sample(np.random.default_rng(0), 1000)
    assert np.all(np.isin(draws, azure.output_tokens))
    with pytest.raises(WorkloadError, match=r"^o\.field: unknown field 'outputs' of trace 'azure-conv'.*'output'"):
        make_distribution({"dist": "empirical", "trace": "azure-conv", "field": "outputs"}, where="o")
    with pytest.raises(WorkloadError, match=r"^o\.trace: unknown trace 'azure'.*azure-conv"):
        make_distribution({"dist": "empirical", "trace": "azure", "field": "output"}, where="o")


def test_trace_replay_of_azure(azure: RequestTrace) -> None:
    replay = make_arrivals({"process": "trace", "trace": "azure-conv", "scale": 2}, where="a")
    assert isinstance(replay, TraceReplay)
    np.testing.assert_array_equal(replay.times(None, count=len(azure)), azure.arrival / 2)
    assert replay.rate == pytest.approx(2 * len(azure) / azure.span)
    window = make_arrivals({"process": "trace", "trace": "azure-conv", "window": [600, 1200]}, where="a")
    assert window.times(None, horizon=600).size == int(((azure.arrival >= 600) & (azure.arrival < 1200)).sum())
    replayed = azure.replay(scale=2, window=(600, 1200))
    np.testing.assert_array_equal(replayed.arrival, window.times(None, horizon=600) / 2)

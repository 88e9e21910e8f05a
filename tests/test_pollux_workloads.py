"""Pollux's model (``workloads.elastic``) and workloads (``load_pollux_workload``).

The model's constants were fitted to Pollux's artifact (petuum/adaptdl, branch osdi21-artifact, simulator/traces/);
the figures typed here are ones the fit did NOT use, from the same artifact: the 64-replica step times held out of
the throughput fit, the steps the largest-batch validation runs counted, and the artifact's own run-time estimates
of the workloads' configurations. The workload counts are those of the bundled copies of simulator/workloads/
(../shared/traces/README.md: 8 workloads, 160 jobs each).
"""

from __future__ import annotations

import collections
import itertools
import math
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import workloads
from workloads import (
    POLLUX_APPLICATIONS,
    PolluxApplication,
    ThroughputParams,
    TrainingJob,
    batch_config,
    best_batch,
    elastic_job,
    fit_throughput_params,
    goodput,
    load_pollux_workload,
)
from workloads.errors import SkippedRowsWarning, TraceFormatError, WorkloadError
from workloads.traces.bundled import DATA_DIR, bundled_files

HEADER = "name,time,application,num_replicas,batch_size\n"


@pytest.fixture(scope="module")
def traces():
    return {n: load_pollux_workload(n) for n in range(1, 9)}


# --- the workloads -------------------------------------------------------------------------------------------------

def test_eight_files_of_160_jobs(traces):
    for n, trace in traces.items():
        assert len(trace) == 160, n
        assert [job.job_id for job in trace.jobs] == list(range(160))
        assert all(a.arrival <= b.arrival for a, b in zip(trace.jobs, trace.jobs[1:], strict=False))
        assert trace.skipped == () and trace.source.startswith("pollux:")
        assert len({job.name for job in trace.jobs}) == 160


def test_application_counts(traces):
    # counted in the artifact's simulator/workloads/workload-{1..8}.csv
    counts = collections.Counter(job.name.rsplit("-", 1)[0] for trace in traces.values() for job in trace.jobs)
    assert counts == {"ncf": 503, "cifar10": 495, "deepspeech2": 111, "bert": 86, "yolov3": 59, "imagenet": 26}
    assert set(counts) == set(POLLUX_APPLICATIONS)


def test_arrival_span(traces):
    # the artifact's generator (simulator/workload.py) samples 8 hours of Philly submissions; first and last
    # submit times of each file as recorded
    first = [traces[n].jobs[0].arrival for n in range(1, 9)]
    last = [traces[n].jobs[-1].arrival for n in range(1, 9)]
    assert first == [107, 498, 791, 259, 16, 53, 131, 35]
    assert last == [27_695, 27_131, 28_739, 27_731, 28_755, 28_189, 28_775, 28_253]
    assert all(0 <= job.arrival < 8 * 3600 for trace in traces.values() for job in trace.jobs)


def test_jobs_are_elastic_as_stated(traces):
    for trace in traces.values():
        for job in trace.jobs:
            app = POLLUX_APPLICATIONS[job.name.rsplit("-", 1)[0]]
            assert job.elastic and job.reference_device == "t4" and job.min_gpus == 1
            assert job.max_gpus == max(app.max_gpus, job.gpus)
            assert job.max_gpus == (1 if app.name == "ncf" else 64)
            assert job.gang_range == (1, job.max_gpus)


def test_scaling_covers_the_range_and_is_sublinear(traces):
    for trace in traces.values():
        for job in trace.jobs:
            assert sorted(job.scaling) == list(range(1, job.max_gpus + 1))
            assert job.gang_speedup(job.gpus) == 1.0
            if job.gpus > 1:
                # fewer GPUs run slower, but each GPU does no less (sync costs only grow with the gang)
                assert 1 / job.gpus <= job.gang_speedup(1) < 1
            for gang in (job.gpus + 1, job.max_gpus):
                if gang <= job.max_gpus:
                    assert job.gang_speedup(gang) <= gang / job.gpus * (1 + 1e-12)


def test_duration_is_the_work_over_the_goodput_at_the_recorded_configuration():
    trace = load_pollux_workload(6)
    job = next(job for job in trace.jobs if job.name.startswith("imagenet"))
    row = _rows(6)[job.name]
    app = POLLUX_APPLICATIONS["imagenet"]
    assert job.gpus == row["num_replicas"]
    assert job.duration == pytest.approx(app.target_samples / goodput(app, job.gpus, row["batch_size"]))
    curve = {g: best_batch(app, g).goodput for g in (1, job.gpus, 64)}
    assert job.scaling[1] == pytest.approx(curve[1]) and job.scaling[64] == pytest.approx(curve[64])


# The artifact's own run-time estimate of each configuration the workloads use: the steps its validation run at that
# batch counted to the last epoch times the step time it interpolates from placements.csv and scalability.csv
# (simulator/applications.py, Application.get_configurations), in seconds on T4.
ARTIFACT_RUN_TIMES = {
    ("bert", 6, 384): 3055.7, ("bert", 8, 384): 2480.3, ("bert", 12, 384): 1589.2, ("bert", 16, 384): 1334.9,
    ("cifar10", 6, 2048): 854.2, ("cifar10", 8, 2048): 826.1, ("cifar10", 12, 4096): 573.2,
    ("cifar10", 16, 4096): 449.4, ("deepspeech2", 6, 320): 4153.2, ("deepspeech2", 8, 320): 3500.8,
    ("deepspeech2", 12, 640): 2572.7, ("imagenet", 24, 3200): 31_395.6, ("imagenet", 32, 6400): 26_207.4,
    ("imagenet", 48, 6400): 18_879.6, ("ncf", 1, 32768): 33.0, ("yolov3", 4, 64): 12_869.9,
}


def test_durations_match_the_artifacts_own_run_times(traces):
    seen = {}
    for n, trace in traces.items():
        rows = _rows(n)
        for job in trace.jobs:
            row = rows[job.name]
            seen[(row["application"], job.gpus, row["batch_size"])] = job.duration
    assert set(seen) == set(ARTIFACT_RUN_TIMES)
    ratios = []
    for key, duration in seen.items():
        app = POLLUX_APPLICATIONS[key[0]]
        ratio = duration / ARTIFACT_RUN_TIMES[key]
        assert abs(math.log(ratio)) <= 3 * app.fit_error, (key, ratio)  # ncf's is the largest: 1.34
        ratios.append(ratio)
    assert abs(np.mean(np.log(ratios))) < 0.1


def test_recorded_configurations_are_near_the_models_best():
    # the artifact's generator chose each batch as the one of shortest run time at that gang among its validated
    # batch sizes, and kept gangs whose speed-up over the best single GPU was 0.5 to 0.8 per GPU (its measured data)
    for app_name, gpus, batch in ARTIFACT_RUN_TIMES:
        app = POLLUX_APPLICATIONS[app_name]
        recorded, best = batch_config(app, gpus, batch), best_batch(app, gpus)
        assert 0.9 * best.goodput <= recorded.goodput <= best.goodput
        if gpus > 1:
            per_gpu = recorded.goodput / best_batch(app, 1).goodput / gpus
            assert 0.5 * math.exp(-app.fit_error) <= per_gpu <= 0.8 * math.exp(app.fit_error), (app_name, gpus)


# --- the throughput fit --------------------------------------------------------------------------------------------

# Held out of the fit: every 64-replica row (16 nodes of 4) of the artifact's simulator/traces/<app>/scalability.csv,
# as (local_bsz, step_time in seconds).
HELD_OUT_64 = {
    "cifar10": [(32, 0.26924), (45, 0.27369), (64, 0.3017), (91, 0.30648), (129, 0.23476), (182, 0.38952)],
    "imagenet": [(20, 0.57625), (28, 0.64456), (40, 0.637), (57, 0.61762), (81, 0.74016), (115, 0.82368),
                 (163, 0.90536), (200, 1.0869)],
    "deepspeech2": [(10, 1.19398), (14, 1.37677)],
    "ncf": [(32, 0.04091), (45, 0.04384), (64, 0.04494), (91, 0.05028), (129, 0.05608), (182, 0.04751),
            (257, 0.04886), (363, 0.05514), (513, 0.04441)],
    "bert": [(4, 1.87352), (6, 2.13097), (8, 2.09987), (11, 2.34555), (12, 2.23152)],
    "yolov3": [(4, 1.41717), (6, 1.47683), (8, 1.48277)],
}


@pytest.mark.parametrize("name", sorted(HELD_OUT_64))
def test_held_out_64_gpu_throughputs_fall_within_the_fitted_error(name):
    app = POLLUX_APPLICATIONS[name]
    assert 0 < app.fit_error <= 0.15  # the band is a tight one: ~10-13% RMS over the fitted rows
    local, step = np.array(HELD_OUT_64[name]).T
    errors = app.params.log_errors(16, 64, local, step)
    assert np.sqrt(np.mean(errors ** 2)) <= 2 * app.fit_error
    assert np.abs(errors).max() <= 3 * app.fit_error


def _synthetic(params, rng=None, noise=0.0):
    nodes, replicas, local = [], [], []
    for gang in (1, 2, 3, 4, 8, 12, 16, 32, 48):
        for spread in {1, -(-gang // 4), min(gang, 2 * -(-gang // 4))}:
            for m in (8, 16, 32, 64, 128, 256):
                nodes.append(spread)
                replicas.append(gang)
                local.append(m)
    nodes, replicas, local = map(np.array, (nodes, replicas, local))
    step = params.iter_time(nodes, replicas, local)
    sync = step - params.grad_time(local)
    if noise:
        step = step * np.exp(rng.normal(0, noise, step.size))
        sync = np.minimum(sync, 0.9 * step)
    return nodes, replicas, local, step, sync


TRUE = ThroughputParams(alpha_grad=0.05, beta_grad=0.002, alpha_sync_local=0.03, beta_sync_local=0.004,
                        alpha_sync_node=0.15, beta_sync_node=0.003, gamma=2.0)


def test_fit_recovers_known_parameters():
    fitted = fit_throughput_params(*_synthetic(TRUE))
    for name in ThroughputParams.__slots__:
        assert getattr(fitted, name) == pytest.approx(getattr(TRUE, name), rel=0.02), name


def test_fit_error_matches_the_noise_and_predicts_a_held_out_gang():
    rng = np.random.default_rng(7)
    nodes, replicas, local, step, sync = _synthetic(TRUE, rng, noise=0.05)
    fitted = fit_throughput_params(nodes, replicas, local, step, sync)
    rms = np.sqrt(np.mean(fitted.log_errors(nodes, replicas, local, step) ** 2))
    assert 0.04 < rms < 0.06  # the noise put in, with some hundreds of rows
    truth = TRUE.iter_time(16, 64, np.array([8, 64, 256]))
    assert np.abs(np.log(fitted.iter_time(16, 64, np.array([8, 64, 256])) / truth)).max() < 0.05


def test_fit_without_cross_node_rows_takes_pollux_prior():
    nodes, replicas, local, step, sync = _synthetic(TRUE)
    one = nodes == 1
    fitted = fit_throughput_params(nodes[one], replicas[one], local[one], step[one], sync[one])
    assert fitted.alpha_sync_node >= 1.1 * fitted.alpha_sync_local * (1 - 1e-9)
    assert fitted.beta_sync_node >= 1.1 * fitted.beta_sync_local * (1 - 1e-9)


def test_fit_refuses_bad_measurements():
    with pytest.raises(WorkloadError, match="sync_time < step_time"):
        fit_throughput_params([1], [2], [8], [0.1], [0.2])
    with pytest.raises(WorkloadError, match="equally long"):
        fit_throughput_params([1, 1], [2], [8], [0.1], [0.05])


# --- statistical efficiency ----------------------------------------------------------------------------------------

# The steps each application's largest-batch validation run counted to the artifact's last epoch (the `iteration`
# column of simulator/traces/<app>/validation-<batch>.csv): phi was fitted to the runs' gradient statistics, not to
# these counts.
LARGEST_RUN_STEPS = {"cifar10": (4096, 2011), "imagenet": (12_800, 14_461), "deepspeech2": (640, 1423),
                     "ncf": (32_768, 1548), "bert": (384, 480), "yolov3": (512, 3143)}


@pytest.mark.parametrize("name", sorted(LARGEST_RUN_STEPS))
def test_phi_predicts_the_samples_the_largest_batch_needed(name):
    app = POLLUX_APPLICATIONS[name]
    batch, steps = LARGEST_RUN_STEPS[name]
    assert batch == app.max_batch
    predicted = app.target_samples / app.efficiency(batch)  # samples at `batch` doing the work
    assert predicted == pytest.approx(steps * batch, rel=0.05)


def test_efficiency_by_hand():
    app = POLLUX_APPLICATIONS["cifar10"]  # phi 5801, initial batch 128
    assert app.efficiency(128) == 1.0
    assert app.efficiency(4096) == pytest.approx(5929 / 9897)
    assert app.efficiency(1024) == pytest.approx((5801 + 128) / (5801 + 1024))
    assert np.all(np.diff(app.efficiency(np.arange(128, 4097))) < 0)


def test_goodput_by_hand():
    # cifar10 at batch 2048 on 8 GPUs (2 nodes of 4): 256 per GPU, no accumulation
    app = POLLUX_APPLICATIONS["cifar10"]
    grad = 0.01681 + 0.000711 * 256
    sync = 0.1246 + 0.002668 * (8 - 2)
    step = (grad ** 2.238 + sync ** 2.238) ** (1 / 2.238)
    config = batch_config(app, 8, 2048)
    assert (config.nodes, config.local_batch, config.accum_steps, config.batch) == (2, 256, 0, 2048)
    assert config.throughput == pytest.approx(2048 / step)
    assert config.goodput == pytest.approx(2048 / step * (5801 + 128) / (5801 + 2048))
    assert goodput(app, 8, 2048) == config.goodput


def test_accumulation_by_hand():
    # bert at batch 384 on 12 GPUs: 32 per GPU is 3 steps (2 accumulated) of at most 12; 11 each would make 396, so
    # the local batch is cut to 384 // 36 = 10 (as the artifact's simulator cuts it): a batch of 360, on 3 nodes
    app = POLLUX_APPLICATIONS["bert"]
    config = batch_config(app, 12, 384)
    assert (config.nodes, config.local_batch, config.accum_steps, config.batch) == (3, 10, 2, 360)
    grad = 0.1715 + 0.0587 * 10
    sync = 1.411 + 0.009292 * 10
    step = 2 * grad + (grad ** 2.028 + sync ** 2.028) ** (1 / 2.028)
    assert config.throughput == pytest.approx(360 / step)


# --- the best batch ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(POLLUX_APPLICATIONS))
def test_best_batch_beats_every_batch_it_could_run(name):
    app = POLLUX_APPLICATIONS[name]
    for gang in (1, 3, 8, 16, 64):
        best = best_batch(app, gang)
        assert app.init_batch <= best.batch <= app.max_batch and best.local_batch >= app.min_local_batch
        assert best.local_batch <= app.max_local_batch
        for batch in np.unique(np.geomspace(app.init_batch, app.max_batch, 60).astype(int)):
            try:
                other = batch_config(app, gang, int(batch))
            except WorkloadError:
                continue
            assert other.goodput <= best.goodput * (1 + 1e-12), (gang, batch)


@pytest.mark.parametrize("name", sorted(POLLUX_APPLICATIONS))
def test_best_batch_grows_with_the_noise_scale(name):
    # goodput's log is log THROUGHPUT(M) - log(phi + M) + const: its gain from a larger batch grows with phi, so the
    # best batch cannot shrink as phi grows; with phi 0 it is the smallest batch allowed, with phi huge the one of
    # the highest throughput
    app = POLLUX_APPLICATIONS[name]
    for gang in (1, 8, 64):
        batches = [best_batch(replace(app, phi=phi), gang).batch for phi in (0, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e12)]
        assert batches == sorted(batches), (gang, batches)
        smallest = max(app.init_batch, gang * app.min_local_batch)
        assert batches[0] == -(-smallest // gang) * gang
        flat = best_batch(replace(app, phi=1e12), gang)
        top = max(batch_config(app, gang, b).throughput for b in range(smallest, app.max_batch + 1, 8)
                  if -(-b // gang) >= app.min_local_batch)
        assert flat.throughput >= top * (1 - 1e-9)


@pytest.mark.parametrize("name", sorted(POLLUX_APPLICATIONS))
def test_throughput_grows_with_the_local_batch_and_goodput_per_gpu_falls_with_the_gang(name):
    app = POLLUX_APPLICATIONS[name]
    local = np.arange(app.min_local_batch, app.max_local_batch + 1)
    for nodes, gang in ((1, 1), (1, 4), (2, 8), (16, 64)):
        assert np.all(np.diff(app.params.throughput(nodes, gang, local)) > 0)
    per_gpu = [best_batch(app, g).goodput / g for g in range(1, 65)]
    assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(per_gpu))


def test_limits_refuse_what_the_artifact_did_not_measure():
    app = POLLUX_APPLICATIONS["bert"]  # batch 12..384, local batch 4..12
    with pytest.raises(WorkloadError, match="from 12 to 384"):
        batch_config(app, 4, 512)
    with pytest.raises(WorkloadError, match=r"below the minimum 4"):
        batch_config(app, 8, 16)
    with pytest.raises(WorkloadError, match="at most 96 GPUs"):
        best_batch(app, 97)
    with pytest.raises(WorkloadError, match="max_gpus 97"):
        replace(app, max_gpus=97)


def test_elastic_job_by_name_and_default_batch():
    job = elastic_job("yolov3", job_id=3, arrival=10.0, gpus=4, name="y")
    app = POLLUX_APPLICATIONS["yolov3"]
    assert isinstance(job, TrainingJob) and job.max_gpus == 64 and job.min_gpus == 1
    assert job.duration == pytest.approx(app.target_samples / best_batch(app, 4).goodput)
    assert elastic_job(app, job_id=0, arrival=0.0, gpus=70, max_gpus=96).max_gpus == 96
    with pytest.raises(WorkloadError, match="did you mean 'yolov3'"):
        elastic_job("yolo3", job_id=0, arrival=0.0, gpus=1)


def test_applications_are_checked():
    app = POLLUX_APPLICATIONS["cifar10"]
    assert isinstance(app, PolluxApplication)
    with pytest.raises(WorkloadError, match="init_batch"):
        replace(app, init_batch=8192)
    with pytest.raises(WorkloadError, match="gamma"):
        replace(app.params, gamma=0.5)


# --- bad input -----------------------------------------------------------------------------------------------------

def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "workload.csv"
    path.write_text(text)
    return path


GOOD = "cifar10-0,107,cifar10,6,2048\nncf-1,135,ncf,1,32768\n"


def test_missing_column_names_file_and_header(tmp_path):
    path = _write(tmp_path, "name,time,application,num_replicas\ncifar10-0,107,cifar10,6\n")
    with pytest.raises(TraceFormatError) as error:
        load_pollux_workload(path)
    assert (error.value.path, error.value.line, error.value.field) == (str(path), 1, "header")
    assert str(path) in str(error.value)


def test_unknown_application_names_file_line_and_choices(tmp_path):
    path = _write(tmp_path, HEADER + GOOD + "gpt-2,200,gpt2,4,64\n")
    with pytest.raises(TraceFormatError) as error:
        load_pollux_workload(path)
    assert (error.value.path, error.value.line, error.value.field) == (str(path), 4, "application")
    assert "bert, cifar10, deepspeech2, imagenet, ncf, yolov3" in str(error.value)
    assert f"{path}, line 4" in str(error.value)


@pytest.mark.parametrize(("row", "field"), [
    ("x,-5,cifar10,6,2048", "time"),
    ("x,nan,cifar10,6,2048", "time"),
    ("x,5,cifar10,6.5,2048", "num_replicas"),
    ("x,5,cifar10,0,2048", "num_replicas"),
    ("x,5,bert,200,384", "num_replicas"),
    ("x,5,cifar10,6,99999", "batch_size"),
    ("x,5,cifar10,6,", "batch_size"),
    (",5,cifar10,6,2048", "name"),
    ("x,5,cifar10,6", "columns"),
])
def test_bad_fields_are_named(tmp_path, row, field):
    path = _write(tmp_path, HEADER + GOOD + row + "\n")
    with pytest.raises(TraceFormatError) as error:
        load_pollux_workload(path)
    assert (error.value.line, error.value.field) == (4, field)


def test_skip_keeps_the_rest_and_reports_the_skipped(tmp_path):
    path = _write(tmp_path, HEADER + "bad-0,-1,cifar10,6,2048\n" + GOOD + "bad-1,300,resnet,4,64\n"
                  + "cifar10-2,50,cifar10,12,4096\n")
    with pytest.warns(SkippedRowsWarning, match="skipped 2 malformed rows"):
        trace = load_pollux_workload(path, errors="skip")
    assert [job.name for job in trace.jobs] == ["cifar10-2", "cifar10-0", "ncf-1"]
    assert [(row.line, row.field) for row in trace.skipped] == [(2, "time"), (5, "application")]
    assert all(row.path == str(path) for row in trace.skipped)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_pollux_workload(_write(tmp_path, HEADER + GOOD), errors="skip")) == 2


def test_bad_arguments(tmp_path):
    for n in (0, 9, True, 2.0):
        with pytest.raises(WorkloadError, match="from 1 to 8"):
            load_pollux_workload(n)
    with pytest.raises(WorkloadError, match="does not exist"):
        load_pollux_workload(tmp_path / "missing.csv")
    with pytest.raises(WorkloadError, match="errors must be"):
        load_pollux_workload(1, errors="ignore")
    with pytest.raises(WorkloadError, match="no jobs left"), pytest.warns(SkippedRowsWarning):
        load_pollux_workload(_write(tmp_path, HEADER + "x,-1,ncf,1,32768\n"), errors="skip")


# --- bundling, credit, exports -------------------------------------------------------------------------------------

def test_bundled_copies_are_credited_and_exported():
    names = [f"pollux_workload-{n}.csv" for n in range(1, 9)]
    assert set(names) <= set(bundled_files())
    credit = (DATA_DIR / "ATTRIBUTION.md").read_text()
    assert "`pollux_workload-1.csv`" in credit and "`pollux_workload-8.csv`" in credit
    assert "osdi21-artifact" in credit and "simulator/workloads/workload-1.csv" in credit
    for name in ("load_pollux_workload", "POLLUX_APPLICATIONS", "PolluxApplication", "ThroughputParams",
                 "fit_throughput_params", "best_batch", "goodput", "elastic_job"):
        assert name in workloads.__all__ and hasattr(workloads, name), name
    assert "load_pollux_workload" in workloads.traces.__all__


def _rows(n: int) -> dict[str, dict[str, object]]:
    lines = (DATA_DIR / f"pollux_workload-{n}.csv").read_text().splitlines()
    keys = lines[0].split(",")
    rows = {}
    for line in lines[1:]:
        values = dict(zip(keys, line.split(","), strict=True))
        rows[values["name"]] = {"application": values["application"], "num_replicas": int(values["num_replicas"]),
                                "batch_size": int(values["batch_size"])}
    return rows

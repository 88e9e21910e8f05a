"""``load_shockwave_jobs``: a small hand-written trace in the exact layout of Shockwave's published traces
(uw-mad-dash/shockwave ``scheduler/traces/reproduce/*.trace``; the values are made up), its batch-size rules turned
into phases whose throughputs are Gavel's file's entries at each batch size, worked out by hand; bad input named."""

from __future__ import annotations

import math

import pytest

from sim import Cluster, PoolSpec, Simulation
from workloads import WorkloadError, load_gavel_throughputs, load_shockwave_jobs
from workloads.errors import SkippedRowsWarning, TraceFormatError

# job_type, command, working_directory, num_steps_arg, needs_data_dir, total_steps, scale_factor, mode,
# priority_weight, SLO, duration, arrival_time
LINES = [
    "LM (batch size 10)\tpython3 main.py --cuda --data %s/wikitext2 --batch_size 10\tlanguage_modeling\t--steps\t1\t"
    "20000\t1\tgns\t1\t-1.000000\t1400\t0",
    "ResNet-18 (batch size 32)\tpython3 main.py --data_dir=%s/cifar10 --batch_size 32\timage_classification/cifar10\t"
    "--num_steps\t1\t30000\t1\taccordion\t1\t-1.000000\t3300\t55",
    "ResNet-50 (batch size 64)\tpython3 main.py -j 4 -a resnet50 -b 64 %s/imagenet/\timage_classification/imagenet\t"
    "--num_minibatches\t1\t4000\t2\tgns\t1\t-1.000000\t13000\t64",
    "Transformer (batch size 64)\tpython3 train.py -data %s/translation/multi30k.atok.low.pt -batch_size 64 "
    "-proj_share_weight\ttranslation\t-step\t1\t5000\t1\taccordion\t1\t-1.000000\t2800\t73",
    "Recommendation (batch size 8192)\tpython3 train.py --data_dir %s/ml-20m/pro_sg/ --batch_size 8192\t"
    "recommendation\t-n\t1\t4000\t1\tstatic\t1\t-1.000000\t3800\t109",
    "ResNet-50 (batch size 64)\tpython3 main.py -j 4 -a resnet50 -b 64 %s/imagenet/\timage_classification/imagenet\t"
    "--num_minibatches\t1\t3000\t2\taccordion\t1\t-1.000000\t9000\t100",
]


@pytest.fixture(scope="module")
def gavel():
    return load_gavel_throughputs()


@pytest.fixture
def trace_file(tmp_path):
    path = tmp_path / "small.trace"
    path.write_text("\n".join(LINES) + "\n")
    return path


def _job(trace, line):
    return next(job for job in trace.jobs if job.name.startswith(f"small:{line} "))


def test_counts_order_and_names(trace_file):
    trace = load_shockwave_jobs(trace_file)
    assert len(trace) == 6 and trace.skipped == ()
    assert [job.job_id for job in trace.jobs] == list(range(6))
    assert [job.arrival for job in trace.jobs] == [0.0, 55.0, 64.0, 73.0, 100.0, 109.0]
    assert [job.name for job in trace.jobs][:2] == ["small:1 LM (batch size 10) gns",
                                                     "small:2 ResNet-18 (batch size 32) accordion"]
    assert [len(job.phases) if job.phases else 0 for job in trace.jobs] == [4, 2, 2, 0, 2, 0]
    assert [job.gpus for job in trace.jobs] == [1, 1, 2, 1, 2, 1]
    assert "4 jobs change batch size" in trace.source
    assert [job.name for job in load_shockwave_jobs(trace_file, limit=2).jobs] == [job.name for job in trace.jobs[:2]]


def test_phases_add_up_to_the_duration_and_keep_the_samples(trace_file, gavel):
    for job in load_shockwave_jobs(trace_file).jobs:
        if job.phases is None:
            continue
        assert job.duration == pytest.approx(math.fsum(p.duration for p in job.phases), rel=1e-12)
        # samples (steps x batch size) over the phases are the trace's total_steps x the initial batch size
        line = LINES[int(job.name.split(":")[1].split()[0]) - 1].split("\t")
        batches = [int(b) for b in _batches(job, gavel)]
        samples = math.fsum(p.duration * p.throughputs["v100"] * b for p, b in zip(job.phases, batches, strict=True))
        assert samples == pytest.approx(int(line[5]) * batches[0], rel=1e-12)


def _batches(job, gavel):
    """The batch size of each phase, found by matching its throughputs to the file's entries of the model."""
    model = job.name.split(" ", 1)[1].rsplit(" (batch size", 1)[0]
    out = []
    for phase in job.phases:
        match = [key[0] for key, rate in gavel["v100"].items()
                 if key[1] == job.gpus and key[0].startswith(model + " (") and rate == phase.throughputs["v100"]]
        assert len(match) == 1
        out.append(match[0].rsplit(" ", 1)[1].rstrip(")"))
    return out


def test_gns_doubles_at_the_stated_shares_with_each_batch_sizes_throughputs(trace_file, gavel):
    # LM at batch 10 on 1 GPU, 20,000 steps (200,000 samples): 5% of the samples at 10, 5% at 20, 10% at 40, the
    # last 80% at 80 (Gavel's file has no LM at 160); each phase's speeds are the file's entry at its batch size
    job = _job(load_shockwave_jobs(trace_file), 1)
    shares = {10: 0.05, 20: 0.05, 40: 0.10, 80: 0.80}
    for phase, (batch, share) in zip(job.phases, shares.items(), strict=True):
        rates = {device: gavel[device][(f"LM (batch size {batch})", 1)] for device in ("k80", "p100", "v100")}
        assert phase.throughputs == rates
        assert phase.duration == pytest.approx(share * 200_000 / batch / rates["v100"], rel=1e-12)
    assert job.throughputs == job.phases[0].throughputs and job.reference_device == "v100"
    # ResNet-50 at 64 on 2 GPUs: doubles once (Gavel's file stops at 128)
    job = _job(load_shockwave_jobs(trace_file), 3)
    assert job.phases[1].throughputs["v100"] == gavel["v100"][("ResNet-50 (batch size 128)", 2)]
    assert job.phases[1].duration == pytest.approx(0.95 * 4000 * 64 / 128 / gavel["v100"][
        ("ResNet-50 (batch size 128)", 2)], rel=1e-12)


def test_accordion_runs_the_critical_share_then_the_largest_batch(trace_file, gavel):
    # ResNet-18 at 32: the first 10% of the work at 32, the rest at 256 (the largest in the file)
    job = _job(load_shockwave_jobs(trace_file), 2)
    small, large = gavel["v100"][("ResNet-18 (batch size 32)", 1)], gavel["v100"][("ResNet-18 (batch size 256)", 1)]
    assert [p.duration for p in job.phases] == pytest.approx([0.1 * 30000 / small, 0.9 * 30000 * 32 / 256 / large])
    job = _job(load_shockwave_jobs(trace_file, accordion_critical=0.5), 2)
    assert job.phases[0].duration == pytest.approx(0.5 * 30000 / small, rel=1e-12)


def test_a_device_some_phase_does_not_fit_is_not_allowed(trace_file, gavel):
    # ResNet-50 at batch 128 on 2 GPUs has zero throughput on a K80 in Gavel's file: the accordion job that reaches
    # it may not use K80s, though its initial batch (64) fits one
    assert gavel["k80"][("ResNet-50 (batch size 64)", 2)] > 0 and gavel["k80"][("ResNet-50 (batch size 128)", 2)] == 0
    job = _job(load_shockwave_jobs(trace_file), 6)
    assert job.allowed_devices == ("p100", "v100") and all("k80" not in p.throughputs for p in job.phases)


def test_static_jobs_and_fixed_batch_models_have_no_phases(trace_file, gavel):
    trace = load_shockwave_jobs(trace_file)
    static = _job(trace, 5)
    assert static.phases is None
    assert static.duration == pytest.approx(4000 / gavel["v100"][("Recommendation (batch size 8192)", 1)])
    transformer = _job(trace, 4)  # accordion, but Shockwave never changes a Transformer's batch size
    assert transformer.phases is None
    assert transformer.duration == pytest.approx(5000 / gavel["v100"][("Transformer (batch size 64)", 1)])
    no_doubling = load_shockwave_jobs(trace_file, gns_doublings=())
    assert _job(no_doubling, 1).phases is None and _job(no_doubling, 2).phases is not None


def test_jobs_at_one_batch_size_carry_their_type_for_packing_and_the_others_none(trace_file):
    # a packing scheduler reads a job's co-located speeds by its job type, which names one batch size: the static job
    # and the Transformer (whose batch size never changes) carry theirs, the jobs whose batch size changes none
    trace = load_shockwave_jobs(trace_file)
    types = {line: _job(trace, line).job_type for line in range(1, 7)}
    assert types == {1: None, 2: None, 3: None, 4: "Transformer (batch size 64)",
                     5: "Recommendation (batch size 8192)", 6: None}
    assert all((job.job_type is None) == (job.phases is not None) for job in trace.jobs)


def test_a_phased_job_runs_its_duration_alone(trace_file):
    job = _job(load_shockwave_jobs(trace_file), 1)
    res = Simulation(Cluster([PoolSpec("v100", nodes=1, devices_per_node=1)]), [job]).run()
    assert res.jobs["jct"].iloc[0] == pytest.approx(job.duration, rel=1e-9)


@pytest.mark.parametrize(("column", "value", "field"), [
    (5, "many", "total_steps"),
    (6, "0", "scale_factor"),
    (7, "elastic", "mode"),
    (10, "long", "duration"),
    (11, "-3", "arrival_time"),
    (None, None, "line"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, column, value, field):
    fields = LINES[1].split("\t")
    if column is None:
        fields = fields[:-1]
    else:
        fields[column] = value
    path = tmp_path / "bad.trace"
    path.write_text(LINES[0] + "\n" + "\t".join(fields) + "\n")
    with pytest.raises(TraceFormatError) as caught:
        load_shockwave_jobs(path)
    assert caught.value.line == 2 and caught.value.field == field
    assert str(caught.value).startswith(f"{path}, line 2, field {field!r}: ")


def test_unknown_job_type_or_gang_names_the_type_and_the_throughputs_file(tmp_path):
    path = tmp_path / "x.trace"
    path.write_text(LINES[0].replace("LM (batch size 10)", "BERT (batch size 4)", 1) + "\n")
    with pytest.raises(TraceFormatError, match=r"x.trace, line 1, field 'job_type': job type 'BERT \(batch size 4\)'"
                       r" is not in gavel_simulation_throughputs.json.gz"):
        load_shockwave_jobs(path)
    path.write_text(LINES[4].replace("\t1\tstatic", "\t2\tstatic") + "\n")  # Recommendation runs on 1 GPU only
    with pytest.raises(TraceFormatError, match=r"field 'scale_factor': job type 'Recommendation \(batch size 8192\)' "
                       r"has no throughput for a gang of 2 in .*gavel_simulation_throughputs.*measured: 1\)"):
        load_shockwave_jobs(path)


def test_bad_rows_can_be_skipped_and_are_listed(tmp_path):
    path = tmp_path / "v.trace"
    bad = LINES[0].replace("\tgns\t", "\tadaptive\t")
    path.write_text("\n".join([LINES[0], bad, LINES[1], ""]))
    with pytest.warns(SkippedRowsWarning, match=r"v.trace: skipped 1 malformed row.*line 2, field 'mode'"):
        trace = load_shockwave_jobs(path, errors="skip")
    assert len(trace) == 2 and [(row.line, row.field) for row in trace.skipped] == [(2, "mode")]


@pytest.mark.parametrize("options", [
    {"errors": "ignore"}, {"reference": "a100"}, {"accordion_critical": 1.0}, {"gns_doublings": (0.2, 0.1)},
    {"gns_doublings": (0.0,)},
])
def test_bad_options_are_refused(trace_file, options):
    with pytest.raises(WorkloadError):
        load_shockwave_jobs(trace_file, **options)

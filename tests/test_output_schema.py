"""Issue 14, item 7: every output table is declared once (sim/output/schema.py), the tables are built to it, accounting
adds its columns to them, and the CLI and docs/TABLES.md print it."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pandas as pd
import pytest

from sim import AccountingOptions, Cluster, PoolSpec, Simulation, load_config, run_config
from sim.cli import main
from sim.experiments.config import config_to_dict
from sim.output.accounting import account
from sim.output.results import RUN_TABLES, Results
from sim.output.schema import CONDITIONS, TABLES, SchemaError, markdown
from workloads.jobs import TrainingJob

ROOT = Path(__file__).resolve().parents[1]
UNITS = {"", "s", "device-s", "h", "kWh", "kg", "USD", "W", "FLOP", "bytes", "bytes/s",
         "tokens", "devices", "count", "share",
         "ratio", "gCO2/kWh"}


def _training_run() -> Results:
    """Network model, fragmentation, a job with a model next to one without, carbon, the event log."""
    from sim.platform.network.model import model_job

    cluster = Cluster([PoolSpec("h100", nodes=2, devices_per_node=8)])
    parallelism = {"tensor": 8, "pipeline": 1, "micro_batch": 1, "global_batch": 16}
    jobs = [model_job(cluster, 0, 0.0, "llama-3.1-8b", 16, 20, parallelism), TrainingJob(1, 5.0, 4, 100.0)]
    return Simulation(cluster, jobs, network=True, fragmentation=True, record_events=True,
                      accounting=AccountingOptions(grid_intensity=400.0),
                      quotas={"default": {cluster.pools[0].name: cluster.num_devices}}).run()


def _serving_run() -> Results:
    config = load_config(ROOT / "examples" / "colocation.yaml",
                         overrides=["accounting.grid_intensity=400", "sim.horizon=1800"])
    data = config_to_dict(config)  # and a small speculative-decoding service beside the example's chat
    data["workload"]["inference"]["services"].append(
        {"name": "drafted", "model": "llama-3.1-8b", "device": "h100", "requests": 40,
         "arrivals": {"process": "poisson", "rate": 0.5}, "speculative": {"draft": "llama-3.2-1b", "k": 3,
                                                                          "acceptance": 0.7}})
    config = load_config(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_config(config)


def _prefix_run() -> Results:
    """A service with prefix caching next to one without (the prefix columns, NaN for the other's rows), and a
    disaggregated one (the KV-transfer columns and the replicas' role)."""
    from sim import ContinuousBatching, ServiceSpec
    from sim.random import RandomStreams
    from workloads import Deterministic, Poisson, generate_system_prompt_requests, get_model

    trace = generate_system_prompt_requests(Poisson(2.0), [500, 300], Deterministic(50), Deterministic(20),
                                            RandomStreams(0), count=30)
    services = [ServiceSpec(name, trace, replicas=1, model=get_model("llama-3.1-8b"), device="h100",
                            mode=ContinuousBatching(prefix_cache=cache)) for name, cache in (("a", True), ("b", None))]
    services.append(ServiceSpec("c", trace, replicas=1, model=get_model("llama-3.1-8b"), device="h100",
                                prefill={"replicas": 1}, decode={"replicas": 1}))
    return Simulation(Cluster([PoolSpec("h100", nodes=1, devices_per_node=8)]), [], services=services).run()


def _skipping_run(tmp_path: Path) -> Results:
    trace = tmp_path / "jobs.csv"
    trace.write_text("job_id,num_gpu,submit_time,iterations,model_name,duration,interval\n0,1,10,606,vgg19,164,30\n"
                     "1,0,30,133,vgg11,147,23\n")
    config = {"cluster": {"preset": "dgx-h100", "nodes": 1}, "sim": {"progress": False},
              "workload": {"training": {"trace": {"path": str(trace), "format": "tiresias"}, "errors": "skip"}}}
    with pytest.warns(UserWarning, match="skipped 1 malformed row"):
        return run_config(load_config(config))


def _failures_run() -> Results:
    """Training jobs with node failures and checkpoints (the failures table and the jobs' failure columns), beside a
    disaggregated service."""
    config = {"seed": 1, "cluster": {"preset": "dgx-h100", "nodes": 2}, "sim": {"progress": False},
              "workload": {"training": {"jobs": 30, "interarrival": {"dist": "exponential", "mean": 60}},
                           "inference": {"services": [  # disaggregated: the requests' KV-loss columns
                               {"name": "pd", "model": "llama-3.1-8b", "device": "h100", "requests": 20,
                                "arrivals": {"process": "poisson", "rate": 1.0}, "prefill": {"replicas": 1},
                                "decode": {"replicas": 1}}]}},
              "failures": {"mtbf_hours": {"h100": 20}, "node_correlated": True},
              "checkpoint": {"interval": "young-daly", "cost": 30}}
    return run_config(load_config(config))


def _packing_run() -> Results:
    """Gavel jobs packed in pairs by gandiva (the jobs' packed_seconds)."""
    from policies.schedulers import Gandiva
    from workloads.traces.gavel import generate_gavel_jobs

    trace = generate_gavel_jobs(12, 0.0, seed=1, min_duration_h=0.1, max_duration_h=0.3)
    return Simulation(Cluster([PoolSpec("v100", nodes=1, devices_per_node=4)]), trace, scheduler=Gandiva()).run()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Results]:
    return [_training_run(), _serving_run(), _skipping_run(tmp_path_factory.mktemp("trace")), _prefix_run(),
            _failures_run(), _packing_run()]


def test_every_table_a_run_writes_is_declared_in_order_and_every_declared_column_is_real(runs: list[Results]) -> None:
    assert set(RUN_TABLES) == set(TABLES)
    seen: dict[str, set[str]] = {name: set() for name in TABLES}
    for results in runs:
        for name in RUN_TABLES:
            frame = getattr(results, name)
            if frame is None:
                continue
            declared = TABLES[name]
            # in declared order: the index of each column's declaration never goes down
            positions = [next(i for i, c in enumerate(declared.columns) if c.matches(col)) for col in frame.columns]
            assert positions == sorted(positions), f"{name}: {list(frame.columns)}"
            seen[name] |= {declared.column(col).name for col in frame.columns}
    for name, table in TABLES.items():
        # a declaration no run produces is stale (these runs cover every condition)
        assert seen[name] == {c.name for c in table.columns}, f"{name}: declared but never built: " \
            f"{sorted({c.name for c in table.columns} - seen[name])}"


def test_columns_present_only_under_their_condition(runs: list[Results]) -> None:
    plain = Simulation(Cluster([PoolSpec("h100", nodes=1, devices_per_node=8)]), [TrainingJob(0, 0.0, 1, 10.0)]).run()
    conditional = {c.name for table in TABLES.values() for c in table.columns if c.when}
    for name in ("jobs", "timeline", "accounting"):
        assert not conditional & set(getattr(plain, name).columns), name
    assert plain.events is None and plain.links is None and plain.requests is None and plain.skipped is None
    assert {"carbon_kg", "model_flops", "placement_level"} <= set(runs[0].jobs.columns)
    assert {"fragmentation", "gangs_8"} <= set(runs[0].timeline.columns)
    prefix = {c.name for table in TABLES.values() for c in table.columns if c.when == "prefix"}
    assert not prefix & (set(runs[1].requests.columns) | set(runs[1].replicas.columns))
    assert prefix == {"cached_tokens"} | (set(runs[3].replicas.columns) & prefix)
    # service b has no prefix cache; service c's prefill pool (of the same trace) has none either
    assert runs[3].replicas["prefix_hits"].isna().tolist() == [False, True, True, True]
    disaggregated = {c.name for table in TABLES.values() for c in table.columns if c.when == "disaggregated"}
    assert not disaggregated & (set(runs[1].requests.columns) | set(runs[1].replicas.columns))
    assert runs[3].replicas["role"].tolist() == ["", "", "prefill", "decode"]
    requests = runs[3].requests
    assert requests.loc[requests["service"] != "c", "kv_transfer_bytes"].isna().all()
    assert (requests.loc[requests["service"] == "c", "kv_transfer_bytes"] > 0).all()


def test_declarations_have_a_unit_a_meaning_and_a_known_condition() -> None:
    for table in TABLES.values():
        assert table.row
        names = [c.name for c in table.columns]
        assert len(names) == len(set(names)), table.name
        for column in table.columns:
            assert column.unit in UNITS, (table.name, column.name, column.unit)
            assert len(column.meaning) > 5, (table.name, column.name)
            assert column.when == "" or column.when in CONDITIONS, (table.name, column.name)


def test_a_column_nobody_declared_is_refused_by_name() -> None:
    frame = pd.DataFrame({"time": [0.0], "service": ["a"], "ready": [1], "provisioning": [0], "draining": [0],
                          "warm_pool": [2]})
    with pytest.raises(SchemaError, match=r"replica_timeline.*'warm_pool'.*declare it"):
        TABLES["replica_timeline"].conform(frame)
    with pytest.raises(SchemaError, match=r"lacks the column.*draining"):
        TABLES["replica_timeline"].conform(frame.drop(columns=["draining", "warm_pool"]))
    shuffled = frame.drop(columns="warm_pool")[["draining", "time", "ready", "service", "provisioning"]]
    assert list(TABLES["replica_timeline"].conform(shuffled).columns) == ["time", "service", "ready", "provisioning",
                                                                         "draining"]


def test_accounting_adds_columns_to_the_tables_and_leaves_the_rest_as_built() -> None:
    cluster = Cluster([PoolSpec("h100", nodes=1, devices_per_node=8)])
    results = Simulation(cluster, [TrainingJob(0, 0.0, 2, 3600.0), TrainingJob(1, 10.0, 8, 60.0)]).run()
    accounted = account(results, cluster, prices={"h100": 1.0})
    assert set(accounted.columns) == {"jobs"}
    added = accounted.columns["jobs"]
    assert not set(added.columns) & {"job_id", "gpus", "jct"}  # only its own columns
    assert added.index.equals(results.jobs.index)
    # accounting a run again at another price replaces its columns, the rest of the table is untouched
    jobs = accounted.jobs
    assert list(jobs.columns) == list(results.jobs.columns)
    assert jobs["cost_usd"].sum() == pytest.approx(2 * 1.0 + 8 * 60 / 3600)
    own = list(added.columns)
    pd.testing.assert_frame_equal(jobs.drop(columns=own), results.jobs.drop(columns=own))
    with pytest.raises(ValueError, match=r"already has the column.*cost_usd"):
        results.add_columns("jobs", added)


def test_gpusim_columns_prints_the_declaration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["columns", "requests"]) == 0
    out = capsys.readouterr().out
    for column in TABLES["requests"].columns:
        assert re.search(rf"^  {re.escape(column.name)} +{re.escape(column.unit or '-')} +", out, re.M), column.name
    assert "jobs:" not in out
    assert main(["columns", "reqests"]) == 2
    assert "did you mean 'requests'" in capsys.readouterr().err


def test_docs_tables_page_is_written_from_the_declaration() -> None:
    page = (ROOT / "docs" / "TABLES.md").read_text()
    assert page == markdown(), "docs/TABLES.md is stale: run `gpusim columns --markdown > docs/TABLES.md`"


def test_a_per_request_figure_a_replica_records_reaches_the_table_once_declared(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the recipe of docs/ARCHITECTURE.md: measure in the replica (ReplicaListener.record), declare in the schema
    from dataclasses import replace

    from sim.output.schema import Column
    from sim.serving.replica import BatchingReplica

    retire = BatchingReplica._retire_finished

    def retire_and_record(self: BatchingReplica, now: float) -> None:
        for s in self.batch:
            if s.decoding and s.generated >= s.output:
                self.listener.record(s.request_id, "batch_at_finish", len(self.batch))
        retire(self, now)

    monkeypatch.setattr(BatchingReplica, "_retire_finished", retire_and_record)
    config = load_config(ROOT / "examples" / "inference_poisson.yaml", overrides=["sim.horizon=300"])
    with pytest.raises(SchemaError, match=r"'batch_at_finish' that sim/output/schema\.py does not declare"):
        run_config(config)
    requests = TABLES["requests"]
    declared = replace(requests, columns=(*requests.columns, Column("batch_at_finish", "count",
                                                                    "sequences in the batch when it finished")))
    monkeypatch.setitem(TABLES, "requests", declared)
    table = run_config(config).requests
    finished = table["status"] == "finished"
    assert finished.any() and table.loc[finished, "batch_at_finish"].ge(1).all()
    assert table.loc[~finished, "batch_at_finish"].isna().all()

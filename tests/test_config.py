"""Config loading: the README's config shape, key checking, --set overrides, round trips and the
workload a config describes (common random numbers, load_scale, limit)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from sim.errors import ConfigError, UnknownNameError
from sim.experiments.config import (
    DEFAULT_SCENARIO,
    Config,
    PoolConfig,
    ServiceConfig,
    apply_override,
    config_to_dict,
    describe_config,
    load_config,
)
from sim.experiments.scenario import build_cluster, build_simulation, build_training_jobs
from workloads import WorkloadError

README = Path(__file__).resolve().parents[1] / "README.md"
README_TEXT = README.read_text()

# A small synthetic workload every test below can afford to build (and run) in milliseconds.
SMALL = {
    "seed": 11,
    "cluster": {"preset": "dgx-h100", "nodes": 2},
    "workload": {"training": {"jobs": 150, "interarrival": {"dist": "exponential", "mean": 40}}},
    "policy": {"scheduler": "fifo", "placer": "first-fit"},
    "sim": {"progress": False},
}


def small(**training: Any) -> dict[str, Any]:
    data = yaml.safe_load(yaml.safe_dump(SMALL))  # deep copy
    data["workload"]["training"].update(training)
    return data


def readme_section(title: str) -> str:
    parts = re.split(rf"^## {re.escape(title)}[ \t]*$", README_TEXT, maxsplit=1, flags=re.M)
    assert len(parts) == 2, f"README has no '## {title}' section"
    return re.split(r"^## ", parts[1], maxsplit=1, flags=re.M)[0]


def readme_config_block() -> str:
    blocks = re.findall(r"^```yaml[ \t]*\n(.*?)^```", readme_section("Config"), flags=re.M | re.S)
    assert len(blocks) == 1, "the README's Config section should hold exactly one ```yaml block"
    return blocks[0]


def synthetic_variant(block: str) -> str:
    """The README's config with its commented synthetic keys in place of the trace keys."""
    out, in_synthetic = [], False
    for line in block.splitlines():
        stripped = line.strip()
        if stripped.startswith("# or synthetic"):
            in_synthetic = True
            continue
        if in_synthetic and stripped.startswith("# "):
            indent = line[: len(line) - len(line.lstrip())]
            # "# allowed_devices: [h100]  reference_device: h100" shows two keys on one line
            out.extend(indent + part for part in re.split(r"\s{2,}", stripped[2:]))
            continue
        in_synthetic = False
        if re.match(r"\s+(trace|window|virtual_clusters):", line):
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def leaf_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every key the loader accepts, including the keys of list items (``cluster.pools[].device``)."""
    keys = []
    for f in dataclasses.fields(cls):
        nested = f.metadata.get("nested")
        if f.metadata["kind"] == "nested":
            keys.extend(leaf_keys(nested, f"{prefix}{f.name}."))
        elif nested is not None:
            keys.append(prefix + f.name)
            keys.extend(leaf_keys(nested, f"{prefix}{f.name}[]."))
        else:
            keys.append(prefix + f.name)
    return keys


# ----------------------------------------------------------------------------- the README's config


def test_readme_config_block_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(readme_config_block())
    cfg = load_config(path)
    t = cfg.workload.training
    assert cfg.seed == 7
    assert (cfg.cluster.preset, cfg.cluster.nodes) == ("dgx-h100", 4)
    assert t.trace == "philly"
    assert t.window == {"start": "2017-10-01", "days": 7}
    assert t.virtual_clusters == ("6214e9",)
    assert (t.errors, t.load_scale, t.limit, t.jobs) == ("raise", 1.0, None, None)
    assert (cfg.policy.scheduler, cfg.policy.placer) == ("las", "consolidate")
    assert cfg.sim.horizon is None
    assert (cfg.sim.preemption.checkpoint_s, cfg.sim.preemption.restore_s) == (30.0, 30.0)
    assert (cfg.sim.record_events, cfg.sim.progress) == (False, True)

    # and it describes a workload that exists: one week of one virtual cluster of the bundled trace
    jobs = build_training_jobs(t, cfg.seed).jobs
    assert len(jobs) > 0
    assert {j.tenant for j in jobs} == {"6214e9"}
    assert max(j.arrival for j in jobs) <= 7 * 86400
    assert build_cluster(cfg.cluster).num_devices == 32


def test_readme_config_synthetic_variant_loads_and_runs(tmp_path: Path) -> None:
    path = tmp_path / "synthetic.yaml"
    path.write_text(synthetic_variant(readme_config_block()))
    cfg = load_config(path)
    t = cfg.workload.training
    assert t.trace is None and t.window is None and t.virtual_clusters is None
    assert t.jobs == 20000
    assert t.interarrival == {"dist": "exponential", "mean": 30}
    assert t.duration == {"dist": "lognormal", "median": 1144, "sigma": 2.0}
    assert t.gpus == {"dist": "choice", "values": [1, 2, 4, 8], "weights": [0.7, 0.1, 0.15, 0.05]}
    assert (t.allowed_devices, t.reference_device) == (("h100",), "h100")

    jobs = build_training_jobs(t, cfg.seed).jobs
    assert len(jobs) == 20000
    assert {j.gpus for j in jobs} == {1, 2, 4, 8}
    # a few hundred of them on the 4-node H100 cluster: the short names must match the pool's device
    results = build_simulation(load_config(path, ["workload.training.limit=300", "sim.progress=false"])).run()
    summary = results.summary()["jobs"]
    assert summary["count"] == 300
    assert summary["unschedulable"] == 0
    assert summary["completed"] == 300


@pytest.mark.parametrize(("cluster", "devices"), [
    ({"preset": "philly", "scale": 0.25}, 80 * 2 + 58 * 8),
    ({"preset": None, "pools": [{"device": "h100", "nodes": 2},
                                {"device": "a100", "nodes": 3, "devices_per_node": 4}]}, 2 * 8 + 3 * 4),
])
def test_readme_cluster_alternatives(cluster: dict[str, Any], devices: int) -> None:
    assert build_cluster(load_config({"cluster": cluster}).cluster).num_devices == devices


def test_readme_policy_mapping_alternative() -> None:
    cfg = load_config(small(), ["policy.scheduler={name: las, thresholds: [3600], promote_knob: 8}"])
    sim = build_simulation(cfg)
    assert sim.scheduler.name == "las"
    assert sim.scheduler.thresholds == (3600.0,)
    assert sim.scheduler.promote_knob == 8.0


def test_every_config_key_is_documented_in_readme() -> None:
    config_section = readme_section("Config")
    missing = [key for key, _, _ in describe_config()
               if not re.search(rf"\b{re.escape(key.rsplit('.', 1)[-1])}\b", config_section)]
    assert not missing, f"config keys not documented in README.md's Config section: {missing}"


def test_describe_config_lists_every_accepted_key() -> None:
    """README: "`gpusim config` lists them all" -- including the keys of a custom cluster's pools,
    which the loader accepts (and suggests in its errors) under ``cluster.pools[i]``."""
    described = {key for key, _, _ in describe_config()}
    not_listed = [key for key in leaf_keys() if key not in described]
    assert not not_listed, f"keys the loader accepts but describe_config() (gpusim config) omits: {not_listed}"


def config_to_dict_value(value: Any) -> Any:
    """A config value as plain data (tuples as lists), the way describe_config() reports defaults."""
    if isinstance(value, tuple):
        return [config_to_dict_value(v) for v in value]
    return value


def test_describe_config_rows_have_defaults_matching_config_and_help() -> None:
    plain = config_to_dict(Config())
    rows = describe_config()
    assert len({key for key, _, _ in rows}) == len(rows)
    for key, default, help_text in rows:
        assert help_text.strip(), key
        if "[]." in key:  # a key of a list item (cluster.pools[].device): the default of a new item
            list_key, item_key = key.split("[].")
            item: Any = {"cluster.pools": PoolConfig, "workload.inference.services": ServiceConfig}[list_key]()
            for part in item_key.split("."):
                item = getattr(item, part)
            assert config_to_dict_value(item) == default, key
            continue
        node: Any = plain
        for part in key.split("."):
            node = node[part]
        assert node == default, key


# ----------------------------------------------------------------------------- key checking


@pytest.mark.parametrize(("data", "path", "closest"), [
    ({"workload": {"training": {"interarival": {"dist": "exponential", "mean": 3}}}},
     "workload.training.interarival", "interarrival"),
    ({"polcy": {"scheduler": "las"}}, "polcy", "policy"),
    ({"sim": {"preemption": {"checkpoint": 3}}}, "sim.preemption.checkpoint", "checkpoint_s"),
    ({"sim": {"horizn": 3}}, "sim.horizn", "horizon"),
    ({"cluster": {"preset": None, "pools": [{"device": "h100", "devices_per_nod": 4}]}},
     "cluster.pools[0].devices_per_nod", "devices_per_node"),
])
def test_unknown_key_names_full_path_and_closest(data: dict[str, Any], path: str, closest: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(data)
    message = str(info.value)
    assert f"{path!r}" in message
    assert f"did you mean {closest!r}" in message


def test_unknown_key_in_a_file_and_from_set(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("seed: 1\nworkload:\n  training:\n    jobs: 5\n    interarival: {dist: exponential, mean: 3}\n")
    with pytest.raises(ConfigError, match=r"'workload\.training\.interarival'.*did you mean 'interarrival'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"'policy\.schedular'.*did you mean 'scheduler'"):
        load_config(small(), ["policy.schedular=las"])


def test_unknown_window_key_names_full_path() -> None:
    cfg = load_config({"workload": {"training": {"trace": "philly", "window": {"start": "2017-10-23", "dayz": 7}}}})
    with pytest.raises((ConfigError, WorkloadError)) as info:
        build_training_jobs(cfg.workload.training, cfg.seed)
    message = str(info.value)
    assert "dayz" in message and "days" in message
    assert "workload.training.window" in message, message


@pytest.mark.parametrize(("data", "key"), [
    ({"seed": "seven"}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"cluster": {"nodes": [4]}}, "cluster.nodes"),
    ({"cluster": "philly"}, "cluster"),
    ({"sim": {"record_events": "yes"}}, "sim.record_events"),
    ({"workload": {"training": {"load_scale": "fast"}}}, "workload.training.load_scale"),
    ({"workload": {"training": {"virtual_clusters": 5}}}, "workload.training.virtual_clusters"),
    ({"policy": {"scheduler": 3}}, "policy.scheduler"),
])
def test_wrong_type_names_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"'{re.escape(key)}'"):
        load_config(data)


def test_negative_horizon_names_the_key_at_simulation_build() -> None:
    cfg = load_config(small(), ["sim.horizon=-5"])
    assert cfg.sim.horizon == -5.0
    with pytest.raises(ConfigError, match=r"sim\.horizon"):
        build_simulation(cfg)


# ----------------------------------------------------------------------------- --set overrides


def test_set_scheduler_by_name() -> None:
    cfg = load_config(None, ["policy.scheduler=sjf"])
    assert cfg.policy.scheduler == "sjf"
    assert cfg.policy.placer == "consolidate"  # the rest of the default scenario is kept
    assert load_config(small(), ["policy.scheduler=las"]).policy.scheduler == "las"


def test_set_parameter_turns_policy_name_into_mapping() -> None:
    cfg = load_config(small(), ["policy.scheduler=las", "policy.scheduler.thresholds=[100, 1000]"])
    assert cfg.policy.scheduler == {"name": "las", "thresholds": [100, 1000]}
    sim = build_simulation(cfg)
    assert sim.scheduler.name == "las"
    assert sim.scheduler.thresholds == (100.0, 1000.0)


def test_set_values_are_parsed_as_yaml() -> None:
    cfg = load_config(small(), ["workload.training.load_scale=2", "seed=3", "sim.record_events=true",
                                "cluster={preset: philly, scale: 0.5}"])
    assert cfg.workload.training.load_scale == 2.0
    assert isinstance(cfg.workload.training.load_scale, float)
    assert cfg.seed == 3 and cfg.sim.record_events is True
    assert (cfg.cluster.preset, cfg.cluster.scale, cfg.cluster.nodes) == ("philly", 0.5, None)


def test_set_does_not_modify_the_callers_mapping() -> None:
    data = small()
    before = yaml.safe_dump(data)
    load_config(data, ["policy.scheduler=las", "policy.scheduler.thresholds=[100]", "workload.training.jobs=3"])
    assert yaml.safe_dump(data) == before


@pytest.mark.parametrize("override", ["policy.scheduler", "=las", "", "  =3"])
def test_malformed_set_is_config_error(override: str) -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(small(), [override])


def test_set_below_a_scalar_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"seed"):
        load_config(small(), ["seed.x=1"])
    data: dict[str, Any] = {"seed": 4}
    with pytest.raises(ConfigError):
        apply_override(data, "seed.x=1")


# ----------------------------------------------------------------------------- names


def test_policy_parameter_error_names_the_key() -> None:
    cfg = load_config(small(), ['policy.scheduler={"name": "las", "thresholdz": [1]}'])
    with pytest.raises(ConfigError) as info:
        build_simulation(cfg)
    message = str(info.value)
    assert "policy.scheduler.thresholdz" in message
    assert "thresholds" in message  # the closest valid parameter


@pytest.mark.parametrize(("override", "kind", "valid"), [
    ("policy.scheduler=lass", "scheduler", {"fifo", "sjf", "srtf", "las", "easy-backfill"}),
    ("policy.placer=consolidat", "placer", {"first-fit", "consolidate", "spread", "random"}),
])
def test_unknown_policy_lists_valid_names(override: str, kind: str, valid: set[str]) -> None:
    cfg = load_config(small(), [override])
    with pytest.raises(UnknownNameError) as info:
        build_simulation(cfg)
    message = str(info.value)
    assert kind in message
    assert valid <= set(info.value.valid)
    for name in valid:
        assert name in message


def test_unknown_preset_lists_valid_names() -> None:
    cfg = load_config(small(), ["cluster.preset=dgx-h200"])
    with pytest.raises(UnknownNameError) as info:
        build_simulation(cfg)
    message = str(info.value)
    for name in ("philly", "dgx-a100", "dgx-h100"):
        assert name in message


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("source", [
    None,
    small(),
    {"seed": 2, "cluster": {"preset": None, "pools": [{"device": "h100", "nodes": 2, "name": "fast"},
                                                      {"device": "a100", "nodes": 1, "nodes_per_rack": 4}]},
     "workload": {"training": {"trace": {"path": "x.csv", "format": "tiresias"}, "limit": 10, "load_scale": 2}},
     "policy": {"scheduler": {"name": "las", "thresholds": [100, 1000], "promote_knob": 4}, "placer": "spread"},
     "sim": {"horizon": 1e6, "preemption": {"checkpoint_s": 5}, "record_events": True, "progress": False}},
])
def test_config_to_dict_round_trips(source: Any) -> None:
    cfg = load_config(source)
    data = config_to_dict(cfg)
    assert load_config(data) == cfg
    # and through YAML text, as a run writes config.yaml
    assert load_config(yaml.safe_load(yaml.safe_dump(data, sort_keys=False))) == cfg
    assert config_to_dict(load_config(data)) == data


def test_readme_config_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(readme_config_block())
    cfg = load_config(path)
    dumped = tmp_path / "dumped.yaml"
    dumped.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    assert load_config(dumped) == cfg


def test_default_scenario_is_the_embedded_file() -> None:
    assert load_config() == load_config(DEFAULT_SCENARIO)
    cfg = load_config()
    assert cfg.cluster.preset == "philly"
    assert cfg.workload.training.trace == "philly"
    assert cfg.workload.training.window == {"start": "2017-10-23", "days": 7}


# ----------------------------------------------------------------------------- workloads from configs


def jobs_of(data: dict[str, Any], overrides: list[str] | None = None) -> list[tuple[float, int, float]]:
    cfg = load_config(data, overrides or [])
    return [(j.arrival, j.gpus, j.duration) for j in build_training_jobs(cfg.workload.training, cfg.seed).jobs]


def test_synthetic_same_seed_identical_different_seed_differs() -> None:
    a, b = jobs_of(small()), jobs_of(small())
    assert len(a) == 150
    assert a == b
    c = jobs_of(small(), ["seed=12"])
    assert len(c) == 150
    assert c != a
    # every attribute stream depends on the seed
    for i in range(3):
        assert [x[i] for x in a] != [x[i] for x in c]


@pytest.mark.parametrize("overrides", [
    ["policy.scheduler=las"],
    ["policy.scheduler=sjf", "policy.placer=random"],
    ["policy.scheduler={name: las, thresholds: [10]}", "policy.placer=spread", "sim.horizon=1000"],
])
def test_changing_policy_leaves_jobs_identical(overrides: list[str]) -> None:
    base = build_simulation(load_config(small())).jobs
    other = build_simulation(load_config(small(), overrides)).jobs
    assert other == base


def test_policy_runs_see_the_same_arrivals() -> None:
    arrivals = {}
    for scheduler in ("fifo", "las"):
        results = build_simulation(load_config(small(), [f"policy.scheduler={scheduler}"])).run()
        jobs = results.jobs.sort_values("job_id")
        arrivals[scheduler] = jobs[["job_id", "arrival", "gpus", "duration"]].to_numpy().tolist()
    assert arrivals["fifo"] == arrivals["las"]


def test_load_scale_divides_arrivals() -> None:
    base = jobs_of(small())
    fast = jobs_of(small(load_scale=2))
    assert [(a / 2, g, d) for a, g, d in base] == fast
    # traces too
    trace = {"workload": {"training": {"trace": "tiresias-60"}}}
    base = jobs_of(trace)
    fast = jobs_of(trace, ["workload.training.load_scale=2"])
    assert len(base) == 60
    assert [(a / 2, g, d) for a, g, d in base] == fast


def test_limit_keeps_the_first_jobs() -> None:
    base = jobs_of(small())
    assert jobs_of(small(limit=10)) == base[:10]
    assert jobs_of(small(limit=1000)) == base
    trace = {"workload": {"training": {"trace": "tiresias-60", "limit": 7}}}
    assert jobs_of(trace) == jobs_of({"workload": {"training": {"trace": "tiresias-60"}}})[:7]
    with pytest.raises(ConfigError, match=r"workload\.training\.limit"):
        jobs_of(small(limit=0))


def test_trace_and_jobs_together_is_an_error() -> None:
    cfg = load_config({"workload": {"training": {"trace": "philly", "jobs": 100}}})
    with pytest.raises(ConfigError, match=r"trace.*jobs|jobs.*trace"):
        build_training_jobs(cfg.workload.training, cfg.seed)


def test_neither_trace_nor_jobs_nor_services_is_an_error() -> None:
    cfg = load_config({"workload": {"training": {}}})
    assert len(build_training_jobs(cfg.workload.training, cfg.seed)) == 0  # no training jobs is fine ...
    with pytest.raises(ConfigError, match=r"nothing to simulate.*workload\.training.*workload\.inference"):
        build_simulation(cfg)  # ... but a run needs jobs or services


# ----------------------------------------------------------------------------- config files


def test_missing_config_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_config(path)


@pytest.mark.parametrize(("name", "content"), [
    ("broken.yaml", "seed: [1,\ncluster: {"),
    ("tabs.yaml", "seed: 1\n\tcluster: x\n"),
    ("binary.yaml", bytes(range(256)) * 4),
])
def test_file_that_is_not_yaml_names_the_file(tmp_path: Path, name: str, content: str | bytes) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_config(path)


def test_directory_as_config_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path))):
        load_config(tmp_path)


@pytest.mark.parametrize("content", ["just a string\n", "- a\n- b\n", "42\n"])
def test_top_level_not_a_mapping_names_the_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_config(path)


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    assert load_config(path) == Config()

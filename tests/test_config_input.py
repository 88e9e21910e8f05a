"""Config input that used to be silently ignored or overwritten (issue 13, item 3): duplicate keys, YAML 1.1
exponent numbers, synthetic-workload keys next to a trace, and relative paths."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from sim.errors import ConfigError
from sim.experiments.config import load_config
from sim.experiments.scenario import build_simulation, run_config


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- duplicate keys
def test_a_key_given_twice_names_file_line_and_key(tmp_path: Path) -> None:
    path = write(tmp_path / "twice.yaml", "seed: 1\npolicy:\n  scheduler: las\nsim:\n  horizon: 100\n"
                                          "policy:\n  scheduler: fifo\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "line 6" in message and "'policy' given twice (first on line 2)" in message


def test_a_key_given_twice_inside_a_list_item_is_caught(tmp_path: Path) -> None:
    path = write(tmp_path / "service.yaml", "workload:\n  inference:\n    services:\n      - name: chat\n"
                                            "        replicas: 2\n        replicas: 3\n")
    with pytest.raises(ConfigError, match=r"line 6.*'replicas' given twice \(first on line 5\)"):
        load_config(path)


def test_yaml_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    path = write(tmp_path / "merge.yaml", "base: &base {dist: exponential, mean: 30}\nworkload:\n  training:\n"
                                          "    jobs: 5\n    interarrival: {<<: *base, mean: 60}\n")
    with pytest.raises(ConfigError, match="unknown config key 'base'"):  # the anchor's own key is not a config key
        load_config(path)
    path = write(tmp_path / "merge2.yaml", "workload:\n  training:\n    jobs: 5\n    interarrival: &a {dist: "
                                           "exponential, mean: 30}\n    duration: {<<: *a, mean: 60}\n")
    config = load_config(path)
    assert config.workload.training.duration == {"dist": "exponential", "mean": 60}


# ----------------------------------------------------------------------------- exponent numbers
def test_exponent_numbers_yaml_11_reads_as_strings_are_numbers(tmp_path: Path) -> None:
    # the README's own example (a pool's NIC bandwidth 50.0e9) and 12.85e9, 5e9 and 1e-3 style numbers
    path = write(tmp_path / "numbers.yaml", """
cluster:
  preset: null
  pools: [{device: h100, nodes: 1, devices_per_node: 8, network: {nics: 8, nic_bandwidth: 50.0e9, scale_up: nvswitch}}]
workload:
  inference:
    services:
      - {name: chat, requests: 20, load_bandwidth: 12.85e9, arrivals: {process: poisson, rate: 2e0}}
sim: {horizon: 1e4}
""")
    config = load_config(path)
    service = config.workload.inference.services[0]
    assert service.load_bandwidth == 12.85e9 and type(service.load_bandwidth) is float
    assert config.sim.horizon == 1e4
    assert config.cluster.pools[0].network["nic_bandwidth"] == 50e9
    assert type(config.cluster.pools[0].network["nic_bandwidth"]) is float  # plain: dumps and compares
    assert service.arrivals["rate"] == 2.0
    results = run_config(config)
    assert results.summary()["requests"]["count"] == 20


def test_a_name_that_looks_like_an_exponent_stays_a_name(tmp_path: Path) -> None:
    # Philly's virtual clusters are hex hashes: 6214e9 is a name where a string is expected
    path = write(tmp_path / "vc.yaml", "workload:\n  training:\n    trace: philly\n    virtual_clusters: [6214e9, "
                                        "b436b2]\n")
    assert load_config(path).workload.training.virtual_clusters == ("6214e9", "b436b2")
    assert load_config(path, overrides=["cluster.preset=6214e9"]).cluster.preset == "6214e9"


def test_set_overrides_read_exponents_too() -> None:
    assert load_config(None, overrides=["sim.horizon=2.5e3"]).sim.horizon == 2500.0


# ----------------------------------------------------------------------------- synthetic keys next to a trace
@pytest.mark.parametrize("key", ["interarrival: {dist: exponential, mean: 5}", "gpus: {dist: choice, values: [8]}",
                                 "duration: {dist: exponential, mean: 60}"])
def test_synthetic_job_keys_next_to_a_trace_are_refused(key: str, tmp_path: Path) -> None:
    path = write(tmp_path / "trace.yaml", f"workload:\n  training:\n    trace: tiresias\n    {key}\n")
    with pytest.raises(ConfigError, match=rf"workload\.training: {key.split(':')[0]} shapes synthetic jobs and "
                                          "would be ignored next to a trace"):
        build_simulation(load_config(path))


@pytest.mark.parametrize("key", ["requests: 100", "arrivals: {process: poisson, rate: 1}",
                                 "prompt_tokens: {dist: deterministic, value: 10}"])
def test_synthetic_request_keys_next_to_a_trace_are_refused(key: str, tmp_path: Path) -> None:
    path = write(tmp_path / "trace.yaml", "workload:\n  inference:\n    services:\n      - name: chat\n"
                                          f"        trace: azure-conv\n        {key}\n")
    with pytest.raises(ConfigError, match=r"services\[0\]: \w+ shapes synthetic requests"):
        build_simulation(load_config(path))


# ----------------------------------------------------------------------------- relative paths
def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "study"
    pd.DataFrame({"ts": [0.0, 0.5, 1.0], "in": [100, 200, 300], "out": [10, 20, 30]}).to_csv(
        folder / "data" / "requests.csv" if folder.joinpath("data").mkdir(parents=True) is None else None,
        index=False)
    write(folder / "data" / "steps.csv", "phase,batch_size,tokens,context,ms\ndecode,1,1,100,7\nprefill,1,200,200,20\n")
    config = write(folder / "config.yaml", """
workload:
  inference:
    services:
      - name: chat
        trace: {path: data/requests.csv, columns: {arrival: ts, prompt_tokens: in, output_tokens: out}}
        step_model: {profile: data/steps.csv}
""")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the relative paths do not exist here
    loaded = load_config(Path(os.path.relpath(config, elsewhere)))
    service = loaded.workload.inference.services[0]
    assert Path(service.trace["path"]) == (folder / "data" / "requests.csv").resolve()
    assert Path(service.step_model["profile"]) == (folder / "data" / "steps.csv").resolve()
    assert run_config(loaded).summary()["requests"]["completed"] == 3
    # a path given with --set is relative to where the command runs
    write(elsewhere / "other.csv", "phase,batch_size,tokens,context,ms\ndecode,1,1,100,9\n")
    overridden = load_config(config, overrides=["workload.inference.services=[{name: chat, trace: azure-conv, "
                                                "step_model: {profile: other.csv}}]"])
    assert overridden.workload.inference.services[0].step_model["profile"] == "other.csv"

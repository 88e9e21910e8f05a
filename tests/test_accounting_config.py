"""The config's ``accounting:`` section reaches every run; per-request shares; variants carry their quality cost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.errors import ConfigError
from sim.experiments.config import load_config
from sim.experiments.scenario import build_simulation, run_config

BASE = {
    "seed": 3,
    "cluster": {"preset": "dgx-h100", "nodes": 1},
    "workload": {
        "training": {"trace": None, "jobs": 20, "interarrival": {"dist": "exponential", "mean": 60},
                     "duration": {"dist": "exponential", "mean": 600}, "gpus": {"dist": "choice", "values": [1, 2]}},
        "inference": {"services": [{
            "name": "chat", "model": {"name": "llama-3.1-8b", "weights": "fp8", "quality_cost": 0.02},
            "device": "h100", "replicas": 2, "arrivals": {"process": "poisson", "rate": 2.0}, "requests": 300,
            "prompt_tokens": {"dist": "deterministic", "value": 500},
            "output_tokens": {"dist": "deterministic", "value": 50}}]},
    },
    "sim": {"progress": False},
}


def with_accounting(**section: object) -> dict:
    return {**BASE, "accounting": dict(section)}


def test_prices_and_power_from_the_config_change_the_figures() -> None:
    default = run_config(load_config(BASE)).summary()
    doubled = run_config(load_config(with_accounting(prices={"h100": 9.0}))).summary()
    assert doubled["cost"]["usd"] == pytest.approx(2 * default["cost"]["usd"])
    # idle at 0 W and TDP at 2x: every joule is (TDP - idle) * busy, and the busy device-hours do not change
    hot = run_config(load_config(with_accounting(power={"h100": {"idle_watts": 0, "tdp_watts": "1.4 kW"}})))
    table = hot.accounting
    busy_kwh = (table["busy_device_hours"] * 1.4).sum()
    assert hot.summary()["energy"]["kwh"] == pytest.approx(busy_kwh)
    carbon = run_config(load_config(with_accounting(grid_intensity="0.5 kg/kWh"))).summary()
    assert carbon["carbon"]["kg"] == pytest.approx(default["energy"]["kwh"] * 0.5)


def test_training_mfu_scales_training_flops_only() -> None:
    low = run_config(load_config(with_accounting(training_mfu=0.2))).summary()
    high = run_config(load_config(with_accounting(training_mfu=0.4))).summary()
    assert high["training"]["compute"]["flops"] == pytest.approx(2 * low["training"]["compute"]["flops"])
    assert high["inference"]["compute"]["flops"] == low["inference"]["compute"]["flops"]


@pytest.mark.parametrize(("section", "message"), [
    ({"power": {"h100": {"tdp_watts": -700}}}, r"accounting\.power\.h100\.tdp_watts"),
    ({"power": {"h100": {"tdp_watts": "700"}}}, r"accounting\.power\.h100\.tdp_watts.*missing its unit"),
    ({"power": {"h100": {"tdp": 700}}}, r"accounting\.power\.h100\.tdp: not a power field \(did you mean 'tdp_watts'"),
    ({"power": {"h900": {"tdp_watts": 700}}}, r"accounting\.power\.h900"),
    ({"power": {"h100": {"idle_watts": "0.8 kW"}}}, r"accounting\.power: .*exceeds tdp_watts"),
    ({"prices": {"h100": -2}}, r"accounting\.prices\.h100.*non-negative"),
    ({"prices": {"h100": "4.5"}}, r"accounting\.prices\.h100.*missing its unit"),
    ({"prices": {"h100": "4.5 EUR/h"}}, r"accounting\.prices\.h100.*unknown unit"),
    ({"grid_intensity": -1}, r"accounting\.grid_intensity"),
    ({"grid_intensity": "400"}, r"accounting\.grid_intensity.*missing its unit"),
    ({"training_mfu": 1.5}, r"accounting\.training_mfu"),
    ({"inference_utilization": -0.5}, r"accounting\.inference_utilization"),
    ({"watts": 3}, r"unknown config key 'accounting\.watts'"),
])
def test_bad_accounting_config_names_the_key(section: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_simulation(load_config(with_accounting(**section)))


def test_request_shares_add_up_to_their_replica(tmp_path: Path) -> None:
    results = run_config(load_config(BASE))
    requests, replicas = results.requests, results.replicas
    assert requests is not None and replicas is not None and results.services is not None
    served = requests[requests["replica"] >= 0]
    per_replica = served.groupby("replica")["energy_kwh"].sum()
    expected = replicas.set_index("replica")["energy_kwh"].reindex(per_replica.index)
    np.testing.assert_allclose(per_replica.to_numpy(), expected.to_numpy(), rtol=1e-12)
    for request_column, replica_column in (("device_seconds", "held_device_seconds"), ("flops", "flops"),
                                           ("busy_device_seconds", "busy_device_seconds"), ("cost_usd", "cost_usd")):
        np.testing.assert_allclose(served.groupby("replica")[request_column].sum().to_numpy(),
                                   replicas.set_index("replica")[replica_column].reindex(per_replica.index),
                                   rtol=1e-12)
    # equal tokens per request: equal shares within a replica
    for _, group in served.groupby("replica"):
        assert np.ptp(group["cost_usd"].to_numpy()) == pytest.approx(0.0, abs=1e-15)
    assert (requests.loc[requests["replica"] < 0, "energy_kwh"] == 0).all()
    # the jobs table carries its accounting too, and adds up to the training side
    jobs_kwh = results.jobs["energy_kwh"].sum()
    assert jobs_kwh == pytest.approx(results.summary()["training"]["energy"]["kwh"])
    results.save(tmp_path)
    services = pd.read_csv(tmp_path / "services.csv")
    assert services.loc[0, "energy_kwh"] == pytest.approx(replicas["energy_kwh"].sum())


def test_quality_cost_and_variant_are_carried_into_results() -> None:
    results = run_config(load_config(BASE))
    assert results.replicas is not None and results.services is not None
    assert (results.replicas["quality_cost"] == 0.02).all()
    assert results.replicas["model"].str.contains("fp8").all()
    assert results.services.loc[0, "quality_cost"] == 0.02
    plain = {**BASE, "workload": {**BASE["workload"], "inference": {"services": [
        {**BASE["workload"]["inference"]["services"][0], "model": "llama-3.1-8b"}]}}}
    unrated = run_config(load_config(plain))
    assert unrated.replicas is not None and unrated.replicas["quality_cost"].isna().all()

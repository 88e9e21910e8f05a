"""Capacity planner: the answer meets the SLO, one replica fewer does not, and infeasible plans say so."""

from __future__ import annotations

import math

import pytest

from sim.errors import ConfigError
from sim.experiments.config import load_config
from sim.experiments.planner import format_plan, layout_split, plan
from sim.experiments.scenario import run_config

SERVICE = {"name": "chat", "model": "llama-3.1-8b", "arrivals": {"process": "poisson", "rate": 20},
           "requests": 1500, "prompt_tokens": {"dist": "lognormal", "median": 800, "sigma": 0.8},
           "output_tokens": {"dist": "lognormal", "median": 150, "sigma": 0.8}, "slo": {"ttft": 0.5, "tpot": 0.05}}
TARGET = {"ttft_p99": 0.5, "tpot_p99": 0.05, "attainment": 0.99}


def config(**plan_options):
    return load_config({"seed": 3, "workload": {"inference": {"services": [SERVICE]}},
                        "policy": {"router": "least-outstanding"},
                        "plan": {"devices": ["h100"], "min_replicas": 1, "max_replicas": 8, "target": TARGET,
                                 **plan_options}})


def run_alone(replicas: int, split: tuple[int, int] | None = None):
    """The service on `replicas` H100s (`split` into prefill and decode pools), built by hand (not through the
    planner)."""
    service = {**SERVICE, "device": "h100", "replicas": replicas, "min_replicas": replicas, "max_replicas": replicas}
    if split is not None:
        service["prefill"], service["decode"] = ({"replicas": n, "max_replicas": n} for n in split)
    raw = {"seed": 3, "cluster": {"preset": None, "pools": [{"device": "h100", "nodes": 1, "devices_per_node": 8}]},
           "workload": {"inference": {"services": [service]}},
           "policy": {"router": "least-outstanding"}, "sim": {"progress": False}}
    return run_config(load_config(raw)).summary()["requests"]


def meets(requests) -> bool:
    return (requests["ttft"]["p99"] <= TARGET["ttft_p99"] and requests["tpot"]["p99"] <= TARGET["tpot_p99"]
            and requests["slo_attainment"] >= TARGET["attainment"])


def test_the_answer_meets_the_slo_and_one_replica_fewer_does_not() -> None:
    result = plan(config())
    row = result.table.iloc[0]
    assert row["feasible"] and row["one_fewer_misses"]
    answer = int(row["replicas"])
    assert answer > 1
    assert meets(run_alone(answer)) and not meets(run_alone(answer - 1))  # checked by running both, by hand
    assert row["runs"] <= math.ceil(math.log2(8)) + 2  # bisection, each count run once
    assert result.cheapest is not None and int(result.cheapest["replicas"]) == answer
    assert "one replica fewer misses (run)" in format_plan(result, TARGET)


def test_disaggregated_layouts_are_searched_and_their_answers_check_out_by_hand() -> None:
    result = plan(config(layouts=["colocated", "1:1", "1:3"]))
    table = result.table.set_index("layout")
    assert list(table.index) == ["colocated", "1:1", "1:3"]
    assert math.isnan(table.loc["colocated", "prefill_replicas"])
    checked = 0
    for layout in ("1:1", "1:3"):
        row = table.loc[layout]
        if not row["feasible"]:
            continue
        answer = int(row["replicas"])
        split = layout_split(layout, answer)
        assert split is not None and split[0] == row["prefill_replicas"] and sum(split) == answer
        assert meets(run_alone(answer, split))
        if answer > 2:
            assert row["one_fewer_misses"] and not meets(run_alone(answer - 1, layout_split(layout, answer - 1)))
        checked += 1
    assert checked  # at least one disaggregated layout can meet these targets within 8 replicas
    assert "1:1" in format_plan(result, TARGET)


def test_layout_splits() -> None:
    assert layout_split("colocated", 5) is None
    assert layout_split("1:1", 2) == (1, 1) and layout_split("1:1", 5) == (2, 3)
    assert layout_split("1:3", 2) == (1, 1) and layout_split("1:3", 8) == (2, 6)
    assert layout_split("3:1", 3) == (2, 1)  # at least one decode replica


def test_nothing_within_the_bounds_is_an_infeasible_plan_with_the_best_run() -> None:
    result = plan(config(max_replicas=1, target={**TARGET, "tpot_p99": 0.001}))
    row = result.table.iloc[0]
    assert not row["feasible"] and result.cheapest is None and result.most_efficient is None
    assert row["best_tried"].startswith("1 replicas")
    assert "nothing within the bounds meets the targets" in format_plan(result, TARGET)


@pytest.mark.parametrize(("options", "message"), [
    ({"devices": ["h1000"]}, "unknown device"),
    ({"min_replicas": 5, "max_replicas": 2}, r"plan\.min_replicas \(5\) exceeds plan\.max_replicas \(2\)"),
    ({"target": {"ttft_p99": 0.5}}, r"plan\.target needs .*missing \['attainment', 'tpot_p99'\]"),
    ({"variants": [{"weights": "fp8", "colour": "red"}]}, r"plan\.variants"),
    ({"layouts": ["colocated", "2-1"]}, r"plan\.layouts\[1\]: expected colocated or P:D"),
    ({"layouts": ["0:1"]}, r"plan\.layouts\[0\]"),
])
def test_bad_plans_are_named(options, message) -> None:
    with pytest.raises(ConfigError, match=message):
        plan(config(**options))


def test_gpusim_plan_prints_the_choice_and_writes_its_tables(tmp_path, capsys) -> None:
    import yaml

    from sim.cli import main

    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"seed": 3, "workload": {"inference": {"services": [SERVICE]}},
                                    "policy": {"router": "least-outstanding"},
                                    "plan": {"devices": ["h100"], "max_replicas": 8, "target": TARGET}}))
    assert main(["plan", str(path), "-o", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "cheapest:" in printed and "most energy-efficient:" in printed
    assert (tmp_path / "out" / "plan.csv").exists() and (tmp_path / "out" / "trials.csv").exists()

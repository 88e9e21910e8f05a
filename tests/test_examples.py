"""Every config in examples/ loads and runs, and its results hold together."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.experiments.config import load_config
from sim.experiments.scenario import run_config

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert {p.stem for p in EXAMPLES} >= {"inference_poisson", "inference_gamma_cv3", "inference_mmpp",
                                          "inference_azure_replay"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path: Path, tmp_path: Path) -> None:
    results = run_config(load_config(path, ["sim.progress=false"]))
    summary = results.summary()
    if results.requests is not None:
        r = summary["requests"]
        assert r["count"] > 0 and r["completed"] + r["rejected"] + r["unfinished"] == r["count"]
        assert 0 <= r["slo_attainment"] <= 1
        assert r["ttft"]["p50"] <= r["ttft"]["p99"]
    out = results.save(tmp_path)
    assert (out / "summary.json").exists() and (out / "config.yaml").exists()
    # the resolved config reproduces the run
    again = run_config(load_config(out / "config.yaml"))
    assert again.summary()["events"] == summary["events"]

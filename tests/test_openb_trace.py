"""The openb loaders: the trace README's figures exactly, typed columns, GPU-model lists, and bad rows named."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

import workloads.traces
from workloads.errors import TraceFormatError, WorkloadError
from workloads.traces.bundled import DATA_DIR, bundled_files
from workloads.traces.openb import POD_COLUMNS, load_openb_nodes, load_openb_pods, parse_gpu_spec

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces" / "alibaba_openb_2023"
HEADER = ",".join(POD_COLUMNS) + "\n"
NODE_HEADER = "sn,cpu_milli,memory_mib,gpu,model\n"


def test_default_pod_list_matches_the_trace_readme():
    """../shared/traces/README.md: 8,152 pods, num_gpu {0: 1,088, 1: 6,989, 2: 16, 4: 15, 8: 44}."""
    pods = load_openb_pods("default")
    assert len(pods) == 8152
    assert pods["num_gpu"].value_counts().to_dict() == {0: 1088, 1: 6989, 2: 16, 4: 15, 8: 44}
    assert pods["name"].is_unique
    assert list(pods.columns) == [*POD_COLUMNS, "line"]
    for column in ("cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "line"):
        assert pods[column].dtype == np.int64, column
    for column in ("creation_time", "deletion_time", "scheduled_time"):
        assert pods[column].dtype == np.float64, column
    fractional = pods[(pods.num_gpu == 1) & (pods.gpu_milli < 1000)]
    assert fractional["gpu_milli"].between(1, 999).all() and len(fractional) > 0
    assert (pods.loc[pods.num_gpu == 0, "gpu_milli"] == 0).all()
    assert (pods.loc[pods.num_gpu > 1, "gpu_milli"] == 1000).all()
    assert pods["line"].iloc[0] == 2 and pods["line"].is_monotonic_increasing


def test_node_lists_match_the_trace_readme():
    """README: nodes 1,523 with 6,212 GPUs; the GPU-node list the paper's simulator uses has the same GPUs."""
    every = load_openb_nodes("all")
    assert len(every) == 1523 and every["gpus"].sum() == 6212
    gpu = load_openb_nodes("gpu")
    assert len(gpu) == 1213 and gpu["gpus"].sum() == 6212
    assert set(gpu["model"]) == {"P100", "T4", "V100M16", "V100M32", "G2", "G3", "A10"}  # 7 models
    assert (every.loc[every.gpus == 0, "model"] == "").all()
    assert gpu["gpus"].dtype == np.int64


def test_variants():
    share = load_openb_pods("gpushare40")
    multi = load_openb_pods("multigpu50")
    assert len(share) == 8152 and len(multi) == 9061
    assert multi["creation_time"].isna().all() and (multi["qos"] == "").all()
    assert (multi["num_gpu"] >= 2).sum() > (load_openb_pods("default")["num_gpu"] >= 2).sum()
    with pytest.raises(WorkloadError, match="gpushare40"):
        load_openb_pods("gpushare4")
    with pytest.raises(WorkloadError, match="all"):
        load_openb_nodes("cpu")


def test_bundled_copies_are_the_published_files_and_credited():
    names = ["openb_pod_list_default.csv", "openb_pod_list_gpushare40.csv", "openb_pod_list_multigpu50.csv",
             "openb_node_list_gpu_node.csv", "openb_node_list_all_node.csv"]
    assert {f"{n}.gz" for n in names} <= set(bundled_files())
    credit = (DATA_DIR / "ATTRIBUTION.md").read_text()
    assert "cluster-trace-gpu-v2023" in credit and "openb_pod_list_default.csv.gz" in credit
    assert {"load_openb_pods", "load_openb_nodes"} <= set(workloads.traces.__all__)
    if not SHARED.is_dir():
        pytest.skip("the shared trace folder is not on this machine")
    for name in names:
        assert gzip.decompress((DATA_DIR / f"{name}.gz").read_bytes()) == (SHARED / name).read_bytes(), name


def test_gpu_spec_is_parsed_into_allowed_models(tmp_path):
    path = tmp_path / "pods.csv"
    path.write_text(HEADER + "p0,1000,1024,1,500,V100M32|V100M16,LS,Running,0,10,0\n"
                    "p1,1000,1024,2,1000,,BE,Running,5,10,5\n")
    pods = load_openb_pods(path=path)
    assert pods["gpu_spec"].tolist() == [("V100M16", "V100M32"), ()]
    assert parse_gpu_spec("T4| A10 |") == ("A10", "T4")


@pytest.mark.parametrize(("row", "field"), [
    ("p1,1000,1024,1,1500,,LS,Running,0,1,0", "gpu_milli"),
    ("p1,1000,1024,1,0,,LS,Running,0,1,0", "gpu_milli"),
    ("p1,1000,1024,0,300,,LS,Running,0,1,0", "gpu_milli"),
    ("p1,1000,1024,2,500,,LS,Running,0,1,0", "gpu_milli"),
    ("p1,1000,1024,x,1000,,LS,Running,0,1,0", "num_gpu"),
    ("p1,-5,1024,1,1000,,LS,Running,0,1,0", "cpu_milli"),
    ("p0,1000,1024,1,1000,,LS,Running,0,1,0", "name"),
    ("p1,1000,1024,1,1000,,LS,Running,soon,1,0", "creation_time"),
    ("p1,1000,1024,1,1000,,LS,Running,0,1", "columns"),
])
def test_a_bad_pod_row_names_file_line_and_field(tmp_path, row, field):
    path = tmp_path / "pods.csv"
    path.write_text(HEADER + "p0,1000,1024,1,1000,,LS,Running,0,1,0\n" + row + "\n")
    with pytest.raises(TraceFormatError) as info:
        load_openb_pods(path=path)
    assert (info.value.path, info.value.line, info.value.field) == (str(path), 3, field)
    assert f"{path}, line 3, field {field!r}" in str(info.value)


@pytest.mark.parametrize(("row", "field"), [
    ("n1,32000,1024,2,", "model"),
    ("n1,32000,1024,0,T4", "model"),
    ("n1,0,1024,2,T4", "cpu_milli"),
    ("n1,32000,1024,two,T4", "gpu"),
    ("n0,32000,1024,2,T4", "sn"),
])
def test_a_bad_node_row_names_file_line_and_field(tmp_path, row, field):
    path = tmp_path / "nodes.csv"
    path.write_text(NODE_HEADER + "n0,32000,1024,2,T4\n" + row + "\n")
    with pytest.raises(TraceFormatError, match=f"line 3, field '{field}'"):
        load_openb_nodes(path=path)


def test_a_wrong_header_is_named(tmp_path):
    path = tmp_path / "nodes.csv"
    path.write_text("sn,cpu,memory_mib,gpu,model\nn0,1,1,0,\n")
    with pytest.raises(TraceFormatError, match="line 1, field 'columns'"):
        load_openb_nodes(path=path)

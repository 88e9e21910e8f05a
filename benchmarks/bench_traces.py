"""Benchmark: read a 10-million-row Philly-format trace.

Writes the file to a temporary folder (``timestamp,duration,num_gpus,gpu_time,cluster``, submits not in
time order, as in the real trace), then runs each case in a fresh process, so its peak memory is the
case's own max RSS:

- ``import``: ``import workloads`` and nothing else (what every case pays before reading);
- ``pandas``: plain ``pandas.read_csv`` of the file, the reference;
- ``columns``: ``read_philly_columns``: every row read and checked, all jobs kept as numpy columns;
- ``limit``: ``load_philly_jobs(limit=100_000)``: every row read and checked, the 100,000 earliest jobs kept;
- ``window``: ``load_philly_jobs(window={"start": "2017-10-01", "days": 7})``: one week's jobs;
- ``jobs``: ``load_philly_jobs()``: a ``JobTrace`` of every job (its jobs kept as columns, ``ColumnJobs``: a
  ``TrainingJob`` is built when read).

Prints wall seconds, peak memory, and peak memory over the file's size on disk. Target (issue 13): reading
a 10-million-row file within 1 GB of peak memory.

``--bundled`` instead times loading the bundled Philly trace (82,247 jobs), the median of ``--repeat`` fresh
processes, seconds after the imports (as ``bench_philly.py``'s "trace load s", which adds ``preset("philly")``):

- ``bundled``: ``load_philly_jobs()``, which reads the columnar copy beside the bundled file;
- ``bundled-csv``: ``load_philly_jobs(path)`` of the same file alone in a temporary folder: the CSV parsed, the
  reference measured in the same run;
- ``bundled-pandas``: plain ``pandas.read_csv`` of the bundled file, no checks and no jobs.

Target (issue: Philly trace load): <= 0.3 s on a 2-core machine.

    python benchmarks/bench_traces.py                           # 10 million rows, every case
    python benchmarks/bench_traces.py --rows 1000000 --case columns --case limit
    python benchmarks/bench_traces.py --compare /path/to/old/checkout   # also: the jobs case with that code
    python benchmarks/bench_traces.py --bundled --compare /path/to/old/checkout   # also: bundled, that code
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROWS, LIMIT, TARGET_MB = 10_000_000, 100_000, 1024.0
CASES = ("import", "pandas", "columns", "limit", "window", "jobs")
BUNDLED_CASES = ("bundled", "bundled-csv", "bundled-pandas")
BUNDLED_TARGET_S, REPEAT = 0.3, 5
HEADER = "timestamp,duration,num_gpus,gpu_time,cluster"


def write_trace(path: Path, rows: int, seed: int = 0, batch: int = 1_000_000) -> None:
    """``rows`` Philly-like jobs: submits over Sep 4 - Dec 22 2017 in random order, log-normal run times
    (median 1,144 s), mostly 1 GPU, 15 virtual clusters."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    clusters = np.array([f"{value:06x}" for value in rng.integers(0, 16**6, 15)], dtype=object)
    start, span = np.datetime64("2017-09-04T10:30:41", "s"), 108 * 86_400
    with path.open("w", newline="") as stream:
        stream.write(HEADER + "\n")
        for lo in range(0, rows, batch):
            n = min(batch, rows - lo)
            submit = start + rng.integers(0, span, n).astype("timedelta64[s]")
            duration = np.maximum(np.round(rng.lognormal(np.log(1144), 2.0, n)), 1.0)
            gpus = rng.choice([1, 2, 4, 8, 16, 32], n, p=[0.93, 0.03, 0.02, 0.015, 0.004, 0.001])
            frame = pd.DataFrame({
                "timestamp": np.datetime_as_string(submit).astype(object),
                "duration": duration, "num_gpus": gpus, "gpu_time": duration * gpus,
                "cluster": clusters[rng.integers(0, clusters.size, n)],
            })
            frame["timestamp"] = frame["timestamp"].str.replace("T", " ", regex=False)
            frame.to_csv(stream, header=False, index=False, lineterminator="\n")


def run_case(case: str, path: str) -> dict[str, Any]:
    """Run one case in this process; the figures as a dict."""
    start = time.perf_counter()
    import workloads  # noqa: F401  (every case pays for it)

    if case in BUNDLED_CASES:
        return run_bundled(case, path)
    kept: int | None = None
    if case == "pandas":
        import pandas as pd

        kept = len(pd.read_csv(path))
    elif case == "columns":
        from workloads.traces import read_philly_columns

        kept = len(read_philly_columns(path))
    elif case == "limit":
        from workloads import load_philly_jobs

        kept = len(load_philly_jobs(path, limit=LIMIT))
    elif case == "window":
        from workloads import load_philly_jobs

        kept = len(load_philly_jobs(path, window={"start": "2017-10-01", "days": 7}))
    elif case == "jobs":
        from workloads import load_philly_jobs

        kept = len(load_philly_jobs(path))
    return {"case": case, "kept": kept, "wall_seconds": time.perf_counter() - start, "peak_rss_mb": peak_mb()}


def run_bundled(case: str, path: str) -> dict[str, Any]:
    """One bundled case, timed after the imports (``path``: the copy of the bundled file for ``bundled-csv``)."""
    import pandas as pd

    from workloads import bundled_path, load_philly_jobs

    start = time.perf_counter()
    if case == "bundled":
        kept = len(load_philly_jobs())
    elif case == "bundled-csv":
        kept = len(load_philly_jobs(path))
    else:
        kept = len(pd.read_csv(bundled_path("philly_jobs.csv.gz")))
    return {"case": case, "kept": kept, "wall_seconds": time.perf_counter() - start, "peak_rss_mb": peak_mb()}


def bundled(repeat: int, compare: str | None) -> None:
    """Time the bundled cases, each the median of ``repeat`` fresh processes, taking turns."""
    from workloads import bundled_path

    runs = [(case, None) for case in BUNDLED_CASES] + ([("bundled", compare)] if compare else [])
    with tempfile.TemporaryDirectory(prefix="bench_traces_") as folder:
        plain = Path(folder) / "philly_jobs.csv.gz"  # alone in its folder: no columnar copy beside it
        shutil.copyfile(bundled_path("philly_jobs.csv.gz"), plain)
        figures: dict[tuple[str, str | None], list[dict[str, Any]]] = {run: [] for run in runs}
        for _ in range(repeat):  # taking turns, so a busy spell of the machine hits every case alike
            for case, code in runs:
                figures[case, code].append(in_fresh_process(case, plain, code))
    print(f"bundled Philly trace, median of {repeat} fresh processes, seconds after the imports; "
          f"target: bundled <= {BUNDLED_TARGET_S} s")
    print(f"{'case':<26}{'jobs':>8}{'load s':>9}{'min s':>8}{'max s':>8}{'peak MB':>9}")
    for (case, code), results in figures.items():
        seconds = [r["wall_seconds"] for r in results]
        label = case if code is None else f"{case} ({Path(code).name})"
        print(f"{label:<26}{results[0]['kept']:>8,}{statistics.median(seconds):>9.3f}{min(seconds):>8.3f}"
              f"{max(seconds):>8.3f}{statistics.median(r['peak_rss_mb'] for r in results):>9,.0f}")


def peak_mb() -> float:
    """This process's peak resident memory in MB: ``VmHWM`` (Linux; unlike ``ru_maxrss`` it does not carry the
    parent's peak over ``exec``), else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, kilobytes elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def in_fresh_process(case: str, path: Path, code: str | None = None) -> dict[str, Any]:
    """``run_case`` in a new interpreter (with ``code`` first on the path: another checkout's package)."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([code, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run([sys.executable, __file__, "--run", case, "--file", str(path)], capture_output=True,
                         text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ROWS, help="rows in the generated file")
    parser.add_argument("--case", action="append", choices=CASES, help="run only these cases (repeatable)")
    parser.add_argument("--compare", metavar="CHECKOUT", help="also run the jobs case with the package found there")
    parser.add_argument("--bundled", action="store_true", help="time loading the bundled Philly trace instead")
    parser.add_argument("--repeat", type=int, default=REPEAT, help="fresh processes per bundled case (median)")
    parser.add_argument("--run", choices=CASES + BUNDLED_CASES, help=argparse.SUPPRESS)
    parser.add_argument("--write", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_case(args.run, args.file)))
        return
    if args.write:
        write_trace(Path(args.file), args.rows)
        return
    if args.bundled:
        bundled(args.repeat, args.compare)
        return
    with tempfile.TemporaryDirectory(prefix="bench_traces_") as folder:
        path = Path(folder) / "philly_jobs.csv"
        start = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--write", "--rows", str(args.rows), "--file", str(path)], check=True)
        size_mb = path.stat().st_size / 2**20
        print(f"{args.rows:,} rows, {size_mb:,.0f} MB on disk (written in {time.perf_counter() - start:.0f} s); "
              f"target: peak memory <= {TARGET_MB:,.0f} MB")
        print(f"{'case':<22}{'jobs kept':>12}{'wall s':>9}{'peak MB':>9}{'x file':>8}")
        runs = [(case, None) for case in (args.case or CASES)] + ([("jobs", args.compare)] if args.compare else [])
        for case, code in runs:
            r = in_fresh_process(case, path, code)
            label = case if code is None else f"{case} ({Path(code).name})"
            kept = "" if r["kept"] is None else f"{r['kept']:,}"
            print(f"{label:<22}{kept:>12}{r['wall_seconds']:>9.1f}{r['peak_rss_mb']:>9,.0f}"
                  f"{r['peak_rss_mb'] / size_mb:>8.2f}", flush=True)


if __name__ == "__main__":
    main()

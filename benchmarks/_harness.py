"""What the benchmark scripts share: the bare simpy loop they are measured against, and running each case in a
fresh process (so that each one's peak memory is its own)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def bare_simpy(events: int = 300_000) -> float:
    """Events per second of a bare simpy loop: one callback-driven timeout chain, no model at all."""
    import simpy

    env = simpy.Environment()
    remaining = [events]

    def tick(_event: object) -> None:
        remaining[0] -= 1
        if remaining[0] > 0:
            env.timeout(1.0).callbacks.append(tick)

    env.timeout(1.0).callbacks.append(tick)
    start = time.perf_counter()
    env.run()
    return events / (time.perf_counter() - start)


def case_or_table(description: str, cases: Iterable[str], run_case: Callable[[str], dict[str, Any]],
                  script: str) -> Iterator[dict[str, Any]] | None:
    """Parse ``--case NAME`` (run it here and print its JSON; returns None) or ``--only NAME ...``; otherwise run
    each case in a fresh ``python script --case NAME`` and yield its results."""
    names = list(cases)
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--case", choices=sorted(names), help="run one case in this process and print JSON")
    parser.add_argument("--only", nargs="+", choices=names, help="the table for these cases only")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case)))
        return None

    def results() -> Iterator[dict[str, Any]]:
        for name in args.only or names:
            out = subprocess.run([sys.executable, script, "--case", name], capture_output=True, text=True, check=True)
            yield json.loads(out.stdout)
    return results()

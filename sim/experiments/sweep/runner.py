"""Submit points to an executor, collect them as they finish, and retry the ones whose worker died.

A point that raises is final (``failed``): the same config and seed would raise again. A point whose worker
died (a crash, the out-of-memory killer, a node lost) is run again, at most ``retries`` more times, in a fresh
pool. A process pool cannot say which of its points killed it, so after a death the points that were in flight
run again one at a time: an innocent point then succeeds, and the culprit alone uses up its attempts.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sim.experiments.sweep.errors import SweepError
from sim.experiments.sweep.executors import Backend, is_death
from sim.experiments.sweep.points import Point
from sim.experiments.sweep.progress import SweepProgress
from sim.experiments.sweep.worker import error_record

Finish = Callable[[Point, str, int, dict[str, Any]], None]
"""``finish(point, status, attempts, payload)``: called in the submitting process as each point ends."""


@dataclass
class RunCounts:
    """What one call of ``run_points`` did."""

    ok: int = 0
    failed: int = 0
    died: int = 0
    not_run: int = 0
    stopped: str | None = None
    """Why points were left unrun (an executor that broke and cannot be restarted), or None."""
    attempts: Counter[str] = field(default_factory=Counter)


def run_points(points: Sequence[Point], backend: Backend, fn: Callable[..., dict[str, Any]],
               task: Callable[[Point], tuple[Any, ...]], finish: Finish, *, retries: int = 2,
               progress: SweepProgress | None = None) -> RunCounts:
    """Run ``fn(*task(point))`` for every point on ``backend``; ``finish`` records each outcome."""
    counts = RunCounts()
    if not points:
        return counts
    queue: deque[Point] = deque(points)
    isolation: deque[Point] = deque()
    inflight: dict[cf.Future[Any], tuple[Point, bool]] = {}
    deaths: list[tuple[Point, BaseException]] = []
    broken = False

    def end(point: Point, status: str, payload: dict[str, Any]) -> None:
        setattr(counts, status, getattr(counts, status) + 1)
        finish(point, status, counts.attempts[point.id], payload)
        if progress is not None:
            progress.update(counts.ok + counts.failed + counts.died, counts.failed + counts.died)

    executor = backend.start(len(points))
    try:
        while queue or isolation or inflight or deaths:
            if not broken:
                isolating = bool(isolation) or any(isolated for _, isolated in inflight.values())
                limit = 1 if isolating else backend.slots
                while (isolation or (queue and not isolating)) and (limit is None or len(inflight) < limit):
                    isolated = bool(isolation)
                    point = isolation.popleft() if isolated else queue.popleft()
                    try:
                        future = executor.submit(fn, *task(point))
                    except Exception as exc:
                        if not is_death(exc):
                            raise
                        (isolation if isolated else queue).appendleft(point)
                        broken = True
                        break
                    counts.attempts[point.id] += 1
                    inflight[future] = (point, isolated)
            if inflight:
                done, _ = cf.wait(list(inflight), timeout=0.5, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    point, _ = inflight.pop(future)
                    try:
                        payload = future.result()
                    except Exception as exc:
                        if is_death(exc):
                            deaths.append((point, exc))
                            broken = broken or not backend.attributes_deaths
                            continue
                        payload = {"status": "failed", "tables": {}, "error": error_record(exc), "timing": {}}
                    end(point, payload["status"], payload)
                if progress is not None:
                    progress.update(counts.ok + counts.failed + counts.died, counts.failed + counts.died)
            if broken and not inflight:  # every casualty of the break is in: a fresh pool
                try:
                    executor = backend.restart()
                except SweepError as exc:
                    for point, death in deaths:
                        end(point, "died", _death_payload(death, str(exc)))
                    counts.not_run = len(queue) + len(isolation)
                    counts.stopped = str(exc)
                    return counts
                broken = False
            if deaths and not broken:
                for point, death in deaths:
                    if counts.attempts[point.id] > retries:
                        end(point, "died", _death_payload(death, f"the worker died on each of its "
                                                                 f"{counts.attempts[point.id]} attempts"))
                    elif backend.attributes_deaths:
                        queue.appendleft(point)
                    else:
                        isolation.append(point)
                deaths = []
    finally:
        backend.close()
        if progress is not None:
            progress.close()
    return counts


def _death_payload(exc: BaseException, why: str) -> dict[str, Any]:
    record = error_record(exc)
    record["message"] = f"{why}: {type(exc).__name__}: {exc}"
    return {"status": "died", "tables": {}, "error": record, "timing": {}}

"""Where the points run: in-process, a local process pool, any ``concurrent.futures.Executor``, or Dask.

A backend hands out an executor, says how many points to keep in flight, and after a worker death gives a
fresh pool (a process pool cannot be reused once one of its workers died). Dask is imported only when used.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
from collections.abc import Callable
from typing import Any

from sim.experiments.sweep.errors import SweepError

DASK_CONNECT_TIMEOUT = 5.0
"""Seconds to wait for a Dask scheduler before giving up with an error."""

EXECUTORS = ("processes", "serial", "dask")


def cpu_count() -> int:
    """Cores this process may use."""
    counter = getattr(os, "process_cpu_count", None)
    if counter is not None:
        return counter() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def is_death(exc: BaseException) -> bool:
    """Whether ``exc`` says a worker died under the point (not that the point raised): a broken process pool,
    Dask's ``KilledWorker``, or a future cancelled because its cluster went away."""
    if isinstance(exc, (cf.BrokenExecutor, cf.CancelledError)):
        return True
    return any(cls.__name__ == "KilledWorker" for cls in type(exc).__mro__)


class Backend:
    """An executor and how to use it: ``slots`` points in flight (None: no limit), whether a death names its
    point (``attributes_deaths``), whether its workers import the main script again (``reimports_main``: spawn
    and forkserver processes), and a fresh executor after one (``restart``)."""

    name = "executor"
    slots: int | None = None
    attributes_deaths = False
    reimports_main = False

    def start(self, points: int) -> cf.Executor:
        raise NotImplementedError

    def restart(self) -> cf.Executor:
        raise SweepError(f"the {self.name} executor broke (a worker died) and cannot be restarted by the sweep; "
                         f"pass executor='processes' (or 'dask') to have dead workers replaced")

    def close(self) -> None:
        """Release what ``start`` created (never an executor the caller passed in)."""

    def describe(self) -> str:
        return self.name


class InProcessExecutor(cf.Executor):
    """Runs each call at once in the calling thread; the future is done when ``submit`` returns."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        future: cf.Future[Any] = cf.Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:
            future.set_exception(exc)
        return future


class SerialBackend(Backend):
    name = "serial"
    slots = 1

    def start(self, points: int) -> cf.Executor:
        return InProcessExecutor()

    def restart(self) -> cf.Executor:
        return InProcessExecutor()


class ProcessBackend(Backend):
    """A ``ProcessPoolExecutor`` with one worker per core (or ``workers``), started with forkserver (spawn
    where there is none): workers never inherit the parent's threads or state."""

    name = "processes"
    reimports_main = True

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or cpu_count()
        self._pool: cf.ProcessPoolExecutor | None = None

    def start(self, points: int) -> cf.Executor:
        self.slots = max(1, min(self.workers, points))
        return self._new()

    def _new(self) -> cf.Executor:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        self._pool = cf.ProcessPoolExecutor(max_workers=self.slots, mp_context=context)
        return self._pool

    def restart(self) -> cf.Executor:
        self.close()
        return self._new()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def describe(self) -> str:
        return f"processes ({self.slots or self.workers} workers)"


class ExecutorBackend(Backend):
    """An executor the caller made: used as it is, never shut down by the sweep."""

    def __init__(self, executor: cf.Executor) -> None:
        self.executor = executor
        self.name = type(executor).__name__
        workers = getattr(executor, "_max_workers", None)
        self.slots = workers if isinstance(workers, int) and workers > 0 else cpu_count()
        context = getattr(executor, "_mp_context", None)  # a ProcessPoolExecutor's start method, where it shows
        method = getattr(context, "get_start_method", None)
        self.reimports_main = callable(method) and method() in ("spawn", "forkserver")

    def start(self, points: int) -> cf.Executor:
        return self.executor


class DaskBackend(Backend):
    """A Dask cluster: the scheduler at ``address``, a ``distributed.Client`` the caller made, or (neither) a
    ``LocalCluster`` on 127.0.0.1 with ``workers`` single-threaded worker processes and no dashboard."""

    name = "dask"
    attributes_deaths = True  # the scheduler reports KilledWorker for the task that kept killing workers

    def __init__(self, address: str | None = None, workers: int | None = None, client: Any = None) -> None:
        self.address = address
        self.workers = workers
        self.client = client
        self._own_client = client is None
        self.reimports_main = client is None and not address  # a local cluster's worker processes are spawned
        self._cluster: Any = None
        self._executor: cf.Executor | None = None

    def start(self, points: int) -> cf.Executor:
        distributed = import_distributed()
        if self.client is None:
            if self.address:
                try:
                    self.client = distributed.Client(self.address, timeout=DASK_CONNECT_TIMEOUT)
                except Exception as exc:
                    raise SweepError(f"cannot reach the Dask scheduler at {self.address!r} within "
                                     f"{DASK_CONNECT_TIMEOUT:g} s ({type(exc).__name__}: {exc}); check the address "
                                     f"(e.g. tcp://HOST:8786) and that `dask scheduler` runs there") from None
            else:
                self.workers = max(1, min(self.workers or cpu_count(), points))
                self._cluster = distributed.LocalCluster(
                    n_workers=self.workers, threads_per_worker=1,
                    processes=True, host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR)
                self.client = distributed.Client(self._cluster)
        self._executor = self.client.get_executor(pure=False)  # pure=False: a retried point runs again
        return self._executor

    def restart(self) -> cf.Executor:
        assert self._executor is not None
        return self._executor

    def close(self) -> None:
        if self._own_client and self.client is not None:
            self.client.close()
            self.client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def describe(self) -> str:
        if self.address:
            return f"dask at {self.address}"
        if self._own_client:
            return f"dask (local cluster, {self.workers or cpu_count()} workers)"
        return "dask (client)"


def import_distributed() -> Any:
    """The ``distributed`` package, or a clear error saying how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise SweepError("executor 'dask' needs Dask's distributed scheduler: pip install 'gpusim[distributed]' "
                         f"(or pip install 'dask[distributed]'); import failed: {exc}") from None
    return distributed


def make_backend(executor: str | cf.Executor | Any | None = None, *, workers: int | None = None,
                 scheduler: str | None = None) -> Backend:
    """The backend for ``executor``: ``"processes"`` (default; ``"dask"`` when a ``scheduler`` address is
    given), ``"serial"``, ``"dask"``, a ``concurrent.futures.Executor``, or a ``distributed.Client``."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise SweepError(f"workers must be a positive integer, got {workers!r}")
    if executor is None:
        executor = "dask" if scheduler else "processes"
    if scheduler and executor != "dask":
        raise SweepError(f"scheduler={scheduler!r} is a Dask scheduler address; it goes with executor='dask' "
                         f"(--executor dask), not {executor!r}")
    if isinstance(executor, str):
        if executor == "serial":
            return SerialBackend()
        if executor == "processes":
            return ProcessBackend(workers)
        if executor == "dask":
            import_distributed()
            return DaskBackend(scheduler, workers)
        raise SweepError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}, a "
                         f"concurrent.futures.Executor, or a dask.distributed Client")
    if isinstance(executor, cf.Executor):
        return ExecutorBackend(executor)
    if hasattr(executor, "get_executor") and hasattr(executor, "scheduler_info"):
        return DaskBackend(client=executor)
    raise SweepError(f"executor {executor!r}: expected one of {', '.join(EXECUTORS)}, a concurrent.futures.Executor "
                     f"or a dask.distributed Client")

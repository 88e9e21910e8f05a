"""Pollux's model of an elastic training job: throughput, statistical efficiency and goodput (Qiao et al., OSDI'21,
"Pollux: Co-adaptive Cluster Scheduling for Goodput-Optimized Deep Learning", section 3), with constants fitted to
the six applications of Pollux's own artifact.

**Throughput.** A step of a job on ``K`` replicas (one per GPU) over ``N`` nodes, each replica computing a local
batch of ``m`` samples ``s + 1`` times (``s`` gradient accumulation steps, then one that synchronises):

- ``T_grad = alpha_grad + beta_grad * m``;
- ``T_sync = 0`` for one replica, else ``alpha_sync_local + beta_sync_local * (K - 2)`` within one node and
  ``alpha_sync_node + beta_sync_node * (K - 2)`` across nodes (``K - 2`` taken as 0 for two replicas);
- ``T_iter = s * T_grad + (T_grad ** gamma + T_sync ** gamma) ** (1 / gamma)``: the synchronising step overlaps
  computation and communication to a degree ``gamma`` in [1, 10] (1: not at all; 10: almost fully);
- ``THROUGHPUT = M / T_iter`` samples per second, ``M = K * m * (s + 1)`` the batch.

**Statistical efficiency.** With gradient noise scale ``phi`` (samples) and the batch ``M0`` the job starts from,
``EFFICIENCY(M) = (phi + M0) / (phi + M)``: a sample at batch ``M`` does the work of ``EFFICIENCY(M)`` samples at
``M0``. ``GOODPUT = THROUGHPUT * EFFICIENCY`` (samples per second, counted as samples at ``M0``). A job's work is
``target_samples`` at ``M0`` (the artifact's epochs to its end of training), so it runs ``target_samples / GOODPUT``
seconds on a configuration. ``best_batch(app, K)`` is the batch (with its local batch and accumulation steps) of the
highest goodput on ``K`` GPUs within the application's limits: batch from ``M0`` to ``max_batch``, local batch at
least ``min_local_batch``, accumulation once the local batch passes ``max_local_batch``. Pollux samples 50 batch
sizes; this searches every whole local batch.

**Constants** (``POLLUX_APPLICATIONS``, by the names the artifact's workloads use) come from the artifact,
petuum/adaptdl branch ``osdi21-artifact``, ``simulator/`` (Apache-2.0); none of its data files is kept here:

- ``ThroughputParams``: ``fit_throughput_params`` (scipy least squares on log time) over
  ``traces/<app>/placements.csv`` (every placement on up to 4 nodes of 4 GPUs, several local batches) and
  ``traces/<app>/scalability.csv`` (6 to 16 nodes) with fewer than 64 replicas: the 64-replica rows (16 nodes) are
  held out, and the tests check that their measured step times fall within the fit's error. ``fit_error`` is the
  root mean square of ``log(predicted / measured)`` step time over the rows fitted.
- ``phi``: each validated run (``traces/<app>/validation-<M>.csv``, one per batch ``M``) records the gradient's
  squared norm and variance (``grad_sqr``, ``grad_var``) per epoch. From them, as the artifact's simulator does,
  a run's efficiency in an epoch is ``(grad_var + grad_sqr) / (grad_var + M / M0 * grad_sqr)``; ``phi`` is fitted
  (least squares on log efficiency) to each run's efficiency averaged over its steps. The tests check it against a
  different measured figure, the steps the largest-batch run counted to its last epoch (``iteration``).
- Limits as the artifact's ``applications.py`` sets them: ``init_batch`` and ``max_batch`` the smallest and largest
  validated batch, ``min_local_batch`` and ``max_local_batch`` the smallest and largest local batch measured
  (yolov3's maximum set to 8), ``target_samples`` the progress (steps at ``M0``) at its ``max_epochs`` times ``M0``;
  ``max_gpus`` Pollux's own limit in the artifact's simulator, ``min(64, max_batch // min_local_batch)``, and 1 for
  ncf, which the artifact pins to one replica.
- The GPU is the artifact's: an NVIDIA T4 (``REFERENCE_DEVICE``), 4 to a node (``GPUS_PER_NODE``; the paper's
  testbed is 16 AWS g4dn.12xlarge nodes).

**Simplifications.**

- ``phi`` is constant over training. Pollux measures it as a job runs, and it grows: the initial-batch cifar10 run
  records about 70 in its first epoch and tens of thousands by its last. The constant reproduces the samples a
  whole run needs at each batch (within a few percent, tested), not how progress is spread over the run.
- Pollux refits the throughput model online from each job's own measurements and lets a job grow to at most twice
  the largest gang it has run on; here the model is fitted once, offline, to all of the artifact's measurements,
  and every gang up to ``max_gpus`` is open from the start.
- A gang of ``K`` GPUs is placed on ``ceil(K / gpus_per_node)`` nodes (as the artifact's workload generator assumes);
  like Pollux's, the model tells one node from several, not how many.
- A job's ``scaling`` is the goodput at the best batch of each gang, its ``duration`` at its recorded batch: on
  another gang it runs at the recorded batch's goodput times the ratio of best goodputs (the workloads' recorded
  batches come within 10% of the best, tested).
- Pollux's agent forces one accumulation step on a single GPU above the initial batch (its gradient-noise estimate
  needs two micro-batches); not modelled.
- The linear ``T_grad`` misses curvature the measurements show: at ncf's one configuration in the workloads (one GPU,
  local batch 32,768) the fit's step is a third longer than measured, and its jobs' run times a third longer than
  the artifact's own estimate (the workloads' other configurations come within 16% of it; tested).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import least_squares

from workloads._names import unknown_name
from workloads.errors import WorkloadError
from workloads.jobs import TrainingJob

#: The artifact's GPU (its testbed and simulator: NVIDIA T4), as named in ``sim.platform.hardware``.
REFERENCE_DEVICE = "t4"
#: GPUs per node in the artifact's testbed and simulator (16 nodes of 4 T4 GPUs).
GPUS_PER_NODE = 4
_TINY = 1e-8  # Pollux's lower bound for a parameter the data cannot determine


@dataclass(frozen=True, slots=True)
class ThroughputParams:
    """Pollux's throughput model (module docstring): seconds per step from the gang and the local batch."""

    alpha_grad: float
    beta_grad: float
    alpha_sync_local: float
    beta_sync_local: float
    alpha_sync_node: float
    beta_sync_node: float
    gamma: float

    def __post_init__(self) -> None:
        for name in ("alpha_grad", "beta_grad", "alpha_sync_local", "beta_sync_local", "alpha_sync_node",
                     "beta_sync_node"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise WorkloadError(f"ThroughputParams: {name} must be a finite number >= 0, got {value!r}")
        if not (isinstance(self.gamma, (int, float)) and 1 <= self.gamma <= 10):
            raise WorkloadError(f"ThroughputParams: gamma must be in [1, 10], got {self.gamma!r}")

    def grad_time(self, local_batch: ArrayLike) -> Any:
        """``T_grad``: seconds to compute the gradient of a local batch."""
        return self.alpha_grad + self.beta_grad * np.asarray(local_batch, dtype=float)

    def sync_time(self, nodes: ArrayLike, replicas: ArrayLike) -> Any:
        """``T_sync``: seconds to synchronise ``replicas`` gradients over ``nodes`` nodes (0 for one replica)."""
        n, k = np.asarray(nodes), np.asarray(replicas)
        extra = np.maximum(k - 2, 0)
        across = self.alpha_sync_node + self.beta_sync_node * extra
        within = self.alpha_sync_local + self.beta_sync_local * extra
        return np.where(n > 1, across, np.where(k > 1, within, 0.0))

    def iter_time(self, nodes: ArrayLike, replicas: ArrayLike, local_batch: ArrayLike,
                  accum_steps: ArrayLike = 0) -> Any:
        """``T_iter``: seconds per optimizer step, ``accum_steps`` accumulation steps plus the synchronising one."""
        grad = self.grad_time(local_batch)
        sync = self.sync_time(nodes, replicas)
        step = (grad ** self.gamma + sync ** self.gamma) ** (1.0 / self.gamma)
        return np.asarray(accum_steps) * grad + step

    def throughput(self, nodes: ArrayLike, replicas: ArrayLike, local_batch: ArrayLike,
                   accum_steps: ArrayLike = 0) -> Any:
        """Samples per second: the batch ``replicas * local_batch * (accum_steps + 1)`` over ``iter_time``."""
        batch = np.asarray(replicas) * np.asarray(local_batch) * (np.asarray(accum_steps) + 1)
        return batch / self.iter_time(nodes, replicas, local_batch, accum_steps)

    def log_errors(self, nodes: ArrayLike, replicas: ArrayLike, local_batch: ArrayLike, step_time: ArrayLike) -> Any:
        """``log(predicted / measured)`` step time of each measurement (no accumulation)."""
        return np.log(self.iter_time(nodes, replicas, local_batch)) - np.log(np.asarray(step_time, dtype=float))


def fit_throughput_params(nodes: ArrayLike, replicas: ArrayLike, local_batch: ArrayLike, step_time: ArrayLike,
                          sync_time: ArrayLike) -> ThroughputParams:
    """Fit ``ThroughputParams`` to measured steps, as Pollux's ``fit_perf_params`` does: least squares (scipy) of
    ``log`` predicted over measured ``T_grad`` (``step_time - sync_time``, the artifact's compute time) and
    ``T_iter`` (``step_time``), one row per measurement of a gang (``nodes``, ``replicas``) at a ``local_batch``.

    The six alphas and betas are fitted in log space (so they stay positive), ``gamma`` within [1, 10], from a few
    starting points (the best kept). Parameters the rows cannot determine are fixed as Pollux fixes them: with one
    local batch, ``alpha_grad`` at half the mean compute time; without multi-replica rows within a node (or across
    nodes) those sync terms at a negligible 1e-8; without gangs above 2 replicas both retrogression betas at 1e-8;
    and without rows across nodes, the cross-node terms at 1.1 times the within-node ones (Pollux's prior)."""
    columns = [np.asarray(v, dtype=float).ravel() for v in (nodes, replicas, local_batch, step_time, sync_time)]
    n, k, m, step, sync = columns
    if len({c.size for c in columns}) != 1 or n.size == 0:
        raise WorkloadError(f"fit_throughput_params: needs equally long, non-empty columns, got sizes "
                            f"{[c.size for c in columns]}")
    if not all(np.isfinite(c).all() for c in columns):
        raise WorkloadError("fit_throughput_params: a measurement is not a finite number")
    if (n < 1).any() or (k < n).any() or (m <= 0).any():
        raise WorkloadError("fit_throughput_params: needs nodes >= 1, replicas >= nodes and local_batch > 0")
    if (sync < 0).any() or (sync >= step).any():
        raise WorkloadError("fit_throughput_params: needs 0 <= sync_time < step_time on every row")
    grad = step - sync
    within, across = (n == 1) & (k > 1), n > 1
    fixed: dict[int, float] = {}
    if np.unique(m).size == 1:
        fixed[0] = float(grad.mean() / 2)
        grad_start = [fixed[0], float(grad.mean() / 2 / m[0])]
    else:
        slope, intercept = np.polyfit(m, grad, 1)
        grad_start = [max(float(intercept), 1e-3 * float(grad.min())), max(float(slope), _TINY)]
    if not within.any():
        fixed[2] = fixed[3] = _TINY
    if not across.any():
        fixed[4] = fixed[5] = _TINY
    if not (k > 2).any():
        fixed[3] = fixed[5] = _TINY
    free = [i for i in range(6) if i not in fixed]
    log_grad, log_step = np.log(grad), np.log(step)

    def unpack(z: np.ndarray) -> ThroughputParams:
        values = [fixed.get(i, 0.0) for i in range(6)]
        for i, v in zip(free, z[:-1], strict=True):
            values[i] = float(np.exp(v))
        return ThroughputParams(*values, gamma=float(z[-1]))

    def residuals(z: np.ndarray) -> np.ndarray:
        p = unpack(z)
        return np.concatenate([np.log(p.grad_time(m)) - log_grad, np.log(p.iter_time(n, k, m)) - log_step])

    sync_within = float(np.median(sync[within])) if within.any() else _TINY
    sync_across = float(np.median(sync[across])) if across.any() else _TINY
    best = None
    for gamma in (1.2, 2.0, 4.0):
        for share in (0.01, 0.1):  # retrogression per replica as a share of the constant term
            start = [*grad_start, sync_within, sync_within * share, sync_across, sync_across * share]
            z0 = np.array([*(math.log(max(start[i], _TINY)) for i in free), gamma])
            bounds = ([-np.inf] * len(free) + [1.0], [np.inf] * len(free) + [10.0])
            result = least_squares(residuals, z0, bounds=bounds)
            if best is None or result.cost < best.cost:
                best = result
    assert best is not None
    params = unpack(best.x)
    if not across.any():  # Pollux's prior: across nodes is no faster than within one
        params = ThroughputParams(params.alpha_grad, params.beta_grad, params.alpha_sync_local,
                                  params.beta_sync_local, max(params.alpha_sync_node, 1.1 * params.alpha_sync_local),
                                  max(params.beta_sync_node, 1.1 * params.beta_sync_local), params.gamma)
    return params


@dataclass(frozen=True, slots=True)
class PolluxApplication:
    """One application of Pollux's artifact: its throughput model, gradient noise scale and batch limits (module
    docstring: where each constant comes from). Batches are in samples; ``target_samples`` is the work to the end
    of training in samples at ``init_batch``."""

    name: str
    params: ThroughputParams
    phi: float
    init_batch: int
    max_batch: int
    min_local_batch: int
    max_local_batch: int
    target_samples: float
    max_gpus: int
    fit_error: float
    description: str = ""

    def __post_init__(self) -> None:
        label = f"PolluxApplication {self.name!r}"
        for key in ("init_batch", "max_batch", "min_local_batch", "max_local_batch", "max_gpus"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise WorkloadError(f"{label}: {key} must be a positive integer, got {value!r}")
        for key in ("phi", "target_samples", "fit_error"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise WorkloadError(f"{label}: {key} must be a finite number >= 0, got {value!r}")
        if not self.init_batch <= self.max_batch:
            raise WorkloadError(f"{label}: init_batch {self.init_batch} is above max_batch {self.max_batch}")
        if not self.min_local_batch <= self.max_local_batch:
            raise WorkloadError(f"{label}: min_local_batch {self.min_local_batch} is above max_local_batch "
                                f"{self.max_local_batch}")
        if self.max_gpus > self.largest_gang:
            raise WorkloadError(f"{label}: max_gpus {self.max_gpus} leaves less than min_local_batch "
                                f"{self.min_local_batch} per GPU of max_batch {self.max_batch}")

    @property
    def largest_gang(self) -> int:
        """The most GPUs the batch limits allow: ``max_batch // min_local_batch``."""
        return self.max_batch // self.min_local_batch

    def efficiency(self, batch: ArrayLike) -> Any:
        """``EFFICIENCY(M) = (phi + M0) / (phi + M)``: samples at ``init_batch`` one sample at ``batch`` is worth."""
        return (self.phi + self.init_batch) / (self.phi + np.asarray(batch, dtype=float))


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """A job's configuration on a gang: ``batch = gpus * local_batch * (accum_steps + 1)`` samples per optimizer
    step on ``nodes`` nodes, and what it yields (samples per second; ``goodput`` counts samples at ``init_batch``)."""

    gpus: int
    nodes: int
    batch: int
    local_batch: int
    accum_steps: int
    throughput: float
    efficiency: float
    goodput: float


def _configs(app: PolluxApplication, gpus: int, share: Any) -> tuple[Any, Any, Any, Any]:
    """(accumulation steps, local batch, batch, valid) for per-GPU shares ``share`` of the batch on ``gpus`` GPUs,
    split as Pollux's agent splits them (steps of at most ``max_local_batch``), the local batch then cut so that the
    batch stays within ``max_batch`` (as the artifact's simulator does); valid if the local batch is still at
    least ``min_local_batch`` and the batch at least ``init_batch``."""
    share = np.asarray(share, dtype=np.int64)
    accum = np.ceil(share / app.max_local_batch - 1e-8).astype(np.int64) - 1
    local = np.ceil(share / (accum + 1) - 1e-8).astype(np.int64)
    local = np.minimum(local, app.max_batch // (gpus * (accum + 1)))
    batch = gpus * local * (accum + 1)
    return accum, local, batch, (local >= app.min_local_batch) & (batch >= app.init_batch)


def _whole(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0


def _check_gang(app: PolluxApplication, gpus: object, gpus_per_node: object) -> int:
    if not _whole(gpus_per_node):
        raise WorkloadError(f"gpus_per_node must be a positive integer, got {gpus_per_node!r}")
    if not _whole(gpus):
        raise WorkloadError(f"{app.name}: gpus must be a positive integer, got {gpus!r}")
    if gpus > app.largest_gang:  # type: ignore[operator]
        raise WorkloadError(f"{app.name}: a gang of {gpus} GPUs leaves less than the minimum local batch "
                            f"{app.min_local_batch} per GPU of the largest batch {app.max_batch} (at most "
                            f"{app.largest_gang} GPUs)")
    return int(gpus)  # type: ignore[call-overload]


def batch_config(app: PolluxApplication, gpus: int, batch: int, gpus_per_node: int = GPUS_PER_NODE) -> BatchConfig:
    """``app`` on ``gpus`` GPUs at ``batch``: each GPU takes ``ceil(batch / gpus)`` samples, in ``accum_steps + 1``
    local batches of at most ``max_local_batch``, cut to keep the batch within ``max_batch`` (so the batch run may be
    a little above or below ``batch``: 2,048 on 6 GPUs runs 6 x 342). ``WorkloadError`` when ``batch`` is outside
    ``init_batch..max_batch`` or leaves a GPU less than ``min_local_batch``."""
    gpus = _check_gang(app, gpus, gpus_per_node)
    if not _whole(batch) or not app.init_batch <= batch <= app.max_batch:
        raise WorkloadError(f"{app.name}: batch must be a whole number from {app.init_batch} to {app.max_batch}, "
                            f"got {batch!r}")
    share = -(-int(batch) // gpus)
    accum, local, _, valid = _configs(app, gpus, share)
    if share < app.min_local_batch or not valid:
        raise WorkloadError(f"{app.name}: a batch of {batch} on {gpus} GPUs leaves a local batch of "
                            f"{min(share, int(local))}, below the minimum {app.min_local_batch}")
    return _config(app, gpus, gpus_per_node, int(local), int(accum))


def _config(app: PolluxApplication, gpus: int, gpus_per_node: int, local: int, accum: int) -> BatchConfig:
    nodes = -(-gpus // gpus_per_node)
    batch = gpus * local * (accum + 1)
    throughput = float(app.params.throughput(nodes, gpus, local, accum))
    efficiency = float(app.efficiency(batch))
    return BatchConfig(gpus=gpus, nodes=nodes, batch=batch, local_batch=local, accum_steps=accum,
                       throughput=throughput, efficiency=efficiency, goodput=throughput * efficiency)


def goodput(app: PolluxApplication, gpus: int, batch: int, gpus_per_node: int = GPUS_PER_NODE) -> float:
    """``GOODPUT = THROUGHPUT * EFFICIENCY`` of ``app`` on ``gpus`` GPUs at ``batch`` (``batch_config``)."""
    return batch_config(app, gpus, batch, gpus_per_node).goodput


def best_batch(app: PolluxApplication, gpus: int, gpus_per_node: int = GPUS_PER_NODE) -> BatchConfig:
    """The configuration of the highest goodput of ``app`` on ``gpus`` GPUs: every whole per-GPU share from the one
    that reaches ``max(init_batch, gpus * min_local_batch)`` to the one that reaches ``max_batch``, split as
    ``batch_config`` splits it (so every batch ``batch_config`` accepts is among them; the first wins a tie)."""
    gpus = _check_gang(app, gpus, gpus_per_node)
    low = -(-max(app.init_batch, gpus * app.min_local_batch) // gpus)
    accum, local, batch, valid = _configs(app, gpus, np.arange(low, -(-app.max_batch // gpus) + 1))
    if not valid.any():
        raise WorkloadError(f"{app.name}: no batch from {app.init_batch} to {app.max_batch} fits {gpus} GPUs")
    accum, local, batch = accum[valid], local[valid], batch[valid]
    nodes = -(-gpus // gpus_per_node)
    values = app.params.throughput(nodes, gpus, local, accum) * app.efficiency(batch)
    i = int(np.argmax(values))
    return _config(app, gpus, gpus_per_node, int(local[i]), int(accum[i]))


@lru_cache(maxsize=256)
def goodput_curve(app: PolluxApplication, max_gpus: int | None = None,
                  gpus_per_node: int = GPUS_PER_NODE) -> Mapping[int, float]:
    """``{g: goodput at best_batch(app, g)}`` for every gang from 1 to ``max_gpus`` (default ``app.max_gpus``), read
    only (shared between the jobs that use it)."""
    top = app.max_gpus if max_gpus is None else max_gpus
    _check_gang(app, top, gpus_per_node)
    return MappingProxyType({g: best_batch(app, g, gpus_per_node).goodput for g in range(1, top + 1)})


def pollux_application(name: str, *, where: str = "") -> PolluxApplication:
    """``POLLUX_APPLICATIONS[name]``; an unknown name lists the valid ones and the closest match."""
    app = POLLUX_APPLICATIONS.get(name) if isinstance(name, str) else None
    if app is None:
        raise unknown_name("Pollux application", name, POLLUX_APPLICATIONS, where=where)
    return app


def elastic_job(app: PolluxApplication | str, *, job_id: int, arrival: float, gpus: int, batch: int | None = None,
                max_gpus: int | None = None, gpus_per_node: int = GPUS_PER_NODE,
                reference_device: str = REFERENCE_DEVICE, **fields: Any) -> TrainingJob:
    """An elastic ``TrainingJob`` of ``app`` (an application or its name) asking for ``gpus`` GPUs at ``batch``
    (default: the best batch there). ``duration`` is ``target_samples`` over the goodput at that gang and batch, on
    ``reference_device`` (the artifact's T4); ``min_gpus`` 1; ``max_gpus`` (default the larger of ``app.max_gpus``
    and ``gpus``); ``scaling`` the goodput at the best batch of every gang from 1 to ``max_gpus`` (``goodput_curve``),
    so that on a gang of ``g`` the job runs ``gang_speedup(g)`` times as fast, its batch re-tuned as Pollux re-tunes
    it. At ``gpus`` the job runs at its recorded batch, which may be a little below the best there: the workloads'
    batches were the artifact's best-JCT choice among its validated batch sizes. Other ``fields`` go to
    ``TrainingJob`` (``name``, ``tenant``, ...)."""
    application = pollux_application(app) if isinstance(app, str) else app
    chosen = best_batch(application, gpus, gpus_per_node) if batch is None else batch_config(
        application, gpus, batch, gpus_per_node)
    top = max(application.max_gpus, chosen.gpus) if max_gpus is None else max_gpus
    curve = goodput_curve(application, top, gpus_per_node)
    return TrainingJob(job_id=job_id, arrival=arrival, gpus=chosen.gpus,
                       duration=application.target_samples / chosen.goodput, reference_device=reference_device,
                       min_gpus=1, max_gpus=top, scaling=curve, **fields)


# --- the artifact's six applications --------------------------------------------------------------------------
# Every constant below comes from petuum/adaptdl, branch osdi21-artifact, simulator/ (Apache-2.0); <app> is the
# application's folder under simulator/traces/. Throughput: fit_throughput_params over <app>/placements.csv and
# <app>/scalability.csv, the rows with fewer than 64 replicas (the 64-replica rows held out for the tests).
# phi: fitted to the efficiency of the runs <app>/validation-<batch>.csv from their grad_sqr and grad_var, to the
# artifact's max_epochs. Limits: as the artifact's applications.py sets them (module docstring). Rounded to 4 digits.

POLLUX_APPLICATIONS: Mapping[str, PolluxApplication] = MappingProxyType({app.name: app for app in (
    PolluxApplication(
        name="cifar10", description="ResNet-18 on CIFAR-10",
        # fitted to cifar10/placements.csv + scalability.csv: 1,506 rows of 1 to 56 replicas
        params=ThroughputParams(alpha_grad=0.01681, beta_grad=0.000711, alpha_sync_local=0.03061,
                                beta_sync_local=0.005278, alpha_sync_node=0.1246, beta_sync_node=0.002668,
                                gamma=2.238),
        fit_error=0.103,  # RMS log error of step time over those 1,506 rows
        phi=5801.0,  # fitted to cifar10/validation-{128,...,4096}.csv, 100 epochs
        init_batch=128, max_batch=4096,  # smallest and largest validated batch
        min_local_batch=32, max_local_batch=1024,  # smallest and largest local_bsz in placements.csv
        target_samples=5_000_052.0,  # progress at epoch 100 (39,062.9 steps at 128) x 128: 100 epochs of 50,000
        max_gpus=64,  # min(64, 4096 // 32)
    ),
    PolluxApplication(
        name="imagenet", description="ResNet-50 on ImageNet",
        # fitted to imagenet/placements.csv + scalability.csv: 1,144 rows of 1 to 56 replicas
        params=ThroughputParams(alpha_grad=0.06352, beta_grad=0.004497, alpha_sync_local=0.06542,
                                beta_sync_local=0.01765, alpha_sync_node=0.3047, beta_sync_node=0.007023,
                                gamma=2.68),
        fit_error=0.102,  # RMS log error of step time over those 1,144 rows
        phi=19_320.0,  # fitted to imagenet/validation-{200,...,12800}.csv, 90 epochs
        init_batch=200, max_batch=12_800,  # smallest and largest validated batch
        min_local_batch=20, max_local_batch=200,  # smallest and largest local_bsz in placements.csv
        target_samples=115_305_100.0,  # progress at epoch 90 (576,525.6 steps at 200) x 200
        max_gpus=64,  # min(64, 12800 // 20)
    ),
    PolluxApplication(
        name="deepspeech2", description="DeepSpeech2 on CMU-ARCTIC",
        # fitted to deepspeech2/placements.csv + scalability.csv: 950 rows of 1 to 56 replicas
        params=ThroughputParams(alpha_grad=0.3088, beta_grad=0.02392, alpha_sync_local=2.592e-05,
                                beta_sync_local=0.1051, alpha_sync_node=0.5073, beta_sync_node=0.01023,
                                gamma=1.463),
        fit_error=0.107,  # RMS log error of step time over those 950 rows
        phi=1098.0,  # fitted to deepspeech2/validation-{20,...,640}.csv, 80 epochs
        init_batch=20, max_batch=640,  # smallest and largest validated batch
        min_local_batch=10, max_local_batch=80,  # smallest and largest local_bsz in placements.csv
        target_samples=570_720.0,  # progress at epoch 80 (28,536 steps at 20) x 20
        max_gpus=64,  # min(64, 640 // 10)
    ),
    PolluxApplication(
        name="ncf", description="NeuMF on MovieLens",
        # fitted to ncf/placements.csv + scalability.csv: 2,110 rows of 1 to 56 replicas
        params=ThroughputParams(alpha_grad=0.006938, beta_grad=6.554e-07, alpha_sync_local=0.003139,
                                beta_sync_local=0.001164, alpha_sync_node=0.0145, beta_sync_node=0.0005548,
                                gamma=1.0),
        fit_error=0.131,  # RMS log error of step time over those 2,110 rows
        phi=1_151_000.0,  # fitted to ncf/validation-{256,...,32768}.csv, 10 epochs
        init_batch=256, max_batch=32_768,  # smallest and largest validated batch
        min_local_batch=32, max_local_batch=32_768,  # smallest and largest local_bsz in placements.csv
        target_samples=49_708_540.0,  # progress at epoch 10 (194,174 steps at 256) x 256
        max_gpus=1,  # the artifact's simulator pins ncf to one replica (its rule would give min(64, 32768 // 32))
    ),
    PolluxApplication(
        name="bert", description="BERT fine-tuning on SQuAD",
        # fitted to bert/placements.csv + scalability.csv: 715 rows of 1 to 56 replicas
        params=ThroughputParams(alpha_grad=0.1715, beta_grad=0.0587, alpha_sync_local=0.2686,
                                beta_sync_local=0.0441, alpha_sync_node=1.411, beta_sync_node=0.009292,
                                gamma=2.028),
        fit_error=0.107,  # RMS log error of step time over those 715 rows
        phi=10_010.0,  # fitted to bert/validation-{12,...,384}.csv, 2 epochs
        init_batch=12, max_batch=384,  # smallest and largest validated batch
        min_local_batch=4, max_local_batch=12,  # smallest and largest local_bsz in placements.csv
        target_samples=177_288.0,  # progress at epoch 2 (14,774 steps at 12) x 12
        max_gpus=64,  # min(64, 384 // 4)
    ),
    PolluxApplication(
        name="yolov3", description="YOLOv3 on PASCAL VOC",
        # fitted to yolov3/placements.csv + scalability.csv: 645 rows of 1 to 56 replicas
        params=ThroughputParams(alpha_grad=0.1864, beta_grad=0.02545, alpha_sync_local=0.06267,
                                beta_sync_local=0.08099, alpha_sync_node=0.7416, beta_sync_node=0.01145,
                                gamma=1.104),
        fit_error=0.123,  # RMS log error of step time over those 645 rows
        phi=480.8,  # fitted to yolov3/validation-{8,...,512}.csv, 50 epochs
        init_batch=8, max_batch=512,  # smallest and largest validated batch
        min_local_batch=4, max_local_batch=8,  # smallest local_bsz in placements.csv; 8 as applications.py sets
        target_samples=827_551.8,  # progress at epoch 50 (103,444.0 steps at 8) x 8
        max_gpus=64,  # min(64, 512 // 4)
    ),
)})
"""The applications of Pollux's artifact (its workloads' ``application`` column), by name."""

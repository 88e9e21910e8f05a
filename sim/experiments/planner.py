"""Capacity planning: the fewest replicas of each device type, compression variant and serving layout that meet a
service's SLO for its traffic, found by simulation.

Layouts (``plan.layouts``): ``colocated`` replicas that prefill and decode, or ``P:D``, a disaggregated service
(``sim.serving.disaggregation``) whose ``r`` replicas split into ``max(1, round(r P / (P + D)))`` prefill replicas and
the rest (at least one) decode replicas; it needs ``r >= 2``.

For every (device type, variant, layout) the planner runs the config's first service alone (static replicas, no
training) on a cluster of that device type, and bisects on the replica count between the plan's bounds:
``meets(r)`` is true when the run's p99 TTFT and p99 TPOT are within the targets and its SLO attainment is at
least the target. Attainment grows with replicas (fewer requests wait), so the smallest feasible count is
found in ``O(log(max - min))`` runs. Every run is cached by (device, variant, replicas), and the answer is
always checked against its neighbour: the table says whether one replica fewer was run and failed. When
nothing within the bounds meets the SLO, the choice is reported infeasible with the best run found (the most
replicas tried).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from sim.errors import ConfigError, GpusimError
from sim.experiments.config import Config, PlanConfig, ServiceConfig, config_to_dict, load_config
from sim.experiments.scenario import build_accounting, run_config
from sim.platform.hardware import get_device

# chips per TPU host (a "node"); GPUs come 8 to a node
_TPU_HOST = {"tpu-v4": 4, "tpu-v5p": 4, "tpu-v5e": 8}


COLOCATED = "colocated"


def layout_split(layout: str, replicas: int) -> tuple[int, int] | None:
    """(prefill, decode) replicas of a ``P:D`` layout with ``replicas`` in all; None for ``colocated``."""
    if layout == COLOCATED:
        return None
    p, d = (int(x) for x in layout.split(":"))
    prefill = max(1, round(replicas * p / (p + d)))
    prefill = min(prefill, replicas - 1)
    return prefill, replicas - prefill


@dataclass(frozen=True)
class Trial:
    """One simulated (device, variant, layout, replicas) point and how it did against the targets."""

    device: str
    variant: str
    layout: str
    replicas: int
    meets: bool
    ttft_p99: float
    tpot_p99: float
    attainment: float
    price_per_hour: float
    energy_kwh: float
    requests: int
    hours: float = 0.0
    """How long the replicas ran (the serving run's length)."""
    error: str = ""

    @property
    def usd_per_1k_requests(self) -> float:
        return math.nan if not self.requests else self.price_per_hour * self.hours * 1000 / self.requests

    @property
    def kwh_per_1k_requests(self) -> float:
        return math.nan if not self.requests else self.energy_kwh * 1000 / self.requests


@dataclass(frozen=True)
class PlanResult:
    """The plan: one row per (device, variant) with its smallest feasible replica count (``table``), every run
    made (``trials``), and the cheapest and the most energy-efficient feasible rows (``None`` if none is)."""

    table: pd.DataFrame
    trials: pd.DataFrame
    cheapest: dict[str, Any] | None
    most_efficient: dict[str, Any] | None


def _variant_label(variant: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in variant.items() if k != "quality_cost") or "as configured"


def plan(config: Config, *, progress: Callable[[str], None] | None = None) -> PlanResult:
    """Search every (device, variant) of ``config.plan`` for the fewest replicas meeting its targets."""
    spec = config.plan
    services = config.workload.inference.services
    if not services:
        raise ConfigError("plan: the config needs a service in workload.inference.services to plan for")
    if len(services) > 1:
        raise ConfigError(f"plan: the config has {len(services)} services; plan one at a time")
    _check_plan(spec)
    rows, trials = [], []
    for device, variant, layout in ((d, v, lay) for d in spec.devices for v in spec.variants or ({},)
                                    for lay in spec.layouts):
        cache: dict[int, Trial] = {}
        low = spec.min_replicas if layout == COLOCATED else max(2, spec.min_replicas)

        def trial(r: int, device: str = device, variant: Mapping[str, Any] = variant, layout: str = layout,
                  cache: dict[int, Trial] = cache) -> Trial:
            if r not in cache:
                cache[r] = _run(config, services[0], device, variant, r, layout)
                if progress is not None:
                    t = cache[r]
                    progress(f"{device} [{t.variant}] {layout} x {r}: " + (t.error or (
                        f"p99 TTFT {t.ttft_p99:.3f} s, p99 TPOT {t.tpot_p99 * 1e3:.1f} ms, "
                        f"attainment {t.attainment:.2%} -> {'meets' if t.meets else 'misses'}")))
            return cache[r]

        answer = _smallest(trial, low, spec.max_replicas)
        below = cache.get(answer - 1) if answer is not None else None
        if answer is not None and answer > low and below is None:
            below = trial(answer - 1)  # the check: one fewer replica, run
        best = cache[answer] if answer is not None else cache[max(cache)]
        rows.append({
            "device": get_device(device).name, "variant": best.variant, "layout": layout,
            "prefill_replicas": _prefill_replicas(layout, answer),
            "quality_cost": variant.get("quality_cost", math.nan), "feasible": answer is not None,
            "replicas": answer if answer is not None else math.nan,
            "devices": (answer or 0) * services[0].devices_per_replica,
            "price_per_hour": best.price_per_hour if answer is not None else math.nan,
            "usd_per_1k_requests": best.usd_per_1k_requests if answer is not None else math.nan,
            "kwh_per_1k_requests": best.kwh_per_1k_requests if answer is not None else math.nan,
            "ttft_p99": best.ttft_p99, "tpot_p99": best.tpot_p99, "attainment": best.attainment,
            "one_fewer_misses": None if below is None else not below.meets,
            "best_tried": "" if answer is not None else (best.error or f"{best.replicas} replicas: attainment "
                                                                       f"{best.attainment:.2%}"),
            "runs": len(cache),
        })
        trials.extend(dataclasses.asdict(t) for t in cache.values())
    table = pd.DataFrame(rows)
    feasible = table[table["feasible"]]
    cheapest = feasible.sort_values(["price_per_hour", "kwh_per_1k_requests"]).iloc[0].to_dict() if len(
        feasible) else None
    efficient = feasible.sort_values(["kwh_per_1k_requests", "price_per_hour"]).iloc[0].to_dict() if len(
        feasible) else None
    return PlanResult(table=table, trials=pd.DataFrame(trials), cheapest=cheapest, most_efficient=efficient)


def _prefill_replicas(layout: str, replicas: int | None) -> float:
    """The prefill pool's share of a feasible disaggregated answer (NaN if colocated or infeasible)."""
    split = layout_split(layout, replicas) if replicas is not None else None
    return math.nan if split is None else split[0]


def _smallest(trial: Callable[[int], Trial], lo: int, hi: int) -> int | None:
    """Smallest r in [lo, hi] with trial(r).meets, assuming meets is monotone in r; None if hi does not meet."""
    if not trial(hi).meets:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if trial(mid).meets:
            hi = mid
        else:
            lo = mid + 1
    return hi


def _run(config: Config, service: ServiceConfig, device: str, variant: Mapping[str, Any], replicas: int,
         layout: str = COLOCATED) -> Trial:
    """The service alone with ``replicas`` static replicas of ``device`` and the model ``variant``, colocated or split
    into prefill and decode pools by ``layout``."""
    spec = get_device(device)
    model = dict(service.model) if isinstance(service.model, Mapping) else {"name": service.model}
    model.update(variant)
    per_node = _TPU_HOST.get(spec.name, 8)
    devices = replicas * service.devices_per_replica
    nodes = max(1, -(-devices // per_node))
    raw = config_to_dict(config)
    raw.pop("plan", None)
    raw["cluster"] = {"preset": None, "pools": [{"device": spec.name, "nodes": nodes, "devices_per_node": per_node}]}
    served = {**config_to_dict(config)["workload"]["inference"]["services"][0], "device": spec.name, "model": model,
              "replicas": replicas, "min_replicas": replicas, "max_replicas": replicas, "prefill": None, "decode": None}
    split = layout_split(layout, replicas)
    if split is not None:
        for role, count in zip(("prefill", "decode"), split, strict=True):
            served[role] = {"replicas": count, "min_replicas": count, "max_replicas": count,
                            "devices_per_replica": service.devices_per_replica}
    raw["workload"] = {"inference": {"services": [served]}}
    raw["policy"] = {**raw["policy"], "autoscaler": "static", "colocation": "shared"}
    raw["sim"] = {**raw["sim"], "progress": False}
    label = _variant_label(variant)
    price = devices * build_accounting(config.accounting).prices.get(spec.name, spec.price_per_hour)
    try:
        results = run_config(load_config(raw))
    except GpusimError as exc:
        return Trial(spec.name, label, layout, replicas, False, math.nan, math.nan, 0.0, price, math.nan, 0,
                     error=str(exc))
    s = results.summary()
    req = s["requests"]
    target = config.plan.target
    meets = (req["ttft"]["p99"] <= target["ttft_p99"] and req["tpot"]["p99"] <= target["tpot_p99"]
             and req["slo_attainment"] >= target["attainment"]
             and req["completed"] == req["count"] - req["not_arrived"])  # every request that arrived was served
    replicas_table = results.replicas
    hours = float((replicas_table["retired"].fillna(results.run["end_time"]) - replicas_table["created"]).max() / 3600)
    return Trial(spec.name, label, layout, replicas, bool(meets), req["ttft"]["p99"], req["tpot"]["p99"],
                 req["slo_attainment"], price, s["inference"]["energy"]["kwh"], req["completed"], hours)


def _check_plan(spec: PlanConfig) -> None:
    if not spec.devices:
        raise ConfigError("plan.devices: give at least one device type to try")
    for i, device in enumerate(spec.devices):
        try:
            get_device(device)
        except (GpusimError, ValueError, TypeError) as exc:
            raise ConfigError(f"plan.devices[{i}]: {exc}") from None
    if not spec.layouts:
        raise ConfigError("plan.layouts: give at least one layout (colocated, or P:D such as '1:2')")
    for i, layout in enumerate(spec.layouts):
        parts = layout.split(":") if isinstance(layout, str) else []
        if layout != COLOCATED and not (len(parts) == 2 and all(p.isdigit() and int(p) > 0 for p in parts)):
            raise ConfigError(f"plan.layouts[{i}]: expected colocated or P:D with positive integers (e.g. '1:2'), "
                              f"got {layout!r}")
    for key in ("min_replicas", "max_replicas"):
        value = getattr(spec, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"plan.{key} must be a positive integer, got {value!r}")
    if spec.min_replicas > spec.max_replicas:
        raise ConfigError(f"plan.min_replicas ({spec.min_replicas}) exceeds plan.max_replicas ({spec.max_replicas})")
    unknown = set(spec.target) - {"ttft_p99", "tpot_p99", "attainment"}
    missing = {"ttft_p99", "tpot_p99", "attainment"} - set(spec.target)
    if unknown or missing:
        raise ConfigError(f"plan.target needs ttft_p99, tpot_p99 and attainment; unknown {sorted(unknown)}, "
                          f"missing {sorted(missing)}")
    for variant in spec.variants:
        if not isinstance(variant, Mapping) or set(variant) - {"weights", "kv_cache", "sparsity", "name",
                                                                "quality_cost"}:
            raise ConfigError(f"plan.variants: each variant is a mapping of weights, kv_cache, sparsity, quality_cost "
                              f"(or a smaller model's name), got {variant!r}")


def format_plan(result: PlanResult, targets: Mapping[str, float]) -> str:
    """The plan as text: the table, then the cheapest and the most energy-efficient choice."""
    lines = [f"targets: p99 TTFT <= {targets['ttft_p99']} s, p99 TPOT <= {targets['tpot_p99'] * 1e3:g} ms, "
             f"SLO attainment >= {targets['attainment']:.1%}"]
    columns = ["device", "variant", "layout", "quality_cost", "feasible", "replicas", "prefill_replicas",
               "price_per_hour", "usd_per_1k_requests", "kwh_per_1k_requests", "ttft_p99", "tpot_p99", "attainment",
               "one_fewer_misses", "runs"]
    lines.append(result.table[columns].to_string(index=False, float_format=lambda v: f"{v:,.4g}"))
    for label, row in (("cheapest", result.cheapest), ("most energy-efficient", result.most_efficient)):
        if row is None:
            continue
        lines.append(f"{label}: {int(row['replicas'])} x {row['device']} [{row['variant']}, {row['layout']}] at "
                     f"${row['price_per_hour']:,.2f}/h (${row['usd_per_1k_requests']:.4f} and "
                     f"{row['kwh_per_1k_requests']:.4f} kWh per 1,000 requests); p99 TTFT {row['ttft_p99']:.3f} s, "
                     f"p99 TPOT {row['tpot_p99'] * 1e3:.1f} ms, attainment {row['attainment']:.2%}; one replica "
                     f"fewer {'misses (run)' if row['one_fewer_misses'] else 'not run (at the lower bound)'}")
    if result.cheapest is None:
        lines.append("nothing within the bounds meets the targets; the best run of each choice is in the table "
                     "(raise plan.max_replicas, relax the targets, or add a device type)")
    return "\n".join(lines)


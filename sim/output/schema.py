"""Every table a run writes, declared once: each column's name, unit and meaning, and when it is there.

The tables are built to this declaration (``conform`` orders a built table by it and refuses a column it does not
declare), accounting adds its declared columns to them (``Results.add_columns``), ``gpusim columns`` prints it and
docs/TABLES.md is written from it (``markdown``). Adding a column means declaring it here and computing it where
its figure is known; nothing else lists columns.

Units: ``s`` seconds of simulated time, ``device-s`` device-seconds, ``h`` hours, ``kWh``, ``USD``, ``W``, ``FLOP``,
``bytes``, ``bytes/s``, ``tokens``, ``devices``, ``count``; ``share`` a number in [0, 1]; ``ratio`` a dimensionless
ratio; an empty unit is a label, an id or a flag.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

ALWAYS = ""
DISAGGREGATED = "disaggregated"
FAILURES = "failures"
FRAGMENTATION = "fragmentation"
GRID = "grid"
MODEL = "model"
NETWORK = "network"
PACKING = "packing"
PREFIX = "prefix"
QUOTAS = "quotas"
SPECULATIVE = "speculative"

CONDITIONS: dict[str, str] = {
    DISAGGREGATED: "with a disaggregated service (`ServiceSpec(prefill=..., decode=...)`; NaN or empty for other "
                   "services)",
    FAILURES: "with a failures subsystem (`failures` or `checkpoint` in the config; `sim.failures.failures`)",
    FRAGMENTATION: "with `sim.track_fragmentation` (fragmentation samples)",
    GRID: "with `accounting.grid_intensity` (carbon)",
    MODEL: "when some job names a model (`TrainingJob.model`)",
    NETWORK: "with a network model (`sim.network`)",
    PACKING: "with a scheduler that packs jobs in pairs on the same devices (`gandiva`; `sim.training.packing`)",
    PREFIX: "with prefix caching (`ContinuousBatching(prefix_cache=...)`) in some service",
    QUOTAS: "with tenant quotas (`cluster.quotas`)",
    SPECULATIVE: "with a speculative-decoding service (`ContinuousBatching(speculative=...)`; NaN for other services)",
}
"""When a column that is not always there appears: the keys of ``Column.when``."""


@dataclass(frozen=True)
class Column:
    """One column: its ``name`` (a pattern such as ``gangs_{size}`` for a family of columns), ``unit`` (module
    docstring), ``meaning`` and ``when`` it is there (``ALWAYS``, or a key of ``CONDITIONS``)."""

    name: str
    unit: str
    meaning: str
    when: str = ALWAYS

    def matches(self, name: str) -> bool:
        """Whether ``name`` is this column, or one of its family."""
        if "{" not in self.name:
            return name == self.name
        return re.fullmatch(re.sub(r"\\\{\w+\\\}", r"\\d+", re.escape(self.name)), name) is not None


@dataclass(frozen=True)
class Table:
    """One output table: its ``name`` (the CSV ``Results.save`` writes is NAME.csv), what one ``row`` is, and its
    columns in order."""

    name: str
    row: str
    columns: tuple[Column, ...]

    def column(self, name: str) -> Column:
        """The declaration of column ``name`` (KeyError when the table has no such column)."""
        for column in self.columns:
            if column.matches(name):
                return column
        raise KeyError(f"table {self.name!r} declares no column {name!r}")

    def conform(self, frame: pd.DataFrame, *, complete: bool = True) -> pd.DataFrame:
        """``frame`` with its columns in declared order. A column the table does not declare, or (when ``complete``)
        a column that is always there but missing, is a bug in whatever built the table: ``SchemaError`` names
        it."""
        slots: list[list[str]] = [[] for _ in self.columns]
        for name in frame.columns:
            position = next((i for i, column in enumerate(self.columns) if column.matches(str(name))), None)
            if position is None:
                raise SchemaError(f"table {self.name!r} has a column {name!r} that sim/output/schema.py does not "
                                  "declare: declare it there (name, unit, meaning)")
            slots[position].append(str(name))
        missing = [c.name for c, found in zip(self.columns, slots, strict=True)
                   if complete and c.when == ALWAYS and not found]
        if missing:
            raise SchemaError(f"table {self.name!r} lacks the column(s) {', '.join(missing)} that it always has")
        order = [name for names in slots for name in names]
        return frame if order == list(frame.columns) else frame[order]


class SchemaError(RuntimeError):
    """A built table does not match its declaration (a bug in gpusim or in an extension, not in the input)."""


def _columns(*rows: tuple[str, ...]) -> tuple[Column, ...]:
    return tuple(Column(*row) for row in rows)


_RUN_KEYS = (
    ("scheduler", "", "the run's training scheduler (policy name)"),
    ("placer", "", "the run's placer (policy name)"),
    ("seed", "", "the run's seed (an int, or the entropy and spawn key of a SeedSequence)"),
)
_CARBON = ("carbon_kg", "kg", "CO2 of the energy: energy_kwh * grid_intensity / 1000", GRID)

TABLES: dict[str, Table] = {t.name: t for t in (
    Table("jobs", "one training job of the workload (every job, whatever became of it)", _columns(
        ("job_id", "", "the job's id in the workload"),
        ("name", "", "the job's name"),
        ("tenant", "", "who submitted it (a user, team or virtual cluster)"),
        ("gpus", "devices", "devices the job asks for, all at once (a gang)"),
        ("gpu_fraction", "share", "share of one device it asks for: 1, or below 1 for a one-device job that shares a "
                                  "device with other fractional jobs"),
        ("duration", "s", "run time on its reference device at full speed, alone, with no preemption"),
        ("arrival", "s", "when it was submitted"),
        ("first_start", "s", "when it first started (NaN if it never did)"),
        ("finish", "s", "when it finished (NaN if it did not)"),
        ("queueing_delay", "s", "first_start - arrival"),
        ("jct", "s", "job completion time: finish - arrival"),
        ("slowdown", "ratio", "jct over its duration on the fastest device type it may use"),
        ("status", "", "finished, unschedulable, queued, running, preempted (waiting again) or not_arrived (after the "
                       "horizon)"),
        ("reason", "", "why it is unschedulable or not arrived; empty otherwise"),
        ("device_type", "", "the device type it last ran on (empty if it never ran)"),
        ("pool", "", "the pool it last ran on (empty if it never ran)"),
        ("preemptions", "count", "times the job was stopped while running (by its scheduler, or to make room for "
                                 "inference replicas) and queued again"),
        ("waiting_seconds", "s", "time spent waiting in the queue: the first queueing delay plus every wait after "
                                 "a preemption (up to the end for a job still waiting; NaN if it never queued)"),
        ("overhead_seconds", "s", "time spent restoring after preemptions (checkpoint and restore), not progressing"),
        ("device_seconds", "device-s", "devices held times the time held, restores included (a fractional job: its "
                                       "gpu_fraction times the time held)"),
        ("model_flops", "FLOP", "FLOPs of the steps it completed: steps * 6 * params * tokens per step (NaN for a "
                                "job without a model)", MODEL),
        *_RUN_KEYS,
        ("placement_level", "", "the widest network level its last placement spans (node, leaf, pod, ...)", NETWORK),
        ("comm_slowdown", "ratio", "time lost to network contention over its communication time", NETWORK),
        ("packed_seconds", "s", "running time it shared its devices with a packed partner (each of the two is "
                                "charged half the devices' time then)", PACKING),
        ("borrowing_starts", "count", "starts that left its tenant above its nominal quota in the pool (borrowed "
                                      "devices)", QUOTAS),
        ("reclaims", "count", "preemptions that were another tenant reclaiming its quota (counted in preemptions too)",
         QUOTAS),
        ("interruptions", "count", "times a failure (device, node, trace outage or spot reclaim) stopped it while "
                                   "running; it then re-queued with status queued", FAILURES),
        ("lost_work_seconds", "s", "work (reference-seconds) done since its last checkpoint when failures hit it, "
                                   "done again", FAILURES),
        ("lost_device_seconds", "device-s", "device time lost to failures: the running time since the last checkpoint "
                                            "at each failure, plus the restarts after them, times its devices",
         FAILURES),
        ("checkpoint_interval", "s", "seconds of progress between its checkpoints on its last run (inf: it never "
                                     "saves; NaN: it never ran)", FAILURES),
        ("goodput", "ratio", "work kept (reference-seconds done and not lost) times gpus over device_seconds: 1 on a "
                             "reference device with no checkpoint cost, failure or restore (NaN if it held none)",
         FAILURES),
        ("restore_device_seconds", "device-s", "device-seconds held while restoring after preemptions"),
        ("busy_device_seconds", "device-s", "device-seconds held while progressing"),
        ("cost_usd", "USD", "device-seconds held times the device type's price per hour / 3600"),
        ("flops", "FLOP", "FLOPs executed: model_flops, else the assumed training MFU times the peak times "
                          "busy_device_seconds"),
        ("energy_kwh", "kWh", "energy of its devices (linear power model between idle and TDP)"),
        ("mfu", "share", "flops over peak FLOP/s times device-seconds held"),
        ("flops_assumed", "", "true when flops come from the assumed training MFU, not a model"),
        _CARBON,
    )),
    Table("timeline", "one change of the training side's state (a sample at each start, finish and preemption)",
          _columns(
        ("time", "s", "when the state changed"),
        ("allocated_devices", "devices", "devices held by training jobs"),
        ("utilization", "share", "allocated_devices over the cluster's devices, less the shares of shared devices no "
                                 "fractional job holds"),
        ("queued_jobs", "count", "jobs waiting (queued or preempted)"),
        ("running_jobs", "count", "jobs running"),
        ("fragmentation", "share", "share of the free devices that cannot be part of any 8-device gang "
                                   "(sim.platform.fragmentation)", FRAGMENTATION),
        ("gangs_{size}", "count", "gangs of {size} devices that fit in the free devices at once", FRAGMENTATION),
        *_RUN_KEYS,
    )),
    Table("events", "one training event (with `sim.record_events`)", _columns(
        ("time", "s", "when it happened"),
        ("event", "", "arrive, unschedulable, start, phase, preempt, fail (stopped by a failure) or finish"),
        ("job_id", "", "the job"),
        ("devices", "", "the devices it started on or gave back (global device indexes)"),
    )),
    Table("requests", "one inference request of the workload (every request, whatever became of it)", _columns(
        ("service", "", "the service it was sent to"),
        ("request_id", "", "its index in the service's request trace"),
        ("arrival", "s", "when it arrived"),
        ("admitted", "s", "when a replica first took it into a batch (NaN if never)"),
        ("first_token", "s", "when its first output token was produced"),
        ("finish", "s", "when its last output token was produced"),
        ("queueing_delay", "s", "admitted - arrival"),
        ("ttft", "s", "time to first token: first_token - arrival"),
        ("tpot", "s", "time per output token after the first: (finish - first_token) / (output_tokens - 1); NaN "
                      "for one-token outputs and fixed-time services"),
        ("e2e", "s", "end-to-end latency: finish - arrival"),
        ("prompt_tokens", "tokens", "prompt length as served (after truncation to the model's context)"),
        ("output_tokens", "tokens", "output length as served"),
        ("replica", "", "the replica that served it last (-1 if none); of a disaggregated service, its decode replica"),
        ("prefill_replica", "", "the prefill replica that computed its prompt", DISAGGREGATED),
        ("kv_transfer_bytes", "bytes", "KV-cache bytes moved from its prefill replica to its decode replica",
         DISAGGREGATED),
        ("kv_transfer_wait", "s", "from the end of its prefill until its transfer started (routing, and waiting for "
                                  "KV room on the decode replica)", DISAGGREGATED),
        ("kv_transfer_seconds", "s", "the transfer's duration over the interconnect (latency, bandwidth, contention)",
         DISAGGREGATED),
        ("kv_losses", "count", "of a disaggregated service: times a failed replica took its KV cache and its prompt "
                               "was prefilled again (sim.serving.pool_failures); NaN for other services", FAILURES),
        ("kv_lost_tokens", "tokens", "of a disaggregated service: tokens of KV cache (prompt, and output tokens "
                                     "decoded) that failed replicas took, over its losses (work done again)", FAILURES),
        ("kv_evictions", "count", "times a replica freed its KV cache to make room and recomputed it later (vLLM's "
                                  "preemption in recompute mode)"),
        ("cached_tokens", "tokens", "prompt tokens read from its replica's prefix cache instead of prefilled, over its "
                                    "admissions (a recompute looks up again); NaN if never admitted or no prefix "
                                    "caching", PREFIX),
        ("status", "", "finished, rejected, waiting (unfinished at the end) or not_arrived (after the horizon)"),
        ("reason", "", "why it was rejected or truncated; empty otherwise"),
        ("slo_met", "", "finished within the service's TTFT and TPOT objectives"),
        ("draft_tokens", "tokens", "draft tokens proposed for it: k per verify step it took part in", SPECULATIVE),
        ("draft_accepted", "tokens", "of draft_tokens, those that became output tokens", SPECULATIVE),
        ("draft_rejected", "tokens", "draft_tokens - draft_accepted: rejected by the target, or past the end of its "
                                     "output (wasted work)", SPECULATIVE),
        ("router", "", "the run's router (policy name)"),
        ("seed", "", "the run's seed"),
        ("device_seconds", "device-s",
         "its share of its replica's device-seconds held, in proportion to its tokens (prompt plus output)"),
        ("busy_device_seconds", "device-s", "its share of its replica's busy device-seconds"),
        ("flops", "FLOP", "its share of its replica's FLOPs"),
        ("energy_kwh", "kWh", "its share of its replica's energy"),
        ("cost_usd", "USD", "its share of its replica's cost"),
        _CARBON,
    )),
    Table("replicas", "one inference replica created during the run", _columns(
        ("service", "", "its service"),
        ("replica", "", "its id within the service (within its pool, for a disaggregated service)"),
        ("role", "", "prefill or decode: its pool in a disaggregated service (empty for other services)",
         DISAGGREGATED),
        ("device_type", "", "the device type it runs on"),
        ("model", "", "the model variant it serves (empty for a fixed-time service)"),
        ("quality_cost", "ratio", "the variant's quality cost, as configured (NaN if none)"),
        ("devices", "devices", "devices it holds (tensor parallel degree)"),
        ("device_indexes", "", "the devices it holds (global device indexes, as in the events table)"),
        ("created", "s", "when its devices were taken (it starts loading)"),
        ("ready", "s", "when it could serve"),
        ("retired", "s", "when it gave its devices back (NaN if it still held them at the end)"),
        ("busy_seconds", "s", "time its steps ran"),
        ("busy_fraction", "share", "busy_seconds over its life from ready to retired (or the end)"),
        ("mfu", "share", "model FLOPs over peak bf16 FLOP/s times devices times its ready life"),
        ("kv_utilization", "share", "time-mean share of its KV-cache capacity in use"),
        ("prefix_lookups", "count", "admissions of requests with a prefix of at least one token (NaN without prefix "
                                    "caching)", PREFIX),
        ("prefix_hits", "count", "of those, admissions that read at least one cached block of their prefix", PREFIX),
        ("prefix_hit_rate", "share", "prefix_hits over prefix_lookups", PREFIX),
        ("prefill_tokens_saved", "tokens", "prompt tokens read from its prefix cache instead of prefilled", PREFIX),
        ("prefix_evicted_tokens", "tokens", "cached prefix tokens it evicted to make room for running requests",
         PREFIX),
        ("draft_tokens", "tokens", "draft tokens it proposed (k per sequence per verify step)", SPECULATIVE),
        ("draft_accepted", "tokens", "of draft_tokens, those that became output tokens", SPECULATIVE),
        ("draft_rejected", "tokens", "draft_tokens - draft_accepted (wasted work)", SPECULATIVE),
        ("draft_flops", "FLOP", "FLOPs of the draft model (its decode steps and its prefills); part of flops",
         SPECULATIVE),
        ("rejected_flops", "FLOP", "verify-step FLOPs of the positions whose tokens were thrown away (layers, LM head "
                                   "and attention); part of flops", SPECULATIVE),
        ("router", "", "the run's router (policy name)"),
        ("seed", "", "the run's seed"),
        ("held_device_seconds", "device-s", "devices times its life from created to retired (or the end)"),
        ("busy_device_seconds", "device-s", "devices times busy_seconds"),
        ("energy_kwh", "kWh", "energy of its devices (idle while not busy)"),
        ("cost_usd", "USD", "held_device_seconds times the price per hour / 3600"),
        ("flops", "FLOP", "model FLOPs it executed (NaN for a fixed-time service)"),
        _CARBON,
    )),
    Table("replica_timeline", "one change in a service's replica counts", _columns(
        ("time", "s", "when the counts changed"),
        ("service", "", "the service (SERVICE/prefill, SERVICE/decode: a pool of a disaggregated service)"),
        ("ready", "count", "replicas serving"),
        ("provisioning", "count", "replicas loading (devices taken, not yet serving)"),
        ("draining", "count", "replicas finishing their requests before retiring"),
    )),
    Table("replica_samples", "one periodic sample of one replica's state", _columns(
        ("time", "s", "when it was sampled"),
        ("service", "", "the service (SERVICE/prefill, SERVICE/decode: a pool of a disaggregated service)"),
        ("replica", "", "the replica"),
        ("queued_requests", "count", "requests waiting at the replica"),
        ("running_requests", "count", "requests in its running batch"),
        ("kv_utilization", "share", "share of its KV-cache capacity in use"),
    )),
    Table("links", "one shared network link (with a network model)", _columns(
        ("link", "", "its index"),
        ("name", "", "its name (which switch or NIC it joins)"),
        ("kind", "", "its kind (NIC, leaf uplink, pod uplink, ...)"),
        ("owner", "", "the node, leaf or pod it belongs to"),
        ("capacity", "bytes/s", "its bandwidth"),
        ("latency", "s", "its latency"),
        ("mean_utilization", "share", "time-mean load over capacity"),
        ("peak_utilization", "share", "highest load over capacity"),
    )),
    Table("accounting", "one device type and side (training, inference or free)", _columns(
        ("device_type", "", "the device type"),
        ("side", "", "training, inference or free"),
        ("devices", "devices", "devices of this type in the cluster"),
        ("device_hours", "h", "device-hours this side held (free: neither side held)"),
        ("busy_device_hours", "h", "device-hours of progress (training) or of running steps (inference)"),
        ("idle_watts", "W", "one device's idle power (catalog, or the power model's override)"),
        ("tdp_watts", "W", "one device's power at full load"),
        ("usd_per_hour", "USD", "price of one device-hour"),
        ("energy_kwh", "kWh", "energy of the side's device time"),
        ("cost_usd", "USD", "cost of the side's device time"),
        ("flops", "FLOP", "FLOPs executed"),
        ("flops_at_peak", "FLOP", "peak bf16 FLOP/s times device-seconds held"),
        ("mfu", "share", "flops over flops_at_peak"),
        ("flops_assumed", "", "true when some training FLOPs come from the assumed MFU"),
        ("device_time_exact", "", "whether training device time is exact (event log, or no preemption)"),
        *_RUN_KEYS,
        _CARBON,
        ("grid_g_per_kwh", "gCO2/kWh", "the grid intensity the carbon was computed with", GRID),
    )),
    Table("services", "one inference service (when the run has any)", _columns(
        ("service", "", "the service"),
        ("device_type", "", "the device type its replicas run on"),
        ("model", "", "the model variant"),
        ("quality_cost", "ratio", "the variant's quality cost"),
        ("replicas", "count", "replicas created"),
        ("device_hours", "h", "device-hours its replicas held"),
        ("busy_device_hours", "h", "device-hours of running steps"),
        ("energy_kwh", "kWh", "energy of its replicas"),
        ("cost_usd", "USD", "cost of its replicas"),
        ("flops", "FLOP", "model FLOPs executed"),
        ("mfu", "share", "flops over peak FLOP/s times device-seconds held"),
        ("completed", "count", "requests finished"),
        ("output_tokens", "tokens", "output tokens of the finished requests"),
        ("kwh_per_1k_requests", "kWh", "energy per 1,000 finished requests"),
        ("usd_per_1k_requests", "USD", "cost per 1,000 finished requests"),
        ("kwh_per_million_tokens", "kWh", "energy per million output tokens"),
        ("usd_per_million_tokens", "USD", "cost per million output tokens"),
        ("draft_flops", "FLOP", "FLOPs of its draft model (part of flops)", SPECULATIVE),
        ("rejected_flops", "FLOP", "verify-step FLOPs of positions whose tokens were thrown away (part of flops)",
         SPECULATIVE),
        ("draft_acceptance", "share", "draft tokens accepted over draft tokens proposed", SPECULATIVE),
        ("speculation_flops_share", "share", "(draft_flops + rejected_flops) / flops: the share of its work spent "
                                             "drafting and on verify positions thrown away", SPECULATIVE),
        _CARBON,
    )),
    Table("failures", "one outage (with a failures subsystem): a device, node or link failing, a trace outage, a spot "
                      "pool's notice or reclaim of a node", _columns(
        ("time", "s", "when it began (a spot notice: when the notice was given)"),
        ("kind", "", "device, node, link (random failures), the trace's kind (default trace; link for a link), "
                     "spot-notice or spot-reclaim"),
        ("node", "", "the node of its devices (-1: a leaf's or pod's link, which takes no device)"),
        ("devices", "", "the devices out of service (global device indexes)"),
        ("duration", "s", "how long they are out (a spot notice: the notice period)"),
        ("jobs_interrupted", "count", "running training jobs it stopped"),
        ("replicas_lost", "count", "inference replicas it took down (their requests routed again, or rejected with "
                                   "the reason replica_failed)"),
        ("link", "", "a link outage (kind link, or a trace's link line): the shared link, as Topology.link_name names "
                     "its up direction (both directions fail); a node's NIC link takes the node out, a leaf's or pod's "
                     "uplink loses one of its physical links (node -1, no devices); empty otherwise"),
    )),
    Table("skipped", "one trace row left out under `errors: skip`", _columns(
        ("workload", "", "jobs (the training trace) or the service whose request trace it was"),
        ("path", "", "the trace file"),
        ("line", "", "the line in that file"),
        ("field", "", "the field at fault"),
        ("reason", "", "what was wrong with it"),
    )),
)}
"""The tables of a run, in the order ``Results.save`` writes them."""


def markdown(tables: Iterable[Table] | None = None) -> str:
    """The declaration as Markdown: one section per table, one row per column (docs/TABLES.md)."""
    lines = ["# Output tables", "",
             "Every table a run writes (`Results.<name>`, and `<name>.csv` in a run's folder), column by column. "
             "Written from `sim/output/schema.py` by `gpusim columns --markdown`; do not edit by hand.", ""]
    for table in tables if tables is not None else TABLES.values():
        lines += [f"## {table.name}", "", f"One row: {table.row}.", "", "| column | unit | meaning | when |",
                  "|---|---|---|---|"]
        lines += [f"| `{c.name}` | {c.unit} | {c.meaning} | {CONDITIONS.get(c.when, 'always')} |"
                  for c in table.columns]
        lines.append("")
    return "\n".join(lines)

"""Device catalog: peak FLOP/s, memory, bandwidths, power and price of GPUs and TPUs.

Every figure is in SI units: FLOP/s, bytes, bytes/s, watts, USD per device-hour. Figures of the device
table in docs/REFERENCE.md are copied exactly; other datasheet figures say so in ``notes``. Every field
whose value is an assumption rather than a datasheet figure (idle power and price always; TPU power)
is named in the entry's ``assumptions`` and can be replaced with :func:`with_overrides`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pandas as pd

from sim.errors import ConfigError, UnknownNameError

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "fp8", "int8")
"""Numeric formats a catalog entry may list a dense peak for."""

VENDORS: tuple[str, ...] = ("nvidia", "google")

SCALE_UP_KINDS: tuple[str, ...] = (
    "pcie", "nvlink1", "nvlink2", "nvlink3", "nvlink4", "nvlink5", "ici-3d-torus", "ici-2d-torus",
)

# Formats tried, in order, when a device has no figure for the requested one. A 16-bit request may use
# the other 16-bit format (same bytes), then fp32; 8-bit formats the device does not accelerate run at
# its 16-bit (then fp32) rate. fp32 has no fallback: TPUs publish no fp32 peak.
PRECISION_FALLBACKS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "fp32": ("fp32",),
    "fp16": ("fp16", "bf16", "fp32"),
    "bf16": ("bf16", "fp16", "fp32"),
    "fp8": ("fp8", "bf16", "fp16", "fp32"),
    "int8": ("int8", "bf16", "fp16", "fp32"),
})

IDLE_FRACTION_OF_TDP = 0.25
"""Assumed idle power as a fraction of TDP, used where no measured idle figure is given."""

# Bidirectional PCIe x16 link bandwidth, used as ``scale_up_bandwidth`` of PCIe-only cards.
PCIE_GEN3_X16 = 32e9
PCIE_GEN4_X16 = 64e9

_ALWAYS_ASSUMED = ("idle_watts", "price_per_hour")

SPARSE_TENSOR_CORES = frozenset({"a100-sxm-40gb", "a100-sxm-80gb", "l4", "h100-sxm", "h200-sxm", "b200"})
"""GPUs with 2:4 structured-sparsity tensor cores (NVIDIA Ampere, Ada, Hopper, Blackwell datasheets: the sparse
figures are twice the dense ones). Older GPUs and TPUs run 2:4-sparse weights at dense speed."""


@dataclass(frozen=True)
class DeviceSpec:
    """One accelerator type (one GPU die or one TPU chip), in SI units.

    ``peak_flops`` maps each format the device accelerates (keys of ``PRECISIONS``) to its dense peak
    FLOP/s (ops/s for int8); it is stored read-only. ``scale_up_bandwidth`` is the total bidirectional
    bandwidth per device over its scale-up fabric (NVLink, ICI) as datasheets quote it; PCIe-only cards
    give their PCIe x16 link's bidirectional figure (Gen3 32 GB/s, Gen4 64 GB/s). ``structured_sparsity``:
    the device has sparse tensor cores (NVIDIA Ampere and later), so 2:4-sparse weights halve its matmul FLOPs.
    """

    name: str
    vendor: str
    peak_flops: Mapping[str, float] = field(hash=False)
    memory_bytes: float
    memory_bandwidth: float
    scale_up_bandwidth: float
    scale_up: str
    tdp_watts: float
    idle_watts: float
    price_per_hour: float
    assumptions: tuple[str, ...] = _ALWAYS_ASSUMED
    notes: str = ""
    structured_sparsity: bool = False

    def __post_init__(self) -> None:
        where = f"device {self.name!r}"
        if not isinstance(self.structured_sparsity, bool):
            raise ConfigError(f"{where}: structured_sparsity must be true or false, got {self.structured_sparsity!r}")
        if not isinstance(self.name, str) or not self.name or self.name != self.name.strip().lower():
            raise ConfigError(f"{where}: name must be a non-empty lowercase string")
        if self.vendor not in VENDORS:
            raise ConfigError(f"{where}: vendor must be one of {', '.join(VENDORS)}, got {self.vendor!r}")
        if self.scale_up not in SCALE_UP_KINDS:
            raise ConfigError(f"{where}: scale_up must be one of {', '.join(SCALE_UP_KINDS)}, got {self.scale_up!r}")
        peaks = dict(self.peak_flops)
        if not peaks:
            raise ConfigError(f"{where}: peak_flops needs at least one format")
        for precision, value in peaks.items():
            if precision not in PRECISIONS:
                raise ConfigError(f"{where}: peak_flops key {precision!r} is not one of {', '.join(PRECISIONS)}")
            _check_number(where, f"peak_flops[{precision!r}]", value, positive=True)
        object.__setattr__(self, "peak_flops", MappingProxyType(peaks))
        for key in ("memory_bytes", "memory_bandwidth", "tdp_watts"):
            _check_number(where, key, getattr(self, key), positive=True)
        for key in ("scale_up_bandwidth", "idle_watts", "price_per_hour"):
            _check_number(where, key, getattr(self, key), positive=False)
        if self.idle_watts > self.tdp_watts:
            raise ConfigError(f"{where}: idle_watts {self.idle_watts} exceeds tdp_watts {self.tdp_watts}")
        assumed = tuple(dict.fromkeys(self.assumptions))
        names = {f.name for f in dataclasses.fields(self)}
        for key in assumed:
            if key not in names:
                raise ConfigError(f"{where}: assumptions names {key!r}, which is not a DeviceSpec field")
        object.__setattr__(self, "assumptions", assumed)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # mappingproxy cannot be pickled; rebuild from a plain dict (process-pool sweeps pickle specs).
        values = tuple(
            dict(self.peak_flops) if f.name == "peak_flops" else getattr(self, f.name)
            for f in dataclasses.fields(self)
        )
        return (type(self), values)

    def supports(self, precision: str) -> bool:
        """True when the device lists a peak for ``precision`` itself (no fallback)."""
        return precision.lower() in self.peak_flops

    def peak(self, precision: str = "bf16") -> float:
        """Dense peak FLOP/s in ``precision``, falling back along ``PRECISION_FALLBACKS``.

        "bf16" on a device without bf16 (K80, P40, P100, V100, T4) gives its fp16 peak, or fp32 where
        fp16 is not accelerated either (K80, P40). An unknown precision, or one with no usable figure
        (fp32 on a TPU), raises a ValueError listing the valid ones.
        """
        key = precision.lower() if isinstance(precision, str) else precision
        if key not in PRECISION_FALLBACKS:
            raise UnknownNameError("precision", str(precision), PRECISIONS)
        for candidate in PRECISION_FALLBACKS[key]:
            if candidate in self.peak_flops:
                return self.peak_flops[candidate]
        raise ConfigError(f"device {self.name!r} has no {key} peak and no fallback for it; "
                          f"it lists: {', '.join(self.peak_flops)}")

    @property
    def training_peak(self) -> float:
        """``peak("bf16")`` with its fallback: the figure that scales job speed across device types."""
        return self.peak("bf16")

    def ridge_point(self, precision: str = "bf16") -> float:
        """Roofline ridge point, FLOP per byte of memory traffic: ``peak(precision) / memory_bandwidth``."""
        return self.peak(precision) / self.memory_bandwidth


def _check_number(where: str, key: str, value: Any, *, positive: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        bound = "positive" if positive else "non-negative"
        raise ConfigError(f"{where}: {key} must be a finite {bound} number, got {value!r}")


def _gpu(name: str, *, peaks: dict[str, float], memory: float, bandwidth: float, scale_up: str, link: float,
         tdp: float, price: float, notes: str, assumptions: tuple[str, ...] = _ALWAYS_ASSUMED,
         idle: float | None = None) -> DeviceSpec:
    return DeviceSpec(name=name, vendor="nvidia", peak_flops=peaks, memory_bytes=memory, memory_bandwidth=bandwidth,
                      scale_up_bandwidth=link, scale_up=scale_up, tdp_watts=tdp,
                      idle_watts=IDLE_FRACTION_OF_TDP * tdp if idle is None else idle,
                      price_per_hour=price, assumptions=assumptions, notes=notes,
                      structured_sparsity=name in SPARSE_TENSOR_CORES)


def _tpu(name: str, *, peaks: dict[str, float], memory: float, bandwidth: float, scale_up: str, link: float,
         tdp: float, price: float, notes: str, assumptions: tuple[str, ...], idle: float | None = None) -> DeviceSpec:
    return DeviceSpec(name=name, vendor="google", peak_flops=peaks, memory_bytes=memory, memory_bandwidth=bandwidth,
                      scale_up_bandwidth=link, scale_up=scale_up, tdp_watts=tdp,
                      idle_watts=IDLE_FRACTION_OF_TDP * tdp if idle is None else idle,
                      price_per_hour=price, assumptions=assumptions, notes=notes)


_GiB = 2**30
_IDLE = f"idle_watts assumed {IDLE_FRACTION_OF_TDP:.0%} of TDP"
_PRICE = "price_per_hour assumed: typical 2024-2025 on-demand cloud price per device-hour"

_CATALOG: tuple[DeviceSpec, ...] = (
    _gpu("k80", peaks={"fp32": 4.4e12}, memory=12e9, bandwidth=0.24e12, scale_up="pcie", link=PCIE_GEN3_X16,
         tdp=150, price=0.45,
         notes="One GK210 die, half a Tesla K80 board (REFERENCE.md): fp32 only, no tensor cores, GDDR5. The two "
               "dies share the board's PCIe Gen3 x16 link (32 GB/s bidirectional) through an on-board switch. "
               "gpusim's philly preset assumes Philly's 12 GB GPUs were K80 dies. "
               f"{_IDLE}; {_PRICE} (K80 list price was about $0.45)."),
    _gpu("p40", peaks={"fp32": 11.8e12, "int8": 47e12}, memory=24e9, bandwidth=346e9, scale_up="pcie",
         link=PCIE_GEN3_X16, tdp=250, price=1.0,
         notes="Tesla P40, vendor datasheet (not in REFERENCE.md): fp32 11.8 TFLOP/s (3840 cores at 1.53 GHz "
               "boost; the datasheet rounds to 12), int8 47 TOPS, fp16 at 1/64 rate so not listed, 24 GB GDDR5, "
               "PCIe Gen3 x16. ASSUMPTION: gpusim's philly preset takes Philly's 24 GB GPUs to be P40s (the trace "
               f"gives only GPU memory). {_IDLE}; {_PRICE} (P40 instances are retired; rough figure)."),
    _gpu("p100-sxm2", peaks={"fp32": 10.6e12, "fp16": 21.2e12}, memory=16e9, bandwidth=0.73e12,
         scale_up="nvlink1", link=160e9, tdp=300, price=1.46,
         notes="REFERENCE.md (HBM2 0.73 TB/s; the datasheet says 732 GB/s); fp32 10.6 TFLOP/s from the vendor "
               f"datasheet. No bf16, no tensor cores. {_IDLE}; {_PRICE}."),
    _gpu("v100-sxm2", peaks={"fp32": 15.7e12, "fp16": 125e12}, memory=16e9, bandwidth=0.90e12,
         scale_up="nvlink2", link=300e9, tdp=300, price=2.48,
         notes="REFERENCE.md (16 GB variant); fp32 15.7 TFLOP/s from the vendor datasheet. fp16 is the tensor-core "
               f"peak; no bf16. {_IDLE}; {_PRICE}."),
    _gpu("v100-sxm2-32gb", peaks={"fp32": 15.7e12, "fp16": 125e12}, memory=32e9, bandwidth=0.90e12,
         scale_up="nvlink2", link=300e9, tdp=300, price=3.0,
         notes="REFERENCE.md (32 GB variant, same compute and bandwidth as v100-sxm2); fp32 from the vendor "
               f"datasheet. {_IDLE}; {_PRICE}."),
    _gpu("t4", peaks={"fp32": 8.1e12, "fp16": 65e12, "int8": 130e12}, memory=16e9, bandwidth=0.32e12,
         scale_up="pcie", link=PCIE_GEN3_X16, tdp=70, price=0.35,
         notes="REFERENCE.md; fp32 8.1 TFLOP/s and the PCIe Gen3 x16 32 GB/s interconnect from the vendor datasheet. "
               f"GDDR6. Turing has no bf16. {_IDLE}; {_PRICE}."),
    _gpu("l4", peaks={"fp32": 30.3e12, "fp16": 121e12, "bf16": 121e12, "fp8": 242.5e12, "int8": 242.5e12},
         memory=24e9, bandwidth=300e9, scale_up="pcie", link=PCIE_GEN4_X16, tdp=72, price=0.70,
         notes="Vendor datasheet (not in REFERENCE.md), dense figures = half the quoted sparse ones; 24 GB GDDR6, "
               f"PCIe Gen4 x16. {_IDLE}; {_PRICE}."),
    _gpu("a100-sxm-40gb", peaks={"fp32": 19.5e12, "fp16": 312e12, "bf16": 312e12, "int8": 624e12}, memory=40e9,
         bandwidth=1.555e12, scale_up="nvlink3", link=600e9, tdp=400, price=2.93,
         notes=f"Vendor datasheet (not in REFERENCE.md): HBM2 1,555 GB/s. {_IDLE}; {_PRICE}."),
    _gpu("a100-sxm-80gb", peaks={"fp32": 19.5e12, "fp16": 312e12, "bf16": 312e12, "int8": 624e12}, memory=80e9,
         bandwidth=2.04e12, scale_up="nvlink3", link=600e9, tdp=400, price=3.0,
         notes="REFERENCE.md (HBM2e 2.04 TB/s; the datasheet says 2,039 GB/s); fp32 19.5 TFLOP/s (non-tensor) from "
               f"the vendor datasheet. No fp8. {_IDLE}; {_PRICE}."),
    _gpu("h100-sxm", peaks={"fp32": 67e12, "fp16": 989e12, "bf16": 989e12, "fp8": 1979e12, "int8": 1979e12},
         memory=80e9, bandwidth=3.35e12, scale_up="nvlink4", link=900e9, tdp=700, price=4.5,
         notes="REFERENCE.md (H100 SXM5); fp32 67 TFLOP/s and int8 1,979 TOPS from the vendor datasheet. "
               f"{_IDLE}; {_PRICE} (hyperscalers list more, GPU clouds less)."),
    _gpu("h200-sxm", peaks={"fp32": 67e12, "fp16": 989e12, "bf16": 989e12, "fp8": 1979e12, "int8": 1979e12},
         memory=141e9, bandwidth=4.8e12, scale_up="nvlink4", link=900e9, tdp=700, price=5.0,
         notes="REFERENCE.md; fp32 and int8 from the vendor datasheet (same compute as H100 SXM, HBM3e). "
               f"{_IDLE}; {_PRICE}."),
    _gpu("b200", peaks={"fp16": 2250e12, "bf16": 2250e12, "fp8": 4500e12, "int8": 4500e12}, memory=180e9,
         bandwidth=8e12, scale_up="nvlink5", link=1800e9, tdp=1000, price=6.0,
         notes="Vendor HGX/DGX B200 datasheets (not in REFERENCE.md), per GPU = 8-GPU totals / 8, dense (half the "
               "sparse figures): 180 GB HBM3e usable of 192 GB, 8 TB/s, NVLink5 1.8 TB/s, 1,000 W. fp32 not listed "
               f"(datasheet revisions differ). {_IDLE}; {_PRICE}."),
    _tpu("tpu-v4", peaks={"bf16": 275e12, "int8": 275e12}, memory=32 * _GiB, bandwidth=1.2e12,
         scale_up="ici-3d-torus", link=600e9, tdp=192, idle=90, price=3.22,
         assumptions=("tdp_watts", "idle_watts", "price_per_hour", "scale_up_bandwidth"),
         notes="REFERENCE.md; 4,096-chip pod, 3D torus ICI. tdp_watts is Google's measured max power (192 W; "
               "Google publishes no TDP) and idle_watts its measured min (90 W), Cloud TPU v4 docs. "
               "scale_up_bandwidth derived: 6 ICI links at 400 Gb/s each way (300 GB/s per chip per direction), "
               "doubled to a bidirectional total like the v5e/v5p figures. "
               "price_per_hour: Cloud TPU on-demand chip-hour."),
    _tpu("tpu-v5e", peaks={"bf16": 197e12, "int8": 393e12}, memory=16e9, bandwidth=0.82e12,
         scale_up="ici-2d-torus", link=400e9, tdp=200, price=1.2,
         assumptions=("tdp_watts", "idle_watts", "price_per_hour"),
         notes="REFERENCE.md (HBM 16 GB, 0.82 TB/s; Cloud docs say 819 GB/s); 256-chip pod, 2D torus; ICI 400 GB/s "
               "bidirectional per chip from the Cloud TPU v5e docs. tdp_watts is an estimate (Google publishes "
               f"none). {_IDLE}; price_per_hour: Cloud TPU on-demand chip-hour."),
    _tpu("tpu-v5p", peaks={"bf16": 459e12, "int8": 918e12}, memory=95 * _GiB, bandwidth=2.77e12,
         scale_up="ici-3d-torus", link=1200e9, tdp=450, price=4.2,
         assumptions=("tdp_watts", "idle_watts", "price_per_hour"),
         notes="REFERENCE.md (HBM 95 GiB user-allocatable of 96, 2.77 TB/s; Cloud docs say 2,765 GB/s); 8,960-chip "
               "pod, 3D torus; ICI 1,200 GB/s bidirectional per chip from the Cloud TPU v5p docs. tdp_watts is a "
               f"rough estimate (Google publishes none). {_IDLE}; price_per_hour: Cloud TPU on-demand chip-hour."),
)

DEVICES: Mapping[str, DeviceSpec] = MappingProxyType({spec.name: spec for spec in _CATALOG})
"""The catalog, read-only, keyed by lowercase device name."""

ALIASES: Mapping[str, str] = MappingProxyType({
    "h100": "h100-sxm", "h100-sxm5": "h100-sxm",
    "h200": "h200-sxm",
    "a100": "a100-sxm-80gb", "a100-80gb": "a100-sxm-80gb", "a100-40gb": "a100-sxm-40gb",
    "v100": "v100-sxm2", "v100-32gb": "v100-sxm2-32gb",
    "p100": "p100-sxm2",
    "v4": "tpu-v4", "v5e": "tpu-v5e", "v5p": "tpu-v5p",
    "tpuv4": "tpu-v4", "tpuv5e": "tpu-v5e", "tpuv5p": "tpu-v5p",
})
"""Short names accepted by :func:`get_device`."""


def get_device(name: str) -> DeviceSpec:
    """The catalog entry for ``name``: case-insensitive, ``_``/space read as ``-``, aliases in ``ALIASES``.

    Raises :class:`~sim.errors.UnknownNameError` (a ValueError) listing the valid names and the closest one.
    """
    if not isinstance(name, str):
        raise TypeError(f"device name must be a string, got {type(name).__name__}")
    key = "-".join(name.strip().lower().replace("_", " ").split())
    key = ALIASES.get(key, key)
    if key not in DEVICES:
        raise UnknownNameError("device", key, DEVICES)
    return DEVICES[key]


def with_overrides(spec: DeviceSpec, **fields: Any) -> DeviceSpec:
    """A copy of ``spec`` with ``fields`` replaced (e.g. ``price_per_hour=2.1``).

    Overridden fields leave ``assumptions`` (the caller now vouches for them) unless ``assumptions`` is
    itself given. ``peak_flops`` is replaced as a whole. Unknown field names raise UnknownNameError.
    """
    valid = [f.name for f in dataclasses.fields(DeviceSpec)]
    for key in fields:
        if key not in valid:
            raise UnknownNameError("DeviceSpec field", key, valid)
    if "assumptions" not in fields:
        fields["assumptions"] = tuple(a for a in spec.assumptions if a not in fields)
    return dataclasses.replace(spec, **fields)


def catalog_table(devices: Iterable[DeviceSpec | str] | None = None) -> pd.DataFrame:
    """One row per device (default: the whole catalog) in human units.

    Columns: ``name``, ``vendor``, ``training_tflops`` (bf16 with fallback), ``<precision>_tflops`` (NaN
    where not accelerated), ``memory_gb`` (1e9 bytes), ``memory_tb_s``, ``scale_up``, ``scale_up_gb_s``,
    ``tdp_w``, ``idle_w``, ``usd_per_hour``, the serving step-time factors (``linear_compute`` ...
    ``sequence_overhead``, ``sim.serving.step_factors``), ``assumed`` (comma-separated assumed fields, the
    step-time factors included where they are not measured on the device).
    """
    from sim.serving.step_factors import default_step_factors

    specs = DEVICES.values() if devices is None else [d if isinstance(d, DeviceSpec) else get_device(d)
                                                      for d in devices]
    rows = []
    for spec in specs:
        row: dict[str, Any] = {"name": spec.name, "vendor": spec.vendor, "training_tflops": spec.training_peak / 1e12}
        for precision in PRECISIONS:
            row[f"{precision}_tflops"] = spec.peak_flops.get(precision, math.nan) / 1e12
        row.update({
            "memory_gb": spec.memory_bytes / 1e9,
            "memory_tb_s": spec.memory_bandwidth / 1e12,
            "scale_up": spec.scale_up,
            "scale_up_gb_s": spec.scale_up_bandwidth / 1e9,
            "tdp_w": float(spec.tdp_watts),
            "idle_w": float(spec.idle_watts),
            "usd_per_hour": float(spec.price_per_hour),
        })
        factors = default_step_factors(spec.name)
        row.update(factors.as_dict())
        row["assumed"] = ", ".join([*spec.assumptions, *factors.assumed])
        rows.append(row)
    return pd.DataFrame(rows)

"""Quantities with units in configs: ``"700 W"``, ``"0.7 kW"``, ``"4.5 USD/h"``, ``"400 gCO2/kWh"``.

A plain number is taken in the key's documented unit (``tdp_watts: 700``); a string must carry a unit this
module knows for the quantity, and is converted to that unit. Anything else (a negative amount, a string with
no unit or an unknown one, a bool) raises ``ConfigError`` naming the key.
"""

from __future__ import annotations

import math
import re
from typing import Any

from sim.errors import ConfigError

UNITS: dict[str, dict[str, float]] = {
    "power": {"w": 1.0, "watt": 1.0, "watts": 1.0, "kw": 1e3, "kilowatt": 1e3, "kilowatts": 1e3},
    "price": {"usd/h": 1.0, "usd/hour": 1.0, "$/h": 1.0, "$/hour": 1.0, "usd/min": 60.0, "usd/s": 3600.0},
    "intensity": {"g/kwh": 1.0, "gco2/kwh": 1.0, "gco2e/kwh": 1.0, "kg/kwh": 1e3, "kgco2/kwh": 1e3,
                  "g/mwh": 1e-3},
}
"""Units each quantity accepts, with the factor to its canonical unit (watts, USD per hour, gCO2 per kWh)."""

CANONICAL = {"power": "W", "price": "USD/h", "intensity": "gCO2/kWh"}

_AMOUNT = re.compile(r"^\s*\$?\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$")


def parse_quantity(key: str, value: Any, quantity: str, *, positive: bool = False) -> float:
    """``value`` in the canonical unit of ``quantity`` (``power``, ``price``, ``intensity``).

    Numbers are taken as already in the canonical unit; strings must name a unit from ``UNITS[quantity]``
    (``"$4.5/h"`` is read as 4.5 USD/h). The amount must be finite and non-negative (positive if asked).
    """
    units = UNITS[quantity]
    canonical = CANONICAL[quantity]
    if isinstance(value, str):
        match = _AMOUNT.match(value)
        if match is None:
            raise ConfigError(f"{key}: {value!r} is not an amount with a unit, e.g. '{_example(quantity)}'")
        number, unit = float(match.group(1)), match.group(2).replace(" ", "").lower()
        if value.strip().startswith("$") and unit.startswith("/"):
            unit = "$" + unit
        if not unit:
            raise ConfigError(f"{key}: {value!r} is missing its unit; write e.g. '{_example(quantity)}' "
                              f"(units: {', '.join(units)}), or a plain number in {canonical}")
        if unit not in units:
            raise ConfigError(f"{key}: unknown unit {match.group(2)!r} in {value!r}; units for {quantity}: "
                              f"{', '.join(units)}")
        amount = number * units[unit]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        amount = float(value)
    else:
        raise ConfigError(f"{key} must be a number in {canonical} or a string with a unit such as "
                          f"'{_example(quantity)}', got {value!r}")
    if not math.isfinite(amount) or amount < 0 or (positive and amount == 0):
        bound = "positive" if positive else "non-negative"
        raise ConfigError(f"{key} must be a finite {bound} amount of {canonical}, got {value!r}")
    return amount


def _example(quantity: str) -> str:
    return {"power": "700 W", "price": "4.5 USD/h", "intensity": "400 gCO2/kWh"}[quantity]

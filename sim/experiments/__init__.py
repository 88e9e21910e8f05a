"""Experiments around runs: configs, scenarios built from them, sweeps, the capacity planner and what-ifs."""

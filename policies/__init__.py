"""Decisions: schedulers (which jobs run) and placers (on which devices), behind sim's contracts.

Registered by name in pyproject.toml's ``gpusim.policies`` entry-point group; sim/ never imports them.
"""

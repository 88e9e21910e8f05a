"""Errors gpusim raises; each names what the user has to fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class GpusimError(Exception):
    """Base class of gpusim's own errors."""


class ConfigError(GpusimError, ValueError):
    """A configuration key or value is invalid; the message names the key."""


class UnknownNameError(GpusimError, ValueError):
    """A name (policy, preset, device) is not known; the message lists the valid ones."""

    def __init__(self, kind: str, name: str, valid: Iterable[str], hint: str = "") -> None:
        self.kind = kind
        self.name = name
        self.valid = sorted(valid)
        self.hint = hint
        super().__init__(f"unknown {kind} {name!r}{did_you_mean(name, self.valid)}; valid: {', '.join(self.valid)}"
                         + (f"; {hint}" if hint else ""))

    def __reduce__(self) -> tuple[type, tuple[str, str, list[str], str]]:
        return (type(self), (self.kind, self.name, self.valid, self.hint))


class PolicyError(GpusimError):
    """A policy returned a decision the engine cannot carry out; names the policy and the decision."""


class StarvationError(GpusimError):
    """The policies leave devices idle while jobs that fit wait, and nothing else can change."""


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a close match exists, else an empty string."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


class ActionError(GpusimError, ValueError):
    """An action outside an environment's action space (``sim.gym``); names the action and the space."""

"""Helpers for error messages about names: valid choices and the closest match to a typo."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from workloads.errors import WorkloadError


def unknown_name(what: str, name: object, valid: Iterable[str], *, where: str = "", context: str = "") -> WorkloadError:
    """A ``WorkloadError`` for an unknown name, listing the valid names and the closest match.

    The message reads ``"{where}: unknown {what} {name!r}{context}; valid: a, b, c (did you mean 'a'?)"``.
    """
    choices = sorted(valid)
    message = f"unknown {what} {name!r}{context}; valid: {', '.join(choices)}"
    close = difflib.get_close_matches(str(name), choices, n=1)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    return WorkloadError(f"{where}: {message}" if where else message)


def check_keys(spec: Mapping[str, object], allowed: Iterable[str], *, where: str, context: str = "") -> None:
    """Reject the first key of ``spec`` outside ``allowed``, naming it and the valid keys."""
    allowed = set(allowed)
    for key in spec:
        if key not in allowed:
            raise unknown_name("key", key, allowed, where=where, context=context)

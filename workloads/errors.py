"""Errors raised while building or loading workloads."""

from __future__ import annotations


class WorkloadError(ValueError):
    """A workload description or job is invalid."""


class TraceFormatError(WorkloadError):
    """A trace row could not be read; names the file, line and field."""

    def __init__(self, path: str, line: int, field: str, message: str) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.reason = message
        super().__init__(f"{path}, line {line}, field {field!r}: {message}")

    def __reduce__(self) -> tuple[type, tuple[str, int, str, str]]:
        return (type(self), (self.path, self.line, self.field, self.reason))


class SkippedRowsWarning(UserWarning):
    """Rows of a trace were left out under ``errors="skip"``; the message names the file and the first lines."""

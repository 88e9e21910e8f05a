"""Reading CSV trace files: transparent gzip, header checks, line numbers and the raise/skip policy."""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TextIO

from workloads.errors import TraceFormatError, WorkloadError
from workloads.jobs import SkippedRow
from workloads.traces.bundled import bundled_path

ErrorPolicy = Literal["raise", "skip"]

#: Field name used in errors about a row with the wrong number of columns.
COLUMNS_FIELD = "columns"


def resolve(path: str | os.PathLike[str] | None, bundled_name: str) -> Path:
    """``path`` as a ``Path``, or the bundled copy of ``bundled_name`` when ``path`` is ``None``."""
    if path is None:
        return bundled_path(bundled_name)
    resolved = Path(path)
    if not resolved.is_file():
        raise WorkloadError(f"trace file {str(resolved)!r} does not exist (or is not a file)")
    return resolved


def open_text(path: Path) -> TextIO:
    """Open a CSV file for reading; ``.gz`` files are decompressed on the fly (line numbers unchanged)."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


class RowProblems:
    """Collects bad rows; ``finish`` raises the first (by line) or returns them as ``SkippedRow``s."""

    def __init__(self, path: Path, errors: str) -> None:
        if errors not in ("raise", "skip"):
            raise WorkloadError(f"errors must be 'raise' or 'skip', got {errors!r}")
        self.path = str(path)
        self.errors = errors
        self._rows: list[SkippedRow] = []

    def add(self, line: int, field: str, reason: str) -> None:
        """Record a problem with ``field`` on 1-based file line ``line``."""
        self._rows.append(SkippedRow(self.path, line, field, reason))

    def finish(self) -> tuple[SkippedRow, ...]:
        """Raise ``TraceFormatError`` for the earliest problem under ``errors="raise"``; else return all of them."""
        rows = tuple(sorted(self._rows, key=lambda row: row.line))
        if rows and self.errors == "raise":
            first = rows[0]
            raise TraceFormatError(first.path, first.line, first.field, first.reason)
        return rows


def read_rows(path: Path, header: Sequence[str], problems: RowProblems) -> tuple[list[list[str]], list[int]]:
    """Data rows of ``path`` with their 1-based line numbers, after checking the header on line 1.

    Header names are compared after stripping spaces. Blank lines are ignored; rows with the wrong
    number of columns go to ``problems``. Fields are returned as read (not stripped).
    """
    with open_text(path) as stream:
        text = stream.read()
    reader = csv.reader(io.StringIO(text))
    records = list(reader)
    if reader.line_num == len(records):  # no quoted field spans lines: record i is on line i + 1
        numbers: Sequence[int] = range(1, len(records) + 1)
    else:
        reader = csv.reader(io.StringIO(text))
        records, numbers = [], []
        for record in reader:
            records.append(record)
            numbers.append(reader.line_num)
    expected = list(header)
    if not records or [name.strip() for name in records[0]] != expected:
        got = "an empty file" if not records else repr(",".join(records[0]))
        raise TraceFormatError(str(path), 1, "header", f"expected the header {','.join(expected)!r}, got {got}")
    width = len(expected)
    rows: list[list[str]] = []
    lines: list[int] = []
    for record, line in zip(records[1:], numbers[1:], strict=True):
        if len(record) == width:
            rows.append(record)
            lines.append(line)
        elif record:
            problems.add(line, COLUMNS_FIELD,
                         f"expected {width} columns ({','.join(expected)}), got {len(record)}: {','.join(record)!r}")
    return rows, lines


def columns(rows: list[list[str]], width: int) -> list[list[str]]:
    """The rows (all of length ``width``) as ``width`` column lists."""
    return [[row[i] for row in rows] for i in range(width)]

"""Reading CSV trace files in chunks: transparent gzip, UTF-8 and header checks, line numbers, raise/skip.

A file is read in blocks of whole lines (``BLOCK_BYTES`` each). A block without quotes is scanned with numpy
(line ends, field counts, blank lines) and its well-formed lines are parsed by pandas' C reader with explicit
dtypes, so a row costs its parsed values, not Python objects. A block with quotes (or a carriage return that
does not end a line, or a NUL) goes through the ``csv`` module, as the whole file used to. Either way every row
keeps its 1-based line number, and bytes that are not UTF-8 are a ``TraceFormatError`` naming file and line.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal

import numpy as np
import pandas as pd

from workloads.errors import SkippedRowsWarning, TraceFormatError, WorkloadError
from workloads.jobs import SkippedRow
from workloads.traces.bundled import bundled_path

ErrorPolicy = Literal["raise", "skip"]

#: Field name used in errors about a row with the wrong number of columns (or not readable as CSV).
COLUMNS_FIELD = "columns"
#: Bytes of whole lines read and parsed at a time.
BLOCK_BYTES = 8 << 20
#: How many skipped rows the warning names (all of them are in the trace's ``skipped``).
SHOWN_SKIPPED = 5
_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_NEWLINE, _COMMA, _CR = 10, 44, 13
_HERE = Path(__file__).resolve().parent


def resolve(path: str | os.PathLike[str] | None, bundled_name: str) -> Path:
    """``path`` as a ``Path``, or the bundled copy of ``bundled_name`` when ``path`` is ``None``."""
    if path is None:
        return bundled_path(bundled_name)
    resolved = Path(path)
    if not resolved.is_file():
        raise WorkloadError(f"trace file {str(resolved)!r} does not exist (or is not a file)")
    return resolved


def check_limit(limit: object) -> int | None:
    """``limit`` if it is ``None`` or a positive integer; otherwise ``WorkloadError``."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit <= 0):
        raise WorkloadError(f"limit: must be a positive integer (the number of rows to keep), got {limit!r}")
    return None if limit is None else int(limit)


class RowProblems:
    """Collects bad rows; ``check`` raises the earliest under ``errors="raise"``, ``finish`` returns them all."""

    def __init__(self, path: Path, errors: str) -> None:
        if errors not in ("raise", "skip"):
            raise WorkloadError(f"errors must be 'raise' or 'skip', got {errors!r}")
        self.path = str(path)
        self.errors = errors
        self._rows: list[SkippedRow] = []

    def add(self, line: int, field: str, reason: str) -> None:
        """Record a problem with ``field`` on 1-based file line ``line``."""
        self._rows.append(SkippedRow(self.path, line, field, reason))

    def check(self, before: int | None = None) -> None:
        """Forget problems on lines ``>= before`` (rows not read), then raise the earliest under ``raise``."""
        if before is not None:
            self._rows = [row for row in self._rows if row.line < before]
        if self._rows and self.errors == "raise":
            first = min(self._rows, key=lambda row: row.line)
            raise TraceFormatError(first.path, first.line, first.field, first.reason)

    def finish(self) -> tuple[SkippedRow, ...]:
        """Every problem by line; raises ``TraceFormatError`` for the earliest under ``errors="raise"``.

        Under ``errors="skip"`` a ``SkippedRowsWarning`` names the file, the first lines and the count.
        """
        self.check()
        rows = tuple(sorted(self._rows, key=lambda row: row.line))
        if rows:
            warnings.warn(describe_skipped(rows), SkippedRowsWarning, stacklevel=_outside_level())
        return rows


def describe_skipped(rows: Sequence[SkippedRow], shown: int = SHOWN_SKIPPED) -> str:
    """One line for people: how many rows were skipped, from which file, the first ``shown`` lines and why."""
    if not rows:
        return "no malformed rows skipped"
    files = sorted({row.path for row in rows})
    where = files[0] if len(files) == 1 else f"{len(files)} files"
    head = "; ".join(f"line {row.line}" + (f" of {row.path}" if len(files) > 1 else "")
                     + f", field {row.field!r}: {row.reason}" for row in rows[:shown])
    more = len(rows) - shown
    tail = f"; and {more:,} more (lines {rows[shown].line}..{rows[-1].line})" if more > 0 else ""
    return (f"{where}: skipped {len(rows):,} malformed row{'s' if len(rows) != 1 else ''} (errors='skip'): "
            f"{head}{tail}; the trace's .skipped lists every one")


def floats(texts: pd.Series | Sequence[str]) -> np.ndarray:
    """Numbers from strings as Python's ``float`` reads them; anything unparseable becomes NaN."""
    values = texts.tolist() if isinstance(texts, pd.Series) else list(texts)
    try:
        return np.array(values, dtype=float)
    except ValueError:
        return np.array([_float(text) for text in values], dtype=float)


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def labels(texts: pd.Series) -> tuple[np.ndarray, list[str]]:
    """``texts`` stripped, as ``(codes, names)``: row ``i`` reads ``names[codes[i]]`` (distinct, first seen first).

    Strips each distinct text once rather than every row's.
    """
    codes, uniques = pd.factorize(texts)
    index: dict[str, int] = {}
    remap = np.array([index.setdefault(str(text).strip(), len(index)) for text in uniques.tolist()], dtype=np.int64)
    return remap[codes], list(index)


def parse_times(texts: pd.Series, parse: Callable[[pd.Series], np.ndarray]) -> np.ndarray:
    """``parse(texts.str.strip())`` (``parse`` returns a datetime64 array, NaT for what it cannot read), stripping
    only the texts ``parse`` cannot read as they are."""
    values = parse(texts)
    missing = np.isnat(values)
    if missing.any():
        values[missing] = parse(texts[missing].str.strip())
    return values


class Chunk:
    """Rows of one block: their 1-based line numbers and their fields (columns by index in the header)."""

    def __init__(self, lines: np.ndarray, frame: pd.DataFrame, numeric: Sequence[int], data: bytes | None,
                 read: tuple[list[int], int]) -> None:
        self.lines = lines
        self._frame = frame
        self._numeric = set(numeric)  # the float64 columns of ``frame`` (the others are text)
        self._data = data  # the well-formed lines, to read again as text when a message needs a raw field
        self._read = read  # (columns, width) to read ``data`` again
        self._text: pd.DataFrame | None = None if numeric else frame

    def __len__(self) -> int:
        return int(self.lines.size)

    def text(self, column: int) -> pd.Series:
        """Raw fields of ``column`` as read (not stripped), index 0..n-1."""
        if column not in self._numeric:
            return self._frame[column]
        if self._text is None:
            columns, width = self._read
            self._text = _read_block(self._data or b"", columns, width, {})
        return self._text[column]

    def floats(self, column: int) -> np.ndarray:
        """``column`` as float64: parsed by pandas for a clean block, else as ``floats`` reads it (NaN if bad)."""
        if column in self._numeric:
            return self._frame[column].to_numpy(dtype=np.float64)
        return floats(self.text(column))


class TraceFile:
    """An open CSV trace file: ``header`` (its first record; ``None`` for an empty file) and its rows in chunks.

    ``.gz`` files are decompressed on the fly (line numbers unchanged); a UTF-8 byte-order mark is dropped.
    """

    def __init__(self, path: Path, problems: RowProblems, block_bytes: int | None = None) -> None:
        self.path = path
        self.problems = problems
        self.block_bytes = block_bytes or BLOCK_BYTES
        self.line = 0  # lines consumed so far
        self._stream: BinaryIO = gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")  # noqa: SIM115
        self._buffer = b""
        self._pos = 0
        self._eof = False
        self._names: list[str] = []
        try:
            self.header = self._read_header()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> TraceFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self._stream.close()

    def check_header(self, expected: Sequence[str]) -> None:
        """``TraceFormatError`` on line 1 unless the header names are ``expected`` (compared after stripping)."""
        if self.header is None or [name.strip() for name in self.header] != list(expected):
            got = "an empty file" if self.header is None else repr(",".join(self.header))
            raise TraceFormatError(str(self.path), 1, "header",
                                   f"expected the header {','.join(expected)!r}, got {got}")

    def chunks(self, names: Sequence[str], numeric: Sequence[int] = (), text: Sequence[int] = ()
               ) -> Iterator[Chunk]:
        """Data rows in chunks, with columns ``numeric`` (float64) and ``text`` (strings) by index in ``names``.

        ``names`` are the header's columns. Blank lines are ignored; a row with the wrong number of columns,
        or with bytes that are not UTF-8, goes to ``problems``. Fields are returned as read (not stripped).
        """
        self._names = list(names)
        wanted = sorted({*numeric, *text})
        while True:
            first = self.line + 1
            block = self._block()
            if not block:
                return
            yield self._parse(block, first, wanted, list(numeric))

    # --- reading lines and blocks ------------------------------------------------------------------------

    def _fill(self, size: int) -> None:
        """Read until ``size`` unread bytes are buffered (or the file ends)."""
        while len(self._buffer) - self._pos < size and not self._eof:
            try:
                more = self._stream.read(max(size, 1 << 16))
            except (OSError, EOFError) as exc:  # a damaged .gz file
                raise TraceFormatError(str(self.path), self.line + 1, "file",
                                       f"the file cannot be read past here: {exc}") from None
            if not more:
                self._eof = True
            self._buffer = self._buffer[self._pos:] + more
            self._pos = 0

    def _next_line(self) -> bytes:
        """The next line with its ``\\n`` (``b""`` at the end of the file)."""
        while True:
            end = self._buffer.find(b"\n", self._pos)
            if end >= 0 or self._eof:
                stop = end + 1 if end >= 0 else len(self._buffer)
                line = self._buffer[self._pos:stop]
                self._pos = stop
                self.line += bool(line)
                return line
            self._fill(len(self._buffer) - self._pos + (1 << 16))

    def _block(self) -> bytes:
        """About ``block_bytes`` of whole lines (``b""`` at the end of the file); ``line`` counts them."""
        self._fill(self.block_bytes)
        end = len(self._buffer) if self._eof else self._buffer.rfind(b"\n", self._pos) + 1
        while end <= self._pos and not self._eof:  # one line longer than a block
            self._fill(2 * (len(self._buffer) - self._pos))
            end = len(self._buffer) if self._eof else self._buffer.rfind(b"\n", self._pos) + 1
        block = self._buffer[self._pos:end]
        self._pos = end
        self.line += block.count(b"\n") + (bool(block) and not block.endswith(b"\n"))
        return block

    def _read_header(self) -> list[str] | None:
        first = self._next_line()
        if not first:
            return None
        if first.startswith(_BOM):
            first = first[len(_BOM):]
        try:
            text = first.decode("utf-8")
        except UnicodeDecodeError as exc:
            utf16 = " (it looks like UTF-16: save it as UTF-8)" if first.startswith(_UTF16_BOMS) else ""
            raise TraceFormatError(str(self.path), 1, "header", _not_utf8(first, exc.start) + utf16) from None
        reader = csv.reader(itertools.chain([text], self._more_lines("header")))
        try:
            return next(reader, None)
        except csv.Error as exc:
            raise TraceFormatError(str(self.path), reader.line_num, "header", f"not readable as CSV: {exc}") from None

    def _more_lines(self, field: str | None = None) -> Iterator[str]:
        """Lines after the current block, for a quoted field that runs on; decoded, counted in ``line``."""
        while line := self._next_line():
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TraceFormatError(str(self.path), self.line, field or COLUMNS_FIELD,
                                       _not_utf8(line, exc.start)) from None

    # --- parsing a block ---------------------------------------------------------------------------------

    def _parse(self, block: bytes, first: int, wanted: list[int], numeric: list[int]) -> Chunk:
        undecodable = [] if block.isascii() else self._undecodable(block, first)
        plain = b'"' not in block and b"\0" not in block and (
            b"\r" not in block or block.count(b"\r") == block.count(b"\r\n"))
        if plain:
            chunk = self._plain(block, first, undecodable, wanted, numeric)
            if chunk is not None:
                return chunk
        return self._quoted(block, first, undecodable, wanted)

    def _undecodable(self, block: bytes, first: int) -> list[int]:
        """Indices (0-based in ``block``) of lines that are not UTF-8; each is a problem."""
        try:
            str(block, "utf-8")
            return []
        except UnicodeDecodeError:
            pass
        bad: list[int] = []
        for index, line in enumerate(block.split(b"\n")):  # line by line: the error copies what it could not read
            try:
                str(line, "utf-8")
            except UnicodeDecodeError as exc:
                bad.append(index)
                self.problems.add(first + index, self._field_at(line, exc.start), _not_utf8(line, exc.start))
        return bad

    def _field_at(self, line: bytes, offset: int) -> str:
        """The column holding byte ``offset`` of an unquoted ``line`` (``columns`` when it cannot be told)."""
        before = line[:offset]
        index = before.count(b",")
        if b'"' in before or index >= len(self._names):
            return COLUMNS_FIELD
        return self._names[index]

    def _width_problem(self, line: int, fields: list[str]) -> None:
        width = len(self._names)
        self.problems.add(line, COLUMNS_FIELD, f"expected {width} columns ({','.join(self._names)}), "
                                               f"got {len(fields)}: {','.join(fields)!r}")

    def _plain(self, block: bytes, first: int, undecodable: list[int], wanted: list[int], numeric: list[int]
               ) -> Chunk | None:
        """A block without quotes: lines and field counts by numpy, well-formed lines parsed by pandas."""
        width = len(self._names)
        raw = np.frombuffer(block, dtype=np.uint8)
        ends = np.flatnonzero(raw == _NEWLINE)
        if not block.endswith(b"\n"):
            ends = np.append(ends, len(block))
        starts = np.concatenate(([0], ends[:-1] + 1))
        commas = np.flatnonzero(raw == _COMMA)
        fields = np.searchsorted(commas, ends) - np.searchsorted(commas, starts) + 1
        length = ends - starts
        length -= (length > 0) & (raw[np.maximum(ends - 1, 0)] == _CR)  # a \r before the \n ends the line too
        skip = length == 0  # blank lines are not rows
        skip[undecodable] = True
        good = ~skip & (fields == width)
        for index in np.flatnonzero(~skip & ~good).tolist():
            text = block[starts[index]:starts[index] + length[index]].decode("utf-8")
            self._width_problem(first + index, text.split(","))
        if good.all() or (good | (length == 0)).all():
            data = block
        else:  # drop the runs of bad lines
            edges = np.flatnonzero(np.diff(np.concatenate(([0], good.view(np.int8), [0]))))
            view = memoryview(block)
            data = b"".join(view[starts[lo]:ends[hi - 1] + 1] for lo, hi in zip(edges[::2], edges[1::2], strict=True))
        frame = None
        if numeric and not _has_booleans(data):
            try:
                frame = _read_block(data, wanted, width, dict.fromkeys(numeric, "float64"))
            except ValueError:  # a field pandas cannot read as a number: read text, check as Python would
                frame = None
        if frame is None:
            numeric = []
            frame = _read_block(data, wanted, width, {})
        lines = first + np.flatnonzero(good)
        if len(frame) != lines.size:  # pandas skipped what csv would not (a line of spaces in a 1-column file)
            return None
        return Chunk(lines.astype(np.int64), frame, numeric, data, (wanted, width))

    def _quoted(self, block: bytes, first: int, undecodable: list[int], wanted: list[int]) -> Chunk:
        """A block with quotes: read by the ``csv`` module, which may read on past it to end a quoted field."""
        width = len(self._names)
        lines = block.split(b"\n")
        if block.endswith(b"\n"):
            lines.pop()
        count = len(lines)
        for index in undecodable:
            lines[index] = b""  # reported already; a blank line keeps the numbering
        text = "\n".join(line.decode("utf-8") for line in lines) + ("\n" if block.endswith(b"\n") else "")
        reader = csv.reader(itertools.chain(io.StringIO(text), self._more_lines()))
        records: list[list[str]] = []
        numbers: list[int] = []
        try:
            for record in reader:
                if len(record) == width:
                    records.append(record)
                    numbers.append(first + reader.line_num - 1)
                elif record:
                    self._width_problem(first + reader.line_num - 1, record)
                if reader.line_num >= count:
                    break
        except csv.Error as exc:
            raise TraceFormatError(str(self.path), first + reader.line_num - 1, COLUMNS_FIELD,
                                   f"not readable as CSV: {exc}") from None
        frame = pd.DataFrame({i: pd.Series([record[i] for record in records], dtype=object) for i in wanted},
                             index=pd.RangeIndex(len(records)))
        return Chunk(np.asarray(numbers, dtype=np.int64), frame, (), None, (wanted, width))


def _has_booleans(data: bytes) -> bool:
    """Whether ``data`` holds true or false (any case), which pandas would read as 1.0 and 0.0 in a float column."""
    low = data.lower()
    return b"true" in low or b"false" in low


def _outside_level() -> int:
    """``stacklevel`` for a warning from the caller of this function's caller that lands outside this package."""
    frame, level = sys._getframe(1), 1
    while frame is not None and Path(frame.f_code.co_filename).resolve().parent == _HERE:
        frame, level = frame.f_back, level + 1
    return level


def _read_block(data: bytes, columns: list[int], width: int, dtypes: dict[int, object]) -> pd.DataFrame:
    """Lines of exactly ``width`` comma-separated fields and no quotes, by pandas' C reader (``str`` objects
    by default: faster than pandas' own string columns, and they last one chunk)."""
    return pd.read_csv(io.BytesIO(data), header=None, names=list(range(width)), usecols=columns,
                       dtype={i: dtypes.get(i, object) for i in columns}, na_filter=False, quoting=csv.QUOTE_NONE,
                       engine="c", encoding="utf-8", skip_blank_lines=True)


def _not_utf8(line: bytes, offset: int) -> str:
    character = len(line[:offset].decode("utf-8", errors="replace")) + 1
    return (f"not UTF-8: byte 0x{line[offset]:02x} at character {character} of the line; the file must be UTF-8 "
            f"(convert it, e.g. iconv -f latin1 -t utf-8)")

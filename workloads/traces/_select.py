"""Keeping trace rows while a file is read: the ``limit`` earliest in time, and the order check of a file
said to be in time order (which lets reading stop early)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workloads.errors import TraceFormatError
from workloads.traces._rows import Chunk, RowProblems


class KeptRows:
    """Rows kept so far as numpy columns, one of them ``time``; ``finish`` sorts them by time (ties: file order).

    With ``limit``, only the ``limit`` earliest are kept: the rest are dropped while reading, so no more than
    about twice ``limit`` rows are held at once. Each column grows in one buffer (doubling): the unused tail
    is never written, so it costs address space, not memory, and a buffer given up goes back to the system.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._columns: dict[str, np.ndarray] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, time: np.ndarray, **columns: np.ndarray) -> None:
        """Append rows (in file order); every column has one value per row."""
        n, more = self._count, int(time.size)
        for name, values in {"time": time, **columns}.items():
            buffer = self._columns.get(name)
            if buffer is None or buffer.size < n + more:
                grown = np.empty(max(2 * (n + more), 65_536), dtype=values.dtype if buffer is None else buffer.dtype)
                if buffer is not None:
                    grown[:n] = buffer[:n]
                self._columns[name] = buffer = grown
            buffer[n:n + more] = values
        self._count = n + more
        if self.limit is not None and self._count >= 2 * self.limit + 65_536:
            order = self._order()
            order.sort()  # keep file order while reading: later ties must still come after these rows
            for buffer in self._columns.values():
                buffer[:order.size] = buffer[:self._count][order]
            self._count = order.size

    def finish(self) -> dict[str, np.ndarray]:
        """All columns, sorted by ``time`` (stable), cut to ``limit`` rows; the buffers are released.

        A ``time`` column is always there (empty when nothing was kept).
        """
        if not self._columns:
            return {"time": np.empty(0)}
        if self._in_order():  # a time-ordered file: no sort, no gather
            order: slice | np.ndarray = slice(0, self._count if self.limit is None else min(self._count, self.limit))
        else:
            order = self._order()
        columns = {}
        for name in list(self._columns):  # one column at a time: its buffer goes as the sorted column comes
            values = self._columns.pop(name)[:self._count][order]
            columns[name] = values.copy() if isinstance(order, slice) else values  # a copy: not the whole buffer
        self._count = 0
        return columns

    def _in_order(self) -> bool:
        time = self._columns["time"][:self._count]
        return time.size < 2 or bool((time[1:] >= time[:-1]).all())

    def _order(self) -> np.ndarray:
        """Positions of the rows to keep, earliest first (ties: file order)."""
        order = np.argsort(self._columns["time"][:self._count], kind="stable")
        return order if self.limit is None else order[:self.limit]


class TimeOrder:
    """Checks, chunk by chunk, that the rows of a file said to be in time order are (ties allowed)."""

    def __init__(self, path: str, field: str) -> None:
        self.path = path
        self.field = field
        self._last: float | int | None = None
        self._last_line = 0

    def first_break(self, time: np.ndarray, valid: np.ndarray, lines: np.ndarray) -> int | None:
        """Index of the first valid row earlier than the valid row before it (``None``: all in order)."""
        index = np.flatnonzero(valid)
        if index.size == 0:
            return None
        values = time[index]
        back = np.flatnonzero(np.diff(values) < 0)
        if self._last is not None and values[0] < self._last:
            return int(index[0])
        if back.size:
            return int(index[back[0] + 1])
        self._last, self._last_line = values[-1].item(), int(lines[index[-1]])
        return None

    def error(self, valid: np.ndarray, lines: np.ndarray, at: int, raw: Sequence[str]) -> TraceFormatError:
        """The ``TraceFormatError`` for the row at index ``at`` (``raw``: the rows' time fields as read)."""
        before = np.flatnonzero(valid[:at])
        previous = f"line {int(lines[before[-1]])} ({raw[before[-1]]!r})" if before.size else f"line {self._last_line}"
        return TraceFormatError(self.path, int(lines[at]), self.field,
                                f"rows are not in time order: {raw[at]!r} comes after {previous}; "
                                f"load the file without time_ordered=True")


def cut_chunk(order: TimeOrder | None, problems: RowProblems, lines: np.ndarray, keep: np.ndarray,
              valid: np.ndarray, time: np.ndarray, limit: int | None, kept: int, past: np.ndarray | None,
              chunk: Chunk | None, time_column: int) -> tuple[np.ndarray, int | None]:
    """One chunk's rows to keep and the line to stop reading at (``None``: read on). In a time-ordered file
    (``order``), the chunk is cut at ``stop_line`` after checking the order up to there (the error quotes the
    time fields as read: ``chunk``'s column ``time_column``); the problems on lines not read are dropped, the
    earliest other raised."""
    stop = None
    if order is not None:
        stop = stop_line(lines, keep, limit, kept, past)
        at = order.first_break(time, valid, lines)
        if at is not None and (stop is None or lines[at] < stop):
            problems.check(before=int(lines[at]))
            assert chunk is not None, "a time order is checked on rows read from a file"
            raise order.error(valid, lines, at, chunk.text(time_column).tolist())
        if stop is not None:
            keep = keep & (lines < stop)
    problems.check(before=stop)
    return keep, stop


def stop_line(lines: np.ndarray, keep: np.ndarray, limit: int | None, kept: int, past: np.ndarray | None) -> int | None:
    """In a time-ordered file, the first line not to read: the one after the row that completes ``limit``
    (``kept`` rows are kept already, ``keep`` marks this chunk's), or the first row past the window's end
    (``past``); ``None`` to read on."""
    stops = []
    if past is not None and past.any():
        stops.append(int(lines[np.argmax(past)]))
    if limit is not None:
        rows = np.flatnonzero(keep)
        if rows.size >= limit - kept:
            stops.append(int(lines[rows[limit - kept - 1]]) + 1)
    return min(stops) if stops else None

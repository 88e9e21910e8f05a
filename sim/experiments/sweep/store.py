"""A sweep's results directory: a manifest, one status record and one shard per table for every finished
point, each written atomically (a temporary file in the same directory, then ``os.replace``).

Layout::

    DIR/manifest.json              the sweep: resolved base config, grid, seeds, root seed, tables, code version
    DIR/points/<point>.json        a point's status (ok / failed / died), attempts, error, wall-clock timing and
                                   the size of each shard; written after the point's shards, so "ok" means its
                                   shards are complete
    DIR/tables/<table>/<point>.parquet (or .csv when pyarrow is missing)
    DIR/.lock                      held by the process writing the directory

Files whose name starts with a dot are never read; temporary files left by a killed writer are removed by
the next writer, and by readers when no writer holds the lock. A point recorded ok whose shard is missing or
not the size it was written with (or whose record cannot be read) is ``damaged``: readers leave it out and
name the file, and the next run computes it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import pandas as pd

from sim.experiments.sweep.errors import SweepError

MANIFEST = "manifest.json"
POINTS = "points"
TABLES = "tables"
LOCK = ".lock"
FORMAT = "gpusim-sweep/1"
IDENTITY = ("base_config", "grid", "root_seed", "tables")
"""Manifest fields that define a sweep; the number of seeds may change (more seeds add replications)."""
CSV_HEADER = "#gpusim-dtypes "
_ROUND_TRIP = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
"""pandas 3 reads floats round-trip by default (and deprecates the option); pandas 2 needs asking."""


def default_format() -> str:
    """``parquet`` when pyarrow is importable, else ``csv``."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return "csv"
    return "parquet"


class Store:
    """Reads and writes one sweep's results directory."""

    def __init__(self, directory: str | Path, manifest: Mapping[str, Any]) -> None:
        self.directory = Path(directory)
        self.manifest = dict(manifest)
        self.format: str = self.manifest["storage"]
        self._locked = False
        self._check_format()

    def _check_format(self) -> None:
        if self.format == "parquet" and default_format() != "parquet":
            raise SweepError(f"the sweep in {str(self.directory)!r} stores Parquet shards, and pyarrow is not "
                             f"installed: pip install 'gpusim[parquet]' (or pyarrow)")

    # ---- opening ----------------------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: str | Path) -> Store:
        """A store to read an existing sweep directory."""
        path = Path(directory)
        manifest = read_manifest(path)
        if manifest is None:
            raise SweepError(f"{str(path)!r} holds no sweep (no {MANIFEST}); give the directory a sweep wrote "
                             f"(gpusim sweep ... -o DIR)")
        store = cls(path, manifest)
        if _lock_holder(path / LOCK) is None:
            store.clean_temporary()
        return store

    @classmethod
    def create(cls, directory: str | Path, manifest: Mapping[str, Any], *, overwrite: bool = False) -> Store:
        """Take the directory for writing ``manifest``'s sweep: new, empty, or holding the same sweep (resumed);
        a different sweep there is an error unless ``overwrite`` (its results are deleted). Holds the lock
        until ``close``."""
        path = Path(directory)
        if path.exists() and not path.is_dir():
            raise SweepError(f"results directory {str(path)!r} is a file, not a directory")
        path.mkdir(parents=True, exist_ok=True)
        manifest = dict(manifest)
        store = cls(path, manifest)
        store._lock()
        try:
            old = read_manifest(path)
            if old is None:
                stray = [p.name for p in path.iterdir() if not p.name.startswith(".")]
                if stray:
                    raise SweepError(f"results directory {str(path)!r} is not empty and holds no sweep (no {MANIFEST}; "
                                     f"found {', '.join(sorted(stray)[:5])}); give a new or empty directory")
            elif overwrite:
                store.delete_results()
            else:
                differ = [key for key in IDENTITY if _canonical(old.get(key)) != _canonical(manifest.get(key))]
                if differ:
                    raise SweepError(
                        f"results directory {str(path)!r} holds a different sweep (its {', '.join(differ)} "
                        f"differ{'s' if len(differ) == 1 else ''}); give another directory, or overwrite=True "
                        f"(gpusim sweep --overwrite) to delete its results and start over")
                manifest["storage"] = old["storage"]  # a resumed sweep keeps its shard format
                manifest["created"] = old.get("created", manifest.get("created"))
            store.manifest, store.format = manifest, manifest["storage"]
            store._check_format()
            store.clean_temporary()
            (path / POINTS).mkdir(exist_ok=True)
            (path / TABLES).mkdir(exist_ok=True)
            atomic_write(path / MANIFEST, lambda fh: fh.write(json.dumps(manifest, indent=2) + "\n"))
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        """Release the lock (a writer's)."""
        if self._locked:
            with contextlib.suppress(OSError):
                (self.directory / LOCK).unlink()
            self._locked = False

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _lock(self) -> None:
        lock = self.directory / LOCK
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        for _ in range(3):
            fd, tmp = tempfile.mkstemp(prefix=".lock.", suffix=".tmp", dir=self.directory)
            with os.fdopen(fd, "w") as fh:
                fh.write(record)
            try:
                _link(tmp, lock)  # atomic: fails when another writer holds the lock
                self._locked = True
                return
            except FileExistsError:
                holder = _lock_holder(lock)
                if holder is not None:
                    raise SweepError(
                        f"another sweep (pid {holder.get('pid')} on {holder.get('host')}) is writing to "
                        f"{str(self.directory)!r}; wait for it to finish or stop it (if none is running, delete "
                        f"{str(lock)!r})") from None
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()  # left by a writer that was killed
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        raise SweepError(f"could not take the lock {str(lock)!r}")

    def delete_results(self) -> None:
        """Remove the manifest, status records and shards (and nothing else)."""
        for name in (POINTS, TABLES, "report"):
            shutil.rmtree(self.directory / name, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (self.directory / MANIFEST).unlink()

    def clean_temporary(self) -> list[Path]:
        """Delete temporary files a killed writer left behind; returns them."""
        removed = []
        folders = [self.directory, self.directory / POINTS]
        if (self.directory / TABLES).is_dir():
            folders += [p for p in (self.directory / TABLES).iterdir() if p.is_dir()]
        for folder in folders:
            if folder.is_dir():
                for path in folder.glob(".*.tmp"):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        removed.append(path)
        return removed

    # ---- points -----------------------------------------------------------------------------------------

    def statuses(self) -> dict[str, dict[str, Any]]:
        """Status record of every point that has one, by point id. A record that cannot be read, and an ok one
        whose shards are not as written (``check_shards``), come back with status ``damaged`` and the problems,
        each naming its file, under ``damage``: the point runs again."""
        out: dict[str, dict[str, Any]] = {}
        folder = self.directory / POINTS
        if not folder.is_dir():
            return out
        for path in sorted(folder.glob("*.json")):
            if path.name.startswith("."):
                continue
            try:
                record = json.loads(path.read_text())
                if not isinstance(record, dict):
                    raise ValueError(f"a JSON {type(record).__name__}, not an object")
            except (OSError, ValueError) as exc:
                out[path.stem] = {"status": "damaged", "damage": [f"{path}: unreadable status record ({exc})"]}
                continue
            if record.get("status") == "ok":
                damage = self.check_shards(path.stem, record)
                if damage:
                    record = {**record, "status": "damaged", "damage": damage}
            out[path.stem] = record
        return out

    def check_shards(self, point_id: str, record: Mapping[str, Any]) -> list[str]:
        """What is wrong with an ok point's shards, one problem per file naming it (empty: nothing): missing,
        or not the size recorded when written. Records written before sizes were kept: a whole-file check
        (Parquet's magic bytes at both ends; CSV's dtype header and last newline)."""
        sizes = record.get("shards")
        names = list(sizes) if isinstance(sizes, dict) else list(record.get("tables") or ["summary"])
        problems = []
        for name in names:
            path = self.shard_path(name, point_id)
            try:
                size = path.stat().st_size
            except OSError:
                problems.append(f"{path}: missing")
                continue
            if isinstance(sizes, dict):
                if size != sizes[name]:
                    problems.append(f"{path}: {size} bytes, written with {sizes[name]} (truncated or overwritten)")
            elif not self._whole(path, size):
                problems.append(f"{path}: truncated or not a {self.format} shard")
        return problems

    def _whole(self, path: Path, size: int) -> bool:
        try:
            with open(path, "rb") as fh:
                head = fh.readline(1 << 20) if self.format == "csv" else fh.read(4)
                fh.seek(max(0, size - 4))
                tail = fh.read(4)
        except OSError:
            return False
        if self.format == "parquet":
            return size >= 12 and head == tail == b"PAR1"
        if not head.startswith(CSV_HEADER.encode()) or not tail.endswith(b"\n"):
            return False
        try:
            json.loads(head[len(CSV_HEADER):])
        except ValueError:
            return False
        return True

    def write_point(self, point_id: str, tables: Mapping[str, pd.DataFrame], status: Mapping[str, Any]) -> None:
        """Write a point's shards, then its status record with each shard's size (the record last: it marks the
        shards complete)."""
        root = self.directory / TABLES
        for folder in root.iterdir() if root.is_dir() else ():
            if folder.name not in tables:  # a shard an interrupted earlier attempt left, now stale
                with contextlib.suppress(FileNotFoundError):
                    (folder / f"{point_id}.{self.format}").unlink()
        sizes = {}
        for name, table in tables.items():
            path = self.shard_path(name, point_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.write_table(path, table)
            sizes[name] = path.stat().st_size
        record = json.dumps({**status, "shards": sizes}, indent=1, default=str) + "\n"
        atomic_write(self.directory / POINTS / f"{point_id}.json", lambda fh: fh.write(record))

    def write_table(self, path: Path, table: pd.DataFrame) -> None:
        if self.format == "parquet":
            atomic_write(path, lambda fh: table.to_parquet(fh, index=False), binary=True)
        else:
            atomic_write(path, lambda fh: write_csv(table, fh))

    def shard_path(self, name: str, point_id: str) -> Path:
        """Where a point's shard of table ``name`` is."""
        return self.directory / TABLES / name / f"{point_id}.{self.format}"

    def read_table(self, name: str, point_id: str) -> pd.DataFrame | None:
        """A point's shard of table ``name``, or None when it has none; a shard that cannot be read is a
        ``SweepError`` naming the file."""
        path = self.shard_path(name, point_id)
        if not path.is_file():
            return None
        try:
            return pd.read_parquet(path) if self.format == "parquet" else read_csv(path)
        except Exception as exc:
            raise SweepError(f"{str(path)!r} cannot be read ({type(exc).__name__}: {exc}): the result of point "
                             f"{point_id} is damaged; delete the file and run the sweep again to compute the point "
                             f"again") from exc


def read_manifest(directory: Path) -> dict[str, Any] | None:
    path = directory / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SweepError(f"{str(path)!r} cannot be read as JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SweepError(f"{str(path)!r} is not a gpusim sweep manifest (expected format {FORMAT!r})")
    return manifest


def _canonical(value: Any) -> str:
    """JSON text that compares equal for equal data, keeping mapping order (a grid's key order names points)."""
    return json.dumps(value, default=str)


def _lock_holder(lock: Path) -> dict[str, Any] | None:
    """The live writer holding ``lock``, or None when there is no lock or its writer is gone."""
    try:
        holder = json.loads(lock.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # unreadable: cannot belong to a live writer (the lock is linked complete)
    if holder.get("host") != socket.gethostname():
        return holder  # another machine: cannot check, assume alive
    return holder if _pid_alive(int(holder.get("pid", -1))) else None


def _link(source: str, target: Path) -> None:
    """Create ``target`` with ``source``'s content, failing with ``FileExistsError`` if it exists: a hard link,
    or on a file system without them an exclusive create (not atomic in content, but exclusive)."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError:
        fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        with os.fdopen(fd, "w") as fh:
            fh.write(Path(source).read_text())


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid() or os.name == "nt":  # Windows: os.kill would end the process, so assume it lives
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def atomic_write(path: Path, write: Callable[[IO[Any]], Any], *, binary: bool = False) -> None:
    """Write ``path`` through a temporary file in the same directory and ``os.replace``: readers see the old
    file or the whole new one, never a torn one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_csv(table: pd.DataFrame, fh: IO[str]) -> None:
    """CSV whose first line records the column dtypes; floats in shortest round-trip form."""
    dtypes = {str(column): str(dtype) for column, dtype in table.dtypes.items()}
    fh.write(CSV_HEADER + json.dumps(dtypes) + "\n")
    table.to_csv(fh, index=False, lineterminator="\n")


def read_csv(path: Path) -> pd.DataFrame:
    """Read what ``write_csv`` wrote, with the same dtypes and bit-identical floats."""
    with open(path, encoding="utf-8", newline="") as fh:
        header = fh.readline()
        if not header.startswith(CSV_HEADER):
            raise SweepError(f"{str(path)!r} is not a gpusim sweep shard (no dtype header)")
        dtypes: dict[str, str] = json.loads(header[len(CSV_HEADER):])
        numeric = [c for c, d in dtypes.items() if d.lower().startswith(("float", "int", "uint"))]
        read_as = {c: "float64" if d.startswith("float") else str for c, d in dtypes.items()
                   if d.startswith("float") or d in ("object", "str", "string")}
        missing = {c: ["", "NaN", "nan"] for c in numeric}
        table = pd.read_csv(fh, dtype=read_as, keep_default_na=False, na_values=missing, **_ROUND_TRIP)
    if list(table.columns) != list(dtypes):
        raise SweepError(f"{str(path)!r}: its columns do not match its dtype header")
    for column, dtype in dtypes.items():
        if str(table[column].dtype) != dtype:
            table[column] = table[column].astype(dtype)
    return table


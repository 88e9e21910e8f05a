"""Columnar copies of bundled trace files: a file's parsed and checked columns in an ``.npz`` beside it
(``philly_jobs.csv.gz`` -> ``philly_jobs.columns.npz``), read in milliseconds where parsing the CSV takes a
tenth of a second.

A copy records the SHA-256 of the file it was made from and is used only while that file is unchanged: a copy
that is missing, unreadable, of another format version or made from other bytes is ignored (the loader parses
the file). The copies are derived data, shipped under the licence and attribution of their source
(``workloads/data/ATTRIBUTION.md``). ``python -m workloads.traces.rebuild`` writes them again; a test checks
that each copy holds what parsing its source gives.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

#: Format version of the copies; a copy of another version is ignored.
VERSION = 1
SUFFIX = ".columns.npz"
_DIGEST, _VERSION = "_source_sha256", "_version"
_STAMP = (1980, 1, 1, 0, 0, 0)  # every member's time in the zip, so the same columns give the same bytes


def copy_path(source: Path) -> Path:
    """Where the columnar copy of ``source`` lives: ``name.csv.gz`` -> ``name.columns.npz`` in the same folder."""
    name = source.name.removesuffix(".gz").removesuffix(".csv")
    return source.with_name(name + SUFFIX)


def digest(source: Path) -> str:
    """SHA-256 of the file's bytes (hex)."""
    return hashlib.sha256(source.read_bytes()).hexdigest()


def write_copy(source: Path, columns: Mapping[str, np.ndarray]) -> Path:
    """Write ``columns`` (name -> 1-d array) as the copy of ``source``; integer columns are stored in the smallest
    type that holds their values (``read_copy`` widens them again). Returns the copy's path."""
    target = copy_path(source)
    arrays = {name: _narrow(np.asarray(values)) for name, values in columns.items()}
    arrays[_DIGEST] = np.array(digest(source))
    arrays[_VERSION] = np.array(VERSION, dtype=np.int64)
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(partial, "w") as archive:
        for name, values in arrays.items():
            data = io.BytesIO()
            np.lib.format.write_array(data, values, allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_STAMP), data.getvalue(),
                             compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    os.replace(partial, target)
    return target


def read_copy(source: Path, dtypes: Mapping[str, np.dtype | type]) -> dict[str, np.ndarray] | None:
    """The columns named in ``dtypes`` (as those types) from the copy of ``source``; ``None`` when there is no
    usable copy: missing, unreadable, another version, made from other bytes, or without one of the columns."""
    path = copy_path(source)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            if int(stored[_VERSION]) != VERSION or str(stored[_DIGEST]) != digest(source):
                return None
            return {name: stored[name].astype(dtype, copy=False) for name, dtype in dtypes.items()}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def _narrow(values: np.ndarray) -> np.ndarray:
    """Integers in the smallest signed type that holds them (exactly); anything else as it is."""
    if values.dtype.kind not in "iu" or values.size == 0:
        return values
    lo, hi = int(values.min()), int(values.max())
    for kind in (np.int8, np.int16, np.int32, np.int64):
        if np.iinfo(kind).min <= lo and hi <= np.iinfo(kind).max:
            return values.astype(kind)
    return values

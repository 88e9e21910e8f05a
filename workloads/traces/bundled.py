"""Where the trace files shipped with the package live (see ``workloads/data/ATTRIBUTION.md``)."""

from __future__ import annotations

from pathlib import Path

from workloads._names import unknown_name

#: Directory of the bundled data files.
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
_COPY_SUFFIX = ".columns.npz"  # workloads.traces.columnar.SUFFIX (which imports nothing from here)


def bundled_files() -> list[str]:
    """Names of the bundled data files (not the attribution, nor the columnar copies of some of them, which are
    read in their place: ``workloads.traces.columnar``)."""
    return sorted(p.name for p in DATA_DIR.iterdir()
                  if p.is_file() and p.suffix != ".md" and not p.name.endswith(_COPY_SUFFIX))


def bundled_path(name: str) -> Path:
    """Path of the bundled data file ``name`` (``philly_jobs.csv`` also finds ``philly_jobs.csv.gz``)."""
    if Path(name).name != name:
        raise unknown_name("bundled data file", name, bundled_files())
    for candidate in (name, f"{name}.gz"):
        path = DATA_DIR / candidate
        if path.is_file():
            return path
    raise unknown_name("bundled data file", name, bundled_files())

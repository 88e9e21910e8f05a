"""Where the trace files shipped with the package live (see ``workloads/data/ATTRIBUTION.md``)."""

from __future__ import annotations

from pathlib import Path

from workloads._names import unknown_name

#: Directory of the bundled data files.
DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def bundled_files() -> list[str]:
    """Names of the bundled data files."""
    return sorted(p.name for p in DATA_DIR.iterdir() if p.is_file() and p.suffix != ".md")


def bundled_path(name: str) -> Path:
    """Path of the bundled data file ``name`` (``philly_jobs.csv`` also finds ``philly_jobs.csv.gz``)."""
    if Path(name).name != name:
        raise unknown_name("bundled data file", name, bundled_files())
    for candidate in (name, f"{name}.gz"):
        path = DATA_DIR / candidate
        if path.is_file():
            return path
    raise unknown_name("bundled data file", name, bundled_files())

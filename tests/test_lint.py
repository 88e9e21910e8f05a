"""The code stays ruff clean (config in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workloads_import_nothing_of_sim_or_policies() -> None:
    """Arrows go one way: policies -> sim -> workloads."""
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "workloads").rglob("*.py")
                 if any(line.lstrip().startswith(("import sim", "from sim", "import policies", "from policies"))
                        for line in p.read_text().splitlines())]
    assert not offenders, offenders


def test_sim_imports_no_concrete_policy() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "sim").rglob("*.py")
                 if any(line.lstrip().startswith(("import policies", "from policies"))
                        for line in p.read_text().splitlines())]
    assert not offenders, offenders

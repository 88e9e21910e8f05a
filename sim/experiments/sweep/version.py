"""The code version a sweep records: the package version and, in a git checkout, the commit."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import sim

GIT_TIMEOUT = 5.0


@lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """``{"gpusim": "0.1.0", "git_commit": SHA | None, "git_dirty": bool | None}``; the git fields only when
    the package is imported from the root of a git work tree (never another repository it is installed in)."""
    try:
        package = version("gpusim")
    except PackageNotFoundError:
        package = None
    root = Path(sim.__file__).resolve().parent.parent
    top = _git(root, "rev-parse", "--show-toplevel")
    commit = dirty = None
    if top is not None and Path(top).resolve() == root:
        commit = _git(root, "rev-parse", "HEAD")
        status = _git(root, "status", "--porcelain", "--untracked-files=no")
        dirty = None if status is None else bool(status)
    return {"gpusim": package, "git_commit": commit, "git_dirty": dirty}


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT,
                              check=True, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()

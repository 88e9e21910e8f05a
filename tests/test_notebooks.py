"""Every notebook in notebooks/ runs top to bottom (in its small test mode) and is committed without outputs."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError
from traitlets import default

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class ThisInterpreterKernelManager(AsyncKernelManager):
    """Always starts ipykernel's own ``python3`` kernel, which runs ``sys.executable``: a ``python3``
    kernelspec installed elsewhere (the user's or the system's Jupyter data dirs) cannot swap in
    another Python that lacks this checkout's packages."""

    @default("kernel_spec_manager")
    def _kernel_spec_manager_default(self) -> KernelSpecManager:
        return KernelSpecManager(kernel_dirs=[])


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel inherits this process's environment: small mode (each notebook shrinks its workload)
    # and a non-interactive matplotlib backend.
    monkeypatch.setenv("GPUSIM_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, kernel_name="python3", kernel_manager_class=ThisInterpreterKernelManager, timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError) as exc:
        index = next((i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and any(
            out.get("output_type") == "error" for out in cell.get("outputs", []))), None)
        where = f"cell {index}" if index is not None else "a cell (timed out?)"
        pytest.fail(f"{path.name}: {where} failed\n{_ANSI.sub('', str(exc))}", pytrace=False)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    stored = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and (
        cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not stored, (
        f"{path.name}: code cells {stored} carry outputs or execution counts; clear them before committing "
        "(e.g. `jupyter nbconvert --clear-output --inplace`) so diffs stay clean")

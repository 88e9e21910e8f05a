"""Every notebook in notebooks/ runs top to bottom (in its small test mode), and is committed with the outputs of a
full-mode run of its current code by tools/execute_notebooks.py; docs/images/ holds the figures of those outputs.

The full runs take minutes, so the tests do not repeat them: each code cell stores the hash of the source its outputs
came from, and an edited cell (or an added, removed or moved one) whose notebook was not run again fails here.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _load_script():
    spec = importlib.util.spec_from_file_location("execute_notebooks", ROOT / "tools" / "execute_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


script = _load_script()
RERUN = "run `.venv/bin/python tools/execute_notebooks.py {}` (full mode, minutes); commit it and docs/images/"


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def _rerun(path: Path) -> str:
    return RERUN.format(path.relative_to(ROOT))


def _pngs(cell: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.outputs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path: Path) -> None:
    # The kernel gets the script's environment in small mode (each notebook shrinks its workload): this interpreter,
    # matplotlib's inline backend (figures become outputs), fixed string hashing.
    committed = nbformat.read(path, as_version=4)
    nb = nbformat.read(path, as_version=4)
    for _, cell in script.code_cells(nb):
        cell.outputs, cell.execution_count = [], None
    client = NotebookClient(
        nb, kernel_name="python3", kernel_manager_class=script.ThisInterpreterKernelManager, timeout=CELL_TIMEOUT_S,
        extra_arguments=["--IPKernelApp.log_level=ERROR"], resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute(env=script.kernel_environment(small=True))
    except (CellExecutionError, CellTimeoutError) as exc:
        index = next((i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and any(
            out.get("output_type") == "error" for out in cell.get("outputs", []))), None)
        where = f"cell {index}" if index is not None else "a cell (timed out?)"
        pytest.fail(f"{path.name}: {where} failed\n{_ANSI.sub('', str(exc))}", pytrace=False)
    # What a cell prints, shows or draws in small mode it does in full mode too: the committed outputs must hold it.
    pairs = list(zip(script.code_cells(nb), script.code_cells(committed), strict=True))
    missing = [i for (i, ran), (_, stored) in pairs if ran.outputs and not stored.outputs]
    assert not missing, f"{path.name}: code cells {missing} have no committed outputs; {_rerun(path)}"
    figures = [i for (i, ran), (_, stored) in pairs if _pngs(ran) != _pngs(stored)]
    assert not figures, f"{path.name}: code cells {figures} draw other figures than committed; {_rerun(path)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_committed_with_current_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    problems = script.problems(nb, path.name)
    assert not problems, "\n".join(problems) + f"\n{_rerun(path)}"
    volatile = [i for i, cell in enumerate(nb.cells) if "execution" in cell.metadata]
    assert not volatile, f"{path.name}: cells {volatile} store execution timings; {_rerun(path)}"


@pytest.mark.parametrize("image", sorted(script.FIGURES))
def test_docs_image_is_the_committed_notebook_figure(image: str) -> None:
    notebook = NOTEBOOKS_DIR / script.FIGURES[image]
    expected = script.figure_png(nbformat.read(notebook, as_version=4), image)
    target = ROOT / "docs" / "images" / image
    assert target.is_file(), f"docs/images/{image} is missing; {_rerun(notebook)}"
    data = target.read_bytes()
    assert data.startswith(script.PNG_SIGNATURE), f"docs/images/{image} is not a PNG"
    if data != expected:
        pytest.fail(f"docs/images/{image} is not the figure in {notebook.name}'s outputs; {_rerun(notebook)}",
                    pytrace=False)


def test_docs_images_tags_are_listed() -> None:
    """A cell tagged docs/images/NAME.png is exported by the script: NAME.png is in its FIGURES, for that notebook."""
    tagged = {tag.removeprefix("docs/images/"): path.name for path in NOTEBOOKS
              for cell in nbformat.read(path, as_version=4).cells
              for tag in cell.metadata.get("tags", []) if tag.startswith("docs/images/")}
    assert tagged == script.FIGURES

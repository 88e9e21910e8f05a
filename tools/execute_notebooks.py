"""Execute the notebooks in full mode, in place, and export the README's figures to docs/images/.

    .venv/bin/python tools/execute_notebooks.py                       # every notebook (a few minutes)
    .venv/bin/python tools/execute_notebooks.py notebooks/02_*.ipynb  # some of them
    .venv/bin/python tools/execute_notebooks.py --small --out /tmp/nb # a quick try, written elsewhere

The notebooks are committed with their outputs so that a reader browsing the repository sees the figures. Each
run of this script gives the same bytes, apart from the wall-clock times the notebooks print: the kernel runs this
interpreter with ``PYTHONHASHSEED=0`` and matplotlib's inline backend, execution timings and kernel details are
not stored, memory addresses and pandas Styler ids in outputs are replaced by fixed ones and paths in this checkout
(in warnings) made relative to it.

Every code cell records the hash of the source its outputs came from (cell metadata ``gpusim.source_sha256``), the
notebook the hash of all its code (``gpusim.sources_sha256``); ``tests/test_notebooks.py`` fails when a cell was
edited since (run this script again) and checks that ``docs/images/`` holds the figures of the committed outputs.

A cell whose figure goes to ``docs/images/NAME.png`` carries the tag ``docs/images/NAME.png``; ``FIGURES`` lists
them. The image is the cell's PNG output itself (matplotlib's inline backend, 100 dpi, tight bounding box).
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from traitlets import default

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
IMAGES_DIR = ROOT / "docs" / "images"
SCRIPT = "tools/execute_notebooks.py"
KEY = "gpusim"  # the metadata namespace of this script, in the notebook and in each code cell
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: docs/images/<name> -> the notebook whose cell tagged ``docs/images/<name>`` draws it (one PNG output).
FIGURES = {
    "policies_jct_cdf.png": "01_compare_policies.ipynb",
    "burstiness_ttft.png": "02_inference_and_colocation.ipynb",
    "colocation_tradeoff.png": "02_inference_and_colocation.ipynb",
    "training_vs_serving.png": "04_compute_consumption.ipynb",
}

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")        # <pandas.io.formats.style.Styler at 0x7f...>
_STYLER_ID = re.compile(r"\bT_([0-9a-f]{5})(?=[_\"' ])")  # Styler's random uuid in ids and CSS selectors


class ThisInterpreterKernelManager(AsyncKernelManager):
    """Always starts ipykernel's own ``python3`` kernel, which runs ``sys.executable``: a ``python3``
    kernelspec installed elsewhere (the user's or the system's Jupyter data dirs) cannot swap in
    another Python that lacks this checkout's packages."""

    @default("kernel_spec_manager")
    def _kernel_spec_manager_default(self) -> KernelSpecManager:
        return KernelSpecManager(kernel_dirs=[])


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def code_cells(nb: nbformat.NotebookNode) -> list[tuple[int, nbformat.NotebookNode]]:
    return [(i, cell) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]


def sources_hash(nb: nbformat.NotebookNode) -> str:
    """One hash of every code cell's source, in order: catches a deleted or moved cell."""
    return source_hash("\0".join(cell.source for _, cell in code_cells(nb)))


def kernel_environment(small: bool) -> dict[str, str]:
    """The environment the kernel inherits: full or small mode, the inline backend, fixed string hashing."""
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # ipykernel then picks matplotlib's inline backend: figures become outputs
    env.pop("GPUSIM_NOTEBOOK_SMALL", None)
    if small:
        env["GPUSIM_NOTEBOOK_SMALL"] = "1"
    env["PYTHONHASHSEED"] = "0"
    return env


def execute(path: Path, *, small: bool = False, timeout: float | None = None) -> nbformat.NotebookNode:
    """``path`` executed top to bottom (raises ``CellExecutionError`` on an error), normalized and stamped."""
    nb = nbformat.read(path, as_version=4)
    metadata = copy.deepcopy(nb.metadata)
    for _, cell in code_cells(nb):
        cell.outputs, cell.execution_count = [], None
    NotebookClient(nb, kernel_name="python3", kernel_manager_class=ThisInterpreterKernelManager, timeout=timeout,
                   record_timing=False, coalesce_streams=True, extra_arguments=["--IPKernelApp.log_level=ERROR"],
                   resources={"metadata": {"path": str(path.parent)}}).execute(env=kernel_environment(small))
    nb.metadata = metadata  # nbclient writes the kernel's language_info (Python version ...): keep the stored one
    normalize(nb, path.name)
    nb.metadata[KEY] = {"executed_by": SCRIPT, "small": small, "sources_sha256": sources_hash(nb)}
    return nb


def _relative(text: str) -> str:
    """Paths inside this checkout (in warnings, tracebacks) relative to it: the same in every clone."""
    return text.replace(f"{ROOT}{os.sep}", "")


def normalize(nb: nbformat.NotebookNode, name: str) -> None:
    """Strips what changes from run to run but the outputs' meaning: timings, addresses, random element ids, the
    checkout's location."""
    for index, cell in code_cells(nb):
        cell.metadata.pop("execution", None)
        cell.metadata[KEY] = {"source_sha256": source_hash(cell.source)}
        for number, output in enumerate(cell.outputs):
            if output.get("output_type") == "stream":
                output["text"] = _ADDRESS.sub(">", _relative(output["text"]))
                continue
            data = output.get("data", {})
            for mime, value in data.items():
                if not isinstance(value, str) or not mime.startswith("text/"):
                    continue
                value = _ADDRESS.sub(">", _relative(value))
                ids: dict[str, str] = {}
                for uuid in _STYLER_ID.findall(value):
                    ids.setdefault(uuid, source_hash(f"{name}:{index}:{number}:{len(ids)}")[:5])
                data[mime] = _STYLER_ID.sub(lambda m, ids=ids: f"T_{ids[m.group(1)]}", value)


def problems(nb: nbformat.NotebookNode, name: str) -> list[str]:
    """Why the stored outputs of ``nb`` are not those this script makes of its current sources (empty if they are)."""
    stamp = nb.metadata.get(KEY, {})
    if stamp.get("executed_by") != SCRIPT:
        return [f"{name} was not executed by {SCRIPT}"]
    found = []
    if stamp.get("small", True):
        found.append(f"{name} holds small-mode outputs (GPUSIM_NOTEBOOK_SMALL=1); the committed ones are full mode")
    edited = [i for i, cell in code_cells(nb) if cell.metadata.get(KEY, {}).get("source_sha256")
              != source_hash(cell.source)]
    if edited:
        found.append(f"{name}: code cells {edited} changed (or are new) since their outputs were made")
    elif stamp.get("sources_sha256") != sources_hash(nb):
        found.append(f"{name}: code cells were added, removed or moved since the outputs were made")
    counts = [cell.execution_count for _, cell in code_cells(nb) if cell.source.strip()]
    if counts != list(range(1, len(counts) + 1)):
        found.append(f"{name}: execution counts {counts} are not one run from top to bottom")
    errors = [i for i, cell in code_cells(nb) if any(o.get("output_type") == "error" for o in cell.outputs)]
    if errors:
        found.append(f"{name}: code cells {errors} hold errors")
    return found


def figure_png(nb: nbformat.NotebookNode, image: str) -> bytes:
    """The PNG output of the one cell tagged ``docs/images/<image>`` (a ``ValueError`` if not exactly one)."""
    tag = f"docs/images/{image}"
    cells = [cell for cell in nb.cells if tag in cell.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{len(cells)} cells are tagged {tag!r}; expected one")
    pngs = [o["data"]["image/png"] for o in cells[0].get("outputs", []) if "image/png" in o.get("data", {})]
    if len(pngs) != 1:
        raise ValueError(f"the cell tagged {tag!r} has {len(pngs)} PNG outputs; expected one")
    return base64.b64decode(pngs[0])


def write_figures(notebooks_dir: Path, images_dir: Path, notebooks: set[str] | None = None) -> list[Path]:
    """Writes the ``FIGURES`` of ``notebooks`` (default: all) from their outputs in ``notebooks_dir``."""
    images_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for image, notebook in FIGURES.items():
        if notebooks is not None and notebook not in notebooks:
            continue
        target = images_dir / image
        target.write_bytes(figure_png(nbformat.read(notebooks_dir / notebook, as_version=4), image))
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to execute (default: notebooks/*.ipynb)")
    parser.add_argument("--small", action="store_true",
                        help="small mode (GPUSIM_NOTEBOOK_SMALL=1), for a quick try; needs --out")
    parser.add_argument("--out", type=Path, help="write the notebooks and images/ here instead of in place")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per cell (default 3600)")
    args = parser.parse_args(argv)
    if args.small and args.out is None:
        parser.error("--small outputs are not for committing: give --out DIR")
    paths = [p.resolve() for p in args.notebooks] or sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
    notebooks_dir = args.out or NOTEBOOKS_DIR
    notebooks_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for path in paths:
        began = time.perf_counter()
        print(f"{path.name} ...", end=" ", flush=True)
        nb = execute(path, small=args.small, timeout=args.timeout)
        nbformat.validate(nb)
        nbformat.write(nb, notebooks_dir / path.name)
        print(f"{time.perf_counter() - began:.0f} s", flush=True)
    # In place, every figure is rewritten from the notebooks as they now are; with --out, those of the notebooks run.
    if args.out is None:
        images = write_figures(NOTEBOOKS_DIR, IMAGES_DIR)
    else:
        images = write_figures(args.out, args.out / "images", {path.name for path in paths})
    print(f"{len(paths)} notebook(s) in {time.perf_counter() - started:.0f} s; figures: "
          + ", ".join(str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p) for p in images))
    return 0


if __name__ == "__main__":
    sys.exit(main())

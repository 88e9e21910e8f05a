"""The main guard a process pool needs: workers started with spawn or forkserver import the main script again,
so a script that runs its sweep at module level, without ``if __name__ == "__main__":``, would have every
worker start the same sweep. The submitting process checks its caller before starting any worker
(``unguarded_call``); a worker that re-runs the sweep all the same stops at once (``in_worker_import``)."""

from __future__ import annotations

import ast
import os
import sys
from types import FrameType, ModuleType

WORKER_MAIN = "__mp_main__"
"""The name multiprocessing runs the main script under when a spawn or forkserver worker imports it again."""

GUARD_NAMES = ("__name__", "current_process", "parent_process")
"""Names whose use in an ``if`` test makes it a main guard: ``if __name__ == "__main__":`` and the like."""

ADVICE = ('put the code that runs the sweep under `if __name__ == "__main__":` (see "Safe importing of main '
          'module" in the multiprocessing docs), or use executor="serial"')


def reimported_main() -> ModuleType | None:
    """The ``__main__`` module when spawn and forkserver workers import it again (a script, ``python -m
    module``), else None (an interactive session, a notebook, ``python -c``, ``python -m package``): the rule
    of ``multiprocessing.spawn``."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None:
        return None if name == "__main__" or name.endswith(".__main__") else main
    path = getattr(main, "__file__", None)
    if path is None or os.path.splitext(os.path.basename(path))[0] == "ipython":
        return None
    return main


def unguarded_call() -> tuple[str, int] | None:
    """``(file, line)`` of the module-level statement of the main script that is running this call, when
    workers importing the script again would run it too (no main guard around it); else None."""
    main = reimported_main()
    if main is None:
        return None
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and not (frame.f_globals is vars(main) and frame.f_code.co_name == "<module>"):
        frame = frame.f_back
    if frame is None:
        return None
    path, line = frame.f_code.co_filename, frame.f_lineno
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)
    except (OSError, SyntaxError, ValueError):
        return None  # no source to read: cannot tell, so do not refuse
    return None if guarded(tree, line) else (path, line)


def guarded(tree: ast.Module, line: int) -> bool:
    """Whether the module-level statement running ``line`` is under a main guard: inside an ``if`` whose test
    reads one of ``GUARD_NAMES``."""
    body: list[ast.stmt] = tree.body
    while True:
        statement = next((s for s in body if s.lineno <= line <= (s.end_lineno or s.lineno)), None)
        if statement is None or isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return False
        if isinstance(statement, ast.If) and any(
                (isinstance(node, ast.Name) and node.id in GUARD_NAMES)
                or (isinstance(node, ast.Attribute) and node.attr in GUARD_NAMES) for node in ast.walk(statement.test)):
            return True
        body = [child for node in ast.iter_child_nodes(statement)
                for child in ([node] if isinstance(node, ast.stmt) else
                              node.body if isinstance(node, (ast.ExceptHandler, ast.match_case)) else [])]


def in_worker_import() -> bool:
    """Whether this call comes from the module-level code of the main script being imported again by a
    multiprocessing worker (run as ``__mp_main__``)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == WORKER_MAIN:
            return True
        frame = frame.f_back
    return False

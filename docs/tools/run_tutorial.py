"""Run the code cells of MyST-NB tutorials in order, in one fresh process each: a quick check while writing one.

The site's build executes them in a Jupyter kernel (``nb_execution_mode =
"force"``); this runs the same cells with plain ``exec``, without building.

Usage (from the repository root)::

    python docs/tools/run_tutorial.py docs/tutorials/quickstart.md [more.md ...]
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import time

CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", re.S | re.M)


def cells(path: pathlib.Path) -> list:
    """The source of each code cell, its ``:tag:`` option lines removed."""
    return [re.sub(r"^:\w[\w-]*:.*\n", "", body, flags=re.M) for body in CELL.findall(path.read_text())]


def run(path: pathlib.Path) -> int:
    program = "\n\n".join(f"# --- cell {i}\n{source}" for i, source in enumerate(cells(path)))
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", program], cwd=path.parent)
    print(f"{path}: {'ok' if result.returncode == 0 else 'FAILED'} in {time.perf_counter() - start:.1f} s")
    return result.returncode


if __name__ == "__main__":
    sys.exit(max([run(pathlib.Path(p)) for p in sys.argv[1:]] or [0]))

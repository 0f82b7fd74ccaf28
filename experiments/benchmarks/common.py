"""What the experiment scripts share: where results go, tables, the results writer, machine facts, timing.

One module for every script in ``experiments/`` and ``experiments/benchmarks/``,
imported without touching ``sys.path``:

- ``python experiments/benchmarks/x.py`` puts ``experiments/benchmarks/`` on
  ``sys.path``, so a benchmark does ``from common import ...``;
- ``python experiments/x.py`` puts ``experiments/`` there, where this folder
  is the package ``benchmarks``, so a study does ``from benchmarks.common import ...``.

It imports only the standard library at module level (``jax``, ``numpy`` and
``scanrnn`` inside the functions that need them), so a script that imports
it stays free to configure JAX first.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments" / "results"  # committed results, one folder per script
RUNS = ROOT / "runs"  # --quick runs (ignored by git)


def default_out(name: str, quick: bool) -> Path:
    """Where a script writes by default: ``experiments/results/<name>/``, or ``runs/<name>-quick/`` with ``--quick``.

    A quick run never overwrites committed results.
    """
    return RUNS / f"{name}-quick" if quick else RESULTS / name


# --------------------------------------------------------------------------
# Tables.


def _aligned(header: Sequence, align: Optional[str]) -> str:
    """``align``, one ``"l"`` or ``"r"`` per column; by default the first column left, the others right."""
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align needs one 'l' or 'r' per column ({len(header)}), got {align!r}")
    return align


def table(rows, header, align: Optional[str] = None) -> str:
    """Aligned text columns for the terminal, a rule under the header.

    ``align`` is one ``"l"`` or ``"r"`` per column (default: the first left,
    the others right).
    """
    align = _aligned(header, align)
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(row):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)).rstrip()

    lines = [line(r) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows, header, align: Optional[str] = None) -> str:
    """A Markdown table of ``rows`` under ``header``.

    With ``align`` (one ``"l"`` or ``"r"`` per column) the ``"r"`` columns are
    marked right-aligned (``---:``); without it no column is marked. A ``|``
    inside a cell is escaped (``\\|``).
    """
    marks = ["---:" if a == "r" else "---" for a in _aligned(header, align)] if align else ["---"] * len(header)

    def line(row):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |"  # a | in a cell is escaped

    return "\n".join([line(header), "|" + "|".join(marks) + "|"] + [line(row) for row in rows])


# --------------------------------------------------------------------------
# Writing results.


def write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file beside it and a rename.

    A reader (or a run stopped half-way) sees the old file or the new one,
    never half of one. Creates the folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def write_json(path, data, indent: int = 1) -> Path:
    """``data`` as JSON (``indent`` 1, a final newline), written as :func:`write_text` does."""
    return write_text(path, json.dumps(data, indent=indent) + "\n")


def write_results(out, data: dict, markdown: Optional[str] = None) -> list:
    """``out/results.json`` and, given ``markdown``, ``out/results.md``; returns the paths written."""
    out = Path(out)
    paths = [write_json(out / "results.json", data)]
    if markdown is not None:
        paths.append(write_text(out / "results.md", markdown if markdown.endswith("\n") else markdown + "\n"))
    return paths


def command_line(script, argv: Optional[Sequence[str]] = None) -> str:
    """``python <script, relative to the working directory> <arguments>``, quoted for a shell.

    ``argv`` is what ``main(argv)`` was given; ``None`` means the process's own
    arguments (``sys.argv[1:]``).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    return "python " + shlex.join([os.path.relpath(script, Path.cwd()), *args])


# --------------------------------------------------------------------------
# The machine, its load and the library under test.


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> Optional[list]:
    """The 1, 5 and 15 minute load averages, rounded to 0.01; ``None`` where the system has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def scanrnn_source() -> str:
    """Where scanrnn was imported from: its directory, commit, and whether it has uncommitted changes."""
    import scanrnn

    src = Path(scanrnn.__file__).resolve().parent
    try:
        git = ["git", "-C", str(src)]
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "."], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return f"from {src} (not a git checkout)"
    changes = " with uncommitted changes" if dirty.stdout.strip() else ""
    return f"from {src} at commit {commit.stdout.strip()}{changes}"


def machine_info(modules: Sequence[str] = ()) -> dict:
    """The CPU, cores, GPU (JAX's), versions of python, jax, jaxlib, numpy and ``modules``, and scanrnn's source.

    A module in ``modules`` that is not installed is recorded as ``None``.
    """
    import jax

    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(), "gpu": None}
    for module in ("jax", "jaxlib", "numpy", *modules):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = None
    info["jax_backend"] = jax.default_backend()
    info["jax_devices"] = [str(d) for d in jax.devices()]
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if gpus:
        info["gpu"] = getattr(gpus[0], "device_kind", str(gpus[0]))
    info["scanrnn_source"] = scanrnn_source()
    return info


def describe(info: dict) -> str:
    """One line of :func:`machine_info`: ``CPU, N cores, jax X (backend)`` and the GPU if any."""
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    return f"{info['cpu']}, {info['cores']} cores{gpu}, jax {info['jax']} ({info['jax_backend']})"


# --------------------------------------------------------------------------
# Timing and comparing.


def summarize(samples) -> dict:
    """Median, interquartile range and minimum (ms) of samples in seconds, and the samples themselves (ms)."""
    import numpy as np

    a = np.asarray(samples) * 1e3
    q25, q50, q75 = np.percentile(a, [25, 50, 75])
    return {"median_ms": float(q50), "iqr_ms": float(q75 - q25), "min_ms": float(a.min()),
            "n": int(a.size), "samples_ms": [float(v) for v in a]}


def time_round_robin(fns: dict, repeats: int, warmup: int, min_time: float) -> dict:
    """Samples of seconds per call of each ``fns[name]()``, interleaved, summarized by :func:`summarize`.

    Each function is first called ``warmup`` times; then a calibration call
    sets how many calls one measurement makes (enough to last ``min_time``
    seconds, so short steps are not lost in timer noise). Each repeat then
    measures every function once, starting from a different one each time,
    so that a drift in the machine's load hits all of them alike.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    number = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        number[name] = max(1, min(1000, math.ceil(min_time / max(time.perf_counter() - t0, 1e-9))))
    names = list(fns)
    samples = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            fn, n = fns[name], number[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t0) / n)
    return {name: {**summarize(s), "calls_per_sample": number[name]} for name, s in samples.items()}


def rel_err(a, b) -> float:
    """Max-norm relative error of ``a`` against ``b``: ``max |a - b| / max |b|`` (``inf`` when the shapes differ)."""
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))

"""The benchmark scripts' folder, a package so that the studies in ``experiments/`` can import ``benchmarks.common``.

The scripts here are run as files (``python experiments/benchmarks/run.py``),
not imported as this package; see ``experiments/README.md``.
"""

"""How :func:`scanrnn.unroll` and the recurrent layers run a cell: one bundle of choices.

Every choice here changes the speed or the memory of a run, never its
numbers (beyond rounding): the tests hold each against the plain scan.
``Execution()`` holds the defaults, which are what was measured the faster
on a CPU (BENCHMARKS.md). No choice has been measured on a GPU yet, so the
defaults are the CPU's there too; :data:`ACCELERATOR` names the choices that
cuDNN makes, for trying on an accelerator until they are measured.

>>> import scanrnn as sr
>>> layer = sr.recurrent(sr.lstm(8), execution=sr.Execution(remat="sqrt"))
"""

from __future__ import annotations

from typing import NamedTuple

from . import _checks

__all__ = [
    "REMATS",
    "BACKWARDS",
    "Execution",
    "ACCELERATOR",
    "check",
]

REMATS = ("none", "step", "sqrt")
BACKWARDS = ("autodiff", "hand")


class Execution(NamedTuple):
    """The execution choices of :func:`scanrnn.unroll` and the layers built on it.

    Attributes:
      unroll: how many steps :func:`jax.lax.scan` unrolls per loop
        iteration (its ``unroll``), a positive int.
      remat: what the backward pass keeps from the forward pass, a trade of
        memory for time with identical gradients. ``"none"`` keeps every
        step's intermediate values; ``"step"`` keeps only each step's carry
        and recomputes the step; ``"sqrt"`` keeps only the carry at the
        start of segments of about ``sqrt(T)`` steps and recomputes each
        segment (memory ``O(sqrt(T))`` per sequence besides the inputs and
        outputs, for about one more forward pass of time).
      backward: ``"autodiff"`` differentiates through the scan;
        ``"hand"`` runs the hand-written backward pass of a
        :class:`scanrnn.GatedCell` (``scanrnn._gated_backward``), whose weight
        gradients are one matrix product over all steps and examples, and
        raises a ``ValueError`` for other kinds of cell. It gives
        first-order reverse-mode gradients only.
      hoist: for a :class:`scanrnn.GatedCell`, or a
        :class:`scanrnn.LinearCell` whose step is scanned (see its ``mode``;
        otherwise the projections of all steps are always computed first),
        ``True`` computes the input projection of all steps as one matrix
        product before the scan; ``False`` projects each step's input inside
        it.
      one_scan: for the bidirectional layer, ``True`` runs both directions
        in one scan through :func:`jax.vmap` over the direction axis;
        ``False`` runs a forward scan and then a reverse one.
      cudnn: ``True`` runs an LSTM layer (a cell of :func:`scanrnn.lstm`
        without peepholes, float32) through cuDNN's LSTM instead of a scan
        (:mod:`scanrnn.cudnn`; a CUDA GPU only, and a ValueError for what
        cuDNN cannot do). ``unroll``, ``hoist`` and ``one_scan`` do not
        apply to it. Not measured on a GPU yet, so not a default.
    """

    unroll: int = 1
    remat: str = "none"
    backward: str = "autodiff"
    hoist: bool = False
    one_scan: bool = False
    cudnn: bool = False


ACCELERATOR = Execution(hoist=True, backward="hand", one_scan=True)
"""The choices cuDNN makes. The input projection of all steps is one product,
the weight gradients are one product over all steps, and both directions
of a bidirectional layer run in one loop. Not measured on an accelerator yet."""


def check(execution) -> Execution:
    """``execution`` itself (``Execution()`` for ``None``) after checking every field; a clear error otherwise."""
    if execution is None:
        return Execution()
    if not isinstance(execution, Execution):
        raise _checks.InputTypeError(
            f"execution must be a scanrnn.Execution (e.g. Execution(remat='sqrt')) or None, "
            f"got {type(execution).__name__}"
        )
    _checks.positive_int("execution.unroll", execution.unroll)
    for name, value, allowed in (("remat", execution.remat, REMATS), ("backward", execution.backward, BACKWARDS)):
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(f"execution.{name} must be one of {allowed}, got {value!r}")
    _checks.flag("execution.hoist", execution.hoist)
    _checks.flag("execution.one_scan", execution.one_scan)
    _checks.flag("execution.cudnn", execution.cudnn)
    return execution

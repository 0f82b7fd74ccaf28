r"""The three kinds of recurrent cell, and the contract of each.

A cell is a NamedTuple of pure functions over ONE example, made by a
factory (``lstm(hidden_size)``). Every kind has

- ``init(key, input_size) -> params``: a NamedTuple of arrays;
- ``initial_carry(params) -> carry``: zeros, for one example;
- ``apply(params, carry, x) -> (carry, y)``: one time step, ``x`` of shape
  ``[input_size]``.

``apply`` is exactly the body of :func:`jax.lax.scan`, and the meaning of a
whole sequence is, for every kind::

    carry = cell.initial_carry(params)
    for x in xs:
        carry, y = cell.apply(params, carry, x)

:func:`scanrnn.unroll` dispatches on the kind (the type) of the cell:

- :class:`Cell`, the generic kind: ``unroll`` scans ``apply`` and nothing
  else. Any cell can be written as one.
- :class:`GatedCell`: an input projection, one recurrent product and an
  elementwise core. ``apply`` is derived from those parts, so it cannot
  disagree with them; ``unroll`` projects the inputs before the scan or
  inside it, applies recurrent dropout to the state entering the product,
  and can differentiate the scan by a hand-written backward pass. The
  simple, LSTM, GRU, layer-normalised and classic (Jordan, Elman, NARX)
  cells are of this kind.
- :class:`LinearCell`: a recurrence linear in the state,
  ``h[t] = a[t] * h[t-1] + b[t]``, with ``a`` and ``b`` computed from the
  input alone and an output read off the state; ``unroll`` runs it by a
  sequential scan, an associative scan or a chunked scan over time.
  minGRU, minLSTM and the state-space models (LRU, S5, RG-LRU, Mamba's
  selective SSM) are of this kind.

``GatedCell`` and ``LinearCell`` define ``apply`` as a method, not a field:
``cell._replace(apply=f)`` raises, since ``unroll`` would not call ``f``.
To run a different step, build a :class:`Cell` with it.

Batches come from :func:`jax.vmap` over ``apply`` (or ``unroll``), never
from the cell.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from . import _checks
from .regularization import zoneout_blend

__all__ = [
    "Cell",
    "GatedCell",
    "MODES",
    "LinearCell",
    "check_mode",
    "kind",
]

Array = jax.Array


class Cell(NamedTuple):
    """The generic cell: three pure functions over one example.

    Attributes:
      init: ``(key, input_size) -> params``.
      initial_carry: ``(params) -> carry``, zeros for one example.
      apply: ``(params, carry, x) -> (carry, y)``, ``x`` of shape ``[input_size]``.

    :func:`scanrnn.unroll` scans ``apply``. It takes input dropout and
    zoneout of the carry (its output left as ``apply`` returns it), but not
    recurrent dropout, which needs to know where the state enters a
    recurrent product (a :class:`GatedCell` says where).
    """

    init: Callable
    initial_carry: Callable
    apply: Callable


class GatedCell(NamedTuple):
    r"""A cell made of an input projection, one recurrent product and an elementwise core.

    .. math::
        p_t = \mathrm{project}(x_t), \qquad r_t = \mathrm{recurrent}(c_{t-1}), \qquad
        (c_t, y_t) = \mathrm{core}(c_{t-1}, p_t, r_t)

    Attributes:
      init: ``(key, input_size) -> params``.
      initial_carry: ``(params) -> carry``, zeros for one example.
      project: ``(params, x) -> p``, the part of the step that does not
        depend on the carry (``W x + b`` for the built-in cells). It is
        evaluated for one step or, by ``jax.vmap``, for all steps at once.
      recurrent: ``(params, carry) -> r``, linear in the carry: the step's
        product of the state with the recurrent weights (``W_hh h``).
      core: ``(params, carry, p, r) -> (carry, y)``, everything else: the
        elementwise gate maths and small params. It never reads the params
        named in ``matrices``.
      matrices: the names of the params fields that only ``project`` and
        ``recurrent`` read (``("w_ih", "w_hh")``). The hand-written backward
        pass computes their gradients as one matrix product over all steps,
        and passes the core a copy of the params with them set to ``None``.
      emits_state: whether ``y`` is the carry's ``h``, as for the simple,
        LSTM and GRU cells. With zoneout the output is then the ``h`` of the
        carry after zoneout; otherwise (an output layer, as in the Jordan
        network) ``y`` is the core's.
      cudnn: ``None``, or ``"lstm"`` for a cell that computes exactly
        cuDNN's LSTM (:func:`scanrnn.lstm` without peepholes or a
        ``compute_dtype``), which ``Execution(cudnn=True)`` may run there
        (:mod:`scanrnn.cudnn`).

    ``apply(params, carry, x) = core(params, carry, project(params, x),
    recurrent(params, carry))``. Recurrent dropout multiplies the carry by
    its mask before ``recurrent`` (``W_hh (h * m)``), never where the core
    reads the carry (the LSTM's cell state, the GRU's ``z * h``).
    """

    init: Callable
    initial_carry: Callable
    project: Callable
    recurrent: Callable
    core: Callable
    matrices: tuple = ("w_ih", "w_hh")
    emits_state: bool = True
    cudnn: Optional[str] = None

    def apply(self, params, carry, x):
        """One step of one example: ``core(params, carry, project(params, x), recurrent(params, carry))``."""
        p = self.project(params, x)
        return self.core(params, carry, p, self.recurrent(params, carry))

    def step(self, params, carry, p, mask=None, keep=None):
        """One step from its projection ``p``, with recurrent dropout and zoneout.

        ``mask`` is ``None`` or a pytree with the carry's structure (an
        inverted-dropout mask per leaf) multiplied into the carry that
        ``recurrent`` reads; ``keep`` is ``None`` or zoneout's pytree of
        one step, as :func:`scanrnn.regularization.zoneout_blend` takes it.
        """
        state = carry if mask is None else jax.tree.map(jnp.multiply, carry, mask)
        return self.finish(params, carry, p, self.recurrent(params, state), keep)

    def finish(self, params, carry, p, r, keep=None):
        """``core`` followed by zoneout of the carry (the output as ``emits_state`` says)."""
        new, y = self.core(params, carry, p, r)
        if keep is None:
            return new, y
        new = zoneout_blend(keep, carry, new)
        return new, (new.h if self.emits_state else y)


MODES = ("sequential", "associative", "chunked")


class LinearCell(NamedTuple):
    r"""A recurrence linear in its state, with coefficients computed from the input alone.

    .. math::
        p_t = \mathrm{project}(x_t), \qquad (a_t, b_t) = \mathrm{coefficients}(p_t), \qquad
        h_t = a_t \odot h_{t-1} + b_t, \qquad y_t = \mathrm{output}(h_t, p_t)

    The state ``h`` may have any shape (``[N]``, or ``[D, N]`` for Mamba's
    selective state space) and may be complex (the LRU and S5 keep complex
    diagonal states); the input and the output are real.

    Attributes:
      init: ``(key, input_size) -> params``.
      initial_carry: ``(params) -> carry``, a NamedTuple whose one field is
        the state ``h``, zeros, real or complex.
      project: ``(params, x) -> p``, the step's work that reads the input:
        ``p`` is an array or a pytree of arrays for one step; ``unroll``
        evaluates it for one step or, by ``jax.vmap``, for all steps.
      coefficients: ``(params, p) -> (a, b)`` of one step, each of the
        shape and dtype of ``h`` (a ValueError otherwise).
      output: ``None`` (the output is the state, which must then be real),
        or ``(params, h, p) -> y``, the output of one step from its new
        state and its projection (``Re(C h) + D x`` for the LRU). It must
        give real numbers.
      log_coefficients: ``None``, or ``(params, p) -> (log a, log b)`` for
        a recurrence whose ``a`` and ``b`` are positive: the associative
        scan then runs in log space (Heinsen 2023), which keeps long
        products of small ``a`` from underflowing.
      mode: how :func:`scanrnn.unroll` evaluates the recurrence over a
        sequence (:func:`scanrnn.linear_scans.evaluate`: the projections of
        all steps, the coefficients of all steps, the recurrence, the
        outputs of all steps). The three give the same numbers to rounding:

        - ``"sequential"``: a :func:`jax.lax.scan` of ``T`` steps of
          ``h = a * h + b`` (:func:`scanrnn.linear_scans.sequential_scan`).
          A state larger than the projection of one step (the selective
          SSM's ``[N, D]``), and ``Execution(remat="step")`` or ``"sqrt"``,
          scan the whole step instead (projection, recurrence and output),
          which never holds the coefficients of all steps;
        - ``"associative"``: :func:`jax.lax.associative_scan` over time
          (Blelloch 1990), ``O(log T)`` sequential depth and
          ``O(T log T)`` work;
        - ``"chunked"``: the sequence cut into chunks of ``chunk_size``
          steps, every chunk's steps run for all chunks at once, and the
          state handed from chunk to chunk by a scan of ``T / chunk_size``
          steps (:func:`scanrnn.linear_scans.chunked_scan`).
      chunk_size: the chunk length of ``mode="chunked"`` (ignored by the
        other modes).

    ``apply(params, carry, x)`` is the step above. Recurrent dropout does
    not apply (there is no recurrent weight); zoneout keeps a unit with
    ``a = 1, b = 0`` at that step, which every mode evaluates.
    """

    init: Callable
    initial_carry: Callable
    project: Callable
    coefficients: Callable
    output: Optional[Callable] = None
    log_coefficients: Optional[Callable] = None
    mode: str = "sequential"
    chunk_size: int = 128  # the fastest of 32-256 for the LRU at T = 16,384 on a CPU (BENCHMARKS.md)

    def apply(self, params, carry, x):
        """One step of one example: ``h = a * carry.h + b`` for ``(a, b) = coefficients(project(x))``, and its output."""
        return self.step(params, carry, self.project(params, x))

    def step(self, params, carry, p, keep=None):
        """One step from its projection ``p``; ``keep`` is zoneout's pytree of one step, or ``None``."""
        _checks.carry_like(jax.eval_shape(self.initial_carry, params), carry)
        a, b = self.coefficients(params, p)
        _check_coefficients(carry.h, a, b)
        new = carry._replace(h=a * carry.h + b)
        if keep is not None:
            new = zoneout_blend(keep, carry, new)
        return new, self.emit(params, new.h, p)

    def emit(self, params, h, p):
        """The output of one step from its state ``h`` and projection ``p``: ``output(params, h, p)``, or ``h``."""
        y = h if self.output is None else self.output(params, h, p)
        if any(jnp.iscomplexobj(leaf) for leaf in jax.tree.leaves(y)):
            raise ValueError(
                "a LinearCell's output must be real; got a complex "
                + ("state as the output (give the cell an output function, such as Re(C h))" if self.output is None
                   else "output from its output function (take the real part)")
            )
        return y


def check_mode(mode, chunk_size, owner: str = "a LinearCell's") -> int:
    """``mode`` must be one of :data:`MODES` and ``chunk_size`` a positive int, which is returned.

    ``owner`` begins the message: ``"a LinearCell's"``, or a factory's
    ``"min_gru:"``.
    """
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"{owner} mode must be one of {list(MODES)}, got {mode!r}")
    return _checks.positive_int("chunk_size", chunk_size)


def _check_coefficients(h, a, b) -> None:
    """``a`` and ``b`` of one step must have the shape and dtype of the state ``h``."""
    if jnp.shape(a) != jnp.shape(h) or jnp.shape(b) != jnp.shape(h):
        raise ValueError(
            f"the coefficients of one step must have the shape of the state carry.h, {jnp.shape(h)}; got "
            f"{jnp.shape(a)} and {jnp.shape(b)}"
        )
    dtype = jnp.result_type(h)
    if jnp.result_type(a) != dtype or jnp.result_type(b) != dtype:
        raise ValueError(
            f"the coefficients of one step must have the state's dtype {dtype} (carry.h); got "
            f"{jnp.result_type(a)} and {jnp.result_type(b)}"
        )


def kind(cell) -> str:
    """``"gated"``, ``"linear"`` or ``"generic"``: how :func:`scanrnn.unroll` runs ``cell``."""
    if isinstance(cell, GatedCell):
        return "gated"
    if isinstance(cell, LinearCell):
        return "linear"
    return "generic"

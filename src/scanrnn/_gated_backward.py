"""The hand-written backward pass of :func:`scanrnn.unroll` for a :class:`scanrnn.GatedCell`.

A gated cell's step is ``core(params, carry, p, r)`` after its recurrent
product ``r = recurrent(params, carry)`` (``W_hh h_{t-1}``), with ``p`` the
input projection of the step (:mod:`scanrnn.kinds`). Backpropagation through time then
splits into two kinds of work, as the first seed's hand-written BPTT does and
as cuDNN organises it:

- a reverse scan that carries only the error signal in time. At step ``t`` it
  takes the carry's cotangent ``dc_t`` and the output's ``dy_t``, backpropagates
  them through the elementwise ``core`` (the gate deltas ``dp_t`` and ``dr_t``),
  and passes ``dc_{t-1} = core's carry cotangent + W_hh^T dr_t`` back in time.
  The only matrix product inside the loop is that ``W_hh^T dr_t`` (and,
  when the input projection runs inside the scan, the step's recomputed
  projection ``W_ih x_t``);
- after the scan, the weight gradient ``dW_hh = sum_t dr_t h_{t-1}^T`` is ONE
  matrix product over all steps (and all examples of a vmapped batch),
  ``dR^T H_prev`` of ``[G, B T] x [B T, H]``; the caller's autodiff of the
  hoisted projection (or of a zero-valued routing term, when the scan
  projects each step itself) makes ``dW_ih`` and the input gradients one
  product each. Autodiff through ``lax.scan`` instead accumulates ``dW_hh`` step by
  step inside the loop.

The forward scan saves, per step, the previous carry and the recurrent
product ``r_t`` (``save="products"``; the backward step recomputes ``core``'s
elementwise maths from them, which XLA fuses with its derivative), or only
the previous carry (``save="carries"``: the backward scan recomputes the
product too; the ``remat="step"`` trade of time for memory). Autodiff
through the scan keeps every intermediate of the step instead (thirteen
``[H]`` vectors per LSTM step against the ``2H + 4H`` kept here).

``valid`` (a boolean ``[T]`` or ``None``) masks the steps past a sequence's
length exactly as :func:`scanrnn.unroll` does: an invalid step keeps the carry
and outputs zeros, so its backward step passes the carry's cotangent through.

Regularisation (:mod:`scanrnn.regularization`) keeps this organisation.
Recurrent dropout multiplies ``h_{t-1}`` by the one mask ``m [H]`` before the
product, ``r_t = W_hh (h_{t-1} * m)``, so the error signal in time is
``dc_{t-1}.h += (W_hh^T dr_t) * m`` and the weight gradient is still one
product, ``dW_hh = dR^T (H_prev * m)``. Zoneout is part of the elementwise
step (:meth:`scanrnn.GatedCell.finish`: ``core``, then the blend of the new
and the old carry), whose derivative the backward step takes as it takes
``core``'s; the zoneout masks ``[T, ...]`` are scanned with the inputs.

Everything here reads the cell through its kind's fields: ``recurrent`` is
linear in the carry, so its transpose gives the error signal in time and its
``jax.vmap`` over the saved carries the routing of the weight gradients;
``matrices`` names the params that ``core`` never reads. A params field that
``core`` does read (the Cho GRU's ``w_hh``, which its core multiplies by
``r * h``) gets its gradient accumulated step by step, like any small param.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from .kinds import GatedCell


def _small(cell: GatedCell, params):
    """The params ``core`` may read: all but the cell's ``matrices``."""
    return params._replace(**{name: None for name in cell.matrices})


def _select(valid, new, old):
    return jax.tree.map(lambda a, b: jnp.where(valid, a, b), new, old)


def _zero_unless(valid, tree):
    return jax.tree.map(lambda a: jnp.where(valid, a, jnp.zeros_like(a)), tree)


def _masked(carry, mask):
    return carry if mask is None else jax.tree.map(jnp.multiply, carry, mask)


def _minus_its_value(tree):
    """``a - stop_gradient(a)`` per leaf: zero, with ``a``'s derivative."""
    return jax.tree.map(lambda a: a - lax.stop_gradient(a), tree)


def loop_weights(cell: GatedCell, params):
    """Call outside a scan; the function it returns, called inside the body, gives ``params`` back.

    The cell's ``matrices`` enter the loop transposed, ``[in, out]``, and the
    body reads them back as ``(W^T)^T``. XLA folds that into each step's
    product ``x @ W.T``, which then reads the weight in the row-major
    ``[K, N]`` order of a GEMM; with ``W`` itself the CPU backend re-arranges
    the weight at every step, which costs most at small batches
    (``experiments/benchmarks``).
    """
    transposed = {name: getattr(params, name).T for name in cell.matrices}
    return lambda: params._replace(**{name: w.T for name, w in transposed.items()})


def _forward(cell, save, unroll, rates, in_loop_projection, params, carry, ps, valid, mask, keep):
    small = _small(cell, params)
    in_loop = loop_weights(cell, params)

    def body(c, inputs):
        p, v, k = inputs
        params = in_loop()
        if in_loop_projection:
            p = cell.project(params, p)
        r = cell.recurrent(params, _masked(c, mask))
        new_c, y = cell.finish(small, c, p, r, rates if k is None else k)
        saved = {"products": (c, r), "carries": c}.get(save)
        if v is not None:
            new_c = _select(v, new_c, c)
            y = _zero_unless(v, y)
        return new_c, (y, saved)

    return lax.scan(body, carry, (ps, valid, keep), unroll=unroll)


def recurrent_scan(
    cell: GatedCell, save, unroll, params, carry, ps, valid, mask=None, keep=None, rates=None, in_loop_projection=False
):
    """Scan a :class:`scanrnn.kinds.GatedCell`'s step over the projected inputs ``ps [T, ...]``.

    With ``in_loop_projection``, ``ps`` are the inputs ``[T, I]`` and each
    step projects its own input inside the forward and the backward scans;
    the input weight's gradient then comes through ``zero_p = P -
    stop_gradient(P)`` for the projection ``P`` of all steps, as the
    recurrent weight's does through ``zero`` below (for an affine
    projection XLA drops the unused forward value of ``P``).

    Returns ``(final_carry, ys)``: the same numbers as ``lax.scan`` of
    ``cell.step``, with the backward pass described in the module docstring.
    ``save`` is ``"products"`` or ``"carries"``. ``mask`` is ``None`` or the
    recurrent dropout mask, a pytree of the carry's structure; ``keep`` is
    ``None`` or the zoneout masks, the carry's structure with ``[T, ...]``
    boolean leaves; ``rates`` is ``None`` or the zoneout rates of evaluation
    (a hashable pytree of Python floats with the carry's structure). At
    most one of ``keep`` and ``rates`` is given.

    The pieces: the forward scan runs once, outside autodiff, and keeps what
    the backward scan needs; :func:`_attach` hands its results on and holds
    the backward scan as its VJP. The recurrent weights get their gradient
    through ``zero = R - stop_gradient(R)`` for ``R``, ``cell.recurrent`` of
    every step's (masked) previous carry: its value is zero and its
    cotangent is the backward scan's ``dR``, so autodiff transposes the
    product into ``dW_hh = dR^T H_prev`` and, under :func:`jax.vmap` (the
    batch), contracts the batch and time axes together, ONE matrix product
    for all examples and steps.

    This is first-order reverse mode only: the saved forward values carry no
    derivatives of their own, so a derivative of the gradient would miss
    terms. :func:`_first_order` turns that case into an error rather than a
    wrong number, and forward mode fails on the custom VJP; both work with
    ``backward="autodiff"``.
    """
    sg = lax.stop_gradient
    final, (ys, saved) = _forward(
        cell, save, unroll, rates, in_loop_projection, sg(params), sg(carry), sg(ps), valid, mask, keep
    )
    carries_prev = saved[0] if save == "products" else saved
    routed = jax.vmap(lambda c: cell.recurrent(params, _masked(c, mask)))(carries_prev)  # [T, ...]
    zero = _minus_its_value(routed)
    xs = None
    if in_loop_projection:
        xs = sg(ps)
        ps = _minus_its_value(jax.vmap(cell.project, in_axes=(None, 0))(params, ps))
    return _attach(
        cell, save, unroll, rates, in_loop_projection, params, carry, ps, zero, valid, mask, keep, final, ys, saved, xs
    )


@jax.custom_jvp
def _first_order(params):
    """The identity, whose derivative is an error: see :func:`recurrent_scan`."""
    return params


@_first_order.defjvp
def _first_order_jvp(primals, tangents):
    raise ValueError(
        "the hand-written backward pass of scanrnn.unroll (Execution(backward='hand')) gives "
        "first-order reverse-mode gradients only; for derivatives of gradients (jax.hessian, grad "
        "of grad) or forward mode (jax.jvp, jax.jacfwd), use Execution(backward='autodiff'), the default"
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3, 4))
def _attach(cell, save, unroll, rates, in_loop_projection, params, carry, ps, zero, valid, mask, keep, final, ys, saved,
            xs):
    """Return the forward scan's ``(final, ys)``; its VJP is the backward scan."""
    return final, ys


def _attach_fwd(
    cell, save, unroll, rates, in_loop_projection, params, carry, ps, zero, valid, mask, keep, final, ys, saved, xs
):
    # In-loop projection: the backward scan recomputes each step's projection from its
    # input (a product of I columns, cheaper to redo than a [T, G] array is to keep).
    inputs = xs if in_loop_projection else ps
    return (final, ys), (params, inputs, valid, mask, keep, final, ys, saved)


def _attach_bwd(cell, save, unroll, rates, in_loop_projection, residuals, cotangents):
    params, ps, valid, mask, keep, final, ys, saved = residuals
    params = _first_order(params)  # differentiating this backward pass is an error
    d_final, dys = cotangents
    small = _small(cell, params)
    in_loop = loop_weights(cell, params)

    def body(acc, inputs):
        dc, d_small = acc
        s, p, dy, v, k = inputs
        # The forward products read the weights transposed (loop_weights); the transposed
        # product below reads them as they are, already a GEMM's row-major [K, N].
        transposed = in_loop()
        c, r = s if save == "products" else (s, cell.recurrent(transposed, _masked(s, mask)))
        if in_loop_projection:
            p = cell.project(transposed, p)
        k = rates if k is None else k
        _, pullback = jax.vjp(lambda sm, c, p, r: cell.finish(sm, c, p, r, k), small, c, p, r)
        ds, dc_prev, dp, dr = pullback((dc, dy))
        # The error signal in time: + W_hh^T dr (times the mask), through the recurrent
        # product's transpose, in the product's own precision.
        (dstate,) = jax.linear_transpose(lambda state: cell.recurrent(params, state), c)(dr)
        dc_prev = jax.tree.map(jnp.add, dc_prev, _masked(dstate, mask))
        if v is not None:
            dc_prev = _select(v, dc_prev, dc)
            dp, dr, ds = _zero_unless(v, (dp, dr, ds))
        d_small = jax.tree.map(jnp.add, d_small, ds)
        return (dc_prev, d_small), (dp, dr)

    d_small0 = jax.tree.map(jnp.zeros_like, small)
    (d_carry, d_small), (dps, drs) = lax.scan(
        body, (d_final, d_small0), (saved, ps, dys, valid, keep), reverse=True, unroll=unroll
    )
    # The matrices' gradients come from the caller's autodiff: through ``zero``
    # (cotangent drs) and through the projection (cotangent dps).
    d_params = d_small._replace(**{name: jnp.zeros_like(getattr(params, name)) for name in cell.matrices})
    # None: the masks are constants, and the forward scan's results were
    # computed outside autodiff.
    return d_params, d_carry, dps, drs, None, None, None, None, None, None, None


_attach.defvjp(_attach_fwd, _attach_bwd)

"""The three kinds of cell (scanrnn.kinds): each one's ``unroll`` is the loop of its ``apply``.

For every built-in cell and the execution options ``unroll`` takes, the
scan equals a Python loop over ``cell.apply`` (the definition in the
module docstring of ``scanrnn.kinds``), with a length and reversed. A cell
of each kind written here, outside the library, runs through every path
its kind has. ``apply`` is honoured where it is a field (``Cell``) and
cannot be replaced where it is derived (``GatedCell``, ``LinearCell``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scanrnn as sr
from helpers import assert_close, normal, random_carry, random_params

H, I, T = 3, 2, 6
F64 = jnp.float64


def loop(cell, params, xs, carry, length=None, reverse=False):
    """The definition: ``carry, y = cell.apply(params, carry, x)`` over the valid steps, in their order.

    Outputs past ``length`` are zeros; reversed, ``ys[t]`` is the output of
    the step that read ``xs[t]``.
    """
    n = xs.shape[0] if length is None else length
    ys = [None] * xs.shape[0]
    for t in (reversed(range(n)) if reverse else range(n)):
        carry, ys[t] = cell.apply(params, carry, xs[t])
    like = jax.eval_shape(cell.apply, params, carry, xs[0])[1]
    ys = [jnp.zeros(like.shape, like.dtype) if y is None else y for y in ys]
    return carry, jnp.stack(ys)


# --------------------------------------------------------------------------
# A cell of each kind, written as a user would.


class IndParams(NamedTuple):
    w_ih: jax.Array  # [H, I]
    w_hh: jax.Array  # [H, H]
    gain: jax.Array  # [H]


def user_gated(hidden_size):
    """A gated cell with its own params: ``h = tanh(W x + gain * (W_hh h))``; the core reads ``gain``."""

    def init(key, input_size):
        k1, k2, k3 = jax.random.split(key, 3)
        return IndParams(
            jax.random.normal(k1, (hidden_size, input_size), F64),
            jax.random.normal(k2, (hidden_size, hidden_size), F64) / 2,
            1.0 + jax.random.normal(k3, (hidden_size,), F64) / 4,
        )

    def initial_carry(params):
        return sr.RNNCarry(jnp.zeros(params.w_hh.shape[0], params.w_hh.dtype))

    def project(params, x):
        return params.w_ih @ x

    def recurrent(params, carry):
        return params.w_hh @ carry.h

    def core(params, carry, p, r):
        h = jnp.tanh(p + params.gain * r)
        return sr.RNNCarry(h), h

    return sr.GatedCell(init, initial_carry, project, recurrent, core)


class DecayParams(NamedTuple):
    w_ih: jax.Array  # [2H, I]


def user_linear(hidden_size, mode, chunk_size=64):
    """A learned exponential moving average: ``a = sigmoid(k)``, ``b = (1 - a) * v`` (``b`` of either sign)."""

    def init(key, input_size):
        return DecayParams(jax.random.normal(key, (2 * hidden_size, input_size), F64))

    def initial_carry(params):
        return sr.RNNCarry(jnp.zeros(params.w_ih.shape[0] // 2, params.w_ih.dtype))

    def project(params, x):
        return params.w_ih @ x

    def coefficients(params, p):
        k, v = jnp.split(p, 2, axis=-1)
        a = jax.nn.sigmoid(k)
        return a, (1 - a) * v

    return sr.LinearCell(init, initial_carry, project, coefficients, mode=mode, chunk_size=chunk_size)


# --------------------------------------------------------------------------
# Every cell, and the options of its kind.

GATED = {
    "simple_rnn": lambda: sr.simple_rnn(H, param_dtype=F64),
    "lstm-peephole": lambda: sr.lstm(H, peephole=True, param_dtype=F64),
    "gru": lambda: sr.gru(H, param_dtype=F64),
    "gru-cho": lambda: sr.gru(H, reset_after=False, param_dtype=F64),
    "layer_norm_rnn": lambda: sr.layer_norm_rnn(H, param_dtype=F64),
    "layer_norm_lstm": lambda: sr.layer_norm_lstm(H, param_dtype=F64),
    "jordan": lambda: sr.jordan(H, 2, param_dtype=F64),
    "elman": lambda: sr.elman(H, 2, param_dtype=F64),
    "narx": lambda: sr.narx(H, 2, k=2, param_dtype=F64),
    "user-gated": lambda: user_gated(H),
}
LINEAR = {
    "min_gru-sequential": lambda: sr.min_gru(H, mode="sequential", param_dtype=F64),
    "min_gru-associative": lambda: sr.min_gru(H, mode="associative", param_dtype=F64),
    "min_lstm-sequential": lambda: sr.min_lstm(H, mode="sequential", param_dtype=F64),
    "min_lstm-associative": lambda: sr.min_lstm(H, mode="associative", param_dtype=F64),
    "min_gru-chunked": lambda: sr.min_gru(H, mode="chunked", chunk_size=3, param_dtype=F64),
    "user-linear-sequential": lambda: user_linear(H, "sequential"),
    "user-linear-associative": lambda: user_linear(H, "associative"),
    "user-linear-chunked": lambda: user_linear(H, "chunked", chunk_size=2),
}
# Each set of options (the fields of an Execution) once with a length and reversed, once without.
GATED_OPTIONS = [
    dict(hoist=True, backward="hand"),
    dict(hoist=False, backward="hand", remat="step", unroll=2),
    dict(hoist=False, backward="autodiff", remat="sqrt", unroll=3),
]
LINEAR_OPTIONS = [dict(hoist=True), dict(hoist=False, remat="sqrt", unroll=2)]
CASES = [(name, options) for name in GATED for options in GATED_OPTIONS] + [
    (name, options) for name in LINEAR for options in LINEAR_OPTIONS
]


def _id(case):
    name, options = case
    return name + "-" + "-".join(f"{k}={v}" for k, v in options.items())


def setup(factory):
    cell = factory()
    params = random_params(cell, I, seed=1)
    carry = random_carry(cell, params, seed=2)
    return cell, params, carry, normal((T, I), seed=3)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_unroll_is_the_loop_of_apply(case):
    name, options = case
    cell, params, carry, xs = setup({**GATED, **LINEAR}[name])
    execution = sr.Execution(**options)
    assert_close(sr.unroll(cell, params, xs, carry, execution=execution), loop(cell, params, xs, carry),
                 rtol=1e-12, atol=1e-13)
    got = sr.unroll(cell, params, xs, carry, length=4, reverse=True, execution=execution)
    assert_close(got, loop(cell, params, xs, carry, length=4, reverse=True), rtol=1e-12, atol=1e-13)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["user-gated", "user-linear-associative"])
def test_user_cells_gradients_equal_the_loop(name):
    """A cell written outside the library: the gradients of the fast paths equal those of the loop of apply."""
    cell, params, carry, xs = setup({**GATED, **LINEAR}[name])
    execution = sr.Execution(backward="hand", hoist=False) if name == "user-gated" else sr.Execution()

    def loss(run):
        def value(params, xs, carry):
            final, ys = run(params, xs, carry)
            return jnp.sum(jnp.sin(ys)) + jnp.sum(final.h ** 2)

        return jax.grad(value, argnums=(0, 1, 2))

    want = loss(lambda p, x, c: loop(cell, p, x, c, length=5))(params, xs, carry)
    got = jax.jit(loss(lambda p, x, c: sr.unroll(cell, p, x, c, length=5, execution=execution)))(params, xs, carry)
    assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_user_gated_cell_takes_recurrent_dropout_where_its_state_enters_the_product():
    """``W_hh (h * m)``: the same as the loop of apply with the mask folded into ``W_hh``'s columns."""
    cell, params, carry, xs = setup(GATED["user-gated"])
    key = jax.random.key(3)
    masks = sr.regularization.sample_masks(key, xs, carry, recurrent_dropout=0.5)
    assert 0 < np.count_nonzero(np.asarray(masks.recurrent.h)) < H  # a mask that drops some units and keeps others
    folded = params._replace(w_hh=params.w_hh * masks.recurrent.h[None, :])
    for backward in ("hand", "autodiff"):
        got = sr.unroll(cell, params, xs, carry, regularization=sr.Regularization(recurrent_dropout=0.5), key=key,
                        execution=sr.Execution(backward=backward))
        assert_close(got, loop(cell, folded, xs, carry), rtol=1e-12, atol=1e-13)


def test_apply_is_honoured_by_a_cell_and_cannot_be_replaced_in_a_derived_kind():
    lstm = sr.lstm(H, param_dtype=F64)
    params = random_params(lstm, I, seed=1)
    xs = normal((T, I), seed=3)

    def doubled(params, carry, x):
        carry, y = lstm.apply(params, carry, x)
        return carry, 2 * y

    # The generic kind: unroll calls apply, whatever it is.
    cell = sr.Cell(lstm.init, lstm.initial_carry, doubled)
    np.testing.assert_allclose(sr.unroll(cell, params, xs)[1], 2 * sr.unroll(lstm, params, xs)[1], rtol=1e-14)
    # The derived kinds: apply is not a field, so it cannot disagree with the parts unroll runs.
    for derived in (lstm, sr.min_gru(H)):
        with pytest.raises(ValueError, match="unexpected field names: \\['apply'\\]"):
            derived._replace(apply=doubled)
    # Replacing a part is honoured by apply and by unroll alike.
    halved = lstm._replace(core=lambda p, c, pr, r: jax.tree.map(lambda a: a / 2, lstm.core(p, c, pr, r)))
    carry = halved.initial_carry(params)
    np.testing.assert_allclose(sr.unroll(halved, params, xs)[1], loop(halved, params, xs, carry)[1], rtol=1e-12)
    assert not np.allclose(sr.unroll(halved, params, xs)[1], sr.unroll(lstm, params, xs)[1])


def test_kinds_dispatch_on_type():
    assert isinstance(sr.lstm(H), sr.GatedCell) and isinstance(sr.jordan(H, 1), sr.GatedCell)
    assert isinstance(sr.min_lstm(H), sr.LinearCell) and sr.min_lstm(H).mode == "sequential"
    assert sr.kinds.kind(sr.gru(H)) == "gated" and sr.kinds.kind(sr.min_gru(H)) == "linear"
    assert sr.kinds.kind(sr.Cell(*sr.lstm(H)[:2], sr.lstm(H).apply)) == "generic"

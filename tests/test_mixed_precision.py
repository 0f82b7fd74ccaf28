"""compute_dtype: the cells' matrix products in bfloat16, params, carries and accumulation in float32."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scanrnn
from helpers import hand_or_autodiff, normal
from scanrnn import Execution, unroll

H, I, T = 8, 3, 6
BF16 = jnp.bfloat16
CELLS = {
    "simple_rnn": scanrnn.simple_rnn,
    "lstm-peephole": partial(scanrnn.lstm, peephole=True),
    "gru": scanrnn.gru,
    "gru-cho": partial(scanrnn.gru, reset_after=False),
    "layer_norm_lstm": scanrnn.layer_norm_lstm,
    "jordan": partial(scanrnn.jordan, output_size=2),
    "elman": partial(scanrnn.elman, output_size=2),
    "narx": partial(scanrnn.narx, output_size=2, k=2),
    "min_gru-sequential": partial(scanrnn.min_gru, mode="sequential"),
    "min_gru-associative": partial(scanrnn.min_gru, mode="associative"),
    "min_lstm-associative": partial(scanrnn.min_lstm, mode="associative"),
}


def setup(name, compute_dtype):
    cell = CELLS[name](H, compute_dtype=compute_dtype)
    params = cell.init(jax.random.key(1), I)
    return cell, params


def loss(cell, params, xs, execution):
    final, ys = unroll(cell, params, xs, length=5, execution=execution)
    return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(leaf * leaf) for leaf in jax.tree.leaves(final))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CELLS))
def test_bfloat16_products_float32_everything_else(name):
    cell, params = setup(name, BF16)
    plain, _ = setup(name, None)
    xs = normal((T, I), seed=2).astype(jnp.float32)

    final, ys = jax.jit(lambda p, x: unroll(cell, p, x))(params, xs)
    assert ys.dtype == jnp.float32 and all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(final))
    # The products really run in bfloat16: their operands are bfloat16 in the program.
    jaxpr = jax.make_jaxpr(lambda p, x: unroll(cell, p, x))(params, xs)
    dots = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
    dots += [e for eq in jaxpr.jaxpr.eqns if eq.primitive.name == "scan"
             for e in eq.params["jaxpr"].jaxpr.eqns if e.primitive.name == "dot_general"]
    assert dots and all(v.aval.dtype == BF16 for e in dots for v in e.invars)
    assert all(e.outvars[0].aval.dtype == jnp.float32 for e in dots)

    # Against the float32 products: close to bfloat16's 8 bits of mantissa, and not equal.
    _, want = unroll(plain, params, xs)
    error = float(jnp.max(jnp.abs(ys - want)))
    assert 0 < error < 3e-2

    # Against a Python loop over cell.apply (the same products): equal up to float32 rounding.
    carry = cell.initial_carry(params)
    loop = []
    for x in xs:
        carry, y = cell.apply(params, carry, x)
        loop.append(y)
    np.testing.assert_allclose(ys, jnp.stack(loop), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lstm-peephole", "layer_norm_lstm", "narx", "min_gru-associative"])
def test_bfloat16_gradients_hand_written_and_autodiff(name):
    cell, params = setup(name, BF16)
    xs = normal((T, I), seed=3).astype(jnp.float32)
    got = jax.jit(jax.grad(partial(loss, cell, execution=Execution(backward=hand_or_autodiff(cell)))))(params, xs)
    want = jax.jit(jax.grad(partial(loss, cell, execution=Execution(backward="autodiff"))))(params, xs)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert g.dtype == jnp.float32
        np.testing.assert_allclose(g, w, rtol=2e-2, atol=2e-2 * float(jnp.max(jnp.abs(w))))
    # The float32 gradient is near: mixed precision changes the numbers by bfloat16 rounding only.
    plain, _ = setup(name, None)
    exact = jax.jit(jax.grad(partial(loss, plain, execution=Execution(backward="autodiff"))))(params, xs)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(exact)):
        np.testing.assert_allclose(g, w, rtol=5e-2, atol=5e-2 * float(jnp.max(jnp.abs(w))))


def test_bfloat16_dense_layer():
    layer = scanrnn.dense(3, compute_dtype=BF16)
    params = layer.init(jax.random.key(4), I)
    xs = normal((T, I), seed=5).astype(jnp.float32)
    ys = layer.apply(params, xs)
    assert ys.dtype == jnp.float32
    w, b = (np.asarray(a, np.float64) for a in (params.w.astype(BF16), params.b))
    want = np.asarray(xs.astype(BF16), np.float64) @ w.T + b
    np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-6)
    assert 0 < float(jnp.max(jnp.abs(ys - scanrnn.dense(3).apply(params, xs))))


def test_bad_compute_dtype():
    with pytest.raises(ValueError, match="compute_dtype must be None or a floating dtype"):
        scanrnn.lstm(4, compute_dtype=jnp.int32)
    with pytest.raises(ValueError, match="compute_dtype must be None or a floating dtype"):
        scanrnn.gru(4, compute_dtype="int8")
    with pytest.raises(ValueError, match="compute_dtype must be None or a floating dtype"):
        scanrnn.simple_rnn(4, compute_dtype="half-ish")
    for factory in (partial(scanrnn.elman, output_size=1), scanrnn.min_lstm, scanrnn.dense):
        with pytest.raises(ValueError, match="compute_dtype must be None or a floating dtype"):
            factory(4, compute_dtype=jnp.int8)

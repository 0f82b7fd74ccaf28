"""The LSTM with a projected hidden state, ``lstm(H, proj_size=P)`` (LSTMP, Sak et al. 2014).

Checked against a NumPy loop of its equations (reference.lstm), finite
differences in float64, autodiff for the hand-written backward pass, and
(in test_interop.py and test_to_torch.py) torch.nn.LSTM(proj_size=P).
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import scanrnn as sr
import reference
from helpers import normal, random_carry, random_params
from scanrnn import Execution, unroll

H, P, I, T = 5, 3, 4, 6
F64 = jnp.float64
OPTIONS = [{"peephole": False}, {"peephole": True}]
IDS = ["projected", "projected-peephole"]


def setup(options, dtype=F64):
    cell = sr.lstm(H, proj_size=P, param_dtype=dtype, **options)
    params = random_params(cell, I, seed=1)
    carry = random_carry(cell, params, seed=2)
    return cell, params, carry


def by_hand(params, carry, xs, options):
    """A NumPy loop over the steps: (h, c) after the last one, and the outputs."""
    (h, c), ys = reference.sequence("lstm", reference.as_numpy(params), tuple(map(np.asarray, carry)),
                                    np.asarray(xs, np.float64), proj_size=P, **options)
    return h, c, ys


@pytest.mark.slow
@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
def test_shapes_types_and_initialisation(key, options):
    cell = sr.lstm(H, proj_size=P, **options)
    params = cell.init(key, I)
    expected = sr.ProjectedPeepholeLSTMParams if options["peephole"] else sr.ProjectedLSTMParams
    assert type(params) is expected
    assert params.w_ih.shape == (4 * H, I) and params.w_hh.shape == (4 * H, P) and params.w_hr.shape == (P, H)
    np.testing.assert_array_equal(params.b[H : 2 * H], np.ones(H, np.float32))  # forget_bias
    limit = np.sqrt(6.0 / (P + H))  # Glorot-uniform projection
    assert 0 < np.abs(params.w_hr).max() <= limit
    carry = cell.initial_carry(params)
    assert carry.h.shape == (P,) and carry.c.shape == (H,) and not np.any(carry.h) and not np.any(carry.c)
    assert cell.cudnn is None  # Execution(cudnn=True) must not send it to cuDNN's plain LSTM
    jax.tree.map(np.testing.assert_array_equal, params, cell.init(key, I))


@pytest.mark.slow
@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
@pytest.mark.parametrize("dtype", [F64, jnp.float32], ids=["float64", "float32"])
def test_unroll_matches_the_equations(options, dtype):
    cell, params, carry = setup(options, dtype)
    xs = normal((T, I), seed=3, dtype=dtype)
    tolerance = dict(rtol=1e-10, atol=1e-10) if dtype == F64 else dict(rtol=1e-5, atol=1e-5)
    run = jax.jit(lambda p, c, x, n: unroll(cell, p, x, c, length=n))
    for n in (0, 2, T):
        (h, c), ys = run(params, carry, xs, jnp.asarray(n))
        want_h, want_c, want_ys = by_hand(params, carry, xs[:n], options) if n else (carry.h, carry.c, None)
        np.testing.assert_allclose(h, want_h, **tolerance)
        np.testing.assert_allclose(c, want_c, **tolerance)
        assert ys.shape == (T, P) and ys.dtype == dtype
        if n:
            np.testing.assert_allclose(ys[:n], want_ys, **tolerance)
        np.testing.assert_array_equal(ys[n:], np.zeros((T - n, P)))
    # reverse: the valid part read backwards, outputs back in time order.
    (h, c), ys = unroll(cell, params, xs, carry, length=4, reverse=True)
    want_h, want_c, want_ys = by_hand(params, carry, xs[:4][::-1], options)
    np.testing.assert_allclose(h, want_h, **tolerance)
    np.testing.assert_allclose(c, want_c, **tolerance)
    np.testing.assert_allclose(ys[:4], want_ys[::-1], **tolerance)


@pytest.mark.slow
def test_layers_bidirectional_and_stacked():
    """Two bidirectional layers: the second reads 2P features, outputs are the two directions' projections."""
    cell = sr.lstm(H, proj_size=P, param_dtype=F64)
    model = sr.serial(sr.bidirectional(cell), sr.bidirectional(cell))
    params = random_params(model, I, seed=4)
    assert params[1].w_ih.shape == (2, 4 * H, 2 * P)
    xs = normal((T, I), seed=5)
    ys = jax.jit(model.apply)(params, xs, jnp.asarray(4))
    assert ys.shape == (T, 2 * P)

    def direction(p, d):
        return jax.tree.map(lambda a: a[d], p)

    def layer(p, inputs):
        zero = (np.zeros(P), np.zeros(H))
        _, forwards = reference.sequence("lstm", reference.as_numpy(direction(p, 0)), zero, inputs, proj_size=P)
        _, backwards = reference.sequence("lstm", reference.as_numpy(direction(p, 1)), zero, inputs[::-1],
                                          proj_size=P)
        return np.concatenate([forwards, backwards[::-1]], axis=-1)

    want = layer(params[1], layer(params[0], np.asarray(xs[:4])))
    np.testing.assert_allclose(ys[:4], want, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(ys[4:], np.zeros((T - 4, 2 * P)))


@pytest.mark.slow
@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
def test_gradients_against_finite_differences(options):
    cell, params, carry = setup(options)
    xs = normal((T, I), seed=3)

    def f(params, carry, xs):
        final, ys = unroll(cell, params, xs, carry, length=jnp.asarray(4))
        return jnp.sum(jnp.sin(ys)) + jnp.sum(final.h * final.h) + jnp.sum(final.c)

    check_grads(jax.jit(f), (params, carry, xs), order=1, modes=("rev", "fwd"), rtol=1e-6, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
def test_hand_written_backward_matches_autodiff(options):
    """The projection is a product the core makes: its gradient is summed step by step, to 1e-10 in float64."""
    cell, params, carry = setup(options)
    xs = normal((T, I), seed=3)

    def loss(execution, reverse, params, xs, carry, length):
        final, ys = unroll(cell, params, xs, carry, length=length, reverse=reverse, execution=execution)
        weights = jnp.linspace(0.5, 1.5, ys.size, dtype=ys.dtype).reshape(ys.shape)
        return jnp.sum(jnp.sin(ys) * weights) + sum(jnp.sum(leaf * leaf) for leaf in jax.tree.leaves(final))

    for reverse in (False, True):
        hand, autodiff = (
            jax.jit(jax.value_and_grad(partial(loss, execution, reverse), argnums=(0, 1, 2)))
            for execution in (Execution(backward="hand"), Execution())
        )
        for n in (0, 3, T):
            got, want = hand(params, xs, carry, jnp.asarray(n)), autodiff(params, xs, carry, jnp.asarray(n))
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    assert np.abs(got[1][0].w_hr).max() > 1e-3  # the projection's gradient is not vacuous


def test_compute_dtype_bfloat16_runs_the_projection_in_mixed_precision():
    cell32 = sr.lstm(H, proj_size=P)
    cell16 = sr.lstm(H, proj_size=P, compute_dtype=jnp.bfloat16)
    params = random_params(cell32, I, seed=1)
    xs = normal((T, I), seed=3, dtype=jnp.float32)
    (_, want), (_, got) = (unroll(c, params, xs) for c in (cell32, cell16))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-2)
    assert not np.array_equal(got, want)  # the products did run in bfloat16


def test_bad_options_and_carries_are_refused():
    for bad in (H, H + 1):
        with pytest.raises(ValueError, match=f"proj_size must be smaller than hidden_size={H}.*proj_size={bad}"):
            sr.lstm(H, proj_size=bad)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="proj_size"):
            sr.lstm(H, proj_size=bad)
    for bad in (2.0, True, "2"):
        with pytest.raises(TypeError, match="proj_size"):
            sr.lstm(H, proj_size=bad)
    cell = sr.lstm(H, proj_size=P)
    params = cell.init(jax.random.key(0), I)
    unprojected = sr.LSTMCarry(jnp.zeros(H, jnp.float32), jnp.zeros(H, jnp.float32))
    with pytest.raises(ValueError, match=rf"carry\.h must have shape \({P},\), got \({H},\)"):
        cell.apply(params, unprojected, jnp.zeros(I, jnp.float32))
    plain = sr.lstm(H).init(jax.random.key(0), I)
    with pytest.raises(ValueError, match="expects params of type ProjectedLSTMParams, got LSTMParams"):
        cell.apply(plain, cell.initial_carry(params), jnp.zeros(I, jnp.float32))

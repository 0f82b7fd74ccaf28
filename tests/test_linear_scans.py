"""The scans of a linear recurrence h = a * h + b against a Python loop, and the LinearCell contract's checks."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scanrnn as sr
from jax.test_util import check_grads

from scanrnn.linear_scans import chunked_scan, linear_scan, sequential_scan

F64, C128 = jnp.float64, jnp.complex128


def loop(h0, a, b):
    """The states of h = a * h + b, one step at a time, in NumPy."""
    h, states = np.asarray(h0), []
    for a_t, b_t in zip(np.asarray(a), np.asarray(b)):
        h = a_t * h + b_t
        states.append(h)
    return np.stack(states) if states else np.zeros((0,) + h.shape, h.dtype)


def coefficients(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    draw = lambda: rng.uniform(-1, 1, size=shape) + (1j * rng.uniform(-1, 1, size=shape) if dtype == C128 else 0)  # noqa: E731
    return jnp.asarray(draw(), dtype), jnp.asarray(draw(), dtype), jnp.asarray(draw()[0], dtype)


@pytest.mark.parametrize("dtype", [F64, C128], ids=["real", "complex"])
@pytest.mark.parametrize("chunk_size", [pytest.param(1, marks=pytest.mark.slow), 3, 5, 12, 50])
def test_chunked_scan_equals_the_loop(dtype, chunk_size):
    """Chunks that divide T, that don't, of one step, of all steps and longer than T; a [2, 3] state."""
    a, b, h0 = coefficients((12, 2, 3), dtype)
    np.testing.assert_allclose(chunked_scan(h0, a, b, chunk_size), loop(h0, a, b), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(linear_scan(h0, a, b), loop(h0, a, b), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sequential_scan(h0, a, b, unroll=chunk_size), loop(h0, a, b), rtol=1e-12, atol=1e-12)


def test_chunked_scan_where_the_products_in_a_chunk_underflow():
    """|a| = 0.25 over 100-step chunks: a_i ... a_1 underflows to 0 in float32, and the states stay those of the loop."""
    rng = np.random.default_rng(4)
    a = jnp.asarray(rng.choice([-0.25, 0.25], size=(300, 3)), jnp.float32)
    b = jnp.asarray(rng.uniform(-1, 1, size=(300, 3)), jnp.float32)
    h0 = jnp.asarray([1e30, -2.0, 3.0], jnp.float32)
    assert float(jnp.max(jnp.abs(jnp.prod(a[:100], axis=0)))) == 0.0
    got = chunked_scan(h0, a, b, 100)
    assert bool(jnp.all(jnp.isfinite(got)))
    np.testing.assert_allclose(got, loop(h0.astype(F64), a.astype(F64), b.astype(F64)), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [F64, C128], ids=["real", "complex"])
def test_the_scans_derivatives_equal_those_of_a_plain_scan(dtype):
    """sequential_scan and chunked_scan give their derivative as a recurrence; autodiff of lax.scan is the reference."""
    a, b, h0 = coefficients((9, 4), dtype, seed=1)

    def plain(h0, a, b):
        return jax.lax.scan(lambda h, ab: (ab[0] * h + ab[1],) * 2, h0, (a, b))[1]

    weight = jnp.asarray(1 + 0.5j if dtype == C128 else 1.5, dtype)

    def loss(scan):
        return lambda h0, a, b: jnp.sum(jnp.abs(scan(h0, a, b) * weight) ** 2)

    want = jax.grad(loss(plain), argnums=(0, 1, 2))(h0, a, b)
    for scan in (sequential_scan, lambda *args: chunked_scan(*args, 4)):
        got = jax.grad(loss(scan), argnums=(0, 1, 2))(h0, a, b)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
        tangents = coefficients((9, 4), dtype, seed=2)
        tangents = (tangents[2], tangents[0], tangents[1])
        _, want_t = jax.jvp(plain, (h0, a, b), tangents)
        _, got_t = jax.jvp(scan, (h0, a, b), tangents)
        np.testing.assert_allclose(got_t, want_t, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_the_scans_pass_check_grads():
    a, b, h0 = coefficients((5, 2), C128, seed=3)
    check_grads(lambda *args: sequential_scan(*args), (h0, a, b), order=2, modes=["fwd", "rev"])
    check_grads(lambda *args: chunked_scan(*args, 2), (h0, a, b), order=1, modes=["fwd", "rev"])


def test_chunked_scan_refuses_a_bad_chunk_size():
    a, b, h0 = coefficients((4, 2), F64)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        chunked_scan(h0, a, b, 0)
    with pytest.raises(ValueError, match="unroll must be a positive int"):
        sequential_scan(h0, a, b, 0)


def decay_cell(output=None, dtype=F64, mode="sequential"):
    """A LinearCell of an exponential moving average whose coefficients come back in ``dtype``."""

    def init(key, input_size):
        return (jax.random.normal(key, (2, input_size), F64),)

    def coefficients(params, p):
        return jnp.full((2,), 0.5, dtype), p.astype(dtype)

    return sr.LinearCell(init, lambda params: sr.RNNCarry(jnp.zeros((2,), dtype)), lambda params, x: params[0] @ x,
                         coefficients, output=output, mode=mode)


@pytest.mark.slow
@pytest.mark.parametrize("mode", sr.kinds.MODES)
def test_a_complex_output_is_refused_in_every_mode(mode):
    cell = decay_cell(dtype=C128, mode=mode)
    params = cell.init(jax.random.key(0), 3)
    with pytest.raises(ValueError, match=re.escape("a LinearCell's output must be real; got a complex state as the output")):
        sr.unroll(cell, params, jnp.ones((4, 3), F64))
    real = decay_cell(output=lambda params, h, p: h.real, dtype=C128, mode=mode)
    carry, ys = sr.unroll(real, params, jnp.ones((4, 3), F64))
    assert carry.h.dtype == C128 and ys.dtype == F64
    np.testing.assert_allclose(ys, loop(np.zeros(2), np.full((4, 2), 0.5), np.tile(params[0] @ np.ones(3), (4, 1))))
    leaky = decay_cell(output=lambda params, h, p: h, dtype=C128, mode=mode)
    with pytest.raises(ValueError, match="got a complex output from its output function"):
        sr.unroll(leaky, params, jnp.ones((4, 3), F64))


def test_coefficients_of_another_dtype_or_shape_are_refused():
    cell = decay_cell()
    params = cell.init(jax.random.key(0), 3)
    narrow = cell._replace(coefficients=lambda params, p: (jnp.full((2,), 0.5, jnp.float32), p.astype(jnp.float32)))
    with pytest.raises(ValueError, match=re.escape("must have the state's dtype float64 (carry.h); got float32 and float32")):
        sr.unroll(narrow, params, jnp.ones((4, 3), F64))
    wide = cell._replace(coefficients=lambda params, p: (jnp.full((3,), 0.5, F64), jnp.zeros((3,), F64)))
    with pytest.raises(ValueError, match=re.escape("must have the shape of the state carry.h, (2,); got (3,) and (3,)")):
        sr.unroll(wide, params, jnp.ones((4, 3), F64))
    with pytest.raises(ValueError, match=re.escape("a LinearCell's mode must be one of ['sequential', 'associative', 'chunked'], got 'parallel'")):
        sr.unroll(cell._replace(mode="parallel"), params, jnp.ones((4, 3), F64))
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        sr.unroll(cell._replace(mode="chunked", chunk_size=0), params, jnp.ones((4, 3), F64))

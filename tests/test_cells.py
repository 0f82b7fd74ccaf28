"""Each built-in cell against the NumPy implementation of its equations, and its initialisers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference
import scanrnn
from helpers import CASE_IDS, CASES, carry_tuple, make_cell, normal, random_carry, random_params

H, I = 5, 3
TOL = {jnp.float64: dict(rtol=1e-10, atol=1e-10), jnp.float32: dict(rtol=1e-5, atol=1e-5)}
GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3, "layer_norm_rnn": 1, "layer_norm_lstm": 4}


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case_id,name,options", CASES, ids=CASE_IDS)
def test_apply_matches_reference(key, case_id, name, options, dtype):
    cell = make_cell(name, options, H, param_dtype=dtype)
    params = random_params(cell, I, seed=1)
    carry = random_carry(cell, params, seed=2)
    xs = normal((3, I), seed=3, dtype=dtype)
    p = reference.as_numpy(params)
    expected_carry = carry_tuple(carry)
    # Three steps, so the carry the cell returns is fed back in.
    for x in xs:
        carry, y = cell.apply(params, carry, x)
        expected_carry, expected_y = reference.step(name, p, expected_carry, np.asarray(x, np.float64), **options)
        assert y.dtype == dtype and all(c.dtype == dtype for c in carry)
        assert type(carry) is type(cell.initial_carry(params))
        np.testing.assert_allclose(np.asarray(y, np.float64), expected_y, **TOL[dtype])
        for got, want in zip(carry, expected_carry):
            np.testing.assert_allclose(np.asarray(got, np.float64), want, **TOL[dtype])
    if name in ("lstm", "layer_norm_lstm"):  # the cell state is not the output
        assert not np.allclose(np.asarray(carry.c), np.asarray(carry.h))


@pytest.mark.parametrize("case_id,name,options", CASES, ids=CASE_IDS)
def test_one_input_feature(key, case_id, name, options):
    """I=1, where the GRU makes its input projection gate by gate (``gate_projection``)."""
    cell = make_cell(name, options, H, param_dtype=jnp.float64)
    params = random_params(cell, 1, seed=1)
    carry = random_carry(cell, params, seed=2)
    xs = normal((4, 1), seed=3)
    p = reference.as_numpy(params)
    expected_carry = carry_tuple(carry)
    for x in xs:
        carry, y = jax.jit(cell.apply)(params, carry, x)
        expected_carry, expected_y = reference.step(name, p, expected_carry, np.asarray(x), **options)
        np.testing.assert_allclose(np.asarray(y), expected_y, **TOL[jnp.float64])
    # The projection of a batch, in the scan's layout, is still x @ w_ih.T + b.
    if name in ("lstm", "gru"):
        want = np.asarray(xs) @ p["w_ih"].T + p["b_ih" if name == "gru" else "b"]
        np.testing.assert_allclose(jax.jit(jax.vmap(cell.project, in_axes=(None, 0)))(params, xs), want, rtol=1e-12)


@pytest.mark.parametrize("case_id,name,options", CASES, ids=CASE_IDS)
def test_apply_is_step_of_project(key, case_id, name, options):
    cell = make_cell(name, options, H, param_dtype=jnp.float64)
    params = random_params(cell, I, seed=1)
    carry = random_carry(cell, params, seed=2)
    x = normal((I,), seed=3)
    c1, y1 = cell.apply(params, carry, x)
    c2, y2 = cell.step(params, carry, cell.project(params, x))
    np.testing.assert_array_equal(y1, y2)
    jax.tree.map(np.testing.assert_array_equal, c1, c2)
    # project really is carry-independent: it depends on x.
    assert not np.allclose(cell.project(params, x), cell.project(params, x + 1.0))


@pytest.mark.parametrize("case_id,name,options", CASES, ids=CASE_IDS)
def test_initial_carry_is_zeros(key, case_id, name, options):
    cell = make_cell(name, options, H)
    params = cell.init(key, I)
    carry = cell.initial_carry(params)
    expected_type = scanrnn.LSTMCarry if name in ("lstm", "layer_norm_lstm") else scanrnn.RNNCarry
    assert type(carry) is expected_type
    for leaf in carry:
        assert leaf.shape == (H,) and leaf.dtype == jnp.float32
        assert not np.any(np.asarray(leaf))


def _glorot_limit(fan_in, fan_out):
    return math.sqrt(6.0 / (fan_in + fan_out))


@pytest.mark.parametrize("case_id,name,options", CASES, ids=CASE_IDS)
def test_default_init_follows_keras(key, case_id, name, options):
    cell = make_cell(name, options, H)
    params = cell.init(key, I)
    G = GATES[name]
    for leaf in jax.tree.leaves(params):
        assert leaf.dtype == jnp.float32

    # Glorot-uniform input kernel: fan_in I, fan_out G*H (Keras' kernel is [I, G*H]).
    w_ih = np.asarray(params.w_ih, np.float64)
    assert w_ih.shape == (G * H, I)
    limit = _glorot_limit(I, G * H)
    assert np.abs(w_ih).max() <= limit
    assert np.abs(w_ih).max() > 0.6 * limit  # spread over the whole interval, not a smaller one
    assert abs(w_ih.mean()) < 0.3 * limit

    # Orthogonal recurrent kernel: orthonormal columns of the [G*H, H] matrix.
    w_hh = np.asarray(params.w_hh, np.float64)
    assert w_hh.shape == (G * H, H)
    np.testing.assert_allclose(w_hh.T @ w_hh, np.eye(H), atol=1e-5)

    # Biases zero, except the LSTM forget gate's, which is forget_bias = 1.
    for field in ("b", "b_ih", "b_hh", "ln_offset", "ln_c_offset", "w_ci", "w_cf", "w_co"):
        if hasattr(params, field):
            value = np.asarray(getattr(params, field))
            if field == "b" and G == 4:
                np.testing.assert_array_equal(value[H : 2 * H], 1.0)
                value = np.concatenate([value[:H], value[2 * H :]])
            np.testing.assert_array_equal(value, 0.0)
    # Layer-norm gains one.
    for field in ("ln_scale", "ln_x_scale", "ln_h_scale", "ln_c_scale"):
        if hasattr(params, field):
            np.testing.assert_array_equal(np.asarray(getattr(params, field)), 1.0)


@pytest.mark.parametrize("name", ["lstm", "layer_norm_lstm"])
@pytest.mark.parametrize("forget_bias", [0.0, 2.5])
def test_forget_bias(key, name, forget_bias):
    params = getattr(scanrnn, name)(H, forget_bias=forget_bias).init(key, I)
    b = np.asarray(params.b)
    np.testing.assert_array_equal(b[H : 2 * H], forget_bias)
    np.testing.assert_array_equal(np.delete(b, np.s_[H : 2 * H]), 0.0)


def test_init_is_deterministic_in_the_key(key):
    cell = scanrnn.lstm(H)
    a, b = cell.init(key, I), cell.init(key, I)
    c = cell.init(jax.random.key(1), I)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert not np.allclose(a.w_ih, c.w_ih) and not np.allclose(a.w_hh, c.w_hh)
    assert not np.allclose(a.w_ih[:H], a.w_ih[H : 2 * H])  # gates drawn independently


@pytest.mark.parametrize("case_id,name,options", CASES, ids=CASE_IDS)
def test_param_dtype_float64(key, case_id, name, options):
    cell = make_cell(name, options, H, param_dtype=jnp.float64)
    shapes = jax.eval_shape(lambda k: cell.init(k, I), key)  # dtypes without compiling
    assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float64)}
    params = random_params(cell, I)
    carry, y = cell.apply(params, cell.initial_carry(params), jnp.ones((I,), jnp.float64))
    assert y.dtype == jnp.float64 and all(c.dtype == jnp.float64 for c in carry)


def _const(value):
    def init(key, shape, dtype):
        return jnp.full(shape, value, dtype)

    return init


def test_initializer_override(key):
    from jax.nn import initializers

    cell = scanrnn.simple_rnn(
        4, kernel_init=_const(0.5), recurrent_init=initializers.zeros, bias_init=_const(-0.25)
    )
    params = cell.init(key, 3)
    np.testing.assert_array_equal(params.w_ih, np.full((4, 3), 0.5))
    np.testing.assert_array_equal(params.w_hh, np.zeros((4, 4)))
    np.testing.assert_array_equal(params.b, np.full(4, -0.25))
    # The overridden params are used: h = tanh(0.5 * sum(x) - 0.25).
    _, y = cell.apply(params, cell.initial_carry(params), jnp.array([1.0, 2.0, 3.0], jnp.float32))
    np.testing.assert_allclose(y, np.full(4, np.tanh(2.75)), rtol=1e-6)

    # jax.nn.initializers work too, and every initialiser argument is honoured.
    cell = scanrnn.lstm(
        4,
        peephole=True,
        forget_bias=0.0,
        kernel_init=initializers.lecun_normal(in_axis=-1, out_axis=-2),
        recurrent_init=_const(0.125),
        bias_init=_const(0.5),
        peephole_init=_const(-1.0),
    )
    params = cell.init(key, 3)
    assert isinstance(params, scanrnn.PeepholeLSTMParams)
    np.testing.assert_array_equal(params.w_hh, np.full((16, 4), 0.125))
    np.testing.assert_array_equal(params.b[:4], 0.5)
    np.testing.assert_array_equal(params.b[4:8], 0.0)  # forget_bias still overrides its slice
    for w in (params.w_ci, params.w_cf, params.w_co):
        np.testing.assert_array_equal(w, np.full(4, -1.0))
    assert not np.allclose(params.w_ih, params.w_ih[0, 0])  # random, not constant

    params = scanrnn.layer_norm_lstm(H, scale_init=_const(2.0), bias_init=_const(0.5)).init(key, I)
    for gain in (params.ln_x_scale, params.ln_h_scale, params.ln_c_scale):
        np.testing.assert_array_equal(gain, 2.0)
    np.testing.assert_array_equal(params.ln_c_offset, 0.5)

    params = scanrnn.layer_norm_rnn(H, scale_init=_const(3.0)).init(key, I)
    np.testing.assert_array_equal(params.ln_scale, 3.0)
    params = scanrnn.gru(H, bias_init=_const(0.5)).init(key, I)
    np.testing.assert_array_equal(params.b_ih, 0.5)
    np.testing.assert_array_equal(params.b_hh, 0.5)


def test_layer_norm_rnn_ignores_bias_but_not_offset(key):
    """The centring of LN cancels a constant bias; the offset beta survives it."""
    cell = scanrnn.layer_norm_rnn(4, param_dtype=jnp.float64)
    params = random_params(cell, 3)
    carry = cell.initial_carry(params)
    x = jnp.array([0.3, -1.0, 2.0], jnp.float64)
    _, y = cell.apply(params, carry, x)
    _, y_shift = cell.apply(params._replace(b=params.b + 3.0), carry, x)
    _, y_offset = cell.apply(params._replace(ln_offset=params.ln_offset + 0.5), carry, x)
    np.testing.assert_allclose(y, y_shift, atol=1e-12)
    assert not np.allclose(y, y_offset)


def test_gru_forms_differ(key):
    """reset_after changes the function (with the same params) unless h is zero."""
    params = random_params(scanrnn.gru(4, param_dtype=jnp.float64), 3)
    h = scanrnn.RNNCarry(jnp.linspace(-1.0, 1.0, 4, dtype=jnp.float64))
    x = jnp.ones((3,), jnp.float64)
    _, a = scanrnn.gru(4, reset_after=True).apply(params, h, x)
    _, b = scanrnn.gru(4, reset_after=False).apply(params, h, x)
    assert not np.allclose(a, b)

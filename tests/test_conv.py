"""causal_conv against a NumPy loop of its definition; causality, length, gradients, serial, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import reference
import scanrnn
from helpers import assert_close, normal, random_params
from scanrnn import dense, recurrent, serial
from scanrnn.conv import ConvParams, causal_conv, conv_output_size

F, I, T = 3, 2, 11
F64 = jnp.float64


def conv_numpy(params, xs, dilation=1, stride=1, padding="causal", activation=None):
    """The docstring's sums, term by term: y[t] = phi(b + sum_j W[:, :, j] x[u_j]), x[u < 0] = 0."""
    w, b = (np.asarray(a, np.float64) for a in params)
    xs = np.asarray(xs, np.float64)
    K = w.shape[2]
    span = dilation * (K - 1)
    if padding == "causal":
        newest = range(0, len(xs), stride)  # output t is aligned with input s t
    else:
        newest = range(span, len(xs), stride)  # output t reads x[s t] .. x[s t + span]
    ys = []
    for u0 in newest:
        y = b.copy()
        for j in range(K):
            u = u0 - dilation * (K - 1 - j)
            if u >= 0:
                y = y + w[:, :, j] @ xs[u]
        ys.append(y)
    phi = (lambda z: z) if activation is None else reference.ACTIVATIONS[activation]
    return phi(np.stack(ys))


def conv_params(kernel_size, seed=0, input_size=I):
    layer = causal_conv(F, kernel_size, param_dtype=F64)
    return random_params(layer, input_size, seed=seed)


CONFIGS = [
    # kernel_size, dilation, stride, padding, activation
    (1, 1, 1, "causal", None),
    (3, 1, 1, "causal", "tanh"),
    (2, 4, 1, "causal", "relu"),
    (3, 2, 2, "causal", "sigmoid"),
    (4, 1, 2, "valid", None),  # the second seed's Conv1D(20, 4, strides=2, padding="valid")
    (2, 3, 3, "valid", "relu"),
    (4, 1, 1, "valid", None),
]


@pytest.mark.parametrize("kernel_size,dilation,stride,padding,activation", CONFIGS)
def test_against_numpy_loop(kernel_size, dilation, stride, padding, activation):
    layer = causal_conv(F, kernel_size, dilation=dilation, stride=stride, padding=padding,
                        activation=activation, param_dtype=F64)
    params = conv_params(kernel_size)
    xs = normal((T, I), seed=1)
    ys = layer.apply(params, xs)
    expected = conv_numpy(params, xs, dilation, stride, padding, activation)
    assert ys.shape == (conv_output_size(T, kernel_size, dilation=dilation, stride=stride, padding=padding), F)
    assert_close(ys, expected)


def test_output_sizes_literal():
    assert conv_output_size(50, 4, stride=2, padding="valid") == 24  # the seed's Conv1D in front of a GRU
    assert conv_output_size(50, 4, stride=2) == 25
    assert conv_output_size(50, 2, dilation=8) == 50
    assert conv_output_size(5, 3, dilation=2, padding="valid") == 1


@pytest.mark.parametrize("dilation,stride", [(1, 1), (2, 1), (1, 2), (3, 2)])
def test_causal(dilation, stride):
    """Changing x[t+1:] leaves every output aligned with an input <= t unchanged."""
    layer = causal_conv(F, 3, dilation=dilation, stride=stride, activation="tanh", param_dtype=F64)
    params = conv_params(3)
    xs = normal((T, I), seed=1)
    apply = jax.jit(layer.apply)
    ys = apply(params, xs)
    for t in range(T - 1):
        changed = jnp.concatenate([xs[: t + 1], normal((T - t - 1, I), seed=10 + t)])
        ys2 = apply(params, changed)
        n = t // stride + 1  # outputs aligned with inputs 0, s, 2s, ... <= t
        assert_close(ys2[:n], ys[:n])
        assert not np.allclose(ys2[n:], ys[n:])  # and the later ones do change


def test_valid_is_causal_in_its_alignment():
    layer = causal_conv(F, 4, stride=2, padding="valid", param_dtype=F64)
    params = conv_params(4)
    xs = normal((T, I), seed=1)
    ys = layer.apply(params, xs)
    changed = layer.apply(params, xs.at[8:].set(0.0))
    # output t reads inputs 2t .. 2t + 3: outputs 0, 1, 2 read inputs <= 7
    assert_close(changed[:3], ys[:3])
    assert not np.allclose(changed[3], ys[3])


def test_length_zeroes_outputs_past_it():
    layer = causal_conv(F, 3, dilation=2, activation="relu", param_dtype=F64)
    params = conv_params(3)
    xs = normal((T, I), seed=1)
    full = layer.apply(params, xs)
    ys = layer.apply(params, xs, length=5)
    assert_close(ys[:5], full[:5])
    np.testing.assert_array_equal(np.asarray(ys[5:]), 0.0)
    # A traced length under jit and vmap gives the same, example by example.
    lengths = jnp.array([0, 5, T])
    got = jax.jit(jax.vmap(layer.apply, in_axes=(None, 0, 0)))(params, jnp.stack([xs] * 3), lengths)
    for b, n in enumerate([0, 5, T]):
        assert_close(got[b], layer.apply(params, xs, length=n))


def test_init_shapes_dtype_and_fans():
    layer = causal_conv(20, 4, stride=2, padding="valid")
    params = layer.init(jax.random.key(0), 1)
    assert isinstance(params, ConvParams)
    assert params.w.shape == (20, 1, 4) and params.b.shape == (20,)
    assert params.w.dtype == jnp.float32
    assert sum(p.size for p in params) == 100  # Keras' Conv1D(20, 4) on one channel: 4 * 20 + 20
    # Glorot-uniform with fans I K = 4 and F K = 80: limit sqrt(6 / 84).
    limit = np.sqrt(6.0 / 84.0)
    w = np.asarray(params.w)
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.5 * limit
    np.testing.assert_array_equal(np.asarray(params.b), 0.0)


def test_grads():
    layer = causal_conv(F, 3, dilation=2, stride=2, activation="tanh", param_dtype=F64)
    params = conv_params(3)
    xs = normal((T, I), seed=1)
    check_grads(jax.jit(layer.apply), (params, xs), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6, eps=1e-6)

    def masked(params, xs):
        return layer_len.apply(params, xs, length=7)

    layer_len = causal_conv(F, 3, dilation=2, activation="relu", param_dtype=F64)
    check_grads(jax.jit(masked), (params, xs), order=1, modes=("rev",), atol=1e-6, rtol=1e-6, eps=1e-6)


@pytest.mark.slow
def test_serial_with_recurrent_layers():
    """conv -> GRU -> dense (the seed's model) equals the three applied by hand; grads flow."""
    conv = causal_conv(4, 4, stride=2, padding="valid", param_dtype=F64)
    cell = scanrnn.gru(5, param_dtype=F64)
    out = dense(2, param_dtype=F64)
    model = serial(conv, recurrent(cell), out)
    # serial threads the conv's feature size into the GRU (traced only: nothing compiles).
    shapes = jax.eval_shape(lambda k: model.init(k, I), jax.random.key(0))
    assert shapes[0].w.shape == (4, I, 4) and shapes[1].w_ih.shape == (15, 4) and shapes[2].w.shape == (2, 5)
    params = random_params(model, I, seed=2)
    xs = normal((T, I), seed=1)
    feats = conv_numpy(params[0], xs, stride=2, padding="valid")  # [4, 4]
    _, hs = scanrnn.unroll(cell, params[1], jnp.asarray(feats))
    expected = np.asarray(hs) @ np.asarray(params[2].w).T + np.asarray(params[2].b)
    assert_close(model.apply(params, xs), expected, rtol=1e-9)
    # The WaveNet-style stack with length, under vmap and jit.
    wavenet = serial(*[causal_conv(4, 2, dilation=d, activation="relu", param_dtype=F64) for d in (1, 2, 4)],
                     causal_conv(2, 1, param_dtype=F64))
    wparams = random_params(wavenet, I, seed=3)
    ys = jax.jit(jax.vmap(wavenet.apply, in_axes=(None, 0, 0)))(wparams, jnp.stack([xs, xs]), jnp.array([4, T]))
    assert ys.shape == (2, T, 2)
    np.testing.assert_array_equal(np.asarray(ys[0, 4:]), 0.0)
    assert_close(ys[0, :4], ys[1, :4])
    grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply(p, xs) ** 2)))(params)
    assert all(np.all(np.isfinite(np.asarray(g))) and np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads))


def test_errors():
    with pytest.raises(ValueError, match="features must be a positive int"):
        causal_conv(0, 3)
    with pytest.raises(ValueError, match="kernel_size must be a positive int, got 2.0"):
        causal_conv(3, 2.0)
    with pytest.raises(ValueError, match="dilation must be a positive int"):
        causal_conv(3, 2, dilation=0)
    with pytest.raises(ValueError, match="stride must be a positive int"):
        causal_conv(3, 2, stride=-1)
    with pytest.raises(ValueError, match=r"padding must be one of \('causal', 'valid'\), got 'same'"):
        causal_conv(3, 2, padding="same")
    with pytest.raises(ValueError, match="activation must be one of"):
        causal_conv(3, 2, activation="gelu")
    with pytest.raises(ValueError, match="input_size must be a positive int"):
        causal_conv(3, 2).init(jax.random.key(0), 0)

    layer = causal_conv(F, 3, param_dtype=F64)
    params = conv_params(3)
    xs = normal((T, I), seed=1)
    with pytest.raises(ValueError, match=r"needs a sequence \[T, input_size\], got a vector of shape \(2,\)"):
        layer.apply(params, xs[0])
    with pytest.raises(ValueError, match=r"xs must have shape \[T, input_size\].*got shape \(1, 11, 2\)"):
        layer.apply(params, xs[None])
    with pytest.raises(ValueError, match=r"xs must have shape \[T, 2\].*got \(11, 3\)"):
        layer.apply(params, normal((T, 3)))
    with pytest.raises(ValueError, match="xs must have the params' dtype float64, got float32"):
        layer.apply(params, xs.astype(jnp.float32))
    with pytest.raises(ValueError, match=r"params must have w \[3, I, 3\] and b \[3\], got w \(3, 2, 2\)"):
        layer.apply(conv_params(2), xs)
    with pytest.raises(ValueError, match="expects params of type ConvParams, got tuple"):
        layer.apply(tuple(params), xs)
    with pytest.raises(ValueError, match=r"length must lie in \[0, 11\]"):
        layer.apply(params, xs, length=12)
    strided = causal_conv(F, 3, stride=2, param_dtype=F64)
    with pytest.raises(ValueError, match=r"length needs stride=1 and padding='causal' \(outputs aligned with inputs\), got stride=2"):
        strided.apply(params, xs, length=4)


def test_valid_shorter_than_its_window_gives_no_steps():
    valid = causal_conv(F, 3, dilation=5, padding="valid", param_dtype=F64)
    params = conv_params(3)
    xs = normal((T, I), seed=1)
    assert valid.apply(params, xs[:10]).shape == (0, F)
    assert_close(valid.apply(params, xs), conv_numpy(params, xs, dilation=5, padding="valid"))

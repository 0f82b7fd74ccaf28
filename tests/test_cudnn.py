"""The cuDNN path of the LSTM layers, on a CPU: packing, batching and gradients through ``lstm_ref``.

cuDNN itself needs a CUDA GPU. Everything around it runs here: scanrnn's
params packed into cuDNN's weight vector (checked against
``jax.experimental.rnn``'s own unpacking), one sequence or a ``vmap``-ped
batch handed to the kernel as one batched call, outputs, final states and
gradients with respect to scanrnn's params, with ``jax.experimental.rnn.lstm_ref``
(a pure-JAX LSTM that reads the same packed vector) in the kernel's place.
They must equal scanrnn's scan to 1e-5 in float32, with lengths, reverse,
bidirectional layers and two stacked layers. And every refusal is checked.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn

import scanrnn as sr
from scanrnn import cudnn

F32 = jnp.float32
I, H, T, B = 3, 4, 6, 3
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture
def on_reference(monkeypatch):
    """cuDNN's place taken by the reference kernel, and the backend check told it is on a GPU."""
    calls = []

    def kernel(x, *args):
        calls.append(x.shape)
        return cudnn.KERNELS["reference"](x, *args)

    monkeypatch.setitem(cudnn.KERNELS, "cudnn", kernel)
    monkeypatch.setattr(cudnn, "_backend", lambda: "gpu")
    cudnn._PER_SEQUENCE.clear()
    yield calls
    cudnn._PER_SEQUENCE.clear()


def random_lstm_params(key, input_size, directions=None):
    """LSTMParams with every entry random (biases too), optionally stacked over directions."""
    def one(k):
        k1, k2, k3 = jax.random.split(k, 3)
        return sr.LSTMParams(
            0.5 * jax.random.normal(k1, (4 * H, input_size), F32),
            0.5 * jax.random.normal(k2, (4 * H, H), F32),
            0.5 * jax.random.normal(k3, (4 * H,), F32),
        )

    if directions is None:
        return one(key)
    return jax.vmap(one)(jax.random.split(key, directions))


def data(seed=0):
    rng = np.random.default_rng(seed)
    xs = jnp.asarray(rng.normal(size=(B, T, I)), F32)
    lengths = jnp.array([T, 3, 0])
    return xs, lengths


# --------------------------------------------------------------------------
# Packing.


@pytest.mark.slow
def test_pack_matches_jax_experimental_rnn_layout_and_unpack_inverts_it():
    """2 bidirectional layers: jax's own unpacking of our vector gives back each matrix; unpack is its inverse."""
    key = jax.random.key(0)
    layers = [random_lstm_params(jax.random.fold_in(key, 0), I, 2), random_lstm_params(jax.random.fold_in(key, 1), 2 * H, 2)]
    weights = cudnn.pack(layers, bidirectional=True)
    assert weights.shape == (rnn.get_num_params_in_lstm(I, H, 2, True),)
    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(weights, I, H, 2, True)
    for layer, params in enumerate(layers):
        for d in range(2):
            np.testing.assert_array_equal(w_ih[2 * layer + d], params.w_ih[d])
            np.testing.assert_array_equal(w_hh[2 * layer + d], params.w_hh[d])
            np.testing.assert_array_equal(b_ih[2 * layer + d], params.b[d])
            np.testing.assert_array_equal(b_hh[2 * layer + d], np.zeros(4 * H))
    back = cudnn.unpack(weights, I, H, 2, True)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(layers)):
        np.testing.assert_array_equal(a, b)
    one = random_lstm_params(key, I)
    np.testing.assert_array_equal(cudnn.unpack(cudnn.pack([one]), I, H)[0].w_hh, one.w_hh)
    with pytest.raises(ValueError, match=re.escape("cuDNN's weight vector for these sizes has")):
        cudnn.unpack(weights[:-1], I, H, 2, True)


# --------------------------------------------------------------------------
# One direction: the reference kernel against scanrnn's scan.


@pytest.mark.slow
@pytest.mark.parametrize("reverse", [False, True])
def test_one_direction_equals_the_scan_batched_and_alone(on_reference, reverse):
    cell = sr.lstm(H)
    params = random_lstm_params(jax.random.key(1), I)
    xs, lengths = data()
    carry = jax.vmap(lambda k: sr.LSTMCarry(*jax.random.normal(k, (2, H), F32)))(jax.random.split(jax.random.key(2), B))
    fast, slow = sr.Execution(cudnn=True), sr.Execution()

    def loss(params, execution, x, c, n):
        final, ys = sr.unroll(cell, params, x, c, length=n, reverse=reverse, execution=execution)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(final.h * final.c), (final, ys)

    def batch_loss(params, execution):
        losses, outs = jax.vmap(loss, in_axes=(None, None, 0, 0, 0))(params, execution, xs, carry, lengths)
        return losses.sum(), outs

    (value, (final, ys)), grads = jax.jit(jax.value_and_grad(batch_loss, has_aux=True), static_argnums=1)(params, fast)
    (value_, (final_, ys_)), grads_ = jax.jit(jax.value_and_grad(batch_loss, has_aux=True), static_argnums=1)(params, slow)
    assert on_reference and on_reference[-1][0] == B  # one call over the whole batch
    np.testing.assert_allclose(ys, ys_, **TOL)
    assert bool((ys[1, 3:] == 0).all()) and bool((ys[2] == 0).all())
    for a, b in zip(jax.tree.leaves((final, grads)), jax.tree.leaves((final_, grads_))):
        np.testing.assert_allclose(a, b, **TOL)
    np.testing.assert_allclose(value, value_, **TOL)
    np.testing.assert_array_equal(final.h[2], carry.h[2])  # length 0: the carry unchanged
    # Alone (no vmap): a call over a batch of one, differentiable directly.
    on_reference.clear()
    g1 = jax.grad(lambda p: loss(p, fast, xs[1], jax.tree.map(lambda a: a[1], carry), lengths[1])[0])(params)
    g2 = jax.grad(lambda p: loss(p, slow, xs[1], jax.tree.map(lambda a: a[1], carry), lengths[1])[0])(params)
    assert on_reference == [(1, T, I)]
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, **TOL)


@pytest.mark.slow
def test_bidirectional_two_layer_model_equals_the_scan(on_reference):
    """serial(bidirectional(lstm), bidirectional(lstm), dense): outputs and gradients, with lengths."""
    def model(execution):
        layer = sr.bidirectional(sr.lstm(H), execution=execution)
        return sr.serial(layer, layer, sr.dense(2))

    fast, slow = model(sr.Execution(cudnn=True)), model(sr.Execution())
    params = slow.init(jax.random.key(3), I)
    params = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(4), a.shape, a.dtype), params)
    xs, lengths = data(1)

    def loss(m):
        def f(p):
            ys = jax.vmap(m.apply, in_axes=(None, 0, 0))(p, xs, lengths)
            return jnp.sum(ys**2), ys
        return f

    (v1, ys1), g1 = jax.jit(jax.value_and_grad(loss(fast), has_aux=True))(params)
    (v2, ys2), g2 = jax.jit(jax.value_and_grad(loss(slow), has_aux=True))(params)
    # One batched call per layer (the calls over one example are serial's shape probes, jax.eval_shape).
    assert [shape for shape in on_reference if shape[0] == B] == [(B, T, I), (B, T, 2 * H)]
    np.testing.assert_allclose(ys1, ys2, **TOL)
    np.testing.assert_allclose(v1, v2, **TOL)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, **TOL)


@pytest.mark.slow
def test_bidirectional_final_carries_and_input_dropout(on_reference):
    """The stacked final carries equal the scan's; with input dropout each direction is its own call."""
    cell = sr.lstm(H)
    params = random_lstm_params(jax.random.key(5), I, 2)
    xs, lengths = data(2)
    fast, slow = sr.Execution(cudnn=True), sr.Execution()
    run = lambda e, x, n: sr.unroll_bidirectional(cell, params, x, length=n, execution=e)  # noqa: E731
    c1, y1 = jax.vmap(run, in_axes=(None, 0, 0))(fast, xs, lengths)
    c2, y2 = jax.vmap(run, in_axes=(None, 0, 0))(slow, xs, lengths)
    for a, b in zip(jax.tree.leaves((c1, y1)), jax.tree.leaves((c2, y2))):
        np.testing.assert_allclose(a, b, **TOL)
    on_reference.clear()
    reg, key = sr.Regularization(dropout=0.5), jax.random.key(6)
    drop = lambda e: sr.unroll_bidirectional(cell, params, xs[0], execution=e, regularization=reg, key=key)  # noqa: E731
    for a, b in zip(jax.tree.leaves(drop(fast)), jax.tree.leaves(drop(slow))):
        np.testing.assert_allclose(a, b, **TOL)
    assert on_reference == [(1, T, I), (1, T, I)]


@pytest.mark.slow
def test_from_torch_style_model_takes_the_execution(on_reference):
    torch = pytest.importorskip("torch")
    from scanrnn.interop import from_torch

    torch.manual_seed(0)
    module = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True)
    fast, params = from_torch(module, execution=sr.Execution(cudnn=True))
    slow, _ = from_torch(module)
    xs, lengths = data(3)
    apply = lambda m: jax.vmap(m.apply, in_axes=(None, 0, 0))(params, xs, lengths)  # noqa: E731
    np.testing.assert_allclose(apply(fast), apply(slow), **TOL)


# --------------------------------------------------------------------------
# Refusals.


def test_cpu_backend_is_refused():
    layer = sr.recurrent(sr.lstm(H), execution=sr.Execution(cudnn=True))
    params = layer.init(jax.random.key(0), I)
    with pytest.raises(ValueError, match=re.escape(
            f"Execution(cudnn=True) needs a CUDA GPU (cuDNN's LSTM has no lowering elsewhere); the default backend is "
            f"{jax.default_backend()!r}")):
        layer.apply(params, jnp.ones((T, I), F32))


@pytest.mark.parametrize("cell", [
    sr.lstm(H, peephole=True), sr.layer_norm_lstm(H), sr.gru(H), sr.lstm(H, compute_dtype=jnp.bfloat16), sr.min_gru(H),
], ids=["peephole", "layer_norm", "gru", "bfloat16", "min_gru"])
def test_cells_other_than_cudnns_lstm_are_refused(cell):
    with pytest.raises(ValueError, match=re.escape("Execution(cudnn=True) runs cuDNN's LSTM: cells of scanrnn.lstm")):
        cudnn.check(cell, sr.Regularization(), sr.Execution(cudnn=True), backend="gpu")


@pytest.mark.parametrize("options, message", [
    (dict(regularization=sr.Regularization(recurrent_dropout=0.1)), "cannot apply recurrent dropout"),
    (dict(regularization=sr.Regularization(zoneout=0.1)), "cannot apply zoneout"),
    (dict(execution=sr.Execution(cudnn=True, backward="hand")), "backward='hand' (use 'autodiff')"),
    (dict(execution=sr.Execution(cudnn=True, remat="sqrt")), "remat='sqrt' (use 'none')"),
])
def test_options_cudnn_cannot_take_are_refused(options, message):
    options = dict(dict(regularization=sr.Regularization(), execution=sr.Execution(cudnn=True)), **options)
    with pytest.raises(ValueError, match=re.escape(message)):
        cudnn.check(sr.lstm(H), options["regularization"], options["execution"], backend="gpu")


def test_float64_params_and_a_bad_flag_are_refused(on_reference):
    cell = sr.lstm(H, param_dtype=jnp.float64)
    params = cell.init(jax.random.key(0), I)
    with pytest.raises(ValueError, match=re.escape("Execution(cudnn=True) needs float32 params (cuDNN's LSTM here), got float64")):
        sr.unroll(cell, params, jnp.ones((T, I), jnp.float64), execution=sr.Execution(cudnn=True))
    with pytest.raises(TypeError, match="execution.cudnn"):
        sr.unroll(sr.lstm(H), params, jnp.ones((T, I)), execution=sr.Execution(cudnn="yes"))

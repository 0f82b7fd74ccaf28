"""The hand-written BPTT of scanrnn.teaching_bptt against jax.grad / jax.vjp of the library's models (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scanrnn
from helpers import normal, random_carry, random_params
from scanrnn import teaching_bptt, dense, recurrent, serial, simple_rnn, unroll
from scanrnn.train import mse

F64 = jnp.float64
TOL = dict(rtol=1e-6, atol=1e-6)


def assert_trees_close(got, expected):
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        assert g.shape == e.shape and g.dtype == e.dtype
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), **TOL)


def seed_model(widths, activations, features=1):
    """serial(recurrent(simple_rnn(H_1)), ..., recurrent(simple_rnn(H_L), return_sequences=False), dense(F))."""
    layers = [recurrent(simple_rnn(h, a, param_dtype=F64)) for h, a in zip(widths[:-1], activations[:-1])]
    layers.append(recurrent(simple_rnn(widths[-1], activations[-1], param_dtype=F64), return_sequences=False))
    return serial(*layers, dense(features, param_dtype=F64))


# (widths, activations, input size, T, outputs F): depths 1-3, both of the
# seed's activations and relu, mixed activations, length 1, several outputs.
MODELS = [
    ((6, 4), ("sigmoid", "sigmoid"), 1, 7, 1),  # the first seed's network
    ((5,), ("sigmoid",), 2, 1, 1),
    ((3,), ("tanh",), 3, 4, 2),
    ((7, 2), ("tanh", "tanh"), 1, 1, 3),
    ((4, 3, 5), ("sigmoid", "relu", "tanh"), 2, 5, 1),
]


@pytest.mark.slow
@pytest.mark.parametrize("widths,activations,inputs,steps,features", MODELS)
def test_simple_rnn_bptt_equals_jax_grad(widths, activations, inputs, steps, features):
    model = seed_model(widths, activations, features)
    params = random_params(model, inputs, seed=1)  # non-zero biases, so their gradients are tested too
    xs = normal((steps, inputs), seed=2)
    target = normal((features,), seed=3)
    act = activations[0] if len(set(activations)) == 1 else activations

    @jax.jit
    def both(p, x, t):
        reference = jax.value_and_grad(lambda p: mse(model.apply(p, x), t))(p)
        return teaching_bptt.simple_rnn_bptt(p, x, t, act), reference

    (loss, grads), (ref_loss, ref_grads) = both(params, xs, target)

    np.testing.assert_allclose(float(loss), float(ref_loss), **TOL)
    assert_trees_close(grads, ref_grads)
    # None trivially zero, except W_hh after one step from h_0 = 0.
    nonzero = [g for p in grads for f, g in zip(p._fields, p) if not (steps == 1 and f == "w_hh")]
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in nonzero)


@pytest.mark.slow
def test_simple_rnn_bptt_batches_under_vmap():
    """The mean of vmapped per-example gradients is the gradient of the batch's mean loss."""
    model = seed_model((3, 2), ("sigmoid", "sigmoid"))
    params = random_params(model, 1, seed=4)
    xs, targets = normal((5, 4, 1), seed=5), normal((5, 1), seed=6)

    def batch_loss(p):
        return jnp.mean(jax.vmap(lambda x, t: mse(model.apply(p, x), t))(xs, targets))

    @jax.jit
    def both(p):
        return jax.vmap(teaching_bptt.simple_rnn_bptt, in_axes=(None, 0, 0))(p, xs, targets), jax.value_and_grad(batch_loss)(p)

    (losses, grads), (ref_loss, ref_grads) = both(params)
    np.testing.assert_allclose(float(jnp.mean(losses)), float(ref_loss), **TOL)
    assert_trees_close(jax.tree.map(lambda g: jnp.mean(g, axis=0), grads), ref_grads)


# One layer with upstream cotangents, against jax.vjp of scanrnn.unroll.
LAYERS = [
    ("simple_rnn-tanh", lambda h: scanrnn.simple_rnn(h, "tanh", param_dtype=F64),
     lambda *a: teaching_bptt.simple_rnn_layer_bptt(*a, activation="tanh")),
    ("lstm", lambda h: scanrnn.lstm(h, param_dtype=F64), teaching_bptt.lstm_layer_bptt),
    ("lstm-peephole", lambda h: scanrnn.lstm(h, peephole=True, param_dtype=F64), teaching_bptt.lstm_layer_bptt),
    ("gru-reset_after", lambda h: scanrnn.gru(h, param_dtype=F64), teaching_bptt.gru_layer_bptt),
    ("gru-cho", lambda h: scanrnn.gru(h, reset_after=False, param_dtype=F64),
     lambda *a: teaching_bptt.gru_layer_bptt(*a, reset_after=False)),
]


# Every layer over 6 steps, and the gated cells over one step as well.
LAYER_CASES = [(*layer, 6, 4, 3) for layer in LAYERS] + [(*layer, 1, 3, 2) for layer in LAYERS[1:4:2]]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,make,layer_bptt,steps,hidden,inputs", LAYER_CASES, ids=[f"{c[0]}-T{c[3]}" for c in LAYER_CASES]
)
def test_layer_bptt_equals_vjp_of_unroll(name, make, layer_bptt, steps, hidden, inputs):
    cell = make(hidden)
    params = random_params(cell, inputs, seed=1)
    carry = random_carry(cell, params, seed=2)
    dcarry = random_carry(cell, params, seed=3)
    xs, dys = normal((steps, inputs), seed=4), normal((steps, hidden), seed=5)

    @jax.jit
    def both(p, c, x, dc, dy):
        out, vjp = jax.vjp(lambda p, c, x: unroll(cell, p, x, c), p, c, x)
        return layer_bptt(p, x, dy, c, dc), (out, vjp((dc, dy)))

    (got_out, grads), (out, (ref_params, ref_carry, ref_xs)) = both(params, carry, xs, dcarry, dys)

    assert_trees_close(got_out, out)  # the hand-written forward pass is the cell's
    assert isinstance(grads, teaching_bptt.BPTTGrads)
    assert_trees_close(grads.params, ref_params)
    assert_trees_close(grads.carry, ref_carry)
    assert_trees_close(grads.xs, ref_xs)


@pytest.mark.slow
def test_layer_bptt_defaults_are_zero_carries():
    """carry=None starts from zeros and dcarry=None sends no signal into the last step."""
    cell = scanrnn.lstm(3, param_dtype=F64)
    params = random_params(cell, 2, seed=1)
    xs, dys = normal((4, 2), seed=2), normal((4, 3), seed=3)

    @jax.jit
    def run(p):
        zero = cell.initial_carry(p)
        _, vjp = jax.vjp(lambda p: unroll(cell, p, xs)[1], p)
        return teaching_bptt.lstm_layer_bptt(p, xs, dys)[1], teaching_bptt.lstm_layer_bptt(p, xs, dys, zero, zero)[1], vjp(dys)[0]

    grads, explicit, reference = run(params)
    assert_trees_close(grads, explicit)
    assert_trees_close(grads.params, reference)


@pytest.mark.slow
def test_errors_name_what_was_expected():
    model = seed_model((3, 2), ("sigmoid", "sigmoid"))
    params = model.init(jax.random.key(0), 1)
    xs, target = jnp.ones((4, 1), F64), jnp.ones((1,), F64)
    with pytest.raises(ValueError, match="2 names"):
        teaching_bptt.simple_rnn_bptt(params, xs, target, ("sigmoid",))
    with pytest.raises(ValueError, match="target must have shape"):
        teaching_bptt.simple_rnn_bptt(params, xs, jnp.ones((2,), F64))
    with pytest.raises(ValueError, match="DenseParams"):
        teaching_bptt.simple_rnn_bptt(params[:2], xs, target)
    with pytest.raises(ValueError, match="activation must be one of"):
        teaching_bptt.simple_rnn_bptt(params, xs, target, "softplus")
    with pytest.raises(ValueError, match="x must have shape"):
        teaching_bptt.simple_rnn_bptt(params, jnp.ones((4, 2), F64), target)

    cell = scanrnn.gru(3, param_dtype=F64)
    gru_params = random_params(cell, 2)
    with pytest.raises(ValueError, match="dys must have shape"):
        teaching_bptt.gru_layer_bptt(gru_params, jnp.ones((4, 2), F64), jnp.ones((4, 2), F64))
    with pytest.raises(ValueError, match="LSTMParams or PeepholeLSTMParams"):
        teaching_bptt.lstm_layer_bptt(gru_params, jnp.ones((4, 2), F64), jnp.ones((4, 3), F64))
    with pytest.raises(ValueError, match="w_ih must have shape"):
        bad = gru_params._replace(w_ih=jnp.ones((6, 2), F64))
        teaching_bptt.gru_layer_bptt(bad, jnp.ones((4, 2), F64), jnp.ones((4, 3), F64))

"""Gradients through time and recurrent spectra, against slow references.

The reference for ``hidden_state_gradients`` differentiates with respect to
each carry separately: for every ``t`` it takes the carry after step ``t``
from a Python loop of ``cell.apply``, re-runs the rest of the sequence from
it, and calls ``jax.grad`` of the loss with respect to that one carry. No
perturbation trick, no scan, no ``project``/``step``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scanrnn as sr
from helpers import (
    CASES,
    FACTORY_CASES,
    FACTORY_IDS,
    assert_close,
    counting_cell,
    elman,
    loop,
    make_cell,
    normal,
    random_carry,
    random_params,
)
from scanrnn import Cell
from scanrnn.diagnostics import gradient_norms, hidden_state_gradients, recurrent_spectrum, spectral_radius

H, I, T = 3, 2, 5
F64 = jnp.float64
# Every factory and form, the plain LSTM, and every activation of the simple RNN (the layer-normalised
# RNN's activations go through the same code).
GRADIENT_CASES = [c for c in CASES if c in FACTORY_CASES or c[1] in ("simple_rnn", "lstm")]
# The traced-length and deeper-model tests below cover the GRUs.
LENGTH_CASES = [c for c in FACTORY_CASES if c[0] in ("lstm-peephole", "layer_norm_rnn-tanh")]


def stack(trees):
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def reference_gradients(cell, params, xs, loss_fn, carry, out, n=None):
    """dL/d carry_t for each t, one jax.grad per t over a re-run of the sequence's tail.

    ``out(carry_t)`` is the output of step t as a function of its carry.
    """
    steps = len(xs)
    n = steps if n is None else n
    carries, ys = [], []
    c = carry
    for x in xs[:n]:
        c, y = cell.apply(params, c, x)
        carries.append(c)
        ys.append(y)
    zero_y = jax.tree.map(jnp.zeros_like, cell.apply(params, carry, xs[0])[1])
    zero_c = jax.tree.map(jnp.zeros_like, carry)
    grads = []
    for t in range(steps):
        if t >= n:  # past the length nothing depends on the carry
            grads.append(zero_c)
            continue

        def loss_from(c_t, t=t):
            outputs = ys[:t] + [out(c_t)]
            c = c_t
            for x in xs[t + 1 : n]:
                c, y = cell.apply(params, c, x)
                outputs.append(y)
            return loss_fn(stack(outputs + [zero_y] * (steps - n)), c)

        grads.append(jax.grad(loss_from)(carries[t]))
    return stack(grads)


def weighted_loss(ys, final):
    """A loss that reads every output and the whole final carry, non-linearly."""
    weights = normal(ys.shape, seed=11)
    carry_term = sum(jnp.sum(jnp.cos(leaf)) for leaf in jax.tree.leaves(final))
    return jnp.sum(jnp.tanh(ys) * weights) + carry_term


def setup(name, options, seed=1):
    cell = make_cell(name, options, H, param_dtype=F64)
    params = random_params(cell, I, seed=seed)
    return cell, params, random_carry(cell, params, seed=seed + 1), normal((T, I), seed=seed + 2)


@pytest.mark.slow
@pytest.mark.parametrize("case_id,name,options", GRADIENT_CASES, ids=[c[0] for c in GRADIENT_CASES])
def test_every_cell_matches_the_per_step_reference(case_id, name, options):
    cell, params, carry, xs = setup(name, options)
    grads = hidden_state_gradients(cell, params, xs, weighted_loss, carry)
    expected = reference_gradients(cell, params, xs, weighted_loss, carry, out=lambda c: c.h)
    assert type(grads) is type(carry)
    assert all(leaf.shape == (T, H) for leaf in jax.tree.leaves(grads))
    assert_close(grads, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("case_id,name,options", LENGTH_CASES, ids=[c[0] for c in LENGTH_CASES])
def test_length_gives_zero_gradient_past_it(case_id, name, options):
    cell, params, carry, xs = setup(name, options, seed=4)
    n = 4
    grads = hidden_state_gradients(cell, params, xs, weighted_loss, carry, length=n)
    expected = reference_gradients(cell, params, xs, weighted_loss, carry, out=lambda c: c.h, n=n)
    assert_close(grads, expected, rtol=1e-9, atol=1e-12)
    assert float(gradient_norms(grads)[n - 1]) > 0
    np.testing.assert_array_equal(np.asarray(gradient_norms(grads)[n:]), 0.0)


@pytest.mark.slow
def test_traced_length_under_jit_and_vmap():
    cell, params, carry, _ = setup("gru", {"reset_after": False}, seed=7)
    xs = normal((3, T, I), seed=8)
    lengths = jnp.asarray([T, 2, 0])

    def one(x, n):
        return hidden_state_gradients(cell, params, x, weighted_loss, carry, length=n)

    batched = jax.jit(jax.vmap(one))(xs, lengths)
    for b in range(3):
        expected = reference_gradients(cell, params, xs[b], weighted_loss, carry, out=lambda c: c.h, n=int(lengths[b]))
        assert_close(jax.tree.map(lambda leaf: leaf[b], batched), expected, rtol=1e-9, atol=1e-12)


def elman_params(seed):
    return {"w": normal((H, I), seed), "u": normal((H, H), seed + 1), "b": normal((H,), seed + 2)}


def test_user_cell_without_project_or_step():
    cell = elman(H)
    params = elman_params(0)
    _, _, _, xs = setup("simple_rnn", {})
    grads = hidden_state_gradients(cell, params, xs, weighted_loss)
    expected = reference_gradients(cell, params, xs, weighted_loss, cell.initial_carry(params), out=lambda c: c)
    assert_close(grads, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_user_cell_with_derived_outputs_needs_output():
    cell = counting_cell(H)  # carry {"h", "n"}, output (h, [sum h, sum h^2])
    params = elman_params(1)
    xs = normal((T, I), seed=3)

    def loss(ys, final):
        h, stats = ys
        return jnp.sum(jnp.sin(h)) + jnp.sum(stats[:, 1] * jnp.arange(T, dtype=F64)) + final["n"] * jnp.sum(final["h"])

    def output(c):
        return c["h"], jnp.stack([jnp.sum(c["h"]), jnp.sum(c["h"] * c["h"])])

    with pytest.raises(ValueError, match="1 leaf/leaves of the cell's output are not leaves of its new carry"):
        hidden_state_gradients(cell, params, xs, loss)
    grads = hidden_state_gradients(cell, params, xs, loss, output=output)
    expected = reference_gradients(cell, params, xs, loss, cell.initial_carry(params), out=output)
    assert_close(grads, expected, rtol=1e-9, atol=1e-12)
    assert float(jnp.abs(grads["n"]).max()) > 0  # the counter reaches the loss through the final carry


@pytest.mark.slow
def test_many_to_one_model_last_step_is_the_direct_gradient():
    """The loss of ``serial(recurrent(cell, return_sequences=False), dense(1))``."""
    cell, dense = sr.lstm(H, param_dtype=F64), sr.dense(1, param_dtype=F64)
    params = (random_params(cell, I, seed=2), sr.DenseParams(normal((1, H), seed=3), normal((1,), seed=4)))
    xs, target = normal((T, I), seed=5), jnp.asarray([0.3], F64)

    def loss(ys, final):
        return sr.train.mse(dense.apply(params[1], sr.last_valid(ys)), target)

    grads = hidden_state_gradients(cell, params[0], xs, loss)
    expected = reference_gradients(cell, params[0], xs, loss, cell.initial_carry(params[0]), out=lambda c: c.h)
    assert_close(grads, expected, rtol=1e-9, atol=1e-12)
    # At the last step only the output path is left: dL/dh = 2 (pred - y) w, dL/dc = 0.
    pred = dense.apply(params[1], loop(cell, params[0], xs)[0].h)
    np.testing.assert_allclose(np.asarray(grads.h[-1]), np.asarray(2 * (pred - target)[0] * params[1].w[0]), rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(grads.c[-1]), 0.0)


@pytest.mark.slow
def test_first_layer_of_a_deeper_model():
    """The rest of ``serial(recurrent(gru), recurrent(lstm), dense(1))`` as the loss of the first layer."""
    first, second = sr.gru(H, param_dtype=F64), sr.lstm(2, param_dtype=F64)
    rest = sr.serial(sr.recurrent(second, return_sequences=False), sr.dense(1, param_dtype=F64))
    p0 = random_params(first, I, seed=1)
    p_rest = (random_params(second, H, seed=2), sr.DenseParams(normal((1, 2), seed=3), normal((1,), seed=4)))
    xs, target, n = normal((T, I), seed=5), jnp.asarray([0.3], F64), 4

    # Compiled once: the reference calls it (and its gradient) once per step.
    rest_loss = jax.jit(lambda ys: sr.train.mse(rest.apply(p_rest, ys, length=n), target))

    def loss(ys, final):
        return rest_loss(ys)

    grads = hidden_state_gradients(first, p0, xs, loss, length=n)
    expected = reference_gradients(first, p0, xs, loss, first.initial_carry(p0), out=lambda c: c.h, n=n)
    assert_close(grads, expected, rtol=1e-9, atol=1e-12)


def test_linear_recurrence_decays_geometrically():
    """h_t = a h_{t-1} + x_t with L = sum(h_{T-1}): dL/dh_t = a^(T-1-t), exactly."""
    a = jnp.asarray([0.5, 0.9, -1.1], F64)

    def apply(params, h, x):
        h = params * h + x
        return h, h

    cell = Cell(lambda key, input_size: a, lambda params: jnp.zeros(3, F64), apply)
    steps = 12
    grads = hidden_state_gradients(cell, a, normal((steps, 3), seed=0), lambda ys, c: jnp.sum(ys[-1]))
    powers = np.asarray(a)[None, :] ** (steps - 1 - np.arange(steps))[:, None]
    np.testing.assert_allclose(np.asarray(grads), powers, rtol=1e-14)
    np.testing.assert_allclose(np.asarray(gradient_norms(grads)), np.linalg.norm(powers, axis=1), rtol=1e-14)


@pytest.mark.slow
def test_float32_under_jit_agrees_with_float64():
    cell32, cell64 = sr.gru(H), sr.gru(H, param_dtype=F64)
    params = random_params(cell32, I, seed=0)
    xs = normal((T, I), seed=1)

    def f(cell, p, x):
        return hidden_state_gradients(cell, p, x, lambda ys, c: jnp.sum(ys[-1] ** 2))

    grads = jax.jit(f, static_argnums=0)(cell32, params, xs.astype(jnp.float32))
    assert grads.h.dtype == jnp.float32 and grads.h.shape == (T, H)
    expected = f(cell64, jax.tree.map(lambda l: l.astype(F64), params), xs)
    assert_close(grads, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_gradient_norms_of_whole_carry_and_of_one_field():
    grads = sr.LSTMCarry(h=normal((T, H), seed=0), c=normal((T, H), seed=1))
    h, c = np.asarray(grads.h), np.asarray(grads.c)
    np.testing.assert_allclose(np.asarray(gradient_norms(grads)), np.sqrt((h**2).sum(1) + (c**2).sum(1)), rtol=1e-14)
    np.testing.assert_allclose(np.asarray(gradient_norms(grads, "c")), np.linalg.norm(c, axis=1), rtol=1e-14)
    as_dict = {"h": grads.h, "m": normal((T, 2, 2), seed=2)}
    m = np.asarray(as_dict["m"]).reshape(T, 4)
    np.testing.assert_allclose(np.asarray(gradient_norms(as_dict, "m")), np.linalg.norm(m, axis=1), rtol=1e-14)
    # Norms near the smallest float32 numbers: squaring 1e-25 underflows, the scaled norm does not.
    tiny = sr.LSTMCarry(h=jnp.asarray(1e-25 * h, jnp.float32), c=jnp.zeros((T, H), jnp.float32))
    np.testing.assert_allclose(np.asarray(gradient_norms(tiny)), 1e-25 * np.linalg.norm(h, axis=1), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(gradient_norms(jax.tree.map(jnp.zeros_like, grads))), 0.0)
    batched = jax.vmap(gradient_norms)(jax.tree.map(lambda l: jnp.stack([l, 2 * l]), grads))
    np.testing.assert_allclose(np.asarray(batched[1]), 2 * np.asarray(gradient_norms(grads)), rtol=1e-14)


@pytest.mark.parametrize("case_id,name,options", FACTORY_CASES, ids=FACTORY_IDS)
def test_spectrum_is_each_gate_blocks_eigenvalues(case_id, name, options):
    cell = make_cell(name, options, H, param_dtype=F64)
    params = random_params(cell, I, seed=3)
    spectrum = recurrent_spectrum(params)
    w = np.asarray(params.w_hh)
    expected_gates = {"simple_rnn": "h", "layer_norm_rnn": "h", "gru": "rzn"}.get(name, "ifgo")
    assert tuple(spectrum) == tuple(expected_gates)
    for k, gate in enumerate(expected_gates):
        block = w[k * H : (k + 1) * H]
        values = spectrum[gate]
        # Each is an eigenvalue of its block: det(block - lambda I) = 0.
        for value in values:
            assert abs(np.linalg.det(block - value * np.eye(H))) < 1e-10
        assert spectral_radius(params)[gate] == pytest.approx(np.abs(values).max())
    assert recurrent_spectrum({"w_hh": w}).keys() == ({"h"} if len(expected_gates) == 1 else {str(i) for i in range(len(expected_gates))})


def test_spectrum_of_known_matrices():
    theta, r = 0.3, 0.8
    rotation = r * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    values = np.sort_complex(recurrent_spectrum(rotation)["h"])
    np.testing.assert_allclose(values, [r * np.exp(-1j * theta), r * np.exp(1j * theta)], rtol=1e-12)
    # An orthogonal matrix (the default recurrent init) has every eigenvalue on the unit circle.
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((16, 16)))
    np.testing.assert_allclose(np.abs(recurrent_spectrum(sr.RNNParams(None, q, None))["h"]), 1.0, rtol=1e-12)


def test_errors():
    cell, params, carry, xs = setup("lstm", {"peephole": False})
    loss = lambda ys, c: jnp.sum(ys)  # noqa: E731
    with pytest.raises(ValueError, match="loss_fn must be a function"):
        hidden_state_gradients(cell, params, xs, 3.0)
    with pytest.raises(ValueError, match=r"loss_fn must return a floating-point scalar, got shape \(5, 3\)"):
        hidden_state_gradients(cell, params, xs, lambda ys, c: ys)
    with pytest.raises(ValueError, match="output must be None or a function"):
        hidden_state_gradients(cell, params, xs, loss, output="h")
    with pytest.raises(ValueError, match=r"xs must have shape \[T, input_size\]"):
        hidden_state_gradients(cell, params, xs[None], loss)
    with pytest.raises(ValueError, match=r"length must lie in \[0, 5\]"):
        hidden_state_gradients(cell, params, xs, loss, length=7)
    with pytest.raises(ValueError, match="carry must have the structure"):
        hidden_state_gradients(cell, params, xs, loss, carry.h)
    with pytest.raises(ValueError, match="lstm: x must have shape"):
        hidden_state_gradients(cell, params, xs[:, :1], loss)
    counter = Cell(lambda k, i: None, lambda p: jnp.zeros((), jnp.int32), lambda p, c, x: (c + 1, c + 1))
    with pytest.raises(ValueError, match="carry's leaves must be floating-point"):
        hidden_state_gradients(counter, None, xs, lambda ys, c: jnp.sum(ys).astype(F64))
    with pytest.raises(ValueError, match="no field 'q'"):
        gradient_norms(sr.LSTMCarry(xs, xs), "q")
    with pytest.raises(ValueError, match="same leading time axis"):
        gradient_norms(sr.LSTMCarry(xs, xs[:3]))
    with pytest.raises(ValueError, match=r"shape \[k \* H, H\].*got shape \(5, 3\)"):
        recurrent_spectrum(np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"GRUParams has 3 gates .* but w_hh has shape \(12, 3\)"):
        recurrent_spectrum(sr.GRUParams(None, np.zeros((12, 3)), None, None))

"""Jordan, Elman and NARX cells against NumPy loops of their equations; unroll, length, gradients, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import reference
import scanrnn
from helpers import assert_close, assert_zero, loop, masked_loop, normal, random_carry, random_params
from scanrnn import Execution, unroll
from scanrnn.classic import (
    ElmanCarry,
    ElmanParams,
    JordanCarry,
    JordanParams,
    NARXCarry,
    NARXParams,
    elman,
    jordan,
    narx,
)

H, O, I, T = 4, 2, 3, 6
F64 = jnp.float64


# --------------------------------------------------------------------------
# NumPy loops of the docstrings' equations, one sequence at a time, float64.


def jordan_numpy(p, xs, alpha, activation="tanh", memory=None):
    """mu_t = alpha mu_{t-1} + y_{t-1}; h_t = phi(W x_t + U mu_t + b); y_t = V h_t + c."""
    p = reference.as_numpy(p)
    phi = reference.ACTIVATIONS[activation]
    mu_prev = np.zeros(O) if memory is None else None
    y_prev = np.zeros(O)
    ys = []
    for t, x in enumerate(np.asarray(xs, np.float64)):
        if t == 0 and memory is not None:
            mu = np.asarray(memory, np.float64)  # a given carry is mu_1 itself
        else:
            mu = alpha * mu_prev + y_prev
        h = phi(p["w_ih"] @ x + p["w_mh"] @ mu + p["b"])
        y = p["w_ho"] @ h + p["b_o"]
        ys.append(y)
        mu_prev, y_prev = mu, y
    return alpha * mu_prev + y_prev, np.stack(ys)  # the carry after the last step is mu_{T+1}


def elman_numpy(p, xs, activation="tanh", context=None):
    """c_t = h_{t-1}; h_t = phi(W x_t + U c_t + b); y_t = V h_t + c_o."""
    p = reference.as_numpy(p)
    phi = reference.ACTIVATIONS[activation]
    h = np.zeros(H) if context is None else np.asarray(context, np.float64)
    ys = []
    for x in np.asarray(xs, np.float64):
        c = h  # the copy through the fixed link of weight 1
        h = phi(p["w_ih"] @ x + p["w_hh"] @ c + p["b"])
        ys.append(p["w_ho"] @ h + p["b_o"])
    return h, np.stack(ys)


def narx_numpy(p, xs, k, activation="tanh"):
    """h_t = phi(W_0 x_t + sum_j W_j x_{t-j} + sum_j U_j y_{t-j} + b); y_t = V h_t + c.

    W_j is columns (j-1) I .. j I of w_xh, U_j columns (j-1) O .. j O of w_yh;
    x_u = y_u = 0 for u < 0.
    """
    p = reference.as_numpy(p)
    phi = reference.ACTIVATIONS[activation]
    xs = np.asarray(xs, np.float64)
    n_in = xs.shape[1]
    ys = []
    for t in range(len(xs)):
        z = p["w_ih"] @ xs[t] + p["b"]
        for j in range(1, k + 1):
            if t - j >= 0:
                z = z + p["w_xh"][:, (j - 1) * n_in : j * n_in] @ xs[t - j]
                z = z + p["w_yh"][:, (j - 1) * O : j * O] @ ys[t - j]
        ys.append(p["w_ho"] @ phi(z) + p["b_o"])
    ys = np.stack(ys)
    past = lambda a, u: a[u] if u >= 0 else np.zeros(a.shape[1])  # noqa: E731
    carry = (np.stack([past(xs, len(xs) - j) for j in range(1, k + 1)]),
             np.stack([past(ys, len(xs) - j) for j in range(1, k + 1)]))
    return carry, ys


CASES = [
    ("jordan", lambda: jordan(H, O, alpha=0.7, param_dtype=F64), lambda p, xs: jordan_numpy(p, xs, 0.7)),
    ("jordan-alpha0-relu", lambda: jordan(H, O, alpha=0.0, activation="relu", param_dtype=F64),
     lambda p, xs: jordan_numpy(p, xs, 0.0, "relu")),
    ("elman", lambda: elman(H, O, param_dtype=F64), lambda p, xs: elman_numpy(p, xs)),
    ("narx-k1", lambda: narx(H, O, k=1, param_dtype=F64), lambda p, xs: narx_numpy(p, xs, 1)),
    ("narx-k3", lambda: narx(H, O, k=3, param_dtype=F64), lambda p, xs: narx_numpy(p, xs, 3)),
]
IDS = [c[0] for c in CASES]
# One variant of each cell, for the slower tests.
ONE_EACH = [c for c in CASES if c[0] in ("jordan", "elman", "narx-k3")]


@pytest.mark.parametrize("name,make,numpy_loop", CASES, ids=IDS)
def test_unroll_against_numpy(name, make, numpy_loop):
    cell = make()
    params = random_params(cell, I, seed=1)
    xs = normal((T, I), seed=2)
    carry, ys = unroll(cell, params, xs)
    expected_carry, expected_ys = numpy_loop(params, xs)
    assert ys.shape == (T, O)
    assert_close(ys, expected_ys)
    assert_close(tuple(carry), expected_carry if isinstance(expected_carry, tuple) else (expected_carry,))
    # The input projection hoisted out of the scan (the default projects inside it) equals a loop of apply.
    assert_close(unroll(cell, params, xs, execution=Execution(hoist=True)), loop(cell, params, xs))
    assert_close(cell.apply(params, cell.initial_carry(params), xs[0]),
                 cell.step(params, cell.initial_carry(params), cell.project(params, xs[0])))


@pytest.mark.slow
@pytest.mark.parametrize("name,make,numpy_loop", ONE_EACH, ids=["jordan", "elman", "narx"])
def test_length_and_reverse(name, make, numpy_loop):
    cell = make()
    params = random_params(cell, I, seed=1)
    xs = normal((T, I), seed=2)
    # A traced length, per example under vmap and jit.
    f = jax.jit(jax.vmap(lambda x, n: unroll(cell, params, x, length=n)))
    carries, ys = f(jnp.stack([xs, xs, xs]), jnp.array([0, 4, 5]))
    for b, n in enumerate([0, 4, 5]):
        assert_close(jax.tree.map(lambda a: a[b], (carries, ys)), masked_loop(cell, params, xs, n))
        if n:
            assert_close(ys[b, :n], numpy_loop(params, xs[:n])[1])
        assert_zero(ys[b, n:])
    assert_close(unroll(cell, params, xs, length=4, reverse=True), masked_loop(cell, params, xs, 4, reverse=True))


def test_given_carries():
    """A non-zero initial carry is the state the first step reads."""
    xs = normal((T, I), seed=2)
    cell = jordan(H, O, alpha=0.3, param_dtype=F64)
    params = random_params(cell, I, seed=1)
    memory = normal((O,), seed=5)
    carry, ys = unroll(cell, params, xs, JordanCarry(memory))
    assert_close((carry.memory, ys), jordan_numpy(params, xs, 0.3, memory=memory))

    cell = elman(H, O, param_dtype=F64)
    params = random_params(cell, I, seed=1)
    context = normal((H,), seed=5)
    carry, ys = unroll(cell, params, xs, ElmanCarry(context))
    assert_close((carry.context, ys), elman_numpy(params, xs, context=context))

    cell = narx(H, O, k=2, param_dtype=F64)
    params = random_params(cell, I, seed=1)
    carry = random_carry(cell, params, seed=5)
    # Prepending the carried inputs and outputs as history reproduces the step:
    # the first output equals the reference's third one given that history.
    x_hist, y_hist = np.asarray(carry.inputs)[::-1], np.asarray(carry.outputs)[::-1]
    p = reference.as_numpy(params)
    z = p["w_ih"] @ np.asarray(xs[0]) + p["b"]
    z += p["w_xh"][:, :I] @ x_hist[1] + p["w_xh"][:, I:] @ x_hist[0]
    z += p["w_yh"][:, :O] @ y_hist[1] + p["w_yh"][:, O:] @ y_hist[0]
    new_carry, y = cell.apply(params, carry, xs[0])
    assert_close(y, p["w_ho"] @ np.tanh(z) + p["b_o"])
    assert_close(new_carry.inputs, np.stack([xs[0], carry.inputs[0]]))
    assert_close(new_carry.outputs, np.stack([y, carry.outputs[0]]))


@pytest.mark.slow
def test_init_shapes_and_param_counts():
    def shapes(cell):  # traced only: nothing compiles
        return jax.eval_shape(lambda k: cell.init(k, 1), jax.random.key(0))

    p = shapes(jordan(20, 1))
    assert isinstance(p, JordanParams) and p.w_ih.dtype == jnp.float32
    assert [a.shape for a in p] == [(20, 1), (20, 1), (20,), (1, 20), (1,)]
    p = shapes(elman(20, 1))
    assert isinstance(p, ElmanParams)
    assert [a.shape for a in p] == [(20, 1), (20, 20), (20,), (1, 20), (1,)]
    p = shapes(narx(20, 1, k=5))
    assert isinstance(p, NARXParams)
    assert [a.shape for a in p] == [(20, 1), (20, 5), (20, 5), (20,), (1, 20), (1,)]
    assert sum(a.size for a in p) == 20 + 100 + 100 + 20 + 20 + 1
    cell = narx(H, 1, k=5, param_dtype=F64)
    p = cell.init(jax.random.key(0), 1)
    np.testing.assert_array_equal(np.asarray(p.b), 0.0)
    assert np.all(np.asarray(p.w_ih) != 0.0)
    c = cell.initial_carry(p)
    assert isinstance(c, NARXCarry) and c.inputs.shape == (5, 1) and c.outputs.shape == (5, 1)
    assert c.inputs.dtype == F64
    assert_zero(c)


@pytest.mark.slow
@pytest.mark.parametrize("name,make,numpy_loop", ONE_EACH, ids=["jordan", "elman", "narx"])
def test_grads(name, make, numpy_loop):
    cell = make()
    params = random_params(cell, I, seed=1)
    carry = random_carry(cell, params, seed=3)
    xs = normal((T, I), seed=2)

    def f(params, carry, xs):
        return unroll(cell, params, xs, carry, length=4)

    modes = ("fwd", "rev") if name == "narx" else ("rev",)  # forward mode once is enough
    check_grads(jax.jit(f), (params, carry, xs), order=1, modes=modes, atol=1e-6, rtol=1e-6, eps=1e-6)


def test_in_a_model():
    """serial(recurrent(cell)) many-to-one: the output at the last valid step."""
    cell = narx(H, O, k=2, param_dtype=F64)
    model = scanrnn.serial(scanrnn.recurrent(cell, return_sequences=False))
    params = (random_params(cell, I, seed=1),)
    xs = normal((T, I), seed=2)
    assert_close(model.apply(params, xs, length=4), narx_numpy(params[0], xs[:4], 2)[1][-1])


def test_errors():
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        jordan(0, 1)
    with pytest.raises(ValueError, match="output_size must be a positive int, got 0"):
        elman(4, 0)
    with pytest.raises(ValueError, match=r"alpha must be a float in \[0, 1\), got 1.0"):
        jordan(4, 1, alpha=1.0)
    with pytest.raises(ValueError, match="k must be a positive int, got 0"):
        narx(4, 1, k=0)
    with pytest.raises(ValueError, match="activation must be one of"):
        narx(4, 1, activation="gelu")
    with pytest.raises(ValueError, match="input_size must be a positive int"):
        elman(4, 1).init(jax.random.key(0), 0)

    cell = narx(H, O, k=2, param_dtype=F64)
    params = random_params(cell, I, seed=1)
    carry = cell.initial_carry(params)
    x = normal((I,), seed=2)
    with pytest.raises(ValueError, match=r"narx: x must have shape \(3,\)"):
        cell.apply(params, carry, x[:2])
    with pytest.raises(ValueError, match="narx: x must have the params' dtype float64, got float32"):
        cell.apply(params, carry, x.astype(jnp.float32))
    with pytest.raises(ValueError, match=r"narx: carry.inputs must have shape \(2, 3\), got \(3, 3\)"):
        cell.apply(params, NARXCarry(jnp.zeros((3, I), F64), carry.outputs), x)
    with pytest.raises(ValueError, match="narx expects a carry of type NARXCarry, got tuple"):
        cell.apply(params, tuple(carry), x)
    with pytest.raises(ValueError, match=r"narx: params.w_yh must have shape \(4, 4\), got \(4, 6\)"):
        cell.apply(params._replace(w_yh=jnp.zeros((H, 6), F64)), carry, x)
    with pytest.raises(ValueError, match="jordan expects params of type JordanParams, got ElmanParams"):
        jordan(H, O).initial_carry(random_params(elman(H, O), I))
    cell = elman(H, O, param_dtype=F64)
    with pytest.raises(ValueError, match=r"elman: carry.context must have shape \(4,\), got \(2,\)"):
        cell.apply(random_params(cell, I), ElmanCarry(jnp.zeros(2, F64)), x)

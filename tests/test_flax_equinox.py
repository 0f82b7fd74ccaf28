"""The lines of docs/tutorials/flax_and_equinox.md: scanrnn's params inside a Flax NNX and an Equinox module.

The modules, steps and reference step below are the tutorial's, written out
again (a test checks that each appears there word for word). Each module's
output must equal scanrnn called directly on the same params, and its
training step must give the gradient ``jax.grad`` gives for the plain
function of the params, and the params optax computes from it. optax's Adam
needs standard dtype promotion (the ``standard_dtype_promotion`` fixture of
conftest.py); the rest runs under the suite's strict promotion.
"""

import functools
import inspect
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scanrnn as sr

eqx = pytest.importorskip("equinox")
nnx = pytest.importorskip("flax.nnx")

TUTORIAL = pathlib.Path(__file__).resolve().parent.parent / "docs" / "tutorials" / "flax_and_equinox.md"


def mse(pred, target):
    return jnp.mean((pred - target) ** 2)


@functools.partial(jax.jit, static_argnums=(0, 1))
def plain_step(loss, optimizer, params):
    """One optax step on plain params, from a fresh optimizer state: the reference for both modules."""
    grads = jax.grad(loss)(params)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    return optax.apply_updates(params, updates)


# Flax NNX: the model's whole params tree in one nnx.Param.
model = sr.serial(sr.recurrent(sr.lstm(16), return_sequences=False), sr.dense(1))


class NNXForecaster(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.params = nnx.Param(model.init(rngs.params(), 1))   # (LSTMParams, DenseParams)

    def __call__(self, xs):                                     # [B, T, 1] -> [B, 1]
        return jax.vmap(model.apply, in_axes=(None, 0))(self.params.get_value(), xs)


@nnx.jit
def nnx_step(net, optimizer, xs, ys):
    loss, grads = nnx.value_and_grad(lambda net: mse(net(xs), ys))(net)
    optimizer.update(net, grads)
    return loss


# Equinox: a cell's params and a dense layer's params as the module's fields.
cell, head = sr.gru(16), sr.dense(1)


class EqxForecaster(eqx.Module):
    rnn: sr.GRUParams                 # w_ih [48, 1], w_hh [48, 16], b_ih [48], b_hh [48]
    out: sr.DenseParams               # w [1, 16], b [1]

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.rnn, self.out = cell.init(k1, 1), head.init(k2, 16)

    def __call__(self, xs):                                     # [T, 1] -> [1]
        _, hs = sr.unroll(cell, self.rnn, xs)
        return head.apply(self.out, hs[-1])


eqx_adam = optax.adam(1e-2)


@eqx.filter_jit
def eqx_step(net, opt_state, xs, ys):
    loss, grads = eqx.filter_value_and_grad(lambda net: mse(jax.vmap(net)(xs), ys))(net)
    updates, opt_state = eqx_adam.update(grads, opt_state, net)
    return eqx.apply_updates(net, updates), opt_state, loss


def eqx_plain_loss(xs, ys):
    """The tutorial's ``plain_loss`` of the Equinox section, over the batch ``xs``, ``ys``."""
    def plain_loss(params):
        rnn, out = params
        return mse(jax.vmap(lambda xs: head.apply(out, sr.unroll(cell, rnn, xs)[1][-1]))(xs), ys)
    return plain_loss


@pytest.fixture
def data():
    series = sr.data.generate_time_series(32, 21, rng=0)      # float32 [32, 21, 1]
    return series[:, :20], series[:, 20]


def assert_trees_close(got, want, rtol=1e-5, atol=1e-6):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("definition", [mse, plain_step, NNXForecaster, nnx_step, EqxForecaster, eqx_step])
def test_the_definitions_are_the_tutorials(definition):
    if not TUTORIAL.exists():
        pytest.skip(f"{TUTORIAL} is not there")
    source = inspect.getsource(definition)
    assert source in TUTORIAL.read_text(), f"{definition.__name__} differs from the tutorial's"


@pytest.mark.slow
def test_nnx_module_holds_the_params_tree_and_calls_scanrnn(data):
    xs, _ = data
    net = NNXForecaster(nnx.Rngs(0))
    params = net.params.get_value()
    assert isinstance(params, tuple) and isinstance(params[0], sr.LSTMParams) and isinstance(params[1], sr.DenseParams)
    # Flax sees each leaf of the tree as a param, in the tree's order.
    state = jax.tree.leaves(nnx.state(net, nnx.Param))
    assert [leaf.shape for leaf in state] == [(64, 1), (64, 16), (64,), (1, 16), (1,)]
    direct = jax.vmap(model.apply, in_axes=(None, 0))(params, xs)
    assert direct.shape == (32, 1) and direct.dtype == jnp.float32
    np.testing.assert_array_equal(net(xs), direct)


def batch_mse(params, xs, ys):
    """The plain function of the params that the modules' steps differentiate."""
    return mse(jax.vmap(model.apply, in_axes=(None, 0))(params, xs), ys)


@pytest.mark.slow
@pytest.mark.usefixtures("standard_dtype_promotion")
def test_nnx_step_follows_jax_grad_of_the_plain_function(data):
    xs, ys = data
    net = NNXForecaster(nnx.Rngs(0))
    params = net.params.get_value()
    plain_loss = functools.partial(batch_mse, xs=xs, ys=ys)

    loss, grads = nnx.value_and_grad(lambda net: mse(net(xs), ys))(net)
    np.testing.assert_allclose(loss, plain_loss(params), rtol=1e-6)
    plain_grads = jax.grad(plain_loss)(params)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(plain_grads)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)

    optimizer = nnx.Optimizer(net, optax.adam(1e-2), wrt=nnx.Param)
    loss = nnx_step(net, optimizer, xs, ys)
    np.testing.assert_allclose(loss, plain_loss(params), rtol=1e-6)
    after = net.params.get_value()
    assert_trees_close(after, plain_step(plain_loss, optax.adam(1e-2), params))
    for got, before in zip(jax.tree.leaves(after), jax.tree.leaves(params)):
        assert not np.array_equal(got, before)


@pytest.mark.slow
@pytest.mark.usefixtures("standard_dtype_promotion")
def test_nnx_sgd_step_moves_the_params_by_the_plain_gradient(data):
    xs, ys = data
    net = NNXForecaster(nnx.Rngs(1))
    params = net.params.get_value()
    plain_loss = functools.partial(batch_mse, xs=xs, ys=ys)
    expected = jax.tree.map(lambda p, g: p - 0.1 * g, params, jax.grad(plain_loss)(params))
    nnx_step(net, nnx.Optimizer(net, optax.sgd(0.1), wrt=nnx.Param), xs, ys)
    assert_trees_close(net.params.get_value(), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_eqx_module_holds_the_params_as_fields_and_calls_scanrnn(data):
    xs, _ = data
    eqx_net = EqxForecaster(jax.random.key(0))
    assert isinstance(eqx_net.rnn, sr.GRUParams) and isinstance(eqx_net.out, sr.DenseParams)
    assert [leaf.shape for leaf in jax.tree.leaves(eqx_net)] == [(48, 1), (48, 16), (48,), (48,), (1, 16), (1,)]
    direct = jax.vmap(lambda xs: head.apply(eqx_net.out, sr.unroll(cell, eqx_net.rnn, xs)[1][-1]))(xs)
    assert direct.shape == (32, 1) and direct.dtype == jnp.float32
    np.testing.assert_array_equal(jax.vmap(eqx_net)(xs), direct)


@pytest.mark.slow
@pytest.mark.usefixtures("standard_dtype_promotion")
def test_eqx_step_follows_jax_grad_of_the_plain_function(data):
    xs, ys = data
    eqx_net = EqxForecaster(jax.random.key(0))
    params = (eqx_net.rnn, eqx_net.out)
    plain_loss = eqx_plain_loss(xs, ys)

    loss, grads = eqx.filter_value_and_grad(lambda net: mse(jax.vmap(net)(xs), ys))(eqx_net)
    np.testing.assert_allclose(loss, plain_loss(params), rtol=1e-6)
    assert_trees_close((grads.rnn, grads.out), jax.grad(plain_loss)(params), rtol=1e-5, atol=1e-7)

    opt_state = eqx_adam.init(eqx.filter(eqx_net, eqx.is_array))
    trained, opt_state, loss = eqx_step(eqx_net, opt_state, xs, ys)
    np.testing.assert_allclose(loss, plain_loss(params), rtol=1e-6)
    after = (trained.rnn, trained.out)
    assert_trees_close(after, plain_step(plain_loss, eqx_adam, params))
    for got, before in zip(jax.tree.leaves(after), jax.tree.leaves(params)):
        assert not np.array_equal(got, before)
    # The module is a pytree of the same structure after the step; the one given is left as it was.
    assert jax.tree.structure(trained) == jax.tree.structure(eqx_net)
    np.testing.assert_array_equal(eqx_net.rnn.w_hh, params[0].w_hh)

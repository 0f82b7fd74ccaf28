"""Bad input raises a ValueError that names what was expected and what was given."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scanrnn
from helpers import normal, random_params
from scanrnn import bidirectional, dense, recurrent, serial, unroll, unroll_batch, unroll_bidirectional

H, I, T = 5, 3, 6


@pytest.fixture(scope="module")
def rnn():
    cell = scanrnn.simple_rnn(H)
    return cell, random_params(cell, I)


@pytest.fixture(scope="module")
def lstm():
    cell = scanrnn.lstm(H)
    return cell, random_params(cell, I)


def xs_(shape=(T, I)):
    return normal(shape, seed=0, dtype=jnp.float32)


# --------------------------------------------------------------------------
# Factories.


@pytest.mark.parametrize("factory", [scanrnn.simple_rnn, scanrnn.layer_norm_rnn])
def test_unknown_activation(factory):
    with pytest.raises(ValueError, match=r"activation must be one of \['relu', 'sigmoid', 'tanh'\], got 'gelu'"):
        factory(4, "gelu")


@pytest.mark.parametrize("size", [0, -3, 2.5, True, "4", None])
@pytest.mark.parametrize(
    "factory", [scanrnn.simple_rnn, scanrnn.lstm, scanrnn.gru, scanrnn.layer_norm_rnn, scanrnn.layer_norm_lstm, dense]
)
def test_bad_hidden_size(factory, size):
    with pytest.raises(ValueError, match=re.escape(f"must be a positive int, got {size!r}")):
        factory(size)


@pytest.mark.parametrize("size", [0, 2.0, None])
def test_bad_input_size(rnn, size):
    cell, _ = rnn
    with pytest.raises(ValueError, match=re.escape(f"input_size must be a positive int, got {size!r}")):
        cell.init(jax.random.key(0), size)
    with pytest.raises(ValueError, match=re.escape(f"input_size must be a positive int, got {size!r}")):
        dense(2).init(jax.random.key(0), size)


def test_unknown_merge():
    with pytest.raises(ValueError, match=r"merge must be one of \['concat', 'mean', 'mul', 'sum'\], got 'max'"):
        bidirectional(scanrnn.gru(4), "max")


def test_serial_needs_layers():
    with pytest.raises(ValueError, match="serial needs at least one layer"):
        serial()


# --------------------------------------------------------------------------
# Inputs: feature size and rank.


def test_wrong_feature_size(rnn):
    cell, params = rnn
    expected = r"x must have shape \(3,\).*got \(4,\)"
    with pytest.raises(ValueError, match="simple_rnn: " + expected):
        cell.apply(params, cell.initial_carry(params), jnp.ones((4,), jnp.float32))
    with pytest.raises(ValueError, match=expected):
        unroll(cell, params, xs_((T, 4)))
    with pytest.raises(ValueError, match=expected):
        recurrent(cell).apply(params, xs_((T, 4)))
    with pytest.raises(ValueError, match=expected):
        unroll_batch(cell, params, xs_((2, T, 4)))
    with pytest.raises(ValueError, match="dense: " + expected):
        dense(2).apply(scanrnn.DenseParams(jnp.ones((2, 3)), jnp.ones(2)), jnp.ones((T, 4)))
    with pytest.raises(ValueError, match=r"x must have shape \(3,\).*got \(\)"):
        cell.apply(params, cell.initial_carry(params), jnp.ones((), jnp.float32))


@pytest.mark.parametrize("shape", [(T,), (2, T, I), ()])
def test_wrong_rank(rnn, shape):
    cell, params = rnn
    message = re.escape("xs must have shape [T, input_size]") + r".*" + re.escape(f"got shape {shape}")
    for call in (
        lambda x: unroll(cell, params, x),
        lambda x: recurrent(cell).apply(params, x),
        lambda x: recurrent(cell, return_sequences=False).apply(params, x),
        lambda x: bidirectional(cell).apply(jax.tree.map(lambda a: jnp.stack([a, a]), params), x),
        lambda x: unroll_bidirectional(cell, jax.tree.map(lambda a: jnp.stack([a, a]), params), x),
    ):
        with pytest.raises(ValueError, match=message):
            call(xs_(shape))


def test_unroll_batch_rank(rnn):
    cell, params = rnn
    with pytest.raises(ValueError, match=re.escape("xs must have shape [B, T, input_size], got shape (6, 3)")):
        unroll_batch(cell, params, xs_())


# --------------------------------------------------------------------------
# length.


@pytest.mark.parametrize("length", [-1, T + 1, np.int32(-2), jnp.array(100)])
def test_length_out_of_range(rnn, length):
    cell, params = rnn
    message = re.escape(f"length must lie in [0, {T}]") + r".*" + re.escape(f"got {int(length)}")
    stacked = jax.tree.map(lambda a: jnp.stack([a, a]), params)
    for call in (
        lambda: unroll(cell, params, xs_(), length=length),
        lambda: unroll(cell, params, xs_(), length=length, reverse=True),
        lambda: recurrent(cell).apply(params, xs_(), length=length),
        lambda: recurrent(cell, return_sequences=False).apply(params, xs_(), length=length),
        lambda: bidirectional(cell).apply(stacked, xs_(), length=length),
        lambda: dense(2).apply(scanrnn.DenseParams(jnp.ones((2, 3), jnp.float32), jnp.ones(2, jnp.float32)), xs_(), length=length),
    ):
        with pytest.raises(ValueError, match=message):
            call()


def test_unroll_batch_length(rnn):
    cell, params = rnn
    with pytest.raises(ValueError, match=re.escape(f"length must lie in [0, {T}], got values in [-1, 3]")):
        unroll_batch(cell, params, xs_((2, T, I)), length=jnp.array([3, -1]))
    with pytest.raises(ValueError, match=re.escape(f"length must lie in [0, {T}], got values in [2, 7]")):
        unroll_batch(cell, params, xs_((2, T, I)), length=jnp.array([2, 7]))
    with pytest.raises(ValueError, match=re.escape("length must have shape (2,) (one per example), got shape (3,)")):
        unroll_batch(cell, params, xs_((2, T, I)), length=jnp.array([1, 2, 3]))


@pytest.mark.parametrize(
    "length, given",
    [(2.5, "2.5"), (3.0, "3.0"), (jnp.array(3.0), "an array of dtype float64 and shape ()"), (True, "True"),
     ("3", "'3'"), (np.float32(1.0), repr(np.float32(1.0)))],
)
def test_non_integer_length(rnn, length, given):
    cell, params = rnn
    message = re.escape(f"length must be an integer scalar, got {given}")
    with pytest.raises(ValueError, match=message):
        unroll(cell, params, xs_(), length=length)
    with pytest.raises(ValueError, match=message):
        recurrent(cell).apply(params, xs_(), length=length)


def test_non_scalar_length(rnn):
    cell, params = rnn
    with pytest.raises(ValueError, match=re.escape("length must be a scalar") + r".*got shape \(2,\)"):
        unroll(cell, params, xs_(), length=jnp.array([2, 3]))


def test_traced_length_is_not_range_checked(rnn):
    """Under jit the length is not known; only its dtype and rank are checked."""
    cell, params = rnn
    fn = jax.jit(lambda n: unroll(cell, params, xs_(), length=n)[1])
    assert fn(3).shape == (T, H)
    with pytest.raises(ValueError, match="length must be an integer scalar"):
        fn(3.0)


# --------------------------------------------------------------------------
# Params.


def test_params_of_another_cell(rnn, lstm):
    _, lstm_params = lstm
    gru = scanrnn.gru(H)
    carry = scanrnn.RNNCarry(jnp.zeros((H,), jnp.float32))
    message = "gru expects params of type GRUParams, got LSTMParams"
    with pytest.raises(ValueError, match=message):
        gru.apply(lstm_params, carry, jnp.ones((I,), jnp.float32))
    with pytest.raises(ValueError, match=message):
        gru.initial_carry(lstm_params)
    with pytest.raises(ValueError, match=message):
        unroll(gru, lstm_params, xs_())
    with pytest.raises(ValueError, match=message):
        recurrent(gru).apply(lstm_params, xs_())
    # Peephole and plain LSTM params are not interchangeable.
    peephole = scanrnn.lstm(H, peephole=True)
    with pytest.raises(ValueError, match="lstm expects params of type PeepholeLSTMParams, got LSTMParams"):
        unroll(peephole, lstm_params, xs_())
    with pytest.raises(ValueError, match="lstm expects params of type LSTMParams, got dict"):
        lstm[0].initial_carry(dict(lstm_params._asdict()))


def test_params_of_wrong_shape(lstm):
    cell, params = lstm
    wrong_h = random_params(scanrnn.lstm(H + 1), I)  # a different hidden size
    with pytest.raises(ValueError, match=re.escape(f"lstm: params.w_ih must have shape ({4 * H}, {I}), got ({4 * H + 4}, {I})")):
        unroll(cell, wrong_h, xs_())
    bad = params._replace(w_hh=params.w_hh[:, :-1])
    with pytest.raises(ValueError, match=re.escape(f"lstm: params.w_hh must have shape ({4 * H}, {H}), got ({4 * H}, {H - 1})")):
        cell.apply(bad, cell.initial_carry(params), jnp.ones((I,), jnp.float32))
    bad = params._replace(b=params.b[:-1])
    with pytest.raises(ValueError, match=re.escape(f"params.b must have shape ({4 * H},), got ({4 * H - 1},)")):
        unroll(cell, bad, xs_())
    bad = params._replace(w_ih=params.w_ih.ravel())
    with pytest.raises(ValueError, match=re.escape(f"params.w_ih must have rank 2, got shape ({4 * H * I},)")):
        unroll(cell, bad, xs_())
    ln = scanrnn.layer_norm_lstm(H)
    ln_params = random_params(ln, I)
    bad = ln_params._replace(ln_c_scale=ln_params.ln_c_scale[:2])
    with pytest.raises(ValueError, match=re.escape(f"params.ln_c_scale must have shape ({H},), got (2,)")):
        unroll(ln, bad, xs_())


def test_serial_params_tuple(rnn):
    cell, params = rnn
    model = serial(recurrent(cell), recurrent(cell), dense(1))
    with pytest.raises(ValueError, match="serial of 3 layers expects a tuple of 3 params, got a tuple of 2"):
        model.apply((params, params), xs_())
    with pytest.raises(ValueError, match="serial of 3 layers expects a tuple of 3 params, got RNNParams"):
        model.apply(params, xs_())
    with pytest.raises(ValueError, match="serial of 3 layers expects a tuple of 3 params, got dict"):
        model.apply({"a": params}, xs_())


def test_dense_params():
    layer = dense(2)
    with pytest.raises(ValueError, match="dense expects params of type DenseParams, got tuple"):
        layer.apply((jnp.ones((2, 3)), jnp.ones(2)), jnp.ones((T, 3)))
    with pytest.raises(ValueError, match=re.escape("dense: params must have w [2, I] and b [2], got w (4, 3) and b (4,)")):
        layer.apply(scanrnn.DenseParams(jnp.ones((4, 3)), jnp.ones(4)), jnp.ones((T, 3)))


def test_bidirectional_params_not_stacked(lstm):
    cell, params = lstm
    message = re.escape("bidirectional params must be stacked on a leading direction axis of size 2, got leading axes")
    with pytest.raises(ValueError, match=message + re.escape(f" [({4 * H},)]")):
        bidirectional(cell).apply(params, xs_())
    three = jax.tree.map(lambda a: jnp.stack([a, a, a]), params)
    with pytest.raises(ValueError, match=message + re.escape(" [(3,)]")):
        bidirectional(cell).apply(three, xs_())
    with pytest.raises(ValueError, match=message):
        unroll_bidirectional(cell, params, xs_())


@pytest.mark.slow
def test_bidirectional_params_that_only_look_stacked():
    """simple_rnn(2) params lead with 2 on every leaf; unstacked, they must still be refused."""
    cell = scanrnn.simple_rnn(2)
    params = cell.init(jax.random.key(0), 2)
    message = re.escape("bidirectional params must be the cell's params stacked on a leading direction axis of size 2")
    with pytest.raises(ValueError, match=message + r".*w_ih must have rank 2, got shape \(2,\)"):
        bidirectional(cell).apply(params, jnp.ones((4, 2), jnp.float32))


# --------------------------------------------------------------------------
# Carries.


def test_wrong_carry(rnn, lstm):
    cell, params = lstm
    x = jnp.ones((I,), jnp.float32)
    h = jnp.zeros((H,), jnp.float32)
    short = jnp.zeros((H - 1,), jnp.float32)
    with pytest.raises(ValueError, match=re.escape(f"lstm: carry.c must have shape ({H},), got ({H - 1},)")):
        cell.apply(params, scanrnn.LSTMCarry(h, short), x)
    with pytest.raises(ValueError, match="lstm expects a carry of type LSTMCarry, got RNNCarry"):
        cell.apply(params, scanrnn.RNNCarry(h), x)
    with pytest.raises(ValueError, match="lstm expects a carry of type LSTMCarry, got tuple"):
        cell.apply(params, (h, h), x)
    rnn_cell, rnn_params = rnn
    with pytest.raises(ValueError, match=re.escape(f"simple_rnn: carry.h must have shape ({H},), got ({H}, 1)")):
        rnn_cell.apply(rnn_params, scanrnn.RNNCarry(h[:, None]), x)

    # unroll checks a given carry against initial_carry before scanning.
    with pytest.raises(ValueError, match=re.escape(f"carry must have the shapes of cell.initial_carry(params), [({H},), ({H},)]; got [({H},), ({H - 1},)]")):
        unroll(cell, params, xs_(), scanrnn.LSTMCarry(h, short))
    with pytest.raises(ValueError, match=r"carry must have the structure of cell\.initial_carry\(params\).*LSTMCarry.*got"):
        unroll(cell, params, xs_(), scanrnn.RNNCarry(h))
    with pytest.raises(ValueError, match=r"carry must have the shapes"):
        unroll(cell, params, xs_(), scanrnn.LSTMCarry(jnp.zeros((2, H), jnp.float32), h))


def test_input_dtype_must_match_params():
    """float64 inputs to float32 params would change the carry's dtype inside the scan."""
    cell = scanrnn.gru(3)
    params = cell.init(jax.random.key(0), 2)  # float32
    message = re.escape("gru: x must have the params' dtype float32, got float64")
    with pytest.raises(ValueError, match=message):
        unroll(cell, params, jnp.ones((4, 2), jnp.float64))
    with pytest.raises(ValueError, match=message):
        cell.apply(params, cell.initial_carry(params), jnp.ones(2, jnp.float64))
    with pytest.raises(ValueError, match=re.escape("dense: x must have the params' dtype float32, got float64")):
        dense(2).apply(dense(2).init(jax.random.key(0), 3), jnp.ones((4, 3), jnp.float64))

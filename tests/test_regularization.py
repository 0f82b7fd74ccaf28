"""Dropout, recurrent dropout and zoneout in ``unroll`` (scanrnn.regularization, one ``Regularization``).

Reference: a Python loop over ``cell.apply`` with the masks of
``sample_masks`` applied by hand: the inputs multiplied by the input mask,
the recurrent weight's columns scaled by the recurrent mask (``W (h * m) =
(W diag(m)) h``), and the carry blended with the zoneout masks after each
step (or by the expectation formula without a key).
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scanrnn
from helpers import assert_close, elman as user_elman, normal, random_carry, random_params
from scanrnn import Execution, LSTMCarry, Regularization, RNNCarry, unroll, unroll_batch, unroll_bidirectional
from scanrnn.regularization import sample_masks

H, I, O, T = 4, 5, 2, 4
F64 = jnp.float64
RATES = Regularization(dropout=0.3, recurrent_dropout=0.4)

# (id, factory, (recurrent weight, masked carry field) or None, output is the state)
CELLS = [
    ("simple_rnn", lambda: scanrnn.simple_rnn(H, param_dtype=F64), ("w_hh", "h"), True),
    ("lstm", lambda: scanrnn.lstm(H, param_dtype=F64), ("w_hh", "h"), True),
    ("lstm-peephole", lambda: scanrnn.lstm(H, peephole=True, param_dtype=F64), ("w_hh", "h"), True),
    ("gru-reset_after", lambda: scanrnn.gru(H, param_dtype=F64), ("w_hh", "h"), True),
    ("gru-cho", lambda: scanrnn.gru(H, reset_after=False, param_dtype=F64), ("w_hh", "h"), True),
    ("layer_norm_rnn", lambda: scanrnn.layer_norm_rnn(H, param_dtype=F64), ("w_hh", "h"), True),
    ("layer_norm_lstm", lambda: scanrnn.layer_norm_lstm(H, param_dtype=F64), ("w_hh", "h"), True),
    ("jordan", lambda: scanrnn.jordan(H, O, param_dtype=F64), ("w_mh", "memory"), False),
    ("elman", lambda: scanrnn.elman(H, O, param_dtype=F64), ("w_hh", "context"), False),
    ("narx", lambda: scanrnn.narx(H, O, k=2, param_dtype=F64), ("w_yh", "outputs"), False),
    ("min_gru-associative", lambda: scanrnn.min_gru(H, mode="associative", param_dtype=F64), None, True),
    ("min_gru-sequential", lambda: scanrnn.min_gru(H, mode="sequential", param_dtype=F64), None, True),
    ("min_lstm-associative", lambda: scanrnn.min_lstm(H, mode="associative", param_dtype=F64), None, True),
    ("min_lstm-sequential", lambda: scanrnn.min_lstm(H, mode="sequential", param_dtype=F64), None, True),
]


def setup(factory):
    cell = factory()
    params = random_params(cell, I, seed=1)
    carry = random_carry(cell, params, seed=2)
    return cell, params, carry, normal((T, I), seed=3)


def zoneout_for(carry):
    return LSTMCarry(h=0.3, c=0.5) if isinstance(carry, LSTMCarry) else 0.3


def reference(cell, params, xs, carry, masks, *, recurrent, output_is_state, rates=None):
    """The loop of ``cell.apply`` with ``masks`` (or zoneout ``rates``) applied by hand."""
    if masks.inputs is not None:
        xs = xs * masks.inputs[None, :]
    if masks.recurrent is not None:
        weight, field = recurrent
        m = getattr(masks.recurrent, field).reshape(-1)
        params = params._replace(**{weight: getattr(params, weight) * m[None, :]})
    ys = []
    for t, x in enumerate(xs):
        new, y = cell.apply(params, carry, x)
        if masks.zoneout is not None:
            new = jax.tree.map(lambda k, old, n: jnp.where(k[t], old, n), masks.zoneout, carry, new)
        elif rates is not None:
            new = jax.tree.map(lambda r, old, n: r * old + (1.0 - r) * n, rates, carry, new)
        if output_is_state and (masks.zoneout is not None or rates is not None):
            y = new.h
        carry = new
        ys.append(y)
    return carry, jnp.stack(ys)


def loss(run, params, xs, carry):
    final, ys = run(params, xs, carry)
    weights = jnp.linspace(0.5, 1.5, ys.size, dtype=ys.dtype).reshape(ys.shape)
    return jnp.sum(jnp.sin(ys) * weights) + sum(jnp.sum(leaf * leaf) for leaf in jax.tree.leaves(final))


def value_and_grads(run, params, xs, carry):
    return jax.value_and_grad(partial(loss, run), argnums=(0, 1, 2))(params, xs, carry)


# One cell of each kind of step: GatedCells of scanrnn.cells (the other cells
# there differ from these only in their core), the Cho GRU (whose core reads
# w_hh), the classic GatedCells (whose state enters through another carry
# field) and the LinearCells in both modes. Gradients are compared for the hand-written backward pass; the
# others are autodiff of the forward pass checked here, and the test of the
# backward pass below compares the two for more options.
REFERENCE_CASES = ("lstm-peephole", "gru-reset_after", "gru-cho", "layer_norm_lstm", "jordan", "elman", "narx",
                   "min_gru-associative", "min_lstm-sequential")
GRADIENT_CASES = ("lstm-peephole",)
EXECUTION = {"lstm-peephole": Execution(backward="hand")}  # the hand-written pass at any hidden size


@pytest.mark.slow
@pytest.mark.parametrize("case_id,factory,recurrent,output_is_state", [c for c in CELLS if c[0] in REFERENCE_CASES],
                         ids=REFERENCE_CASES)
def test_matches_reference_loop(case_id, factory, recurrent, output_is_state):
    """Training: outputs and final carry (and for some cells gradients) equal the hand-masked loop.

    Not jitted: the masks' random draws are then compiled once per shape for
    the whole file, and only the scans compile per cell.
    """
    cell, params, carry, xs = setup(factory)
    key = jax.random.key(12)  # a key whose masks all have kept and dropped units
    regularization = Regularization(
        dropout=0.3, recurrent_dropout=0.0 if recurrent is None else 0.4, zoneout=zoneout_for(carry)
    )
    masks = sample_masks(key, xs, carry, **regularization._asdict())
    # The masks are not trivial, so the test can fail.
    for m in [masks.inputs] + jax.tree.leaves((masks.recurrent, masks.zoneout)):
        assert 0 < np.count_nonzero(np.asarray(m)) < np.size(m)

    def run_reference(params, xs, carry):
        return reference(cell, params, xs, carry, masks, recurrent=recurrent, output_is_state=output_is_state)

    def run_unroll(params, xs, carry):
        return unroll(cell, params, xs, carry, regularization=regularization, key=key,
                      execution=EXECUTION.get(case_id, Execution()))

    assert_close(run_unroll(params, xs, carry), run_reference(params, xs, carry), rtol=1e-10, atol=1e-12)
    if case_id in GRADIENT_CASES:
        both = jax.jit(lambda *a: (value_and_grads(run_unroll, *a), value_and_grads(run_reference, *a)))
        assert_close(*both(params, xs, carry), rtol=1e-9, atol=1e-11)


@pytest.mark.slow
def test_user_cell_dropout_and_zoneout():
    """A cell with only ``apply`` takes dropout and zoneout (of its carry; its output unchanged)."""
    cell = user_elman(H)
    params = cell.init(jax.random.key(0), I)
    xs, carry, key = normal((T, I), seed=3), normal((H,), seed=4), jax.random.key(5)
    regularization = Regularization(dropout=0.3, zoneout=0.4)
    masks = sample_masks(key, xs, carry, **regularization._asdict())
    got = unroll(cell, params, xs, carry, regularization=regularization, key=key)
    assert_close(got, reference(cell, params, xs, carry, masks, recurrent=None, output_is_state=False))
    # Without a key: the expectation of zoneout, no dropout.
    got = unroll(cell, params, xs, carry, regularization=regularization)
    no_masks = masks._replace(inputs=None, zoneout=None)
    assert_close(got, reference(cell, params, xs, carry, no_masks, recurrent=None, output_is_state=False, rates=0.4))


def test_zero_rates_are_exactly_plain_unroll():
    """Rates of 0, with or without a key, trace exactly the program of the plain unroll."""
    for factory in (CELLS[2][1], CELLS[10][1]):  # lstm-peephole (fast path), min_gru (parallel)
        cell, params, carry, xs = setup(factory)
        plain = str(jax.make_jaxpr(partial(unroll, cell))(params, xs, carry))
        zero = jax.tree.map(lambda _: 0.0, carry)
        for key in (None, jax.random.key(3)):
            for zoneout in (0.0, zero):
                run = partial(unroll, cell, regularization=Regularization(0.0, 0.0, zoneout), key=key)
                assert str(jax.make_jaxpr(run)(params, xs, carry)) == plain
    # With a rate the program is another one (so the comparison above can fail).
    with_rate = partial(unroll, cell, regularization=Regularization(zoneout=0.1))
    assert str(jax.make_jaxpr(with_rate)(params, xs, carry)) != plain


@pytest.mark.parametrize("case_id,factory,recurrent,output_is_state", [CELLS[2], CELLS[4], CELLS[12]],
                         ids=["lstm-peephole", "gru-cho", "min_lstm-associative"])
@pytest.mark.slow
def test_evaluation_is_deterministic_expectation(case_id, factory, recurrent, output_is_state):
    """Without a key dropout is off (the plain program) and zoneout is ``rate * old + (1 - rate) * new``."""
    cell, params, carry, xs = setup(factory)
    rates = Regularization(dropout=0.3, recurrent_dropout=0.0 if recurrent is None else 0.4)
    plain = str(jax.make_jaxpr(partial(unroll, cell))(params, xs, carry))
    assert str(jax.make_jaxpr(partial(unroll, cell, regularization=rates))(params, xs, carry)) == plain
    zoneout = zoneout_for(carry)
    got = unroll(cell, params, xs, carry, regularization=rates._replace(zoneout=zoneout))
    no_masks = sample_masks(jax.random.key(0), xs, carry)
    expected_rates = jax.tree.map(lambda _: zoneout, carry) if isinstance(zoneout, float) else zoneout
    want = reference(cell, params, xs, carry, no_masks, recurrent=recurrent, output_is_state=output_is_state,
                     rates=expected_rates)
    assert_close(got, want)


@pytest.mark.slow
def test_recurrent_mask_is_the_same_at_every_step():
    """Two chunks with the same key give the whole sequence: the masks do not depend on the step."""
    cell, params, carry, xs = setup(CELLS[1][1])
    run = partial(unroll, cell, params, regularization=RATES)
    whole = run(xs, carry, key=jax.random.key(11))
    middle, first = run(xs[:2], carry, key=jax.random.key(11))
    end, second = run(xs[2:], middle, key=jax.random.key(11))
    assert_close((end, jnp.concatenate([first, second])), whole)
    # And the masks are used: another key gives other numbers.
    other = run(xs, carry, key=jax.random.key(12))
    assert not np.allclose(np.asarray(other[1]), np.asarray(whole[1]))


@pytest.mark.slow
def test_fast_backward_matches_autodiff_with_masks():
    """The hand-written backward pass equals autodiff with all three masks, 1e-10 in float64.

    One sequence with a traced length, reversed, ``Execution(remat="step")``;
    the expectation of zoneout without a key; and the bidirectional unroll
    with ``Execution(remat="sqrt", one_scan=True)``, whose two directions are a ``jax.vmap`` with a key (and
    so masks) each, as a batch of examples is.
    """
    # The smallest GatedCell: the options are the backward pass's, not
    # the core's (the LSTM's two-leaf carry is compared with the loop above).
    cell, params, carry, xs = setup(CELLS[0][1])  # simple_rnn
    options = RATES._replace(zoneout=0.3)
    both = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, random_params(cell, I, seed=4))

    def total(backward, params, both, xs, length):
        value = loss(lambda p, x, c: unroll(cell, p, x, c, length=length, reverse=True, key=jax.random.key(5),
                                            execution=Execution(remat="step", backward=backward),
                                            regularization=options), params, xs, carry)
        value += loss(lambda p, x, c: unroll(cell, p, x, c, execution=Execution(backward=backward),
                                             regularization=Regularization(zoneout=0.2)), params, xs, carry)
        final, ys = unroll_bidirectional(cell, both, xs, length=length, key=jax.random.key(6),
                                         execution=Execution(remat="sqrt", backward=backward, one_scan=True),
                                         regularization=options)
        return value + jnp.sum(jnp.sin(ys)) + jnp.sum(final.h ** 2)

    @jax.jit
    def compare(params, both, xs, length):  # one compilation for both
        grad = partial(jax.value_and_grad(total, argnums=(1, 2, 3)))
        return grad("hand", params, both, xs, length), grad("autodiff", params, both, xs, length)

    auto, want = compare(params, both, xs, jnp.asarray(3))  # the length is traced
    assert_close(auto, want, rtol=1e-10, atol=1e-10)


@pytest.mark.slow
def test_batch_and_bidirectional_keys():
    """``unroll_batch`` gives example b the key split(key, B)[b]; ``unroll_bidirectional``
    gives the directions split(key)[0] and split(key)[1], the backward one reversed."""
    cell, params, carry, xs = setup(CELLS[0][1])  # simple_rnn
    key = jax.random.key(9)
    keys = jax.random.split(key, 2)
    rates = RATES._replace(zoneout=0.3)
    batch = jnp.stack([xs, 2.0 * xs])
    got = unroll_batch(cell, params, batch, length=jnp.asarray([T, 3]), regularization=rates, key=key)
    loop = [unroll(cell, params, batch[b], length=n, regularization=rates, key=keys[b]) for b, n in enumerate((T, 3))]
    assert_close(got, jax.tree.map(lambda *a: jnp.stack(a), *loop))

    both = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, random_params(cell, I, seed=4))
    forward = unroll(cell, jax.tree.map(lambda a: a[0], both), xs, length=3, regularization=rates, key=keys[0])
    backward = unroll(cell, jax.tree.map(lambda a: a[1], both), xs, length=3, reverse=True, regularization=rates,
                      key=keys[1])
    for one_scan in (True, False):  # the backward direction's masks, flipped with its steps or not
        got = unroll_bidirectional(cell, both, xs, length=3, regularization=rates, key=key,
                                   execution=Execution(one_scan=one_scan))
        assert_close(got, jax.tree.map(lambda a, b: jnp.stack([a, b]), forward, backward))


def test_errors():
    cell, params, carry, xs = setup(CELLS[1][1])
    for name in ("dropout", "recurrent_dropout", "zoneout"):
        for bad in (-0.1, 1.0, 1.5, float("nan"), True, "0.1", jnp.asarray(0.1)):
            with pytest.raises(ValueError, match=name):
                unroll(cell, params, xs, regularization=Regularization(**{name: bad}))
            with pytest.raises(ValueError, match=name):  # when the layer is built
                scanrnn.recurrent(cell, regularization=Regularization(**{name: bad}))
    with pytest.raises(ValueError, match="zoneout"):
        unroll(cell, params, xs, regularization=Regularization(zoneout=LSTMCarry(h=0.1, c=1.0)))
    for structure in ((0.1, 0.2), RNNCarry(0.1), LSTMCarry(h=0.1, c=(0.1, 0.2))):
        with pytest.raises(ValueError, match="carry's structure"):
            unroll(cell, params, xs, regularization=Regularization(zoneout=structure), key=jax.random.key(0))
    # The rates come in a Regularization, not as a dict of them.
    for given in ({"dropout": 0.1}, 0.1):
        with pytest.raises(TypeError, match=r"regularization must be a scanrnn.Regularization "
                                            r"\(e.g. Regularization\(dropout=0.1\)\) or None, got"):
            unroll(cell, params, xs, regularization=given)
    for mode in ("associative", "chunked", "sequential"):
        min_cell = scanrnn.min_gru(H, mode=mode, param_dtype=F64)
        min_params = random_params(min_cell, I)
        for key in (None, jax.random.key(0)):
            with pytest.raises(ValueError, match="no recurrent weights"):
                unroll(min_cell, min_params, xs, regularization=Regularization(recurrent_dropout=0.1), key=key)
    user = user_elman(H)
    with pytest.raises(ValueError, match="needs a GatedCell, which says where its state enters a recurrent weight product"):
        unroll(user, user.init(jax.random.key(0), I), xs, regularization=Regularization(recurrent_dropout=0.1))

"""The hand-written backward pass of ``unroll`` and the ``remat`` options.

Reference: autodiff through the plain scan (``backward="autodiff"``,
``remat="none"``), itself checked against finite differences in
test_grads.py. Gradients are taken with respect to params, inputs and the
initial carry, through a loss that reads every output and the final carry.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import scanrnn
from helpers import CASE_IDS, CASES, count_primitive, hand_or_auto, make_cell, normal, random_carry, random_params
from scanrnn import unroll
from scanrnn.cells import RECURRENT_CORES

H, I, T = 4, 3, 7
F64 = jnp.float64


def setup(name, options, dtype=F64):
    cell = make_cell(name, options, H, param_dtype=dtype)
    params = jax.tree.map(lambda a: a.astype(dtype), random_params(cell, I, seed=1))
    carry = jax.tree.map(lambda a: a.astype(dtype), random_carry(cell, params, seed=2))
    return cell, params, carry


def loss(cell, params, xs, carry, length, *, reverse=False, remat="none", backward="hand", hoist=None):
    final, ys = unroll(
        cell, params, xs, carry, length=length, reverse=reverse, remat=remat, backward=backward, hoist=hoist
    )
    weights = jnp.linspace(0.5, 1.5, ys.size, dtype=ys.dtype).reshape(ys.shape)
    return jnp.sum(jnp.sin(ys) * weights) + sum(jnp.sum(leaf * leaf) for leaf in jax.tree.leaves(final))


def grads(cell, params, xs, carry, length, **options):
    f = jax.jit(jax.value_and_grad(partial(loss, cell, **options), argnums=(0, 1, 2)))
    return f(params, xs, carry, length)


def assert_tree_close(actual, expected, rtol, atol):
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)


# One activation of each form (the activations share the code around them).
FORMS = [c for c in CASES if c[0] not in ("simple_rnn-sigmoid", "layer_norm_rnn-sigmoid", "layer_norm_rnn-relu")]


@pytest.mark.slow
@pytest.mark.parametrize("case_id,name,options", FORMS, ids=[c[0] for c in FORMS])
def test_matches_autodiff_float64(case_id, name, options):
    """Every built-in cell, with and without length, forwards and reversed: 1e-10."""
    cell, params, carry = setup(name, options)
    xs = normal((T, I), seed=3)
    registered = case_id != "gru-cho"
    assert (RECURRENT_CORES.get(cell.step) is not None) == registered
    backward = hand_or_auto(cell)  # the Cho GRU has no hand-written pass
    want = grads(cell, params, xs, carry, None, backward="autodiff")
    assert_tree_close(grads(cell, params, xs, carry, None, backward=backward), want, rtol=1e-10, atol=1e-10)
    # A traced length: one compilation for the three values.
    hand, autodiff = (
        jax.jit(jax.value_and_grad(partial(loss, cell, reverse=True, backward=b), argnums=(0, 1, 2)))
        for b in (backward, "autodiff")
    )
    for length in (0, 3, T):
        length = jnp.asarray(length)
        assert_tree_close(hand(params, xs, carry, length), autodiff(params, xs, carry, length), 1e-10, 1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("name,options", [("lstm", {}), ("gru", {}), ("simple_rnn", {})])
def test_matches_autodiff_float32(name, options):
    cell, params, carry = setup(name, options, dtype=jnp.float32)
    xs = normal((T, I), seed=3, dtype=jnp.float32)
    for length in (None, jnp.asarray(5)):
        want = grads(cell, params, xs, carry, length, backward="autodiff")
        got = grads(cell, params, xs, carry, length)
        assert_tree_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("remat", ["step", "sqrt"])
@pytest.mark.parametrize("backward", ["hand", "autodiff"])
def test_remat_gives_identical_gradients(remat, backward):
    """Lengths and directions; T = 7 is not a square (sqrt pads it), T = 9 is, T = 1."""
    cell, params, carry = setup("lstm", {"peephole": True})
    for num_steps, reverse, length in ((7, False, None), (9, True, 8), (1, False, 1)):
        xs = normal((num_steps, I), seed=3)
        length = None if length is None else jnp.asarray(length)
        kw = dict(reverse=reverse, backward=backward)
        want = grads(cell, params, xs, carry, length, **kw)
        got = grads(cell, params, xs, carry, length, remat=remat, **kw)
        assert_tree_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_remat_on_a_user_cell():
    """A cell without project/step takes checkpointed autodiff."""
    from helpers import elman

    cell = elman(H)
    params = cell.init(jax.random.key(0), I)
    xs = normal((T, I), seed=3)
    carry = normal((H,), seed=4)
    want = grads(cell, params, xs, carry, jnp.asarray(5), backward="auto")
    for remat in ("step", "sqrt"):
        got = grads(cell, params, xs, carry, jnp.asarray(5), remat=remat, backward="auto")
        assert_tree_close(got, want, 1e-12, 1e-12)


def test_batched_bidirectional_and_stacked_layers():
    """vmap over a batch with lengths; both directions in one scan; two layers."""
    model = scanrnn.serial(
        scanrnn.bidirectional(scanrnn.gru(H, param_dtype=F64), backward="hand", one_scan=True),
        scanrnn.recurrent(scanrnn.lstm(H, param_dtype=F64), return_sequences=False, backward="hand"),
        scanrnn.dense(2, param_dtype=F64),
    )
    reference = scanrnn.serial(
        scanrnn.bidirectional(scanrnn.gru(H, param_dtype=F64), backward="autodiff"),
        scanrnn.recurrent(scanrnn.lstm(H, param_dtype=F64), return_sequences=False, backward="autodiff"),
        scanrnn.dense(2, param_dtype=F64),
    )
    params = jax.tree.map(lambda a: a + 0.1, model.init(jax.random.key(0), I))
    xs = normal((3, T, I), seed=5)
    lengths = jnp.array([T, 4, 1])

    def batch_loss(m, p):
        out = jax.vmap(m.apply, in_axes=(None, 0, 0))(p, xs, lengths)
        return jnp.sum(jnp.tanh(out) * jnp.arange(1.0, 7.0, dtype=F64).reshape(3, 2))

    want = jax.jit(jax.grad(partial(batch_loss, reference)))(params)
    got = jax.jit(jax.grad(partial(batch_loss, model)))(params)
    assert_tree_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_reverse_mode_against_finite_differences():
    cell, params, carry = setup("layer_norm_lstm", {})
    xs = normal((5, I), seed=3)

    def f(params, carry, xs):
        return unroll(cell, params, xs, carry, length=4, reverse=True)

    check_grads(jax.jit(f), (params, carry, xs), order=1, modes=("rev",), atol=1e-6, rtol=1e-6, eps=1e-6)


@pytest.mark.parametrize("hoist", [True, False], ids=["hoisted", "in_loop"])
def test_weight_gradients_are_products_outside_the_loops(hoist):
    """The backward scan holds no product that accumulates a weight gradient; autodiff's does."""
    cell, params, carry = setup("lstm", {})
    xs = normal((T, I), seed=3)
    counts = {}
    for backward in ("hand", "autodiff"):
        f = jax.grad(partial(loss, cell, backward=backward, hoist=hoist))
        counts[backward] = count_primitive(jax.make_jaxpr(f)(params, xs, carry, None), "dot_general")
    # (Gradients with respect to params only, so no product makes dx.) The hand-written path's
    # counts outside include the primal values of its zero-valued routing products, which
    # nothing reads and XLA drops.
    if hoist:
        # Inside the scans: forward W_hh h, backward W_hh^T dr; autodiff also accumulates dW_hh.
        assert counts["hand"][1] == 2 and counts["autodiff"][1] == 3
        # Outside: the projection and dW_ih; the hand-written path's dW_hh (and its zero term).
        assert counts["hand"][0] == 4 and counts["autodiff"][0] == 2
    else:
        # Inside: the forward's two products; backward, the hand-written path recomputes the
        # step's projection and forms W_hh^T dr, autodiff forms W_hh^T dr and accumulates
        # dW_ih and dW_hh.
        assert counts["hand"][1] == 4 and counts["autodiff"][1] == 5
        # Outside: dW_ih and dW_hh, one product each over all steps (and the two zero terms).
        assert counts["hand"][0] == 4 and counts["autodiff"][0] == 0


@pytest.mark.parametrize("case_id,name,options", [c for c in FORMS if c[0] in ("lstm-peephole", "layer_norm_lstm")],
                         ids=["lstm-peephole", "layer_norm_lstm"])
def test_hoisted_projection_matches_in_loop_autodiff(case_id, name, options):
    """The tests above run the default of a CPU, the projection inside the loop; here the hoisted one."""
    cell, params, carry = setup(name, options)
    xs = normal((T, I), seed=3)
    want = grads(cell, params, xs, carry, 4, backward="autodiff", hoist=False, reverse=True)
    got = grads(cell, params, xs, carry, 4, backward="hand", hoist=True, reverse=True)
    assert_tree_close(got, want, rtol=1e-10, atol=1e-12)


def test_higher_order_and_forward_mode_need_autodiff():
    cell, params, carry = setup("gru", {})
    xs = normal((T, I), seed=3)

    def first(params, backward):
        return jax.grad(partial(loss, cell, backward=backward))(params, xs, carry, None)

    def second(params, backward):
        return sum(jnp.sum(g * g) for g in jax.tree.leaves(first(params, backward)))

    with pytest.raises(ValueError, match="backward='autodiff'"):
        jax.grad(second)(params, "hand")
    jax.grad(second)(params, "autodiff")  # works
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(lambda p: loss(cell, p, xs, carry, None), (params,), (params,))
    jax.jvp(lambda p: loss(cell, p, xs, carry, None, backward="autodiff"), (params,), (params,))


@pytest.mark.slow
def test_auto_takes_the_hand_written_pass_where_it_pays(monkeypatch):
    """``backward="auto"``: autodiff on a CPU, the hand-written pass on accelerators (``hand_written_default``)."""
    xs = normal((T, I), seed=3, dtype=jnp.float32)

    def hand_written(cell, **options):
        params = cell.init(jax.random.key(0), I)
        jaxpr = jax.make_jaxpr(lambda p: unroll(cell, p, xs, **options)[1])(params)
        return sum(count_primitive(jaxpr, "custom_vjp_call")) > 0

    cells = {h: scanrnn.lstm(h) for h in (4, 64)}
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert not any(hand_written(cell) for cell in cells.values())
    assert all(hand_written(cell, backward="hand") for cell in cells.values())
    assert not any(hand_written(cell, backward="autodiff") for cell in cells.values())
    assert not hand_written(scanrnn.gru(64, reset_after=False))  # it has no hand-written pass
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert all(hand_written(cell) for cell in cells.values())


def test_bad_options():
    cell, params, _ = setup("lstm", {})
    xs = normal((T, I), seed=3)
    with pytest.raises(ValueError, match="remat must be one of"):
        unroll(cell, params, xs, remat="sqrtt")
    with pytest.raises(ValueError, match="backward must be one of"):
        unroll(cell, params, xs, backward="fast")
    with pytest.raises(ValueError, match="unroll must be a positive int"):
        unroll(cell, params, xs, unroll=0)
    with pytest.raises(ValueError, match="hoist must be None, True or False"):
        unroll(cell, params, xs, hoist="yes")
    with pytest.raises(ValueError, match="hoist must be None, True or False"):
        scanrnn.recurrent(cell, hoist=1)
    with pytest.raises(ValueError, match="remat must be one of"):
        scanrnn.recurrent(cell, remat=None)
    with pytest.raises(ValueError, match="backward must be one of"):
        scanrnn.bidirectional(cell, backward="fast")
    with pytest.raises(ValueError, match="one_scan must be None, True or False, got 'yes'"):
        scanrnn.bidirectional(cell, one_scan="yes")
    with pytest.raises(ValueError, match="one_scan must be None, True or False, got 1"):
        scanrnn.unroll_bidirectional(cell, jax.tree.map(lambda a: jnp.stack([a, a]), params), xs, one_scan=1)
    cho = scanrnn.gru(H, reset_after=False)
    with pytest.raises(ValueError, match="backward='hand' needs a cell with a hand-written backward pass"):
        unroll(cho, cho.init(jax.random.key(0), I), xs.astype(jnp.float32), backward="hand")
    with pytest.raises(ValueError, match="backward='hand' needs a cell with a hand-written backward pass"):
        unroll(scanrnn.min_gru(H), scanrnn.min_gru(H).init(jax.random.key(0), I), xs.astype(jnp.float32), backward="hand")

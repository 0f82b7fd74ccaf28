"""The hand-written backward pass of ``unroll`` and the ``remat`` options (``scanrnn.Execution``).

Reference: autodiff through the plain scan (``Execution()``:
``backward="autodiff"``, ``remat="none"``), itself checked against finite differences in
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
from helpers import CASE_IDS, CASES, count_primitive, hand_or_autodiff, make_cell, normal, random_carry, random_params
from scanrnn import Execution, unroll
from scanrnn.execution import ACCELERATOR

H, I, T = 4, 3, 7
F64 = jnp.float64
HAND = Execution(backward="hand")
AUTODIFF = Execution()  # backward="autodiff", remat="none": the reference


def setup(name, options, dtype=F64):
    cell = make_cell(name, options, H, param_dtype=dtype)
    params = jax.tree.map(lambda a: a.astype(dtype), random_params(cell, I, seed=1))
    carry = jax.tree.map(lambda a: a.astype(dtype), random_carry(cell, params, seed=2))
    return cell, params, carry


def loss(cell, params, xs, carry, length, *, reverse=False, execution=HAND):
    final, ys = unroll(cell, params, xs, carry, length=length, reverse=reverse, execution=execution)
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
    assert isinstance(cell, scanrnn.GatedCell)
    execution = Execution(backward=hand_or_autodiff(cell))  # "hand": every built-in cell of this file is a GatedCell
    want = grads(cell, params, xs, carry, None, execution=AUTODIFF)
    assert_tree_close(grads(cell, params, xs, carry, None, execution=execution), want, rtol=1e-10, atol=1e-10)
    # A traced length: one compilation for the three values.
    hand, autodiff = (
        jax.jit(jax.value_and_grad(partial(loss, cell, reverse=True, execution=e), argnums=(0, 1, 2)))
        for e in (execution, AUTODIFF)
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
        want = grads(cell, params, xs, carry, length, execution=AUTODIFF)
        got = grads(cell, params, xs, carry, length)  # HAND
        assert_tree_close(got, want, rtol=1e-5, atol=1e-5)


REMATS = [Execution(remat=remat, backward=backward) for backward in ("hand", "autodiff") for remat in ("step", "sqrt")]


@pytest.mark.slow
@pytest.mark.parametrize("execution", REMATS, ids=[f"{e.backward}-{e.remat}" for e in REMATS])
def test_remat_gives_identical_gradients(execution):
    """Lengths and directions; T = 7 is not a square (sqrt pads it), T = 9 is, T = 1."""
    cell, params, carry = setup("lstm", {"peephole": True})
    for num_steps, reverse, length in ((7, False, None), (9, True, 8), (1, False, 1)):
        xs = normal((num_steps, I), seed=3)
        length = None if length is None else jnp.asarray(length)
        want = grads(cell, params, xs, carry, length, reverse=reverse, execution=execution._replace(remat="none"))
        got = grads(cell, params, xs, carry, length, reverse=reverse, execution=execution)
        assert_tree_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_remat_on_a_user_cell():
    """A generic Cell (only ``apply``) takes checkpointed autodiff."""
    from helpers import elman

    cell = elman(H)
    params = cell.init(jax.random.key(0), I)
    xs = normal((T, I), seed=3)
    carry = normal((H,), seed=4)
    want = grads(cell, params, xs, carry, jnp.asarray(5), execution=AUTODIFF)
    for remat in ("step", "sqrt"):
        got = grads(cell, params, xs, carry, jnp.asarray(5), execution=Execution(remat=remat))
        assert_tree_close(got, want, 1e-12, 1e-12)


@pytest.mark.slow
def test_batched_bidirectional_and_stacked_layers():
    """vmap over a batch with lengths; both directions in one scan; two layers."""
    model = scanrnn.serial(
        scanrnn.bidirectional(scanrnn.gru(H, param_dtype=F64), execution=Execution(backward="hand", one_scan=True)),
        scanrnn.recurrent(scanrnn.lstm(H, param_dtype=F64), return_sequences=False, execution=HAND),
        scanrnn.dense(2, param_dtype=F64),
    )
    reference = scanrnn.serial(
        scanrnn.bidirectional(scanrnn.gru(H, param_dtype=F64), execution=AUTODIFF),
        scanrnn.recurrent(scanrnn.lstm(H, param_dtype=F64), return_sequences=False, execution=AUTODIFF),
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


@pytest.mark.parametrize("execution", [Execution(hoist=True), Execution(hoist=False)], ids=["hoisted", "in_loop"])
def test_weight_gradients_are_products_outside_the_loops(execution):
    """The backward scan holds no product that accumulates a weight gradient; autodiff's does."""
    cell, params, carry = setup("lstm", {})
    xs = normal((T, I), seed=3)
    counts = {}
    for backward in ("hand", "autodiff"):
        f = jax.grad(partial(loss, cell, execution=execution._replace(backward=backward)))
        counts[backward] = count_primitive(jax.make_jaxpr(f)(params, xs, carry, None), "dot_general")
    # (Gradients with respect to params only, so no product makes dx.) The hand-written path's
    # counts outside include the primal values of its zero-valued routing products, which
    # nothing reads and XLA drops.
    if execution.hoist:
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
@pytest.mark.slow
def test_hoisted_projection_matches_in_loop_autodiff(case_id, name, options):
    """The tests above run the default, the projection inside the loop; here the hoisted one."""
    cell, params, carry = setup(name, options)
    xs = normal((T, I), seed=3)
    want = grads(cell, params, xs, carry, 4, execution=Execution(backward="autodiff", hoist=False), reverse=True)
    got = grads(cell, params, xs, carry, 4, execution=Execution(backward="hand", hoist=True), reverse=True)
    assert_tree_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_higher_order_and_forward_mode_need_autodiff():
    cell, params, carry = setup("gru", {})
    xs = normal((T, I), seed=3)

    def first(params, backward):
        return jax.grad(partial(loss, cell, execution=Execution(backward=backward)))(params, xs, carry, None)

    def second(params, backward):
        return sum(jnp.sum(g * g) for g in jax.tree.leaves(first(params, backward)))

    with pytest.raises(ValueError, match="backward='autodiff'"):
        jax.grad(second)(params, "hand")
    jax.grad(second)(params, "autodiff")  # works
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(lambda p: loss(cell, p, xs, carry, None), (params,), (params,))
    jax.jvp(lambda p: loss(cell, p, xs, carry, None, execution=AUTODIFF), (params,), (params,))


@pytest.mark.slow
def test_defaults_are_the_same_on_every_backend(monkeypatch):
    """``Execution()`` is autodiff on every backend, a GPU's too; ``ACCELERATOR`` takes the hand-written pass."""
    xs = normal((T, I), seed=3, dtype=jnp.float32)

    def program(cell, **options):
        params = cell.init(jax.random.key(0), I)
        return jax.make_jaxpr(lambda p: unroll(cell, p, xs, **options)[1])(params)

    def hand_written(cell, **options):
        return sum(count_primitive(program(cell, **options), "custom_vjp_call")) > 0

    cells = {h: scanrnn.lstm(h) for h in (4, 64)}
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    on_cpu = {h: str(program(cell)) for h, cell in cells.items()}
    assert not any(hand_written(cell) for cell in cells.values())
    assert all(hand_written(cell, execution=HAND) for cell in cells.values())
    assert not any(hand_written(cell, execution=AUTODIFF) for cell in cells.values())
    assert not hand_written(scanrnn.min_gru(64))  # a LinearCell has no hand-written pass
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert {h: str(program(cell)) for h, cell in cells.items()} == on_cpu  # the same program
    assert not any(hand_written(cell) for cell in cells.values())
    assert not hand_written(scanrnn.min_gru(64))
    # The accelerator's choices are one argument away, on any backend.
    assert all(hand_written(cell, execution=ACCELERATOR) for cell in cells.values())
    assert all(hand_written(cell, execution=Execution(backward="hand")) for cell in cells.values())


def test_bad_options():
    cell, params, _ = setup("lstm", {})
    xs = normal((T, I), seed=3)
    with pytest.raises(ValueError, match="execution.remat must be one of"):
        unroll(cell, params, xs, execution=Execution(remat="sqrtt"))
    with pytest.raises(ValueError, match="execution.backward must be one of"):
        unroll(cell, params, xs, execution=Execution(backward="fast"))
    with pytest.raises(ValueError, match="execution.unroll must be a positive int"):
        unroll(cell, params, xs, execution=Execution(unroll=0))
    with pytest.raises(ValueError, match="execution.hoist must be True or False"):
        unroll(cell, params, xs, execution=Execution(hoist="yes"))
    with pytest.raises(ValueError, match="execution.hoist must be True or False"):
        scanrnn.recurrent(cell, execution=Execution(hoist=1))
    with pytest.raises(ValueError, match="execution.remat must be one of"):
        scanrnn.recurrent(cell, execution=Execution(remat=None))
    with pytest.raises(ValueError, match="execution.backward must be one of"):
        scanrnn.bidirectional(cell, execution=Execution(backward="fast"))
    with pytest.raises(ValueError, match="execution.one_scan must be True or False, got 'yes'"):
        scanrnn.bidirectional(cell, execution=Execution(one_scan="yes"))
    with pytest.raises(ValueError, match="execution.one_scan must be True or False, got 1"):
        scanrnn.unroll_bidirectional(
            cell, jax.tree.map(lambda a: jnp.stack([a, a]), params), xs, execution=Execution(one_scan=1)
        )
    with pytest.raises(ValueError, match="backward='hand' needs a GatedCell .*; got a LinearCell"):
        unroll(scanrnn.min_gru(H), scanrnn.min_gru(H).init(jax.random.key(0), I), xs.astype(jnp.float32),
               execution=HAND)
    # What the options were before the bundle: backward="auto" and hoist=None are gone,
    # and the bundle is an Execution, not its fields.
    with pytest.raises(ValueError, match=r"execution.backward must be one of \('autodiff', 'hand'\), got 'auto'"):
        unroll(cell, params, xs, execution=Execution(backward="auto"))
    with pytest.raises(ValueError, match="execution.hoist must be True or False, got None"):
        unroll(cell, params, xs, execution=Execution(hoist=None))
    with pytest.raises(TypeError, match=r"execution must be a scanrnn.Execution \(e.g. Execution\(remat='sqrt'\)\) "
                                        "or None, got dict"):
        unroll(cell, params, xs, execution={"remat": "sqrt"})

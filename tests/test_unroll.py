"""unroll, unroll_batch, unroll_bidirectional and flip_valid against Python loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference
import scanrnn
from helpers import (
    FACTORY_CASES,
    FACTORY_IDS,
    assert_close,
    assert_zero,
    carry_tuple,
    count_primitive,
    counting_cell,
    counting_numpy,
    elman,
    elman_numpy,
    loop,
    masked_loop,
    make_cell,
    normal,
    random_carry,
    random_params,
)
from scanrnn import Execution, flip_valid, unroll, unroll_batch
from scanrnn.execution import ACCELERATOR

H, I, T = 5, 3, 6
F64 = jnp.float64


def setup(name, options, seed=0):
    cell = make_cell(name, options, H, param_dtype=F64)
    params = random_params(cell, I, seed=seed)
    return cell, params


# --------------------------------------------------------------------------
# Whole sequences.


@pytest.mark.parametrize("case_id,name,options", FACTORY_CASES, ids=FACTORY_IDS)
def test_unroll_matches_loop_and_reference(case_id, name, options):
    cell, params = setup(name, options)
    xs = normal((T, I), seed=1)
    carry0 = random_carry(cell, params, seed=2)

    carry, ys = unroll(cell, params, xs, carry0)
    assert ys.shape == (T, H)
    assert_close((carry, ys), loop(cell, params, xs, carry0))
    # ... and the NumPy equations, so unroll and apply are not wrong together.
    ref_carry, ref_ys = reference.sequence(
        name, reference.as_numpy(params), carry_tuple(carry0), np.asarray(xs), **options
    )
    assert_close(tuple(carry), ref_carry)
    assert_close(ys, ref_ys)

    # reverse=True reads xs backwards; ys stay in the original time order.
    # carry=None starts from zeros.
    carry_r, ys_r = unroll(cell, params, xs, reverse=True)
    loop_carry, loop_ys = loop(cell, params, xs[::-1], cell.initial_carry(params))
    assert_close((carry_r, ys_r), (loop_carry, loop_ys[::-1]))
    assert not np.allclose(ys_r, ys)


def test_unroll_option_does_not_change_results():
    cell, params = setup("lstm", {"peephole": True})
    xs = normal((T, I), seed=1)
    carry, ys = unroll(cell, params, xs, length=4, execution=Execution(unroll=4))  # T = 6: a remainder of 2 steps
    want_carry, want_ys = loop(cell, params, xs[:4])
    assert_close(carry, want_carry)
    assert_close(ys[:4], want_ys)
    assert_zero(ys[4:])


@pytest.mark.slow
@pytest.mark.parametrize("case_id,name,options", FACTORY_CASES[:3], ids=FACTORY_IDS[:3])
def test_jit_matches_eager(case_id, name, options):
    cell, params = setup(name, options)
    xs = normal((T, I), seed=1)
    fn = lambda p, x, n: unroll(cell, p, x, length=n, reverse=True)  # noqa: E731
    jitted = jax.jit(fn)(params, xs, 4)
    with jax.disable_jit():
        eager = fn(params, xs, 4)
    assert_close(jitted, eager)
    assert_zero(jitted[1][4:])


def test_float32_unroll_matches_float64_reference():
    cell = scanrnn.gru(H)  # float32 params
    params = random_params(cell, I)
    xs = normal((T, I), seed=1, dtype=jnp.float32)
    carry, ys = unroll(cell, params, xs)
    assert ys.dtype == jnp.float32
    _, ref_ys = reference.sequence("gru", reference.as_numpy(params), (np.zeros(H),), np.asarray(xs, np.float64))
    assert_close(ys, ref_ys, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------
# Batches.


@pytest.mark.slow
def test_vmap_and_unroll_batch_match_loop_over_examples():
    cell, params = setup("lstm", {"peephole": True})
    B = 3
    xs = normal((B, T, I), seed=1)
    init = cell.initial_carry(params)  # a different random carry per example:
    carries = type(init)(*(normal((B, H), seed=5 + i) for i in range(len(init))))
    lengths = jnp.array([T, 0, 2])

    per_example = [loop(cell, params, xs[b], jax.tree.map(lambda c: c[b], carries)) for b in range(B)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *per_example)
    assert_close(jax.vmap(unroll, in_axes=(None, None, 0, 0))(cell, params, xs, carries), stacked)
    assert_close(unroll_batch(cell, params, xs, carries), stacked)

    # Per-example lengths (traced under vmap), forwards and backwards.
    for reverse in (False, True):
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *[
            masked_loop(cell, params, xs[b], int(lengths[b]), reverse) for b in range(B)
        ])
        got = unroll_batch(cell, params, xs, length=lengths, reverse=reverse)
        assert_close(got, stacked)
        vm = jax.vmap(lambda x, n: unroll(cell, params, x, length=n, reverse=reverse))(xs, lengths)
        assert_close(vm, stacked)
        assert_zero(got[1][1])  # length 0: all outputs zero
        assert_zero(got[1][2, 2:])


# --------------------------------------------------------------------------
# length.


# The masking is the same code for every cell; these cover both carry types.
PADDED_CASES = [c for c in FACTORY_CASES if c[0] in ("simple_rnn-tanh", "lstm-peephole", "gru-cho")]


@pytest.mark.parametrize("case_id,name,options", PADDED_CASES, ids=[c[0] for c in PADDED_CASES])
def test_padded_sequence_matches_unpadded(case_id, name, options):
    cell, params = setup(name, options)
    n = 4
    valid = normal((n, I), seed=1)
    garbage = 10.0 * normal((T - n, I), seed=2)  # padding that would change everything if read
    padded = jnp.concatenate([valid, garbage])
    carry0 = random_carry(cell, params, seed=3)

    for reverse in (False, True):
        carry, ys = unroll(cell, params, padded, carry0, length=n, reverse=reverse)
        # The unpadded sequence, read forwards or backwards (outputs in time order).
        want_carry, want_ys = loop(cell, params, valid[::-1] if reverse else valid, carry0)
        assert ys.shape == (T, H)
        assert_close(carry, want_carry)
        assert_close(ys[:n], want_ys[::-1] if reverse else want_ys)
        assert_zero(ys[n:])


def test_length_edge_cases():
    cell, params = setup("gru", {"reset_after": True})
    xs = normal((T, I), seed=1)
    carry0 = random_carry(cell, params, seed=2)
    for reverse in (False, True):
        # length 0: the carry is untouched and every output is zero.
        carry, ys = unroll(cell, params, xs, carry0, length=0, reverse=reverse)
        assert_close(carry, carry0, rtol=0, atol=0)
        assert ys.shape == (T, H)
        assert_zero(ys)
        # length T: the same as no length (for reverse, a different code path).
        assert_close(
            unroll(cell, params, xs, carry0, length=T, reverse=reverse),
            unroll(cell, params, xs, carry0, reverse=reverse),
        )
    # Integer flavours of a concrete length.
    expected = masked_loop(cell, params, xs, 3, False)
    for n in (np.int32(3), jnp.array(3, jnp.int64), np.array(3)):
        assert_close(unroll(cell, params, xs, length=n), expected)


def test_traced_length_under_jit():
    cell, params = setup("layer_norm_lstm", {})
    xs = normal((T, I), seed=1)
    fn = jax.jit(lambda x, n: unroll(cell, params, x, length=n, reverse=True))
    for n in (0, 1, 4, T):
        carry, ys = fn(xs, n)  # one compiled program for every length
        assert_close((carry, ys), masked_loop(cell, params, xs, n, True))
        assert_zero(ys[n:])
    assert fn._cache_size() == 1


def test_flip_valid_literal_values():
    np.testing.assert_array_equal(flip_valid(jnp.arange(5), jnp.array(3)), [2, 1, 0, 3, 4])
    np.testing.assert_array_equal(flip_valid(jnp.arange(5), 3), [2, 1, 0, 3, 4])  # a Python int
    np.testing.assert_array_equal(flip_valid(jnp.arange(5), 0), [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(flip_valid(jnp.arange(5), 1), [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(flip_valid(jnp.arange(5), 5), [4, 3, 2, 1, 0])
    # Rows of a [T, F] array move together.
    xs = jnp.arange(12).reshape(6, 2)
    np.testing.assert_array_equal(flip_valid(xs, 4), [[6, 7], [4, 5], [2, 3], [0, 1], [8, 9], [10, 11]])
    # Its own inverse, traced length under jit and vmap.
    np.testing.assert_array_equal(flip_valid(flip_valid(xs, 4), 4), xs)
    flipped = jax.jit(jax.vmap(flip_valid, in_axes=(None, 0)))(jnp.arange(4), jnp.array([0, 2, 4]))
    np.testing.assert_array_equal(flipped, [[0, 1, 2, 3], [1, 0, 2, 3], [3, 2, 1, 0]])


# --------------------------------------------------------------------------
# The input projection: one matmul outside the scan (hoist=True), or each step's inside it (the default).

DOTS_INSIDE = {"gru-cho": 2}


@pytest.mark.parametrize("with_length", [False, True], ids=["no_length", "length"])
@pytest.mark.parametrize("case_id,name,options", FACTORY_CASES, ids=FACTORY_IDS)
def test_input_projection_is_hoisted(case_id, name, options, with_length):
    cell, params = setup(name, options)
    xs = normal((T, I), seed=1)
    length = 4 if with_length else None
    # (The hand-written backward pass adds a product outside the scan; see test_gated_backward.)
    execution = Execution(backward="autodiff", hoist=True)
    jaxpr = jax.make_jaxpr(lambda p, x: unroll(cell, p, x, length=length, execution=execution))(params, xs)
    assert count_primitive(jaxpr, "scan") == (1, 0)
    assert count_primitive(jaxpr, "dot_general") == (1, DOTS_INSIDE.get(case_id, 1))
    # The product outside is the [T, I] x [I, G*H] one (xs @ w_ih.T).
    (dot,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
    assert [tuple(v.aval.shape) for v in dot.invars] == [(T, I), tuple(params.w_ih.shape[::-1])]


@pytest.mark.parametrize("execution", [Execution(backward="hand"), Execution(backward="autodiff")],
                         ids=["hand", "autodiff"])
def test_input_projection_inside_the_loop(execution, monkeypatch):
    cell, params = setup("lstm", {})
    xs = normal((T, I), seed=1)
    jaxpr = jax.make_jaxpr(lambda p, x: unroll(cell, p, x, execution=execution._replace(hoist=False)))(params, xs)
    assert count_primitive(jaxpr, "scan") == (1, 0)
    # Both products of a step in the loop. Outside it: none for autodiff; the hand-written
    # path's two zero-valued routing products of its weight gradients (see test_gated_backward),
    # whose values nothing reads.
    assert count_primitive(jaxpr, "dot_general") == ({"hand": 2, "autodiff": 0}[execution.backward], 2)
    hoisted = unroll(cell, params, xs, execution=execution._replace(hoist=True))
    np.testing.assert_allclose(
        unroll(cell, params, xs, execution=execution._replace(hoist=False))[1], hoisted[1], rtol=1e-12
    )
    # In the loop is the default on every backend (what a CPU measured): Execution() itself.
    assert Execution().hoist is False
    if execution.backward == "autodiff":
        for backend in ("cpu", "gpu"):
            monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
            assert str(jax.make_jaxpr(lambda p, x: unroll(cell, p, x))(params, xs)) == str(jaxpr)
    # ACCELERATOR hoists it: the [T, I] x [I, G*H] product is outside the scan.
    accelerator = jax.make_jaxpr(lambda p, x: unroll(cell, p, x, execution=ACCELERATOR))(params, xs)
    outside = [e for e in accelerator.jaxpr.eqns if e.primitive.name == "dot_general"]
    assert [(T, I), tuple(params.w_ih.shape[::-1])] in [[tuple(v.aval.shape) for v in e.invars] for e in outside]


@pytest.mark.slow
def test_user_cell_takes_generic_path_and_matches_loop():
    cell = elman(H)
    assert scanrnn.kinds.kind(cell) == "generic"  # a Cell: no projection for unroll to hoist
    params = cell.init(jax.random.key(0), I)
    xs = normal((T, I), seed=1)
    h0 = normal((H,), seed=2)
    carry, ys = unroll(cell, params, xs, h0)
    assert_close((carry, ys), loop(cell, params, xs, h0))
    assert_close((carry, ys), elman_numpy(params, xs, h0))
    jaxpr = jax.make_jaxpr(lambda p, x: unroll(cell, p, x))(params, xs)
    assert count_primitive(jaxpr, "dot_general") == (0, 2)  # both products in the body

    # length and reverse.
    n = 4
    carry, ys = unroll(cell, params, xs, length=n, reverse=True)
    want_h, want_ys = elman_numpy(params, xs[:n][::-1])
    assert_close(carry, want_h)
    assert_close(ys[:n], want_ys[::-1])
    assert_zero(ys[n:])

    # vmap and jit.
    batch = normal((2, T, I), seed=3)
    lengths = jnp.array([n, T])
    got = jax.jit(lambda x, l: unroll_batch(cell, params, x, length=l))(batch, lengths)
    for b in range(2):
        want_h, want_ys = elman_numpy(params, batch[b, : int(lengths[b])])
        assert_close(got[0][b], want_h)
        assert_close(got[1][b, : int(lengths[b])], want_ys)


@pytest.mark.slow
def test_user_cell_with_pytree_carry_and_output():
    cell = counting_cell(H)
    params = cell.init(jax.random.key(0), I)
    xs = normal((T, I), seed=1)
    carry, ys = unroll(cell, params, xs)
    want_carry, want_ys = counting_numpy(params, xs)
    assert isinstance(ys, tuple) and ys[0].shape == (T, H) and ys[1].shape == (T, 2)
    assert_close(carry, want_carry)
    assert_close(ys, want_ys)
    assert_close((carry, ys), loop(cell, params, xs))

    n = 3
    for reverse in (False, True):
        carry, ys = unroll(cell, params, xs, length=n, reverse=reverse)
        valid = xs[:n][::-1] if reverse else xs[:n]
        want_carry, want_ys = counting_numpy(params, valid)
        if reverse:
            want_ys = jax.tree.map(lambda y: y[::-1], want_ys)
        assert float(carry["n"]) == n  # the counter stopped at the length
        assert_close(carry, want_carry)
        assert_close(jax.tree.map(lambda y: y[:n], ys), want_ys)
        assert_zero(jax.tree.map(lambda y: y[n:], ys))


# --------------------------------------------------------------------------
# unroll_bidirectional.


@pytest.mark.slow
@pytest.mark.parametrize("execution", [Execution(one_scan=True), Execution(one_scan=False)],
                         ids=["one_scan", "two_scans"])
@pytest.mark.parametrize("length", [None, 4])
def test_unroll_bidirectional_matches_two_unrolls(length, execution):
    cell = scanrnn.lstm(H, param_dtype=F64)
    params = jax.tree.map(lambda a, b: jnp.stack([a, b]), random_params(cell, I, seed=1), random_params(cell, I, seed=2))
    xs = normal((T, I), seed=3)
    carries, ys = scanrnn.unroll_bidirectional(cell, params, xs, length=length, execution=execution)
    p_fwd, p_bwd = jax.tree.map(lambda a: a[0], params), jax.tree.map(lambda a: a[1], params)
    c_fwd, y_fwd = unroll(cell, p_fwd, xs, length=length)
    c_bwd, y_bwd = unroll(cell, p_bwd, xs, length=length, reverse=True)
    assert ys.shape == (2, T, H)
    assert_close(ys, jnp.stack([y_fwd, y_bwd]))
    assert_close(carries, jax.tree.map(lambda a, b: jnp.stack([a, b]), c_fwd, c_bwd))
    # ys[1][0] is the backward state after reading the whole (valid) sequence.
    assert_close(ys[1][0], c_bwd.h)

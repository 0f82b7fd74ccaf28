"""Gradients against finite differences (float64), forward and reverse mode."""

from functools import partial

import jax
import jax.numpy as jnp
import pytest
from jax.test_util import check_grads

import scanrnn
from helpers import (
    CASE_IDS,
    CASES,
    FACTORY_CASES,
    FACTORY_IDS,
    elman,
    hand_or_autodiff,
    make_cell,
    normal,
    random_carry,
    random_params,
)
from scanrnn import Execution, unroll

H, I, T = 4, 3, 5
F64 = jnp.float64
EPS = 1e-6  # central differences in float64: error ~ eps^2 + 1e-16 / eps
TOL = dict(atol=1e-6, rtol=1e-6, eps=EPS)


def setup(name, options):
    cell = make_cell(name, options, H, param_dtype=F64)
    params = random_params(cell, I, seed=1)
    return cell, params, random_carry(cell, params, seed=2)


@pytest.mark.slow
@pytest.mark.parametrize("case_id,name,options", CASES, ids=CASE_IDS)
def test_apply_grads(case_id, name, options):
    """First and second derivatives (reverse over reverse) of one step in params, carry and x.

    Forward mode through every cell is checked through unroll below.
    """
    cell, params, carry = setup(name, options)
    x = normal((I,), seed=3)
    check_grads(cell.apply, (params, carry, x), order=2, modes=("rev",), **TOL)


@pytest.mark.slow
@pytest.mark.parametrize("case_id,name,options", FACTORY_CASES, ids=FACTORY_IDS)
def test_unroll_grads_with_length_and_reverse(case_id, name, options):
    cell, params, carry = setup(name, options)
    xs = normal((T, I), seed=3)

    # The hand-written pass where the cell has one.
    def f(params, carry, xs, execution=Execution(backward=hand_or_autodiff(cell))):
        return unroll(cell, params, xs, carry, length=3, reverse=True, execution=execution)

    # The hand-written backward pass is reverse mode only; forward mode takes
    # autodiff through the scan.
    check_grads(jax.jit(f), (params, carry, xs), order=1, modes=("rev",), **TOL)
    check_grads(jax.jit(partial(f, execution=Execution())), (params, carry, xs), order=1, modes=("fwd",), **TOL)


@pytest.mark.slow
def test_unroll_second_order_grads():
    cell, params, carry = setup("lstm", {"peephole": True})
    xs = normal((T, I), seed=3)

    def f(params, xs):
        return unroll(cell, params, xs, carry, length=4, execution=Execution(backward="autodiff"))[1]

    # Reverse over reverse (forward mode has its order-1 checks above). The
    # hand-written backward pass refuses this; see test_gated_backward.
    check_grads(jax.jit(f), (params, xs), order=2, modes=("rev",), **TOL)


@pytest.mark.slow
def test_bidirectional_grads():
    cell = scanrnn.gru(H, reset_after=False, param_dtype=F64)
    params = jax.tree.map(lambda a, b: jnp.stack([a, b]), random_params(cell, I, seed=1), random_params(cell, I, seed=2))
    xs = normal((T, I), seed=3)
    seq = scanrnn.bidirectional(cell, "concat", execution=Execution(one_scan=True)).apply
    last = scanrnn.bidirectional(cell, "mul", return_sequences=False, execution=Execution(one_scan=False)).apply

    def f(params, xs):
        return seq(params, xs, length=3), last(params, xs, length=4)

    check_grads(jax.jit(f), (params, xs), order=1, modes=("fwd", "rev"), **TOL)


@pytest.mark.slow
def test_user_cell_grads():
    cell = elman(H)
    params = cell.init(jax.random.key(0), I)
    xs = normal((T, I), seed=3)
    model = scanrnn.serial(scanrnn.recurrent(cell), scanrnn.recurrent(cell, return_sequences=False))
    mparams = model.init(jax.random.key(1), I)

    def f(params, mparams, xs):
        _, ys = unroll(cell, params, xs, length=4, reverse=True)
        return ys, model.apply(mparams, xs, length=3)

    check_grads(jax.jit(f), (params, mparams, xs), order=1, modes=("fwd", "rev"), **TOL)

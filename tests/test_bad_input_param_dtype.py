"""``param_dtype``: bfloat16 params initialise (in float32, then cast) and run; non-floating dtypes are refused.

The orthogonal initialiser's QR decomposition has no bfloat16 in LAPACK, so
``lstm(H, param_dtype=jnp.bfloat16).init`` used to fail; every factory with
a ``param_dtype`` now initialises a dtype narrower than float32 in float32
and casts. An integer, complex or unknown ``param_dtype`` raises
``InputTypeError`` when the factory is called.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scanrnn as sr
from helpers import normal
from scanrnn import seq2seq as s2s

T, I, H = 4, 2, 3
BF16, F32 = jnp.bfloat16, jnp.float32


def _cell_dtype(dtype):
    """The encoder's and decoder's dtype in a seq2seq model of ``param_dtype=dtype`` (float32 when it is refused)."""
    return dtype if dtype in (BF16, F32) else F32

CELLS = [
    ("simple_rnn", lambda d: sr.simple_rnn(H, param_dtype=d)),
    ("lstm", lambda d: sr.lstm(H, peephole=True, param_dtype=d)),
    ("gru", lambda d: sr.gru(H, param_dtype=d)),
    ("layer_norm_rnn", lambda d: sr.layer_norm_rnn(H, param_dtype=d)),
    ("layer_norm_lstm", lambda d: sr.layer_norm_lstm(H, param_dtype=d)),
    ("min_gru", lambda d: sr.min_gru(H, param_dtype=d)),
    ("min_lstm", lambda d: sr.min_lstm(H, param_dtype=d)),
    ("jordan", lambda d: sr.jordan(H, 2, param_dtype=d)),
    ("elman", lambda d: sr.elman(H, 2, param_dtype=d)),
    ("narx", lambda d: sr.narx(H, 2, param_dtype=d)),
]
OTHERS = [
    ("dense", lambda d: sr.dense(2, param_dtype=d), lambda f, k: f.init(k, I)),
    ("causal_conv", lambda d: sr.causal_conv(2, 2, param_dtype=d), lambda f, k: f.init(k, I)),
    ("seq2seq", lambda d: s2s.seq2seq(sr.serial(sr.recurrent(sr.gru(H, param_dtype=_cell_dtype(d)))),
                                      sr.gru(H, param_dtype=_cell_dtype(d)), src_vocab_size=3, tgt_vocab_size=3,
                                      param_dtype=d),
     lambda f, k: f.init(k)),
    ("additive_attention", lambda d: s2s.additive_attention(2, param_dtype=d), lambda f, k: f.init(k, H, H)),
    ("general_attention", lambda d: s2s.general_attention(param_dtype=d), lambda f, k: f.init(k, H, H)),
]
FACTORIES = [(name, make) for name, make in CELLS] + [(name, make) for name, make, _ in OTHERS]


@pytest.mark.parametrize("make", [pytest.param(m, id=n) for n, m in FACTORIES])
@pytest.mark.parametrize(
    "dtype, given",
    [(jnp.int32, "dtype int32"), (jnp.complex64, "dtype complex64"), ("floating", "'floating'"), (None, "None")],
    ids=["int32", "complex64", "no-dtype", "None"],
)
def test_non_floating_param_dtype_refused(make, dtype, given):
    message = f"param_dtype must be a floating dtype such as jnp.float32 or jnp.bfloat16, got {given}"
    with pytest.raises(sr._checks.InputTypeError, match=re.escape(message)):
        make(dtype)


@pytest.mark.slow
@pytest.mark.parametrize("make", [pytest.param(m, id=n) for n, m in CELLS])
def test_bfloat16_cells_init(make):
    key = jax.random.key(0)
    params, params32 = (jax.jit(make(dtype).init, static_argnums=1)(key, I) for dtype in (BF16, F32))
    for p, p32 in zip(jax.tree.leaves(params), jax.tree.leaves(params32)):
        assert p.dtype == BF16
        np.testing.assert_array_equal(p, p32.astype(BF16))  # made in float32, then cast


# One cell of each kind runs (compiling is the cost): orthogonal recurrent kernels, layer norm, the
# parallel log-space scan, a classic network with delay lines. Layer norm over H = 3 units amplifies
# the rounding of a near-constant vector, hence its wider tolerance.
@pytest.mark.parametrize("make, tolerance", [
    pytest.param(dict(CELLS)["lstm"], 0.03, id="lstm"),
    pytest.param(dict(CELLS)["layer_norm_lstm"], 0.1, id="layer_norm_lstm"),
    pytest.param(dict(CELLS)["min_gru"], 0.03, id="min_gru"),
    pytest.param(dict(CELLS)["narx"], 0.03, id="narx"),
])
def test_bfloat16_cells_run(make, tolerance):
    cell, reference = make(BF16), make(F32)
    params = jax.jit(cell.init, static_argnums=1)(jax.random.key(0), I)
    xs = normal((T, I), seed=1, dtype=F32).astype(BF16)

    def both(p, x):  # the same (rounded) params and inputs, the sequence computed in bfloat16 and in float32
        return sr.unroll(cell, p, x)[1], sr.unroll(reference, *jax.tree.map(lambda a: a.astype(F32), (p, x)))[1]

    ys, ys32 = jax.jit(both)(params, xs)
    assert ys.dtype == BF16 and np.all(np.isfinite(np.asarray(ys, np.float32)))
    np.testing.assert_allclose(np.asarray(ys, np.float32), ys32, rtol=0.05, atol=tolerance)


@pytest.mark.slow
@pytest.mark.parametrize("make, init", [pytest.param(m, i, id=n) for n, m, i in OTHERS])
def test_bfloat16_layers_and_models_init(make, init):
    params = jax.jit(lambda k: init(make(BF16), k))(jax.random.key(0))
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} <= {jnp.dtype(BF16), jnp.dtype(F32)}
    # The leaves made by the factory itself are bfloat16 (seq2seq's encoder and decoder cell keep their own).
    made_here = params if not isinstance(params, s2s.Seq2SeqParams) else (params.src_embed, params.out)
    assert all(leaf.dtype == BF16 for leaf in jax.tree.leaves(made_here))

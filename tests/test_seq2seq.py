"""scanrnn.seq2seq against NumPy equations, Python loops of its step and exhaustive search.

The references: attention scores, masked softmax and context written out in
NumPy; the teacher-forced decoder (a ``lax.scan``) against a Python loop of
``model.step``; gradients against finite differences in float64; beam search
on toy step functions whose log-probabilities depend on the whole prefix,
against the enumeration of every sequence in Python under the same
length-normalisation and end-token rules.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import scanrnn as sr
from scanrnn.seq2seq import (
    AdditiveAttentionParams,
    DecoderCarry,
    GeneralAttentionParams,
    additive_attention,
    beam_decode,
    beam_search,
    dot_attention,
    general_attention,
    greedy_decode,
    greedy_search,
    length_penalty,
    masked_softmax,
    seq2seq,
)

import reference
from helpers import assert_close, normal

F64 = jnp.float64


@pytest.fixture(autouse=True, scope="module")
def fast_compilation():
    """Compile with few XLA optimisations: these tiny programs take far longer to compile than to run."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


# --------------------------------------------------------------------------
# Attention.

ATTENTIONS = {
    "additive": lambda: additive_attention(4, param_dtype=F64),
    "dot": dot_attention,
    "general": lambda: general_attention(param_dtype=F64),
}


def attention_numpy(kind, params, query, memory, mask):
    """Scores, masked softmax and context from the papers' equations, in NumPy float64."""
    q, m = np.asarray(query, np.float64), np.asarray(memory, np.float64)
    if kind == "additive":
        w, u, v = (np.asarray(a, np.float64) for a in params)
        scores = np.array([v @ np.tanh(w @ q + u @ m_s) for m_s in m])
    elif kind == "dot":
        scores = np.array([q @ m_s for m_s in m])
    else:
        w = np.asarray(params.w, np.float64)
        scores = np.array([q @ w @ m_s for m_s in m])
    mask = np.asarray(mask)
    weights = np.zeros(len(m))
    if mask.any():
        e = np.exp(scores[mask] - scores[mask].max())
        weights[mask] = e / e.sum()
    return weights @ m, weights


def attention_case(kind, size=6, steps=5, seed=0):
    att = ATTENTIONS[kind]()
    params = jax.tree.map(lambda l: l + normal(l.shape, seed + 1), att.init(jax.random.key(seed), size, size))
    query = normal((size,), seed + 2)
    memory = normal((steps, size), seed + 3)
    return att, params, query, memory


def run_attention(att, params, query, memory, mask):
    return att.apply(params, query, memory, att.prepare(params, memory), mask)


jit_attention = jax.jit(run_attention, static_argnums=0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(ATTENTIONS))
def test_attention_matches_numpy_and_masked_steps_get_zero(kind):
    att, params, query, memory = attention_case(kind)
    mask = jnp.array([True, False, True, True, False])
    context, weights = jit_attention(att, params, query, memory, mask)
    expected_context, expected_weights = attention_numpy(kind, params, query, memory, mask)
    np.testing.assert_allclose(weights, expected_weights, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(context, expected_context, rtol=1e-12, atol=1e-14)
    assert np.all(np.asarray(weights)[~np.asarray(mask)] == 0.0)  # exactly, not approximately
    assert abs(float(weights.sum()) - 1.0) < 1e-12
    # Whatever the padded memory holds, nothing changes.
    padded = memory.at[1].set(1e3).at[4].set(-1e3)
    assert_close(jit_attention(att, params, query, padded, mask), (context, weights), rtol=1e-13)


@pytest.mark.parametrize("kind", sorted(ATTENTIONS))
def test_attention_fully_masked_is_zero_without_nan(kind):
    att, params, query, memory = attention_case(kind)
    mask = jnp.zeros((5,), bool)
    context, weights = jit_attention(att, params, query, memory, mask)
    np.testing.assert_array_equal(weights, 0.0)
    np.testing.assert_array_equal(context, 0.0)
    grad = jax.jit(jax.grad(lambda q, m: run_attention(att, params, q, m, mask)[0].sum(), argnums=(0, 1)))
    grads = grad(query, memory)
    for g in grads:
        np.testing.assert_array_equal(g, 0.0)


@pytest.mark.parametrize("kind", sorted(ATTENTIONS))
def test_attention_gradients(kind):
    att, params, query, memory = attention_case(kind)
    mask = jnp.array([True, True, False, True, False])
    f = jax.jit(lambda p, q, m: run_attention(att, p, q, m, mask))
    check_grads(f, (params, query, memory), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


def test_masked_softmax_large_scores():
    weights = masked_softmax(jnp.array([1e4, 1e4 - 1.0, 5e4]), jnp.array([True, True, False]))
    np.testing.assert_allclose(weights, [1 / (1 + np.exp(-1.0)), np.exp(-1.0) / (1 + np.exp(-1.0)), 0.0], rtol=1e-12)


# --------------------------------------------------------------------------
# The model.

SRC_VOCAB, TGT_VOCAB, START, END = 7, 6, 1, 2


@functools.lru_cache(maxsize=None)
def make_model(kind, bridge=True):
    """A tiny model in float64 and random params (NumPy noise into the shapes of ``init``: nothing compiled)."""
    attention = None if kind == "none" else ATTENTIONS[kind]()
    # bidirectional GRU(3) gives memory M = 6; the LSTM decoder has H = 6 (dot needs H == M) and a carry (h, c).
    model = seq2seq(ENCODER, sr.lstm(6, param_dtype=F64), src_vocab_size=SRC_VOCAB, tgt_vocab_size=TGT_VOCAB,
                    embed_size=3, attention=attention, bridge=bridge, start_token=START, end_token=END,
                    param_dtype=F64)
    shapes = jax.eval_shape(model.init, jax.random.key(1))
    rng = np.random.default_rng(len(kind))
    params = jax.tree.map(lambda l: jnp.asarray(0.7 * rng.standard_normal(l.shape), l.dtype), shapes)
    return model, params


ENCODER = sr.serial(sr.bidirectional(sr.gru(3, param_dtype=F64)))


SRC = jnp.array([3, 4, 5, 6, 0], jnp.int32)
TGT = jnp.array([4, 3, 5, 2], jnp.int32)


@functools.lru_cache(maxsize=None)
def compiled(kind):
    """The model's functions under jax.jit, shared by the tests (each compiles once per shape)."""
    model, _ = make_model(kind)
    return {name: jax.jit(getattr(model, name)) for name in ("encode", "step", "apply", "loss")}


@pytest.mark.slow
@pytest.mark.parametrize("kind, bridge", [("none", False), ("additive", True)])
def test_teacher_forced_scan_equals_python_loop_of_step(kind, bridge):
    model, params = make_model(kind, bridge)
    out = (compiled(kind)["apply"] if bridge else jax.jit(model.apply))(params, SRC, 3, TGT)
    inputs = [START] + np.asarray(TGT[:-1]).tolist()

    @jax.jit
    def loop(params):  # the reference: a Python loop over model.step (traced once, unrolled)
        carry = first = model.encode(params, SRC, 3)
        outs = []
        for token in inputs:
            carry, step_out = model.step(params, carry, jnp.asarray(token, jnp.int32))
            outs.append(step_out)
        return first, jax.tree.map(lambda *a: jnp.stack(a), *outs)

    carry, expected = loop(params)
    assert_close(out.logits, expected.logits, rtol=1e-12, atol=1e-13)
    if kind == "none":
        assert out.weights is None and expected.weights is None
        assert carry.memory is None and carry.context is None
    else:
        assert_close(out.weights, expected.weights, rtol=1e-12, atol=1e-13)
        np.testing.assert_array_equal(out.weights[:, 3:], 0.0)
        np.testing.assert_allclose(out.weights.sum(axis=1), 1.0, rtol=1e-12)
        np.testing.assert_array_equal(carry.mask, [True, True, True, False, False])
        np.testing.assert_array_equal(carry.context, 0.0)
        np.testing.assert_array_equal(carry.memory[3:], 0.0)  # the encoder's outputs past the source length
    # The decoder's initial state: the bridge from the encoder's last valid and first outputs, or zeros.
    if bridge:
        memory = np.asarray(carry.memory, np.float64)
        bridge_params = reference.as_numpy(params.bridge)
        state = np.tanh(bridge_params["w"] @ np.concatenate([memory[2], memory[0]]) + bridge_params["b"])
        np.testing.assert_allclose(carry.cell.h, state[:6], rtol=1e-12)
        np.testing.assert_allclose(carry.cell.c, state[6:], rtol=1e-12)
    else:
        assert params.bridge is None
        np.testing.assert_array_equal(carry.cell.h, 0.0)
        np.testing.assert_array_equal(carry.cell.c, 0.0)


@pytest.mark.slow
def test_decoder_step_matches_numpy():
    """One attentive step from the module's equations: input feeding, LSTM, attention, W_c, W_o."""
    model, params = make_model("additive")
    rng = np.random.default_rng(3)
    h, c, context = rng.standard_normal((3, 6))
    memory = rng.standard_normal((5, 6))
    mask = np.array([True, True, True, False, False])
    keys = memory @ np.asarray(params.attention.w_memory).T
    carry = DecoderCarry(sr.LSTMCarry(jnp.asarray(h), jnp.asarray(c)), jnp.asarray(context), jnp.asarray(memory),
                         jnp.asarray(keys), jnp.asarray(mask))
    new, out = jax.jit(model.step)(params, carry, jnp.asarray(4, jnp.int32))
    x = np.concatenate([np.asarray(params.tgt_embed)[4], context])
    h_new, c_new, _ = reference.lstm(reference.as_numpy(params.cell), h, c, x)
    expected_context, expected_weights = attention_numpy("additive", params.attention, h_new, memory, mask)
    combine, dense_out = reference.as_numpy(params.combine), reference.as_numpy(params.out)
    attentional = np.tanh(combine["w"] @ np.concatenate([h_new, expected_context]) + combine["b"])
    np.testing.assert_allclose(out.logits, dense_out["w"] @ attentional + dense_out["b"], rtol=1e-12)
    np.testing.assert_allclose(out.weights, expected_weights, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(new.context, expected_context, rtol=1e-12)
    np.testing.assert_allclose(new.cell.h, h_new, rtol=1e-12)
    np.testing.assert_allclose(new.cell.c, c_new, rtol=1e-12)
    np.testing.assert_array_equal(new.memory, memory)


@pytest.mark.slow
def test_loss_is_masked_cross_entropy_and_padding_changes_nothing():
    model, params = make_model("additive")
    fn = compiled("additive")
    base = fn["loss"](params, SRC, 3, TGT, 2)
    logits = np.asarray(fn["apply"](params, SRC, 3, TGT).logits)
    lp = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    np.testing.assert_allclose(base, -np.mean([lp[0, int(TGT[0])], lp[1, int(TGT[1])]]), rtol=1e-12)
    other_src = SRC.at[3].set(1).at[4].set(5)
    other_tgt = TGT.at[2].set(0).at[3].set(0)  # tgt[2] is read by step 3, past tgt_length = 2
    np.testing.assert_allclose(fn["loss"](params, other_src, 3, other_tgt, 2), base, rtol=1e-13)
    assert abs(float(fn["loss"](params, SRC, 4, TGT, 2) - base)) > 1e-6  # a valid source token does matter
    assert abs(float(fn["loss"](params, SRC, 3, TGT, 3) - base)) > 1e-6


@pytest.mark.slow
def test_loss_gradients():
    _, params = make_model("additive")
    loss = lambda p: compiled("additive")["loss"](p, SRC, 3, TGT, 3)  # noqa: E731
    check_grads(loss, (params,), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


@pytest.mark.slow
def test_model_decoding_greedy_equals_beam_one_and_teacher_forcing():
    model, params = make_model("additive")
    fn = compiled("additive")
    # Make the end token likely enough to appear sometimes: raise its output bias.
    params = params._replace(out=params.out._replace(b=params.out.b.at[END].add(1.0)))
    srcs = jnp.stack([SRC, SRC[::-1], jnp.array([6, 6, 3, 0, 0], jnp.int32), jnp.array([5, 3, 0, 0, 0], jnp.int32)])
    lengths = jnp.array([4, 5, 3, 2])
    L = TGT.shape[0]
    greedy = jax.vmap(lambda s, n: greedy_decode(model, params, s, n, max_length=L))(srcs, lengths)
    beam = jax.vmap(lambda s, n: beam_decode(model, params, s, n, beam_width=1, max_length=L))(srcs, lengths)
    np.testing.assert_array_equal(greedy.tokens, beam.tokens[:, 0])
    np.testing.assert_array_equal(greedy.length, beam.lengths[:, 0])
    np.testing.assert_allclose(greedy.log_prob, beam.log_probs[:, 0], rtol=1e-12)
    assert np.asarray(greedy.finished).any() and not np.asarray(greedy.finished).all()
    for i in range(len(srcs)):
        n, tokens = int(greedy.length[i]), greedy.tokens[i]
        np.testing.assert_array_equal(tokens[n:], 0)  # the pad token
        # Teacher forcing on the decoded tokens: each is the argmax of its step's logits.
        out = fn["apply"](params, srcs[i], int(lengths[i]), tokens)  # as compiled elsewhere
        logits, tokens = np.asarray(out.logits), np.asarray(tokens)
        np.testing.assert_array_equal(np.argmax(logits, axis=1)[:n], tokens[:n])
        lp = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
        np.testing.assert_allclose(greedy.log_prob[i], sum(lp[t, tokens[t]] for t in range(n)), rtol=1e-12)


# --------------------------------------------------------------------------
# Search on toy step functions.


STATES = 101


def toy(vocab, seed):
    """A step whose log-probs depend on the whole prefix: a hashed prefix state indexes a random table.

    The carry is ``(state, log_table)``, so one compiled search serves every table.
    """
    table = np.random.default_rng(seed).standard_normal((STATES, vocab)) * 2.0
    log_table = table - np.logaddexp.reduce(table, axis=1, keepdims=True)

    def sequence_log_prob(tokens, start):
        state, total, previous = 0, 0.0, start
        for token in tokens:
            state = next_state(state, previous)
            total += log_table[state, token]
            previous = token
        return total

    return (jnp.zeros((), jnp.int32), jnp.asarray(log_table)), sequence_log_prob


def next_state(state, token):
    return (state * 31 + token * 7 + 3) % STATES


def toy_step(carry, token):
    state, log_table = carry
    state = next_state(state, token)
    return (state, log_table), log_table[state]


def exhaustive(vocab, max_length, end, alpha, sequence_log_prob, start):
    """Every candidate: sequences ending with the end token, or max_length tokens without it; sorted by score."""
    found = []
    for n in range(1, max_length + 1):
        for seq in itertools.product(range(vocab), repeat=n):
            if end in seq[:-1] or (n < max_length and seq[-1] != end):
                continue
            log_prob = sequence_log_prob(seq, start)
            score = log_prob / ((5.0 + n) / 6.0) ** alpha
            found.append((score, log_prob, seq, seq[-1] == end))
    return sorted(found, key=lambda c: -c[0])


@functools.lru_cache(maxsize=None)
def toy_search(kind, max_length, end, alpha=0.0, width=1):
    """A jit-compiled greedy or beam search over ``toy_step`` (start token 0, pad -1)."""
    if kind == "greedy":
        return jax.jit(lambda c: greedy_search(toy_step, c, start_token=0, end_token=end, max_length=max_length,
                                               pad_token=-1))
    return jax.jit(lambda c: beam_search(toy_step, c, start_token=0, end_token=end, beam_width=width,
                                         max_length=max_length, alpha=alpha, pad_token=-1))


@pytest.mark.slow
@pytest.mark.parametrize("vocab, max_length, alpha, seed", [(4, 3, 0.6, 1)])
def test_full_width_beam_search_is_exhaustive_search(vocab, max_length, alpha, seed):
    end = vocab - 1
    carry, sequence_log_prob = toy(vocab, seed)
    candidates = exhaustive(vocab, max_length, end, alpha, sequence_log_prob, 0)
    # Every candidate fits in the beam, so the beams are all the candidates, best first.
    out = toy_search("beam", max_length, end, alpha, len(candidates))(carry)
    assert int(out.num_steps) == max_length
    for k, (score, log_prob, seq, finished) in enumerate(candidates):
        n = len(seq)
        assert int(out.lengths[k]) == n
        assert tuple(np.asarray(out.tokens[k, :n]).tolist()) == seq
        np.testing.assert_array_equal(out.tokens[k, n:], -1)
        np.testing.assert_allclose(out.log_probs[k], log_prob, rtol=1e-12)
        np.testing.assert_allclose(out.scores[k], score, rtol=1e-12)
        assert bool(out.finished[k]) == finished


def test_greedy_equals_beam_width_one_and_is_not_always_optimal():
    vocab, max_length, end = 4, 4, 3
    beaten = 0
    for seed in range(6):
        carry, sequence_log_prob = toy(vocab, seed)
        greedy = toy_search("greedy", max_length, end)(carry)
        one = toy_search("beam", max_length, end, 0.0, 1)(carry)
        n = int(greedy.length)
        np.testing.assert_array_equal(greedy.tokens, one.tokens[0])
        assert n == int(one.lengths[0]) and bool(greedy.finished) == bool(one.finished[0])
        np.testing.assert_allclose(greedy.log_prob, one.log_probs[0], rtol=1e-12)
        # Greedy by hand: the argmax at each step given the prefix so far.
        log_table = np.asarray(carry[1])
        seq, state, previous = [], 0, 0
        while len(seq) < max_length and (not seq or seq[-1] != end):
            state = next_state(state, previous)
            previous = int(np.argmax(log_table[state]))
            seq.append(previous)
        assert tuple(np.asarray(greedy.tokens[:n]).tolist()) == tuple(seq)
        np.testing.assert_array_equal(greedy.tokens[n:], -1)
        np.testing.assert_allclose(greedy.log_prob, sequence_log_prob(seq, 0), rtol=1e-12)
        best = exhaustive(vocab, max_length, end, 0.0, sequence_log_prob, 0)[0]
        beaten += best[1] > float(greedy.log_prob) + 1e-9
    assert beaten > 0  # the toy problems are ones where search matters


def test_search_stops_early_and_pads():
    vocab, end = 5, 4

    def step(count, token):
        # Token 1 is likely for two steps, then the end token is almost certain.
        logits = jnp.where(count < 2, jnp.array([0.0, 3.0, 1.0, 0.0, -2.0]), jnp.array([0.0, 0.0, 0.0, 0.0, 30.0]))
        return count + 1, jax.nn.log_softmax(logits)

    carry = jnp.zeros((), jnp.int32)
    greedy = jax.jit(lambda c: greedy_search(step, c, start_token=0, end_token=end, max_length=9, pad_token=7))(carry)
    assert greedy.tokens.tolist() == [1, 1, 4, 7, 7, 7, 7, 7, 7]
    assert int(greedy.length) == 3 and int(greedy.num_steps) == 3 and bool(greedy.finished)
    beam = jax.jit(lambda c: beam_search(step, c, start_token=0, end_token=end, beam_width=2, max_length=9,
                                         pad_token=7))(carry)
    assert int(beam.num_steps) == 3  # every beam finished at step 3: the loop stopped there
    assert beam.tokens[0].tolist() == [1, 1, 4, 7, 7, 7, 7, 7, 7]
    assert bool(beam.finished.all())
    for k in range(2):
        assert np.all(np.asarray(beam.tokens[k, int(beam.lengths[k]):]) == 7)


@pytest.mark.slow
def test_search_under_vmap_equals_one_at_a_time():
    (_, log_table), _ = toy(4, 3)
    states = jnp.array([0, 5, 17], jnp.int32)
    for search in (toy_search("greedy", 4, 3), toy_search("beam", 4, 3, 0.0, 1)):
        batched = jax.vmap(search, in_axes=((0, None),))((states, log_table))
        for i in range(3):
            assert_close(jax.tree.map(lambda a: a[i], batched), search((states[i], log_table)), rtol=1e-13)


def test_length_penalty():
    np.testing.assert_allclose(length_penalty(jnp.arange(4), 0.6, F64), ((5.0 + np.arange(4)) / 6.0) ** 0.6, rtol=1e-14)
    np.testing.assert_array_equal(length_penalty(jnp.arange(4), 0.0, F64), 1.0)


# --------------------------------------------------------------------------
# Errors.


def _toy_step(state, token):
    return state, jnp.zeros((4,), F64)


SEARCH = dict(start_token=0, end_token=3, max_length=3)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: beam_search(_toy_step, 0, beam_width=0, **SEARCH), "beam_width must be a positive int"),
        (lambda: beam_search(_toy_step, 0, beam_width=2.0, **SEARCH), "beam_width must be a positive int"),
        (lambda: beam_search(_toy_step, 0, beam_width=True, **SEARCH), "beam_width must be a positive int"),
        (lambda: beam_search(_toy_step, 0, beam_width=2, alpha=-0.5, **SEARCH), "alpha must be"),
        (lambda: beam_search(_toy_step, 0, beam_width=2, start_token=0, end_token=4, max_length=3), r"end_token must lie in \[0, 4\)"),
        (lambda: greedy_search(_toy_step, 0, start_token=0, end_token=3, max_length=0), "max_length must be a positive int"),
        (lambda: greedy_search(lambda c, t: (c, jnp.zeros((4, 1))), 0, **SEARCH), r"log_probs \[V\]"),
        (lambda: greedy_search(lambda c, t: (jnp.zeros(2), jnp.zeros(4)), jnp.zeros(3), **SEARCH), "carry like the one"),
        (lambda: dot_attention().init(jax.random.key(0), 4, 6), "query size to equal the memory size"),
        (lambda: dot_attention().apply((), jnp.ones(4), jnp.ones((3, 6)), jnp.ones((3, 6)), jnp.ones(3, bool)), "query size to equal"),
        (lambda: run_attention(*attention_case("additive")[:4], jnp.ones(4, bool)), r"mask must be boolean of shape \(5,\)"),
        (lambda: run_attention(*attention_case("general")[:4], jnp.ones(5)), "mask must be boolean"),
        (lambda: run_attention(attention_case("additive")[0], attention_case("additive")[1], jnp.ones(3, F64),
                               attention_case("additive")[3], jnp.ones(5, bool)), r"query must have shape \(6,\)"),
        (lambda: additive_attention(4).apply(GeneralAttentionParams(jnp.ones((2, 2))), jnp.ones(2), jnp.ones((3, 2)),
                                             jnp.ones((3, 4)), jnp.ones(3, bool)), "AdditiveAttentionParams"),
        (lambda: seq2seq(sr.recurrent(sr.gru(2)), sr.gru(2), src_vocab_size=3, tgt_vocab_size=3, end_token=3),
         r"end_token must lie in \[0, 3\)"),
        (lambda: seq2seq(sr.recurrent(sr.gru(2)), sr.gru(2), src_vocab_size=3, tgt_vocab_size=3, attention="dot"),
         "attention must be an Attention"),
    ],
)
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_model_inputs_raise():
    model, params = make_model("additive")
    with pytest.raises(ValueError, match=r"src must have shape \[T\]"):
        model.encode(params, SRC[None], 3)
    with pytest.raises(ValueError, match="src must be integer tokens"):
        model.encode(params, jnp.ones(5, F64), 3)
    with pytest.raises(ValueError, match=r"length must lie in \[0, 5\]"):
        model.encode(params, SRC, 6)
    with pytest.raises(ValueError, match=r"length must lie in \[0, 4\]"):
        model.loss(params, SRC, 3, TGT, 5)
    with pytest.raises(ValueError, match=r"tgt must have shape \[T\]"):
        model.loss(params, SRC, 3, TGT[None], 2)
    carry = jax.eval_shape(model.encode, params, SRC, 3)  # shapes only: nothing is compiled
    assert isinstance(carry, DecoderCarry) and isinstance(params.attention, AdditiveAttentionParams)
    with pytest.raises(ValueError, match="token must be an integer scalar"):
        jax.eval_shape(model.step, params, carry, jnp.array([1, 2]))
    with pytest.raises(ValueError, match="DecoderCarry"):
        jax.eval_shape(model.step, params, tuple(carry), jnp.asarray(1))
    _, none_params = make_model("none", False)
    with pytest.raises(ValueError, match="params do not match the model"):
        model.encode(none_params, SRC, 3)
    with pytest.raises(ValueError, match="Seq2SeqParams"):
        model.encode(tuple(params), SRC, 3)

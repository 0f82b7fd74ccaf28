"""Sequence to sequence: an encoder, an attentive decoder, greedy and beam-search decoding.

The model (Sutskever et al. 2014; attention after Bahdanau et al. 2015 and
Luong et al. 2015) reads a source sequence of tokens and writes a target
sequence one token at a time, each step reading the token it wrote before:

- the **encoder** is any :class:`scanrnn.Layer` over one sequence, for example
  ``serial(bidirectional(gru(64)))``, applied to the embedded source tokens
  ``[S, E]`` with the source length; its outputs are the *memory* ``[S, M]``;
- the **decoder** is a recurrent cell whose step keeps the ``(params,
  carry, x) -> (carry, y)`` contract of :class:`scanrnn.Cell`, with ``x`` the
  previous token (an integer scalar). So the same step runs under
  :func:`jax.lax.scan` when training (teacher forcing: it reads the true
  previous token) and inside the decoding loops (it reads its own).

One decoder step, with attention (Luong et al.'s "input feeding": the
context of the previous step is part of this step's input)::

    e_t   = E_tgt[y_{t-1}]                              embedding   [E]
    h_t   = cell([e_t; c_{t-1}], state_{t-1})           recurrence  [H]
    c_t, a_t = attention(h_t, memory, mask)             context [M], weights [S]
    o_t   = tanh(W_c [h_t; c_t] + b_c)                  attentional state [H]
    logits_t = W_o o_t + b_o                            [V]

and without attention ``h_t = cell(e_t, state_{t-1})``, ``logits_t = W_o h_t
+ b_o``. The carry (:class:`DecoderCarry`) holds the cell's carry, the
previous context ``c_{t-1}`` (zeros before the first step) and the constants
of the sequence: the memory, its projection by the attention (computed once
per sequence) and the source mask.

The decoder's initial state comes from the encoder through a learned
*bridge* ``tanh(W_b [m_{n-1}; m_0] + b_b)``, where ``m_{n-1}`` is the memory
at the last valid source step and ``m_0`` at the first: for a bidirectional
encoder (outputs concatenated) these hold the final states of the forward
and of the backward direction. The bridge's output is split over the
leaves of the cell's carry (``h``, or ``h`` and ``c`` of an LSTM), so the
encoder and decoder sizes need not match. With ``bridge=False`` the
decoder starts from zeros.

Decoding, for one example (``jax.vmap`` adds the batch) and jit-compiled
with a fixed ``max_length``: :func:`greedy_search` and :func:`beam_search`
are written over any ``step(carry, token) -> (carry, log_probs [V])``;
:func:`greedy_decode` and :func:`beam_decode` apply them to a model.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.nn import initializers

from . import _checks
from . import cells as _cells
from .kinds import Cell
from .layers import DenseParams, EmbeddingParams, Layer, dense, embedding, last_valid
from .train import softmax_cross_entropy
from .unroll import valid_steps

__all__ = [
    "Attention",
    "AdditiveAttentionParams",
    "GeneralAttentionParams",
    "DotAttentionParams",
    "masked_softmax",
    "additive_attention",
    "dot_attention",
    "general_attention",
    "Seq2SeqParams",
    "DecoderCarry",
    "DecoderOutput",
    "Seq2Seq",
    "seq2seq",
    "GreedyResult",
    "BeamSearchResult",
    "length_penalty",
    "greedy_search",
    "beam_search",
    "greedy_decode",
    "beam_decode",
]

Array = jax.Array


def _check_positive_int(name: str, value) -> int:
    return _checks.positive_int(name, value)


def _check_token(name: str, value, vocab_size: Optional[int] = None) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise ValueError(f"{name} must be a Python int, got {value!r}")
    if vocab_size is not None and not 0 <= value < vocab_size:
        raise ValueError(f"{name} must lie in [0, {vocab_size}) (the vocabulary size V), got {value}")
    return int(value)


# --------------------------------------------------------------------------
# Attention.


class Attention(NamedTuple):
    """An attention mechanism: three pure functions over ONE decoder step.

    Attributes:
      init: ``(key, query_size, memory_size) -> params``.
      prepare: ``(params, memory [S, M]) -> keys [S, K]``, the part of the
        scores that depends on the memory only; computed once per sequence.
      apply: ``(params, query [Q], memory [S, M], keys [S, K], mask [S]) ->
        (context [M], weights [S])``: the weights are the softmax of the
        scores over the steps where ``mask`` is true and exactly 0 where it
        is false (all 0, and the context 0, when no step is valid); the
        context is ``sum_s weights[s] * memory[s]``.
    """

    init: Callable
    prepare: Callable
    apply: Callable


class AdditiveAttentionParams(NamedTuple):
    """Params of :func:`additive_attention`."""

    w_query: Array  # [A, Q]  W
    w_memory: Array  # [A, M]  U
    v: Array  # [A]


class GeneralAttentionParams(NamedTuple):
    """Params of :func:`general_attention`."""

    w: Array  # [Q, M]


class DotAttentionParams(NamedTuple):
    """Params of :func:`dot_attention`: none."""


def masked_softmax(scores, mask) -> Array:
    """Softmax of ``scores [S]`` over the steps where ``mask [S]`` (boolean) is true.

    Masked steps get exactly 0; when no step is valid every weight is 0 (not
    NaN), and so is the gradient.

    >>> masked_softmax(jnp.array([0.0, 0.0, 5.0]), jnp.array([True, True, False])).tolist()
    [0.5, 0.5, 0.0]
    """
    neg_inf = jnp.array(-jnp.inf, scores.dtype)
    shifted = jnp.where(mask, scores, neg_inf)
    top = lax.stop_gradient(jnp.max(shifted))  # the softmax does not depend on the shift
    top = jnp.where(jnp.isfinite(top), top, jnp.zeros_like(top))
    e = jnp.exp(shifted - top)  # exactly 0 where masked: exp(-inf)
    total = jnp.sum(e)
    return e / jnp.where(total > 0, total, jnp.ones_like(total))


def _check_attention_inputs(name: str, query, memory, keys, mask):
    query, memory, mask = jnp.asarray(query), jnp.asarray(memory), jnp.asarray(mask)
    if query.ndim != 1:
        raise ValueError(f"{name}: query must have shape [Q] (one decoder step), got shape {query.shape}")
    if memory.ndim != 2:
        raise ValueError(f"{name}: memory must have shape [S, M] (one sequence), got shape {memory.shape}")
    if mask.shape != memory.shape[:1] or mask.dtype != jnp.bool_:
        raise ValueError(
            f"{name}: mask must be boolean of shape ({memory.shape[0]},) (one per memory step), "
            f"got {mask.dtype} of shape {mask.shape}"
        )
    if jnp.ndim(keys) != 2 or jnp.shape(keys)[0] != memory.shape[0]:
        raise ValueError(
            f"{name}: keys must have shape [{memory.shape[0]}, K] (prepare(params, memory)), "
            f"got shape {jnp.shape(keys)}"
        )
    return query, memory, mask


def _context(scores, memory, mask):
    weights = masked_softmax(scores, mask)
    return weights @ memory, weights


def additive_attention(
    attention_size: int,
    *,
    kernel_init: _cells.Initializer = _cells.glorot_uniform,
    param_dtype=jnp.float32,
) -> Attention:
    r"""Additive attention (Bahdanau, Cho and Bengio 2015).

    .. math::
        \mathrm{score}(q, m_s) = v^\top \tanh(W q + U m_s)

    ``U m_s`` is ``prepare`` (once per sequence); each step adds ``W q``.

    Params (:class:`AdditiveAttentionParams`): ``w_query [A, Q]``,
    ``w_memory [A, M]``, ``v [A]``.

    >>> att = additive_attention(8)
    >>> params = att.init(jax.random.key(0), 4, 6)
    >>> memory = jnp.ones((5, 6))
    >>> context, weights = att.apply(params, jnp.ones(4), memory, att.prepare(params, memory), jnp.arange(5) < 3)
    >>> context.shape, weights.tolist()[3:]
    ((6,), [0.0, 0.0])
    """
    A = _checks.positive_int("attention_size", attention_size)
    kernel = _cells.param_init(kernel_init, _checks.floating_dtype("param_dtype", param_dtype))

    def init(key, query_size, memory_size):
        _checks.prng_key("key", key)
        _checks.positive_int("input_size", query_size)
        _checks.positive_int("input_size", memory_size)
        k1, k2, k3 = jax.random.split(key, 3)
        return AdditiveAttentionParams(
            w_query=kernel(k1, (A, query_size)),
            w_memory=kernel(k2, (A, memory_size)),
            v=kernel(k3, (1, A))[0],
        )

    def check(params, memory):
        if not isinstance(params, AdditiveAttentionParams):
            raise ValueError(
                f"additive_attention expects params of type AdditiveAttentionParams, got {type(params).__name__}"
            )
        m = jnp.shape(memory)[-1]
        if jnp.shape(params.w_memory) != (A, m) or jnp.shape(params.v) != (A,) or jnp.ndim(params.w_query) != 2:
            raise ValueError(
                f"additive_attention: params must have w_query [{A}, Q], w_memory [{A}, {m}] and v [{A}], got "
                f"{jnp.shape(params.w_query)}, {jnp.shape(params.w_memory)} and {jnp.shape(params.v)}"
            )

    def prepare(params, memory):
        memory = jnp.asarray(memory)
        if memory.ndim != 2:
            raise ValueError(f"additive_attention: memory must have shape [S, M], got shape {memory.shape}")
        check(params, memory)
        return memory @ params.w_memory.T  # [S, A]: U m_s for every s

    def apply(params, query, memory, keys, mask):
        query, memory, mask = _check_attention_inputs("additive_attention", query, memory, keys, mask)
        check(params, memory)
        if params.w_query.shape[1] != query.shape[0]:
            raise ValueError(
                f"additive_attention: query must have shape ({params.w_query.shape[1]},) (from params), "
                f"got {query.shape}"
            )
        hidden = jnp.tanh(keys + (params.w_query @ query)[None, :])  # [S, A]
        return _context(hidden @ params.v, memory, mask)

    return Attention(init, prepare, apply)


def dot_attention() -> Attention:
    r"""Dot-product attention (Luong, Pham and Manning 2015, "dot").

    .. math::
        \mathrm{score}(q, m_s) = q^\top m_s

    The query and memory sizes must be equal (a ``ValueError`` says so
    otherwise); there are no params (:class:`DotAttentionParams`), and
    ``prepare`` returns the memory itself.
    """

    def check_sizes(query_size, memory_size):
        if query_size != memory_size:
            raise ValueError(
                f"dot_attention needs the query size to equal the memory size, got query size {query_size} "
                f"and memory size {memory_size}; use general_attention or additive_attention"
            )

    def init(key, query_size, memory_size):
        _checks.prng_key("key", key)
        _checks.positive_int("input_size", query_size)
        _checks.positive_int("input_size", memory_size)
        check_sizes(query_size, memory_size)
        return DotAttentionParams()

    def prepare(params, memory):
        memory = jnp.asarray(memory)
        if memory.ndim != 2:
            raise ValueError(f"dot_attention: memory must have shape [S, M], got shape {memory.shape}")
        return memory

    def apply(params, query, memory, keys, mask):
        query, memory, mask = _check_attention_inputs("dot_attention", query, memory, keys, mask)
        check_sizes(query.shape[0], memory.shape[1])
        return _context(keys @ query, memory, mask)

    return Attention(init, prepare, apply)


def general_attention(
    *, kernel_init: _cells.Initializer = _cells.glorot_uniform, param_dtype=jnp.float32
) -> Attention:
    r"""Multiplicative attention with a learned matrix (Luong, Pham and Manning 2015, "general").

    .. math::
        \mathrm{score}(q, m_s) = q^\top W m_s

    ``prepare`` computes ``W m_s`` for every step once per sequence, and each
    step takes its dot product with the query.

    Params (:class:`GeneralAttentionParams`): ``w [Q, M]``.
    """

    kernel = _cells.param_init(kernel_init, _checks.floating_dtype("param_dtype", param_dtype))

    def init(key, query_size, memory_size):
        _checks.prng_key("key", key)
        _checks.positive_int("input_size", query_size)
        _checks.positive_int("input_size", memory_size)
        return GeneralAttentionParams(kernel(key, (query_size, memory_size)))

    def check(params, memory_size):
        if not isinstance(params, GeneralAttentionParams):
            raise ValueError(
                f"general_attention expects params of type GeneralAttentionParams, got {type(params).__name__}"
            )
        if jnp.ndim(params.w) != 2 or jnp.shape(params.w)[1] != memory_size:
            raise ValueError(
                f"general_attention: params.w must have shape [Q, {memory_size}], got {jnp.shape(params.w)}"
            )

    def prepare(params, memory):
        memory = jnp.asarray(memory)
        if memory.ndim != 2:
            raise ValueError(f"general_attention: memory must have shape [S, M], got shape {memory.shape}")
        check(params, memory.shape[1])
        return memory @ params.w.T  # [S, Q]: W m_s for every s

    def apply(params, query, memory, keys, mask):
        query, memory, mask = _check_attention_inputs("general_attention", query, memory, keys, mask)
        check(params, memory.shape[1])
        if params.w.shape[0] != query.shape[0]:
            raise ValueError(
                f"general_attention: query must have shape ({params.w.shape[0]},) (from params), got {query.shape}"
            )
        return _context(keys @ query, memory, mask)

    return Attention(init, prepare, apply)


# --------------------------------------------------------------------------
# The model.


class Seq2SeqParams(NamedTuple):
    """Params of :func:`seq2seq`."""

    src_embed: Array  # [V_src, E]
    encoder: Any  # the encoder layer's params
    tgt_embed: Array  # [V_tgt, E]
    cell: Any  # the decoder cell's params (input size E + M with attention, E without)
    attention: Any  # the attention's params, or None
    bridge: Optional[DenseParams]  # w [C, 2M], b [C] (C: the size of all carry leaves together), or None
    combine: Optional[DenseParams]  # w [H, H + M], b [H] (W_c), or None without attention
    out: DenseParams  # w [V_tgt, H], b [V_tgt]


class DecoderCarry(NamedTuple):
    """The carry of the decoder step."""

    cell: Any  # the decoder cell's carry
    context: Optional[Array]  # [M] the previous step's context (zeros at first), None without attention
    memory: Optional[Array]  # [S, M] the encoder outputs, None without attention
    keys: Optional[Array]  # [S, K] attention.prepare(memory), None without attention
    mask: Optional[Array]  # [S] bool, the valid source steps, None without attention


class DecoderOutput(NamedTuple):
    """What the decoder step emits (stacked along a leading time axis by ``apply``)."""

    logits: Array  # [V_tgt]
    weights: Optional[Array]  # [S] attention weights, None without attention


class Seq2Seq(NamedTuple):
    """A sequence-to-sequence model, pure functions over ONE example.

    Attributes:
      init: ``(key) -> Seq2SeqParams``.
      encode: ``(params, src [S], src_length=None) -> DecoderCarry``, the
        decoder's initial carry.
      step: ``(params, carry, token) -> (carry, DecoderOutput)``, one decoder
        step reading the previous token (an integer scalar).
      apply: ``(params, src [S], src_length, tgt [L]) -> DecoderOutput`` with
        ``logits [L, V]`` and ``weights [L, S]``: teacher forcing, step ``t``
        reads ``start_token`` (``t = 0``) or ``tgt[t - 1]``.
      loss: ``(params, src, src_length, tgt, tgt_length) -> scalar``: the
        mean over the first ``tgt_length`` steps of the cross-entropy of
        ``apply``'s logits with ``tgt``.
      start_token: the target token that begins decoding.
      end_token: the target token that ends a sequence.

    Tokens: ``src`` and ``tgt`` are integer arrays; concrete tokens within
    their length (``src_length``, ``tgt_length``; all of ``tgt`` for
    ``apply``) must lie in ``[0, V)`` of their vocabulary, and so must a
    concrete ``token`` of ``step``, else a ValueError. Traced tokens (under
    ``jit``, as in :func:`greedy_decode`) cannot be checked: they are
    clamped to ``[0, V - 1]``, so an out-of-range token reads the first or
    the last embedding (a wrong input, never a NaN); the padding past a
    length is clamped too and, as always, does not count.
    """

    init: Callable
    encode: Callable
    step: Callable
    apply: Callable
    loss: Callable
    start_token: int
    end_token: int


def _check_tokens(name: str, tokens, vocab_size: int, length=None, length_name: str = "length"):
    """``(tokens [T], length)`` checked: integer tokens of one sequence, the valid ones in ``[0, vocab_size)``.

    See :func:`scanrnn._checks.token_range`: concrete tokens out of range
    raise; traced ones and the padding past ``length`` are clamped.
    """
    tokens = _checks.tokens(name, tokens)
    length = _checks.length(length_name, length, tokens.shape[0])
    return _checks.token_range(name, tokens, vocab_size, length), length


def seq2seq(
    encoder: Layer,
    cell: Cell,
    *,
    src_vocab_size: int,
    tgt_vocab_size: int,
    embed_size: int = 32,
    attention: Optional[Attention] = None,
    bridge: bool = True,
    start_token: int = 1,
    end_token: int = 2,
    embed_init: _cells.Initializer = initializers.normal(1.0),
    param_dtype=jnp.float32,
) -> Seq2Seq:
    """An encoder-decoder model; see the module docstring for the equations.

    Args:
      encoder: a :class:`scanrnn.Layer` ``[S, E] -> [S, M]`` (with
        ``length``), e.g. ``serial(bidirectional(gru(64)))``.
      cell: the decoder's :class:`scanrnn.Cell` (its params are made here,
        with input size ``E + M`` with attention and ``E`` without); its
        carry's leaves must be vectors.
      src_vocab_size, tgt_vocab_size: the numbers of source and target tokens.
      embed_size: ``E``, the size of both token embeddings.
      attention: an :class:`Attention` (:func:`additive_attention`,
        :func:`dot_attention`, :func:`general_attention`) or ``None``.
      bridge: the decoder's initial state is ``tanh(W_b [m_{n-1}; m_0] +
        b_b)`` when true, zeros when false.
      start_token, end_token: target tokens, in ``[0, tgt_vocab_size)``.
      embed_init: initialiser of the embeddings.
      param_dtype: the dtype of the params made here (those of ``encoder``
        and ``cell`` are set where they are built).

    >>> from scanrnn import bidirectional, gru, serial
    >>> model = seq2seq(serial(bidirectional(gru(8))), gru(16), src_vocab_size=10, tgt_vocab_size=6,
    ...                 embed_size=4, attention=additive_attention(8))
    >>> params = jax.jit(model.init)(jax.random.key(0))
    >>> out = jax.jit(model.apply)(params, jnp.array([3, 4, 5, 0]), 3, jnp.array([3, 4, 2]))
    >>> out.logits.shape, out.weights.shape, float(out.weights[:, 3].max())
    ((3, 6), (3, 4), 0.0)
    """
    _checks.layer("seq2seq: encoder", encoder)
    _checks.cell("seq2seq: cell", cell)
    src_vocab_size = _check_positive_int("src_vocab_size", src_vocab_size)
    tgt_vocab_size = _check_positive_int("tgt_vocab_size", tgt_vocab_size)
    embed_size = _check_positive_int("embed_size", embed_size)
    start_token = _check_token("start_token", start_token, tgt_vocab_size)
    end_token = _check_token("end_token", end_token, tgt_vocab_size)
    if attention is not None and not isinstance(attention, Attention):
        raise ValueError(f"attention must be an Attention or None, got {type(attention).__name__}")
    bridge = _checks.flag("bridge", bridge)
    param_dtype = _checks.floating_dtype("param_dtype", param_dtype)
    E, V = embed_size, tgt_vocab_size
    src_embedding = embedding(src_vocab_size, E, embed_init=embed_init, param_dtype=param_dtype)
    tgt_embedding = embedding(V, E, embed_init=embed_init, param_dtype=param_dtype)

    def memory_shape(encoder_params, dtype):
        shape = jax.eval_shape(encoder.apply, encoder_params, jax.ShapeDtypeStruct((1, E), dtype)).shape
        if len(shape) != 2:
            raise ValueError(f"seq2seq: the encoder must map [S, E] to [S, M], it gave shape {shape} for S = 1")
        return shape[1]

    def carry_sizes(cell_params):
        leaves, tree = jax.tree.flatten(jax.eval_shape(cell.initial_carry, cell_params))
        if any(len(l.shape) != 1 for l in leaves):
            shapes = [l.shape for l in leaves]
            raise ValueError(f"seq2seq: the decoder cell's carry leaves must be vectors, got shapes {shapes}")
        return [l.shape[0] for l in leaves], tree

    def init(key):
        keys = jax.random.split(_checks.prng_key("key", key), 8)
        src_embed = src_embedding.init(keys[0], src_vocab_size).table
        encoder_params = encoder.init(keys[1], E)
        M = memory_shape(encoder_params, param_dtype)
        tgt_embed = tgt_embedding.init(keys[2], V).table
        cell_params = cell.init(keys[3], E + M if attention is not None else E)
        x = jax.ShapeDtypeStruct((E + M if attention is not None else E,), param_dtype)
        _, y = jax.eval_shape(cell.apply, cell_params, jax.eval_shape(cell.initial_carry, cell_params), x)
        if len(y.shape) != 1:
            raise ValueError(f"seq2seq: the decoder cell's output must be a vector [H], got shape {y.shape}")
        H = y.shape[0]
        attention_params = combine = None
        if attention is not None:
            attention_params = attention.init(keys[4], H, M)
            combine = dense(H, param_dtype=param_dtype).init(keys[5], H + M)
        bridge_params = None
        if bridge:
            sizes, _ = carry_sizes(cell_params)
            bridge_params = dense(sum(sizes), param_dtype=param_dtype).init(keys[6], 2 * M)
        out = dense(V, param_dtype=param_dtype).init(keys[7], H)
        return Seq2SeqParams(src_embed, encoder_params, tgt_embed, cell_params, attention_params,
                             bridge_params, combine, out)

    def check_params(params):
        if not isinstance(params, Seq2SeqParams):
            raise ValueError(f"seq2seq expects params of type Seq2SeqParams, got {type(params).__name__}")
        if jnp.shape(params.src_embed) != (src_vocab_size, E) or jnp.shape(params.tgt_embed) != (V, E):
            raise ValueError(
                f"seq2seq: params.src_embed must be [{src_vocab_size}, {E}] and params.tgt_embed [{V}, {E}], "
                f"got {jnp.shape(params.src_embed)} and {jnp.shape(params.tgt_embed)}"
            )
        if (params.attention is None) != (attention is None) or (params.bridge is None) == bridge:
            raise ValueError("seq2seq: params do not match the model (attention or bridge present in one only)")

    def encode(params, src, src_length=None):
        check_params(params)
        src, src_length = _check_tokens("src", src, src_vocab_size, src_length, "src_length")
        if bridge and src.shape[0] == 0:
            raise ValueError(
                "seq2seq(bridge=True) needs at least one source step (the bridge reads the first and the "
                f"last valid memory steps), got src of shape {src.shape}"
            )
        embedded = src_embedding.apply(EmbeddingParams(params.src_embed), src)  # padding clamped by the check
        memory = encoder.apply(params.encoder, embedded, length=src_length)  # [S, M]
        if jnp.ndim(memory) != 2 or jnp.shape(memory)[0] != src.shape[0]:
            raise ValueError(f"seq2seq: the encoder must give [S, M] = [{src.shape[0]}, M], got {jnp.shape(memory)}")
        if bridge:
            sizes, tree = carry_sizes(params.cell)
            summary = jnp.concatenate([last_valid(memory, src_length), memory[0]])  # [2M]
            state = jnp.tanh(params.bridge.w @ summary + params.bridge.b)
            cell_carry = jax.tree.unflatten(tree, jnp.split(state, np.cumsum(sizes)[:-1].tolist()))
        else:
            cell_carry = cell.initial_carry(params.cell)
        if attention is None:
            return DecoderCarry(cell_carry, None, None, None, None)
        mask = valid_steps(src.shape[0], src_length) if src_length is not None else jnp.ones(src.shape, bool)
        keys = attention.prepare(params.attention, memory)
        context = jnp.zeros(memory.shape[1:], memory.dtype)
        return DecoderCarry(cell_carry, context, memory, keys, mask)

    def step(params, carry, token):
        if not isinstance(carry, DecoderCarry):
            raise ValueError(f"seq2seq step expects a DecoderCarry, got {type(carry).__name__}")
        token = jnp.asarray(token)
        if token.ndim != 0 or not jnp.issubdtype(token.dtype, jnp.integer):
            raise ValueError(
                f"seq2seq step: the token must be an integer scalar, got {token.dtype} of shape {token.shape}"
            )
        token = _checks.token_range("seq2seq step: the token", token, V)
        e = tgt_embedding.apply(EmbeddingParams(params.tgt_embed), token)  # [E]
        if attention is None:
            cell_carry, h = cell.apply(params.cell, carry.cell, e)
            return carry._replace(cell=cell_carry), DecoderOutput(params.out.w @ h + params.out.b, None)
        x = jnp.concatenate([e, carry.context])  # input feeding of the previous context
        cell_carry, h = cell.apply(params.cell, carry.cell, x)
        context, weights = attention.apply(params.attention, h, carry.memory, carry.keys, carry.mask)
        attentional = jnp.tanh(params.combine.w @ jnp.concatenate([h, context]) + params.combine.b)
        logits = params.out.w @ attentional + params.out.b
        return carry._replace(cell=cell_carry, context=context), DecoderOutput(logits, weights)

    def teacher_forced(params, src, src_length, tgt):
        carry = encode(params, src, src_length)
        inputs = jnp.concatenate([jnp.full((1,), start_token, tgt.dtype), tgt[:-1]])
        _, out = lax.scan(lambda c, token: step(params, c, token), carry, inputs)
        return out

    def apply(params, src, src_length, tgt):
        tgt, _ = _check_tokens("tgt", tgt, V)
        return teacher_forced(params, src, src_length, tgt)

    def loss(params, src, src_length, tgt, tgt_length):
        tgt, tgt_length = _check_tokens("tgt", tgt, V, tgt_length, "tgt_length")
        return softmax_cross_entropy(teacher_forced(params, src, src_length, tgt).logits, tgt, tgt_length)

    return Seq2Seq(init, encode, step, apply, loss, start_token, end_token)


# --------------------------------------------------------------------------
# Search over any step function.


class GreedyResult(NamedTuple):
    """The output of :func:`greedy_search` for one example."""

    tokens: Array  # [max_length] int32, the tokens (the end token included) then pad_token
    length: Array  # int32, the number of tokens written (the end token included)
    log_prob: Array  # the sum of the log-probabilities of the written tokens
    finished: Array  # bool, whether the end token was written
    num_steps: Array  # int32, the number of steps the loop ran


class BeamSearchResult(NamedTuple):
    """The output of :func:`beam_search` for one example; beams sorted best first."""

    tokens: Array  # [K, max_length] int32, each hypothesis then pad_token
    lengths: Array  # [K] int32, tokens per hypothesis (the end token included)
    log_probs: Array  # [K] log p(Y), the sum over its tokens
    scores: Array  # [K] log p(Y) / length_penalty(|Y|, alpha); -inf for an empty slot
    finished: Array  # [K] bool, whether the hypothesis ends with the end token
    num_steps: Array  # int32, the number of steps the loop ran


def length_penalty(length, alpha: float, dtype=jnp.float32) -> Array:
    r"""GNMT's length normalisation (Wu et al. 2016): :math:`((5 + |Y|) / 6)^\alpha`.

    A hypothesis ``Y`` (its end token counted in ``|Y|``) scores ``log p(Y)
    / length_penalty(|Y|, alpha)``; ``alpha = 0`` ranks by ``log p(Y)``, a
    larger ``alpha`` favours longer hypotheses. The result has ``dtype``.
    """
    return ((5.0 + jnp.asarray(length).astype(dtype)) / 6.0) ** alpha


def _check_search(name, step, carry, start_token, end_token, max_length):
    max_length = _check_positive_int("max_length", max_length)
    start_token = _check_token("start_token", start_token)
    end_token = _check_token("end_token", end_token)
    token = jax.ShapeDtypeStruct((), jnp.int32)
    new_carry, log_probs = jax.eval_shape(step, carry, token)
    if len(log_probs.shape) != 1 or not jnp.issubdtype(log_probs.dtype, jnp.floating):
        raise ValueError(
            f"{name}: step(carry, token) must return (carry, log_probs [V]) with floating log_probs, "
            f"got log_probs {log_probs.dtype} of shape {log_probs.shape}"
        )
    vocab = log_probs.shape[0]
    _check_token("end_token", end_token, vocab)
    given = jax.tree.structure(new_carry), [(l.shape, l.dtype) for l in jax.tree.leaves(new_carry)]
    expected = jax.tree.structure(carry), [(jnp.shape(l), jnp.result_type(l)) for l in jax.tree.leaves(carry)]
    if given != expected:
        raise ValueError(f"{name}: step must return a carry like the one it is given: {expected}, got {given}")
    return max_length, start_token, end_token, vocab, log_probs.dtype


def greedy_search(
    step, carry, *, start_token: int, end_token: int, max_length: int, pad_token: int = 0
) -> GreedyResult:
    """Greedy decoding of ONE example: at each step the most probable token.

    ``step(carry, token) -> (carry, log_probs [V])`` reads the previous token
    (``start_token`` first). The loop is a :func:`jax.lax.while_loop` that
    stops after the end token or ``max_length`` tokens; the output has the
    fixed size ``max_length``, padded with ``pad_token`` after the last
    written token. It equals :func:`beam_search` with ``beam_width=1``.

    >>> table = jnp.log(jnp.array([[0.1, 0.2, 0.7], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]]))
    >>> step = lambda c, token: (c, table[token])    # next token depends on the previous one
    >>> out = greedy_search(step, (), start_token=0, end_token=1, max_length=5, pad_token=-1)
    >>> out.tokens.tolist(), int(out.length)    # never ends; beam_search finds [2, 1] (0.21)
    ([2, 2, 2, 2, 2], 5)
    """
    max_length, start_token, end_token, _, dtype = _check_search(
        "greedy_search", step, carry, start_token, end_token, max_length
    )
    pad_token = _check_token("pad_token", pad_token)

    def cond(state):
        t, _, _, _, done, _, _ = state
        return (t < max_length) & ~done

    def body(state):
        t, tokens, _, log_prob, _, last, c = state
        c, log_probs = step(c, last)
        token = jnp.argmax(log_probs).astype(jnp.int32)
        tokens = tokens.at[t].set(token)
        return t + 1, tokens, t + 1, log_prob + log_probs[token], token == end_token, token, c

    zero = jnp.zeros((), jnp.int32)
    state = (zero, jnp.full((max_length,), pad_token, jnp.int32), zero, jnp.zeros((), dtype),
             jnp.zeros((), bool), jnp.asarray(start_token, jnp.int32), carry)
    t, tokens, length, log_prob, done, _, _ = lax.while_loop(cond, body, state)
    return GreedyResult(tokens, length, log_prob, done, t)


def beam_search(
    step,
    carry,
    *,
    start_token: int,
    end_token: int,
    beam_width: int,
    max_length: int,
    alpha: float = 0.6,
    pad_token: int = 0,
) -> BeamSearchResult:
    """Beam search for ONE example over ``step(carry, token) -> (carry, log_probs [V])``.

    ``carry`` is one hypothesis's carry; ``step`` runs on all ``K =
    beam_width`` of them through :func:`jax.vmap`. A hypothesis ``Y`` is
    scored by ``log p(Y) / length_penalty(|Y|, alpha)`` (GNMT, Wu et al.
    2016; ``|Y|`` counts the end token). At each step every live hypothesis
    is extended by each of the ``V`` tokens, and every finished one (it ends
    with the end token) proposes itself once, with its score unchanged; the
    ``K`` best of these candidates by score are kept, so finished and live
    hypotheses compete for the same slots. The loop
    (:func:`jax.lax.while_loop`) stops when no live hypothesis is left or
    after ``max_length`` steps; live hypotheses then have ``max_length``
    tokens and compete with the finished ones as they are. With ``K`` at
    least the number of candidate sequences this is exhaustive search.

    Args:
      step: ``(carry, token) -> (carry, log_probs [V])`` with a carry of the
        same structure; ``token`` an int32 scalar.
      carry: the initial carry of one hypothesis.
      start_token: the token read at the first step.
      end_token: the token that finishes a hypothesis, in ``[0, V)``.
      beam_width: ``K >= 1``.
      max_length: the most tokens of a hypothesis (the end token included).
      alpha: the length normalisation exponent, ``>= 0``.
      pad_token: what fills the token buffers after each hypothesis.

    Returns:
      A :class:`BeamSearchResult` with the ``K`` hypotheses sorted by score,
      best first. When fewer than ``K`` distinct hypotheses exist, the
      remaining slots have a score of ``-inf``.

    >>> table = jnp.log(jnp.array([[0.1, 0.2, 0.7], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]]))
    >>> step = lambda c, token: (c, table[token])
    >>> out = beam_search(step, (), start_token=0, end_token=1, beam_width=3, max_length=5, alpha=0.0, pad_token=-1)
    >>> out.tokens[0].tolist(), round(float(jnp.exp(out.log_probs[0])), 2)   # 0.7 * 0.3, better than "1" (0.2)
    ([2, 1, -1, -1, -1], 0.21)
    """
    beam_width = _check_positive_int("beam_width", beam_width)
    max_length, start_token, end_token, vocab, dtype = _check_search(
        "beam_search", step, carry, start_token, end_token, max_length
    )
    pad_token = _check_token("pad_token", pad_token)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0 or math.isinf(alpha):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    K, V = beam_width, vocab
    neg_inf = jnp.array(-jnp.inf, dtype)

    def alive(state):
        _, _, _, log_probs, finished, _, _ = state
        return ~finished & jnp.isfinite(log_probs)

    def cond(state):
        return (state[0] < max_length) & jnp.any(alive(state))

    def body(state):
        t, tokens, lengths, log_probs, finished, last, carries = state
        new_carries, step_log_probs = jax.vmap(step)(carries, last)  # [K, V]
        extend = log_probs[:, None] + step_log_probs  # live hypotheses, every next token
        stay = jnp.where((jnp.arange(V) == end_token)[None, :], log_probs[:, None], neg_inf)  # finished: once
        raw = jnp.where(finished[:, None], stay, extend)  # [K, V] log p of each candidate
        new_lengths = jnp.where(finished, lengths, t + 1)  # [K]
        scores = raw / length_penalty(new_lengths, alpha, dtype)[:, None]
        _, best = lax.top_k(scores.reshape(-1), K)
        parent, token = best // V, (best % V).astype(jnp.int32)
        was_finished = finished[parent]
        tokens = tokens[parent]
        tokens = jnp.where(was_finished[:, None], tokens, tokens.at[:, t].set(token))
        last = jnp.where(was_finished, last[parent], token)
        carries = jax.tree.map(lambda c: c[parent], new_carries)
        return (t + 1, tokens, new_lengths[parent], raw.reshape(-1)[best],
                was_finished | (token == end_token), last, carries)

    state = (
        jnp.zeros((), jnp.int32),
        jnp.full((K, max_length), pad_token, jnp.int32),
        jnp.zeros((K,), jnp.int32),
        jnp.where(jnp.arange(K) == 0, jnp.zeros((), dtype), neg_inf),  # one live hypothesis: the empty one
        jnp.zeros((K,), bool),
        jnp.full((K,), start_token, jnp.int32),
        jax.tree.map(lambda c: jnp.broadcast_to(c, (K,) + jnp.shape(c)), carry),
    )
    t, tokens, lengths, log_probs, finished, _, _ = lax.while_loop(cond, body, state)
    scores = log_probs / length_penalty(lengths, alpha, dtype)
    order = jnp.argsort(scores, descending=True, stable=True)
    return BeamSearchResult(tokens[order], lengths[order], log_probs[order], scores[order], finished[order], t)


# --------------------------------------------------------------------------
# Decoding a model.


def _log_prob_step(model: Seq2Seq, params):
    def step(carry, token):
        carry, out = model.step(params, carry, token)
        return carry, jax.nn.log_softmax(out.logits)

    return step


@functools.partial(jax.jit, static_argnames=("model", "max_length", "pad_token"))
def greedy_decode(model: Seq2Seq, params, src, src_length=None, *, max_length: int, pad_token: int = 0) -> GreedyResult:
    """Greedy decoding of ONE source sequence ``src [S]`` (jit-compiled; ``jax.vmap`` for a batch).

    The decoder starts from ``model.encode(params, src, src_length)`` and
    reads ``model.start_token`` first; see :func:`greedy_search`.
    """
    carry = model.encode(params, src, src_length)
    return greedy_search(_log_prob_step(model, params), carry, start_token=model.start_token,
                         end_token=model.end_token, max_length=max_length, pad_token=pad_token)


@functools.partial(jax.jit, static_argnames=("model", "beam_width", "max_length", "alpha", "pad_token"))
def beam_decode(
    model: Seq2Seq,
    params,
    src,
    src_length=None,
    *,
    beam_width: int,
    max_length: int,
    alpha: float = 0.6,
    pad_token: int = 0,
) -> BeamSearchResult:
    """Beam-search decoding of ONE source sequence ``src [S]`` (jit-compiled; ``jax.vmap`` for a batch).

    The encoder runs once; its carry (memory included) is copied to every
    beam. See :func:`beam_search` for the search and its scores.
    """
    carry = model.encode(params, src, src_length)
    return beam_search(_log_prob_step(model, params), carry, start_token=model.start_token,
                       end_token=model.end_token, beam_width=beam_width, max_length=max_length,
                       alpha=alpha, pad_token=pad_token)

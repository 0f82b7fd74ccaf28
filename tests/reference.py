"""NumPy implementations of the cells' equations, the tests' ground truth.

Written from the equations (the docstrings of :mod:`scanrnn.cells`, PyTorch's
``nn.GRU``/``nn.LSTM`` documentation, Cho et al. 2014, Gers and Schmidhuber
2000, Keras' ``LayerNormalization`` and the ``LNSimpleRNNCell`` of the second
seed), not from the library's code: nothing here imports JAX. Everything runs
in float64 on one example; params are given as a mapping of NumPy arrays
(``{"w_ih": ..., ...}``) and gates are sliced out by hand.
"""

from __future__ import annotations

import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def relu(z):
    return np.maximum(z, 0.0)


ACTIVATIONS = {"tanh": np.tanh, "sigmoid": sigmoid, "relu": relu}


def as_numpy(params) -> dict:
    """A NamedTuple of params (or a dict) as a dict of float64 NumPy arrays."""
    items = params._asdict().items() if hasattr(params, "_asdict") else params.items()
    return {k: np.asarray(v, dtype=np.float64) for k, v in items}


def layer_norm(z, gain, offset, epsilon):
    """Keras' LayerNormalization over one vector: biased variance, epsilon inside the root."""
    mean = z.sum() / z.size
    var = ((z - mean) ** 2).sum() / z.size
    return gain * (z - mean) / np.sqrt(var + epsilon) + offset


def simple_rnn(p, h, x, activation="tanh"):
    """h' = phi(W x + U h + b). Returns (h', y) with y = h'."""
    phi = ACTIVATIONS[activation]
    h_new = phi(p["w_ih"] @ x + p["w_hh"] @ h + p["b"])
    return h_new, h_new


def lstm(p, h, c, x, peephole=False, proj_size=None):
    """LSTM, gates (i, f, g, o); peepholes: i, f see c[t-1], o sees c[t]. Returns (h', c', y).

    With ``proj_size`` (params with ``w_hr [P, H]``), h' = W_hr (o * tanh(c')) and ``h`` is ``[P]``.
    """
    H = c.shape[0]
    W, U, b = p["w_ih"], p["w_hh"], p["b"]

    def pre(k):  # pre-activation of gate number k
        rows = slice(k * H, (k + 1) * H)
        return W[rows] @ x + U[rows] @ h + b[rows]

    a_i, a_f, a_g, a_o = pre(0), pre(1), pre(2), pre(3)
    if peephole:
        a_i = a_i + p["w_ci"] * c
        a_f = a_f + p["w_cf"] * c
    i, f, g = sigmoid(a_i), sigmoid(a_f), np.tanh(a_g)
    c_new = f * c + i * g
    if peephole:
        a_o = a_o + p["w_co"] * c_new
    o = sigmoid(a_o)
    h_new = o * np.tanh(c_new)
    if proj_size is not None:
        h_new = p["w_hr"] @ h_new
    return h_new, c_new, h_new


def gru(p, h, x, reset_after=True):
    """GRU, gates (r, z, n) as in PyTorch; reset_after=False is Cho et al. (2014). Returns (h', y)."""
    H = h.shape[0]
    W, U, b_i, b_h = p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"]
    r_, z_, n_ = slice(0, H), slice(H, 2 * H), slice(2 * H, 3 * H)
    r = sigmoid(W[r_] @ x + b_i[r_] + U[r_] @ h + b_h[r_])
    z = sigmoid(W[z_] @ x + b_i[z_] + U[z_] @ h + b_h[z_])
    if reset_after:  # PyTorch: n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        n = np.tanh(W[n_] @ x + b_i[n_] + r * (U[n_] @ h + b_h[n_]))
    else:  # Cho et al.: the reset gate scales h before the product
        n = np.tanh(W[n_] @ x + b_i[n_] + U[n_] @ (r * h) + b_h[n_])
    h_new = (1.0 - z) * n + z * h
    return h_new, h_new


def layer_norm_rnn(p, h, x, activation="tanh", epsilon=1e-3):
    """Keras LNSimpleRNNCell: SimpleRNNCell(activation=None), LayerNormalization, activation."""
    phi = ACTIVATIONS[activation]
    z = p["w_ih"] @ x + p["w_hh"] @ h + p["b"]
    h_new = phi(layer_norm(z, p["ln_scale"], p["ln_offset"], epsilon))
    return h_new, h_new


def layer_norm_lstm(p, h, c, x, epsilon=1e-5):
    """Ba et al. (2016) LSTM: LN(W x) and LN(U h) over all 4H gate units, LN(c) before tanh."""
    H = h.shape[0]
    zero = np.zeros(4 * H)
    gates = (
        layer_norm(p["w_ih"] @ x, p["ln_x_scale"], zero, epsilon)
        + layer_norm(p["w_hh"] @ h, p["ln_h_scale"], zero, epsilon)
        + p["b"]
    )
    a_i, a_f, a_g, a_o = (gates[k * H : (k + 1) * H] for k in range(4))
    c_new = sigmoid(a_f) * c + sigmoid(a_i) * np.tanh(a_g)
    h_new = sigmoid(a_o) * np.tanh(layer_norm(c_new, p["ln_c_scale"], p["ln_c_offset"], epsilon))
    return h_new, c_new, h_new


def dense(p, x):
    return p["w"] @ x + p["b"]


def step(name: str, p: dict, carry: tuple, x, **options):
    """One step of the cell ``name`` on a carry tuple ``(h,)`` or ``(h, c)``: ``(carry', y)``."""
    if name in ("lstm", "layer_norm_lstm"):
        fn = lstm if name == "lstm" else layer_norm_lstm
        h, c, y = fn(p, carry[0], carry[1], x, **options)
        return (h, c), y
    fn = {"simple_rnn": simple_rnn, "gru": gru, "layer_norm_rnn": layer_norm_rnn}[name]
    h, y = fn(p, carry[0], x, **options)
    return (h,), y


def sequence(name: str, p: dict, carry: tuple, xs, **options):
    """A Python loop of :func:`step` over the rows of ``xs``: ``(final carry, stacked ys)``."""
    ys = []
    for x in xs:
        carry, y = step(name, p, carry, x, **options)
        ys.append(y)
    return carry, np.stack(ys)

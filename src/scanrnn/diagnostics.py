r"""How gradients flow back through time, and the spectra of recurrent matrices.

:func:`hidden_state_gradients` gives, for ONE sequence, the derivative of a
loss with respect to the carry after every step,

.. math::
    g_t = \frac{\partial L}{\partial h_t}, \qquad t = 0, \dots, T - 1,

the *total* derivative: through the output of step ``t`` and through every
later step, :math:`g_t = \partial^+ L / \partial h_t + g_{t+1}\,\partial
h_{t+1} / \partial h_t`. This is the quantity whose exponential decay or
growth over ``T - t`` steps Bengio, Simard and Frasconi (1994) and Pascanu,
Mikolov and Bengio (2013) analyse as vanishing and exploding gradients; its
norm against ``t`` (:func:`gradient_norms`) shows how far back a model's
training signal reaches. It is computed in one backward pass: a zero
perturbation :math:`\epsilon_t` is added to the carry after every step, and
:math:`g_t = \partial L / \partial \epsilon_t` at :math:`\epsilon = 0`.

:func:`recurrent_spectrum` and :func:`spectral_radius` give the eigenvalues
of a cell's recurrent matrix ``w_hh`` (one ``[H, H]`` block per gate for the
gated cells). For the simple RNN :math:`h_t = \phi(W x_t + W_{hh} h_{t-1} +
b)` the Jacobian is :math:`\partial h_t / \partial h_{t-1} =
\mathrm{diag}(\phi') W_{hh}`, so with :math:`|\phi'| \le \gamma` the
gradient vanishes when the largest singular value of :math:`W_{hh}` is below
:math:`1/\gamma` (Pascanu et al. 2013).

Batches are a :func:`jax.vmap` away, as everywhere in scanrnn::

    grads = jax.vmap(lambda x, y: hidden_state_gradients(cell, params, x, lambda ys, c: loss(ys[-1], y)))(xs, ys)
    norms = jax.vmap(gradient_norms)(grads)  # [B, T]
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .unroll import prepare_sequence

__all__ = [
    "GATES",
    "hidden_state_gradients",
    "gradient_norms",
    "recurrent_spectrum",
    "spectral_radius",
]

Array = jax.Array

# Gate names of the built-in params types, in the order their blocks are stacked in w_hh.
GATES = {
    "RNNParams": ("h",),
    "LayerNormRNNParams": ("h",),
    "LSTMParams": ("i", "f", "g", "o"),
    "PeepholeLSTMParams": ("i", "f", "g", "o"),
    "ProjectedLSTMParams": ("i", "f", "g", "o"),
    "ProjectedPeepholeLSTMParams": ("i", "f", "g", "o"),
    "LayerNormLSTMParams": ("i", "f", "g", "o"),
    "GRUParams": ("r", "z", "n"),
}


def _tie_outputs(y, new_carry, perturbed):
    """Replace every leaf of ``y`` that IS a leaf of ``new_carry`` by its perturbed version.

    Returns ``(y, untied)``, ``untied`` the number of output leaves that are
    not leaves of the carry.
    """
    position = {id(leaf): i for i, leaf in enumerate(jax.tree.leaves(new_carry))}
    perturbed_leaves = jax.tree.leaves(perturbed)
    untied = sum(id(leaf) not in position for leaf in jax.tree.leaves(y))
    y = jax.tree.map(lambda leaf: perturbed_leaves[position[id(leaf)]] if id(leaf) in position else leaf, y)
    return y, untied


def hidden_state_gradients(
    cell,
    params,
    xs,
    loss_fn: Callable,
    carry=None,
    *,
    length=None,
    output: Optional[Callable] = None,
):
    r"""The gradient of a loss w.r.t. the carry after every step of ONE sequence.

    With ``carry_t`` the carry after step ``t`` (reading ``xs[t]``) and
    ``L = loss_fn(ys, final_carry)``, this returns
    :math:`\partial L / \partial \mathrm{carry}_t` for every ``t``: the total
    derivative, through the output ``ys[t]`` of that step, through all later
    steps and through the final carry. It equals, for each ``t`` separately,
    ``jax.grad`` of the loss with respect to ``carry_t`` with the rest of the
    sequence re-run from it, but takes one backward pass for all ``t``.

    The output of a step reads the perturbed carry when it is the very same
    array as a leaf of the new carry: ``y_t = h_t`` in every built-in cell
    (``step`` returns ``RNNCarry(h), h``), and in any user cell written
    ``return h, h``. For a cell whose output is computed from the carry in
    some other way, pass ``output``; without it such a cell raises a
    ValueError rather than give a derivative that misses the output's path.

    Args:
      cell: a cell of any kind (:mod:`scanrnn.kinds`); only its
        ``initial_carry`` and ``apply`` are used.
      params: the cell's params.
      xs: ``[T, input_size]``, one sequence.
      loss_fn: ``(ys, final_carry) -> scalar``; ``ys`` are the stacked outputs
        ``[T, ...]`` as :func:`scanrnn.unroll` returns them (zeros past
        ``length``), ``final_carry`` the carry after the last valid step. For
        a many-to-one model ``serial(recurrent(cell, return_sequences=False),
        dense(1))`` it is ``lambda ys, c: mse(dense_apply(p, last_valid(ys,
        length)), target)``. For the first recurrent layer of any model
        ``serial(recurrent(cell), *rest)`` with params ``(p0, *p_rest)``, it
        is the rest of the model: ``lambda ys, c: loss(serial(*rest).apply(
        tuple(p_rest), ys, length), target)``.
      carry: the initial carry; ``cell.initial_carry(params)`` when ``None``.
        Its leaves must be floating-point.
      length: optional integer scalar (may be traced): the valid prefix. Steps
        at or past ``length`` do not change the carry, so their gradient is
        zero.
      output: optional ``carry -> y``: the step's output as a function of its
        new carry, for cells whose output is not a leaf of the carry.

    Returns:
      A pytree with the structure of the carry, each leaf with a leading
      time axis ``[T, ...]``: the gradient w.r.t. the carry after each step
      (for the LSTM, ``.h [T, H]`` and ``.c [T, H]``).

    >>> from scanrnn import simple_rnn
    >>> cell = simple_rnn(8)
    >>> params = cell.init(jax.random.key(0), 2)
    >>> grads = hidden_state_gradients(cell, params, jnp.ones((20, 2)), lambda ys, c: jnp.sum(ys[-1]))
    >>> grads.h.shape, gradient_norms(grads).shape
    ((20, 8), (20,))
    """
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be a function (ys, final_carry) -> scalar, got {loss_fn!r}")
    if output is not None and not callable(output):
        raise ValueError(f"output must be None or a function carry -> y, got {output!r}")
    xs, carry, length = prepare_sequence(cell, params, xs, carry, length)
    num_steps = xs.shape[0]
    for leaf in jax.tree.leaves(carry):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(f"the carry's leaves must be floating-point to be differentiated, got dtype {jnp.result_type(leaf)}")

    inputs, body = xs, cell.apply

    def loss_of(eps):
        def scan_body(c, inp):
            x, e, t = inp
            new_c, y = body(params, c, x)
            perturbed = jax.tree.map(jnp.add, new_c, e)
            if output is not None:
                y = output(perturbed)
            else:
                y, untied = _tie_outputs(y, new_c, perturbed)
                if untied:
                    raise ValueError(
                        f"{untied} leaf/leaves of the cell's output are not leaves of its new carry, so a "
                        "perturbation of the carry cannot reach them; pass output=fn(carry) -> y"
                    )
            if length is not None:
                valid = t < length
                perturbed = jax.tree.map(lambda new, old: jnp.where(valid, new, old), perturbed, c)
                y = jax.tree.map(lambda v: jnp.where(valid, v, jnp.zeros_like(v)), y)
            return perturbed, y

        steps = jnp.arange(num_steps)
        final, ys = lax.scan(scan_body, carry, (inputs, eps, steps))
        value = loss_fn(ys, final)
        if jnp.shape(value) != () or not jnp.issubdtype(jnp.result_type(value), jnp.floating):
            raise ValueError(
                f"loss_fn must return a floating-point scalar, got shape {jnp.shape(value)} "
                f"and dtype {jnp.result_type(value)}"
            )
        return value

    eps = jax.tree.map(lambda c: jnp.zeros((num_steps,) + jnp.shape(c), jnp.result_type(c)), carry)
    return jax.grad(loss_of)(eps)


def gradient_norms(grads, field: Optional[str] = None) -> Array:
    """The Euclidean norm of each step's gradient: ``[T]`` from a pytree of ``[T, ...]`` leaves.

    Args:
      grads: what :func:`hidden_state_gradients` returns (or any pytree whose
        leaves share a leading time axis).
      field: ``None`` takes the norm of the whole carry at each step (for
        the LSTM, of ``h`` and ``c`` together: ``sqrt(|dL/dh_t|^2 +
        |dL/dc_t|^2)``); a name takes that field only (``"h"``), read as an
        attribute or a key.

    Over a batch, ``jax.vmap(gradient_norms)(grads)`` gives ``[B, T]``.
    """
    if field is not None:
        if hasattr(grads, field):
            grads = getattr(grads, field)
        elif isinstance(grads, dict) and field in grads:
            grads = grads[field]
        else:
            raise ValueError(f"the gradients have no field {field!r}; they are a {type(grads).__name__}")
    leaves = jax.tree.leaves(grads)
    if not leaves:
        raise ValueError("the gradients have no leaves")
    steps = {jnp.shape(leaf)[:1] for leaf in leaves}
    if len(steps) != 1 or () in steps:
        raise ValueError(f"every leaf needs the same leading time axis, got leading axes {sorted(steps)}")
    flat = [jnp.reshape(leaf, (jnp.shape(leaf)[0], -1)) for leaf in leaves]
    # Scaled by each step's largest entry, so that norms near the smallest
    # float32 numbers (1e-38) do not underflow when squared.
    scale = jnp.max(jnp.stack([jnp.max(jnp.abs(f), axis=1, initial=0.0) for f in flat]), axis=0)
    safe = jnp.where(scale > 0, scale, jnp.ones_like(scale))
    squares = [jnp.sum(jnp.square(f / safe[:, None]), axis=1) for f in flat]
    return scale * jnp.sqrt(sum(squares[1:], squares[0]))


def _blocks(params):
    """``(names, w_hh)`` for a cell's params or a bare ``[k H, H]`` matrix."""
    name = type(params).__name__
    w = getattr(params, "w_hh", None)
    if w is None and isinstance(params, dict):
        w = params.get("w_hh")
    if w is None:
        w = params
    w = np.asarray(w)
    if w.ndim != 2 or w.shape[0] % max(w.shape[1], 1) or w.shape[1] == 0:
        raise ValueError(
            f"the recurrent matrix must have shape [k * H, H] (k stacked [H, H] gate blocks), got shape {w.shape}"
        )
    k = w.shape[0] // w.shape[1]
    names = GATES.get(name, tuple(str(i) for i in range(k)) if k > 1 else ("h",))
    if len(names) != k:
        raise ValueError(f"{name} has {len(names)} gates {names}, but w_hh has shape {w.shape}")
    return names, w


def recurrent_spectrum(params) -> dict:
    """The eigenvalues of a recurrent matrix, one ``[H, H]`` gate block at a time.

    Args:
      params: a cell's params with a ``w_hh`` field (a NamedTuple, or a dict
        with key ``"w_hh"``), or the matrix itself, of shape ``[k H, H]``.

    Returns:
      A dict from gate name to its complex eigenvalues ``[H]`` (NumPy):
      ``{"h": ...}`` for the simple and layer-normalised RNNs, ``{"i", "f",
      "g", "o"}`` for the LSTMs, ``{"r", "z", "n"}`` for the GRU, and
      ``"0", "1", ...`` for ``k > 1`` blocks of an unknown params type.
      Computed on the host with :func:`numpy.linalg.eigvals`, so not under
      ``jit``.

    >>> recurrent_spectrum(np.diag([0.5, -2.0]))["h"].real.tolist()
    [0.5, -2.0]
    """
    names, w = _blocks(params)
    H = w.shape[1]
    return {name: np.linalg.eigvals(w[i * H : (i + 1) * H].astype(np.float64)) for i, name in enumerate(names)}


def spectral_radius(params) -> dict:
    """The largest eigenvalue modulus of each gate block: ``{gate: float}``.

    See :func:`recurrent_spectrum` for what ``params`` may be.
    """
    return {name: float(np.max(np.abs(values))) for name, values in recurrent_spectrum(params).items()}

r"""Diagonal state-space cells with a complex state: the LRU and S5.

Both are :class:`scanrnn.kinds.LinearCell` s whose state is a vector of
complex numbers, updated elementwise and read out by a real projection:

.. math::
    h_t = \bar\lambda \odot h_{t-1} + \bar g \odot (\tilde B x_t), \qquad
    y_t = s\, \mathrm{Re}(\tilde C h_t) + D \odot x_t,

with :math:`\bar\lambda, \bar g \in \mathbb{C}^N` fixed by the params (not
by the input), :math:`\tilde B \in \mathbb{C}^{N \times H}`,
:math:`\tilde C \in \mathbb{C}^{H \times N}`, :math:`D \in \mathbb{R}^H` and
:math:`s` 1 or 2. The output has the input's width ``H``, as published, so
``init(key, input_size)`` takes ``H = input_size``.

- :func:`lru`: the Linear Recurrent Unit (Orvieto et al. 2023), with an
  exponential parameterisation that keeps :math:`|\lambda| < 1` and a
  learned input normalisation :math:`\gamma`.
- :func:`s5`: the S5 layer's state space model (Smith, Warrington and
  Linderman 2023), a continuous-time diagonal system initialised from the
  eigenvalues of the HiPPO-LegS matrix's normal part, discretised by a
  zero-order hold with a learned time step per state.

Params hold real arrays only: the real and imaginary parts of
:math:`\tilde B` are stacked as the rows of one real kernel ``b [2N, H]``,
those of :math:`\tilde C` as the columns of ``c [H, 2N]``. A step's
projection (:class:`Projection`) is the one real product ``b x`` and the
input ``x`` (for ``D x``); the recurrence's coefficients (:math:`\bar\lambda`,
:math:`\bar g`, the discretisation) are computed from the params alone, once
per sequence, and the output is the one real product
:math:`\mathrm{Re}(\tilde C h) = [C_{re}, C_{im}]\,[\mathrm{Re}\,h; -\mathrm{Im}\,h]`.

The state is complex64 for float32 params and complex128 for float64;
``param_dtype`` must be one of those two (there is no complex bfloat16), and
``compute_dtype=jnp.bfloat16`` runs the two products in bfloat16 while the
recurrence stays in the params' precision. ``mode`` and ``chunk_size`` are
those of every :class:`scanrnn.LinearCell`: a scan of the step, an
associative scan over time, or chunks (:mod:`scanrnn.linear_scans`), which
give the same numbers to rounding.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.nn import initializers

from . import _checks
from .cells import RNNCarry, _keys, checked_init, product
from .kinds import LinearCell, check_mode

__all__ = [
    "S5_MAX_REAL",
    "LRUParams",
    "S5Params",
    "Projection",
    "lru",
    "hippo_n",
    "s5",
]

Array = jax.Array

S5_MAX_REAL = -1e-4
"""With ``clip_eigs``, S5's continuous eigenvalues have a real part of at most this."""


class LRUParams(NamedTuple):
    """Params of :func:`lru`; ``N`` the state size, ``H`` the input (and output) width."""

    nu_log: Array  # [N]   log of -log |lambda|
    theta_log: Array  # [N]   log of arg lambda
    gamma_log: Array  # [N]   log of the input normalisation gamma
    b: Array  # [2N, H]  B: rows (real, imaginary)
    c: Array  # [H, 2N]  C: columns (real, imaginary)
    d: Array  # [H]   the skip connection D


class S5Params(NamedTuple):
    """Params of :func:`s5`; ``N`` the states kept (``P/2`` with ``conj_sym``, else ``P``), ``H`` the width."""

    lambda_re: Array  # [N]   real part of the continuous eigenvalues Lambda
    lambda_im: Array  # [N]   imaginary part of Lambda
    log_step: Array  # [N]   log of the time step Delta
    b: Array  # [2N, H]  B~ = V^-1 B: rows (real, imaginary)
    c: Array  # [H, 2N]  C~ = C V: columns (real, imaginary)
    d: Array  # [H]   the skip connection D


class Projection(NamedTuple):
    """What :func:`lru` and :func:`s5` compute from one step's input ``x [H]`` (``project``)."""

    bx: Array  # [2N]  B x: rows (real, imaginary)
    x: Array  # [H]   the input, for D x


# --------------------------------------------------------------------------
# Assembly of a cell from its recurrence.


def _complex_dtype(dtype):
    """complex64 for float32, complex128 for float64."""
    return jnp.complex64 if jnp.dtype(dtype) == jnp.float32 else jnp.complex128


def _state_dtype(name: str, param_dtype):
    """``param_dtype`` as a dtype, float32 or float64 (the state is complex64 or complex128)."""
    dtype = _checks.floating_dtype("param_dtype", param_dtype)
    if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
        raise ValueError(
            f"{name}: param_dtype must be float32 or float64 (the state is complex64 or complex128), got {dtype}; "
            "for bfloat16 products pass compute_dtype=jnp.bfloat16"
        )
    return dtype


def _make_cell(name, n, params_cls, transition, read_out_scale, make_params, mode, chunk_size, compute_dtype):
    """A :class:`scanrnn.kinds.LinearCell` for ``h = a * h + g * (B x)``, ``y = s Re(C h) + D x``.

    ``transition(params) -> (a, g)`` gives the step's coefficients from the
    params alone: ``a`` complex ``[n]``, ``g`` real or complex ``[n]``.
    ``make_params(key, H)`` draws the params; ``read_out_scale`` is ``s``.
    """
    chunk_size = check_mode(mode, chunk_size, f"{name}:")
    _checks.floating_dtype("compute_dtype", compute_dtype, allow_none=True)
    fields = params_cls._fields[:3]  # the recurrence's vectors [n]

    def check(params):
        if not isinstance(params, params_cls):
            raise _checks.InputTypeError(
                f"{name} expects params of type {params_cls.__name__}, got {type(params).__name__}"
            )
        b = _checks.shape(params.b)
        if len(b) != 2:
            raise ValueError(f"{name}: params.b must have rank 2, got shape {b}")
        expected = {**{field: (n,) for field in fields}, "b": (2 * n, b[1]), "c": (b[1], 2 * n), "d": (b[1],)}
        for field, shape in expected.items():
            given = _checks.shape(getattr(params, field))
            if given != shape:
                raise ValueError(f"{name}: params.{field} must have shape {shape}, got {given}")
        dtype = jnp.result_type(params.b)
        if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
            raise ValueError(f"{name}: params must be float32 or float64, got params.b of dtype {dtype}")
        for field in params_cls._fields:
            if jnp.result_type(getattr(params, field)) != dtype:
                raise ValueError(
                    f"{name}: every param must have the dtype of params.b, {dtype}; "
                    f"got params.{field} of dtype {jnp.result_type(getattr(params, field))}"
                )

    def check_p(params, p):
        if not isinstance(p, Projection):
            raise _checks.InputTypeError(
                f"{name}: the projection of one step must be a Projection (from project), got {type(p).__name__}"
            )
        width = _checks.shape(params.b)[1]
        if _checks.shape(p.bx) != (2 * n,) or _checks.shape(p.x) != (width,):
            raise ValueError(
                f"{name}: the projection of one step must have bx of shape ({2 * n},) and x of shape ({width},) "
                f"(from project), got {_checks.shape(p.bx)} and {_checks.shape(p.x)}"
            )

    init = checked_init(make_params, check)

    def initial_carry(params):
        check(params)
        return RNNCarry(jnp.zeros((n,), _complex_dtype(params.b.dtype)))

    def project(params, x):
        check(params)
        _checks.example(name, x, params.b)
        return Projection(product(x, params.b, compute_dtype), x)

    def coefficients(params, p):
        check(params)
        check_p(params, p)
        a, g = transition(params)
        re, im = p.bx[:n], p.bx[n:]
        if jnp.iscomplexobj(g):
            return a, g * jax.lax.complex(re, im)
        return a, jax.lax.complex(g * re, g * im)

    def output(params, h, p):
        check(params)
        check_p(params, p)
        stacked = jnp.concatenate([jnp.real(h), -jnp.imag(h)])  # Re(C h) = C_re Re h - C_im Im h
        y = product(stacked, params.c, compute_dtype)
        if read_out_scale != 1:
            y = read_out_scale * y
        return y + params.d * p.x

    return LinearCell(init, initial_carry, project, coefficients, output, mode=mode, chunk_size=chunk_size)


# --------------------------------------------------------------------------
# The LRU.


def _ring_init(key, shape, r_min: float, r_max: float, dtype):
    """``(nu_log, gamma_log)`` for moduli ``|lambda|`` uniform on the ring's area, and ``gamma = sqrt(1 - |lambda|^2)``.

    ``|lambda|^2 = r_min^2 + u (r_max^2 - r_min^2)`` for ``u`` uniform in
    ``[0, 1)``. ``1 - |lambda|^2`` is formed without cancellation, and
    ``-log |lambda|`` from whichever of the two is the smaller, so that a
    modulus near 1 (or near 0) keeps its precision; ``|lambda|^2`` is at
    least the smallest normal number, so every logarithm is finite.
    """
    u = jax.random.uniform(key, shape, dtype)
    tiny = jnp.finfo(dtype).tiny
    squared = jnp.maximum(r_min**2 + u * (r_max**2 - r_min**2), tiny)  # |lambda|^2
    rest = (1 - u) * (1 - r_min**2) + u * (1 - r_max**2)  # 1 - |lambda|^2 > 0
    nu = jnp.where(rest < 0.5, -0.5 * jnp.log1p(-rest), -0.5 * jnp.log(squared))  # -log |lambda|
    return jnp.log(nu), 0.5 * jnp.log(rest)


def lru(
    state_size: int,
    *,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 6.28,
    mode: str = "sequential",
    chunk_size: int = 128,
    param_dtype=jnp.float32,
    compute_dtype=None,
) -> LinearCell:
    r"""The Linear Recurrent Unit (Orvieto et al. 2023): a complex diagonal linear recurrence.

    .. math::
        \lambda &= \exp(-e^{\nu^{\log}} + i\, e^{\theta^{\log}}), \qquad \gamma = e^{\gamma^{\log}} \\
        h_t &= \lambda \odot h_{t-1} + \gamma \odot (B x_t) \\
        y_t &= \mathrm{Re}(C h_t) + D \odot x_t

    with :math:`h_t \in \mathbb{C}^N`, :math:`B \in \mathbb{C}^{N \times H}`,
    :math:`C \in \mathbb{C}^{H \times N}` and :math:`D \in \mathbb{R}^H`.
    :math:`|\lambda| = \exp(-e^{\nu^{\log}}) < 1` for any real
    :math:`\nu^{\log}`, so the recurrence is stable whatever training does
    (in floating point :math:`|\lambda|` rounds to 1 once
    :math:`e^{\nu^{\log}}` is below the precision).

    Initialisation (the paper's appendix A, its ``init_lru_parameters``):
    :math:`|\lambda|^2` uniform in :math:`[r_{\min}^2, r_{\max}^2]`, i.e.
    :math:`\lambda` uniform on the area of the ring
    :math:`r_{\min} \le |\lambda| \le r_{\max}` (their Lemma 3.2), with phase
    :math:`\arg\lambda` uniform in :math:`[0, \text{max\_phase}]`;
    :math:`\gamma = \sqrt{1 - |\lambda|^2}`, which normalises the state's
    variance under white-noise input; the real and imaginary parts of
    :math:`B` normal of variance :math:`1/(2H)`, those of :math:`C` of
    variance :math:`1/N`; :math:`D` standard normal. The defaults
    ``r_min=0, r_max=1, max_phase=6.28`` are the appendix's; for its
    long-range tasks the paper starts the moduli closer to the unit circle
    (a larger ``r_min`` and ``r_max``) and, on the longest, the phases in a
    smaller range (its section 3.3): pass those values for long memory, as
    ``experiments/long_memory.py`` does.

    Params (:class:`LRUParams`): ``nu_log [N]``, ``theta_log [N]``,
    ``gamma_log [N]``, ``b [2N, H]`` (rows: real then imaginary part of
    :math:`B`), ``c [H, 2N]`` (columns: real then imaginary part of
    :math:`C`), ``d [H]``. Carry (:class:`scanrnn.RNNCarry`): ``h [N]``,
    complex64 (float32 params) or complex128 (float64). The output has the
    input's width ``H``.

    Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu and De (2023),
    "Resurrecting Recurrent Neural Networks for Long Sequences", ICML
    (arXiv:2303.06349).

    Args:
      state_size: ``N``, the number of complex states.
      r_min, r_max: the ring of the initial moduli,
        ``0 <= r_min <= r_max <= 1``, ``r_min < 1``, ``r_max > 0``.
      max_phase: the initial phases lie in ``[0, max_phase]``, a positive number.
      mode, chunk_size: how :func:`scanrnn.unroll` runs the recurrence
        (:class:`scanrnn.LinearCell`).
      param_dtype: ``jnp.float32`` or ``jnp.float64``.
      compute_dtype: ``None``, or e.g. ``jnp.bfloat16`` for the products
        ``B x`` and ``Re(C h)`` in mixed precision (:func:`scanrnn.cells.product`).

    >>> cell = lru(8)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, y = cell.apply(params, cell.initial_carry(params), jnp.ones(3))
    >>> y.shape, carry.h.dtype, params.b.shape
    ((3,), dtype('complex64'), (16, 3))
    """
    name = "lru"
    n = _checks.positive_int("state_size", state_size)
    r_min = _checks.non_negative_number("r_min", r_min)
    r_max = _checks.non_negative_number("r_max", r_max)
    if not (r_min <= r_max <= 1 and r_min < 1 and r_max > 0):
        raise ValueError(f"{name}: r_min and r_max must satisfy 0 <= r_min <= r_max <= 1, r_min < 1 and r_max > 0, got "
                         f"r_min={r_min!r}, r_max={r_max!r}")
    max_phase = _checks.positive_number("max_phase", max_phase)
    dtype = _state_dtype(name, param_dtype)

    def make_params(key, input_size):
        k_ring, k_phase, k_b, k_c, k_d = _keys(key, 5)
        nu_log, gamma_log = _ring_init(k_ring, (n,), r_min, r_max, dtype)
        phase = max_phase * jax.random.uniform(k_phase, (n,), dtype)
        theta_log = jnp.log(jnp.maximum(phase, jnp.finfo(dtype).tiny))
        b = jax.random.normal(k_b, (2 * n, input_size), dtype) / math.sqrt(2 * input_size)
        c = jax.random.normal(k_c, (input_size, 2 * n), dtype) / math.sqrt(n)
        d = jax.random.normal(k_d, (input_size,), dtype)
        return LRUParams(nu_log, theta_log, gamma_log, b, c, d)

    def transition(params):
        modulus = jnp.exp(-jnp.exp(params.nu_log))
        phase = jnp.exp(params.theta_log)
        return jax.lax.complex(modulus * jnp.cos(phase), modulus * jnp.sin(phase)), jnp.exp(params.gamma_log)

    return _make_cell(name, n, LRUParams, transition, 1, make_params, mode, chunk_size, compute_dtype)


# --------------------------------------------------------------------------
# S5.


def hippo_n(size: int) -> np.ndarray:
    r"""The normal part of the HiPPO-LegS matrix (HiPPO-N), ``[size, size]`` float64.

    HiPPO-LegS (Gu et al. 2020) is
    :math:`A_{nk} = -\sqrt{(2n+1)(2k+1)}` below the diagonal, :math:`-(n+1)`
    on it and 0 above; adding the rank-one :math:`p p^\top` with
    :math:`p_n = \sqrt{n + 1/2}` (Gu, Goel and Ré 2022) leaves

    .. math::
        S_{nk} = -\tfrac12 \sqrt{(2n+1)(2k+1)} \; (n > k), \qquad
        S_{nn} = -\tfrac12, \qquad
        S_{nk} = \tfrac12 \sqrt{(2n+1)(2k+1)} \; (n < k),

    :math:`-\frac12 I` plus a skew-symmetric matrix: normal, with eigenvalues
    :math:`-\frac12 + i\omega` in conjugate pairs.
    """
    q = np.sqrt(2.0 * np.arange(size) + 1.0)
    half = 0.5 * q[:, None] * q[None, :]
    return np.triu(half, 1) - np.tril(half, -1) - 0.5 * np.eye(size)


def _hippo_n_eigen(size: int, conj_sym: bool):
    """Eigenvalues ``[m]`` and unit eigenvectors ``[size, m]`` of :func:`hippo_n`, complex128.

    ``S = -I/2 + K`` with ``K`` skew-symmetric, so ``S v = (-1/2 + i w) v``
    for the eigenpairs ``(w, v)`` of the Hermitian ``-i K``: an orthonormal
    basis. ``w`` ascends and comes in pairs ``+-w`` whose vectors are
    conjugates; with ``conj_sym`` the first ``size / 2`` (``w < 0``) are
    kept, one of each pair.
    """
    skew = hippo_n(size) + 0.5 * np.eye(size)
    omega, vectors = np.linalg.eigh(-1j * skew)
    eigenvalues = -0.5 + 1j * omega
    if conj_sym:
        eigenvalues, vectors = eigenvalues[: size // 2], vectors[:, : size // 2]
    return eigenvalues, vectors


def s5(
    state_size: int,
    *,
    blocks: int = 1,
    dt_min: float = 0.001,
    dt_max: float = 0.1,
    conj_sym: bool = True,
    clip_eigs: bool = True,
    mode: str = "sequential",
    chunk_size: int = 128,
    param_dtype=jnp.float32,
    compute_dtype=None,
) -> LinearCell:
    r"""The S5 state space model (Smith, Warrington and Linderman 2023): a diagonal MIMO SSM, discretised.

    A continuous-time system :math:`\dot h = \Lambda h + \tilde B x`,
    :math:`y = \mathrm{Re}(\tilde C h) + D x` in the eigenbasis :math:`V`
    of its state matrix (:math:`\tilde B = V^{-1} B`, :math:`\tilde C = C V`),
    held by a zero-order hold over a learned time step :math:`\Delta` per
    state:

    .. math::
        \Lambda &= \min(\Lambda_{re}, -10^{-4}) + i \Lambda_{im}, \qquad \Delta = e^{\log\Delta} \\
        \bar\Lambda &= \exp(\Lambda \odot \Delta), \qquad
        \bar B = \frac{\bar\Lambda - 1}{\Lambda} \odot \tilde B \\
        h_t &= \bar\Lambda \odot h_{t-1} + \bar B x_t \\
        y_t &= s\, \mathrm{Re}(\tilde C h_t) + D \odot x_t

    with the clip of :math:`\Lambda_{re}` only with ``clip_eigs``: then
    :math:`|\bar\Lambda| = e^{\mathrm{Re}\Lambda\, \Delta} < 1` for any
    params (a stable discretisation; in floating point it rounds to 1 once
    :math:`10^{-4} \Delta` is below the precision). With ``conj_sym`` the
    eigenvalues come in conjugate pairs, of which one of each is kept
    (``N = P/2`` states) and :math:`s = 2`, since the discarded half's
    states are the conjugates of the kept ones; without it ``N = P`` and
    :math:`s = 1`.

    Initialisation (as the authors' code, ``lindermanlab/S5``): with
    ``blocks`` :math:`J`, the state matrix is block-diagonal with :math:`J`
    copies of the HiPPO-N matrix of size :math:`P/J` (:func:`hippo_n`),
    whose eigendecomposition :math:`\Lambda, V` (computed in NumPy when the
    factory is called) gives the initial :math:`\Lambda` (real parts
    :math:`-1/2`); :math:`B` real ``[P, H]`` and the real and imaginary
    parts of :math:`C` ``[H, P]`` truncated normals of variance :math:`1/P`
    (LeCun normal over the ``P`` states), then :math:`\tilde B = V^{-1} B`
    and :math:`\tilde C = C V` (:math:`V` unitary, so :math:`V^{-1} = V^*`);
    :math:`D` standard normal; :math:`\log\Delta` uniform in
    :math:`[\log dt_{\min}, \log dt_{\max}]`. The authors' code defaults to
    ``clip_eigs=False``; here it is on, which their code recommends for
    long or unbounded sequences.

    Params (:class:`S5Params`): ``lambda_re [N]``, ``lambda_im [N]``,
    ``log_step [N]``, ``b [2N, H]`` (rows: real then imaginary part of
    :math:`\tilde B`), ``c [H, 2N]`` (columns: real then imaginary part of
    :math:`\tilde C`), ``d [H]``. Carry (:class:`scanrnn.RNNCarry`): ``h
    [N]``, complex64 (float32 params) or complex128 (float64). The output
    has the input's width ``H``.

    Smith, Warrington and Linderman (2023), "Simplified State Space Layers
    for Sequence Modeling", ICLR (arXiv:2208.04933).

    Args:
      state_size: ``P``, the size of the continuous system; a multiple of
        ``blocks``, and with ``conj_sym`` of ``2 * blocks``.
      blocks: ``J``, the number of HiPPO-N blocks of the initial state matrix.
      dt_min, dt_max: the range of the initial time steps, ``0 < dt_min <= dt_max``.
      conj_sym: keep one eigenvalue of each conjugate pair (``N = P/2``).
      clip_eigs: clip the real part of :math:`\Lambda` to at most ``-1e-4``.
      mode, chunk_size: how :func:`scanrnn.unroll` runs the recurrence
        (:class:`scanrnn.LinearCell`).
      param_dtype: ``jnp.float32`` or ``jnp.float64``.
      compute_dtype: ``None``, or e.g. ``jnp.bfloat16`` for the products
        :math:`\tilde B x` and :math:`\mathrm{Re}(\tilde C h)` in mixed precision.

    >>> cell = s5(8, blocks=2)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, y = cell.apply(params, cell.initial_carry(params), jnp.ones(3))
    >>> y.shape, carry.h.shape, params.b.shape
    ((3,), (4,), (8, 3))
    >>> params.lambda_re[:2]
    Array([-0.5, -0.5], dtype=float32)
    """
    name = "s5"
    size = _checks.positive_int("state_size", state_size)
    blocks = _checks.positive_int("blocks", blocks)
    conj_sym = _checks.flag("conj_sym", conj_sym)
    clip_eigs = _checks.flag("clip_eigs", clip_eigs)
    multiple = 2 * blocks if conj_sym else blocks
    if size % multiple:
        raise ValueError(
            f"{name}: state_size must be a multiple of {multiple} (blocks={blocks}"
            + (", and an even block size for conj_sym" if conj_sym else "")
            + f"), got {size}"
        )
    dt_min = _checks.positive_number("dt_min", dt_min)
    dt_max = _checks.positive_number("dt_max", dt_max)
    if dt_min > dt_max:
        raise ValueError(f"{name}: dt_min must be at most dt_max, got dt_min={dt_min!r}, dt_max={dt_max!r}")
    dtype = _state_dtype(name, param_dtype)
    cdtype = _complex_dtype(dtype)

    eigenvalues, vectors = _hippo_n_eigen(size // blocks, conj_sym)
    eigenvalues = np.tile(eigenvalues, blocks)
    vectors = np.kron(np.eye(blocks), vectors)  # [P, N], block-diagonal
    n = eigenvalues.shape[0]
    lecun_b = initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=-2, out_axis=-1)
    lecun_c = initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=-1, out_axis=-2)

    def make_params(key, input_size):
        k_b, k_re, k_im, k_d, k_step = _keys(key, 5)
        v = jnp.asarray(vectors, cdtype)
        b_real = lecun_b(k_b, (size, input_size), dtype)  # B [P, H]
        b = jnp.conj(v).T @ b_real.astype(cdtype)  # V^-1 B = V^* B, [N, H]
        c_full = jax.lax.complex(lecun_c(k_re, (input_size, size), dtype), lecun_c(k_im, (input_size, size), dtype))
        c = c_full @ v  # C V, [H, N]
        log_dt_min, log_dt_max = math.log(dt_min), math.log(dt_max)
        log_step = log_dt_min + (log_dt_max - log_dt_min) * jax.random.uniform(k_step, (n,), dtype)
        return S5Params(
            lambda_re=jnp.asarray(eigenvalues.real, dtype),
            lambda_im=jnp.asarray(eigenvalues.imag, dtype),
            log_step=log_step,
            b=jnp.concatenate([jnp.real(b), jnp.imag(b)], axis=0),
            c=jnp.concatenate([jnp.real(c), jnp.imag(c)], axis=1),
            d=jax.random.normal(k_d, (input_size,), dtype),
        )

    def transition(params):
        real = jnp.minimum(params.lambda_re, S5_MAX_REAL) if clip_eigs else params.lambda_re
        step = jnp.exp(params.log_step)
        lam = jax.lax.complex(real, params.lambda_im)
        lam_bar = jnp.exp(jax.lax.complex(real * step, params.lambda_im * step))
        return lam_bar, (lam_bar - 1) / lam

    return _make_cell(name, n, S5Params, transition, 2 if conj_sym else 1, make_params, mode, chunk_size, compute_dtype)

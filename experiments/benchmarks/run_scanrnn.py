"""run.py's scanrnn implementation and its variants (``--scanrnn-variants``: other ``scanrnn.Execution`` fields).

The model: ``jax.vmap`` over the batch of ``serial(recurrent(cell,
return_sequences=False), dense(1))`` (``bidirectional(...)`` for two
directions, one layer per layer of the case), its params from
``scanrnn.interop.from_torch`` of the torch model.
"""

from __future__ import annotations

import re
from typing import Optional

import numpy as np

from run_cases import Case, Impl, jax_fns
from run_torch import torch_model


def scanrnn_layer(cell, case: Case, return_sequences: bool, execution):
    """One scanrnn layer of ``case``: ``recurrent`` (or ``bidirectional``) with ``execution``."""
    import scanrnn as sr

    layer_fn = sr.bidirectional if case.bidirectional else sr.recurrent
    return layer_fn(cell, return_sequences=return_sequences, execution=execution)


def scanrnn_model(case: Case, cell: str, execution=None):
    """``serial`` of one recurrent (or bidirectional) layer per layer of ``case`` and ``dense(1)``."""
    import scanrnn as sr

    make_cell = {"lstm": sr.lstm, "gru": sr.gru, "rnn": sr.simple_rnn}[cell]
    layers = [scanrnn_layer(make_cell(case.hidden), case, k < case.layers - 1, execution) for k in range(case.layers)]
    return sr.serial(*layers, sr.dense(1))


def scanrnn_impl(case: Case, cell: str, seed: int, data, options: dict, name: str = "scanrnn") -> Impl:
    """The scanrnn implementation of ``(case, cell)`` with the variant ``options`` (``{}``: the defaults).

    Raises ``ValueError`` for a variant :func:`variant_execution` refuses.
    """
    import jax
    import jax.numpy as jnp
    import scanrnn as sr
    from scanrnn.interop import from_torch

    execution = variant_execution(options, case)  # a ValueError skips the variant
    tmodel = torch_model(case, cell, seed, "cpu")
    _, rnn_params = from_torch(tmodel.rnn)
    head = sr.DenseParams(
        jnp.asarray(tmodel.head.weight.detach().numpy()), jnp.asarray(tmodel.head.bias.detach().numpy())
    )
    params = (*rnn_params, head)
    model = scanrnn_model(case, cell, execution)

    def forward(params, x):
        return jax.vmap(model.apply, in_axes=(None, 0))(params, x)  # [B, 1]

    def loss_fn(params, x, y):
        return jnp.mean(jnp.square(forward(params, x) - y))

    x, y = (jnp.asarray(a) for a in data)
    train, infer, loss, grads, memory = jax_fns(loss_fn, forward, params, x, y)
    w_hh = grads[0].w_hh[0] if case.bidirectional else grads[0].w_hh  # forward direction of layer 0
    compared = {"w_hh": np.asarray(w_hh), "head": np.asarray(grads[-1].w)}
    return Impl(name, train, infer, loss, compared, memory)


# --------------------------------------------------------------------------
# Variants.


def parse_variant(text: str) -> dict:
    """``"unroll_steps=4,remat=sqrt"`` -> ``{"unroll_steps": 4, "remat": "sqrt"}`` (see :func:`variant_execution`)."""
    options = {}
    for part in filter(None, text.split(",")):
        if "=" not in part:
            raise ValueError(f"a scanrnn variant is key=value[,key=value...], got {text!r}")
        key, value = (s.strip() for s in part.split("=", 1))
        if re.fullmatch(r"-?\d+", value):
            options[key] = int(value)
        elif value in ("True", "False", "None"):
            options[key] = {"True": True, "False": False, "None": None}[value]
        else:
            options[key] = value
    return options


# Keys of --scanrnn-variants that name an Execution field by another name; the
# label keeps the key as typed (scanrnn[unroll_steps=4]).
EXECUTION_ALIASES = {"unroll_steps": "unroll"}


def variant_execution(options: dict, case: Optional[Case] = None):
    """The :class:`scanrnn.Execution` of a variant: each key an ``Execution`` field (``unroll_steps`` is
    ``unroll``), the other fields at their defaults.

    Raises ``ValueError`` (the variant is skipped with the message) for a key
    ``Execution`` does not have, for a value ``scanrnn.execution.check``
    refuses, and for ``one_scan=True`` on a case with one direction, which
    has no second scan to merge.
    """
    import scanrnn as sr
    from scanrnn import execution as sr_execution

    unknown = [key for key in options if EXECUTION_ALIASES.get(key, key) not in sr.Execution._fields]
    if unknown:
        raise ValueError(f"scanrnn.Execution has no field {', '.join(unknown)} "
                         f"(its fields: {', '.join(sr.Execution._fields)}; unroll_steps means unroll)")
    fields = {EXECUTION_ALIASES.get(key, key): value for key, value in options.items()}
    if len(fields) < len(options):
        raise ValueError(f"{', '.join(options)} name the same scanrnn.Execution field twice")
    execution = sr_execution.check(sr.Execution(**fields))
    if case is not None and not case.bidirectional and execution.one_scan:
        raise ValueError("one_scan only changes a bidirectional layer; this case has one direction")
    return execution


def auto_variants() -> list:
    """Variants worth timing with the installed scanrnn, from ``scanrnn.Execution`` itself.

    ``unroll_steps=4``, every other value of a field whose allowed values
    the module lists as a constant ``{FIELD}S`` (``remat`` from ``REMATS``,
    ``backward`` from ``BACKWARDS``), and the other value of every boolean
    field (``hoist=True``, ``one_scan=True``). ``cudnn=True`` only where
    JAX runs on a GPU (cuDNN's LSTM has no CPU lowering); ``gpu.py`` times
    it there.
    """
    import jax
    import scanrnn as sr
    from scanrnn import execution as sr_execution

    variants = [{"unroll_steps": 4}]
    for field, default in sr.Execution._field_defaults.items():
        if field == "cudnn" and jax.default_backend() != "gpu":
            continue
        values = getattr(sr_execution, field.upper() + "S", None)
        if isinstance(values, tuple) and all(isinstance(v, str) for v in values):
            variants += [{field: v} for v in values if v != default]
        elif isinstance(default, bool):
            variants.append({field: not default})
    return variants


def variant_name(options: dict) -> str:
    return "scanrnn[" + ",".join(f"{k}={v}" for k, v in options.items()) + "]"

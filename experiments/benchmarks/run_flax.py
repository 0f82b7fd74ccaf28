"""run.py's flax implementation: ``nn.RNN`` of flax.linen's cells and ``nn.Dense(1)``, with the torch weights mapped exactly."""

from __future__ import annotations

import numpy as np

from run_cases import Case, Impl, jax_fns
from run_torch import torch_model


FLAX_GATES = {"lstm": "ifgo", "gru": "rzn", "rnn": None}


def flax_model(case: Case, cell: str):
    """A ``flax.linen`` module of the case: ``nn.RNN`` per layer (``nn.Bidirectional``) and ``nn.Dense(1)``."""
    import flax.linen as nn
    import jax.numpy as jnp

    cell_cls = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell, "rnn": nn.SimpleCell}[cell]
    H = case.hidden

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):  # [B, T, I]
            for k in range(case.layers):
                forward = nn.RNN(cell_cls(H, name=f"layer{k}_fwd"))
                if case.bidirectional:
                    # The backward RNN keeps time order: out[:, 0, H:] is its state after the whole sequence.
                    x = nn.Bidirectional(forward, nn.RNN(cell_cls(H, name=f"layer{k}_bwd")))(x)
                else:
                    x = forward(x)
            last = jnp.concatenate([x[:, -1, :H], x[:, 0, H:]], axis=-1) if case.bidirectional else x[:, -1]
            return nn.Dense(1, name="head")(last)

    return Model()


def flax_params_from_torch(tmodel, case: Case, cell: str) -> dict:
    """Map the torch model's weights onto the flax model's params, exactly.

    flax kernels are ``[in, out]``, one per gate (torch stacks gates on the
    rows of ``[G*H, in]``). Biases:

    - LSTM (``OptimizedLSTMCell``): only the recurrent denses ``h{i,f,g,o}``
      have a bias; it is ``b_ih + b_hh`` of that gate.
    - GRU (``GRUCell``): the input denses ``i{r,z,n}`` carry a bias and of
      the recurrent ones only ``hn``. torch's ``r`` and ``z`` pre-activations
      ``W x + b_i + U h + b_h`` need only the sum, so ``ir``/``iz`` get
      ``b_i + b_h``; ``in`` gets ``b_in`` and ``hn`` gets ``b_hn``, which
      stays inside ``r * (U_n h + b_hn)`` in both. The mapping is exact.
    - simple RNN (``SimpleCell``): the input dense ``i`` has the bias
      ``b_ih + b_hh``; the recurrent ``h`` has none.
    """
    H = case.hidden

    def t(a):
        return a.detach().cpu().numpy()

    params = {}
    rnn = tmodel.rnn
    for k in range(case.layers):
        for suffix, direction in [("", "fwd"), ("_reverse", "bwd")][: 2 if case.bidirectional else 1]:
            w_ih = t(getattr(rnn, f"weight_ih_l{k}{suffix}"))
            w_hh = t(getattr(rnn, f"weight_hh_l{k}{suffix}"))
            b_ih = t(getattr(rnn, f"bias_ih_l{k}{suffix}"))
            b_hh = t(getattr(rnn, f"bias_hh_l{k}{suffix}"))
            gates = FLAX_GATES[cell]
            p = {}
            if cell == "rnn":
                p["i"] = {"kernel": w_ih.T, "bias": b_ih + b_hh}
                p["h"] = {"kernel": w_hh.T}
            else:
                for g, gate in enumerate(gates):
                    rows = slice(g * H, (g + 1) * H)
                    if cell == "lstm":
                        p[f"i{gate}"] = {"kernel": w_ih[rows].T}
                        p[f"h{gate}"] = {"kernel": w_hh[rows].T, "bias": b_ih[rows] + b_hh[rows]}
                    elif gate == "n":
                        p["in"] = {"kernel": w_ih[rows].T, "bias": b_ih[rows]}
                        p["hn"] = {"kernel": w_hh[rows].T, "bias": b_hh[rows]}
                    else:
                        p[f"i{gate}"] = {"kernel": w_ih[rows].T, "bias": b_ih[rows] + b_hh[rows]}
                        p[f"h{gate}"] = {"kernel": w_hh[rows].T}
            params[f"layer{k}_{direction}"] = p
    params["head"] = {"kernel": t(tmodel.head.weight).T, "bias": t(tmodel.head.bias)}
    return params


def flax_impl(case: Case, cell: str, seed: int, data) -> Impl:
    import jax
    import jax.numpy as jnp

    tmodel = torch_model(case, cell, seed, "cpu")
    model = flax_model(case, cell)
    x, y = (jnp.asarray(a) for a in data)
    mapped = jax.tree.map(jnp.asarray, flax_params_from_torch(tmodel, case, cell))
    expected = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    shapes = jax.tree.map(lambda a: tuple(a.shape), expected)
    if jax.tree.map(lambda a: tuple(a.shape), mapped) != shapes:
        raise ValueError(f"flax params mapping does not match flax's init: {shapes}")

    def forward(params, x):
        return model.apply({"params": params}, x)

    def loss_fn(params, x, y):
        return jnp.mean(jnp.square(forward(params, x) - y))

    train, infer, loss, grads, memory = jax_fns(loss_fn, forward, mapped, x, y)
    layer0 = grads["layer0_fwd"]
    if cell == "rnn":
        w_hh = layer0["h"]["kernel"].T
    else:
        w_hh = jnp.concatenate([layer0[f"h{g}"]["kernel"] for g in FLAX_GATES[cell]], axis=-1).T
    compared = {"w_hh": np.asarray(w_hh), "head": np.asarray(grads["head"]["kernel"]).T}
    return Impl("flax", train, infer, loss, compared, memory)

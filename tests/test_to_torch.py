"""scanrnn.interop.to_torch: scanrnn models as torch.nn modules, checked against the models and by round trips."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import scanrnn as sr  # noqa: E402
from scanrnn.interop import from_torch, to_torch  # noqa: E402

torch.set_num_threads(1)
pytestmark = [
    pytest.mark.slow,  # every test here takes 2-7 s (a torch module and a compiled model per case)
    pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN"),
]

I, H, T = 4, 5, 6
CELLS = {
    "rnn_tanh": lambda h: sr.simple_rnn(h, "tanh"),
    "rnn_relu": lambda h: sr.simple_rnn(h, "relu"),
    "lstm": lambda h: sr.lstm(h),
    "lstm_proj": lambda h: sr.lstm(h, proj_size=h - 2),
    "gru": lambda h: sr.gru(h),
}


def stack(kind, layers, bidirectional):
    wrap = sr.bidirectional if bidirectional else sr.recurrent
    return sr.serial(*[wrap(CELLS[kind](H)) for _ in range(layers)])


def random_params(model, seed):
    """The model's params with every leaf redrawn, biases included, so that no field is left at zero."""
    params = model.init(jax.random.key(seed), I)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
    return jax.tree.unflatten(tree, [0.5 * jax.random.normal(k, l.shape, l.dtype) for k, l in zip(keys, leaves)])


def torch_outputs(module, xs, lengths):
    """The module's outputs [B, T, D*H] for batch-first xs, with packed lengths, zeros past them."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    with torch.no_grad():
        x = torch.from_numpy(np.asarray(xs))
        if not module.batch_first:
            x = x.transpose(0, 1)
        packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=module.batch_first, enforce_sorted=False)
        out, _ = module(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=xs.shape[1])
    return out.numpy()


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("layers, bidirectional", [(1, False), (2, True)], ids=["1-layer", "2-layer-bidirectional"])
def test_the_module_computes_the_model(kind, layers, bidirectional):
    model = stack(kind, layers, bidirectional)
    params = random_params(model, seed=len(kind) + layers)
    module = to_torch(model, params, batch_first=layers == 1)
    expected_cls = {"rnn_tanh": torch.nn.RNN, "rnn_relu": torch.nn.RNN, "lstm": torch.nn.LSTM,
                    "lstm_proj": torch.nn.LSTM, "gru": torch.nn.GRU}
    assert type(module) is expected_cls[kind] and not module.training
    assert (module.num_layers, module.bidirectional, module.hidden_size, module.input_size) == (layers, bidirectional, H, I)
    if kind.startswith("lstm"):
        assert module.proj_size == (H - 2 if kind == "lstm_proj" else 0)
    if kind.startswith("rnn"):
        assert module.nonlinearity == kind.split("_")[1]
    xs = np.random.default_rng(0).normal(size=(3, T, I)).astype(np.float32)
    lengths = [T, 2, 4]
    want = jax.vmap(model.apply, in_axes=(None, 0, 0))(params, xs, jnp.asarray(lengths))
    np.testing.assert_allclose(torch_outputs(module, xs, lengths), want, rtol=1e-5, atol=1e-5)
    # Back through from_torch: the params come back exactly.
    _, back = from_torch(module)
    for got, given in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
        np.testing.assert_array_equal(got, given)


def test_a_torch_module_through_scanrnn_and_back_keeps_its_weights_and_bias_sums():
    torch.manual_seed(0)
    original = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, dtype=torch.float64).eval()
    model, params = from_torch(original)
    again = to_torch(model, params)
    state, back = original.state_dict(), again.state_dict()
    for name, value in state.items():
        if name.startswith("weight"):
            assert torch.equal(back[name], value), name
        elif name.startswith("bias_ih"):
            hh = name.replace("bias_ih", "bias_hh")
            assert torch.equal(back[name], value + state[hh]) and not back[hh].any(), name
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(T, 2, I)))
    with torch.no_grad():
        np.testing.assert_allclose(again(x)[0].numpy(), original(x)[0].numpy(), rtol=1e-12, atol=1e-12)


def test_what_torch_cannot_hold_is_refused():
    dense_after = sr.serial(sr.recurrent(sr.lstm(H)), sr.dense(2))
    with pytest.raises(ValueError, match="layer 1 has params of type DenseParams"):
        to_torch(dense_after, dense_after.init(jax.random.key(0), I))
    peephole = sr.serial(sr.recurrent(sr.lstm(H, peephole=True)))
    with pytest.raises(ValueError, match="layer 0 has params of type PeepholeLSTMParams"):
        to_torch(peephole, peephole.init(jax.random.key(0), I))
    learned = sr.serial(sr.recurrent(sr.gru(H), learn_initial_carry=True))
    with pytest.raises(ValueError, match="learn_initial_carry=True"):
        to_torch(learned, learned.init(jax.random.key(0), I))
    mixed = sr.serial(sr.recurrent(sr.gru(H)), sr.recurrent(sr.lstm(H)))
    with pytest.raises(ValueError, match="every layer must be of one kind"):
        to_torch(mixed, mixed.init(jax.random.key(0), I))
    half_projected = sr.serial(sr.recurrent(sr.lstm(H, proj_size=2)), sr.recurrent(sr.lstm(H)))
    with pytest.raises(ValueError, match="every layer must be of one kind.*'LSTM with proj_size'"):
        to_torch(half_projected, half_projected.init(jax.random.key(0), I))
    projections = sr.serial(sr.recurrent(sr.lstm(H, proj_size=2)), sr.recurrent(sr.lstm(H, proj_size=3)))
    with pytest.raises(ValueError, match=re.escape("layer 1's w_hh must have shape (20, 2)")):
        to_torch(projections, projections.init(jax.random.key(0), I))
    widths = sr.serial(sr.recurrent(sr.gru(H)), sr.recurrent(sr.gru(H + 1)))
    with pytest.raises(ValueError, match=re.escape("layer 1's w_ih must have shape (15, 5)")):
        to_torch(widths, widths.init(jax.random.key(0), I))
    cho = sr.serial(sr.recurrent(sr.gru(H, reset_after=False)))
    with pytest.raises(ValueError, match=re.escape("does not reproduce the model")):
        to_torch(cho, random_params(cho, 0))
    last = sr.serial(sr.recurrent(sr.lstm(H), return_sequences=False))
    with pytest.raises(ValueError, match="every layer must return its sequence"):
        to_torch(last, last.init(jax.random.key(0), I))
    with pytest.raises(TypeError, match="to_torch: model must be a Layer"):
        to_torch(sr.lstm(H), ())

"""scanrnn.interop.from_torch against torch.nn.RNN / LSTM / GRU themselves."""

import functools
import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import scanrnn  # noqa: E402
from scanrnn.interop import from_torch, torch_forward  # noqa: E402

torch.set_num_threads(1)
# torch runs a projected LSTM without oneDNN, and says so once per call.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")

B, T, I, H = 3, 7, 5, 6
P = 4  # proj_size of the projected LSTM
LENGTHS = [7, 3, 5]  # unsorted, as enforce_sorted=False allows; one of them is T
ATOL = 1e-5

KINDS = {
    "rnn_tanh": (torch.nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (torch.nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (torch.nn.LSTM, {}),
    "lstm_proj": (torch.nn.LSTM, {"proj_size": P}),
    "gru": (torch.nn.GRU, {}),
}
CELLS = {
    "rnn_tanh": lambda: scanrnn.simple_rnn(H, "tanh"),
    "rnn_relu": lambda: scanrnn.simple_rnn(H, "relu"),
    "lstm": lambda: scanrnn.lstm(H),
    "gru": lambda: scanrnn.gru(H),
}


def run(f, *args):
    """``jax.jit(f)(*args)``, compiled by XLA without its backend optimisations.

    That halves the compile time, which is most of this file's run time on a
    CPU (every case is a new shape); the numbers are the same maths.
    """
    compiled = jax.jit(f).lower(*args).compile(compiler_options={"xla_backend_optimization_level": 0})
    return compiled(*args)


def make_module(kind, seed=0, **kwargs):
    torch.manual_seed(seed)
    cls, extra = KINDS[kind]
    return cls(I, H, **extra, **kwargs).eval()


def make_inputs(module, seed=0, batched=True):
    """x in the module's layout and a random initial state in torch's layout."""
    rng = np.random.default_rng(seed)
    if not batched:
        shape = (T, I)
    else:
        shape = (B, T, I) if module.batch_first else (T, B, I)
    x = rng.standard_normal(shape).astype(np.float32)
    D = 2 if module.bidirectional else 1
    lead = (module.num_layers * D, B) if batched else (module.num_layers * D,)
    h_size = getattr(module, "proj_size", 0) or H
    h0 = (0.5 * rng.standard_normal(lead + (h_size,))).astype(np.float32)
    if isinstance(module, torch.nn.LSTM):
        c0 = (0.5 * rng.standard_normal(lead + (H,))).astype(np.float32)
        return x, (h0, c0)
    return x, h0


def to_torch(a):
    if a is None:
        return None
    if isinstance(a, tuple):
        return tuple(torch.from_numpy(np.asarray(v)) for v in a)
    return torch.from_numpy(np.asarray(a))


def torch_reference(module, x, hx=None, lengths=None):
    """The module's output and final state; with lengths, through pack/pad_packed_sequence."""
    x, hx = to_torch(x), to_torch(hx)
    with torch.no_grad():
        if lengths is None:
            out, h = module(x, hx)
        else:
            bf = module.batch_first
            packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=bf, enforce_sorted=False)
            out, h = module(packed, hx)
            out, _ = pad_packed_sequence(out, batch_first=bf, total_length=x.shape[1 if bf else 0])
    return out.numpy(), tuple(v.numpy() for v in (h if isinstance(h, tuple) else (h,)))


def states(h):
    return tuple(np.asarray(v) for v in (h if isinstance(h, tuple) else (h,)))


def assert_matches(ours, theirs, atol=ATOL):
    out, h = ours
    t_out, t_h = theirs
    assert out.shape == t_out.shape
    assert out.dtype == t_out.dtype
    np.testing.assert_allclose(np.asarray(out), t_out, rtol=0, atol=atol)
    h = states(h)
    assert len(h) == len(t_h)
    for a, b in zip(h, t_h):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)


# Rows of an orthogonal array (every pair of options meets every pair of
# values): (num_layers, bidirectional, batch_first, with lengths, with hx).
ROWS = [
    (1, False, False, False, False),
    (1, False, True, True, True),
    (1, True, True, False, True),
    (1, True, False, True, False),
    (2, False, True, False, True),
    (2, False, False, True, False),
    (2, True, False, False, False),
    (2, True, True, True, True),
]
CASES = (
    [("lstm", *row) for row in ROWS]
    + [("gru", *row) for row in ROWS]
    + [("rnn_tanh", *ROWS[i]) for i in (0, 3, 4, 7)]
    + [("rnn_relu", *ROWS[i]) for i in (1, 2, 5, 7)]
    + [("lstm_proj", *ROWS[i]) for i in (1, 2, 5, 7)]
)


@pytest.mark.slow
@pytest.mark.parametrize("kind,num_layers,bidirectional,batch_first,use_lengths,use_hx", CASES)
def test_matches_torch(kind, num_layers, bidirectional, batch_first, use_lengths, use_hx):
    module = make_module(kind, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first)
    model, params = from_torch(module)
    forward = torch_forward(module)
    x, hx = make_inputs(module)
    hx = hx if use_hx else None
    lengths = LENGTHS if use_lengths else None
    ours = run(forward, params, x, hx, None if lengths is None else np.array(lengths))
    assert_matches(ours, torch_reference(module, x, hx, lengths))
    if not use_hx:
        # The model is an ordinary scanrnn model of one sequence; torch_forward only adapts the layouts.
        one = x[1] if batch_first else x[:, 1]
        ys = run(model.apply, params, one, None if lengths is None else np.asarray(lengths[1]))
        np.testing.assert_allclose(np.asarray(ys), np.asarray(ours[0][1] if batch_first else ours[0][:, 1]), atol=1e-6)


@pytest.mark.slow
def test_three_layers_bidirectional_with_lengths_and_hx():
    module = make_module("gru", num_layers=3, bidirectional=True, batch_first=True)
    model, params = from_torch(module)
    forward = torch_forward(module)
    assert len(params) == 3
    x, hx = make_inputs(module, seed=1)
    ours = run(forward, params, x, hx, np.array(LENGTHS))
    assert_matches(ours, torch_reference(module, x, hx, LENGTHS))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lstm", "rnn_relu"])
def test_unbatched(kind):
    module = make_module(kind, num_layers=2, bidirectional=True)
    model, params = from_torch(module)
    forward = torch_forward(module)
    x, hx = make_inputs(module, batched=False)
    out, h = run(forward, params, x, hx)
    assert out.shape == (T, 2 * H)
    assert_matches((out, h), torch_reference(module, x, hx))
    # A scalar length: the same as torch on the valid prefix, then zeros.
    n = 4
    out, h = run(forward, params, x, hx, np.array(n))
    t_out, t_h = torch_reference(module, x[:n], hx)
    np.testing.assert_allclose(np.asarray(out[:n]), t_out, rtol=0, atol=ATOL)
    assert not np.asarray(out[n:]).any()
    for a, b in zip(states(h), t_h):
        np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)


def test_zero_length_gives_zero_outputs_and_the_initial_state():
    module = make_module("lstm", bidirectional=True, batch_first=True)
    model, params = from_torch(module)
    forward = torch_forward(module)
    x, hx = make_inputs(module)
    out, (h, c) = run(forward, params, x, hx, np.array([0, 3, 5]))
    assert not np.asarray(out[0]).any()
    np.testing.assert_array_equal(np.asarray(h[:, 0]), hx[0][:, 0])
    np.testing.assert_array_equal(np.asarray(c[:, 0]), hx[1][:, 0])


@pytest.mark.parametrize("kind", ["gru", "rnn_tanh"])
def test_bias_false(kind):
    module = make_module(kind, num_layers=2, bidirectional=True, bias=False)
    model, params = from_torch(module)
    forward = torch_forward(module)
    for p in params:
        for name, leaf in p._asdict().items():
            if name.startswith("b"):
                assert not np.asarray(leaf).any()
    x, _ = make_inputs(module)
    assert_matches(run(forward, params, x), torch_reference(module, x))


@pytest.mark.slow
def test_float64_module():
    module = make_module("lstm", num_layers=2, bidirectional=True).double()
    model, params = from_torch(module)
    forward = torch_forward(module)
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(params))
    x, (h0, c0) = make_inputs(module)
    x, hx = x.astype(np.float64), (h0.astype(np.float64), c0.astype(np.float64))
    ours = run(forward, params, x, hx, np.array(LENGTHS))
    assert_matches(ours, torch_reference(module, x, hx, LENGTHS), atol=1e-12)


def test_params_layout():
    module = make_module("lstm", num_layers=2, bidirectional=True)
    _, params = from_torch(module)
    p0, p1 = params
    assert isinstance(p0, scanrnn.LSTMParams)
    assert p0.w_ih.shape == (2, 4 * H, I) and p1.w_ih.shape == (2, 4 * H, 2 * H)
    assert p0.w_ih.dtype == jnp.float32
    sd = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    np.testing.assert_array_equal(np.asarray(p1.w_hh[1]), sd["weight_hh_l1_reverse"])
    np.testing.assert_array_equal(np.asarray(p0.w_ih[0]), sd["weight_ih_l0"])
    np.testing.assert_allclose(np.asarray(p0.b[1]), sd["bias_ih_l0_reverse"] + sd["bias_hh_l0_reverse"])

    gru_params = from_torch(make_module("gru"))[1]
    (g,) = gru_params
    assert isinstance(g, scanrnn.GRUParams) and g.w_hh.shape == (3 * H, H)
    rnn_params = from_torch(make_module("rnn_relu"))[1]
    assert isinstance(rnn_params[0], scanrnn.RNNParams)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lstm", "lstm_proj", "gru"])
def test_gradients_match_torch_autograd(kind):
    module = make_module(kind, num_layers=2, bidirectional=True, batch_first=True)
    model, params = from_torch(module)
    forward = torch_forward(module)
    x, hx = make_inputs(module)
    rng = np.random.default_rng(5)
    weights = rng.standard_normal((B, T, 2 * (P if kind == "lstm_proj" else H))).astype(np.float32)
    lengths = np.array(LENGTHS)

    def loss(params):
        out, h = forward(params, x, hx, lengths)
        return jnp.sum(out * weights) + sum(jnp.sum(v) for v in jax.tree.leaves(h))

    grads = run(jax.grad(loss), params)

    module.zero_grad()
    packed = pack_padded_sequence(torch.from_numpy(x), torch.tensor(LENGTHS), batch_first=True, enforce_sorted=False)
    out, h = module(packed, to_torch(hx))
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
    total = (out * torch.from_numpy(weights)).sum() + sum(v.sum() for v in (h if isinstance(h, tuple) else (h,)))
    total.backward()
    g = {name: p.grad.numpy() for name, p in module.named_parameters()}

    for layer in range(2):
        for d, suffix in enumerate(["", "_reverse"]):
            ours = jax.tree.map(lambda a: np.asarray(a[d]), grads[layer])
            np.testing.assert_allclose(ours.w_ih, g[f"weight_ih_l{layer}{suffix}"], rtol=0, atol=1e-4)
            np.testing.assert_allclose(ours.w_hh, g[f"weight_hh_l{layer}{suffix}"], rtol=0, atol=1e-4)
            if kind == "gru":
                np.testing.assert_allclose(ours.b_ih, g[f"bias_ih_l{layer}{suffix}"], rtol=0, atol=1e-4)
                np.testing.assert_allclose(ours.b_hh, g[f"bias_hh_l{layer}{suffix}"], rtol=0, atol=1e-4)
            else:  # b = bias_ih + bias_hh: both torch biases get b's gradient
                np.testing.assert_allclose(ours.b, g[f"bias_ih_l{layer}{suffix}"], rtol=0, atol=1e-4)
                np.testing.assert_allclose(ours.b, g[f"bias_hh_l{layer}{suffix}"], rtol=0, atol=1e-4)
            if kind == "lstm_proj":
                np.testing.assert_allclose(ours.w_hr, g[f"weight_hr_l{layer}{suffix}"], rtol=0, atol=1e-4)
    assert np.abs(g["weight_hh_l0"]).max() > 1e-3  # the comparison is not vacuous


@pytest.mark.slow
@pytest.mark.parametrize("kind,bidirectional", [("lstm", True), ("gru", False)])
def test_params_reuse_in_serial(kind, bidirectional):
    module = make_module(kind, num_layers=2, bidirectional=bidirectional, batch_first=True)
    model, params = from_torch(module)
    forward = torch_forward(module)
    cell = CELLS[kind]()
    layer = scanrnn.bidirectional(cell) if bidirectional else scanrnn.recurrent(cell)
    net = scanrnn.serial(layer, layer)
    x, _ = make_inputs(module)
    lengths = np.array(LENGTHS)
    ys = run(jax.vmap(net.apply, in_axes=(None, 0, 0)), params, x, lengths)
    out, _ = run(forward, params, x, None, lengths)
    np.testing.assert_allclose(np.asarray(ys), np.asarray(out), rtol=0, atol=1e-6)


def test_init_makes_params_of_the_same_structure():
    module = make_module("lstm", num_layers=2, bidirectional=True)
    model, params = from_torch(module)
    forward = torch_forward(module)
    # eval_shape traces init completely (running it compiles the orthogonal
    # initialiser's QR for every shape, seconds on a CPU).
    fresh = jax.eval_shape(functools.partial(model.init, input_size=I), jax.random.key(1))
    assert jax.tree.structure(fresh) == jax.tree.structure(params)
    assert [(a.shape, a.dtype) for a in jax.tree.leaves(fresh)] == [
        (a.shape, a.dtype) for a in jax.tree.leaves(params)
    ]
    # Another input size: apply follows the params.
    other = jax.eval_shape(functools.partial(model.init, input_size=3), jax.random.key(2))
    out, (h, c) = jax.eval_shape(forward, other, jax.ShapeDtypeStruct((T, B, 3), jnp.float32))
    assert out.shape == (T, B, 2 * H) and h.shape == c.shape == (4, B, H)

    rnn_model, rnn_params = from_torch(make_module("rnn_relu", num_layers=3))
    fresh = jax.eval_shape(functools.partial(rnn_model.init, input_size=I), jax.random.key(0))
    assert jax.tree.structure(fresh) == jax.tree.structure(rnn_params)
    assert [a.shape for a in jax.tree.leaves(fresh)] == [a.shape for a in jax.tree.leaves(rnn_params)]


def test_rejects_other_modules():
    with pytest.raises(ValueError, match=r"torch\.nn\.RNN, torch\.nn\.LSTM or torch\.nn\.GRU.*Linear"):
        from_torch(torch.nn.Linear(3, 4))


def test_a_projected_lstm_becomes_lstm_with_proj_size():
    module = make_module("lstm_proj", num_layers=2, bidirectional=True)
    model, params = from_torch(module)
    assert all(type(p) is scanrnn.ProjectedLSTMParams for p in params)
    assert params[0].w_hh.shape == (2, 4 * H, P) and params[0].w_hr.shape == (2, P, H)
    assert params[1].w_ih.shape == (2, 4 * H, 2 * P)  # the next layer reads both directions' projections
    np.testing.assert_array_equal(params[1].w_hr[1], module.weight_hr_l1_reverse.detach().numpy())
    carry = model.initial_carry(params)
    assert carry[0].h.shape == (2, P) and carry[0].c.shape == (2, H)
    forward = torch_forward(module)
    x, (h0, c0) = make_inputs(module)
    with pytest.raises(ValueError, match=re.escape("h_0 must have shape [4, 3, 4] ([L*D, B, P])")):
        forward(params, x, (c0, c0))
    with pytest.raises(ValueError, match=re.escape("c_0 must have shape [4, 3, 6] ([L*D, B, H])")):
        forward(params, x, (h0, h0))


def test_bad_inputs_raise():
    module = make_module("lstm", num_layers=2, batch_first=True)
    model, params = from_torch(module)
    forward = torch_forward(module)
    x, hx = make_inputs(module)
    with pytest.raises(ValueError, match=r"\[B, T, I\].*got shape \(2, 3, 7, 5\)"):
        forward(params, np.zeros((2, 3, T, I), np.float32))
    with pytest.raises(ValueError, match=r"I=5.*got shape \(3, 7, 4\)"):
        forward(params, np.zeros((B, T, 4), np.float32))
    with pytest.raises(ValueError, match=r"length must have shape \(3,\).*got shape \(2,\)"):
        forward(params, x, length=np.array([1, 2]))
    with pytest.raises(ValueError, match=r"length must be a scalar.*got shape \(1,\)"):
        forward(params, x[0], length=np.array([1]))
    with pytest.raises(ValueError, match=r"\[0, 7\].*\[3, 8\]"):
        forward(params, x, length=np.array([3, 8, 4]))
    with pytest.raises(ValueError, match=r"\[0, 7\].*\[-1, 4\]"):
        forward(params, x, length=np.array([-1, 3, 4]))
    with pytest.raises(ValueError, match="integer"):
        forward(params, x, length=np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"h_0 must have shape \[2, 3, 6\].*got shape \(2, 6\)"):
        forward(params, x, hx=(hx[0][:, 0], hx[1][:, 0]))
    with pytest.raises(ValueError, match=r"pair \(h_0, c_0\)"):
        forward(params, x, hx=hx[0])
    with pytest.raises(ValueError, match="tuple of 2 params"):
        forward(params[:1], x)


@pytest.mark.slow
def test_importing_does_not_import_torch_or_matplotlib():
    code = (
        "import scanrnn, scanrnn.interop, sys; "
        "assert 'torch' not in sys.modules; assert 'matplotlib' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

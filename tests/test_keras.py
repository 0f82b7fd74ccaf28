"""scanrnn._keras: Keras 3 models as scanrnn models and back, checked against Keras' own outputs."""

import contextlib
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")  # Keras 3's default backend, TensorFlow, is not needed here
keras = pytest.importorskip("keras")

import scanrnn as sr  # noqa: E402
from scanrnn._keras import from_keras, to_keras  # noqa: E402
from scanrnn.layers import Layer  # noqa: E402

from helpers import elman  # noqa: E402

# Keras' variables convert to NumPy without the copy keyword NumPy 2 asks for: its warning, not scanrnn's.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

L = keras.layers
I, H, T, V = 3, 4, 5, 7
LENGTHS = np.array([T, 3, 1])  # right padding: example b has LENGTHS[b] valid steps


@contextlib.contextmanager
def keras_numerics():
    """What Keras' JAX backend needs under this suite's settings (conftest.py).

    With rank promotion "raise" building a Keras model fails (its
    initialisers and bias additions broadcast), and with strict dtype
    promotion a float64 LSTM or GRU does; scanrnn._keras runs Keras the
    same way.
    """
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        yield


INITIALISERS = ("kernel_initializer", "recurrent_initializer", "bias_initializer", "embeddings_initializer")


def zero_initialisers(layer):
    """Set the initialisers of ``layer`` (and of the cells and layers inside it) to zeros, before it is built.

    Keras' default initialisers (orthogonal, Glorot) compile a JAX program
    per weight shape, seconds on the first build; zeros compile next to
    nothing, and :func:`build` redraws every weight anyway.
    """
    for name in INITIALISERS:
        if name in vars(layer):  # an RNN layer's are properties of its cell
            setattr(layer, name, keras.initializers.Zeros())
    for inner in ("cell", "layer", "forward_layer", "backward_layer"):
        if isinstance(getattr(layer, inner, None), L.Layer):
            zero_initialisers(getattr(layer, inner))
    return layer


def build(layers, seed, inputs=None):
    """A Keras Sequential of ``layers`` after ``inputs`` (floats [B, T, I]), every weight redrawn (biases too)."""
    with keras_numerics():
        net = keras.Sequential([keras.Input((None, I)) if inputs is None else inputs,
                                *map(zero_initialisers, layers)])
    rng = np.random.default_rng(seed)
    net.set_weights([(0.5 * rng.standard_normal(w.shape)).astype(w.dtype) for w in net.get_weights()])
    return net


def predict(net, xs):
    with keras_numerics():
        return np.asarray(net.predict(xs, verbose=0))


def run(model, params, xs, lengths=None):
    """The scanrnn model over a batch, compiled once."""
    if lengths is None:
        return np.asarray(jax.jit(jax.vmap(model.apply, in_axes=(None, 0)))(params, xs))
    return np.asarray(jax.jit(jax.vmap(model.apply, in_axes=(None, 0, 0)))(params, xs, lengths))


def padded(seed, lengths=LENGTHS):
    """Float inputs [B, T, I] with zeros past each length (what Masking(0.0) masks)."""
    xs = np.random.default_rng(seed).standard_normal((len(lengths), T, I)).astype(np.float32)
    xs[np.arange(T)[None, :] >= lengths[:, None]] = 0.0
    return xs


def random_params(model, input_size, seed):
    """Params of ``model.init``'s structure filled with 0.5 * standard normals (no field zero), nothing compiled."""
    shapes = jax.eval_shape(lambda k: model.init(k, input_size), jax.random.key(0))
    leaves, tree = jax.tree.flatten(shapes)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(tree, [jnp.asarray(0.5 * rng.standard_normal(l.shape), l.dtype) for l in leaves])


def assert_params_equal(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def assert_valid_steps_close(got, want, lengths=LENGTHS):
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(got[b, :n], want[b, :n], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------
# Keras -> scanrnn.


@pytest.mark.slow
def test_recurrent_layers_under_a_mask_give_keras_outputs():
    net = build([
        L.Masking(0.0),
        L.SimpleRNN(H, return_sequences=True),
        L.SimpleRNN(H, activation="relu", use_bias=False, return_sequences=True),
        L.SimpleRNN(H, activation="sigmoid", return_sequences=True),
        L.LSTM(H, return_sequences=True),
        L.GRU(H, return_sequences=True),
        L.GRU(H, reset_after=False, return_sequences=True),
        L.RNN(L.GRUCell(H, use_bias=False)),  # return_sequences=False: the last valid step's output
        L.Dense(2),
    ], seed=1)
    model, params = from_keras(net)
    kinds = ["RNNParams"] * 3 + ["LSTMParams"] + ["GRUParams"] * 3 + ["DenseParams"]
    assert [type(p).__name__ for p in params] == kinds
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    assert not params[1].b.any() and not params[6].b_ih.any() and not params[6].b_hh.any()  # use_bias=False
    xs = padded(seed=2)
    got, want = run(model, params, xs, LENGTHS), predict(net, xs)
    assert got.shape == want.shape == (3, 2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # One layer alone converts to a serial of that layer, with the same params.
    cho, cho_params = from_keras(net.layers[6])
    assert len(cho.parts) == len(cho_params) == 1 and not cho_params[0].b_hh.any()
    assert_params_equal(cho_params[0], params[5])


@pytest.mark.slow
def test_bidirectional_merge_modes_under_a_mask_give_keras_outputs():
    net = build([
        L.Masking(0.0),
        L.Bidirectional(L.LSTM(H, return_sequences=True)),  # concat
        L.Bidirectional(L.GRU(H, return_sequences=True), merge_mode="sum"),
        L.Bidirectional(L.SimpleRNN(H, activation="relu", return_sequences=True), merge_mode="ave"),
        L.Bidirectional(L.GRU(H, reset_after=False), merge_mode="mul"),
        L.Dense(2),
    ], seed=3)
    model, params = from_keras(net)
    assert [jnp.shape(p.w_ih) for p in params[:4]] == [(2, 4 * H, I), (2, 3 * H, 2 * H), (2, H, H), (2, 3 * H, H)]
    xs = padded(seed=4)
    got, want = run(model, params, xs, LENGTHS), predict(net, xs)
    assert got.shape == want.shape == (3, 2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_inside_bidirectional_keras_gives_zeros_past_the_length_as_scanrnn_does():
    net = build([L.Masking(0.0), L.Bidirectional(L.GRU(H, reset_after=False, return_sequences=True))], seed=5)
    model, params = from_keras(net)
    xs = padded(seed=6)
    got, want = run(model, params, xs, LENGTHS), predict(net, xs)
    assert not want[2, 1:].any()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # every step


@pytest.mark.slow
def test_a_token_stack_gives_keras_outputs_at_valid_steps_and_comes_back_with_its_weights():
    net = build([
        L.Embedding(V, I, mask_zero=True),
        L.Bidirectional(L.LSTM(H, return_sequences=True)),
        L.Dropout(0.3),
        L.LSTM(H, return_sequences=True),
        L.TimeDistributed(L.Dense(2)),
    ], seed=7, inputs=keras.Input((None,), dtype="int32"))
    model, params = from_keras(net)
    assert model.tokens == V and [type(p).__name__ for p in params] == [
        "EmbeddingParams", "LSTMParams", "tuple", "LSTMParams", "DenseParams"
    ]
    tokens = np.random.default_rng(8).integers(1, V, size=(3, T)).astype(np.int32)
    tokens[np.arange(T)[None, :] >= LENGTHS[:, None]] = 0  # token 0 is Keras' padding
    got, want = run(model, params, tokens, LENGTHS), predict(net, tokens)
    assert_valid_steps_close(got, want)
    # Past the length scanrnn gives zeros; Keras' plain LSTM repeats its last valid output, and the dense its image.
    for b, n in enumerate(LENGTHS):
        assert not got[b, n:].any()
        np.testing.assert_array_equal(want[b, n:], np.broadcast_to(want[b, n - 1], want[b, n:].shape))
    # Back to Keras: the same weights, layer by layer (the dropout comes back as Dropout(0.0)).
    again = to_keras(model, params)
    kinds = ["Embedding", "Bidirectional", "Dropout", "LSTM", "Dense"]
    assert [type(layer).__name__ for layer in again.layers] == kinds
    for got_weight, weight in zip(again.get_weights(), net.get_weights(), strict=True):
        np.testing.assert_array_equal(got_weight, weight)


def test_dropout_layers_and_what_converts_to_nothing():
    inner = keras.Sequential([L.Masking(0.0), L.Dropout(0.25)])  # a nested Sequential converts in place
    net = keras.Sequential([L.InputLayer(shape=(None, I)), inner, L.SpatialDropout1D(0.5)])
    model, params = from_keras(net)
    assert params == ((), ())
    xs = jnp.asarray(padded(seed=9)[0])
    np.testing.assert_array_equal(model.apply(params, xs), xs)  # inference: the identity
    _, spatial = model.parts
    dropped = np.asarray(spatial.apply((), jnp.ones((T, I)), key=jax.random.key(0)))
    assert set(np.unique(dropped)) <= {0.0, 2.0} and (dropped == dropped[0]).all()  # one mask for every step


def test_what_from_keras_cannot_express_is_refused():
    cases = [
        (L.SimpleRNN(H, return_state=True), "return_state=True is not supported"),
        (L.LSTM(H, stateful=True), "stateful=True is not supported"),
        (L.GRU(H, go_backwards=True), "go_backwards=True is not supported outside Bidirectional"),
        (L.SimpleRNN(H, activation="softplus"), "activation='softplus' is not supported"),
        (L.LSTM(H, activation="relu"), "activation='relu' is not supported; an LSTM or GRU converts"),
        (L.GRU(H, recurrent_activation="hard_sigmoid"), "recurrent_activation='hard_sigmoid' is not supported"),
        (L.Bidirectional(L.LSTM(H), merge_mode=None), "merge_mode=None is not supported"),
        (L.Bidirectional(L.LSTM(H, return_state=True)), "its forward layer .*return_state=True"),
        (L.Bidirectional(L.LSTM(H), backward_layer=L.GRU(H, go_backwards=True)),
         "the forward and backward layers must be one kind of cell"),
        (L.Dense(2, activation="softmax"), r"layer 0 \('dense.*', Dense\): activation='softmax' is not supported"),
        (L.TimeDistributed(L.Dense(2, activation="relu")), "its Dense .*activation='relu' is not supported"),
        (L.TimeDistributed(L.Flatten()), "wraps a Flatten; it converts TimeDistributed"),
        (L.Conv1D(H, 3), r"\(.*, Conv1D\) is not supported; it converts SimpleRNN"),
        (L.RNN(L.StackedRNNCells([L.LSTMCell(H), L.LSTMCell(H)])), "a cell of type StackedRNNCells"),
        (L.SpatialDropout2D(0.5), "SpatialDropout2D\\) is not supported"),
        (L.LSTM(H), "is not built and has no weights yet"),
        (keras.Sequential([L.Masking(0.0)]), "nothing to convert"),
        (keras.Sequential([]), "nothing to convert"),
        (type("Net", (keras.Model,), {})(), "got a Net model"),
        ("lstm", "from_keras accepts a keras.Sequential or a single Keras layer, got str"),
    ]
    for layer, message in cases:
        with pytest.raises(ValueError, match=message):
            from_keras(layer)
    # The layer's position in the model is named.
    with pytest.raises(ValueError, match=r"layer 2 \('conv'"):
        from_keras(keras.Sequential([L.Masking(0.0), L.Dropout(0.1), L.Conv1D(H, 3, name="conv")]))


# --------------------------------------------------------------------------
# scanrnn -> Keras.

MODELS = {
    "tokens": (V, lambda: sr.serial(
        sr.embedding(V, I),
        sr.bidirectional(sr.lstm(H)),  # concat
        sr.dropout(0.2),
        sr.recurrent(sr.gru(H, reset_after=False)),
        sr.bidirectional(sr.simple_rnn(H, "relu"), "mean"),
        sr.dense(2),
    )),
    "floats": (I, lambda: sr.serial(
        sr.recurrent(sr.simple_rnn(H, "tanh")),
        sr.recurrent(sr.gru(H)),
        sr.bidirectional(sr.simple_rnn(H, "sigmoid"), "mul"),
        sr.bidirectional(sr.lstm(H), "sum", return_sequences=False),
        sr.dense(3),
    )),
}
CHO = {"tokens": 3}  # the gru(reset_after=False) layer, whose b_hh Keras holds summed into b_ih
KERAS_LAYERS = {
    "tokens": [("Embedding", None), ("Bidirectional", "concat"), ("Dropout", None), ("GRU", None),
               ("Bidirectional", "ave"), ("Dense", None)],
    "floats": [("SimpleRNN", None), ("GRU", None), ("Bidirectional", "mul"), ("Bidirectional", "sum"), ("Dense", None)],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_a_scanrnn_model_through_keras_gives_its_outputs_and_comes_back_with_its_params(name):
    input_size, make = MODELS[name]
    model = make()
    params = random_params(model, input_size, seed=len(name))
    net = to_keras(model, params)
    assert [(type(layer).__name__, getattr(layer, "merge_mode", None)) for layer in net.layers] == KERAS_LAYERS[name]
    rng = np.random.default_rng(10)
    if name == "tokens":
        xs = rng.integers(0, V, size=(3, T)).astype(np.int32)
        configs = [net.layers[1].forward_layer.get_config(), net.layers[3].get_config()]
        assert [c.get("reset_after") for c in configs] == [None, False]
        assert net.layers[4].forward_layer.get_config()["activation"] == "relu"
    else:
        xs = rng.standard_normal((3, T, I)).astype(np.float32)
        activations = [net.layers[0].get_config()["activation"], net.layers[2].forward_layer.get_config()["activation"]]
        assert activations == ["tanh", "sigmoid"]
        assert net.layers[1].get_config()["reset_after"] and not net.layers[3].return_sequences
    np.testing.assert_allclose(predict(net, xs), run(model, params, xs), rtol=1e-5, atol=1e-5)
    back_model, back = from_keras(net)
    if name in CHO:  # the Cho GRU's recurrent bias comes back summed into its input bias
        k = CHO[name]
        cho, cho_back = params[k], back[k]
        np.testing.assert_array_equal(cho_back.b_ih, cho.b_ih + cho.b_hh)
        assert not cho_back.b_hh.any()
        params = params[:k] + (cho._replace(b_ih=cho.b_ih + cho.b_hh, b_hh=jnp.zeros_like(cho.b_hh)),) + params[k + 1:]
    assert_params_equal(back, params)
    assert len(back_model.parts) == len(model.parts)


@pytest.mark.slow
def test_float64_params_give_a_float64_keras_model_and_come_back():
    f64 = jnp.float64
    model = sr.serial(sr.bidirectional(sr.gru(H, param_dtype=f64), "mean"))
    params = random_params(model, I, seed=11)
    net = to_keras(model, params)
    assert {w.dtype for w in net.get_weights()} == {np.dtype(np.float64)}
    xs = np.random.default_rng(12).standard_normal((2, T, I))
    # Keras' JAX backend computes its tanh in float32 even for float64 layers: float32's precision.
    np.testing.assert_allclose(predict(net, xs), run(model, params, xs), rtol=1e-6, atol=1e-6)
    _, back = from_keras(net)
    assert_params_equal(back, params)
    with jax.enable_x64(False), pytest.warns(UserWarning, match="float64 but jax_enable_x64 is off"):
        _, narrow = from_keras(net)
    assert {leaf.dtype for leaf in jax.tree.leaves(narrow)} == {jnp.dtype(jnp.float32)}


def refused(model, message, params=None):
    params = random_params(model, I, seed=0) if params is None else params
    with pytest.raises(ValueError, match=message):
        to_keras(model, params)


def test_what_to_keras_cannot_build_is_refused():
    refused(sr.serial(sr.recurrent(sr.lstm(H, peephole=True))), "PeepholeLSTMParams .Keras' LSTM has no peepholes")
    refused(sr.recurrent(sr.layer_norm_lstm(H)), "layer 0 has params of type LayerNormLSTMParams")
    refused(sr.serial(sr.dense(H), sr.recurrent(sr.layer_norm_rnn(H))), "layer 1 has params of type LayerNormRNN")
    refused(sr.serial(sr.recurrent(sr.gru(H), learn_initial_carry=True)), "RecurrentParams .a layer with learn_")
    refused(sr.serial(sr.bidirectional(sr.lstm(H), learn_initial_carry=True)), "layer 0 has params of type Recurr")
    refused(sr.serial(sr.recurrent(sr.min_gru(H))), "layer 0 has params of type MinGRUParams")
    refused(sr.serial(sr.dense(H), sr.recurrent(elman(H, jnp.float32))), "layer 1 has params of type dict")

    model = sr.serial(sr.dense(H), sr.dense(2))
    params = random_params(model, I, seed=0)
    wider = jax.tree.map(lambda a: a.astype(jnp.float64), params[1])
    refused(model, "every param must have one dtype", (params[0], wider))
    refused(model, "params must be float32 or float64, got bfloat16",
            jax.tree.map(lambda a: a.astype(jnp.bfloat16), params))
    refused(model, "a serial model of 2 layers takes a tuple of 2 params, got a tuple of 1", params[:1])
    with pytest.raises(TypeError, match="to_keras: model must be a Layer"):
        to_keras(sr.lstm(H), ())


def test_a_layer_that_matches_no_candidate_on_the_probe_is_refused():
    def halved(cell):  # the built-in params, another computation
        def apply(params, carry, x):
            carry, y = cell.apply(params, carry, x)
            return carry, 0.5 * y

        return sr.Cell(cell.init, cell.initial_carry, apply)

    refused(sr.serial(sr.recurrent(halved(sr.simple_rnn(H)))), "layer 0 has params of type RNNParams but does not "
            "match a recurrent layer of simple_rnn with tanh, relu or sigmoid")
    zoneout = sr.Regularization(zoneout=0.5)  # acts at inference, through its expectation
    refused(sr.serial(sr.dense(H), sr.bidirectional(sr.gru(H), regularization=zoneout)),
            "layer 1 .* does not match a bidirectional")
    doubled = Layer(lambda key, n: (), lambda params, xs, length=None, **kw: 2.0 * xs, lambda params: ())
    refused(sr.serial(sr.dense(H), doubled), "layer 1 has no params and is not the identity")


@pytest.mark.slow  # a fresh interpreter imports JAX
def test_importing_scanrnn_does_not_import_keras():
    code = "import scanrnn, scanrnn.interop, scanrnn._keras, sys; assert 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)

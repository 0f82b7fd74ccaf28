"""scanrnn.data.text: corpus split, vocabulary, unigram baseline, stateful evaluation and sampling.

References: Python loops over characters (Counter, math.log2), a greedy decoder
that re-reads the whole prefix with the stateless ``model.apply`` at every
step, and one stateless ``model.apply`` over the whole stream for the chunked
stateful evaluation.
"""

import collections
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scanrnn as sr
from scanrnn import language_model
from scanrnn.data import text

V = 6  # a tiny vocabulary for the model tests: the unknown symbol and "abcde"


# --------------------------------------------------------------------------
# Corpus.


def make_tree(root):
    """A fake standard library: 12 modules, a package, and folders that must be left out."""
    files = {f"mod{i:02d}.py": f"# module {i}\n" + f"x = {i}\n" * (i + 1) for i in range(12)}
    files.update({
        "pkg/__init__.py": "from . import sub\n",
        "pkg/sub.py": "def f():\n    return 1\n",
        "pkg/notes.txt": "not python\n",
        "site-packages/third.py": "import third\n",
        "test/test_mod.py": "assert True\n",
        "pkg/tests/test_sub.py": "assert True\n",
        "__pycache__/mod00.py": "stale\n",
    })
    for path, content in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(content)
    return files


def test_stdlib_files_leaves_out_site_packages_tests_and_non_python(tmp_path):
    make_tree(tmp_path)
    paths = text.stdlib_files(tmp_path)
    assert paths == sorted([f"mod{i:02d}.py" for i in range(12)] + ["pkg/__init__.py", "pkg/sub.py"])
    with_tests = text.stdlib_files(tmp_path, exclude_tests=False)
    assert set(with_tests) - set(paths) == {"test/test_mod.py", "pkg/tests/test_sub.py"}


def test_split_files_is_disjoint_complete_and_deterministic():
    paths = [f"f{i}.py" for i in range(50)]
    train, valid = text.split_files(paths, 0.2, seed=3)
    assert len(valid) == 10 and len(train) == 40
    assert not set(train) & set(valid) and set(train) | set(valid) == set(paths)
    # The same seed gives the same split whatever the order the paths come in.
    assert text.split_files(paths[::-1], 0.2, seed=3) == (train, valid)
    assert text.split_files(paths, 0.2, seed=4)[1] != valid


def test_stdlib_corpus_splits_by_file_and_caps_the_text(tmp_path):
    files = make_tree(tmp_path)
    corpus = text.stdlib_corpus(max_chars=100, valid_fraction=0.25, seed=1, root=tmp_path)
    assert len(corpus.valid) == 25 and len(corpus.train) == 75
    assert not set(corpus.train_files) & set(corpus.valid_files)
    # Each side is its files' text in order, the last one cut.
    for body, used in ((corpus.train, corpus.train_files), (corpus.valid, corpus.valid_files)):
        whole = "".join(files[p] for p in used)
        assert whole.startswith(body) and len(whole) - len(files[used[-1]]) < len(body)
    uncapped = text.stdlib_corpus(max_chars=None, valid_fraction=0.25, seed=1, root=tmp_path)
    assert len(uncapped.train_files) + len(uncapped.valid_files) == 14
    assert uncapped.valid.startswith(corpus.valid)
    assert text.stdlib_corpus(max_chars=100, valid_fraction=0.25, seed=1, root=tmp_path) == corpus


def test_the_real_standard_library_is_found():
    paths = text.stdlib_files()
    assert "os.py" in paths and "json/decoder.py" in paths
    assert not any(part in ("site-packages", "test", "tests") for p in paths for part in p.split("/")[:-1])


# --------------------------------------------------------------------------
# Vocabulary and the unigram baseline.


def test_vocabulary_round_trip_and_order():
    sample = "def f(x):\n    return x + 1  # ok\n"
    vocab = text.build_vocabulary(sample)
    assert vocab.symbols[0] == text.UNKNOWN and vocab.symbols[1:] == "".join(sorted(set(sample)))
    ids = text.encode(vocab, sample)
    assert ids.dtype == np.int32 and ids.shape == (len(sample),) and ids.min() >= 1
    assert [vocab.symbols[i] for i in ids] == list(sample)
    assert text.decode(vocab, ids) == sample


def test_rare_and_non_ascii_characters_map_to_unknown():
    vocab = text.build_vocabulary("aaabbbc" + "é" * 5 + "λ" * 5, min_count=3)
    assert vocab.symbols == text.UNKNOWN + "ab"
    ids = text.encode(vocab, "abcéλ😀a")
    np.testing.assert_array_equal(ids, [1, 2, 0, 0, 0, 0, 1])
    assert text.decode(vocab, ids) == "ab" + text.UNKNOWN * 4 + "a"
    assert text.encode(vocab, "").shape == (0,) and text.decode(vocab, []) == ""


def test_unigram_bits_against_a_python_count():
    train, valid = "hello world, hello there", "the low hedge!"
    vocab = text.build_vocabulary(train)  # "!", "d", "g" are unknown in valid
    counts = collections.Counter(vocab.symbols[i] for i in text.encode(vocab, train))
    n, size = len(train), vocab.size
    expected = -sum(
        math.log2((counts[c if c in vocab.symbols else text.UNKNOWN] + 1) / (n + size)) for c in valid
    ) / len(valid)
    got = text.unigram_bits(text.encode(vocab, train), text.encode(vocab, valid), size)
    assert got == pytest.approx(expected, rel=1e-12)
    # On its own text, with no smoothing to speak of, it is the entropy of the frequencies.
    ids = np.repeat(np.arange(4), [1000, 2000, 3000, 4000])
    p = np.array([1, 2, 3, 4]) / 10
    assert text.unigram_bits(ids, ids, 4) == pytest.approx(-np.sum(p * np.log2(p)), abs=1e-3)


# --------------------------------------------------------------------------
# A model on one-hot characters.


def noise_params(model, input_size, seed=0, scale=0.6):
    """Params with the structure of ``model.init``, float64 Gaussian noise (nothing compiled)."""
    shapes = jax.eval_shape(lambda k: model.init(k, input_size), jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda l: jnp.asarray(scale * rng.standard_normal(l.shape)), shapes)


@pytest.fixture(scope="module")
def char_model():
    """Two recurrent layers (the serial carry is a tuple of three entries) and a dense output, float64.

    The output weights are large and its bias zero, so that the logits depend
    on the state enough for greedy decoding not to repeat one character.
    """
    model = sr.serial(sr.recurrent(sr.gru(7)), sr.recurrent(sr.lstm(5)), sr.dense(V))
    gru_params, lstm_params, out = noise_params(model, V, scale=1.0)
    return model, (gru_params, lstm_params, sr.DenseParams(3 * out.w, jnp.zeros_like(out.b)))


def greedy_by_loop(model, params, prime_ids, length):
    """Greedy decoding that re-reads the whole prefix at every step (stateless calls, no carry).

    The prefix is padded to a fixed length so one compiled call serves every
    step; the model is causal, so the output at step t does not see the padding.
    """
    total = len(prime_ids) + length
    apply = jax.jit(lambda p, ids: model.apply(p, jax.nn.one_hot(ids, V, dtype=jnp.float64)))
    ids = list(prime_ids)
    for _ in range(length):
        padded = np.array(ids + [0] * (total - len(ids)), np.int32)
        logits = np.asarray(apply(params, padded))
        ids.append(int(np.argmax(logits[len(ids) - 1])))
    return ids[len(prime_ids):]


@pytest.mark.slow
def test_sampling_at_a_low_temperature_is_greedy_decoding(char_model):
    model, params = char_model
    prime = [1, 5, 2, 3]
    got = language_model.sample_ids(model, params, prime, 12, vocab_size=V, temperature=1e-6, key=jax.random.key(5))
    expected = greedy_by_loop(model, params, prime, 12)
    assert got.tolist() == expected
    assert len(set(expected)) > 1  # not a constant output that any bug would also give


@pytest.mark.slow
def test_sampling_is_reproducible_and_depends_on_the_key(char_model):
    model, params = char_model
    vocab = text.Vocabulary(text.UNKNOWN + "abcde")
    sample = lambda prime, seed, **kw: language_model.sample(  # noqa: E731
        model, params, vocab, prime, 12, temperature=1.0, key=jax.random.key(seed), **kw
    )
    a = sample("aebc", 0)  # the shapes of the greedy test: the same compiled program
    assert a.startswith("aebc") and len(a) == 16 and set(a) <= set(vocab.symbols)
    assert sample("aebc", 0) == a
    assert sample("aebc", 1) != a
    # A start symbol is read before the prime and not returned.
    assert "a" + sample("ebc", 0, start="a") == a


@pytest.mark.slow
def test_sampled_first_character_follows_the_tempered_softmax(char_model):
    model, params = char_model
    prime, temperature, n = jnp.array([2, 4], jnp.int32), 1.7, 2000
    keys = jax.random.split(jax.random.key(3), n)
    draws = jax.vmap(lambda k: language_model._sample_ids(model, params, prime, temperature, k, length=1, vocab_size=V))(keys)
    logits = np.asarray(model.apply(params, jax.nn.one_hot(prime, V, dtype=jnp.float64)))[-1]
    p = np.exp(logits / temperature - np.max(logits / temperature))
    p /= p.sum()
    freq = np.bincount(np.asarray(draws)[:, 0], minlength=V) / n
    assert np.max(np.abs(freq - p)) < 4 * np.sqrt(0.25 / n)  # 4 standard deviations at worst


@pytest.mark.slow
def test_stream_bits_per_char_equals_one_stateless_pass_per_stream(char_model):
    model, params = char_model
    batch_size = 2
    ids = np.random.default_rng(2).integers(0, V, size=47)
    bits, count = language_model.stream_bits_per_char(model, params, ids, V, batch_size=batch_size, chunk_size=5)
    inputs, targets = sr.train.stream_batches(ids, batch_size, 5)
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    assert count == targets.size
    total = 0.0
    for b in range(batch_size):  # each stream read in one call from zeros, no chunks
        x, y = inputs[:, b].reshape(-1), targets[:, b].reshape(-1)
        np.testing.assert_array_equal(x[1:], y[:-1])
        logits = np.asarray(model.apply(params, jax.nn.one_hot(x, V, dtype=jnp.float64)))
        log_p = logits - np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
        total -= np.sum(log_p[np.arange(len(y)), y])
    assert bits == pytest.approx(total / count / math.log(2), rel=1e-10)


# --------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature(char_model, temperature):
    model, params = char_model
    with pytest.raises(ValueError, match="temperature"):
        language_model.sample_ids(model, params, [1], 3, vocab_size=V, temperature=temperature, key=jax.random.key(0))


def test_bad_sampling_inputs(char_model):
    model, params = char_model
    vocab = text.Vocabulary(text.UNKNOWN + "abcde")
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="start symbol"):
        language_model.sample(model, params, vocab, "", 3, key=key)
    with pytest.raises(ValueError, match="start must be one character"):
        language_model.sample(model, params, vocab, "a", 3, key=key, start="ab")
    with pytest.raises(ValueError, match="length"):
        language_model.sample(model, params, vocab, "a", 0, key=key)
    with pytest.raises(ValueError, match="prime_ids must lie"):
        language_model.sample_ids(model, params, [1, V], 3, vocab_size=V, key=key)
    with pytest.raises(ValueError, match="x must have shape"):  # the model's input is not the vocabulary
        language_model.sample_ids(model, params, [1], 3, vocab_size=4, key=key)
    small = sr.serial(sr.recurrent(sr.gru(3)), sr.dense(V - 1))  # nor is its output
    with pytest.raises(ValueError, match=rf"logits \[T, {V}\]"):
        language_model.sample_ids(small, noise_params(small, V), [1], 3, vocab_size=V, key=key)
    with pytest.raises(ValueError, match="key"):
        language_model.sample_ids(model, params, [1], 3, vocab_size=V, key=0)
    with pytest.raises(ValueError, match=rf"ids must lie in \[0, {V}\)"):
        language_model.stream_bits_per_char(model, params, [0, 1, V], V, batch_size=1, chunk_size=1)


def test_bad_corpus_and_vocabulary_inputs():
    with pytest.raises(ValueError, match="valid_fraction"):
        text.split_files(["a.py", "b.py"], 1.0, seed=0)
    with pytest.raises(ValueError, match="at least 2"):
        text.split_files(["a.py"], 0.5, seed=0)
    with pytest.raises(ValueError, match="min_count"):
        text.build_vocabulary("abc", min_count=0)
    vocab = text.build_vocabulary("abc")
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 4\)"):
        text.decode(vocab, [1, 4])
    with pytest.raises(ValueError, match="must start with"):
        text.encode(text.Vocabulary("abc"), "a")
    with pytest.raises(ValueError, match="eval_ids must lie"):
        text.unigram_bits([0, 1], [2], 2)

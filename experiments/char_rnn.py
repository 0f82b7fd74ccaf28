"""A character-level language model of Python source code, trained with truncated BPTT.

The text is Python's own standard library (:func:`scanrnn.data.text.stdlib_corpus`):
its ``*.py`` files outside the test folders, split into training and
validation text by file (10 % of the files, seeded), so the validation text
is code the model never read. Characters seen fewer than ``MIN_COUNT`` times
in the training text, and non-ASCII ones, share one "unknown" id.

The model reads one-hot characters and predicts the next one::

    serial(recurrent(lstm(H)), dense(V))

It is trained with truncated backpropagation through time (Williams and Peng,
1990; the recipe of Karpathy's char-rnn): the training stream is cut into
``B`` parallel streams read ``K`` characters at a time
(:func:`scanrnn.train.stream_batches`); each step backpropagates through one
chunk of ``K`` steps only, and the chunk's final carry, with its gradient
stopped, is the next chunk's initial carry
(:func:`scanrnn.train.make_tbptt_step`), so the state, though not the
gradient, flows through the whole stream. Each pass over the training text
starts at a new offset, with zero carries. Adam with a cosine-decayed
learning rate and global-norm gradient clipping.

Validation bits per character are evaluated statefully over the whole
validation stream (:func:`scanrnn.language_model.stream_bits_per_char`) and compared
with the unigram baseline (the add-one smoothed character frequencies of
the training text). Samples at temperatures 0.5, 0.8 and 1.0 are drawn with
:func:`scanrnn.language_model.sample`.

    python experiments/char_rnn.py            # the full study, under 10 minutes on 2 CPU cores
    python experiments/char_rnn.py --quick    # a tiny corpus and a few steps, for the tests
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import scanrnn as sr  # noqa: E402
from scanrnn import language_model  # noqa: E402
from scanrnn.data import text  # noqa: E402
from scanrnn.train import Batch, batch_initial_carry, make_tbptt_step, softmax_cross_entropy, stream_batches  # noqa: E402
from benchmarks.common import command_line, default_out, markdown_table, table, write_results  # noqa: E402

MIN_COUNT = 10  # rarer training characters map to the unknown id
TEMPERATURES = (0.5, 0.8, 1.0)
PRIME, START = "def ", "\n"

FULL = dict(max_chars=2_000_000, valid_fraction=0.1, hidden=256, batch=32, chunk=64, steps=1500, lr=2e-3,
            final_lr_fraction=0.1, clip=1.0, eval_every=300, log_every=50, eval_batch=32, sample_length=500)
QUICK = dict(max_chars=20_000, valid_fraction=0.1, hidden=16, batch=4, chunk=16, steps=6, lr=2e-3,
             final_lr_fraction=0.1, clip=1.0, eval_every=3, log_every=1, eval_batch=4, sample_length=40)


def build_model(hidden: int, vocab_size: int) -> sr.Layer:
    return sr.serial(sr.recurrent(sr.lstm(hidden)), sr.dense(vocab_size))


def plot_learning_curve(curve, train_curve, log_every, unigram, path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot(train_curve["step"], train_curve["bits"], "b-", linewidth=1,
            label=f"training (mean over each {log_every} steps' chunks)")
    ax.plot(curve["step"], curve["valid_bits"], "r.-", label="validation (unseen files, stateful)")
    ax.axhline(unigram, color="0.5", linestyle="--", label=f"unigram baseline ({unigram:.2f})")
    ax.set_xlabel("step (one chunk per stream)")
    ax.set_ylabel("bits per character")
    ax.set_ylim(0, max(unigram, max(train_curve["bits"] + curve["valid_bits"])) * 1.05)
    ax.grid(True)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)


def markdown(result, rows, header) -> str:
    """results.md: the settings, the table and the samples."""
    s = result["settings"]
    lines = [
        "# Character-level LSTM on Python's standard library (truncated BPTT)",
        "",
        f"`{result['command']}` (seed {result['seed']}); {s['model']}, {s['n_params']} params; "
        f"{s['train_chars']} training characters from {s['train_files']} files, {s['valid_chars']} validation "
        f"characters from {s['valid_files']} other files; vocabulary of {s['vocab_size']} ids; "
        f"{s['steps']} steps of {s['batch']} streams x {s['chunk']} characters, Adam {s['lr']} "
        f"(cosine to {s['lr'] * s['final_lr_fraction']:g}), clip {s['clip']}. "
        f"Wall time {result['wall_seconds']:.0f} s (process CPU time {result['process_cpu_seconds']:.0f} s), "
        f"measured under load on a {result['platform']['cpu_count']}-core CPU (load average "
        f"{result['load_average_at_start'][0]:.1f} at the start, {result['load_average_at_end'][0]:.1f} at the end).",
        "",
        markdown_table(rows, header, align="l" + "r" * (len(header) - 1)),
    ]
    lines += ["", f"Samples (start symbol a newline, prime `{PRIME}`, {s['sample_length']} characters; "
                  f"{text.UNKNOWN} is the unknown symbol):", ""]
    for t, sample in result["samples"].items():
        lines += [f"## temperature {t}", "", "```python", sample, "```", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny corpus and a few steps, for the tests")
    parser.add_argument("--out", help="output folder (default experiments/results/char_rnn/, "
                                      "runs/char_rnn-quick/ with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="file split, init, stream offsets and samples")
    parser.add_argument("--steps", type=int, help=f"train steps (default {FULL['steps']}, {QUICK['steps']} with --quick)")
    args = parser.parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    if args.quick:
        # Tiny models run in no time; compiling them is what takes time, so compile with less optimisation.
        jax.config.update("jax_disable_most_optimizations", True)
    if args.steps:
        settings["steps"] = args.steps
    out = args.out or str(default_out("char_rnn", args.quick))
    os.makedirs(out, exist_ok=True)
    wall, cpu, load_at_start = time.perf_counter(), time.process_time(), list(os.getloadavg())

    # The corpus, the vocabulary and the baseline.
    corpus = text.stdlib_corpus(settings["max_chars"], settings["valid_fraction"], seed=args.seed)
    vocab = text.build_vocabulary(corpus.train, MIN_COUNT)
    train_ids, valid_ids = text.encode(vocab, corpus.train), text.encode(vocab, corpus.valid)
    unigram = text.unigram_bits(train_ids, valid_ids, vocab.size)
    print(f"corpus: Python {platform.python_version()} standard library, {len(train_ids)} training characters "
          f"({len(corpus.train_files)} files), {len(valid_ids)} validation characters ({len(corpus.valid_files)} "
          f"other files); {vocab.size} ids ({np.mean(valid_ids == 0):.4%} of validation characters unknown)")
    print(f"unigram baseline: {unigram:.4f} bits per character on the validation text")

    # The model and the truncated-BPTT step.
    V, B, K = vocab.size, settings["batch"], settings["chunk"]
    model = build_model(settings["hidden"], V)
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(args.seed), V)
    n_params = sum(int(np.prod(l.shape)) for l in jax.tree.leaves(params))
    schedule = optax.cosine_decay_schedule(settings["lr"], settings["steps"], alpha=settings["final_lr_fraction"])
    optimizer = optax.chain(optax.clip_by_global_norm(settings["clip"]), optax.adam(schedule))
    opt_state = optimizer.init(params)
    step = make_tbptt_step(model, softmax_cross_entropy, optimizer)
    one_hot = jax.jit(lambda ids: jax.nn.one_hot(ids, V, dtype=jnp.float32))
    print(f"model: LSTM {settings['hidden']} -> dense {V} on one-hot characters ({n_params} params); "
          f"{B} streams x {K} characters per step, {settings['steps']} steps; Adam {settings['lr']} (cosine), "
          f"clip {settings['clip']}")

    def evaluate(params):
        return language_model.stream_bits_per_char(model, params, valid_ids, V, batch_size=settings["eval_batch"], chunk_size=K)

    curve = {"step": [], "train_bits": [], "valid_bits": [], "seconds": []}  # train_bits: mean since the last point
    train_curve = {"step": [], "bits": []}  # mean over each log_every steps
    offsets = np.random.default_rng([args.seed, 1])
    epoch, chunks, index, since = 0, None, 0, []
    train_start = time.perf_counter()
    for i in range(1, settings["steps"] + 1):
        if chunks is None or index == len(chunks[0]):  # a new pass over the text: a new offset, zero carries
            shift = int(offsets.integers(0, K)) if epoch else 0
            chunks = [np.asarray(a) for a in stream_batches(train_ids[shift:], B, K)]
            carry, index, epoch = batch_initial_carry(model, params, B), 0, epoch + 1
        batch = Batch(one_hot(chunks[0][index]), jnp.asarray(chunks[1][index], jnp.int32))
        params, opt_state, carry, metrics = step(params, opt_state, carry, batch)
        index += 1
        since.append(metrics["loss"])
        if i % settings["log_every"] == 0:
            train_curve["step"].append(i)
            train_curve["bits"].append(float(np.mean(jax.device_get(since[-settings["log_every"]:]))) / np.log(2))
        if i % settings["eval_every"] == 0 or i == settings["steps"]:
            valid_bits, valid_count = evaluate(params)
            curve["step"].append(i)
            curve["train_bits"].append(float(np.mean(jax.device_get(since))) / np.log(2))
            curve["valid_bits"].append(valid_bits)
            curve["seconds"].append(time.perf_counter() - train_start)
            since = []
            print(f"step {i:5d}  pass {epoch}  train {curve['train_bits'][-1]:.4f}  valid {valid_bits:.4f} bits/char"
                  f"  ({curve['seconds'][-1]:.0f} s)", flush=True)
    train_seconds = time.perf_counter() - train_start

    rows = [
        ["unigram (add-one smoothed training frequencies)", f"{text.unigram_bits(train_ids, train_ids, V):.4f}",
         f"{unigram:.4f}"],
        [f"LSTM {settings['hidden']}, truncated BPTT (K = {K})", f"{curve['train_bits'][-1]:.4f}",
         f"{curve['valid_bits'][-1]:.4f}"],
    ]
    header = ["model", "train bits/char", "validation bits/char"]
    print()
    print(table(rows, header))
    print(f"(training: mean over the chunks of steps {curve['step'][-2] + 1 if len(curve['step']) > 1 else 1} to "
          f"{curve['step'][-1]}; validation: all "
          f"{valid_count} predicted characters of the unseen files, read statefully in {settings['eval_batch']} "
          f"streams)")

    samples = {}
    sample_start = time.perf_counter()
    for j, temperature in enumerate(TEMPERATURES):
        samples[str(temperature)] = language_model.sample(model, params, vocab, PRIME, settings["sample_length"],
                                                temperature=temperature, key=jax.random.key(args.seed * 100 + j),
                                                start=START)
        print(f"\n--- sample at temperature {temperature} ---\n{samples[str(temperature)]}")
    sample_seconds = time.perf_counter() - sample_start

    plot_learning_curve(curve, train_curve, settings["log_every"], unigram, os.path.join(out, "learning_curve.png"))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    result = {
        "command": command_line(__file__, argv),
        "seed": args.seed,
        "settings": {**settings, "quick": args.quick, "min_count": MIN_COUNT, "vocab_size": V,
                     "vocab_symbols": vocab.symbols, "train_chars": len(train_ids), "valid_chars": len(valid_ids),
                     "train_files": len(corpus.train_files), "valid_files": len(corpus.valid_files),
                     "model": f"serial(recurrent(lstm({settings['hidden']})), dense({V}))", "n_params": n_params,
                     "optimizer": "clip_by_global_norm then adam with cosine_decay_schedule", "dtype": "float32",
                     "prime": PRIME, "start": START, "temperatures": list(TEMPERATURES)},
        "unigram_valid_bits": unigram,
        "unigram_train_bits": text.unigram_bits(train_ids, train_ids, V),
        "valid_bits": curve["valid_bits"][-1],
        "valid_chars_scored": valid_count,
        "train_bits": curve["train_bits"][-1],
        "passes_over_training_text": epoch,
        "curve": curve,
        "train_curve": train_curve,
        "samples": samples,
        "valid_files": list(corpus.valid_files),
        "train_seconds": train_seconds,
        "sample_seconds": sample_seconds,
        "wall_seconds": wall,
        "process_cpu_seconds": cpu,
        "load_average_at_start": load_at_start,
        "load_average_at_end": list(os.getloadavg()),
        "platform": {"python": platform.python_version(), "jax": jax.__version__, "cpu_count": os.cpu_count(),
                     "backend": jax.default_backend()},
    }
    write_results(out, result, markdown(result, rows, header))
    print(f"\nwall time {wall:.1f} s, process CPU time {cpu:.1f} s (load average {os.getloadavg()[0]:.1f}); "
          f"outputs in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

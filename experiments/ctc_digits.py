"""Connectionist temporal classification on synthetic spoken digits: no alignment is given.

The task (a speech-like toy, generated with a seeded NumPy generator):

- each example is a string of 1 to 6 digits (0-9, uniform);
- each digit is "spoken" for 3 to 8 frames (uniform) of ``FEATURES = 16``
  features: a fixed per-digit pattern, drawn once, that moves linearly from
  an onset vector to an offset vector over the digit's frames, plus Gaussian
  noise (standard deviation ``NOISE``). The onset-to-offset movement is what
  tells two equal digits in a row apart when no silence separates them;
- before each digit, and after the last, there is a pause of 1 to 3 frames
  of silence (noise around zero) with probability 1/2;
- sequences are padded to the longest possible (69 frames) and carry their
  length; the targets are the digits only, never their frames.

The network reads the frames and emits at each one a distribution over 11
classes: blank (0) and the digits (digit d is class d + 1)::

    serial(bidirectional(lstm(H)), bidirectional(lstm(H)), dense(11))

and is trained with :func:`scanrnn.ctc.ctc_loss` of each example, under
``jax.vmap`` with the per-example frame and label lengths (the mean over a
minibatch), Adam and gradient clipping, in a jit-compiled step. Held-out
examples are decoded with best-path (greedy) decoding and prefix beam
search; the label error rate is the summed edit distance over the summed
label length of the held-out set (Graves et al., 2006).

    python experiments/ctc_digits.py            # the full study, about 2 minutes on 2 CPU cores
    python experiments/ctc_digits.py --quick    # tiny data and a few steps, for the tests
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import scanrnn as sr  # noqa: E402
from scanrnn.ctc import ctc_beam_search, ctc_greedy_decode, ctc_loss, edit_distance, label_error_rate  # noqa: E402
from benchmarks.common import command_line, default_out, markdown_table, table, write_results  # noqa: E402

FEATURES = 16
NUM_DIGITS = (1, 6)  # digits per example, inclusive
DIGIT_FRAMES = (3, 8)  # frames per digit, inclusive
PAUSE_FRAMES = (1, 3)  # frames of a pause, inclusive
PAUSE_PROB = 0.5
NOISE = 1.0
BLANK = 0
NUM_CLASSES = 11  # blank + 10 digits
MAX_FRAMES = NUM_DIGITS[1] * (DIGIT_FRAMES[1] + PAUSE_FRAMES[1]) + PAUSE_FRAMES[1]

FULL = dict(train=8000, test=500, hidden=48, steps=1500, batch=32, lr=3e-3, clip=1.0, eval_every=100, beam=8)
QUICK = dict(train=64, test=16, hidden=8, steps=6, batch=16, lr=3e-3, clip=1.0, eval_every=3, beam=4)


# --------------------------------------------------------------------------
# Data.


def digit_patterns(seed: int) -> np.ndarray:
    """``[10, 2, FEATURES]``: each digit's onset and offset vectors, fixed for the whole task."""
    return np.random.default_rng([seed, 0]).standard_normal((10, 2, FEATURES))


def make_digits(n: int, patterns: np.ndarray, rng: np.random.Generator) -> dict:
    """``n`` examples: frames ``x [n, MAX_FRAMES, F]`` float32, ``length [n]``, labels ``[n, 6]`` and more.

    ``labels`` holds the classes (digit + 1) padded with the blank, ``label_length``
    their number, ``segments`` per example the ``(first frame, end frame, digit)``
    of each spoken digit (for the plots only; training never sees them).
    """
    x = np.zeros((n, MAX_FRAMES, FEATURES), np.float32)
    length = np.zeros(n, np.int32)
    labels = np.full((n, NUM_DIGITS[1]), BLANK, np.int32)
    label_length = np.zeros(n, np.int32)
    segments = []
    for i in range(n):
        digits = rng.integers(0, 10, size=rng.integers(NUM_DIGITS[0], NUM_DIGITS[1] + 1))
        frames, spans, t = [], [], 0
        for d in list(digits) + [None]:
            if rng.random() < PAUSE_PROB:
                pause = rng.integers(PAUSE_FRAMES[0], PAUSE_FRAMES[1] + 1)
                frames.append(np.zeros((pause, FEATURES)))
                t += pause
            if d is None:
                break
            k = rng.integers(DIGIT_FRAMES[0], DIGIT_FRAMES[1] + 1)
            s = np.linspace(0.0, 1.0, k)[:, None]
            frames.append((1 - s) * patterns[d, 0] + s * patterns[d, 1])
            spans.append((int(t), int(t + k), int(d)))
            t += k
        clean = np.concatenate(frames)
        x[i, :t] = clean + NOISE * rng.standard_normal(clean.shape)
        length[i] = t
        labels[i, : len(digits)] = digits + 1
        label_length[i] = len(digits)
        segments.append(spans)
    return {"x": x, "length": length, "labels": labels, "label_length": label_length, "segments": segments}


def take(data: dict, index) -> dict:
    return {k: v[index] for k, v in data.items() if k != "segments"}


# --------------------------------------------------------------------------
# Model, loss and the train step.


def build_model(hidden: int) -> sr.Layer:
    return sr.serial(sr.bidirectional(sr.lstm(hidden)), sr.bidirectional(sr.lstm(hidden)), sr.dense(NUM_CLASSES))


def batch_logits(model, params, x, length):
    return jax.vmap(model.apply, in_axes=(None, 0, 0))(params, x, length)


def batch_ctc(model, params, batch):
    """Mean over the batch of each example's CTC loss (its own frame and label lengths)."""
    logits = batch_logits(model, params, batch["x"], batch["length"])
    losses = jax.vmap(lambda l, y, t, n: ctc_loss(l, y, logit_length=t, label_length=n, blank=BLANK))(
        logits, batch["labels"], batch["length"], batch["label_length"]
    )
    return jnp.mean(losses)


def make_step(model, optimizer):
    @jax.jit
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(lambda p: batch_ctc(model, p, batch))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def make_evaluate(model):
    @jax.jit
    def evaluate(params, batch):
        logits = batch_logits(model, params, batch["x"], batch["length"])
        losses = jax.vmap(lambda l, y, t, n: ctc_loss(l, y, logit_length=t, label_length=n, blank=BLANK))(
            logits, batch["labels"], batch["length"], batch["label_length"]
        )
        decoded, count = jax.vmap(lambda l, t: ctc_greedy_decode(l, logit_length=t, blank=BLANK))(
            logits, batch["length"]
        )
        return jnp.mean(losses), logits, decoded, count

    return evaluate


def targets_of(data: dict) -> list:
    return [list(y[:n]) for y, n in zip(data["labels"], data["label_length"])]


def greedy_labellings(decoded, count) -> list:
    return [list(d[:c]) for d, c in zip(np.asarray(decoded), np.asarray(count))]


def sequence_error_rate(predictions, targets) -> float:
    return float(np.mean([list(p) != list(t) for p, t in zip(predictions, targets)]))


# --------------------------------------------------------------------------
# Plots and the table.


def plot_probabilities(x, probs, segments, title, path):
    from matplotlib.figure import Figure

    t = len(probs)
    fig = Figure(figsize=(8, 5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1.4))
    top.imshow(x.T, aspect="auto", origin="lower", cmap="coolwarm", extent=(-0.5, t - 0.5, -0.5, FEATURES - 0.5))
    top.set_ylabel("feature")
    top.set_title(title)
    colors = matplotlib.colormaps["tab10"]
    bottom.plot(np.arange(t), probs[:, BLANK], color="0.6", linestyle="--", label="blank")
    for start, end, d in segments:
        bottom.axvspan(start - 0.5, end - 0.5, color=colors(d), alpha=0.15)
        for edge in (start - 0.5, end - 0.5):
            top.axvline(edge, color="k", linewidth=0.8)
        top.text((start + end - 1) / 2, FEATURES - 1.5, str(d), ha="center", va="top", fontsize=11, weight="bold")
    for d in range(10):
        if probs[:, d + 1].max() > 0.05:
            bottom.plot(np.arange(t), probs[:, d + 1], color=colors(d), label=f"digit {d}")
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_xlabel("frame (lines above, shading below: the true digit segments, never shown to the network)")
    bottom.set_ylabel("softmax probability")
    bottom.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.savefig(path, dpi=100)


def plot_learning_curve(curve, path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    steps = np.asarray(curve["step"])
    left.plot(steps, curve["train_loss"], "b.-", label="training (mean since the last point)")
    left.plot(steps, curve["test_loss"], "r.-", label="held out")
    left.set_yscale("log")
    left.set_xlabel("step")
    left.set_ylabel("CTC loss (nats per example)")
    left.grid(True)
    left.legend(fontsize=8)
    right.plot(steps, 100 * np.asarray(curve["test_greedy_ler"]), "k.-")
    right.axhline(5, color="0.5", linestyle=":", label="5%")
    right.set_yscale("log")
    # Plain numbers on the log axes, not powers of ten (minor ticks labelled on the one-decade axis only).
    left.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    left.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    right.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    right.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    right.set_xlabel("step")
    right.set_ylabel("held-out label error rate, greedy (%)")
    right.grid(True)
    right.legend(fontsize=8)
    fig.savefig(path, dpi=100)


def decoder_table(decoders: dict, labels: int) -> tuple:
    """``(rows, header)``: each decoder's label error rate, edit distance and wrong sequences on the held-out set."""
    rows = [[name, f"{100 * r['label_error_rate']:.2f}%", f"{r['edit_distance']} / {labels}",
             f"{100 * r['sequence_error_rate']:.2f}%"] for name, r in decoders.items()]
    return rows, ["decoder (held out)", "label error rate", "edit distance / labels", "sequences wrong"]


def markdown(result) -> str:
    """results.md: the settings and the decoders' table."""
    s = result["settings"]
    return "\n".join([
        "# CTC on synthetic spoken digits: held-out label error rate",
        "",
        f"`{result['command']}` (seed {result['seed']}): {s['train']} training and {s['test']} held-out examples "
        f"of {s['num_digits'][0]}-{s['num_digits'][1]} digits, {s['features']} features, noise {s['noise']}; "
        f"{s['model']} ({s['n_params']} params), {s['steps']} steps of batch {s['batch']}, {s['optimizer']} "
        f"{s['lr']}. Held-out CTC loss {result['test_loss']:.4f}; greedy and beam search differ on "
        f"{result['greedy_beam_disagreements']} examples. Wall time {result['wall_seconds']:.0f} s (process CPU "
        f"time {result['process_cpu_seconds']:.0f} s).",
        "",
        markdown_table(*decoder_table(result["decoders"], result["test_labels"])),
        "",
        "Plots: `learning_curve.png` (CTC loss and held-out greedy label error rate against steps), "
        "`frame_probabilities.png` (one held-out example's frames and per-frame class probabilities).",
        "",
    ])


# --------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data and a few steps, for the tests")
    parser.add_argument("--out", help="output folder (default experiments/results/ctc_digits/, "
                                      "runs/ctc_digits-quick/ with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="data, init and minibatches")
    parser.add_argument("--steps", type=int,
                        help=f"train steps (default {FULL['steps']}, {QUICK['steps']} with --quick)")
    args = parser.parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    if args.quick:
        # Tiny models run in no time; compiling them is what takes time, so compile with less optimisation.
        jax.config.update("jax_disable_most_optimizations", True)
    if args.steps:
        settings["steps"] = args.steps
    out = args.out or str(default_out("ctc_digits", args.quick))
    os.makedirs(out, exist_ok=True)
    wall, cpu = time.perf_counter(), time.process_time()

    patterns = digit_patterns(args.seed)
    rng = np.random.default_rng([args.seed, 1])
    train = make_digits(settings["train"], patterns, rng)
    test = make_digits(settings["test"], patterns, rng)
    print(f"spoken digits: {settings['train']} train / {settings['test']} held-out examples of 1-6 digits, "
          f"3-8 frames each, {FEATURES} features, noise {NOISE}; up to {MAX_FRAMES} frames "
          f"(mean {train['length'].mean():.1f}), mean {train['label_length'].mean():.2f} digits")

    model = build_model(settings["hidden"])
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(args.seed), FEATURES)
    n_params = sum(int(np.prod(l.shape)) for l in jax.tree.leaves(params))
    optimizer = optax.chain(optax.clip_by_global_norm(settings["clip"]), optax.adam(settings["lr"]))
    opt_state = optimizer.init(params)
    step, evaluate = make_step(model, optimizer), make_evaluate(model)
    test_batch = take(test, slice(None))
    targets = targets_of(test)
    print(f"model: bidirectional LSTM {settings['hidden']} x 2 layers -> dense {NUM_CLASSES} ({n_params} params); "
          f"Adam {settings['lr']}, clip {settings['clip']}, batch {settings['batch']}, {settings['steps']} steps")

    curve = {"step": [], "train_loss": [], "test_loss": [], "test_greedy_ler": []}
    batch_rng = np.random.default_rng([args.seed, 2])
    order, cursor, since = batch_rng.permutation(settings["train"]), 0, []
    train_start = time.perf_counter()
    for i in range(1, settings["steps"] + 1):
        if cursor + settings["batch"] > len(order):  # a new epoch: reshuffle, drop the ragged end
            order, cursor = batch_rng.permutation(settings["train"]), 0
        batch = take(train, order[cursor : cursor + settings["batch"]])
        cursor += settings["batch"]
        params, opt_state, loss = step(params, opt_state, batch)
        since.append(loss)
        if i % settings["eval_every"] == 0 or i == settings["steps"]:
            test_loss, _, decoded, count = evaluate(params, test_batch)
            ler = label_error_rate(greedy_labellings(decoded, count), targets)
            curve["step"].append(i)
            curve["train_loss"].append(float(np.mean(np.asarray(since))))
            curve["test_loss"].append(float(test_loss))
            curve["test_greedy_ler"].append(ler)
            since = []
            print(f"step {i:5d}  train loss {curve['train_loss'][-1]:8.4f}  held-out loss {float(test_loss):8.4f}  "
                  f"greedy LER {100 * ler:6.2f}%  ({time.perf_counter() - train_start:.0f} s)", flush=True)
    train_seconds = time.perf_counter() - train_start

    # Decode the held-out set.
    test_loss, logits, decoded, count = evaluate(params, test_batch)
    logits = np.asarray(logits)
    greedy = greedy_labellings(decoded, count)
    start = time.perf_counter()
    beams = [
        ctc_beam_search(l, beam_width=settings["beam"], logit_length=int(t), blank=BLANK).labels[0].tolist()
        for l, t in zip(logits, test["length"])
    ]
    beam_seconds = time.perf_counter() - start
    decoders = {
        "greedy (best path)": greedy,
        f"prefix beam search, width {settings['beam']}": beams,
    }
    results = {}
    for name, predictions in decoders.items():
        results[name] = {
            "label_error_rate": label_error_rate(predictions, targets),
            "edit_distance": int(sum(edit_distance(p, t) for p, t in zip(predictions, targets))),
            "sequence_error_rate": sequence_error_rate(predictions, targets),
        }
    total_labels = int(sum(len(t) for t in targets))
    disagreements = int(sum(g != b for g, b in zip(greedy, beams)))
    print()
    print(table(*decoder_table(results, total_labels)))
    print(f"held-out CTC loss {float(test_loss):.4f}; greedy and beam differ on {disagreements} of "
          f"{len(targets)} examples; beam search took {beam_seconds:.1f} s (NumPy)")

    # Plots: one held-out example with at least four digits (the first one), and the learning curve.
    index = next((i for i, n in enumerate(test["label_length"]) if n >= 4), 0)
    n = int(test["length"][index])
    probs = np.asarray(jax.nn.softmax(logits[index, :n], axis=-1))
    digits = "".join(str(c - 1) for c in targets[index])
    title = (f"held-out example {index}: digits {digits}; greedy "
             f"{''.join(str(c - 1) for c in greedy[index]) or '(none)'}, beam "
             f"{''.join(str(c - 1) for c in beams[index]) or '(none)'}")
    plot_probabilities(test["x"][index, :n], probs, test["segments"][index], title,
                       os.path.join(out, "frame_probabilities.png"))
    plot_learning_curve(curve, os.path.join(out, "learning_curve.png"))

    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    greedy_ler = results["greedy (best path)"]["label_error_rate"]
    beam_ler = results[f"prefix beam search, width {settings['beam']}"]["label_error_rate"]
    result = {
        "command": command_line(__file__, argv),
        "seed": args.seed,
        "settings": {**settings, "quick": args.quick, "features": FEATURES, "num_digits": NUM_DIGITS,
                     "digit_frames": DIGIT_FRAMES, "pause_frames": PAUSE_FRAMES, "pause_prob": PAUSE_PROB,
                     "noise": NOISE, "max_frames": MAX_FRAMES, "blank": BLANK, "num_classes": NUM_CLASSES,
                     "model": f"serial(bidirectional(lstm({settings['hidden']})) x 2, dense({NUM_CLASSES}))",
                     "n_params": n_params, "optimizer": "clip_by_global_norm then adam", "dtype": "float32"},
        "test_loss": float(test_loss),
        "test_labels": total_labels,
        "decoders": results,
        "greedy_label_error_rate": greedy_ler,
        "beam_label_error_rate": beam_ler,
        "below_5_percent": {"greedy": bool(greedy_ler < 0.05), "beam": bool(beam_ler < 0.05)},
        "greedy_beam_disagreements": disagreements,
        "curve": curve,
        "plotted_example": {"index": index, "digits": digits, "segments": test["segments"][index]},
        "train_seconds": train_seconds,
        "beam_search_seconds": beam_seconds,
        "wall_seconds": wall,
        "process_cpu_seconds": cpu,
        "platform": {"python": platform.python_version(), "jax": jax.__version__, "cpu_count": os.cpu_count(),
                     "backend": jax.default_backend()},
    }
    write_results(out, result, markdown(result))
    print(f"\nwall time {wall:.1f} s, process CPU time {cpu:.1f} s; outputs in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

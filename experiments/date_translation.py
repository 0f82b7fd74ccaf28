"""Translating human-written dates into ISO form, with and without attention, greedy and beam decoding.

The task (:mod:`scanrnn.data.dates`, character level): a date from 1950-2049 in
one of 14 formats ("22 Nov 2026", "november 22, 2026", "2026/11/22",
"Sunday, 22 November 2026", "22.11.26", "11/22/2026", "22nd of November
2026", ...), in its written, lower or upper case, goes to "2026-11-22".
The calendar is split at random: 10 % of the dates are held out and never
appear in training, in any format; the held-out set writes them in random
formats and cases.

Three models share everything but the attention, all with a bidirectional
GRU encoder (64 units per direction, so a memory of 128) over 32-dimensional
character embeddings and a GRU decoder (128 units) whose initial state is
the learned bridge from the encoder (:mod:`scanrnn.seq2seq`):

- no attention: the decoder sees the source only through its initial state;
- additive attention (Bahdanau et al. 2015), attention size 64;
- multiplicative attention, Luong et al.'s (2015) "general" ``q^T W m``.

Each is trained with teacher forcing (mean cross-entropy per target token,
Adam with a cosine-decayed step size and gradient clipping) and decoded on
the held-out set greedily and with beam search (GNMT length normalisation).
The score is exact-sequence accuracy: the decoded string, up to the end
token, equals the ISO date.

    python experiments/date_translation.py            # the full study, a few minutes on 2 CPU cores
    python experiments/date_translation.py --quick    # tiny models and a few steps, for the tests
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
from scanrnn.data import dates  # noqa: E402
from scanrnn.seq2seq import additive_attention, beam_decode, general_attention, greedy_decode, seq2seq  # noqa: E402
from benchmarks.common import command_line, default_out, markdown_table, table, write_results  # noqa: E402

FULL = dict(train=50000, test=2000, embed=32, encoder=64, decoder=128, attention=64, steps=1000, batch=64,
            lr=3e-3, clip=1.0, beam=4, alpha=0.6, eval_every=250, held_out=0.1, plot_examples=4)
QUICK = dict(train=512, test=64, embed=8, encoder=8, decoder=16, attention=8, steps=12, batch=32,
             lr=3e-3, clip=1.0, beam=2, alpha=0.6, eval_every=6, held_out=0.1, plot_examples=2)
MODELS = ("no attention", "additive", "multiplicative (general)")
MAX_DECODE = dates.TARGET_LENGTH + 1  # one step more than any target: a model that does not stop shows it


def build_model(name: str, s: dict):
    attention = {
        "no attention": None,
        "additive": additive_attention(s["attention"]),
        "multiplicative (general)": general_attention(),
    }[name]
    encoder = sr.serial(sr.bidirectional(sr.gru(s["encoder"])))
    return seq2seq(encoder, sr.gru(s["decoder"]), src_vocab_size=dates.SOURCE_VOCAB,
                   tgt_vocab_size=dates.TARGET_VOCAB, embed_size=s["embed"], attention=attention,
                   start_token=dates.START, end_token=dates.END)


def batch_loss(model, params, src, src_length, tgt):
    tgt_length = jnp.full(src.shape[:1], dates.TARGET_LENGTH)
    return jnp.mean(jax.vmap(model.loss, in_axes=(None, 0, 0, 0, 0))(params, src, src_length, tgt, tgt_length))


def make_step(model, optimizer):
    @jax.jit
    def step(params, opt_state, src, src_length, tgt):
        loss, grads = jax.value_and_grad(lambda p: batch_loss(model, p, src, src_length, tgt))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def make_decoders(model, s):
    greedy = jax.jit(jax.vmap(lambda p, x, n: greedy_decode(model, p, x, n, max_length=MAX_DECODE),
                              in_axes=(None, 0, 0)))
    beam = jax.jit(jax.vmap(lambda p, x, n: beam_decode(model, p, x, n, beam_width=s["beam"], max_length=MAX_DECODE,
                                                        alpha=s["alpha"]), in_axes=(None, 0, 0)))
    return greedy, beam


def accuracy(tokens, test: dates.DateExamples) -> tuple[float, list]:
    """Exact-sequence accuracy and the decoded strings."""
    decoded = [dates.decode_target(t) for t in np.asarray(tokens)]
    return float(np.mean([d == iso for d, iso in zip(decoded, test.iso)])), decoded


def plot_attention(examples, path):
    """``examples``: (title, source text, output text, weights [output steps, source steps]) per panel."""
    from matplotlib.figure import Figure

    n = len(examples)
    cols = 2
    rows = -(-n // cols)
    fig = Figure(figsize=(6.5 * cols, 3.2 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).reshape(-1)
    for ax, (title, text, out, weights) in zip(axes, examples):
        ax.imshow(weights, aspect="auto", cmap="Greys", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(len(text)), [c if c != " " else "\u2423" for c in text], fontsize=8)
        ax.set_yticks(range(len(out)), list(out), fontsize=8)
        ax.set_xlabel("source character")
        ax.set_ylabel("output character")
        ax.set_title(title, fontsize=9)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.savefig(path, dpi=100)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models and a few steps, for the tests")
    parser.add_argument("--out", help="output folder (default experiments/results/date_translation/, "
                                      "runs/date_translation-quick/ with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="calendar split, examples, init and minibatches")
    parser.add_argument("--steps", type=int, help=f"train steps per model (default {FULL['steps']}, "
                                                  f"{QUICK['steps']} with --quick)")
    args = parser.parse_args(argv)
    s = dict(QUICK if args.quick else FULL)
    if args.quick:
        # Tiny models run in no time; compiling them is what takes time, so compile with less optimisation.
        jax.config.update("jax_disable_most_optimizations", True)
    if args.steps:
        s["steps"] = args.steps
    out = args.out or str(default_out("date_translation", args.quick))
    os.makedirs(out, exist_ok=True)
    wall, cpu = time.perf_counter(), time.process_time()
    load_before = os.getloadavg()

    train_dates, test_dates = dates.split_dates(np.random.default_rng([args.seed, 0]), s["held_out"])
    train = dates.make_examples(train_dates, s["train"], np.random.default_rng([args.seed, 1]))
    test = dates.make_examples(test_dates, s["test"], np.random.default_rng([args.seed, 2]))
    assert not set(test.iso) & set(train.iso)
    print(f"dates {dates.FIRST} to {dates.LAST}: {len(train_dates)} training dates, {len(test_dates)} held out; "
          f"{s['train']} training examples, {s['test']} held-out examples; {len(dates.FORMATS)} formats x "
          f"{len(dates.CASES)} cases; source up to {dates.MAX_SOURCE_LENGTH} characters, target "
          f"{dates.TARGET_LENGTH} tokens")

    test_src, test_len = jnp.asarray(test.src), jnp.asarray(test.src_length)
    results, curves, trained = {}, {}, {}
    for index, name in enumerate(MODELS):
        model = build_model(name, s)
        # Eagerly: the three models share most of their initialisers' shapes, so each of those few ops is
        # compiled once for all of them (a compiled init is one program per model). The same numbers either way.
        params = model.init(jax.random.key(args.seed))
        n_params = sum(int(np.prod(l.shape)) for l in jax.tree.leaves(params))
        schedule = optax.cosine_decay_schedule(s["lr"], s["steps"], alpha=0.05)
        optimizer = optax.chain(optax.clip_by_global_norm(s["clip"]), optax.adam(schedule))
        opt_state = optimizer.init(params)
        step = make_step(model, optimizer)
        greedy, beam = make_decoders(model, s)
        rng = np.random.default_rng([args.seed, 3, index])
        curve = {"step": [], "train_loss": [], "held_out_greedy_accuracy": []}
        since, start = [], time.perf_counter()
        for i in range(1, s["steps"] + 1):
            idx = rng.integers(0, s["train"], s["batch"])
            params, opt_state, loss = step(params, opt_state, train.src[idx], train.src_length[idx], train.tgt[idx])
            since.append(loss)
            if i % s["eval_every"] == 0 or i == s["steps"]:
                acc, _ = accuracy(greedy(params, test_src, test_len).tokens, test)
                curve["step"].append(i)
                curve["train_loss"].append(float(np.mean(np.asarray(since))))
                curve["held_out_greedy_accuracy"].append(acc)
                since = []
                print(f"{name:26s} step {i:5d}  train loss {curve['train_loss'][-1]:.4f}  held-out greedy accuracy "
                      f"{100 * acc:6.2f}%  ({time.perf_counter() - start:.0f} s)", flush=True)
        train_seconds = time.perf_counter() - start

        start = time.perf_counter()
        g = greedy(params, test_src, test_len)
        greedy_acc, greedy_strings = accuracy(g.tokens, test)
        greedy_seconds = time.perf_counter() - start
        start = time.perf_counter()
        b = beam(params, test_src, test_len)
        beam_acc, beam_strings = accuracy(b.tokens[:, 0], test)
        beam_seconds = time.perf_counter() - start
        per_format = {}
        for fmt in dates.FORMAT_NAMES:
            rows = [i for i, f in enumerate(test.fmt) if f == fmt]
            if rows:
                per_format[fmt] = {"examples": len(rows),
                                   "greedy": float(np.mean([greedy_strings[i] == test.iso[i] for i in rows])),
                                   "beam": float(np.mean([beam_strings[i] == test.iso[i] for i in rows]))}
        errors = [{"source": test.text[i], "target": test.iso[i], "greedy": greedy_strings[i], "beam": beam_strings[i]}
                  for i in range(len(test.iso)) if greedy_strings[i] != test.iso[i] or beam_strings[i] != test.iso[i]]
        results[name] = {
            "params": n_params,
            "greedy_accuracy": greedy_acc,
            "beam_accuracy": beam_acc,
            "greedy_beam_disagreements": int(sum(a != c for a, c in zip(greedy_strings, beam_strings))),
            "train_seconds": train_seconds,
            "greedy_decode_seconds": greedy_seconds,
            "beam_decode_seconds": beam_seconds,
            "per_format": per_format,
            "errors": errors[:20],
        }
        curves[name] = curve
        trained[name] = (jax.jit(model.apply), params, greedy_strings)

    header = ["model (held out)", "params", "greedy exact", f"beam {s['beam']} exact", "greedy != beam",
              "train s"]
    rows = [[name, r["params"], f"{100 * r['greedy_accuracy']:.2f}%", f"{100 * r['beam_accuracy']:.2f}%",
             r["greedy_beam_disagreements"], f"{r['train_seconds']:.0f}"] for name, r in results.items()]
    print()
    print(table(rows, header))
    format_rows = [[fmt] + [f"{100 * results[m]['per_format'][fmt]['greedy']:.1f}%" for m in MODELS]
                   for fmt in dates.FORMAT_NAMES if fmt in results[MODELS[0]]["per_format"]]
    format_header = ["format (greedy, held out)"] + list(MODELS)
    print()
    print(table(format_rows, format_header))

    # Attention maps: the first held-out examples of distinct formats, decoded greedily.
    panels, seen = [], set()
    for i, fmt in enumerate(test.fmt):
        if fmt in seen or len(panels) >= 2 * s["plot_examples"]:
            continue
        seen.add(fmt)
        for name in ("additive", "multiplicative (general)"):
            apply, params, strings = trained[name]
            n = int(test.src_length[i])
            decoded = strings[i]
            tokens = dates.encode_target(decoded) if all(c in dates.TARGET_CHARS for c in decoded) else None
            if tokens is None:
                continue
            weights = np.asarray(apply(params, test_src[i], test_len[i], jnp.asarray(tokens)).weights)
            truth = "" if decoded == test.iso[i] else f" (true {test.iso[i]})"
            panels.append((f"{name}: {test.text[i]!r} -> {decoded}{truth}", test.text[i], decoded + "$",
                           weights[:, :n]))
    plot_attention(panels[: 2 * s["plot_examples"]], os.path.join(out, "attention.png"))

    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    result = {
        "command": command_line(__file__, argv),
        "seed": args.seed,
        "settings": {**s, "quick": args.quick, "formats": list(dates.FORMAT_NAMES), "cases": list(dates.CASES),
                     "dates": [str(dates.FIRST), str(dates.LAST)], "training_dates": len(train_dates),
                     "held_out_dates": len(test_dates), "max_decode_length": MAX_DECODE,
                     "encoder": f"serial(bidirectional(gru({s['encoder']})))", "decoder": f"gru({s['decoder']})",
                     "length_penalty": "((5 + |Y|) / 6) ** alpha (Wu et al. 2016)",
                     "optimizer": "clip_by_global_norm then adam, cosine-decayed step size", "dtype": "float32"},
        "models": results,
        "curves": curves,
        "wall_seconds": wall,
        "process_cpu_seconds": cpu,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "platform": {"python": platform.python_version(), "jax": jax.__version__, "cpu_count": os.cpu_count(),
                     "backend": jax.default_backend()},
    }
    write_results(out, result, "".join([
        "# Date translation: held-out exact-sequence accuracy\n\n",
        f"Command `{result['command']}`, seed {args.seed}; {s['train']} training examples, {s['test']} held-out "
        f"examples of {len(test_dates)} dates never seen in training; {s['steps']} steps of batch "
        f"{s['batch']} per model; beam width {s['beam']}, alpha {s['alpha']}.\n\n",
        markdown_table(rows, header) + "\n\n",
        markdown_table(format_rows, format_header) + "\n\n",
        f"Wall time {wall:.0f} s, process CPU time {cpu:.0f} s (load average {load_before[0]:.1f} before, "
        f"{result['load_average_after'][0]:.1f} after, on {os.cpu_count()} cores).\n",
    ]))
    print(f"\nwall time {wall:.1f} s, process CPU time {cpu:.1f} s (load average {load_before[0]:.1f} before, "
          f"{result['load_average_after'][0]:.1f} after); outputs in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

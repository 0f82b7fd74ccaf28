"""The first seed's binary sums, trained with its backpropagation through time written by hand.

The seed's setup: rows of 8 points from ``make_sum(600, 8)``, each 7 random
bits followed by their sum; the network reads the 7 bits, one per step, and
predicts the sum (0 to 7, not rescaled). A third is held out for validation
(402 / 198, as the seed's ``train_test_split(test_size=0.33)``). The network
is the seed's: an input of one unit, recurrent sigmoid layers of 6 and 4
units, a linear many-to-one output, the squared error ``(p - y)^2``, and
per-example SGD with eta = 0.1 for 100 epochs, the examples in the same
order every epoch.

Runs (every one in float64, from the same initial params unless stated):

- ``sgd/bptt``: the seed's recipe with the library's default init
  (Glorot-uniform input kernels, orthogonal recurrent kernels, zero biases)
  and the gradients of :func:`scanrnn.teaching_bptt.simple_rnn_bptt`;
- ``sgd/jax.grad``: the same with ``jax.value_and_grad`` of the same loss;
  the two must give the same numbers (their largest differences are printed);
- ``adam/bptt`` and ``adam/jax.grad``: Adam (learning rate 3e-2) on
  minibatches of 16, reshuffled each epoch (the last 2 examples of each
  shuffle are left out so that every batch has 16), 100 epochs. The rate
  and batch size are the best of a small sweep (3e-3, 1e-2, 3e-2 by 16, 32
  on seeds 0 and 1); with 25 updates an epoch instead of the 402 of
  per-example SGD, Adam leaves the plateau of the constant prediction later;
- ``sgd/bptt, seed's init``: the seed's recipe from the seed's own init,
  every weight uniform on [0, 1), with the hidden biases kept at zero (the
  seed's forward pass leaves them out, so training them changes nothing);
  its random initial hidden state is not reproduced (the library's is zeros);
- ``sgd/bptt, 5 seeds``: the seed's recipe over five data sets and inits
  (seeds ``seed`` to ``seed + 4``), trained at once under ``jax.vmap``.

Each training run is one jit-compiled program: a ``lax.scan`` over epochs of
a ``lax.scan`` over the examples (or minibatches). Reported seconds are the
compiled program's run time; compile times are recorded in results.json.

    python experiments/binary_sum.py            # the full study, well under a minute on 2 CPU cores
    python experiments/binary_sum.py --quick    # 3 epochs, for the tests
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

jax.config.update("jax_enable_x64", True)  # the bptt-vs-jax.grad comparison is made in float64

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax import lax  # noqa: E402
from jax.nn import initializers  # noqa: E402

import scanrnn as sr  # noqa: E402
from scanrnn import data, plot, teaching_bptt  # noqa: E402
from scanrnn.train import mse  # noqa: E402
from benchmarks.common import command_line, default_out, markdown_table, table, write_results  # noqa: E402

DTYPE = jnp.float64
WIDTHS = (6, 4)
ACTIVATION = "sigmoid"
N_SAMPLES, N_POINTS = 600, 8
ETA = 0.1
ADAM_LR, BATCH = 3e-2, 16


def build_model(seed_init: bool = False) -> sr.Layer:
    """The seed's network; with ``seed_init`` every weight starts uniform on [0, 1) as in the seed."""
    kw = dict(param_dtype=DTYPE)
    if seed_init:
        u = initializers.uniform(1.0)
        kw.update(kernel_init=u, recurrent_init=u)
    layers = [sr.recurrent(sr.simple_rnn(h, ACTIVATION, **kw)) for h in WIDTHS[:-1]]
    layers.append(sr.recurrent(sr.simple_rnn(WIDTHS[-1], ACTIVATION, **kw), return_sequences=False))
    dense_kw = dict(param_dtype=DTYPE)
    if seed_init:
        dense_kw.update(kernel_init=initializers.uniform(1.0), bias_init=initializers.uniform(1.0))
    return sr.serial(*layers, sr.dense(1, **dense_kw))


def load(seed: int):
    """The seed's data set: train and validation ``(x [N, 7, 1], y [N, 1])`` in float64."""
    rows = data.make_sum(N_SAMPLES, N_POINTS, rng=seed)
    train, valid = data.split(rows, sizes=(0.67, 0.33), rng=seed)
    return tuple(tuple(jnp.asarray(a, DTYPE) for a in data.many_to_one(part)) for part in (train, valid))


# --------------------------------------------------------------------------
# Gradients of one example: the hand-written BPTT or jax.grad of the same loss.


def bptt_grad(model, frozen_hidden_bias=False):
    def grad(params, x, y):
        loss, grads = teaching_bptt.simple_rnn_bptt(params, x, y, ACTIVATION)
        if frozen_hidden_bias:
            grads = tuple(g._replace(b=jnp.zeros_like(g.b)) for g in grads[:-1]) + (grads[-1],)
        return loss, grads

    return grad


def autodiff_grad(model):
    def grad(params, x, y):
        return jax.value_and_grad(lambda p: mse(model.apply(p, x), y))(params)

    return grad


def dataset_mse(model, params, x, y):
    return jnp.mean(jax.vmap(lambda x, y: mse(model.apply(params, x), y))(x, y))


def summary(model, params, train, valid):
    """The final train and validation MSE and the validation predictions ``[N]``."""
    predictions = jax.vmap(model.apply, in_axes=(None, 0))(params, valid[0])[:, 0]
    return {"train_mse": dataset_mse(model, params, *train), "valid_mse": dataset_mse(model, params, *valid),
            "predictions": predictions}


# --------------------------------------------------------------------------
# Training programs: (params, train, valid) -> (params, curves, summary).


def sgd_program(model, grad, epochs):
    """Per-example SGD in the seed's order; curves are the seed's: the mean loss over each epoch's updates and the validation MSE after it."""

    def run(params, train, valid):
        def epoch(params, _):
            def example(params, xy):
                loss, g = grad(params, *xy)
                return jax.tree.map(lambda p, d: p - ETA * d, params, g), loss

            params, losses = lax.scan(example, params, train)
            return params, (jnp.mean(losses), dataset_mse(model, params, *valid))

        params, curves = lax.scan(epoch, params, None, length=epochs)
        return params, curves, summary(model, params, train, valid)

    return run


def adam_program(model, grad, epochs, key):
    """Adam on minibatches of ``BATCH``, reshuffled every epoch with ``key``."""
    optimizer = optax.adam(ADAM_LR)

    def run(params, train, valid):
        x, y = train
        n_batches = x.shape[0] // BATCH

        def epoch(state, k):
            order = jax.random.permutation(k, x.shape[0])[: n_batches * BATCH].reshape(n_batches, BATCH)

            def batch(state, index):
                params, opt_state = state
                losses, grads = jax.vmap(grad, in_axes=(None, 0, 0))(params, x[index], y[index])
                updates, opt_state = optimizer.update(jax.tree.map(lambda g: jnp.mean(g, 0), grads), opt_state)
                return (optax.apply_updates(params, updates), opt_state), jnp.mean(losses)

            state, losses = lax.scan(batch, state, order)
            return state, (jnp.mean(losses), dataset_mse(model, state[0], *valid))

        (params, _), curves = lax.scan(epoch, (params, optimizer.init(params)), jax.random.split(key, epochs))
        return params, curves, summary(model, params, train, valid)

    return run


# The programs are loops of tiny matrix products: XLA's backend optimisations
# take longer to compile than they save in running them.
COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def timed(program, *args):
    """Compile and run a training program; returns its outputs, compile and run seconds."""
    start = time.perf_counter()
    compiled = jax.jit(program).lower(*args).compile(compiler_options=COMPILER_OPTIONS)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, compile_s, time.perf_counter() - start


def max_abs_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# --------------------------------------------------------------------------
# Outputs.


def plot_curves(runs, path, title):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.8), layout="constrained")
    ax = fig.subplots()
    styles = {"sgd/bptt": "C0", "sgd/jax.grad": "C0", "adam/bptt": "C1", "adam/jax.grad": "C1",
              "sgd/bptt, seed's init": "C2"}
    for name, color in styles.items():
        if name not in runs:
            continue
        run = runs[name]
        epochs = np.arange(1, len(run["train_curve"]) + 1)
        if name.endswith("jax.grad"):  # identical to its bptt run: markers on top of its lines
            ax.plot(epochs, run["valid_curve"], "x", color=color, markersize=4, label=f"{name} (validation)")
            continue
        ax.plot(epochs - 0.5, run["train_curve"], "-", color=color, alpha=0.5, label=f"{name} (training)")
        ax.plot(epochs, run["valid_curve"], ".-", color=color, label=f"{name} (validation)")
    ax.axhline(0.01, color="k", linestyle=":", linewidth=1, label="MSE 0.01")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean squared error")
    ax.set_title(title)
    ax.grid(True)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=100)


def plot_weights(params, path, title):
    """Heatmaps of W_hh and W of each hidden layer (the seed's two panels per layer)."""
    from matplotlib.figure import Figure

    hidden = params[:-1]
    fig = Figure(figsize=(8, 3.2 * len(hidden)), layout="constrained")
    axes = fig.subplots(len(hidden), 2, squeeze=False)
    for l, p in enumerate(hidden):
        for ax, (name, w) in zip(axes[l], (("W_hh", p.w_hh), ("W", p.w_ih))):
            w = np.asarray(w)
            limit = float(np.abs(w).max()) or 1.0  # a symmetric scale: white is zero
            image = ax.imshow(w, cmap="RdBu_r", aspect="auto", vmin=-limit, vmax=limit)
            fig.colorbar(image, ax=ax)
            ax.set_xticks(range(w.shape[1]))
            ax.set_yticks(range(w.shape[0]))
            ax.set_title(f"layer {l + 1}: {name} {tuple(w.shape)}")
            ax.set_xlabel("from unit")
            ax.set_ylabel("to unit")
    fig.suptitle(title)
    fig.savefig(path, dpi=100)


def result_tables(result) -> tuple:
    """The study's two tables, ``(rows, header)`` each, from its results: the runs, and BPTT against jax.grad."""
    multi = result["seeds"]
    rows = [[name, f"{r['train_mse']:.5f}", f"{r['valid_mse']:.5f}", f"{r['best_valid_mse']:.5f}", f"{r['seconds']:.2f}"]
            for name, r in result["runs"].items()]
    rows.append([f"sgd/bptt, {len(multi['seeds'])} seeds (mean / max)", "",
                 f"{np.mean(multi['valid_mse']):.5f} / {np.max(multi['valid_mse']):.5f}",
                 f"{np.min(np.asarray(multi['valid_curves'])):.5f}", f"{multi['seconds']:.2f}"])
    comparison = [[kind, f"{c['max_abs_param_diff']:.2e}", f"{c['max_abs_train_curve_diff']:.2e}",
                   f"{c['max_abs_valid_curve_diff']:.2e}"] for kind, c in result["bptt_vs_jax_grad"].items()]
    return ((rows, ["run", "train MSE", "valid MSE", "best valid MSE", "seconds"]),
            (comparison, ["optimiser", "final params", "train curve", "valid curve"]))


def markdown(result) -> str:
    """results.md: the settings and the two tables."""
    s = result["settings"]
    runs_table, comparison_table = result_tables(result)
    return "\n".join([
        "# Binary sums: the first seed's network, with hand-written BPTT and with jax.grad",
        "",
        f"`{result['command']}` (seed {result['seed']}): {s['train']} training / {s['valid']} validation sequences "
        f"of {s['n_discr_points'] - 1} bits and their sum; network 1 -> {' -> '.join(map(str, s['widths']))} "
        f"({s['activation']}) -> 1 (linear); {s['epochs']} epochs; {s['dtype']}; loss {s['loss']}. Seconds are "
        f"the compiled training programs' run times; wall time {result['wall_seconds']:.1f} s.",
        "",
        markdown_table(*runs_table),
        "",
        "Hand-written BPTT against `jax.grad` from the same init (max |difference|):",
        "",
        markdown_table(*comparison_table),
        "",
        "Plots: `learning_curves.png`, `predictions.png`, `weights.png` (sgd/bptt), `weights_adam.png` (adam/bptt).",
        "",
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs and 2 seeds, for the tests")
    parser.add_argument("--out", help="output folder (default experiments/results/binary_sum/, "
                                      "runs/binary_sum-quick/ with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="data, split, init and shuffles")
    parser.add_argument("--epochs", type=int, help="default 100 (3 with --quick)")
    args = parser.parse_args(argv)
    epochs = args.epochs or (3 if args.quick else 100)
    n_seeds = 2 if args.quick else 5
    out = args.out or str(default_out("binary_sum", args.quick))
    os.makedirs(out, exist_ok=True)
    wall = time.perf_counter()

    train, valid = load(args.seed)
    model, seed_model = build_model(), build_model(seed_init=True)
    # Compiled inits: eagerly, each initialiser's few ops would be compiled one by one.
    init = jax.jit(model.init, static_argnums=1)
    params0 = init(jax.random.key(args.seed), 1)
    seed_params0 = jax.jit(seed_model.init, static_argnums=1)(jax.random.key(args.seed), 1)
    print(f"binary sums: {train[0].shape[0]} train / {valid[0].shape[0]} validation sequences of "
          f"{train[0].shape[1]} bits; network 1 -> {' -> '.join(map(str, WIDTHS))} ({ACTIVATION}) -> 1 (linear); "
          f"{epochs} epochs; float64")

    key = jax.random.key(args.seed + 1)
    programs = {
        "sgd/bptt": (sgd_program(model, bptt_grad(model), epochs), params0),
        "sgd/jax.grad": (sgd_program(model, autodiff_grad(model), epochs), params0),
        "adam/bptt": (adam_program(model, bptt_grad(model), epochs, key), params0),
        "adam/jax.grad": (adam_program(model, autodiff_grad(model), epochs, key), params0),
        "sgd/bptt, seed's init": (sgd_program(seed_model, bptt_grad(seed_model, True), epochs), seed_params0),
    }
    descriptions = {
        "sgd/bptt": "the seed's recipe: per-example SGD, eta 0.1, default init, hand-written BPTT",
        "sgd/jax.grad": "the same with jax.grad",
        "adam/bptt": f"Adam {ADAM_LR}, minibatches of {BATCH}, hand-written BPTT",
        "adam/jax.grad": "the same with jax.grad",
        "sgd/bptt, seed's init": "the seed's recipe from the seed's init (uniform [0, 1) weights, no hidden bias)",
    }
    runs, final_params, predictions = {}, {}, {}
    for name, (program, start) in programs.items():
        (params, (train_curve, valid_curve), final), compile_s, run_s = timed(program, start, train, valid)
        final_params[name] = params
        predictions[name] = np.asarray(final["predictions"])
        runs[name] = {
            "description": descriptions[name],
            "train_mse": float(final["train_mse"]),
            "valid_mse": float(final["valid_mse"]),
            "best_valid_mse": float(jnp.min(valid_curve)),
            "seconds": run_s,
            "compile_seconds": compile_s,
            "train_curve": np.asarray(train_curve).tolist(),
            "valid_curve": np.asarray(valid_curve).tolist(),
        }

    # The seed's recipe over several seeds at once: vmap over data sets and inits.
    seeds = list(range(args.seed, args.seed + n_seeds))
    sets = [load(s) for s in seeds]
    stacked_train = jax.tree.map(lambda *a: jnp.stack(a), *[s[0] for s in sets])
    stacked_valid = jax.tree.map(lambda *a: jnp.stack(a), *[s[1] for s in sets])
    inits = jax.tree.map(lambda *a: jnp.stack(a), *[init(jax.random.key(s), 1) for s in seeds])
    program = jax.vmap(sgd_program(model, bptt_grad(model), epochs))
    (_, (_, valid_curves), final), compile_s, run_s = timed(program, inits, stacked_train, stacked_valid)
    valid_mses = [float(v) for v in final["valid_mse"]]
    multi = {"seeds": seeds, "valid_mse": valid_mses, "seconds": run_s, "compile_seconds": compile_s,
             "valid_curves": np.asarray(valid_curves).tolist()}

    comparison = {
        kind: {
            "max_abs_param_diff": max_abs_diff(final_params[f"{kind}/bptt"], final_params[f"{kind}/jax.grad"]),
            "max_abs_train_curve_diff": max_abs_diff(np.asarray(runs[f"{kind}/bptt"]["train_curve"]),
                                                     np.asarray(runs[f"{kind}/jax.grad"]["train_curve"])),
            "max_abs_valid_curve_diff": max_abs_diff(np.asarray(runs[f"{kind}/bptt"]["valid_curve"]),
                                                     np.asarray(runs[f"{kind}/jax.grad"]["valid_curve"])),
        }
        for kind in ("sgd", "adam")
    }

    # The seed's inference printout: the first 15 validation sequences and their predictions.
    print("\nfirst 15 validation sequences (7 bits, their sum) and the prediction of sgd/bptt:")
    examples = []
    for x, y, p in zip(np.asarray(valid[0])[:15, :, 0], np.asarray(valid[1])[:15, 0], predictions["sgd/bptt"][:15]):
        row = [int(b) for b in x] + [int(y)]
        examples.append({"sequence": row, "prediction": float(p)})
        print(f"  {row}  ->  {p:7.4f}")

    result = {
        "command": command_line(__file__, argv),
        "seed": args.seed,
        "settings": {"n_samples": N_SAMPLES, "n_discr_points": N_POINTS, "train": int(train[0].shape[0]),
                     "valid": int(valid[0].shape[0]), "widths": list(WIDTHS), "activation": ACTIVATION,
                     "loss": "(p - y)^2 per example (scanrnn.train.mse)", "eta": ETA, "epochs": epochs,
                     "adam_lr": ADAM_LR, "batch_size": BATCH, "dtype": "float64", "quick": args.quick},
        "runs": runs,
        "seeds": multi,
        "bptt_vs_jax_grad": comparison,
        "validation_examples": examples,
        "seed_recipe_below_0.01": runs["sgd/bptt"]["valid_mse"] < 0.01,
        "wall_seconds": None,  # below, once the plots are drawn
        "platform": {"python": platform.python_version(), "jax": jax.__version__, "cpu_count": os.cpu_count(),
                     "backend": jax.default_backend()},
    }
    runs_table, comparison_table = result_tables(result)
    print()
    print(table(*runs_table))
    print("\nhand-written BPTT against jax.grad from the same init (max |difference|):")
    print(table(*comparison_table))

    plot_curves(runs, os.path.join(out, "learning_curves.png"), "binary sums: learning curves")
    plot_weights(final_params["sgd/bptt"], os.path.join(out, "weights.png"), "sgd/bptt: weights after training")
    plot_weights(final_params["adam/bptt"], os.path.join(out, "weights_adam.png"), "adam/bptt: weights after training")
    plot.plot_predictions(np.asarray(valid[1]), predictions["sgd/bptt"], os.path.join(out, "predictions.png"),
                          title="sgd/bptt: validation predictions")

    result["wall_seconds"] = time.perf_counter() - wall
    write_results(out, result, markdown(result))
    print(f"\nwall time {result['wall_seconds']:.1f} s; outputs in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

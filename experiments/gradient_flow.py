"""Gradient flow through time on the adding problem, for every built-in cell.

The task is the adding problem (:func:`scanrnn.data.adding_problem`) with
``T = 200``: a sequence of (value, marker) pairs, one marker in each half, and
the target is the sum of the two marked values. Always predicting 1 scores
MSE 1/6 ~ 0.167; a model has *learned* the task when its test MSE is below
0.01.

Each model is ``serial(recurrent(cell, return_sequences=False), dense(1))``
with one of the cells: simple RNNs with sigmoid, tanh and ReLU activations,
the LSTM, the GRU (reset-after form), the layer-normalised simple RNN (tanh)
and the layer-normalised LSTM, all with the library's default init. It is
trained with the mean squared error, Adam and gradient clipping
(``optax.clip_by_global_norm``) on fresh batches drawn every step, for at most
``--steps`` steps, and stops early once the test MSE (evaluated every
``--eval-every`` steps on a fixed test set) is below 0.01. Training runs
``--eval-every`` steps at a time as one compiled ``lax.scan``.

For each model, at initialisation and after training, it measures the norm
of ``dL/dh_t`` (:func:`scanrnn.diagnostics.hidden_state_gradients`, the
total derivative of the example's squared error w.r.t. the carry after step
``t``; the whole carry, so ``h`` and ``c`` together for the LSTMs) for
``t = 0 .. T-1``, averaged over ``--probe`` test sequences, and the ratio
``|dL/dh_0| / |dL/dh_{T-1}|`` of those averages: how much of the training
signal reaches the start of the sequence (Bengio et al. 1994; Pascanu et al.
2013). It also records the eigenvalues of each trained recurrent matrix (each
gate block for the gated cells).

Outputs in ``--out``: ``results.json`` (settings, command, seed, per-model
numbers, norms and eigenvalues, wall and CPU seconds), ``results.md`` (the
table), ``grad_norms.png``
(log-scale norms against ``t``, at init and after training),
``spectra.png`` (eigenvalues in the complex plane with the unit circle) and
``learning_curves.png`` (test MSE against training steps).

    python experiments/gradient_flow.py            # the full study, T = 200
    python experiments/gradient_flow.py --quick    # T = 30, a few steps, for the tests
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
from jax import lax  # noqa: E402

import scanrnn as sr  # noqa: E402
from scanrnn import data  # noqa: E402
from scanrnn.diagnostics import gradient_norms, hidden_state_gradients, recurrent_spectrum  # noqa: E402
from scanrnn.train import mse  # noqa: E402
from benchmarks.common import command_line, default_out, markdown_table, table, write_results  # noqa: E402

BASELINE = 1 / 6  # the MSE of always predicting 1: Var(U1 + U2)
LEARNED = 0.01  # a model has learned the task when its test MSE is below this

# name -> (factory, options)
MODELS = {
    "rnn-sigmoid": ("simple_rnn", {"activation": "sigmoid"}),
    "rnn-tanh": ("simple_rnn", {"activation": "tanh"}),
    "rnn-relu": ("simple_rnn", {"activation": "relu"}),
    "lstm": ("lstm", {}),
    "gru": ("gru", {}),
    "ln-rnn": ("layer_norm_rnn", {"activation": "tanh"}),
    "ln-lstm": ("layer_norm_lstm", {}),
}

FULL = dict(steps_T=200, hidden=32, batch=64, lr=1e-2, clip=1.0, max_steps=4000, eval_every=100, n_test=1000, probe=64)
QUICK = dict(steps_T=30, hidden=8, batch=16, lr=1e-2, clip=1.0, max_steps=40, eval_every=20, n_test=100, probe=8)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="T = 30, a few steps per model (for the tests)")
    p.add_argument("--out", help="output folder (default experiments/results/gradient_flow, or runs/gradient_flow-quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    for key in FULL:
        p.add_argument("--" + key.replace("_", "-"), type=type(FULL[key]), default=None)
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        p.error(f"unknown models {unknown}; choose from {list(MODELS)}")
    if args.max_steps % args.eval_every:
        p.error(f"--max-steps ({args.max_steps}) must be a multiple of --eval-every ({args.eval_every})")
    if args.out is None:
        args.out = str(default_out("gradient_flow", args.quick))
    return args


def build(name, hidden):
    factory, options = MODELS[name]
    cell = getattr(sr, factory)(hidden, **options)
    dense = sr.dense(1)
    return cell, dense, sr.serial(sr.recurrent(cell, return_sequences=False), dense)


def make_functions(cell, dense, model, optimizer):
    """Compiled pieces: a chunk of train steps, the test MSE, the mean |dL/dh_t| over examples."""

    def batch_loss(params, x, y):
        pred = jax.vmap(model.apply, in_axes=(None, 0))(params, x)
        return jnp.mean(jax.vmap(mse)(pred, y))

    def one_step(state, batch):
        params, opt_state = state
        loss, grads = jax.value_and_grad(batch_loss)(params, *batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    @jax.jit
    def train_chunk(params, opt_state, xs, ys):  # xs [K, B, T, 2], ys [K, B, 1]: K steps in one scan
        (params, opt_state), losses = lax.scan(one_step, (params, opt_state), (xs, ys))
        return params, opt_state, losses

    test_mse = jax.jit(batch_loss)

    @jax.jit
    def mean_grad_norms(params, x, y):
        def one(xs, target):
            loss = lambda ys, carry: mse(dense.apply(params[1], sr.last_valid(ys)), target)  # noqa: E731
            return gradient_norms(hidden_state_gradients(cell, params[0], xs, loss))

        return jnp.mean(jax.vmap(one)(x, y), axis=0)  # [T]

    return train_chunk, test_mse, mean_grad_norms


def run_model(name, args, test, probe):
    """Train one model; return its row of results."""
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    model_index = list(MODELS).index(name)
    cell, dense, model = build(name, args.hidden)
    params = model.init(jax.random.key(args.seed * 100 + model_index), 2)
    optimizer = optax.chain(optax.clip_by_global_norm(args.clip), optax.adam(args.lr))
    opt_state = optimizer.init(params)
    train_chunk, test_mse, mean_grad_norms = make_functions(cell, dense, model, optimizer)
    rng = np.random.default_rng([args.seed, model_index])  # the training batches of this model

    norms_init = np.asarray(mean_grad_norms(params, *probe), np.float64)
    curve = [(0, float(test_mse(params, *test)))]
    steps_to_learn = None
    done = 0
    while done < args.max_steps and steps_to_learn is None:
        k = args.eval_every
        x, y = data.adding_problem(k * args.batch, args.steps_T, rng=rng)
        x = x.reshape(k, args.batch, args.steps_T, 2)
        y = y.reshape(k, args.batch, 1)
        params, opt_state, _ = train_chunk(params, opt_state, x, y)
        done += k
        value = float(test_mse(params, *test))
        curve.append((done, value))
        if value < LEARNED:
            steps_to_learn = done
        if not np.isfinite(value):
            break
    norms_trained = np.asarray(mean_grad_norms(params, *probe), np.float64)
    spectrum = recurrent_spectrum(params[0])

    def ratio(norms):
        return float(norms[0] / norms[-1]) if norms[-1] > 0 else float("nan")

    return {
        "model": name,
        "cell": MODELS[name][0],
        "options": MODELS[name][1],
        "learned": steps_to_learn is not None,
        "steps_to_learn": steps_to_learn,
        "steps_trained": done,
        "final_test_mse": curve[-1][1],
        "ratio_init": ratio(norms_init),
        "ratio_trained": ratio(norms_trained),
        "seconds": time.perf_counter() - start_wall,
        "cpu_seconds": time.process_time() - start_cpu,
        "test_curve": curve,
        "grad_norms_init": norms_init.tolist(),
        "grad_norms_trained": norms_trained.tolist(),
        "eigenvalues": {g: {"real": v.real.tolist(), "imag": v.imag.tolist()} for g, v in spectrum.items()},
        "spectral_radius": {g: float(np.abs(v).max()) for g, v in spectrum.items()},
    }


def result_table(rows, max_steps) -> tuple:
    """``(rows, header)`` of the study's table: one row per model."""
    header = ["model", "learned?", "steps to MSE<0.01", "final test MSE", "|g_0|/|g_T-1| init",
              "|g_0|/|g_T-1| trained", "max |eig| trained", "seconds", "CPU s"]

    def ratio(value):  # 0 when |g_0| is below the smallest float32 (about 1e-45)
        return "0 (underflow)" if value == 0 else f"{value:.2e}"

    lines = []
    for r in rows:
        lines.append([
            r["model"],
            "yes" if r["learned"] else "no",
            str(r["steps_to_learn"]) if r["learned"] else f"not within {max_steps}",
            f"{r['final_test_mse']:.4f}",
            ratio(r["ratio_init"]),
            ratio(r["ratio_trained"]),
            f"{max(r['spectral_radius'].values()):.2f}",
            f"{r['seconds']:.1f}",
            f"{r['cpu_seconds']:.1f}",
        ])
    return lines, header


def markdown(result) -> str:
    """results.md: the settings and the table."""
    s = result["settings"]
    return "\n".join([
        "# Gradient flow through time on the adding problem",
        "",
        f"`{result['command']}` (seed {result['seed']}): T = {s['steps_T']}; predicting 1 gives MSE "
        f"{result['baseline_mse']:.3f}, and a model has learned the task below {result['learned_below']}. Settings: "
        f"{', '.join(f'{k}={v}' for k, v in s.items())}. `|g_0|/|g_T-1|` is the mean norm of dL/dh at the first step over that at the last. Wall time "
        f"{result['wall_seconds']:.0f} s, CPU time {result['cpu_seconds']:.0f} s.",
        "",
        markdown_table(*result_table(result["models"], s["max_steps"])),
        "",
        "Plots: `grad_norms.png` (|dL/dh_t| against t, at initialisation and after training), `spectra.png` "
        "(eigenvalues of the trained recurrent matrices), `learning_curves.png` (test MSE against steps).",
        "",
    ])


def _figure(width, height, nrows=1, ncols=1, **kw):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def plot_norms(rows, path, steps_T):
    fig, axes = _figure(11, 4.2, 1, 2, sharey=True)
    for ax, key, title in zip(axes[0], ("grad_norms_init", "grad_norms_trained"), ("at initialisation", "after training")):
        for r in rows:
            norms = np.asarray(r[key])
            norms = np.where(norms > 0, norms, np.nan)  # log scale: an underflow to 0 is left out
            ax.plot(np.arange(len(norms)), norms, label=r["model"])
        ax.set_yscale("log")
        ax.set_xlabel("step t")
        ax.set_title(f"|dL/dh_t| {title} (T = {steps_T})")
        ax.grid(True, which="major", alpha=0.4)
    axes[0, 0].text(0.01, 0.01, "float32: a line ends where |dL/dh_t| underflows to 0", transform=axes[0, 0].transAxes,
                    fontsize=7, color="grey")
    axes[0, 0].set_ylabel("mean over test sequences")
    axes[0, 1].legend(fontsize=8)
    fig.savefig(path, dpi=100)


def plot_spectra(rows, path):
    ncols = min(4, len(rows))
    nrows = -(-len(rows) // ncols)
    fig, axes = _figure(3.2 * ncols, 3.2 * nrows, nrows, ncols)
    circle = np.exp(1j * np.linspace(0, 2 * np.pi, 200))
    for ax in axes.ravel():
        ax.set_visible(False)
    for ax, r in zip(axes.ravel(), rows):
        ax.set_visible(True)
        ax.plot(circle.real, circle.imag, "k-", lw=0.8)
        for gate, values in r["eigenvalues"].items():
            ax.scatter(values["real"], values["imag"], s=10, label=gate if gate != "h" else "W_hh")
        limit = 1.1 * max(1.0, max(r["spectral_radius"].values()))
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_aspect("equal")
        ax.set_title(f"{r['model']} (trained)", fontsize=9)
        ax.axhline(0, color="grey", lw=0.4)
        ax.axvline(0, color="grey", lw=0.4)
        ax.legend(fontsize=7, loc="upper right")
    fig.savefig(path, dpi=100)


def plot_curves(rows, path):
    fig, axes = _figure(7, 4.2)
    ax = axes[0, 0]
    for r in rows:
        steps, values = zip(*r["test_curve"])
        ax.plot(steps, values, ".-", label=r["model"])
    ax.axhline(BASELINE, color="k", ls="--", lw=0.8, label="predict 1 (1/6)")
    ax.axhline(LEARNED, color="k", ls=":", lw=0.8, label="learned (0.01)")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("test MSE")
    ax.grid(True, alpha=0.4)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        # Tiny models run in no time; compiling them is what takes time, so compile with less optimisation.
        jax.config.update("jax_disable_most_optimizations", True)
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    os.makedirs(args.out, exist_ok=True)
    test = data.adding_problem(args.n_test, args.steps_T, rng=np.random.default_rng([args.seed, 1000]))
    probe = (test[0][: args.probe], test[1][: args.probe])
    settings = {k: getattr(args, k) for k in FULL}
    print(f"adding problem, T = {args.steps_T}; predicting 1 gives MSE {BASELINE:.3f}; settings {settings}", flush=True)

    rows = []
    for name in args.models:
        row = run_model(name, args, test, probe)
        rows.append(row)
        print(f"{name:12s} test MSE {row['final_test_mse']:.4f} after {row['steps_trained']} steps, "
              f"{row['seconds']:.1f} s", flush=True)

    print()
    print(table(*result_table(rows, args.max_steps)))
    plot_norms(rows, os.path.join(args.out, "grad_norms.png"), args.steps_T)
    plot_spectra(rows, os.path.join(args.out, "spectra.png"))
    plot_curves(rows, os.path.join(args.out, "learning_curves.png"))
    results = {
        "command": command_line(__file__, argv),
        "seed": args.seed,
        "quick": args.quick,
        "settings": settings,
        "baseline_mse": BASELINE,
        "learned_below": LEARNED,
        "models": rows,
        "wall_seconds": time.perf_counter() - start_wall,
        "cpu_seconds": time.process_time() - start_cpu,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "jax": jax.__version__},
    }
    write_results(args.out, results, markdown(results))
    print(f"\nwall {results['wall_seconds']:.1f} s, CPU {results['cpu_seconds']:.1f} s; outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

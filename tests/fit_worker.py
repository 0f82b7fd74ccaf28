"""A training run for tests/test_fit_kill.py: ``fit`` with run checkpoints, announcing each save.

``python tests/fit_worker.py CHECKPOINT_DIR OUT.npz`` trains a small GRU
regressor for 4 epochs (with dropout keys and gradient clipping), saving a
checkpoint every 3 steps and resuming from the latest one in
CHECKPOINT_DIR; it prints ``save <step>`` before each save, and at the end
exports the params to OUT.npz. Every process that runs it computes the same
programs, so a run killed and resumed must end with the same bits.
"""

import sys

import jax
import numpy as np
import optax

import scanrnn as sr
from scanrnn import _run_checkpoints
from scanrnn.checkpoint import save_params
from scanrnn.train import Batch, fit, mse

jax.config.update("jax_disable_most_optimizations", True)  # tiny programs: compile fast


def announce(save):
    def announced(self, state, metrics=None, **options):
        print(f"save {int(state.step)}", flush=True)
        return save(self, state, metrics, **options)

    return announced


def main(checkpoint_dir, out):
    _run_checkpoints.RunCheckpoints.save = announce(_run_checkpoints.RunCheckpoints.save)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(56, 6, 2)).astype(np.float32)
    y = (x[:, -1, :1] - x[:, 0, 1:]).astype(np.float32)
    model = sr.serial(
        sr.recurrent(sr.gru(8), regularization=sr.Regularization(dropout=0.1)),
        sr.recurrent(sr.gru(4), return_sequences=False),
        sr.dense(1),
    )
    params = model.init(jax.random.key(0), 2)
    params, _ = fit(
        model, params, optax.adam(optax.cosine_decay_schedule(1e-2, 56)), mse, Batch(x[:48], y[:48]), Batch(x[48:], y[48:]),
        epochs=4, batch_size=4, seed=1, key=jax.random.key(2), clip_norm=1.0,
        checkpoint_dir=checkpoint_dir, checkpoint_every=3, keep=2, resume=True,
    )
    save_params(out, params)
    print("done", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])

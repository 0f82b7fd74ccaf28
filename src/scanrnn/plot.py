"""Plots of training runs, written to PNG with matplotlib's object API.

Figures are made with :class:`matplotlib.figure.Figure` directly, so no
global pyplot state or interactive backend is touched.
"""

from __future__ import annotations

from typing import Optional

import numpy as np


def _figure(width=7.0, height=4.5, ncols=1, nrows=1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def plot_learning_curves(history: dict, path: str, *, title: Optional[str] = None, log: bool = True) -> None:
    """Training and validation loss per epoch, as ``fit`` returns them.

    As in the second seed, the training loss (a mean over the epoch) is drawn
    half an epoch earlier than the validation loss (measured at its end).
    """
    fig, axes = _figure()
    ax = axes[0, 0]
    train = np.asarray(history["train_loss"])
    ax.plot(np.arange(len(train)) + 0.5, train, "b.-", label="training loss")
    if history.get("valid_loss"):
        valid = np.asarray(history["valid_loss"])
        ax.plot(np.arange(len(valid)) + 1, valid, "r.-", label="validation loss")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(True)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.savefig(path, dpi=100)


def plot_forecasts(series, target, prediction, path: str, *, title: Optional[str] = None) -> None:
    """A few one-sequence forecasts: the input series, the true next values and the predicted ones.

    Args:
      series: ``[N, T]`` or ``[N, T, 1]`` inputs, one panel each.
      target: ``[N, K]`` the true next ``K`` values.
      prediction: ``[N, K]`` the forecast.
    """
    series = np.asarray(series).reshape(len(series), -1)
    target = np.asarray(target).reshape(len(series), -1)
    prediction = np.asarray(prediction).reshape(len(series), -1)
    n, steps = series.shape
    ncols = min(n, 3)
    nrows = -(-n // ncols)
    fig, axes = _figure(4.0 * ncols, 3.0 * nrows, ncols, nrows)
    ahead = np.arange(steps, steps + target.shape[1])
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_visible(False)
            continue
        ax.plot(np.arange(steps), series[i], ".-", label="input")
        ax.plot(ahead, target[i], "bx-", markersize=8, label="target")
        ax.plot(ahead, prediction[i], "ro-", label="forecast")
        ax.grid(True)
        ax.set_xlabel("$t$")
        if i == 0:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)


def plot_predictions(target, prediction, path: str, *, title: Optional[str] = None) -> None:
    """Predicted against true values (a scatter with the diagonal), for scalar targets."""
    target = np.asarray(target).reshape(-1)
    prediction = np.asarray(prediction).reshape(-1)
    fig, axes = _figure(5.0, 5.0)
    ax = axes[0, 0]
    jitter = np.random.default_rng(0).uniform(-0.1, 0.1, target.shape)  # fixed: only spreads equal targets
    ax.plot(target + jitter, prediction, ".", alpha=0.5)
    lo, hi = float(min(target.min(), prediction.min())), float(max(target.max(), prediction.max()))
    ax.plot([lo, hi], [lo, hi], "k--", linewidth=1)
    ax.set_xlabel("target")
    ax.set_ylabel("prediction")
    ax.grid(True)
    if title:
        ax.set_title(title)
    fig.savefig(path, dpi=100)

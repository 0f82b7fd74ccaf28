"""Plots of training runs, written to PNG with matplotlib's object API.

Figures are made with :class:`matplotlib.figure.Figure` directly, so no
global pyplot state or interactive backend is touched. Every panel has
labelled axes and a legend. A figure is written to a temporary file beside
its destination and renamed over it, so a process killed while plotting
leaves the previous figure or the new one, never a broken file.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

__all__ = [
    "plot_learning_curves",
    "plot_forecasts",
    "plot_predictions",
]


def _figure(width=7.0, height=4.5, ncols=1, nrows=1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig, path: str) -> None:
    """``fig`` as PNG (or the format of ``path``'s suffix) at ``path``, through a temporary file and a rename."""
    from .checkpoint import atomic_file

    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    with atomic_file(path) as file:
        fig.savefig(file, format=suffix or "png", dpi=100)


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
    ax.set_ylabel("loss (log scale)" if log else "loss")
    ax.grid(True)
    ax.legend()
    if title:
        ax.set_title(title)
    _save(fig, path)


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
        ax.set_xlabel("time step $t$")
        ax.set_ylabel("value")
        # Above the panel, in one row: inside it would hide the series or the point forecast.
        ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_predictions(
    target,
    prediction,
    path: str,
    *,
    title: Optional[str] = None,
    xlabel: str = "target",
    ylabel: str = "prediction",
    jitter: float = 0.1,
) -> None:
    """Predicted against true values (a scatter with the diagonal), for scalar targets.

    Args:
      target, prediction: one value per example (any shape of ``N`` elements).
      xlabel, ylabel: the axes' labels (what the targets and predictions are).
      jitter: each point is moved by a fixed uniform draw in ``[-jitter,
        jitter]`` along the target axis, which only spreads equal targets
        (integer sums, say); the legend says so. 0 plots them in place.
    """
    target = np.asarray(target).reshape(-1)
    prediction = np.asarray(prediction).reshape(-1)
    fig, axes = _figure(5.0, 5.0)
    ax = axes[0, 0]
    shift = np.random.default_rng(0).uniform(-jitter, jitter, target.shape) if jitter else np.zeros(target.shape)
    label = f"{len(target)} examples" + (f" (x jittered by up to ±{jitter:g})" if jitter else "")
    ax.plot(target + shift, prediction, ".", alpha=0.5, label=label)
    lo, hi = float(min(target.min(), prediction.min())), float(max(target.max(), prediction.max()))
    ax.plot([lo, hi], [lo, hi], "k--", linewidth=1, label="prediction = target")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    _save(fig, path)

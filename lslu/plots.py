"""Figures for the book. Every function returns a matplotlib Figure and never shows it.

Figures are built with ``matplotlib.figure.Figure`` (not pyplot), so a notebook displays each one
exactly once (as the cell's value) and scripts can ``fig.savefig(...)``. Pass ``ax=`` to draw into
an existing axes instead.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from .activations import naive_series, three_piece_parameters
from .analysis import count_pieces

__all__ = ["plot_activation_shapes", "plot_three_pieces", "plot_curves", "plot_bars_with_error",
           "plot_trajectories", "plot_histograms"]

_SYMBOLS = {"theta": r"\theta", "omega": r"\omega"}


def _axes(ax=None, figsize=(6.4, 4.0)):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _style(ax, xlabel=None, ylabel=None, title=None, legend=True):
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.set_axisbelow(True)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False, fontsize="small")


def _as_frame(data) -> pd.DataFrame:
    return data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)


def plot_activation_shapes(curves: dict, ax=None, title="LSLU shape g(x)"):
    """One line per label -> (x, y): the elementwise part u = g(x) of an activation."""
    fig, ax = _axes(ax)
    for label, (x, y) in curves.items():
        ax.plot(np.asarray(x), np.asarray(y), label=label, lw=2)
    _style(ax, "input x", "g(x)", title)
    return fig


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in values) + ")"


def plot_three_pieces(theta, omega, points: int = 401):
    """The series evaluated step by step (3n+1 passes) against its closed form
    c + s (clamp(x, p, q) - p), with p and q marked and the pieces shaded.

    ``theta``/``omega``: shape (n,) for one panel, or (k, n) for k panels side by side.
    """
    theta = torch.as_tensor(theta, dtype=torch.float64)
    omega = torch.as_tensor(omega, dtype=torch.float64)
    if theta.dim() == 1:
        theta, omega = theta[None], omega[None]
    k = theta.shape[0]
    fig = Figure(figsize=(4.2 * k, 3.6), layout="constrained")
    axes = fig.subplots(1, k, squeeze=False)[0]
    for ax, t, w in zip(axes, theta, omega):
        pieces = three_piece_parameters(t, w)
        count = int(count_pieces(*pieces))
        c, s, p, q = (float(v) for v in pieces)
        right = q if math.isfinite(q) else p
        lo, hi = min(-1.0, p - 1.0), max(2.0, right + 1.0)
        x = torch.linspace(lo, hi, points, dtype=torch.float64)
        naive = naive_series(x.view(1, 1, 1, -1), t, w).flatten()
        closed = c + s * (torch.clamp(x, p, q) - p)
        ax.plot(x, naive, lw=5, alpha=0.35, color="C0", label="series (3n+1 passes)")
        ax.plot(x, closed, "--", lw=1.5, color="C3", label="closed form")
        edges = [lo, p] + ([q] if math.isfinite(q) else []) + [hi]
        for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
            if b > a and count > 1:
                ax.axvspan(a, b, color=f"C{i + 4}", alpha=0.08, lw=0)
        ax.axvline(p, color="k", ls=":", lw=1)
        ax.annotate("p = q" if p == q else "p", (p, 1), xycoords=("data", "axes fraction"),
                    ha="right", va="top")
        if math.isfinite(q) and q > p:
            ax.axvline(q, color="k", ls=":", lw=1)
            ax.annotate("q", (q, 1), xycoords=("data", "axes fraction"), ha="left", va="top")
        _style(ax, "input x", "u = g(x)",
               f"θ={_fmt(t.tolist())}\nω={_fmt(w.tolist())}: {count} piece{'s' * (count > 1)}",
               legend=ax is axes[0])
    return fig


def plot_curves(data, x: str, y: str, hue: str | None = None, ax=None, xlabel=None,
                ylabel=None, title=None, marker="o"):
    """One line of ``y`` against ``x`` per value of ``hue`` (e.g. accuracy per epoch per run).

    ``data``: a DataFrame, or anything pandas turns into one (dict of columns, list of records).
    """
    df = _as_frame(data)
    fig, ax = _axes(ax)
    groups = df.groupby(hue, sort=False) if hue else [(None, df)]
    for name, part in groups:
        part = part.sort_values(x)
        label = None if hue is None else name if isinstance(name, str) else f"{hue}={name}"
        ax.plot(part[x], part[y], marker=marker, ms=3, lw=1.5, label=label)
    _style(ax, xlabel or x, ylabel or y, title)
    return fig


def plot_bars_with_error(df, x: str, y: str, yerr: str | None = None, hue: str | None = None,
                         ax=None, xlabel=None, ylabel=None, title=None):
    """Grouped bars of ``y`` per ``x`` (and ``hue``) with error bars ``yerr``.

    Without ``yerr`` the rows sharing (x, hue) are aggregated: mean ± standard deviation.
    """
    df = _as_frame(df)
    keys = [x] + ([hue] if hue else [])
    if yerr is None:
        df = df.groupby(keys, sort=False)[y].agg(["mean", "std"]).reset_index()
        df = df.rename(columns={"mean": y}).fillna({"std": 0.0})
        yerr = "std"
    cats = list(dict.fromkeys(df[x]))
    hues = list(dict.fromkeys(df[hue])) if hue else [None]
    width = 0.8 / len(hues)
    fig, ax = _axes(ax)
    for j, h in enumerate(hues):
        part = (df if h is None else df[df[hue] == h]).set_index(x).reindex(cats)
        pos = np.arange(len(cats)) - 0.4 + width * (j + 0.5)
        ax.bar(pos, part[y], width, yerr=part[yerr], capsize=3, label=h)
    ax.set_xticks(np.arange(len(cats)), [str(c) for c in cats])
    _style(ax, xlabel or x, ylabel or y, title)
    return fig


def plot_trajectories(history: list, key: str, layers=None, ncols: int = 4):
    """Per-layer trajectories of a series parameter over epochs: one panel per layer, one line
    per series step i. ``history[e][key]`` is {layer_name: [n floats]} for epoch e (epoch numbers
    are ``history[e]["epoch"]`` when present, else e)."""
    layers = list(history[0][key]) if layers is None else list(layers)
    epochs = [h.get("epoch", e) for e, h in enumerate(history)]
    symbol = f"${_SYMBOLS[key]}$" if key in _SYMBOLS else key
    ncols = min(ncols, len(layers))
    nrows = math.ceil(len(layers) / ncols)
    fig = Figure(figsize=(3.4 * ncols, 2.8 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True).ravel()
    for ax, layer in zip(axes, layers):
        values = np.array([h[key][layer] for h in history], dtype=float).reshape(len(history), -1)
        for i in range(values.shape[1]):
            label = f"${_SYMBOLS[key]}_{{{i + 1}}}$" if key in _SYMBOLS else f"{key}[{i + 1}]"
            ax.plot(epochs, values[:, i], lw=1.5, label=label)
        _style(ax, "epoch", symbol, layer)
    for ax in axes[len(layers):]:
        ax.set_visible(False)
    return fig


def plot_histograms(data: dict, bins: int = 30, ax=None, xlabel=None, ylabel="count",
                    title=None, density: bool = False):
    """Overlaid step histograms, one per label -> array, on common bins."""
    arrays = {k: np.asarray(v, dtype=float).ravel() for k, v in data.items()}
    edges = np.histogram_bin_edges(np.concatenate(list(arrays.values())), bins=bins)
    fig, ax = _axes(ax)
    for label, values in arrays.items():
        ax.hist(values, bins=edges, histtype="step", lw=1.8, density=density, label=label)
    _style(ax, xlabel, "density" if density else ylabel, title)
    return fig

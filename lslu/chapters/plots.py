"""Figure helpers every chapter uses. Every function returns a matplotlib Figure and never shows it.

Figures are built with ``matplotlib.figure.Figure`` (not pyplot), so a notebook displays each one
exactly once (as the cell's value) and scripts can ``fig.savefig(...)``. Pass ``ax=`` to draw into
an existing axes instead. A chapter's own figures live in its module.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


#: The book's text column is about 720 px; at matplotlib's 100 dpi a figure wider than 7.5 in is
#: shown below 0.6 of its size, and more than 2 panels per row make each panel's labels a few
#: pixels high. Multi-panel figures therefore stack rows instead of growing wider.
PAGE_WIDTH_IN = 7.5
MAX_COLUMNS = 2


def page_grid(panels: int, ncols: int = MAX_COLUMNS, panel_height: float = 2.9):
    """(nrows, ncols, figsize) of a grid of ``panels`` panels that fits the page: at most
    MAX_COLUMNS per row, PAGE_WIDTH_IN wide at most. ``ncols`` above MAX_COLUMNS fails."""
    if isinstance(ncols, bool) or not isinstance(ncols, int) or not 1 <= ncols <= MAX_COLUMNS:
        raise ValueError(f"ncols must be an integer from 1 to {MAX_COLUMNS} (the book's column "
                         f"fits {MAX_COLUMNS} readable panels per row), got {ncols!r}")
    ncols = max(1, min(ncols, panels))
    nrows = max(1, math.ceil(panels / ncols))
    return nrows, ncols, (min(PAGE_WIDTH_IN, 3.75 * ncols), panel_height * nrows)


def new_axes(ax=None, figsize=(6.4, 4.0)):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def style_axes(ax, xlabel=None, ylabel=None, title=None, legend=True):
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


def as_frame(data) -> pd.DataFrame:
    return data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)


def plot_curves(data, x: str, y: str, hue: str | None = None, ax=None, xlabel=None,
                ylabel=None, title=None, marker="o"):
    """One line of ``y`` against ``x`` per value of ``hue`` (e.g. accuracy per epoch per run).

    ``data``: a DataFrame, or anything pandas turns into one (dict of columns, list of records).
    """
    df = as_frame(data)
    fig, ax = new_axes(ax)
    groups = df.groupby(hue, sort=False) if hue else [(None, df)]
    for name, part in groups:
        part = part.sort_values(x)
        label = None if hue is None else name if isinstance(name, str) else f"{hue}={name}"
        ax.plot(part[x], part[y], marker=marker, ms=3, lw=1.5, label=label)
    style_axes(ax, xlabel or x, ylabel or y, title)
    return fig


def plot_bars_with_error(df, x: str, y: str, yerr: str | None = None, hue: str | None = None,
                         ax=None, xlabel=None, ylabel=None, title=None):
    """Grouped bars of ``y`` per ``x`` (and ``hue``) with error bars ``yerr``.

    Without ``yerr`` the rows sharing (x, hue) are aggregated: mean ± standard deviation.
    """
    df = as_frame(df)
    keys = [x] + ([hue] if hue else [])
    if yerr is None:
        df = df.groupby(keys, sort=False)[y].agg(["mean", "std"]).reset_index()
        df = df.rename(columns={"mean": y}).fillna({"std": 0.0})
        yerr = "std"
    cats = list(dict.fromkeys(df[x]))
    hues = list(dict.fromkeys(df[hue])) if hue else [None]
    width = 0.8 / len(hues)
    fig, ax = new_axes(ax)
    for j, h in enumerate(hues):
        part = (df if h is None else df[df[hue] == h]).set_index(x).reindex(cats)
        pos = np.arange(len(cats)) - 0.4 + width * (j + 0.5)
        ax.bar(pos, part[y], width, yerr=part[yerr], capsize=3, label=h)
    ax.set_xticks(np.arange(len(cats)), [str(c) for c in cats])
    style_axes(ax, xlabel or x, ylabel or y, title)
    return fig


def plot_histograms(data: dict, bins: int = 30, ax=None, xlabel=None, ylabel="count",
                    title=None, density: bool = False):
    """Overlaid step histograms, one per label -> array, on common bins."""
    arrays = {k: np.asarray(v, dtype=float).ravel() for k, v in data.items()}
    edges = np.histogram_bin_edges(np.concatenate(list(arrays.values())), bins=bins)
    fig, ax = new_axes(ax)
    for label, values in arrays.items():
        ax.hist(values, bins=edges, histtype="step", lw=1.8, density=density, label=label)
    style_axes(ax, xlabel, "density" if density else ylabel, title)
    return fig


def plot_histogram_grid(panels: dict, ncols: int = MAX_COLUMNS, bins: int = 30, xlabel=None,
                        ylabel="count", density: bool = False, sharex: bool = True):
    """One panel per title -> {label: values}, each drawn by plot_histograms (overlaid step
    histograms on common bins), ``ncols`` (<= MAX_COLUMNS) panels per row; the legend is on the
    first panel."""
    titles = list(panels)
    nrows, ncols, figsize = page_grid(len(titles), ncols)
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex).ravel()
    for i, (ax, title) in enumerate(zip(axes, titles)):
        plot_histograms(panels[title], bins=bins, ax=ax, xlabel=xlabel, ylabel=ylabel,
                        title=title, density=density)
        if i > 0 and ax.get_legend() is not None:
            ax.get_legend().remove()
    for ax in axes[len(titles):]:
        ax.set_visible(False)
    return fig

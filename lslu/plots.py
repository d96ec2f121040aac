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


def plot_three_pieces(theta, omega, points: int = 401, ncols: int = 2):
    """The series evaluated step by step (3n+1 passes) against its closed form
    c + s (clamp(x, p, q) - p), with p and q marked and the pieces shaded.

    ``theta``/``omega``: shape (n,) for one panel, or (k, n) for k panels, ``ncols`` per row.
    """
    theta = torch.as_tensor(theta, dtype=torch.float64)
    omega = torch.as_tensor(omega, dtype=torch.float64)
    if theta.dim() == 1:
        theta, omega = theta[None], omega[None]
    k = theta.shape[0]
    ncols = min(ncols, k)
    nrows = math.ceil(k / ncols)
    fig = Figure(figsize=(4.0 * ncols, 3.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[k:]:
        ax.set_visible(False)
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


# ---------------------------------------------------------------------------------------------
# With vs without LSLU (chapters 02, 03, 08): one colour per model, solid = its baseline
# activation, dashed = LSLU. ``curves`` is experiments.mean_curves(...) (or history_frame).
# ---------------------------------------------------------------------------------------------
def plot_with_and_without(curves, y: str = "val_acc", ax=None, ylabel=None, title=None,
                          target: float | None = None):
    """``y`` per epoch, one line per model x activation (column ``label``); ``target`` draws a
    horizontal dotted line (e.g. the accuracy target of a time-to-accuracy table)."""
    df = _as_frame(curves)
    fig, ax = _axes(ax)
    colours = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(df["model"]))}
    for (model, activation, label), part in df.groupby(["model", "activation", "label"],
                                                       sort=False):
        part = part.sort_values("epoch")
        lslu = activation == "lslu"
        ax.plot(part["epoch"], part[y], ls="--" if lslu else "-", marker="s" if lslu else "o",
                ms=3.5, lw=1.8, color=colours[model], label=label)
    if target is not None:
        ax.axhline(target, color="k", ls=":", lw=1, label=f"target {target:g}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    _style(ax, "epoch", ylabel or y, title)
    return fig


def plot_convergence(curves, target: float | None = None,
                     panels=(("val_acc", "validation top-1 (%)"), ("train_loss", "training loss"),
                             ("val_loss", "validation loss"))):
    """Side-by-side panels of plot_with_and_without, one per (column, axis label) in
    ``panels``; ``target`` (in the units of the first panel) is drawn on the first one."""
    fig = Figure(figsize=(4.6 * len(panels), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False).ravel()
    for i, (ax, (column, label)) in enumerate(zip(axes, panels)):
        plot_with_and_without(curves, column, ax=ax, ylabel=label, title=label,
                              target=target if i == 0 else None)
        if i > 0 and ax.get_legend() is not None:
            ax.get_legend().remove()
    return fig


def plot_top1_bars(frame, value: str = "top1", ax=None, title=None):
    """Final top-1 per model, baseline activation vs LSLU, mean over seeds with ± std error bars
    (none with one seed) and the mean written on each bar. ``frame``: experiments.results_frame
    (columns model, activation, act_fn, ``value``)."""
    from matplotlib.container import BarContainer
    df = _as_frame(frame).copy()
    baseline = df[df["activation"] == "baseline"].groupby("model", sort=False)["act_fn"].first()
    df["model (baseline)"] = [f"{m}\n(baseline: {baseline.get(m, '?')})" for m in df["model"]]
    df["activation "] = df["activation"].map({"baseline": "baseline activation", "lslu": "LSLU"})
    fig = plot_bars_with_error(df, x="model (baseline)", y=value, hue="activation ", ax=ax,
                               xlabel="model", ylabel="final validation top-1 (%)", title=title)
    ax = fig.axes[0] if ax is None else ax
    top = max(100.0, float(df[value].max()))
    ax.set_ylim(0, 1.15 * top)  # room for the legend on top
    ax.set_yticks(np.linspace(0, top, 6))
    ax.legend(loc="upper center", ncols=2, frameon=False, fontsize="small")
    for container in ax.containers:
        if isinstance(container, BarContainer):
            ax.bar_label(container, fmt="%.1f", label_type="center", fontsize="small",
                         color="white")
    return fig


__all__ += ["plot_with_and_without", "plot_convergence", "plot_top1_bars"]


# ---------------------------------------------------------------------------------------------
# E6 (task-specific image folder) and E8 (class selectivity)
# ---------------------------------------------------------------------------------------------
def plot_image_grid(samples: dict, max_cols: int | None = None, size: float = 1.1):
    """One row per class, its sample images side by side (``samples``: class name -> list of
    uint8 arrays, e.g. analysis.imagefolder_samples); the class name labels each row."""
    rows = list(samples)
    ncols = max(len(v) for v in samples.values()) if samples else 1
    ncols = min(ncols, max_cols) if max_cols else ncols
    fig = Figure(figsize=(size * ncols + 0.6, size * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, name in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(samples[name]):
                ax.imshow(np.asarray(samples[name][c]), interpolation="nearest")
            if c == 0:
                ax.set_ylabel(str(name), rotation=0, ha="right", va="center")
    return fig


def plot_confusion_matrix(matrix, classes, normalize: bool = True, ax=None, title=None):
    """Confusion matrix (rows: true class, columns: predicted class). ``normalize``: each row as
    a share of its true class (in %), so classes of different sizes compare; counts otherwise.
    Cells are annotated when there are at most 20 classes."""
    matrix = np.asarray(matrix, dtype=float)
    k = len(classes)
    shown = matrix
    if normalize:
        totals = matrix.sum(1, keepdims=True)
        shown = np.divide(100 * matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    side = min(9.0, 2.0 + 0.45 * k)
    fig, ax = _axes(ax, figsize=(side + 1.2, side))
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=100 if normalize else None)
    fig.colorbar(image, ax=ax, shrink=0.8,
                 label="share of the true class (%)" if normalize else "images")
    ticks = np.arange(k)
    ax.set_xticks(ticks, [str(c) for c in classes], rotation=90 if k > 10 else 0)
    ax.set_yticks(ticks, [str(c) for c in classes])
    if k <= 20:
        threshold = shown.max() / 2 if shown.size else 0
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    text = f"{shown[i, j]:.0f}" if normalize else f"{int(matrix[i, j])}"
                    ax.text(j, i, text, ha="center", va="center", fontsize="x-small",
                            color="white" if shown[i, j] > threshold else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title(title)
    return fig


def plot_histogram_grid(panels: dict, ncols: int = 4, bins: int = 30, xlabel=None,
                        ylabel="count", density: bool = False, sharex: bool = True):
    """One panel per title -> {label: values}, each drawn by plot_histograms (overlaid step
    histograms on common bins), ``ncols`` panels per row; the legend is on the first panel."""
    titles = list(panels)
    ncols = max(1, min(ncols, len(titles)))
    nrows = math.ceil(len(titles) / ncols)
    fig = Figure(figsize=(3.6 * ncols, 2.9 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex).ravel()
    for i, (ax, title) in enumerate(zip(axes, titles)):
        plot_histograms(panels[title], bins=bins, ax=ax, xlabel=xlabel, ylabel=ylabel,
                        title=title, density=density)
        if i > 0 and ax.get_legend() is not None:
            ax.get_legend().remove()
    for ax in axes[len(titles):]:
        ax.set_visible(False)
    return fig


__all__ += ["plot_image_grid", "plot_confusion_matrix", "plot_histogram_grid"]


def plot_seed_dots(df, x: str, y: str, seed: str = "seed", order=None, ax=None, xlabel=None,
                   ylabel=None, title=None, highlight=None):
    """One dot per run (e.g. per seed) of ``y`` for each category of ``x``, spread sideways a
    little by seed so that equal values stay visible, with each category's mean as a bar line.
    ``order``: the categories left to right (default: as they appear); ``highlight``: categories
    drawn in a second colour (e.g. the reference and LSLU)."""
    df = _as_frame(df)
    cats = list(order) if order is not None else list(dict.fromkeys(df[x]))
    seeds = sorted(df[seed].unique().tolist())
    offsets = {s: (i - (len(seeds) - 1) / 2) * min(0.5 / max(len(seeds), 1), 0.12)
               for i, s in enumerate(seeds)}
    highlight = set(highlight or [])
    fig, ax = _axes(ax, figsize=(max(6.4, 0.8 * len(cats) + 2), 4.0))
    for i, cat in enumerate(cats):
        part = df[df[x] == cat]
        if part.empty:
            continue
        color = "C3" if cat in highlight else "C0"
        ax.scatter(i + part[seed].map(offsets).to_numpy(), part[y], s=28, color=color,
                   alpha=0.8, zorder=3, label=None)
        ax.hlines(part[y].mean(), i - 0.3, i + 0.3, color="k", lw=1.5, zorder=2)
    ax.set_xticks(np.arange(len(cats)), [str(c) for c in cats], rotation=30, ha="right")
    ax.plot([], [], "o", color="C0", label="one run (seed)")
    if highlight:
        ax.plot([], [], "o", color="C3", label=", ".join(sorted(highlight)))
    ax.plot([], [], "-", color="k", label="mean over seeds")
    _style(ax, xlabel or x, ylabel or y, title)
    return fig


__all__ += ["plot_seed_dots"]


def plot_latency(table, ncols: int = 3):
    """Latency per graph and activation (from analysis.latency_table): one panel per (input
    size, batch), one bar per graph x activation at the median, whiskers from p10 to p90."""
    df = _as_frame(table)
    panels = list(dict.fromkeys(zip(df["input_size"], df["batch"])))
    labels = list(dict.fromkeys(zip(df["graph"], df["activation"])))
    ncols = max(1, min(ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(3.6 * ncols, 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (size, batch) in zip(axes, panels):
        part = df[(df["input_size"] == size) & (df["batch"] == batch)]
        for j, (graph, act) in enumerate(labels):
            row = part[(part["graph"] == graph) & (part["activation"] == act)]
            if row.empty:
                continue
            r = row.iloc[0]
            err = [[r["median_ms"] - r["p10"]], [r["p90"] - r["median_ms"]]]
            ax.bar(j, r["median_ms"], 0.7, yerr=err, capsize=3, color=f"C{j}",
                   label=f"{graph}, {act}")
        ax.set_xticks(range(len(labels)), [f"{g}\n{a}" for g, a in labels], fontsize="small")
        _style(ax, None, "latency (ms)", f"{size} px, batch {batch}", legend=False)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return fig


__all__ += ["plot_latency"]


# ---------------------------------------------------------------------------------------------
# Sweeps (E3: n, E5: dropout) and marks on trajectory plots (E4)
# ---------------------------------------------------------------------------------------------
def plot_sweep(table, x: str, y: str = "top1_mean", yerr: str | None = "top1_std",
               hue: str | None = "model", ax=None, xlabel=None, ylabel=None, title=None):
    """``y`` against the swept setting ``x``, one line with markers per ``hue`` (e.g. per model),
    with ± ``yerr`` error bars where it is defined (NaN, e.g. the std of one seed, draws none).
    ``table``: e.g. experiments.sweep_table. The swept values label the x ticks."""
    df = _as_frame(table)
    fig, ax = _axes(ax)
    groups = df.groupby(hue, sort=False) if hue else [(None, df)]
    for name, part in groups:
        part = part.sort_values(x)
        err = None
        if yerr is not None and part[yerr].notna().any():
            err = part[yerr].fillna(0.0).to_numpy()
        ax.errorbar(part[x], part[y], yerr=err, marker="o", ms=5, lw=1.8, capsize=4,
                    label=None if hue is None else str(name))
    levels = sorted(df[x].unique().tolist())
    ax.set_xticks(levels, [f"{v:g}" if isinstance(v, float) else str(v) for v in levels])
    _style(ax, xlabel or x, ylabel or y, title)
    return fig


def mark_epoch(fig, epoch, label: str = "end of the λ ramp"):
    """Draw a dashed vertical line at ``epoch`` on every visible axes of ``fig`` (e.g. where
    VanillaNet's deep-training λ reaches 1), named in the legend of the first axes. Nothing is
    drawn when ``epoch`` is None. Returns ``fig``."""
    if epoch is None:
        return fig
    axes = [ax for ax in fig.axes if ax.get_visible()]
    for i, ax in enumerate(axes):
        ax.axvline(epoch, color="0.35", ls="--", lw=1.2, zorder=1,
                   label=label if i == 0 else None)
    if axes and axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(frameon=False, fontsize="small")
    return fig


__all__ += ["plot_sweep", "mark_epoch"]


def plot_headline_gains(frame, paper_gain: float | None = None, ax=None,
                        title="Gains reported by the chapters", wrap: int = 48):
    """Horizontal bars of every headline gain (rows of experiments.headline_frame with unit 'pp'
    whose quantity names a gain, and a numeric value), labelled 'experiment: quantity' (wrapped
    at ``wrap`` characters), with the paper's one public gain as a dashed line when given. No
    such rows: an empty panel that says so."""
    import textwrap
    df = _as_frame(frame)
    if len(df):
        numeric = pd.to_numeric(df["ours"], errors="coerce")
        keep = (df["unit"] == "pp") & numeric.notna() & df["quantity"].str.contains("gain",
                                                                                   case=False)
        rows, values = df[keep], numeric[keep].to_numpy()
    else:
        rows, values = df, np.array([])
    labels = [textwrap.fill(f"{e}: {q}", wrap) for e, q in zip(rows.get("experiment", []),
                                                                rows.get("quantity", []))]
    height = sum(0.22 * (label.count("\n") + 1) + 0.2 for label in labels)
    fig, ax = _axes(ax, figsize=(9.0, max(2.5, height + 1.5)))
    if len(rows):
        pos = np.arange(len(rows))[::-1]
        ax.barh(pos, values, color=["C0" if v >= 0 else "C3" for v in values])
        ax.set_yticks(pos, labels, fontsize="small")
        ax.axvline(0, color="k", lw=0.8)
    else:
        ax.text(0.5, 0.5, "no chapter reported a gain in pp", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_yticks([])
    if paper_gain is not None:
        ax.axvline(paper_gain, color="C1", ls="--", lw=1.5,
                   label=f"paper: +{paper_gain:g} pp (VanillaNet, CIFAR-100)")
    _style(ax, "gain (pp)", None, title)
    return fig


__all__ += ["plot_headline_gains"]


def plot_selectivity_by_depth(table, ax=None, title="Mean class selectivity per layer"):
    """Mean class selectivity index per activation layer against depth, one colour per model
    (``table``: analysis.selectivity_table): solid with the true labels, dotted with the labels
    shuffled (the chance level), when the table has that column."""
    df = _as_frame(table)
    fig, ax = _axes(ax)
    for i, (label, part) in enumerate(df.groupby("model", sort=False)):
        part = part.sort_values("depth")
        ax.plot(part["depth"], part["mean SI"], marker="o", ms=4, lw=1.8, color=f"C{i}",
                label=label)
        if "mean SI, shuffled labels" in part:
            ax.plot(part["depth"], part["mean SI, shuffled labels"], marker=".", ms=4, lw=1.2,
                    ls=":", color=f"C{i}", label=f"{label}, labels shuffled")
    ax.set_xticks(sorted(df["depth"].unique()))
    ax.set_ylim(bottom=0)
    _style(ax, "activation layer (1 = stem)", "mean class selectivity index", title)
    return fig


__all__ += ["plot_selectivity_by_depth"]

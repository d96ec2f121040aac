"""Chapter 08 (E7): time to a target accuracy, with and without LSLU (the runs of chapters 02/03:
lslu.chapters.cifar)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..train import TrainConfig
from .cifar import configs  # noqa: F401  (chapter 08 trains the runs of chapters 02/03)
from .cifar import plot_with_and_without
from .common import Headline
from .plots import page_grid


def check_target_accuracy(target) -> float:
    """``target`` as a float, or ValueError unless it is a fraction in (0, 1]."""
    if isinstance(target, bool) or not isinstance(target, (int, float)) \
            or not 0.0 < float(target) <= 1.0:
        raise ValueError(f"target accuracy is a fraction in (0, 1] (0.9 means 90% top-1), "
                         f"got {target!r}")
    return float(target)


def time_to_accuracy(result, target: float):
    """(epochs, seconds) a run took to first reach validation top-1 >= ``target`` (a fraction,
    e.g. 0.9): the epoch number at the end of which it got there, and the training seconds up to
    the end of that epoch (the running sum of ``epoch_time``: training steps only, evaluation
    excluded). (None, None) when the run never reaches ``target``."""
    target = check_target_accuracy(target)
    seconds = 0.0
    for i, epoch in enumerate(result.history, start=1):
        seconds += float(epoch["epoch_time"])
        if epoch["val_acc"] >= target:
            return int(epoch.get("epoch", i)), seconds
    return None, None


def convergence_table(results, target: float) -> pd.DataFrame:
    """One row per run: model, activation ('baseline'/'lslu'), act_fn, seed, epochs_to_target
    and seconds_to_target (time_to_accuracy; NaN when not reached), epochs run, training seconds
    per epoch and the final top-1 (%)."""
    rows = []
    for r in results:
        c = r.config
        epochs, seconds = time_to_accuracy(r, target)
        times = [h["epoch_time"] for h in r.history]
        rows.append({"model": c["model"], "activation": c["activation"] or "baseline",
                     "act_fn": TrainConfig(**c).resolved_activation,
                     "dataset": c["dataset"], "seed": c["seed"],
                     "epochs_to_target": float("nan") if epochs is None else epochs,
                     "seconds_to_target": float("nan") if seconds is None else seconds,
                     "epochs": len(r.history), "seconds_per_epoch": sum(times) / len(times),
                     "top1": 100 * r.history[-1]["val_acc"]})
    return pd.DataFrame(rows)


def _median_or_inf(values) -> float:
    """Median over seeds, a run that never reached the target counting as infinitely slow."""
    return float(np.median(np.nan_to_num(np.asarray(values, float), nan=np.inf)))


def _faster(lslu: float, baseline: float) -> str:
    if math.isinf(lslu) and math.isinf(baseline):
        return "neither reaches the target"
    if lslu < baseline:
        return "yes"
    return "no, the same" if lslu == baseline else "no"


#: Seconds are compared only when the runs of each arm took about as long per epoch (the
#: slowest at most this many times the fastest); beyond it they were trained under different
#: loads (other jobs on the machine, runs in parallel), and their seconds measure the load.
EVEN_LOAD_RATIO = 1.25


def _uneven_load(*arms: pd.DataFrame) -> str | None:
    """Why seconds cannot be compared, if the seconds per epoch within an arm vary by more than
    EVEN_LOAD_RATIO; else None."""
    per_epoch = [arm["seconds_per_epoch"] for arm in arms]
    if all(t.max() <= EVEN_LOAD_RATIO * t.min() for t in per_epoch):
        return None
    low, high = min(t.min() for t in per_epoch), max(t.max() for t in per_epoch)
    return f"not judged: an epoch took {low:.0f} to {high:.0f} s within an arm (uneven loads)"


def convergence_verdict(table: pd.DataFrame) -> pd.DataFrame:
    """Per model (from convergence_table): the median over seeds of epochs and seconds to the
    target for the baseline and for LSLU (inf: not reached by most seeds), how many seeds
    reached it, and whether LSLU gets there in fewer epochs / seconds ('yes', 'no',
    'no, the same' or 'neither reaches the target'; for seconds 'not judged: ...' when the runs
    of an arm were trained under visibly different loads, see EVEN_LOAD_RATIO)."""
    rows = []
    for model, sub in table.groupby("model", sort=False):
        base, lslu = sub[sub.activation == "baseline"], sub[sub.activation == "lslu"]
        if base.empty or lslu.empty:
            continue
        row = {"model": model, "baseline": base["act_fn"].iloc[0]}
        for what in ("epochs", "seconds"):
            b = _median_or_inf(base[f"{what}_to_target"])
            s = _median_or_inf(lslu[f"{what}_to_target"])
            row |= {f"baseline {what}": b, f"LSLU {what}": s,
                    f"LSLU in fewer {what}": _faster(s, b)}
        row["LSLU in fewer seconds"] = _uneven_load(base, lslu) or row["LSLU in fewer seconds"]
        row["seeds reached (baseline/LSLU)"] = (
            f"{base['epochs_to_target'].notna().sum()}/{len(base)} vs "
            f"{lslu['epochs_to_target'].notna().sum()}/{len(lslu)}")
        rows.append(row)
    return pd.DataFrame(rows)


def _count_text(value, digits: int = 0) -> str:
    return "not reached" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def convergence_display(table: pd.DataFrame, seconds: bool = False) -> pd.DataFrame:
    """convergence_table or convergence_verdict for a page: epochs to the target as whole
    numbers (medians with one decimal) or 'not reached'; seconds (1 decimal) only if
    ``seconds`` (they vary from run to run and machine to machine)."""
    t = table.copy()
    if "epochs_to_target" in t:  # one row per run
        out = t[["model", "act_fn", "seed"]].rename(columns={"act_fn": "activation"})
        out["epochs to target"] = [_count_text(v) for v in t["epochs_to_target"]]
        out["final top-1 (%)"] = t["top1"].round(1)
        if seconds:
            out["seconds to target"] = [_count_text(v, 1) for v in t["seconds_to_target"]]
            out["seconds / epoch"] = t["seconds_per_epoch"].round(1)
        return out
    keep = ["model", "baseline", "baseline epochs", "LSLU epochs", "LSLU in fewer epochs"]
    if seconds:
        keep += ["baseline seconds", "LSLU seconds", "LSLU in fewer seconds"]
    out = t[keep + ["seeds reached (baseline/LSLU)"]].copy()
    for col in ("baseline epochs", "LSLU epochs"):
        out[col] = [_count_text(v, 0 if float(v).is_integer() else 1) for v in t[col]]
    for col in ("baseline seconds", "LSLU seconds"):
        if col in out:
            out[col] = [_count_text(v, 1) for v in t[col]]
    return out


def verdict_display(verdict: pd.DataFrame, seconds: bool = False) -> pd.DataFrame:
    """convergence_verdict as a narrow page table (show it with common.show_table): epochs, or
    with ``seconds`` only the seconds, with short column names, so that it fits the text column
    (convergence_display keeps the long names that the page's sentences quote)."""
    what = "seconds" if seconds else "epochs"
    shown = convergence_display(verdict, seconds=seconds)
    out = pd.DataFrame({"model": shown["model"], "baseline": shown["baseline"],
                        f"{what}: baseline": shown[f"baseline {what}"],
                        f"{what}: LSLU": shown[f"LSLU {what}"],
                        "LSLU sooner": shown[f"LSLU in fewer {what}"]})
    if not seconds:  # the seeds that reached the target, once
        out["reached (base vs LSLU)"] = shown["seeds reached (baseline/LSLU)"]
    return out


def convergence_headline_rows(table: pd.DataFrame, target: float, experiment: str = "E7"
                              ) -> list[dict]:
    """Rows for save_headline: per model and activation, the median over seeds of
    the epochs and the seconds to ``target`` (2 decimals, or 'not reached')."""
    rows = []
    for (model, act_fn), sub in table.groupby(["model", "act_fn"], sort=False):
        data = ", ".join(sorted(set(sub["dataset"])))
        for what, unit in (("epochs", "epochs"), ("seconds", "s")):
            value = _median_or_inf(sub[f"{what}_to_target"])
            rows.append(Headline(
                experiment=experiment,
                quantity=f"{what} to {100 * target:g}% top-1, {model} + {act_fn} on {data}",
                ours=round(value, 2) if value != float("inf") else "not reached", unit=unit))
    return rows


def plot_convergence(curves, target: float | None = None,
                     panels=(("val_acc", "validation top-1 (%)"), ("train_loss", "training loss"),
                             ("val_loss", "validation loss"))):
    """Panels of plot_with_and_without, one per (column, axis label) in ``panels``, two per row
    (plots.page_grid); ``target`` (in the units of the first panel) is drawn on the first one."""
    nrows, ncols, figsize = page_grid(len(panels), panel_height=3.2)
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for i, (ax, (column, label)) in enumerate(zip(axes, panels)):
        plot_with_and_without(curves, column, ax=ax, ylabel=label, title=label,
                              target=target if i == 0 else None)
        if i > 0 and ax.get_legend() is not None:
            ax.get_legend().remove()
    return fig

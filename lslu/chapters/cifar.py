"""Chapters 02 (E1, CIFAR-10) and 03 (E2, CIFAR-100): every model with its baseline activation and
with LSLU, over seeds. Chapters 07 (E6) and 08 (E7) and 09 (E8) train the same comparison and use
this module's tables and figures."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.container import BarContainer

from ..results import RunResult
from ..train import TrainConfig
from ..paper import NOT_AVAILABLE, paper_text
from .common import (PP_DECIMALS, Headline, base_from, compare, fmt_interval, fmt_p, fmt_pct,
                     fmt_pp, grid, mean_std_text, paper_number, per_seed_evidence, results_frame,
                     run_label, summarize, wrap)
from .plots import as_frame, new_axes, plot_bars_with_error, style_axes


#: The settings of the reference recipe (TrainConfig.reference_recipe) that a run must share to
#: be compared with the paper's numbers.
PAPER_RECIPE_FIELDS = ("dataset", "model", "input_size", "epochs", "batch_size", "optimizer", "lr",
                       "weight_decay", "warmup_epochs", "min_lr", "decay_epochs", "drop_rate",
                       "rand_augment", "mixup", "cutmix", "smoothing", "bce", "random_erasing",
                       "ema_decay")


#: The activation axis of "with vs without LSLU": None is the model's own (VanillaNet's series
#: activation, ResNet's ReLU).
WITH_AND_WITHOUT = [None, "lslu"]

#: Why display_table's "ref. best top-1" differs from its "top-1" (lslu.train.reference_best).
REFERENCE_BEST_NOTE = (
    "ref. best top-1 is the number the reference code reports: the maximum test accuracy over "
    "its evaluation epochs (of 300: every 20th, then every one after 260), a choice made on the "
    "test set, so it is optimistic; top-1 is the accuracy after the last epoch, which this "
    "book reports.")


def with_and_without_lslu_configs(base: dict, models, seeds) -> list[TrainConfig]:
    """The validated configs of "with vs without LSLU": every model in ``models`` with its
    baseline activation and with LSLU, for every seed (models outermost, then activation)."""
    return grid(base, model=models, activation=WITH_AND_WITHOUT, seed=seeds)


def history_frame(results: list[RunResult]) -> pd.DataFrame:
    """One row per run and epoch: model, activation ('baseline'/'lslu'), act_fn, label, seed,
    epoch, train_loss, val_loss, val_acc (%), epoch_time and its running sum (train_seconds)."""
    rows = []
    for r in results:
        c = r.config
        elapsed = 0.0
        for h in r.history:
            elapsed += h["epoch_time"]
            rows.append({"model": c["model"], "activation": c["activation"] or "baseline",
                         "act_fn": TrainConfig(**c).resolved_activation, "label": run_label(c),
                         "seed": c["seed"], "epoch": h["epoch"], "train_loss": h["train_loss"],
                         "val_loss": h["val_loss"], "val_acc": 100 * h["val_acc"],
                         "epoch_time": h["epoch_time"], "train_seconds": elapsed})
    return pd.DataFrame(rows)


def mean_curves(history: pd.DataFrame) -> pd.DataFrame:
    """history_frame averaged over seeds: one row per (model, activation, epoch)."""
    keys = ["model", "activation", "act_fn", "label", "epoch"]
    values = ["train_loss", "val_loss", "val_acc", "epoch_time", "train_seconds"]
    out = history.groupby(keys, sort=False)[values].mean().reset_index()
    return out.assign(seeds=history.groupby(keys, sort=False)["seed"].nunique().to_numpy())


@dataclass
class LsluComparison:
    """What with_and_without_lslu returns.

    results: the RunResults; frame: results_frame plus a ``label`` column (one row per run);
    table: per model and activation, top-1 mean/std (%) over seeds, params of the train and
    deploy graphs, MFLOPs per image; gains: compare of LSLU against the baseline per
    model (pp, Welch p-value, bootstrap 95% interval; NaN with fewer than 2 seeds);
    history: history_frame; curves: mean_curves (per epoch, mean over seeds).
    """
    results: list
    frame: pd.DataFrame
    table: pd.DataFrame
    gains: pd.DataFrame
    history: pd.DataFrame
    curves: pd.DataFrame

    @property
    def seeds(self) -> list[int]:
        return sorted(self.frame["seed"].unique().tolist())

    @property
    def datasets(self) -> list[str]:
        return sorted(self.frame["dataset"].unique().tolist())

    def display_table(self) -> pd.DataFrame:
        """``table`` for the page: top-1 in % with the shared rounding (common.PP_DECIMALS;
        'mean ± std' with >1 seed); show it with common.show_table."""
        t = self.table
        top1 = [mean_std_text(m, s, n, PP_DECIMALS)
                for m, s, n in zip(t["top1_mean"], t["top1_std"], t["seeds"])]
        shown = pd.DataFrame({
            "model": t["model"], "activation": t["act_fn"], "top-1 (%)": top1,
            "seeds": t["seeds"], "params (train)": t["params"],
            "params (deploy)": t["params_deploy"],
            "MFLOPs / image (train graph)": t["mflops"].round(1),
        })
        if self.has_reference_best:
            shown.insert(3, "ref. best top-1 (%)", self._reference_best_texts())
        return shown

    @property
    def has_reference_best(self) -> bool:
        """Whether the runs used the reference recipe's pipeline (the `paper` profile) and stored
        the reference's "best" top-1: then display_table shows it beside the final top-1."""
        f = self.frame
        return ({"ref_best_top1", "pipeline"} <= set(f.columns)
                and bool((f["pipeline"] == "reference").any())
                and bool(f["ref_best_top1"].notna().any()))

    def _reference_best_texts(self) -> list[str]:
        """Per row of ``table``: the reference's best top-1, mean ± std over seeds; 'n/a' when
        a run of the row lacks it (stored before it was recorded)."""
        texts = []
        for _, row in self.table.iterrows():
            runs = self.frame[(self.frame["model"] == row["model"])
                              & (self.frame["activation"] == row["activation"])]
            values = runs["ref_best_top1"]
            texts.append("n/a" if values.isna().any() else
                         mean_std_text(values.mean(), values.std(), len(values), PP_DECIMALS))
        return texts

    def reference_best_note(self) -> str:
        """The sentence that goes with display_table's reference-best column ('' without it)."""
        if not self.has_reference_best:
            return ""
        return wrap(REFERENCE_BEST_NOTE)

    def display_gains(self) -> pd.DataFrame:
        """``gains`` for the page with the shared rounding (common.fmt_pp, fmt_p,
        fmt_interval), 'n/a' where fewer than 2 seeds per arm make them undefined."""
        g = self.gains
        return pd.DataFrame({
            "model": g["model"], "LSLU gain (pp)": [fmt_pp(v) for v in g["gain"]],
            "Welch p": [fmt_p(p) for p in g["p_value"]],
            "bootstrap 95% interval (pp)": [fmt_interval(lo, hi)
                                            for lo, hi in zip(g["ci_low"], g["ci_high"])],
            "seeds (baseline/LSLU)": g["seeds"],
            "significant at 0.05": ["n/a" if pd.isna(p) else "yes" if s else "no"
                                    for p, s in zip(g["p_value"], g["significant"])],
        })

    def gain(self, model: str) -> float:
        """LSLU's mean top-1 gain over the baseline for ``model``, in percentage points."""
        return float(self.gains.loc[self.gains["model"] == model, "gain"].iloc[0])

    def _arms(self, model: str):
        t = self.table[self.table["model"] == model].set_index("activation")
        return t.loc["baseline"], t.loc["lslu"]

    def summary_lines(self) -> list[str]:
        """One line per model (wrapped to the page): baseline and LSLU top-1, the gain, and its
        significance, with the shared rounding."""
        lines = []
        for _, g in self.gains.iterrows():
            base, lslu = self._arms(g["model"])
            if pd.isna(g["p_value"]) and len(self.seeds) < 2:
                sig = f"no test with {len(self.seeds)} seed"
            elif pd.isna(g["p_value"]):
                sig = "no test: top-1 does not vary over the seeds"
            else:
                sig = (f"Welch p = {fmt_p(g['p_value'])}, 95% interval "
                       f"{fmt_interval(g['ci_low'], g['ci_high'])} pp, significant at 0.05: "
                       f"{'yes' if g['significant'] else 'no'}")
            lines.append(wrap(f"{g['model']}: {base['act_fn']} {fmt_pct(base['top1_mean'])}% -> "
                              f"LSLU {fmt_pct(lslu['top1_mean'])}% top-1, gain "
                              f"{fmt_pp(g['gain'])} pp ({sig})"))
        return lines

    def paper_vs_ours(self, experiment: str, paper_setting: str | None = None) -> pd.DataFrame:
        """Per model: top-1 of both arms, the gain, params and FLOPs, beside the paper's value of
        ``experiment`` (E1, E2, E6; lslu.paper: NOT_AVAILABLE where it has none, and always for
        params and FLOPs). ``paper_setting`` (e.g. 'VanillaNet-5, CIFAR-100') follows every paper
        value, so that the table says what it was measured on."""
        rows = []
        for model in dict.fromkeys(self.table["model"]):
            base, lslu = self._arms(model)
            ours = [(f"top-1, {base['act_fn']} (%)", fmt_pct(base['top1_mean']), "top1_baseline"),
                    ("top-1, lslu (%)", fmt_pct(lslu['top1_mean']), "top1_lslu"),
                    ("LSLU gain (pp)", fmt_pp(self.gain(model)), "gain"),
                    ("params train / deploy, baseline",
                     f"{base['params']:,} / {base['params_deploy']:,}", None),
                    ("params train / deploy, lslu",
                     f"{lslu['params']:,} / {lslu['params_deploy']:,}", None),
                    ("MFLOPs / image, baseline / lslu",
                     f"{base['mflops']:.1f} / {lslu['mflops']:.1f}", None)]
            for quantity, value, key in ours:
                paper = NOT_AVAILABLE if key is None else _paper_cell(experiment, model, key,
                                                                      paper_setting)
                rows.append({"model": model, "quantity": quantity, "paper": paper, "ours": value})
        return pd.DataFrame(rows).set_index(["model", "quantity"])

    def headline_rows(self, experiment: str, paper_setting: str | None = None) -> list[dict]:
        """Rows for save_headline: top-1 of every arm and the gain per model (2 decimals), with
        the paper's gain of ``experiment`` (lslu.paper). ``paper_setting`` (e.g. 'VanillaNet-5,
        CIFAR-100') is added to the quantity of a row that has a paper value, so that the
        summary says what that value was measured on."""
        setting = f" (paper: {paper_setting})" if paper_setting else ""
        data = ", ".join(self.datasets)
        rows = [Headline(experiment=experiment, quantity=f"top-1, {r['label']} on {data}",
                         ours=round(float(r["top1_mean"]), 2), unit="%")
                for _, r in self.table.iterrows()]
        for _, g in self.gains.iterrows():
            paper = _paper_cell(experiment, g["model"], "gain")
            # the per-seed evidence: the summary's interval, and one row for runs that several
            # chapters (E1, E2, E6, E7, E8) share
            arms = self.frame[self.frame["model"] == g["model"]]
            rows.append(Headline(
                experiment=experiment,
                quantity=f"LSLU gain, {g['model']} on {data}"
                         + (setting if paper != NOT_AVAILABLE else ""),
                ours=round(float(g["gain"]), 2), paper=paper, unit="pp",
                **per_seed_evidence(arms[arms["activation"] == "baseline"],
                                    arms[arms["activation"] == "lslu"])))
        return rows


def _paper_cell(experiment: str, model: str, quantity: str, setting: str | None = None) -> str:
    """The paper's top-1 / gain as a table cell (gains signed), with its setting if given."""
    value = paper_number(experiment, model, quantity)
    if value is None:
        return NOT_AVAILABLE
    return paper_text(value, signed=quantity == "gain") + (f" ({setting})" if setting else "")


def configs(*, models, seeds, **settings) -> list[TrainConfig]:
    """The runs of chapters 02, 03 and 08: with_and_without_lslu_configs over the notebook's
    ``models`` and ``seeds``; ``settings``: the other notebook parameters (common.base_from:
    ``dataset``, ``epochs`` and ``extra`` enter the runs, the rest is ignored)."""
    return with_and_without_lslu_configs(base_from(settings), models, seeds)


def with_and_without_lslu(results: list[RunResult]) -> LsluComparison:
    """Tabulate the finished runs of with_and_without_lslu_configs: see LsluComparison."""
    frame = results_frame(results)
    frame.insert(2, "label", [run_label(r.config) for r in results])
    keys = ["model", "activation", "act_fn", "label"]
    stats = summarize(frame, keys)
    costs = frame.groupby(keys, sort=False)[["params", "params_deploy", "flops"]].first()
    table = stats.merge(costs.reset_index(), on=keys)
    table["mflops"] = table.pop("flops") / 1e6
    gains = compare(frame, ["model"], "activation", "baseline")
    history = history_frame(results)
    return LsluComparison(results, frame, table, gains, history, mean_curves(history))


def paper_gain_comparability(base: dict, model: str) -> tuple[bool, list[str]]:
    """Whether a measured gain of ``model`` under ``base`` is comparable with the paper's gain
    (E2 of lslu.paper: VanillaNet-5 on CIFAR-100 with the reference recipe,
    TrainConfig.reference_recipe()), and every setting that differs ('name: ours vs reference')."""
    reference = TrainConfig.reference_recipe().to_dict()
    ours = TrainConfig(**(dict(base) | {"model": model})).to_dict()
    diffs = [f"{k}: {ours[k]!r} vs {reference[k]!r}" for k in PAPER_RECIPE_FIELDS
             if ours[k] != reference[k]]
    return not diffs, diffs


def plot_with_and_without(curves, y: str = "val_acc", ax=None, ylabel=None, title=None,
                          target: float | None = None):
    """``y`` per epoch, one line per model x activation (column ``label``); ``target`` draws a
    horizontal dotted line (e.g. the accuracy target of a time-to-accuracy table)."""
    df = as_frame(curves)
    fig, ax = new_axes(ax)
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
    style_axes(ax, "epoch", ylabel or y, title)
    return fig


def plot_top1_bars(frame, value: str = "top1", ax=None, title=None):
    """Final top-1 per model, baseline activation vs LSLU, mean over seeds with ± std error bars
    (none with one seed) and the mean written on each bar. ``frame``: results_frame
    (columns model, activation, act_fn, ``value``)."""
    df = as_frame(frame).copy()
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

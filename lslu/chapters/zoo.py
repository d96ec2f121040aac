"""Chapter 11 (beyond the paper): every registered activation in one harness, on one model, over
seeds, ranked, with the gain of each over a reference activation."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from ..activations import ACTIVATIONS, check_activation
from ..models import BASELINE_ACTIVATION, MODELS
from ..train import TrainConfig
from .common import (PP_DECIMALS, Headline, base_from, compare, fmt_interval, fmt_p, fmt_pp,
                     grid, mean_std_text, per_seed_evidence, significance_note, summarize,
                     wrap)
from .plots import as_frame, new_axes, style_axes


# Every registered activation (lslu.activations.ACTIVATIONS): a new one joins the zoo by itself.
ZOO_ACTIVATIONS = tuple(ACTIVATIONS)


def activation_setting(model: str, activation: str) -> str | None:
    """The TrainConfig.activation for ``activation`` on ``model``: None when it is the model's
    baseline (VanillaNet's 'series', ResNet's 'relu'), so that the run is the very run the other
    chapters train as their baseline and comes from the results store; else the name itself."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; valid: {', '.join(MODELS)}")
    check_activation(activation)
    return None if activation == BASELINE_ACTIVATION[model] else activation


def zoo_configs(base: dict, model: str, activations, seeds, reference: str) -> list[TrainConfig]:
    """The validated configs of the zoo: ``model`` with every activation of ``activations`` for
    every seed (activations outermost). ``reference`` must be one of ``activations``."""
    # named as the notebook parameter the user set
    for name, values in (("activations", activations), ("zoo_seeds", seeds)):
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"{name} needs a non-empty list, got {values!r}")
        if len(set(values)) != len(values):
            raise ValueError(f"{name} has duplicates: {list(values)}")
    for act in activations:  # unknown names first: the clearest message
        check_activation(act)
    if reference not in activations:
        raise ValueError(f"reference_activation {reference!r} is not among the activations "
                         f"{list(activations)}")
    configs = []
    for act in activations:
        configs += grid(base, model=[model], activation=[activation_setting(model, act)],
                        seed=list(seeds))
    return configs


def zoo_summary(frame: pd.DataFrame, reference: str, alpha: float = 0.05) -> pd.DataFrame:
    """Per activation (``act_fn`` of results_frame): top-1 mean/std (%) over seeds, seeds,
    params, MFLOPs, and the gain over ``reference`` (pp) with Welch p-value, bootstrap 95%
    interval and significance at ``alpha`` (compare). Sorted by mean top-1, best
    first (ties: by name)."""
    stats = summarize(frame, ["act_fn"])
    costs = frame.groupby("act_fn", sort=False)[["params", "flops"]].first().reset_index()
    table = stats.merge(costs, on="act_fn")
    table["mflops"] = table.pop("flops") / 1e6
    gains = compare(frame, [], "act_fn", reference, alpha=alpha)
    if gains.empty:
        gains = pd.DataFrame(columns=["act_fn", "gain", "p_value", "ci_low", "ci_high",
                                      "significant"])
    table = table.merge(gains[["act_fn", "gain", "p_value", "ci_low", "ci_high", "significant"]],
                        on="act_fn", how="left")
    is_ref = table["act_fn"] == reference
    table.loc[is_ref, "gain"] = 0.0
    table["significant"] = table["significant"].astype(object).where(~is_ref, None)
    table = table.sort_values(["top1_mean", "act_fn"], ascending=[False, True], kind="stable")
    return table.reset_index(drop=True)


def zoo_display(summary: pd.DataFrame, reference: str) -> pd.DataFrame:
    """zoo_summary for the page with the shared rounding (common: fmt_pp, fmt_p, fmt_interval,
    mean_std_text): top-1 'mean ± std' in %, gain in pp, p-value, interval; 'ref.' for the
    reference activation, 'n/a' where a test does not apply."""
    rows = []
    for rank, r in enumerate(summary.itertuples(index=False), start=1):
        ref = r.act_fn == reference
        top1 = mean_std_text(r.top1_mean, r.top1_std, r.seeds, PP_DECIMALS)
        # short headers: the table must fit the text column (the page's prose explains them)
        rows.append({
            "rank": rank, "activation": r.act_fn, "top-1 (%)": top1, "seeds": r.seeds,
            "params": r.params, "MFLOPs": round(r.mflops, 1),
            "gain (pp)": "ref." if ref else fmt_pp(r.gain),
            "Welch p": "ref." if ref else fmt_p(r.p_value),
            "95% CI (pp)": "ref." if ref else fmt_interval(r.ci_low, r.ci_high),
            "p < 0.05": "ref." if ref else ("yes" if r.significant else "no"),
        })
    return pd.DataFrame(rows).set_index("rank")


def power_note(seeds, alpha: float = 0.05) -> str:
    """How much the number of seeds per arm allows a test to detect, computed: the |t| Welch's
    test needs for p < alpha (its degrees of freedom lie between n-1 and 2n-2 with n seeds per
    arm), and how many distinct means a bootstrap resample of n values can take."""
    n = len(seeds)
    if n < 2:
        return significance_note(seeds)
    lo_df, hi_df = n - 1, 2 * n - 2
    t_hi = stats.t.ppf(1 - alpha / 2, lo_df)
    t_lo = stats.t.ppf(1 - alpha / 2, hi_df)
    distinct = math.comb(2 * n - 1, n)
    return wrap(f"{n} seeds per activation: Welch's test has {lo_df} to {hi_df} degrees of "
            f"freedom, so a gain is significant at {alpha} only if |t| exceeds {t_lo:.2f} to "
            f"{t_hi:.2f}; a bootstrap resample of {n} values can take only {distinct} distinct "
            f"means, so its interval is coarse. With so few seeds 'not significant' means 'not "
            f"enough seeds to tell', not 'no effect'.")  # wrapped: printed in the page


def zoo_headlines(summary: pd.DataFrame, reference: str, model: str, dataset: str,
                  seeds, candidate: str = "lslu", frame: pd.DataFrame | None = None
                  ) -> list[dict]:
    """The zoo chapter's headline rows (save_headline, experiment 'beyond'): the best
    activation by mean top-1, the rank of ``candidate`` (LSLU), its gain over ``reference`` in pp
    and whether that gain is significant (Welch, 0.05) with the number of seeds. ``frame``
    (results_frame of the runs) adds the per-seed top-1 of both arms and their run ids to the
    gain row, for the summary's interval."""
    where = f"{model} on {dataset}"
    best = summary.iloc[0]
    rows = [Headline(experiment="beyond", quantity=f"zoo: best activation by mean top-1, {where}",
                     ours=f"{best['act_fn']} ({best['top1_mean']:.1f}%)", unit="")]
    if candidate in set(summary["act_fn"]):
        rank = int(summary.index[summary["act_fn"] == candidate][0]) + 1
        r = summary[summary["act_fn"] == candidate].iloc[0]
        rows.append(Headline(experiment="beyond", quantity=f"zoo: rank of {candidate}, {where}",
                             ours=f"{rank} of {len(summary)}", unit=""))
        if candidate != reference:
            significant = "n/a" if pd.isna(r["p_value"]) else ("yes" if r["significant"] else "no")
            evidence = {} if frame is None else per_seed_evidence(
                frame[frame["act_fn"] == reference], frame[frame["act_fn"] == candidate])
            rows += [
                Headline(experiment="beyond", quantity=f"zoo: {candidate} gain over {reference}, "
                 f"{where}", ours=round(float(r["gain"]), 2), unit="pp", **evidence),
                Headline(experiment="beyond", quantity=f"zoo: {candidate} gain significant at 0.05 "
                 f"(Welch, {len(seeds)} seeds)", ours=significant, unit="")]
    return rows


def plot_seed_dots(df, x: str, y: str, seed: str = "seed", order=None, ax=None, xlabel=None,
                   ylabel=None, title=None, highlight=None):
    """One dot per run (e.g. per seed) of ``y`` for each category of ``x``, spread sideways a
    little by seed so that equal values stay visible, with each category's mean as a bar line.
    ``order``: the categories left to right (default: as they appear); ``highlight``: categories
    drawn in a second colour (e.g. the reference and LSLU)."""
    df = as_frame(df)
    cats = list(order) if order is not None else list(dict.fromkeys(df[x]))
    seeds = sorted(df[seed].unique().tolist())
    offsets = {s: (i - (len(seeds) - 1) / 2) * min(0.5 / max(len(seeds), 1), 0.12)
               for i, s in enumerate(seeds)}
    highlight = set(highlight or [])
    fig, ax = new_axes(ax, figsize=(min(7.5, max(6.4, 0.8 * len(cats) + 2)), 4.0))  # page width
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
    style_axes(ax, xlabel or x, ylabel or y, title)
    return fig


def configs(*, model, activations, zoo_seeds, reference_activation,
            **settings) -> list[TrainConfig]:
    """The runs of chapter 11: zoo_configs over the notebook's parameters; ``settings``: the other
    notebook parameters (common.base_from: ``dataset``, ``epochs`` and ``extra`` enter the runs,
    the rest is ignored)."""
    return zoo_configs(base_from(settings), model, activations, zoo_seeds, reference_activation)

"""Sweeps of one setting over its levels, shared by chapter 04 (E3: the number of activations n)
and chapter 06 (E5: the dropout rate): tables, lines for the page, headline rows and the figure."""
from __future__ import annotations

import pandas as pd

from ..paper import NOT_AVAILABLE, paper_text
from .common import Headline, fmt_pct, fmt_pp, mean_std_text, paper_number, summarize
from .plots import as_frame, new_axes, style_axes


def sweep_table(frame: pd.DataFrame, axis: str, group=("model",), value: str = "top1"
                ) -> pd.DataFrame:
    """Per ``group`` (e.g. model) and level of ``axis`` (a results_frame column such as act_num
    or drop_rate): ``value`` mean, std (ddof 1; NaN for one seed) and seeds, params of the train
    and deploy graphs and MFLOPs per image; when ``axis`` is act_num also the depthwise kernel
    2n+1. Rows keep the order of ``frame`` by group, levels sorted ascending within a group."""
    keys = list(group) + [axis]
    stats = summarize(frame, keys, value)
    costs = frame.groupby(keys, sort=False)[["params", "params_deploy", "flops"]].first()
    table = stats.merge(costs.reset_index(), on=keys)
    table["mflops"] = table.pop("flops") / 1e6
    if axis == "act_num":
        table.insert(len(keys), "kernel", [f"{2 * n + 1}x{2 * n + 1}" for n in table[axis]])
    order = {g: i for i, g in enumerate(dict.fromkeys(map(tuple, frame[list(group)].values)))}
    table["_group"] = [order[tuple(r)] for r in table[list(group)].values]
    table = table.sort_values(["_group", axis], kind="stable").drop(columns="_group")
    return table.reset_index(drop=True)


def sweep_display(table: pd.DataFrame, axis: str, axis_label: str | None = None,
                  group=("model",)) -> pd.DataFrame:
    """sweep_table for the page: top-1 in % as 'mean ± std' (1 decimal), seeds, params (train,
    deploy), MFLOPs (1 decimal), and the kernel column when present."""
    out = table[list(group)].copy()
    out[axis_label or axis] = table[axis]
    if "kernel" in table:
        out["depthwise kernel"] = table["kernel"]
    out["top-1 (%)"] = [mean_std_text(m, s, n) for m, s, n in
                        zip(table["top1_mean"], table["top1_std"], table["seeds"])]
    out["seeds"] = table["seeds"]
    out["params (train)"] = table["params"]
    out["params (deploy)"] = table["params_deploy"]
    out["MFLOPs / image"] = table["mflops"].round(1)
    return out


def best_levels(table: pd.DataFrame, axis: str, group=("model",), value: str = "top1_mean"
                ) -> pd.DataFrame:
    """Per group of a sweep_table: the level of ``axis`` with the highest ``value`` and the one
    with the lowest (ties: the smaller level), both values, the spread best - worst (in the units
    of ``value``, pp for top-1) and how many levels were swept."""
    rows = []
    for key, part in table.groupby(list(group), sort=False):
        part = part.sort_values(axis, kind="stable")
        best = part.loc[part[value].idxmax()]
        worst = part.loc[part[value].idxmin()]
        key = key if isinstance(key, tuple) else (key,)
        rows.append(dict(zip(group, key)) | {
            f"best {axis}": best[axis], "best": best[value],
            f"worst {axis}": worst[axis], "worst": worst[value],
            "spread": best[value] - worst[value], "levels": len(part)})
    return pd.DataFrame(rows)


def best_display(best: pd.DataFrame, axis: str, axis_label: str, group=("model",),
                 levels_label: str = "levels") -> pd.DataFrame:
    """best_levels as a narrow page table (show it with common.show_table): the group columns
    (act_fn shown as 'activation'), the best and worst level with their top-1 (%), the spread
    (pp) and the number of levels (column ``levels_label``), with short column names and the
    shared rounding."""
    out = best[list(group)].rename(columns={"act_fn": "activation"})
    out[f"best {axis_label}"] = [_level_text(v) for v in best[f"best {axis}"]]
    out["best top-1 (%)"] = [fmt_pct(v) for v in best["best"]]
    out[f"worst {axis_label}"] = [_level_text(v) for v in best[f"worst {axis}"]]
    out["worst top-1 (%)"] = [fmt_pct(v) for v in best["worst"]]
    out["spread (pp)"] = [fmt_pp(v) for v in best["spread"]]
    out[levels_label] = best["levels"]
    return out


def _level_text(value) -> str:
    """A swept value as text: 3 -> '3', 0.3 -> '0.3', 0.0 -> '0'."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _group_text(row, group) -> str:
    return " + ".join(str(row[g]) for g in group)


# The paper's experiment of each swept axis (lslu/paper_values.yaml: top1_by_<axis>, best_<axis>;
# both sweeps are run with LSLU).
SWEEP_EXPERIMENTS = {"act_num": "E3", "drop_rate": "E5"}


def _paper_sweep(b, axis: str):
    """(top-1 by level, best level) of the paper for best_levels' row ``b``: ({}, None) where
    the paper has none (another axis or activation, a model without a paper counterpart)."""
    experiment = SWEEP_EXPERIMENTS.get(axis)
    if experiment is None or b.get("activation", "lslu") != "lslu" or "model" not in b:
        return {}, None
    by_level = paper_number(experiment, b["model"], f"top1_by_{axis}") or {}
    return by_level, paper_number(experiment, b["model"], f"best_{axis}")


def _at_level(by_level: dict, level):
    """The paper's top-1 at ``level`` (levels compared as numbers), None if it has none."""
    return next((v for k, v in by_level.items() if abs(float(k) - float(level)) < 1e-9), None)


def sweep_paper_vs_ours(table: pd.DataFrame, best: pd.DataFrame, axis: str, axis_label: str,
                        group=("model",)) -> pd.DataFrame:
    """Per group of a sweep (sweep_table, best_levels): our top-1 at every level, the best level
    and the spread best - worst, each beside the paper's value (lslu.paper, E3 for act_num, E5
    for drop_rate; the spread only where the paper's sweep covers every level of ours)."""
    rows = []
    for _, b in best.iterrows():
        name = _group_text(b, group)
        by_level, paper_best = _paper_sweep(b, axis)
        part = table
        for g in group:
            part = part[part[g] == b[g]]
        for _, r in part.iterrows():
            rows.append({"run": name,
                         "quantity": f"top-1 at {axis_label} = {_level_text(r[axis])} (%)",
                         "paper": paper_text(_at_level(by_level, r[axis]), decimals=1),
                         "ours": mean_std_text(r["top1_mean"], r["top1_std"], r["seeds"])})
        rows.append({"run": name, "quantity": f"best {axis_label}",
                     "paper": NOT_AVAILABLE if paper_best is None else _level_text(paper_best),
                     "ours": _level_text(b[f"best {axis}"])})
        paper_top1 = [_at_level(by_level, level) for level in part[axis]]
        spread = None if None in paper_top1 or not paper_top1 else max(paper_top1) - min(paper_top1)
        rows.append({"run": name, "quantity": f"spread, best − worst {axis_label} (pp)",
                     "paper": paper_text(spread, decimals=1), "ours": f"{b['spread']:.1f}"})
    return pd.DataFrame(rows).set_index(["run", "quantity"])


def sweep_summary_lines(best: pd.DataFrame, axis: str, axis_label: str, group=("model",)
                        ) -> list[str]:
    """One line per group of best_levels: the best and worst level with their top-1 and the
    spread between them (pp)."""
    lines = []
    for _, b in best.iterrows():
        lines.append(f"{_group_text(b, group)}: best {axis_label} = "
                     f"{_level_text(b[f'best {axis}'])} ({b['best']:.1f}% top-1), worst "
                     f"{axis_label} = "
                     f"{_level_text(b[f'worst {axis}'])} ({b['worst']:.1f}%), spread "
                     f"{b['spread']:.1f} pp over {int(b['levels'])} values")
    return lines


def sweep_headline_rows(best: pd.DataFrame, experiment: str, axis: str, axis_label: str,
                        dataset: str, group=("model",), unit: str | None = None) -> list[dict]:
    """Rows for save_headline: per group the best level (unit ``unit``, default ``axis_label``)
    and the spread best - worst top-1 (pp, 2 decimals), the paper's best level beside the first
    (lslu.paper; NOT_AVAILABLE where it has none)."""
    rows = []
    for _, b in best.iterrows():
        name = _group_text(b, group)
        level = b[f"best {axis}"]
        level = level.item() if hasattr(level, "item") else level
        paper_best = _paper_sweep(b, axis)[1]
        rows.append(Headline(experiment=experiment,
                             quantity=f"best {axis_label}, {name} on {dataset}",
                             ours=round(level, 2) if isinstance(level, float) else level,
                             paper=NOT_AVAILABLE if paper_best is None else paper_text(paper_best),
                             unit=unit or axis_label))
        rows.append(Headline(experiment=experiment,
                             quantity=f"top-1 spread over {axis_label}, {name} on {dataset}",
                             ours=round(float(b["spread"]), 2), unit="pp"))
    return rows


def cost_change_lines(table: pd.DataFrame, axis: str, axis_label: str, group=("model",)
                      ) -> list[str]:
    """One line per group of a sweep_table: how params (train) and MFLOPs per image change from
    the smallest to the largest level of ``axis`` (with the kernel when the axis is act_num)."""
    lines = []
    for _, part in table.groupby(list(group), sort=False):
        part = part.sort_values(axis, kind="stable")
        lo, hi = part.iloc[0], part.iloc[-1]
        kernel = f", kernel {lo['kernel']} → {hi['kernel']}" if "kernel" in part else ""
        lines.append(
            f"{_group_text(lo, group)}: {axis_label} = {_level_text(lo[axis])} → "
            f"{_level_text(hi[axis])}{kernel}, params {int(lo['params']):,} → "
            f"{int(hi['params']):,} ({int(hi['params']) - int(lo['params']):+,}), MFLOPs / image "
            f"{lo['mflops']:.1f} → {hi['mflops']:.1f}")
    return lines


def plot_sweep(table, x: str, y: str = "top1_mean", yerr: str | None = "top1_std",
               hue: str | None = "model", ax=None, xlabel=None, ylabel=None, title=None):
    """``y`` against the swept setting ``x``, one line with markers per ``hue`` (e.g. per model),
    with ± ``yerr`` error bars where it is defined (NaN, e.g. the std of one seed, draws none).
    ``table``: e.g. sweep_table. The swept values label the x ticks."""
    df = as_frame(table)
    fig, ax = new_axes(ax)
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
    style_axes(ax, xlabel or x, ylabel or y, title)
    return fig

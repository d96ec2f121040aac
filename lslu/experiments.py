"""What the experiment notebooks share: building grids of runs, tables over seeds, significance,
and the header every results page starts with (profile, dataset, hardware, seeds, time)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from .results import ResultsStore, RunResult
from .train import TrainConfig, run_grid

__all__ = ["grid", "run", "results_frame", "summarize", "compare", "welch_test",
           "bootstrap_interval", "run_header", "save_headline", "PAPER_CIFAR100_VANILLANET_GAIN"]

# The paper's only public number (abstract; Table 3): LSLU's top-1 gain on CIFAR-100 for
# VanillaNet, in percentage points. Everything else the paper reports is not public.
PAPER_CIFAR100_VANILLANET_GAIN = 3.17


def grid(base: dict, **axes) -> list[TrainConfig]:
    """TrainConfigs for the cartesian product of ``axes`` (each a list) over ``base``.

    >>> grid({"dataset": "digits"}, activation=[None, "lslu"], seed=[0, 1])  # 4 configs
    """
    for name, values in axes.items():
        if not isinstance(values, (list, tuple)) or len(values) == 0:
            raise ValueError(f"axis {name!r} needs a non-empty list of values, got {values!r}")
    names = list(axes)
    configs = []
    for combo in itertools.product(*(axes[n] for n in names)):
        settings = dict(base) | dict(zip(names, combo))
        unknown = set(settings) - set(TrainConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}; valid: "
                             f"{', '.join(TrainConfig.__dataclass_fields__)}")
        configs.append(TrainConfig(**settings))
    return configs


def run(configs: list[TrainConfig], results_dir=None, progress: bool = True) -> list[RunResult]:
    """Run or load every config (all validated before the first starts)."""
    return run_grid(configs, results_dir=results_dir, progress=progress)


def results_frame(results: list[RunResult]) -> pd.DataFrame:
    """One row per run: the config fields that vary plus final metrics (accuracies in %)."""
    rows = []
    for r in results:
        c = r.config
        rows.append({
            "model": c["model"], "activation": c["activation"] or "baseline",
            "act_fn": TrainConfig(**c).resolved_activation, "act_num": c["act_num"],
            "drop_rate": c["drop_rate"], "freeze_activation": c["freeze_activation"],
            "dataset": c["dataset"], "input_size": c["input_size"], "seed": c["seed"],
            "epochs": r.final["epochs_run"],
            "top1": 100 * r.final["val_acc"], "best_top1": 100 * r.final["best_val_acc"],
            "top1_ema": None if r.final["val_acc_ema"] is None else 100 * r.final["val_acc_ema"],
            "val_loss": r.final["val_loss"], "params": r.params, "params_deploy": r.params_deploy,
            "flops": r.flops, "train_time_s": r.final["train_time_s"], "run_id": r.run_id,
        })
    return pd.DataFrame(rows)


def summarize(frame: pd.DataFrame, by: list[str], value: str = "top1") -> pd.DataFrame:
    """Mean, std (ddof 1; NaN for a single seed) and count of ``value`` per group."""
    out = frame.groupby(by, sort=False)[value].agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"mean": f"{value}_mean", "std": f"{value}_std", "count": "seeds"})


def welch_test(a, b) -> tuple[float, float]:
    """Welch's t statistic and two-sided p-value for mean(b) - mean(a); NaN with < 2 per side
    or zero variance on both sides."""
    from scipy import stats
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2 or (a.std() == 0 and b.std() == 0):
        return math.nan, math.nan
    t, p = stats.ttest_ind(b, a, equal_var=False)
    return float(t), float(p)


def bootstrap_interval(a, b, level: float = 0.95, samples: int = 10_000, seed: int = 0):
    """Percentile bootstrap interval of mean(b) - mean(a) (resampling seeds within each side)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    rng = np.random.default_rng(seed)
    diffs = (rng.choice(b, (samples, len(b))).mean(1) - rng.choice(a, (samples, len(a))).mean(1))
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def compare(frame: pd.DataFrame, group: list[str], column: str, baseline, value: str = "top1",
            alpha: float = 0.05) -> pd.DataFrame:
    """For each group (e.g. per model) and each level of ``column`` other than ``baseline``:
    mean gain over the baseline (in the units of ``value``), Welch p-value, bootstrap 95%
    interval, and whether the gain is significant at ``alpha``."""
    rows = []
    for key, sub in frame.groupby(group, sort=False) if group else [((), frame)]:
        base = sub.loc[sub[column] == baseline, value].to_numpy()
        if len(base) == 0:
            continue
        for level, other in sub.groupby(column, sort=False):
            if level == baseline:
                continue
            vals = other[value].to_numpy()
            t, p = welch_test(base, vals)
            lo, hi = bootstrap_interval(base, vals) if min(len(base), len(vals)) >= 2 \
                else (math.nan, math.nan)
            key = key if isinstance(key, tuple) else (key,)
            rows.append(dict(zip(group, key)) | {
                column: level, "gain": vals.mean() - base.mean(), "p_value": p,
                "ci_low": lo, "ci_high": hi, "seeds": f"{len(base)}/{len(vals)}",
                "significant": bool(p < alpha) if not math.isnan(p) else False})
    return pd.DataFrame(rows)


def run_header(profile: str, results: list[RunResult]) -> str:
    """What every results page states: profile, dataset(s), hardware, seeds, time taken."""
    if not results:
        return f"profile {profile}: no runs"
    datasets = sorted({r.config["dataset"] for r in results})
    sizes = sorted({r.config["input_size"] for r in results})
    seeds = sorted({r.config["seed"] for r in results})
    hardware = sorted({r.hardware.get("gpu") or r.hardware.get("processor", "?") for r in results})
    seconds = sum(r.final["train_time_s"] for r in results)
    return (f"profile: {profile} | dataset: {', '.join(datasets)} at {', '.join(map(str, sizes))} px"
            f" | seeds: {seeds} | runs: {len(results)} | hardware: {'; '.join(hardware)}"
            f" | training time: {seconds:.0f} s")


def save_headline(profile: str, notebook: str, numbers: dict, results_dir=None) -> None:
    """Store a chapter's headline numbers for the results-summary page."""
    ResultsStore(results_dir).save_headline(profile, notebook, numbers)

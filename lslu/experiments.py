"""What the experiment notebooks share: building grids of runs, tables over seeds, significance,
and the header every results page starts with (profile, dataset, hardware, seeds, time)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from .results import ResultsStore, RunResult
from .train import TrainConfig, run_grid

__all__ = ["base_config", "grid", "run", "results_frame", "summarize", "compare", "welch_test",
           "bootstrap_interval", "run_header", "save_headline", "PAPER_CIFAR100_VANILLANET_GAIN"]

# The paper's only public number (abstract; Table 3): LSLU's top-1 gain on CIFAR-100 for
# VanillaNet, in percentage points. Everything else the paper reports is not public.
PAPER_CIFAR100_VANILLANET_GAIN = 3.17


def base_config(**fields) -> dict:
    """The settings every run of a chapter shares, checked now (a notebook's first cell after its
    parameters), so that bad parameters fail before any training with a clear message."""
    fields = {k: v for k, v in fields.items()}
    extra = fields.pop("extra", None) or {}
    settings = fields | dict(extra)
    unknown = set(settings) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown config fields {sorted(unknown)}; valid: "
                         f"{', '.join(TrainConfig.__dataclass_fields__)}")
    TrainConfig(**settings).validate()
    return settings


def grid(base: dict, **axes) -> list[TrainConfig]:
    """Validated TrainConfigs for the cartesian product of ``axes`` (each a list) over ``base``.

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
        config = TrainConfig(**settings)
        config.validate()
        configs.append(config)
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


# ---------------------------------------------------------------------------------------------
# E1 / E2 / E7: each model with its baseline activation and with LSLU
# (chapters 02_cifar10, 03_cifar100 and 08_convergence share these runs)
# ---------------------------------------------------------------------------------------------
from dataclasses import dataclass as _dataclass  # noqa: E402  (this section's own import)

#: The settings of the reference recipe (TrainConfig.reference_recipe) that a run must share to
#: be compared with the paper's numbers.
PAPER_RECIPE_FIELDS = ("dataset", "model", "input_size", "epochs", "batch_size", "optimizer", "lr",
                       "weight_decay", "warmup_epochs", "min_lr", "decay_epochs", "drop_rate",
                       "rand_augment", "mixup", "cutmix", "smoothing", "bce", "random_erasing",
                       "ema_decay")

#: The activation axis of "with vs without LSLU": None is the model's own (VanillaNet's series
#: activation, ResNet's ReLU).
WITH_AND_WITHOUT = [None, "lslu"]


def with_and_without_lslu_configs(base: dict, models, seeds) -> list[TrainConfig]:
    """The validated configs of "with vs without LSLU": every model in ``models`` with its
    baseline activation and with LSLU, for every seed (models outermost, then activation)."""
    return grid(base, model=models, activation=WITH_AND_WITHOUT, seed=seeds)


def run_label(config: dict) -> str:
    """'resnet18 + relu', 'vanillanet_5_x0_25 + lslu': a run's model and resolved activation."""
    return f"{config['model']} + {TrainConfig(**config).resolved_activation}"


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


@_dataclass
class LsluComparison:
    """What with_and_without_lslu returns.

    results: the RunResults; frame: results_frame plus a ``label`` column (one row per run);
    table: per model and activation, top-1 mean/std (%) over seeds, params of the train and
    deploy graphs, MFLOPs per image; gains: experiments.compare of LSLU against the baseline per
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
        """``table`` for the page: top-1 in % with 1 decimal ('mean ± std' with >1 seed)."""
        t = self.table
        top1 = [f"{m:.1f}" if n < 2 else f"{m:.1f} ± {s:.1f}"
                for m, s, n in zip(t["top1_mean"], t["top1_std"], t["seeds"])]
        return pd.DataFrame({
            "model": t["model"], "activation": t["act_fn"], "top-1 (%)": top1,
            "seeds": t["seeds"], "params (train)": t["params"],
            "params (deploy)": t["params_deploy"],
            "MFLOPs / image (train graph)": t["mflops"].round(1),
        })

    def display_gains(self) -> pd.DataFrame:
        """``gains`` for the page: gain in pp (1 decimal), p-value (3 decimals) and interval,
        'n/a' where fewer than 2 seeds per arm make them undefined."""
        g = self.gains
        na = lambda v, fmt: "n/a" if pd.isna(v) else fmt.format(v)  # noqa: E731
        return pd.DataFrame({
            "model": g["model"], "LSLU gain (pp)": g["gain"].round(1),
            "Welch p": [na(p, "{:.3f}") for p in g["p_value"]],
            "bootstrap 95% interval (pp)": [
                "n/a" if pd.isna(lo) else f"[{lo:.1f}, {hi:.1f}]"
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
        """One line per model: baseline and LSLU top-1, the gain, and its significance."""
        lines = []
        for _, g in self.gains.iterrows():
            base, lslu = self._arms(g["model"])
            if pd.isna(g["p_value"]) and len(self.seeds) < 2:
                sig = f"no test with {len(self.seeds)} seed"
            elif pd.isna(g["p_value"]):
                sig = "no test: top-1 does not vary over the seeds"
            else:
                sig = (f"Welch p = {g['p_value']:.3f}, 95% interval [{g['ci_low']:.1f}, "
                       f"{g['ci_high']:.1f}] pp, significant at 0.05: "
                       f"{'yes' if g['significant'] else 'no'}")
            lines.append(f"{g['model']}: {base['act_fn']} {base['top1_mean']:.1f}% -> LSLU "
                         f"{lslu['top1_mean']:.1f}% top-1, gain {g['gain']:+.1f} pp ({sig})")
        return lines

    def paper_vs_ours(self, paper_gains: dict | None = None) -> pd.DataFrame:
        """Per model: top-1 of both arms, the gain, params and FLOPs, with the paper's value
        beside each ('not public' unless ``paper_gains`` maps the model to a gain string)."""
        paper_gains = paper_gains or {}
        rows = []
        for model in dict.fromkeys(self.table["model"]):
            base, lslu = self._arms(model)
            ours = [(f"top-1, {base['act_fn']} (%)", f"{base['top1_mean']:.1f}"),
                    ("top-1, lslu (%)", f"{lslu['top1_mean']:.1f}"),
                    ("LSLU gain (pp)", f"{self.gain(model):+.1f}"),
                    ("params train / deploy, baseline",
                     f"{base['params']:,} / {base['params_deploy']:,}"),
                    ("params train / deploy, lslu",
                     f"{lslu['params']:,} / {lslu['params_deploy']:,}"),
                    ("MFLOPs / image, baseline / lslu",
                     f"{base['mflops']:.1f} / {lslu['mflops']:.1f}")]
            for quantity, value in ours:
                paper = paper_gains.get(model, "not public") if quantity.startswith("LSLU gain") \
                    else "not public"
                rows.append({"model": model, "quantity": quantity, "paper": paper, "ours": value})
        return pd.DataFrame(rows).set_index(["model", "quantity"])

    def headline_rows(self, experiment: str, paper_gains: dict | None = None,
                      paper_setting: str | None = None) -> list[dict]:
        """Rows for save_headline: top-1 of every arm and the gain per model (2 decimals).
        ``paper_setting`` (e.g. 'VanillaNet-5, CIFAR-100') is added to the quantity of a row
        that has a paper value, so that the summary says what that value was measured on."""
        paper_gains = paper_gains or {}
        setting = f" (paper: {paper_setting})" if paper_setting else ""
        data = ", ".join(self.datasets)
        rows = [{"experiment": experiment, "quantity": f"top-1, {r['label']} on {data}",
                 "ours": round(float(r["top1_mean"]), 2), "paper": "not public", "unit": "%"}
                for _, r in self.table.iterrows()]
        rows += [{"experiment": experiment,
                  "quantity": f"LSLU gain, {g['model']} on {data}"
                              + (setting if g["model"] in paper_gains else ""),
                  "ours": round(float(g["gain"]), 2),
                  "paper": paper_gains.get(g["model"], "not public"), "unit": "pp"}
                 for _, g in self.gains.iterrows()]
        return rows


def with_and_without_lslu(base: dict, models, seeds, results_dir=None,
                          progress: bool = True) -> LsluComparison:
    """Run (or load from the results store) every model with its baseline activation and with
    LSLU over ``seeds``, and tabulate: see LsluComparison."""
    results = run(with_and_without_lslu_configs(base, models, seeds), results_dir=results_dir,
                  progress=progress)
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


def significance_note(seeds) -> str:
    """What the number of seeds allows to say about a gain."""
    n = len(seeds)
    if n < 2:
        return (f"{n} seed per arm: there is no spread to test a gain against, so the Welch "
                f"p-value and the bootstrap interval are n/a; significance needs >= 2 seeds.")
    return (f"{n} seeds per arm: Welch's t-test (two-sided) and a percentile bootstrap 95% "
            f"interval of the gain over seeds.")


def dataset_note(dataset: str, specified, experiment: str) -> str:
    """Whether a chapter runs on the dataset its experiment is specified on (``specified``: a
    dataset name, or a list of them)."""
    names = [specified] if isinstance(specified, str) else list(specified)
    text = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    if dataset in names:
        return f"{experiment} is specified on {text}; this page runs on {dataset}."
    return (f"{experiment} is specified on {text}; this page runs on {dataset}, which stands "
            f"in for it: the numbers show that the code path works, not what happens on "
            f"{text}.")


def paper_gain_comparability(base: dict, model: str) -> tuple[bool, list[str]]:
    """Whether a measured gain of ``model`` under ``base`` is comparable with the paper's +3.17
    (VanillaNet-5 on CIFAR-100 with the reference recipe: TrainConfig.reference_recipe()), and
    every setting that differs ('name: ours vs reference')."""
    reference = TrainConfig.reference_recipe().to_dict()
    ours = TrainConfig(**(dict(base) | {"model": model})).to_dict()
    diffs = [f"{k}: {ours[k]!r} vs {reference[k]!r}" for k in PAPER_RECIPE_FIELDS
             if ours[k] != reference[k]]
    return not diffs, diffs

__all__ += ["PAPER_RECIPE_FIELDS", "WITH_AND_WITHOUT", "with_and_without_lslu_configs", "run_label",
            "history_frame", "mean_curves", "LsluComparison", "with_and_without_lslu",
            "significance_note", "dataset_note", "paper_gain_comparability"]


# ---------------------------------------------------------------------------------------------
# Activation zoo (chapter 11, beyond the paper): every activation in one harness
# ---------------------------------------------------------------------------------------------
# Every activation lslu offers, in the order the zoo chapter lists them.
ZOO_ACTIVATIONS = ("relu", "prelu", "silu", "swish_beta", "series", "lslu", "frelu", "acon_c",
                   "lslu_per_channel")


def activation_setting(model: str, activation: str) -> str | None:
    """The TrainConfig.activation for ``activation`` on ``model``: None when it is the model's
    baseline (VanillaNet's 'series', ResNet's 'relu'), so that the run is the very run the other
    chapters train as their baseline and comes from the results store; else the name itself."""
    from .activations import check_activation
    from .models import BASELINE_ACTIVATION, MODELS
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; valid: {', '.join(MODELS)}")
    check_activation(activation)
    return None if activation == BASELINE_ACTIVATION[model] else activation


def zoo_configs(base: dict, model: str, activations, seeds, reference: str) -> list[TrainConfig]:
    """The validated configs of the zoo: ``model`` with every activation of ``activations`` for
    every seed (activations outermost). ``reference`` must be one of ``activations``."""
    for name, values in (("activations", activations), ("seeds", seeds)):
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"{name} needs a non-empty list, got {values!r}")
        if len(set(values)) != len(values):
            raise ValueError(f"{name} has duplicates: {list(values)}")
    from .activations import check_activation
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
    interval and significance at ``alpha`` (experiments.compare). Sorted by mean top-1, best
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
    """zoo_summary for the page: top-1 'mean ± std' in % (1 decimal), gain in pp (1 decimal),
    p-value (3 decimals), interval; 'reference' / 'n/a' where a test does not apply."""
    na = lambda v, fmt: "n/a" if pd.isna(v) else fmt.format(v)  # noqa: E731
    rows = []
    for rank, r in enumerate(summary.itertuples(index=False), start=1):
        ref = r.act_fn == reference
        top1 = (f"{r.top1_mean:.1f}" if r.seeds < 2 or pd.isna(r.top1_std)
                else f"{r.top1_mean:.1f} ± {r.top1_std:.1f}")
        rows.append({
            "rank": rank, "activation": r.act_fn, "top-1 (%)": top1, "seeds": r.seeds,
            "params": r.params, "MFLOPs / image": round(r.mflops, 1),
            f"gain over {reference} (pp)": "reference" if ref else f"{r.gain:+.1f}",
            "Welch p": "reference" if ref else na(r.p_value, "{:.3f}"),
            "bootstrap 95% interval (pp)": "reference" if ref else (
                "n/a" if pd.isna(r.ci_low) else f"[{r.ci_low:+.1f}, {r.ci_high:+.1f}]"),
            "significant at 0.05": "reference" if ref else ("yes" if r.significant else "no"),
        })
    return pd.DataFrame(rows).set_index("rank")


def power_note(seeds, alpha: float = 0.05) -> str:
    """How much the number of seeds per arm allows a test to detect, computed: the |t| Welch's
    test needs for p < alpha (its degrees of freedom lie between n-1 and 2n-2 with n seeds per
    arm), and how many distinct means a bootstrap resample of n values can take."""
    from scipy import stats
    n = len(seeds)
    if n < 2:
        return significance_note(seeds)
    lo_df, hi_df = n - 1, 2 * n - 2
    t_hi = stats.t.ppf(1 - alpha / 2, lo_df)
    t_lo = stats.t.ppf(1 - alpha / 2, hi_df)
    distinct = math.comb(2 * n - 1, n)
    return (f"{n} seeds per activation: Welch's test has {lo_df} to {hi_df} degrees of freedom, "
            f"so a gain is significant at {alpha} only if |t| exceeds {t_lo:.2f} to "
            f"{t_hi:.2f}; a bootstrap resample of {n} values can take only {distinct} distinct "
            f"means, so its interval is coarse. With so few seeds 'not significant' means 'not "
            f"enough seeds to tell', not 'no effect'.")


# ---------------------------------------------------------------------------------------------
# Results summary (the last chapter): every chapter's headline numbers for one profile
# ---------------------------------------------------------------------------------------------
HEADLINE_KEYS = ("experiment", "quantity", "ours", "paper", "unit")
# Units of quantities that are times: they change from run to run and machine to machine.
TIMING_UNITS = ("s", "ms", "us", "min", "h", "img/s", "images/s", "it/s")


def load_headlines(profile: str, results_dir=None) -> dict:
    """Notebook stem -> its headline rows (experiments.save_headline) for ``profile``; raises a
    RuntimeError saying what to run when there are none."""
    store = ResultsStore(results_dir)
    headlines = store.headlines(profile)
    if not headlines:
        raise RuntimeError(
            f"no headline numbers for profile {profile!r} in {store.root / 'headlines' / profile}:"
            f" run the other notebooks first: python -m lslu.book execute --profile {profile}"
            f" (with the same LSLU_RESULTS_DIR / results_dir)")
    return headlines


def _paper_value_ok(value) -> bool:
    text = str(value).strip().lower()
    return text in ("not public", "", "n/a", "-", "—") or "3.17" in text


def _experiment_key(experiment: str):
    text = str(experiment)
    if text[:1].upper() == "E" and text[1:].isdigit():
        return (0, int(text[1:]), "")
    return (1, 0, text)


def headline_frame(headlines: dict) -> pd.DataFrame:
    """One row per headline number (from load_headlines): chapter, experiment, quantity, ours,
    paper, unit and ``timing`` (True for times and latency ratios: flagged ``"timing": True`` by
    their chapter, or a time unit). Sorted by experiment (E1..E9, then the rest), chapter, order.

    Raises ValueError for a row without the keys experiment, quantity, ours, paper, unit, and for
    a row that gives the paper a value other than "not public" or the one public number (+3.17).
    """
    rows = []
    for chapter, numbers in headlines.items():
        if isinstance(numbers, dict):
            numbers = numbers.get("rows", [numbers])
        for i, row in enumerate(numbers):
            missing = [k for k in HEADLINE_KEYS if k not in row]
            if missing:
                raise ValueError(f"headline {i} of {chapter} lacks {missing}: {row}")
            if not _paper_value_ok(row["paper"]):
                raise ValueError(
                    f"headline {i} of {chapter} ({row['quantity']}) gives the paper's value as "
                    f"{row['paper']!r}; the only public number of the paper is "
                    f"+{PAPER_CIFAR100_VANILLANET_GAIN} (CIFAR-100, VanillaNet): use 'not public'")
            timing = bool(row.get("timing")) or str(row["unit"]).strip() in TIMING_UNITS
            rows.append({"chapter": chapter, "experiment": str(row["experiment"]),
                         "quantity": row["quantity"], "ours": row["ours"],
                         "paper": row["paper"] or "not public", "unit": row["unit"],
                         "timing": timing, "_order": i})
    frame = pd.DataFrame(rows, columns=["chapter", "experiment", "quantity", "ours", "paper",
                                        "unit", "timing", "_order"])
    frame["ours"] = pd.Series([r["ours"] for r in rows], dtype=object)  # keep ints and text as given
    keys = frame["experiment"].map(_experiment_key)
    frame = frame.assign(_key=keys).sort_values(["_key", "chapter", "_order"], kind="stable")
    return frame.drop(columns=["_key", "_order"]).reset_index(drop=True)


def format_headline_value(value) -> str:
    """A headline's value as shown: floats with 2 decimals, integers and text as they are."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def headline_display(frame: pd.DataFrame, timing: bool | None = None) -> pd.DataFrame:
    """headline_frame for the page (values via format_headline_value); ``timing`` True/False keeps
    only the machine-dependent / only the stable rows, None keeps all."""
    if timing is not None:
        frame = frame[frame["timing"] == timing]
    return pd.DataFrame({
        "experiment": frame["experiment"], "quantity": frame["quantity"],
        "ours": [format_headline_value(v) for v in frame["ours"]], "paper": frame["paper"],
        "unit": frame["unit"], "chapter": frame["chapter"]}).reset_index(drop=True)


def experiments_without_headline(frame: pd.DataFrame, experiments=None) -> list[str]:
    """The experiments E1..E9 (or ``experiments``) no chapter reported a headline for."""
    wanted = experiments or [f"E{i}" for i in range(1, 10)]
    have = set(frame["experiment"])
    return [e for e in wanted if e not in have]


__all__ += ["ZOO_ACTIVATIONS", "activation_setting", "zoo_configs", "zoo_summary", "zoo_display",
            "power_note", "HEADLINE_KEYS", "TIMING_UNITS", "load_headlines", "headline_frame",
            "format_headline_value", "headline_display", "experiments_without_headline"]


# ---------------------------------------------------------------------------------------------
# Sweeps of one setting (E3: number of activations n, chapter 04; E5: dropout rate, chapter 06)
# ---------------------------------------------------------------------------------------------
def check_sweep_levels(name: str, values, minimum_length: int = 1) -> list:
    """``values`` as a list, or ValueError unless it is a list (or tuple) of at least
    ``minimum_length`` values without duplicates (each value is checked by TrainConfig later)."""
    if not isinstance(values, (list, tuple)) or len(values) < minimum_length:
        raise ValueError(f"{name} needs a list of at least {minimum_length} value(s), "
                         f"got {values!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} has duplicates: {list(values)}")
    return list(values)


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


def mean_std_text(mean: float, std: float, seeds: int, decimals: int = 1) -> str:
    """'95.3' for one seed, '95.3 ± 0.4' for more."""
    if seeds < 2 or pd.isna(std):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


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


__all__ += ["check_sweep_levels", "sweep_table", "mean_std_text", "sweep_display", "best_levels"]


def zoo_headlines(summary: pd.DataFrame, reference: str, model: str, dataset: str,
                  seeds, candidate: str = "lslu") -> list[dict]:
    """The zoo chapter's headline rows (experiments.save_headline, experiment 'beyond'): the best
    activation by mean top-1, the rank of ``candidate`` (LSLU), its gain over ``reference`` in pp
    and whether that gain is significant (Welch, 0.05) with the number of seeds."""
    where = f"{model} on {dataset}"
    best = summary.iloc[0]
    rows = [{"experiment": "beyond", "quantity": f"zoo: best activation by mean top-1, {where}",
             "ours": f"{best['act_fn']} ({best['top1_mean']:.1f}%)", "paper": "not public",
             "unit": ""}]
    if candidate in set(summary["act_fn"]):
        rank = int(summary.index[summary["act_fn"] == candidate][0]) + 1
        r = summary[summary["act_fn"] == candidate].iloc[0]
        rows.append({"experiment": "beyond", "quantity": f"zoo: rank of {candidate}, {where}",
                     "ours": f"{rank} of {len(summary)}", "paper": "not public", "unit": ""})
        if candidate != reference:
            significant = "n/a" if pd.isna(r["p_value"]) else ("yes" if r["significant"] else "no")
            rows += [
                {"experiment": "beyond", "quantity": f"zoo: {candidate} gain over {reference}, "
                 f"{where}", "ours": round(float(r["gain"]), 2), "paper": "not public",
                 "unit": "pp"},
                {"experiment": "beyond", "quantity": f"zoo: {candidate} gain significant at 0.05 "
                 f"(Welch, {len(seeds)} seeds)", "ours": significant, "paper": "not public",
                 "unit": ""}]
    return rows


__all__ += ["zoo_headlines"]


def _level_text(value) -> str:
    """A swept value as text: 3 -> '3', 0.3 -> '0.3', 0.0 -> '0'."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _group_text(row, group) -> str:
    return " + ".join(str(row[g]) for g in group)


def sweep_paper_vs_ours(table: pd.DataFrame, best: pd.DataFrame, axis: str, axis_label: str,
                        group=("model",)) -> pd.DataFrame:
    """Per group of a sweep (sweep_table, best_levels): our top-1 at every level, the best level
    and the spread best - worst, each beside the paper's value, which is not public."""
    rows = []
    for _, b in best.iterrows():
        name = _group_text(b, group)
        part = table
        for g in group:
            part = part[part[g] == b[g]]
        for _, r in part.iterrows():
            rows.append({"run": name, "quantity": f"top-1 at {axis_label} = {_level_text(r[axis])} (%)",
                         "paper": "not public",
                         "ours": mean_std_text(r["top1_mean"], r["top1_std"], r["seeds"])})
        rows.append({"run": name, "quantity": f"best {axis_label}", "paper": "not public",
                     "ours": _level_text(b[f"best {axis}"])})
        rows.append({"run": name, "quantity": f"spread, best − worst {axis_label} (pp)",
                     "paper": "not public", "ours": f"{b['spread']:.1f}"})
    return pd.DataFrame(rows).set_index(["run", "quantity"])


def sweep_summary_lines(best: pd.DataFrame, axis: str, axis_label: str, group=("model",)
                        ) -> list[str]:
    """One line per group of best_levels: the best and worst level with their top-1 and the
    spread between them (pp)."""
    lines = []
    for _, b in best.iterrows():
        lines.append(f"{_group_text(b, group)}: best {axis_label} = {_level_text(b[f'best {axis}'])}"
                     f" ({b['best']:.1f}% top-1), worst {axis_label} = "
                     f"{_level_text(b[f'worst {axis}'])} ({b['worst']:.1f}%), spread "
                     f"{b['spread']:.1f} pp over {int(b['levels'])} values")
    return lines


def sweep_headline_rows(best: pd.DataFrame, experiment: str, axis: str, axis_label: str,
                        dataset: str, group=("model",), unit: str | None = None) -> list[dict]:
    """Rows for save_headline: per group the best level (unit ``unit``, default ``axis_label``)
    and the spread best - worst top-1 (pp, 2 decimals); the paper's values are not public."""
    rows = []
    for _, b in best.iterrows():
        name = _group_text(b, group)
        level = b[f"best {axis}"]
        level = level.item() if hasattr(level, "item") else level
        rows.append({"experiment": experiment, "quantity": f"best {axis_label}, {name} on {dataset}",
                     "ours": round(level, 2) if isinstance(level, float) else level,
                     "paper": "not public", "unit": unit or axis_label})
        rows.append({"experiment": experiment,
                     "quantity": f"top-1 spread over {axis_label}, {name} on {dataset}",
                     "ours": round(float(b["spread"]), 2), "paper": "not public", "unit": "pp"})
    return rows


__all__ += ["sweep_paper_vs_ours", "sweep_summary_lines", "sweep_headline_rows"]


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


__all__ += ["cost_change_lines"]

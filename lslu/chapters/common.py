"""What every chapter shares: settings and grids of runs, tables over seeds, significance, the
formatting rules of the pages, the headline rows of the summary, and the header every results page
starts with (profile, dataset, hardware, seeds, time)."""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import math
import re
import textwrap

import numpy as np
import pandas as pd
import torch.nn as nn
from scipy import stats

from .. import data as lslu_data
from ..notebook import current_parameters
from ..results import ResultsStore, RunResult
from ..paper import NOT_AVAILABLE, SCHEMA, paper_value
from ..train import TrainConfig

#: The notebook parameters that are TrainConfig fields shared by every run of a chapter; every
#: other training setting (batch_size, lr, device, ...) comes through the ``extra`` dict.
TRAIN_PARAMETERS = ("dataset", "epochs", "decay_epochs")


# The paper's model that each of our models stands for, to look up its values in
# lslu/paper_values.yaml (lslu.paper); a model without one shows NOT_AVAILABLE. The width x0.25
# smoke model stands for VanillaNet-5: whether the numbers are comparable is said apart
# (cifar.paper_gain_comparability).
PAPER_MODELS = {"vanillanet_5": "vanillanet_5", "vanillanet_5_x0_25": "vanillanet_5",
                "resnet18": "resnet18", "resnet18_cifar": "resnet18"}


def paper_number(experiment: str, model: str, quantity: str):
    """The paper's value of ``quantity`` for the paper model ``model`` stands for (lslu.paper),
    None when the paper has none (or no such model)."""
    if model not in PAPER_MODELS or experiment not in SCHEMA \
            or PAPER_MODELS[model] not in SCHEMA[experiment]:
        return None
    return paper_value(experiment, PAPER_MODELS[model], quantity)


def checked_config(settings: dict) -> TrainConfig:
    """``settings`` as a validated TrainConfig; an unknown field fails with the list of valid
    ones."""
    unknown = set(settings) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown config fields {sorted(unknown)}; valid: "
                         f"{', '.join(TrainConfig.__dataclass_fields__)}")
    config = TrainConfig(**settings)
    config.validate()
    return config


def base_config(**fields) -> dict:
    """The settings every run of a chapter shares, checked now (a notebook's first cell after its
    parameters), so that bad parameters fail before any training with a clear message.
    ``extra``: a dict of any other TrainConfig fields, merged in."""
    extra = fields.pop("extra", None) or {}
    if not isinstance(extra, dict):
        raise ValueError(f"extra must be a dict of TrainConfig fields, got {extra!r}")
    settings = fields | dict(extra)
    checked_config(settings)
    return settings


def base_from(params: dict) -> dict:
    """base_config of the notebook parameters in TRAIN_PARAMETERS plus ``extra``; the other
    parameters (profile, results_dir, a chapter's own settings) do not enter a TrainConfig.
    Another TrainConfig field given beside ``extra`` (``lr=...``) is a ValueError: it would be
    dropped without a word."""
    misplaced = sorted(set(params) & set(TrainConfig.__dataclass_fields__) - set(TRAIN_PARAMETERS))
    if misplaced:
        raise ValueError(f"{', '.join(misplaced)}: not a notebook parameter; give TrainConfig "
                         f"fields through extra, e.g. extra={{{misplaced[0]!r}: ...}}")
    return base_config(**{k: params[k] for k in TRAIN_PARAMETERS if k in params},
                       extra=params.get("extra"))


def grid(base: dict, **axes) -> list[TrainConfig]:
    """Validated TrainConfigs for the cartesian product of ``axes`` (each a list) over ``base``.

    >>> grid({"dataset": "digits"}, activation=[None, "lslu"], seed=[0, 1])  # 4 configs
    """
    for name, values in axes.items():
        if not isinstance(values, (list, tuple)) or len(values) == 0:
            raise ValueError(f"axis {name!r} needs a non-empty list of values, got {values!r}")
    return [checked_config(dict(base) | dict(zip(axes, combo)))
            for combo in itertools.product(*axes.values())]


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
            # the reference code's number: the maximum test top-1 over its evaluation epochs
            # (lslu.train.reference_best); None for runs stored before it was recorded
            "ref_best_top1": None if r.final.get("reference_best_val_acc") is None
            else 100 * r.final["reference_best_val_acc"],
            "pipeline": c.get("pipeline", "ours"),
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


#: Characters per line of printed text: the book's text column (Chromium, 1280 px window) shows
#: about 79 before a stream output overflows it (88 overflowed by 77 px), so longer sentences are
#: wrapped before printing.
TEXT_WIDTH = 76


def wrap(text: str, width: int = TEXT_WIDTH) -> str:
    """``text`` with every line longer than ``width`` wrapped (words kept whole); a wrapped line's
    continuation is indented like the line itself, plus two spaces for a list item ("1. ", "- ")."""
    out = []
    for line in str(text).split("\n"):
        if len(line) <= width:
            out.append(line)
            continue
        indent = line[:len(line) - len(line.lstrip())]
        item = re.match(r"([-*]|\d+[.)]) ", line.lstrip())
        more = " " * len(item.group(0)) if item else ""
        out.append(textwrap.fill(line, width, initial_indent="", subsequent_indent=indent + more,
                                 break_on_hyphens=False, break_long_words=False))
    return "\n".join(out)


def say(*lines) -> None:
    """print() each of ``lines`` wrapped to the page's text column."""
    for line in lines:
        print(wrap(line))


def run_header(profile: str, results: list[RunResult]) -> str:
    """What every results page states: profile, dataset(s), hardware, seeds, time taken."""
    if not results:
        return f"profile {profile}: no runs"
    datasets = sorted({r.config["dataset"] for r in results})
    sizes = sorted({r.config["input_size"] for r in results})
    seeds = sorted({r.config["seed"] for r in results})
    hardware = sorted({r.hardware.get("gpu") or r.hardware.get("processor", "?") for r in results})
    seconds = sum(r.final["train_time_s"] for r in results)
    pipelines = list(dict.fromkeys(pipeline_text(r.config) for r in results))
    limits = sorted({r.config.get("limit") for r in results}, key=lambda v: (v is None, v or 0))
    subset = "" if limits == [None] else " | training images: " + ", ".join(
        "all" if v is None else f"a subset of {v:,}" for v in limits)
    return wrap(f"profile: {profile} | dataset: {', '.join(datasets)} at "
                f"{', '.join(map(str, sizes))} px{subset} | {plural(len(seeds), 'seed')} {seeds} | "
                f"{plural(len(results), 'run')}\nhardware: {'; '.join(hardware)} | "
                f"training time: {seconds:,.0f} s\ndata pipeline: {'; '.join(pipelines)}")


def pipeline_text(config: dict) -> str:
    """In words, the data pipeline a run's config trained with (lslu.data.DeviceLoader); runs
    stored before TrainConfig had ``pipeline`` ran ours."""
    pipeline, size = config.get("pipeline", "ours"), config["input_size"]
    flips = "flips" if config.get("flip", True) else "no flips"
    if pipeline == "ours":
        padding = config.get("crop_padding")
        crop = ("no random crop" if padding == 0 else "random crop with "
                + ("stored size / 8" if padding is None else f"{padding} px") + " padding")
        return (f"ours (train: {crop}, {flips}; eval: the full image; resized to {size} px; "
                f"the dataset's mean/std)")
    if pipeline != "reference":
        raise ValueError(f"unknown pipeline {pipeline!r}; valid: ours, reference")
    if size > 32:  # the reference's transforms for large inputs
        return (f"reference (train: RandomResizedCrop({size}, scale 0.08-1, bicubic), {flips}; "
                f"eval: Resize + CenterCrop({size}); ImageNet mean/std)")
    # at <= 32 px the reference code takes its small-input branch (lslu.data.DeviceLoader)
    return (f"reference, small-input branch (train: random crop with 4 px padding, {flips}; "
            f"eval: the image as stored; ImageNet mean/std)")


def dropout_line(results: list[RunResult]) -> str:
    """Which dropout placement and rate(s) the runs trained with, one wrapped line: ResNet18's
    dropout sits after each block's first activation in ours, after each block's second BN and
    before the fc in the reference's; VanillaNet's sits in the head either way."""
    if not results:
        return "dropout: no runs"
    rates = sorted({float(r.config["drop_rate"]) for r in results})
    places = sorted({r.config.get("dropout_placement", "ours") for r in results})
    where = {"ours": "ours (ResNet18: in each block after the first activation)",
             "reference": "the reference's (ResNet18: in each block after the second BN, and "
                          "before the fc)"}
    unknown = set(places) - set(where)
    if unknown:
        raise ValueError(f"unknown dropout_placement {sorted(unknown)}; valid: ours, reference")
    rate_text = (f"rate {rates[0]:g}" if len(rates) == 1
                 else f"rates {', '.join(f'{r:g}' for r in rates)}")
    none = " (no dropout)" if rates == [0.0] else ""
    return wrap(f"dropout: {rate_text}{none}, placement {' and '.join(where[p] for p in places)}; "
                f"VanillaNet's dropout sits in its head with either placement")


@dataclasses.dataclass(frozen=True)
class Headline:
    """One headline number of a chapter, as the summary page lists it. ``paper`` is the paper's
    value (NOT_AVAILABLE unless lslu.paper has it); ``timing`` marks a number that changes from
    machine to machine (times, latency ratios)."""
    experiment: str
    quantity: str
    ours: object
    unit: str = ""
    paper: object = NOT_AVAILABLE
    timing: bool = False
    # A gain's evidence, so that the summary can put an interval on it and show runs that two
    # chapters share once: the per-seed values of both arms (baseline, then the compared arm)
    # and the run ids behind them. None for other numbers.
    baseline_values: tuple | None = None
    values: tuple | None = None
    runs: tuple | None = None

    def as_dict(self) -> dict:
        row = dataclasses.asdict(self)
        if not self.timing:
            del row["timing"]  # the stored rows of stable numbers stay as they were
        for key in ("baseline_values", "values", "runs"):
            if row[key] is None:
                del row[key]
            else:
                row[key] = list(row[key])
        return row


def per_seed_evidence(baseline: pd.DataFrame, other: pd.DataFrame) -> dict:
    """Headline fields with a gain's evidence: the per-seed top-1 of both arms (rows of
    results_frame, each ordered by seed) and the run ids behind them."""
    baseline, other = baseline.sort_values("seed"), other.sort_values("seed")
    return {"baseline_values": tuple(float(v) for v in baseline["top1"]),
            "values": tuple(float(v) for v in other["top1"]),
            "runs": tuple(sorted(baseline["run_id"].tolist() + other["run_id"].tolist()))}


def save_headline(profile: str, notebook: str, headlines, results_dir=None,
                  parameters: dict | None = None) -> None:
    """Store a chapter's headline numbers (Headline objects or their dicts) for the summary, with
    the parameters the notebook runs with (recorded by lslu.notebook.check_parameters, or
    ``parameters``): the summary shows them only under a profile that gives these parameters."""
    rows = [h.as_dict() if isinstance(h, Headline) else dict(h) for h in headlines]
    checked = current_parameters() if parameters is None else {"parameters": parameters}
    ResultsStore(results_dir).save_headline(profile, notebook, rows, **checked)


# The one rounding rule of every page and the summary (so that a chapter and the summary never
# show the same number as -0.3 and -0.28): accuracies in % and gains in percentage points with 2
# decimals, p-values with 3 significant digits, counts as integers with thousands separators.
PP_DECIMALS = 2
P_DIGITS = 3


def fmt_pct(value) -> str:
    """An accuracy in %: '96.70' ('n/a' when missing)."""
    return na(value, f"{{:.{PP_DECIMALS}f}}")


def fmt_pp(value) -> str:
    """A gain in percentage points, signed: '+1.11', '-0.28'; '0.00' when it rounds to zero
    (never '-0.00'); 'n/a' when missing."""
    text = na(value, f"{{:+.{PP_DECIMALS}f}}")
    return text[1:] if text.lstrip("+-") == f"{0:.{PP_DECIMALS}f}" else text


def fmt_p(value) -> str:
    """A p-value with 3 significant digits, without exponent above 1e-4: '0.0123', '0.500'."""
    if value is None or pd.isna(value):
        return "n/a"
    if not 0 <= value <= 1:
        raise ValueError(f"a p-value lies in [0, 1], got {value!r}")
    if value < 1e-4:
        return f"{value:.{P_DIGITS - 1}e}"
    return f"{value:#.{P_DIGITS}g}"


def fmt_int(value) -> str:
    """A count with thousands separators: '17,341,600'; a float must be whole ('24.0' -> '24')."""
    if value is None or pd.isna(value):
        return "n/a"
    if float(value) != int(value):
        raise ValueError(f"fmt_int needs a whole number, got {value!r}")
    return f"{int(value):,}"


def fmt_interval(low, high) -> str:
    """A gain's interval in pp: '[-0.51, +2.73]' ('n/a' when missing)."""
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return "n/a"
    return f"[{fmt_pp(low)}, {fmt_pp(high)}]"


def _auto_format(value) -> str:
    if isinstance(value, (bool, np.bool_)) or value is None or isinstance(value, str):
        return "n/a" if value is None else str(value)
    if isinstance(value, (int, np.integer)):
        return fmt_int(value)
    if isinstance(value, (float, np.floating)):
        return "n/a" if math.isnan(value) else f"{value:,.{PP_DECIMALS}f}"
    return str(value)


def show_table(frame: pd.DataFrame, formats: dict | None = None):
    """``frame`` as the page shows it: without pandas' row index (a 0..n counter tells the reader
    nothing; a meaningful index is kept as columns), integers with thousands separators, floats
    with the shared 2 decimals; ``formats``: column -> function (e.g. fmt_p) for other rules.
    Returns a pandas Styler (a notebook displays it as the cell's value)."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"show_table needs a pandas DataFrame, got {type(frame).__name__}")
    unknown = set(formats or {}) - set(frame.columns)
    if unknown:
        raise ValueError(f"show_table: formats for unknown columns {sorted(unknown)}; "
                         f"columns: {list(frame.columns)}")
    if not isinstance(frame.index, pd.RangeIndex) or frame.index.name is not None:
        frame = frame.reset_index()
    by_column = {c: (formats or {}).get(c, _auto_format) for c in frame.columns}
    # pandas names the table's HTML ids with a random uuid; one from the content keeps a rerun's
    # output identical, so that nbval can compare it with the stored one
    uuid = hashlib.sha1(frame.to_csv().encode()).hexdigest()[:8]
    return frame.style.format(by_column).hide(axis="index").set_uuid(uuid)


def separated_from_zero(low, high, p_value, alpha: float = 0.05) -> int:
    """The rule of every verdict: +1 (or -1) when the 95% interval lies above (below) 0 and
    Welch's p < ``alpha``; 0 otherwise, or with no interval or p."""
    if any(v is None or pd.isna(v) for v in (low, high, p_value)) or p_value >= alpha:
        return 0
    return 1 if low > 0 else -1 if high < 0 else 0


def verdict(gain, low, high, p_value, what: str = "LSLU", baseline: str = "the baseline",
            alpha: float = 0.05) -> str:
    """One sentence on a gain in pp, decided by its numbers: better / worse only when the 95%
    interval excludes 0 and Welch's p < ``alpha``; otherwise not distinguishable from zero; with
    no interval (one seed), no verdict."""
    if gain is None or pd.isna(gain):
        raise ValueError(f"verdict needs a measured gain, got {gain!r}")
    numbers = f"gain {fmt_pp(gain)} pp"
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return f"{numbers}, no interval (one seed per arm): no verdict at this budget"
    numbers += f", 95% interval {fmt_interval(low, high)} pp, p = {fmt_p(p_value)}"
    direction = separated_from_zero(low, high, p_value, alpha)
    if direction:
        return f"{numbers}: {what} {'better' if direction > 0 else 'worse'} than {baseline}"
    return f"{numbers}: not distinguishable from zero at this budget"


def na(value, fmt: str = "{:.1f}") -> str:
    """``value`` formatted with ``fmt``, or "n/a" when it is missing (None or NaN)."""
    return "n/a" if value is None or pd.isna(value) else fmt.format(value)


def plural(count: int, word: str, many: str | None = None) -> str:
    """'1 seed', '2 seeds' ('many' for irregular plurals), with thousands separators."""
    return f"{count:,} {word if count == 1 else many or word + 's'}"


def run_label(config: dict) -> str:
    """'resnet18 + relu', 'vanillanet_5_x0_25 + lslu': a run's model and resolved activation."""
    return f"{config['model']} + {TrainConfig(**config).resolved_activation}"


def check_sweep_levels(name: str, values, minimum_length: int = 1) -> list:
    """``values`` as a list, or ValueError unless it is a list (or tuple) of at least
    ``minimum_length`` values without duplicates (each value is checked by TrainConfig later)."""
    if not isinstance(values, (list, tuple)) or len(values) < minimum_length:
        raise ValueError(f"{name} needs a list of at least {minimum_length} value(s), "
                         f"got {values!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} has duplicates: {list(values)}")
    return list(values)


def mean_std_text(mean: float, std: float, seeds: int, decimals: int = 1) -> str:
    """'95.3' for one seed, '95.3 ± 0.4' for more."""
    if seeds < 2 or pd.isna(std):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def significance_note(seeds) -> str:
    """What the number of seeds allows to say about a gain."""
    n = len(seeds)
    if n < 2:
        return wrap(f"{n} seed per arm: there is no spread to test a gain against, so the Welch "
                    f"p-value and the bootstrap interval are n/a; significance needs >= 2 seeds.")
    return wrap(f"{n} seeds per arm: Welch's t-test (two-sided) and a percentile bootstrap 95% "
                f"interval of the gain over seeds.")


#: public benchmarks that stand in for CIFAR where it cannot be had (what they are, in words)
REAL_STAND_INS = {"fashion_mnist": "10 classes of 28x28 grey product photos, 60,000 training "
                                   "and 10,000 test images"}


def dataset_note(dataset: str, specified, experiment: str) -> str:
    """Whether a chapter runs on the dataset its experiment is specified on (``specified``: a
    dataset name, or a list of them)."""
    names = [specified] if isinstance(specified, str) else list(specified)
    text = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    if dataset in names:
        return wrap(f"{experiment} is specified on {text}; this page runs on {dataset}.")
    if dataset in REAL_STAND_INS:
        return wrap(f"{experiment} is specified on {text}; this page runs on {dataset} "
                    f"({REAL_STAND_INS[dataset]}), a real benchmark that stands in for it: the "
                    f"numbers say what LSLU does to these models on {dataset} at this budget, "
                    f"not on {text}, and a gain here is not the paper's quantity.")
    return wrap(f"{experiment} is specified on {text}; this page runs on {dataset}, which stands "
                f"in for it: the numbers show that the code path works, not what happens on "
                f"{text}.")


def below(value: float, thresholds=(1e-12, 1e-9, 1e-6, 1e-5, 1e-4, 1e-3)) -> str:
    """'below 1e-05'-style text for the smallest threshold above ``value`` (machine-stable)."""
    for t in thresholds:
        if value < t:
            return "below " + f"{t:.0e}".replace("e-0", "e-")
    return f"{value:.2g}"


def percent(value: float, digits: int = 2) -> str:
    """``value`` in %, rounded to ``digits`` significant digits, without exponent
    (3758 -> 3800%)."""
    return f"{float(f'{100 * value:.{digits}g}'):g}%"


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def deployed_copy(model: nn.Module) -> nn.Module:
    """The deploy graph of ``model`` (a copy, eval mode, lambda = 1): conv pairs merged, BN folded
    into the activations' convolutions. ``model`` is left unchanged."""
    deployed = copy.deepcopy(model).eval()
    if hasattr(deployed, "change_act"):
        deployed.change_act(1.0)
    deployed.switch_to_deploy()
    return deployed


def validation_data(result, batch_size: int = 256, device="cpu"):
    """(loader, class names) of the validation split a finished run was evaluated on: the same
    dataset, split, seed, input size and normalization (mean/std of its train split) as in
    lslu.train, without augmentation."""
    cfg = result.config
    ds = lslu_data.load_dataset(cfg["dataset"], data_dir=cfg["data_dir"],
                                input_size=cfg["input_size"], val_fraction=cfg["val_fraction"],
                                seed=cfg["seed"], device=device, limit=cfg["limit"])
    loader = lslu_data.DeviceLoader(ds.val_images, ds.val_labels, batch_size, ds.mean, ds.std,
                                    cfg["input_size"], train=False)
    return loader, ds.classes

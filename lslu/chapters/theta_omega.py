"""Chapter 05 (E4): the dynamics of theta and omega during training, classified against the
abstract's claim, and learnable against frozen theta/omega."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..models import VANILLANET_MODELS
from ..paper import paper_text
from ..train import TrainConfig
from .common import (Headline, base_from, check_sweep_levels, compare, fmt_p, fmt_pct, fmt_pp,
                     grid, mean_std_text, paper_number, per_seed_evidence, results_frame,
                     summarize, verdict)
from .plots import MAX_COLUMNS, page_grid, style_axes


#: The abstract's claim for VanillaNet ("θ initially decreases, then increases before
#: stabilizing, while ω shows an opposite trend") in the labels of classify_trend.
ABSTRACT_TREND = {"theta": "down-up-stable", "omega": "up-down-stable"}


#: Every label classify_trend returns.
TREND_LABELS = ("flat", "monotone up", "monotone down", "down-up-stable", "up-down-stable",
                "down-up", "up-down", "other")


#: What trend_table and classify_trend use unless told otherwise (see classify_trend).
TREND_TOLERANCE = 0.1


TREND_STABLE_EPOCHS = 2


TREND_FLAT = 1e-3


#: LSLU's initial values (LSLU.reset_parameters): the series starts as ReLU.
LSLU_INIT = {"theta": 1.0, "omega": 0.0}


def check_trend_parameters(tolerance, stable_epochs, flat=TREND_FLAT, epochs=None) -> None:
    """ValueError unless 0 < tolerance < 1, stable_epochs is an integer >= 1, flat >= 0 and,
    when ``epochs`` is given, stable_epochs <= epochs (a run's trajectory has epochs + 1 values:
    the initial value and one per epoch)."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) \
            or not 0.0 < float(tolerance) < 1.0:
        raise ValueError(f"the trend tolerance is a fraction of the trajectory's range in (0, 1), "
                         f"got {tolerance!r}")
    if isinstance(stable_epochs, bool) or not isinstance(stable_epochs, int) or stable_epochs < 1:
        raise ValueError(f"stable_epochs must be an integer >= 1, got {stable_epochs!r}")
    if isinstance(flat, bool) or not isinstance(flat, (int, float)) or float(flat) < 0:
        raise ValueError(f"flat must be a number >= 0, got {flat!r}")
    if epochs is not None and stable_epochs > epochs:
        raise ValueError(f"stable_epochs ({stable_epochs}) must not exceed the number of epochs "
                         f"({epochs}): the last stable_epochs epochs are checked for stability")


def trend_moves(values, threshold: float) -> list[str]:
    """The moves ('up' / 'down') of a trajectory that are at least ``threshold`` long.

    A zigzag filter with hysteresis: the first move starts once the values have risen (or
    fallen) by ``threshold`` from the lowest (highest) value seen so far; a move then lasts while
    the values go on in its direction, and a new move in the other direction starts only when they
    come back by at least ``threshold`` from the move's extreme. Wiggles smaller than
    ``threshold`` never count. ``threshold`` must be > 0.
    """
    v = np.asarray(values, dtype=float).ravel()
    if threshold <= 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    moves: list[str] = []
    direction, extreme = None, None
    lo = hi = v[0]
    for x in v[1:]:
        if direction is None:
            if x - lo >= threshold:
                direction, extreme = "up", x
                moves.append("up")
            elif hi - x >= threshold:
                direction, extreme = "down", x
                moves.append("down")
            lo, hi = min(lo, x), max(hi, x)
        elif direction == "up":
            if x >= extreme:
                extreme = x
            elif extreme - x >= threshold:
                direction, extreme = "down", x
                moves.append("down")
        else:
            if x <= extreme:
                extreme = x
            elif x - extreme >= threshold:
                direction, extreme = "up", x
                moves.append("up")
    return moves


def classify_trend(values, tolerance: float = TREND_TOLERANCE,
                   stable_epochs: int = TREND_STABLE_EPOCHS, flat: float = TREND_FLAT) -> str:
    """Label the shape of one trajectory (e.g. θ_i of one layer, one value per epoch).

    The rule, with R = max(values) - min(values), the trajectory's range:

    1. ``"flat"`` when R <= ``flat`` (absolute, in the parameter's units; default 1e-3): the
       parameter did not move.
    2. Otherwise the moves are found by ``trend_moves(values, tolerance * R)``: a rise or fall
       counts only if it is at least ``tolerance`` (a fraction, default 0.1) of the range; smaller
       wiggles are ignored. There is always at least one move.
    3. The trajectory is *stable* at its end when its last ``stable_epochs`` steps (the last
       stable_epochs + 1 values) stay within ``tolerance * R`` of each other (max - min below it).
    4. One move: ``"monotone up"`` / ``"monotone down"`` (stable or not at the end). Two moves:
       ``"down-up-stable"`` / ``"up-down-stable"`` when stable at the end, else ``"down-up"`` /
       ``"up-down"`` (still moving). Three or more moves: ``"other"``.

    The abstract's claim for VanillaNet is θ ``"down-up-stable"`` and ω ``"up-down-stable"``
    (ABSTRACT_TREND). Every label is in TREND_LABELS.
    """
    check_trend_parameters(tolerance, stable_epochs, flat)
    v = np.asarray(values, dtype=float).ravel()
    if v.size < 2:
        raise ValueError(f"a trajectory needs at least 2 values, got {v.size}")
    if not np.isfinite(v).all():
        raise ValueError("a trajectory must hold finite values only")
    span = float(v.max() - v.min())
    if span <= flat:
        return "flat"
    threshold = tolerance * span
    moves = trend_moves(v, threshold)
    tail = v[-(stable_epochs + 1):]
    stable = v.size > stable_epochs and float(tail.max() - tail.min()) < threshold
    if len(moves) == 1:
        return f"monotone {moves[0]}"
    if len(moves) == 2:
        return "-".join(moves) + ("-stable" if stable else "")
    return "other"


def activation_history(result, include_init: bool = True) -> list[dict]:
    """The θ/ω records of a run (RunResult.history: epoch, lam, theta, omega per epoch), with,
    when ``include_init``, an epoch-0 record before training: θ = 1, ω = 0 for every layer and
    step (LSLU_INIT, LSLU's initialisation). Ready for plot_trajectories.

    Layers come stem first, then by name (a stored result keeps them sorted by name)."""
    if not result.history:
        raise ValueError(f"run {result.run_id} has no history")
    order = sorted(result.history[0]["theta"], key=lambda name: (not name.startswith("stem"), name))
    records = [{"epoch": h.get("epoch", e + 1), "lam": h.get("lam"),
                "theta": {k: h["theta"][k] for k in order},
                "omega": {k: h["omega"][k] for k in order}} for e, h in enumerate(result.history)]
    if not records[0]["theta"]:
        raise ValueError(f"run {result.run_id} ({result.config.get('model')} with "
                         f"{result.config.get('activation')}) has no LSLU layer: no θ/ω to follow")
    if include_init:
        first = records[0]
        init = {"epoch": 0, "lam": None}
        for key in ("theta", "omega"):
            init[key] = {layer: [LSLU_INIT[key]] * len(vals) for layer, vals in first[key].items()}
        records.insert(0, init)
    return records


def lambda_ramp_end(result):
    """The epoch after which VanillaNet's deep-training λ is 1 for good (the x position where a
    trajectory plot marks the end of the ramp), read from the recorded λ of every epoch: epoch e
    trains with λ = min(1, (e - 1) / decay_epochs), so this is decay_epochs. None when there is no
    ramp (decay_epochs = 0), when λ never reaches 1 within the run, or for ResNet18, which has no
    λ (its change_act does nothing)."""
    if result.config.get("model") not in VANILLANET_MODELS:
        return None
    for h in result.history:
        if h.get("lam") is not None and h["lam"] >= 1.0:
            end = int(h["epoch"]) - 1
            return end if end > 0 else None
    return None


def trend_table(result, tolerance: float = TREND_TOLERANCE,
                stable_epochs: int = TREND_STABLE_EPOCHS, flat: float = TREND_FLAT,
                include_init: bool = True) -> pd.DataFrame:
    """One row per LSLU layer and series step i of one run: θ_i and ω_i at the start (the
    initialisation when ``include_init``, else after epoch 1), their minimum, maximum and final
    values, their classify_trend labels, and ``matches_claim``: θ is "down-up-stable" AND ω is
    "up-down-stable" (the abstract's claim for VanillaNet, ABSTRACT_TREND)."""
    history = activation_history(result, include_init)
    rows = []
    for layer in history[0]["theta"]:
        theta = np.array([h["theta"][layer] for h in history], dtype=float)
        omega = np.array([h["omega"][layer] for h in history], dtype=float)
        for i in range(theta.shape[1]):
            row = {"model": result.config.get("model"), "seed": result.config.get("seed"),
                   "layer": layer, "i": i + 1}
            for key, values in (("theta", theta[:, i]), ("omega", omega[:, i])):
                row |= {f"{key}_start": values[0], f"{key}_min": values.min(),
                        f"{key}_max": values.max(), f"{key}_end": values[-1],
                        f"{key}_trend": classify_trend(values, tolerance, stable_epochs, flat)}
            row["matches_claim"] = (row["theta_trend"] == ABSTRACT_TREND["theta"]
                                    and row["omega_trend"] == ABSTRACT_TREND["omega"])
            rows.append(row)
    return pd.DataFrame(rows)


def trend_summary(table: pd.DataFrame) -> dict:
    """From trend_table (one or several runs concatenated): how many (layer, i) pairs there are,
    how many match the abstract's claim and that fraction, how many have θ down-up-stable and ω
    up-down-stable on their own, and the count of each θ and ω label."""
    pairs = len(table)
    if pairs == 0:
        raise ValueError("the trend table is empty")
    matching = int(table["matches_claim"].sum())
    return {"pairs": pairs, "matching": matching, "fraction": matching / pairs,
            "theta_down_up_stable": int((table["theta_trend"] == ABSTRACT_TREND["theta"]).sum()),
            "omega_up_down_stable": int((table["omega_trend"] == ABSTRACT_TREND["omega"]).sum()),
            "theta_labels": _label_counts(table["theta_trend"]),
            "omega_labels": _label_counts(table["omega_trend"])}


def _label_counts(labels: pd.Series) -> dict:
    """Label -> count, most frequent first, ties by name (a stable order for printing)."""
    counts = labels.value_counts().to_dict()
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _fixed(value: float, decimals: int) -> str:
    """``value`` with ``decimals`` decimals, without the sign of a value that rounds to zero."""
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def trend_display(table: pd.DataFrame, decimals: int = 3, keys=("theta", "omega")
                  ) -> pd.DataFrame:
    """trend_table for the page: layer, i, θ start → end (min, max) and label, the same for ω,
    and whether the pair matches the claim; values rounded to ``decimals``. ``keys``: ("theta",)
    or ("omega",) gives half the columns, so that each half fits the book's column."""
    bad = [k for k in keys if k not in ("theta", "omega")] if isinstance(keys, (list, tuple)) \
        else [keys]
    if bad or not keys:
        raise ValueError(f"keys must be a non-empty tuple of 'theta', 'omega', got {keys!r}")
    f = lambda v: _fixed(v, decimals)  # noqa: E731
    out = pd.DataFrame({"model": table["model"], "seed": table["seed"], "layer": table["layer"],
                        "i": table["i"]})
    for key, sym in (("theta", "θ"), ("omega", "ω")):
        if key not in keys:
            continue
        out[f"{sym}: start → end"] = [f"{f(a)} → {f(b)}"
                                      for a, b in zip(table[f"{key}_start"], table[f"{key}_end"])]
        out[f"{sym}: min, max"] = [f"{f(a)}, {f(b)}"
                                   for a, b in zip(table[f"{key}_min"], table[f"{key}_max"])]
        out[f"{sym} trend"] = table[f"{key}_trend"]
    out["matches the abstract"] = table["matches_claim"].map({True: "yes", False: "no"})
    return out


def is_frozen_at_init(result) -> bool:
    """True when every recorded θ is 1 and every ω is 0 in every epoch (a frozen run's check)."""
    for h in result.history:
        for key in ("theta", "omega"):
            for values in h[key].values():
                if any(v != LSLU_INIT[key] for v in values):
                    return False
    return True


def learnable_vs_frozen_curves(results) -> pd.DataFrame:
    """One row per run and epoch: model, seed, variant ('learnable θ, ω' / 'frozen θ, ω' from
    TrainConfig.freeze_activation), epoch, val_acc (%), train_loss, val_loss; then averaged over
    seeds (column seeds: how many)."""
    rows = []
    for r in results:
        variant = "frozen θ, ω" if r.config.get("freeze_activation") else "learnable θ, ω"
        for h in r.history:
            rows.append({"model": r.config["model"], "variant": variant, "seed": r.config["seed"],
                         "epoch": h["epoch"], "val_acc": 100 * h["val_acc"],
                         "train_loss": h["train_loss"], "val_loss": h["val_loss"]})
    df = pd.DataFrame(rows)
    keys = ["model", "variant", "epoch"]
    out = df.groupby(keys, sort=False)[["val_acc", "train_loss", "val_loss"]].mean().reset_index()
    return out.assign(seeds=df.groupby(keys, sort=False)["seed"].nunique().to_numpy())


def learnable_vs_frozen_table(results) -> pd.DataFrame:
    """Per model and variant ('learnable θ, ω' / 'frozen θ, ω', TrainConfig.freeze_activation):
    final top-1 mean, std (ddof 1) and seeds (%), and on the learnable rows the gain over the
    frozen ones in pp with Welch's p-value (NaN with fewer than 2 seeds per variant)."""
    frame = results_frame(results)
    frame["variant"] = frame["freeze_activation"].map({True: "frozen θ, ω",
                                                       False: "learnable θ, ω"})
    table = summarize(frame, ["model", "variant"])
    gains = compare(frame, ["model"], "variant", "frozen θ, ω")
    columns = ["model", "variant", "gain", "p_value", "ci_low", "ci_high"]
    if gains.empty:
        gains = pd.DataFrame(columns=columns)
    table = table.merge(gains[columns], on=["model", "variant"], how="left")
    return table.rename(columns={"gain": "gain_over_frozen"})


def learnable_vs_frozen_lines(table: pd.DataFrame) -> list[str]:
    """The summary's sentences from learnable_vs_frozen_table: per model and variant the final
    top-1, and for the learnable one its gain over frozen with the interval, p and verdict
    (common.verdict)."""
    lines = []
    for _, row in table.iterrows():
        text = f"{row['model']}, {row['variant']}: {fmt_pct(row['top1_mean'])}% top-1"
        if not pd.isna(row["gain_over_frozen"]):
            text += "; " + verdict(row["gain_over_frozen"], row["ci_low"], row["ci_high"],
                                   row["p_value"], "learnable", "frozen")
        lines.append(text)
    return lines


def learnable_vs_frozen_display(table: pd.DataFrame) -> pd.DataFrame:
    """learnable_vs_frozen_table for the page: top-1 'mean ± std' (1 decimal), the gain in pp
    (common.fmt_pp) and Welch's p (common.fmt_p; 'n/a' with one seed)."""
    return pd.DataFrame({
        "model": table["model"], "θ, ω": table["variant"],
        "top-1 (%)": [mean_std_text(m, s, n) for m, s, n in
                      zip(table["top1_mean"], table["top1_std"], table["seeds"])],
        "seeds": table["seeds"],
        "gain over frozen (pp)": ["" if pd.isna(g) else fmt_pp(g)
                                  for g in table["gain_over_frozen"]],
        "Welch p": ["" if pd.isna(g) else fmt_p(p)
                    for g, p in zip(table["gain_over_frozen"], table["p_value"])]})


def trend_paper_vs_ours(claim: dict, freeze: pd.DataFrame, model: str) -> pd.DataFrame:
    """The abstract's statements on θ/ω beside what our runs show: the pattern (from
    trend_summary), and learnable vs frozen θ/ω (from learnable_vs_frozen_table) for ``model``,
    beside the paper's gain over frozen (E4 of lslu.paper)."""
    gain = freeze.loc[(freeze["model"] == model) & freeze["gain_over_frozen"].notna(),
                      "gain_over_frozen"]
    pairs = claim["pairs"]
    return pd.DataFrame([
        {"claim": "θ initially decreases, then increases before stabilizing",
         "paper (abstract)": "stated; the trajectories are not available",
         "ours": f"θ down-up-stable in {claim['theta_down_up_stable']}/{pairs} (layer, i)"},
        {"claim": "ω shows an opposite trend (up, then down, then stable)",
         "paper (abstract)": "stated; the trajectories are not available",
         "ours": f"ω up-down-stable in {claim['omega_up_down_stable']}/{pairs} (layer, i)"},
        {"claim": "both at once (θ down-up-stable and ω up-down-stable)",
         "paper (abstract)": "stated",
         "ours": f"{claim['matching']}/{pairs} (layer, i) = {100 * claim['fraction']:.0f}%"},
        {"claim": "learnable θ, ω vs frozen (top-1 gain)",
         "paper (abstract)": paper_text(paper_number("E4", model, "gain_over_frozen"),
                                        signed=True),
         "ours": "n/a" if gain.empty else f"{fmt_pp(float(gain.iloc[0]))} pp"},
    ]).set_index("claim")


def trend_headline_rows(claim: dict, freeze: pd.DataFrame, model: str, dataset: str,
                        results=None) -> list[dict]:
    """Rows for save_headline (E4): the share of (layer, i) pairs matching the
    abstract's pattern and, per model, the top-1 gain of learnable over frozen θ, ω; with
    ``results`` (the runs behind ``freeze``) each gain carries its per-seed top-1 and run ids,
    from which the summary computes its interval."""
    frame = results_frame(results) if results else None
    rows = [Headline(experiment="E4",
                     quantity=f"(layer, i) pairs with θ down-up-stable and ω up-down-stable, "
                              f"{model} on {dataset}",
                     ours=round(100 * claim["fraction"], 2), unit="%")]
    for _, r in freeze[freeze["gain_over_frozen"].notna()].iterrows():
        paper = paper_text(paper_number("E4", r["model"], "gain_over_frozen"), signed=True)
        evidence = {}
        if frame is not None:
            arms = frame[frame["model"] == r["model"]]
            frozen = arms["freeze_activation"].astype(bool)
            evidence = per_seed_evidence(arms[frozen], arms[~frozen])
        rows.append(Headline(experiment="E4",
                             quantity=f"top-1 gain, learnable over frozen θ/ω, {r['model']} on "
                                      f"{dataset}",
                             ours=round(float(r["gain_over_frozen"]), 2), paper=paper, unit="pp",
                             **evidence))
    return rows


_SYMBOLS = {"theta": r"\theta", "omega": r"\omega"}


def plot_trajectories(history: list, key: str, layers=None, ncols: int = MAX_COLUMNS):
    """Per-layer trajectories of a series parameter over epochs: one panel per layer, one line
    per series step i. ``history[e][key]`` is {layer_name: [n floats]} for epoch e (epoch numbers
    are ``history[e]["epoch"]`` when present, else e)."""
    layers = list(history[0][key]) if layers is None else list(layers)
    epochs = [h.get("epoch", e) for e, h in enumerate(history)]
    symbol = f"${_SYMBOLS[key]}$" if key in _SYMBOLS else key
    nrows, ncols, figsize = page_grid(len(layers), ncols, panel_height=2.6)
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True).ravel()
    for ax, layer in zip(axes, layers):
        values = np.array([h[key][layer] for h in history], dtype=float).reshape(len(history), -1)
        for i in range(values.shape[1]):
            label = f"${_SYMBOLS[key]}_{{{i + 1}}}$" if key in _SYMBOLS else f"{key}[{i + 1}]"
            ax.plot(epochs, values[:, i], lw=1.5, label=label)
        style_axes(ax, "epoch", symbol, layer)
    for ax in axes[len(layers):]:
        ax.set_visible(False)
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


def configs(*, model, compare_models, seeds, epochs, trend_tolerance=TREND_TOLERANCE,
            stable_epochs=TREND_STABLE_EPOCHS, **settings) -> list[TrainConfig]:
    """The runs of chapter 05, in this order: ``model`` with LSLU (learnable θ, ω), the same with
    θ, ω frozen, and every model of ``compare_models`` with LSLU; each for every seed (split the
    results with split_runs). ``settings``: the other notebook parameters (``dataset``,
    ``extra``: common.base_from)."""
    seeds = check_sweep_levels("seeds", seeds)
    compare_models = check_sweep_levels("compare_models", compare_models, minimum_length=0)
    if model in compare_models:
        raise ValueError(f"model {model!r} is also in compare_models {compare_models}")
    check_trend_parameters(trend_tolerance, stable_epochs, epochs=epochs)
    base = base_from(settings | {"epochs": epochs})
    learnable = grid(base, model=[model], activation=["lslu"], seed=seeds)
    frozen = grid(base, model=[model], activation=["lslu"], freeze_activation=[True], seed=seeds)
    compared = grid(base, model=compare_models, activation=["lslu"], seed=seeds) \
        if compare_models else []
    return learnable + frozen + compared


def split_runs(results, model: str) -> tuple[list, list, list]:
    """(learnable, frozen, compared): the results of configs() by role."""
    learnable = [r for r in results if r.config["model"] == model
                 and not r.config["freeze_activation"]]
    frozen = [r for r in results if r.config["model"] == model and r.config["freeze_activation"]]
    compared = [r for r in results if r.config["model"] != model]
    return learnable, frozen, compared

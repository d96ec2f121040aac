"""Chapter 09 (E8): class selectivity of the activation layers (Morcos et al. 2018), with and
without LSLU, and what the reference's class-selectivity script measures instead."""
from __future__ import annotations

import dataclasses
import os
import tempfile

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from scipy import stats

from ..models import build_model
from ..probes import compute_probes, selectivity_arrays
from ..results import ResultsStore
from ..train import TrainConfig, load_model
from .cifar import with_and_without_lslu_configs
from .common import (base_from, compare, fmt_interval, fmt_p, fmt_pp, run_label,
                     separated_from_zero, validation_data)
from .plots import as_frame, new_axes, style_axes


def selectivity_of_runs(results, results_dir=None, device="cpu", batch_size: int = 256) -> dict:
    """``{run label: [per-layer selectivity of each run with that label]}`` (one entry per seed),
    each ``{layer: {"si", "si_shuffled", "si_output_shift", "si_output_shift_shuffled",
    "output_negative"}}`` as lslu.probes.selectivity_arrays gives it. The probes stored with the
    run at the end of training are read; a run stored before probes existed is measured now the
    same way (lslu.probes.compute_probes) on its trained model and validation split."""
    out = {}
    for result in results:
        if not result.probes:
            model = load_model(result, results_dir=results_dir, device=device)
            loader, classes = validation_data(result, batch_size=batch_size, device=device)
            result = dataclasses.replace(result, probes=compute_probes(model, loader, classes))
        out.setdefault(run_label(result.config), []).append(selectivity_arrays(result))
    return out


def selectivity_table(selectivity: dict) -> pd.DataFrame:
    """One row per (label, layer) for ``{label: [class_selectivity(...) per seed]}`` (units of
    all seeds pooled): depth (1 = first activation), units, units whose index is undefined (dead
    units), mean and median index, the mean index with shuffled labels (when computed), and for
    the module's output after BN: the share of units with a negative class mean and the mean
    "shift" index."""
    rows = []
    for label, per_seed in selectivity.items():
        per_seed = per_seed if isinstance(per_seed, (list, tuple)) else [per_seed]
        for depth, layer in enumerate(per_seed[0], start=1):
            pooled = lambda key: np.concatenate([s[layer][key] for s in per_seed])  # noqa: E731
            si = pooled("si")
            valid = ~np.isnan(si)
            row = {"model": label, "layer": layer, "depth": depth, "units": si.size,
                   "undefined (dead) units": int((~valid).sum()),
                   "mean SI": si[valid].mean() if valid.any() else np.nan,
                   "median SI": float(np.median(si[valid])) if valid.any() else np.nan}
            if all("si_shuffled" in s[layer] for s in per_seed):
                shuffled = pooled("si_shuffled")
                row["mean SI, shuffled labels"] = np.nanmean(shuffled) \
                    if (~np.isnan(shuffled)).any() else np.nan
            row["output: units with a negative class mean (%)"] = \
                100 * pooled("output_negative").mean()
            row["output: mean SI, shifted"] = pooled("si_output_shift").mean()
            if all("si_output_shift_shuffled" in s[layer] for s in per_seed):
                row["output: mean SI, shifted, shuffled labels"] = \
                    pooled("si_output_shift_shuffled").mean()
            rows.append(row)
    return pd.DataFrame(rows)


def per_seed_means(selectivity: dict) -> pd.DataFrame:
    """One row per (label, seed, layer) of ``{label: [class_selectivity(...) per seed]}``: the
    mean index over the units of that seed's layer (undefined units left out), the quantity the
    seeds spread over."""
    rows = []
    for label, per_seed in selectivity.items():
        for seed, layers in enumerate(per_seed):
            for depth, (layer, arrays) in enumerate(layers.items(), start=1):
                si = arrays["si"][~np.isnan(arrays["si"])]
                rows.append({"model": label, "seed": seed, "layer": layer, "depth": depth,
                             "mean SI": float(si.mean()) if si.size else np.nan})
    return pd.DataFrame(rows)


def layer_comparison(selectivity: dict, baseline: str) -> pd.DataFrame:
    """Per layer: each other label's mean index ("SI") minus ``baseline``'s ("baseline SI"),
    over seeds (each seed's mean over its units, per_seed_means), with Welch's p and a
    bootstrap 95% interval (common.compare: NaN with fewer than 2 seeds per arm)."""
    frame = per_seed_means(selectivity).dropna(subset=["mean SI"])
    table = compare(frame, ["layer"], "model", baseline, value="mean SI")
    means = frame.groupby(["layer", "model"], sort=False)["mean SI"].mean()
    table.insert(1, "baseline SI", [means[(layer, baseline)] for layer in table["layer"]])
    table.insert(3, "SI", [means[key] for key in zip(table["layer"], table["model"])])
    return table.rename(columns={"gain": "difference"})


def comparison_lines(selectivity: dict, baseline: str) -> list[str]:
    """The summary's sentences, one per layer and compared label: both means, the difference
    and, with two seeds or more per arm, whether the seeds support it (Welch p < 0.05 and a
    95% interval that excludes 0)."""
    lines = []
    for _, row in layer_comparison(selectivity, baseline).iterrows():
        text = (f"{row['layer']}: {baseline} {row['baseline SI']:.2f}, {row['model']} "
                f"{row['SI']:.2f}, difference {fmt_pp(row['difference'])}")
        if pd.isna(row["p_value"]):
            text += f" (seeds {row['seeds']}: no test with one seed per arm)"
        else:
            supported = separated_from_zero(row["ci_low"], row["ci_high"], row["p_value"])
            text += (f" (Welch p = {fmt_p(row['p_value'])}, 95% interval "
                     f"{fmt_interval(row['ci_low'], row['ci_high'])}, seeds {row['seeds']}: "
                     + ("a difference the seeds support)" if supported
                        else "not distinguishable from zero)"))
        lines.append(text)
    return lines


def reference_weight_selectivity(weight: torch.Tensor, normalize: bool = True) -> np.ndarray:
    """The reference code's "class selectivity index" (class_selectivity_index.py) of one conv
    weight (out, in, kh, kw): for every output channel and kernel position, the largest weight
    over the input channels minus the mean weight over the input channels (signed weights, no
    absolute value), then min-max normalized over the whole layer to [0, 1]. It is a property of
    the weights alone: no image and no class enters it, so it measures no class selectivity."""
    w = weight.detach().double()
    if w.dim() != 4:
        raise ValueError(f"expected a conv weight (out, in, kh, kw), got shape {tuple(w.shape)}")
    index = (w.max(dim=1).values - w.mean(dim=1)).flatten().cpu().numpy()
    if normalize:
        span = index.max() - index.min()
        index = (index - index.min()) / span if span > 0 else np.zeros_like(index)
    return index


def weight_selectivity(model: nn.Module, normalize: bool = True) -> dict:
    """Layer name -> reference_weight_selectivity for every nn.Conv2d of ``model`` in
    named_modules order, the layers the reference script visits ("Block 1", "Block 2", ...)."""
    return {name: reference_weight_selectivity(m.weight, normalize)
            for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def reference_checkpoint(model: nn.Module, epoch="best") -> dict:
    """A checkpoint laid out as the reference's training code saves it (VanillaNet's
    utils.save_model): the weights under "model", next to "epoch" (and optimizer state, left
    out here)."""
    return {"model": model.state_dict(), "epoch": epoch}


def reference_style_load(model: nn.Module, checkpoint: dict) -> dict:
    """Load ``checkpoint`` as the reference's class_selectivity_index.py does:
    ``model.load_state_dict(torch.load(path), strict=False)``. With a training checkpoint (the
    weights under "model") no key matches, strict=False hides it, and the model keeps its
    random initialisation. Returns what happened: tensors in the model's state dict and how many
    the load changed, parameters and how many the load did not find, and the checkpoint keys it
    did not use."""
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    outcome = model.load_state_dict(checkpoint, strict=False)
    after = model.state_dict()
    changed = sum(not torch.equal(before[k], after[k]) for k in before)
    params = [name for name, _ in model.named_parameters()]
    # (BatchNorm's num_batches_tracked is never reported missing: PyTorch fills it in silently)
    return {"tensors": len(before), "tensors changed": changed,
            "parameters": len(params),
            "parameters not found": len(set(params) & set(outcome.missing_keys)),
            "checkpoint keys not used": list(outcome.unexpected_keys)}


def untrained_model(result, seed: int | None = None) -> nn.Module:
    """The model of ``result``'s config freshly initialised (seeded by ``seed``, default the run's
    seed), in eval mode: what the reference script analyses after its failed load."""
    cfg = TrainConfig(**result.config)
    torch.manual_seed(cfg.seed if seed is None else seed)
    model = build_model(cfg.model, result.final["num_classes"], cfg.resolved_activation,
                        cfg.act_num, cfg.drop_rate, cfg.act_everywhere)
    return model.eval()


def weight_measure_table(measures: dict) -> pd.DataFrame:
    """One row per conv layer for ``{label: weight_selectivity(...)}``: the mean normalized index
    of every label, and the Kolmogorov-Smirnov distance between the first two labels'
    distributions (0: the same histogram, 1: no overlap)."""
    labels = list(measures)
    rows = []
    for block, layer in enumerate(measures[labels[0]], start=1):
        row = {"block": block, "layer": layer, "values": measures[labels[0]][layer].size}
        for label in labels:
            row[f"mean: {label}"] = float(measures[label][layer].mean())
        if len(labels) >= 2:
            a, b = measures[labels[0]][layer], measures[labels[1]][layer]
            row[f"KS distance: {labels[0]} vs {labels[1]}"] = float(
                stats.ks_2samp(a, b, method="asymp").statistic)  # exact: slow, warns for large n
        rows.append(row)
    return pd.DataFrame(rows)


def trained_weights_stored(result, results_dir=None) -> bool:
    """Whether the store holds ``result``'s trained weights (a committed store holds none)."""
    return ResultsStore(results_dir).model_path(result.run_id).exists()


def reference_script_load(result, results_dir=None):
    """Replay the reference's class_selectivity_index.py on a finished run: write a checkpoint
    as the reference's training code writes one (``{"model": weights, "epoch": "best"}``, to a
    temporary checkpoint-best.pth), build a fresh model and load the file as the script does
    (reference_style_load). The checkpoint holds the run's trained weights when the store has
    them, else the weights of another initialisation (seed + 1) of the same model: what the load
    does depends on the checkpoint's keys, not on its values. Returns (the model the script goes
    on to analyse, what the load did, with "checkpoint": which weights it held)."""
    if trained_weights_stored(result, results_dir):
        source, held = load_model(result, results_dir=results_dir, device="cpu"), "trained weights"
    else:
        source = untrained_model(result, seed=result.config["seed"] + 1)
        held = "another initialisation (the store holds no trained weights of this run)"
    model = untrained_model(result)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "checkpoint-best.pth")
        torch.save(reference_checkpoint(source), path)
        outcome = reference_style_load(model, torch.load(path, map_location="cpu"))
    return model, outcome | {"checkpoint": held}


def selectivity_panels(selectivity: dict, key: str = "si") -> dict:
    """Layer -> {label: values of ``key`` pooled over seeds, undefined (NaN) ones left out} for
    plot_histogram_grid, from ``{label: [class_selectivity(...) per seed]}`` (the layers
    of the first label)."""
    labels = list(selectivity)
    layers = list(selectivity[labels[0]][0])

    def pooled(label, layer):
        values = np.concatenate([s[layer][key] for s in selectivity[label]]).astype(float)
        return values[~np.isnan(values)]
    return {layer: {label: pooled(label, layer) for label in labels
                    if layer in selectivity[label][0]}
            for layer in layers}


def selectivity_display(table: pd.DataFrame, decimals: int = 2) -> pd.DataFrame:
    """selectivity_table for the page: SI columns rounded to ``decimals``, the share of units
    with a negative class mean to 1 decimal."""
    out = table.copy()
    for column in out.columns:
        if "SI" in column:
            out[column] = out[column].astype(float).round(decimals)
    share = "output: units with a negative class mean (%)"
    if share in out:
        out[share] = out[share].astype(float).round(1)
    return out


#: selectivity_table's long column names -> the short ones of the page's two narrow tables
_AT_G = {"model": "model", "layer": "layer", "units": "units", "undefined (dead) units": "dead",
         "mean SI": "mean SI", "median SI": "median SI", "mean SI, shuffled labels": "chance"}
_AT_OUTPUT = {"model": "model", "layer": "layer",
              "output: units with a negative class mean (%)": "neg. mean (%)",
              "output: mean SI, shifted": "mean SI (shift)",
              "output: mean SI, shifted, shuffled labels": "chance"}


def selectivity_tables(table: pd.DataFrame, decimals: int = 2):
    """selectivity_display split in two narrow tables with short column names (show each with
    common.show_table): (units read at g(x): units, dead units, mean and median SI, chance =
    the mean SI with labels shuffled), (the module's output after BN: % of units with a negative
    class mean, mean shift index, its chance level). A column not computed is left out."""
    shown = selectivity_display(table, decimals)
    return tuple(shown[[c for c in names if c in shown]].rename(columns=names)
                 for names in (_AT_G, _AT_OUTPUT))


def plot_selectivity_by_depth(table, ax=None, title="Mean class selectivity per layer"):
    """Mean class selectivity index per activation layer against depth, one colour per model
    (``table``: selectivity_table): solid with the true labels, dotted with the labels
    shuffled (the chance level), when the table has that column."""
    df = as_frame(table)
    fig, ax = new_axes(ax)
    for i, (label, part) in enumerate(df.groupby("model", sort=False)):
        part = part.sort_values("depth")
        ax.plot(part["depth"], part["mean SI"], marker="o", ms=4, lw=1.8, color=f"C{i}",
                label=label)
        if "mean SI, shuffled labels" in part:
            ax.plot(part["depth"], part["mean SI, shuffled labels"], marker=".", ms=4, lw=1.2,
                    ls=":", color=f"C{i}", label=f"{label}, labels shuffled")
    ax.set_xticks(sorted(df["depth"].unique()))
    ax.set_ylim(bottom=0)
    style_axes(ax, "activation layer (1 = stem)", "mean class selectivity index", title)
    return fig


def configs(*, model, seeds, **settings) -> list[TrainConfig]:
    """The runs of chapter 09: ``model`` with its baseline activation and with LSLU, for every
    seed; ``settings``: the other notebook parameters (``dataset``, ``epochs``, ``extra``:
    common.base_from)."""
    return with_and_without_lslu_configs(base_from(settings), [model], seeds)

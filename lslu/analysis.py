"""Computations behind the book's figures and tables (the notebooks only call these).

Chapter 01 (the LSLU function, no training): the shape g(x) for given theta/omega, the collapse
of the series into at most three linear pieces, the exactness of our deploy against the reference
code's, and parameter/FLOP counts.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .activations import LSLU, naive_series, reference_deploy_, three_piece, three_piece_parameters
from .models import build_model, count_parameters

__all__ = [
    "SERIES_DRAWS",
    "SIGN_CASES",
    "series_draws",
    "moved_series_settings",
    "shape_curves",
    "random_series_parameters",
    "count_pieces",
    "series_pieces_table",
    "representative_draws",
    "closed_form_error",
    "random_images",
    "move_activation_parameters_",
    "deploy_error",
    "deploy_check",
    "deploy_error_table",
    "parameter_table",
    "models_per_act_num",
    "below",
    "percent",
    "agreement",
]

# Random (theta, omega) draws per n checked against the closed form, per execution profile.
SERIES_DRAWS = {"smoke": 2000, "fast": 20000, "paper": 100000}


def series_draws(profile: str) -> int:
    """Number of random (theta, omega) draws per n for an execution profile."""
    if profile not in SERIES_DRAWS:
        raise ValueError(f"unknown profile {profile!r}; valid: {', '.join(SERIES_DRAWS)}")
    return SERIES_DRAWS[profile]


# Hand-picked settings that show what the signs of theta and omega do.
SIGN_CASES = {
    "θ=(1), ω=(0): ReLU (init)": ([1.0], [0.0]),
    "θ=(1.5, 0.8), ω=(0, 0): (∏θ)·ReLU": ([1.5, 0.8], [0.0, 0.0]),
    "θ=(1.2), ω=(−0.5): ReLU shifted right": ([1.2], [-0.5]),
    "θ=(1), ω=(0.5): ReLU lifted by 0.5": ([1.0], [0.5]),
    "θ=(−0.8), ω=(1): decreasing, then 0": ([-0.8], [1.0]),
    "θ=(−1, −1), ω=(1, 1): clamp(x, 0, 1)": ([-1.0, -1.0], [1.0, 1.0]),
}


def _vec(values) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float64)


def moved_series_settings(act_nums, seed: int, scale: float) -> dict:
    """Label -> (theta, omega): the init (theta=1, omega=0, ReLU for every n) and, per n, seeded
    values theta ~ 1 + scale N(0, 1), omega ~ scale N(0, 1), drawn as move_activation_parameters_
    does (a constant g is redrawn)."""
    gen = torch.Generator().manual_seed(seed)
    settings = {"init θ=1, ω=0 (every n): ReLU": ([1.0], [0.0])}
    for n in act_nums:
        theta, omega = _draw_live_series((n,), scale, gen)
        fmt = lambda t: ", ".join(f"{v:.2f}" for v in t.tolist())  # noqa: E731
        settings[f"n={n}: θ=({fmt(theta)}), ω=({fmt(omega)})"] = (theta, omega)
    return settings


def shape_curves(settings: dict, x=None) -> dict:
    """Label -> (x, g(x)) for label -> (theta, omega), via LSLU.shape_function."""
    x = torch.linspace(-2, 3, 501, dtype=torch.float64) if x is None else _vec(x)
    curves = {}
    for label, (theta, omega) in settings.items():
        theta, omega = _vec(theta), _vec(omega)
        act = LSLU(1, act_num=theta.numel()).double()
        with torch.no_grad():
            act.theta.copy_(theta)
            act.omega.copy_(omega)
        curves[label] = (x.numpy(), act.shape_function(x).numpy())
    return curves


def random_series_parameters(n: int, draws: int, seed: int):
    """Seeded theta ~ U(-2, 2), omega ~ U(-1, 1), shape (draws, n), float64: every sign pattern."""
    gen = torch.Generator().manual_seed(seed)
    theta = 4 * torch.rand(draws, n, generator=gen, dtype=torch.float64) - 2
    omega = 2 * torch.rand(draws, n, generator=gen, dtype=torch.float64) - 1
    return theta, omega


def count_pieces(c, s, p, q) -> torch.Tensor:
    """Number of non-empty linear pieces of c + s (clamp(x, p, q) - p): 1 (constant), 2 or 3."""
    linear = (s != 0) & (p < q)
    return torch.where(linear, 2 + torch.isfinite(q).long(), torch.ones_like(p, dtype=torch.long))


def _pieces(theta, omega):
    """(c, s, p, q) for a batch of draws: theta/omega shaped (n,) or (draws, n)."""
    theta, omega = _vec(theta), _vec(omega)
    if theta.dim() == 1:
        theta, omega = theta[None], omega[None]
    return theta, omega, three_piece_parameters(theta.T, omega.T)


def series_pieces_table(theta, omega, decimals: int = 3) -> pd.DataFrame:
    """One row per draw (theta/omega shaped (n,) or (draws, n)): theta, omega, c, s, p, q and the
    number of non-empty pieces; values rounded to ``decimals``."""
    theta, omega, (c, s, p, q) = _pieces(theta, omega)
    fmt = lambda row: "(" + ", ".join(f"{v:.2f}" for v in row.tolist()) + ")"  # noqa: E731
    table = pd.DataFrame({
        "θ": [fmt(r) for r in theta], "ω": [fmt(r) for r in omega],
        "c": c.numpy(), "s": s.numpy(), "p": p.numpy(), "q": q.numpy(),
        "pieces": count_pieces(c, s, p, q).numpy(),
    })
    # -0.0 prints as "-0.0": normalise it so the table reads (and compares) cleanly
    return table.round(decimals).replace(-0.0, 0.0)


def representative_draws(n: int, seed: int, draws: int = 1000):
    """(theta, omega) shaped (k, n): the first seeded draw with 3, 2 and 1 pieces (those found),
    taking for 3 pieces one whose middle piece is at least 0.5 wide (so a plot shows it)."""
    theta, omega, (c, s, p, q) = _pieces(*random_series_parameters(n, draws, seed))
    counts = count_pieces(c, s, p, q)
    wanted = [(counts == 3) & (q - p >= 0.5), counts == 2, counts == 1]
    rows = [int(torch.nonzero(mask)[0]) for mask in wanted if mask.any()]
    return theta[rows], omega[rows]


def closed_form_error(act_nums, draws: int, seed: int, points: int = 2001,
                      chunk: int = 1000) -> dict:
    """Largest |naive series - closed form| in float64 over ``draws`` random (theta, omega) per n
    (see random_series_parameters) and x on a grid over [-4, 4] plus every draw's p and q, and the
    distribution of the number of pieces. The closed form is evaluated by the same fused function
    LSLU uses (three_piece)."""
    grid = torch.linspace(-4, 4, points, dtype=torch.float64)
    worst, counts = 0.0, {1: 0, 2: 0, 3: 0}
    for n in act_nums:
        all_theta, all_omega = random_series_parameters(n, draws, seed + n)
        for start in range(0, draws, chunk):  # bounded memory for large profiles
            theta, omega = all_theta[start:start + chunk].T, all_omega[start:start + chunk].T
            c, s, p, q = three_piece_parameters(theta, omega)  # per "channel" = per draw
            ends = torch.stack([p, torch.where(torch.isfinite(q), q, p)], dim=1)
            x = torch.cat([grid.expand(len(p), -1), ends], dim=1)[None, :, None, :]  # (1, k, 1, L)
            closed = three_piece(x, c, s, p, q)
            worst = max(worst, float((naive_series(x, theta, omega) - closed).abs().max()))
            for k, v in zip(*torch.unique(count_pieces(c, s, p, q), return_counts=True)):
                counts[int(k)] += int(v)
    return {"max_abs_error": worst, "draws": draws * len(act_nums),
            "points_per_draw": points + 2, "pieces": counts}


# ---------------------------------------------------------------------------------------------
# Deploy equivalence on whole models
# ---------------------------------------------------------------------------------------------
def random_images(batch: int, input_size: int, seed: int) -> torch.Tensor:
    """A seeded N(0, 1) batch of shape (batch, 3, input_size, input_size)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, input_size, input_size, generator=gen)


def _draw_live_series(shape, scale: float, gen: torch.Generator, attempts: int = 1000):
    """theta ~ 1 + scale N(0, 1), omega ~ scale N(0, 1) of ``shape`` ((n,) or (n, C)); a series
    (or channel) whose g is constant, which would make the model ignore its input, is redrawn."""
    theta = 1 + scale * torch.randn(shape, generator=gen)
    omega = scale * torch.randn(shape, generator=gen)
    for _ in range(attempts):
        dead = count_pieces(*three_piece_parameters(theta, omega)) == 1
        if not dead.any():
            return theta, omega
        theta = torch.where(dead, 1 + scale * torch.randn(shape, generator=gen), theta)
        omega = torch.where(dead, scale * torch.randn(shape, generator=gen), omega)
    raise RuntimeError(f"no non-constant series found in {attempts} draws at scale {scale}")


@torch.no_grad()
def move_activation_parameters_(model: nn.Module, seed: int, scale: float,
                                input_size: int = 32, batch: int = 8) -> nn.Module:
    """Set every LSLU's theta ~ 1 + scale N(0, 1) (negatives possible) and omega ~ scale N(0, 1),
    and every BatchNorm's running statistics to seeded random values, in place.

    A draw whose g(x) is constant (possible once a theta is negative) is redrawn: such a layer
    would make the logits independent of the input.

    The running statistics are those of one train-mode pass over a seeded N(0, 1) batch
    (so each layer's signal keeps a sensible scale), then jittered: mean + 0.1 std N(0, 1) and
    var exp(0.2 N(0, 1)). A fixed seed gives the same model every time.
    """
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, LSLU):
            theta, omega = _draw_live_series(m.theta.shape, scale, gen)
            m.theta.copy_(theta)
            m.omega.copy_(omega)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: after one pass, exactly that batch's statistics
    was_training = model.training
    model.train()
    model(torch.randn(batch, 3, input_size, input_size, generator=gen))
    model.train(was_training)
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
        std = bn.running_var.sqrt()
        bn.running_mean.add_(0.1 * std * torch.randn(std.shape, generator=gen))
        bn.running_var.mul_(torch.exp(0.2 * torch.randn(std.shape, generator=gen)))
    return model


def _compare(reference: torch.Tensor, other: torch.Tensor) -> dict:
    diff = (other - reference).double()
    ref = reference.double()
    return {"max_rel": float(diff.abs().max() / ref.abs().max()),
            "norm_rel": float(diff.norm() / ref.norm()),
            "top1_agreement": float((other.argmax(1) == reference.argmax(1)).double().mean()),
            "images": reference.shape[0]}


@torch.no_grad()
def deploy_error(model: nn.Module, x: torch.Tensor) -> dict:
    """How far two deploy transforms move the logits of ``model`` (eval mode) on ``x``.

    Returns {"ours": ..., "reference": ...}, each with max_rel = max|Δ| / max|logits|,
    norm_rel = ||Δ|| / ||logits||, top1_agreement (fraction of inputs whose arg-max is
    unchanged) and images (how many inputs). "ours" is switch_to_deploy() on a copy; "reference" is the reference code's
    transform (reference_deploy_) followed by switch_to_deploy(). ``model`` is not changed.
    """
    train_graph = copy.deepcopy(model).eval()
    logits = train_graph(x)
    ours = copy.deepcopy(train_graph)
    ours.switch_to_deploy()
    theirs = reference_deploy_(copy.deepcopy(train_graph))
    theirs.switch_to_deploy()
    return {"ours": _compare(logits, ours(x)), "reference": _compare(logits, theirs(x))}


def deploy_check(model_names, num_classes: int, act_num: int, seed: int, scale: float,
                 input_size: int, batch: int) -> dict:
    """Name -> deploy_error() of that LSLU model (weights initialised after torch.manual_seed(seed))
    with moved theta/omega and BN statistics (move_activation_parameters_), on a seeded batch
    (random_images); one model alive at a time."""
    errors = {}
    for name in model_names:
        torch.manual_seed(seed)  # the weights' initialisation draws from the global generator
        model = build_model(name, num_classes, "lslu", act_num)
        move_activation_parameters_(model, seed, scale, input_size, batch)
        errors[name] = deploy_error(model, random_images(batch, input_size, seed + 1))
        del model
    return errors


def below(value: float, thresholds=(1e-12, 1e-9, 1e-6, 1e-5, 1e-4, 1e-3)) -> str:
    """'below 1e-05'-style text for the smallest threshold above ``value`` (machine-stable)."""
    for t in thresholds:
        if value < t:
            return "below " + f"{t:.0e}".replace("e-0", "e-")
    return f"{value:.2g}"


def percent(value: float, digits: int = 2) -> str:
    """``value`` in %, rounded to ``digits`` significant digits, without exponent (3758 -> 3800%)."""
    return f"{float(f'{100 * value:.{digits}g}'):g}%"


def agreement(comparison: dict) -> str:
    """'7/8': inputs whose top-1 class a deploy graph keeps, out of all (one deploy_error entry)."""
    n = comparison["images"]
    return f"{round(comparison['top1_agreement'] * n)}/{n}"


def deploy_error_table(errors: dict) -> pd.DataFrame:
    """Model -> deploy_error() result, as a table (one column per model) printed so that it is
    stable across machines: our (float rounding) errors as an upper bound, the reference's in %
    to 2 significant digits, top-1 agreement as a count of images."""
    rows = {}
    for name, err in errors.items():
        ours, ref = err["ours"], err["reference"]
        rows[name] = {
            "ours: max rel. error": below(ours["max_rel"]),
            "ours: norm rel. error": below(ours["norm_rel"]),
            "ours: top-1 agreement": agreement(ours),
            "reference: max rel. error": percent(ref["max_rel"]),
            "reference: norm rel. error": percent(ref["norm_rel"]),
            "reference: top-1 agreement": agreement(ref),
        }
    return pd.DataFrame(rows).rename_axis("deploy graph vs train graph")


# ---------------------------------------------------------------------------------------------
# Parameters and FLOPs
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def _flops(model: nn.Module, input_size: int) -> int:
    x = torch.zeros(1, 3, input_size, input_size)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def parameter_table(models: dict, input_size: int) -> pd.DataFrame:
    """Name -> model (or a zero-argument function building it, so only one is alive at a time):
    parameters of the train and deploy graphs and FLOPs for one image of input_size x input_size.

    FLOPs come from torch.utils.flop_counter.FlopCounterMode: convolutions and matrix products
    only, a multiply-add counted as 2. Elementwise work (BN, the activation's g(x)) is not counted.
    """
    rows = {}
    for name, model in models.items():
        # a model we were given is deployed as a copy; one we built is deployed in place
        model = copy.deepcopy(model) if isinstance(model, nn.Module) else model()
        model.eval()
        act_num = getattr(model, "act_num", None)
        row = {"activation": getattr(model, "activation", ""), "n": act_num,
               "kernel": f"{2 * act_num + 1}x{2 * act_num + 1}" if act_num else "",
               "params (train)": count_parameters(model),
               "MFLOPs (train)": _flops(model, input_size) / 1e6}
        model.switch_to_deploy()
        row.update({"params (deploy)": count_parameters(model),
                    "MFLOPs (deploy)": _flops(model, input_size) / 1e6})
        rows[name] = row
        del model
    columns = ["activation", "n", "kernel", "params (train)", "params (deploy)",
               "MFLOPs (train)", "MFLOPs (deploy)"]
    return pd.DataFrame.from_dict(rows, orient="index")[columns].round(2)


def models_per_act_num(name: str, num_classes: int, act_nums, activations=("series", "lslu")):
    """Label -> builder of ``name`` with each activation and n, for parameter_table."""
    return {f"{act}, n={n}": (lambda a=act, k=n: build_model(name, num_classes, a, k))
            for n in act_nums for act in activations}


# ---------------------------------------------------------------------------------------------
# E7: convergence (time to a target accuracy)
# ---------------------------------------------------------------------------------------------
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
    from .models import BASELINE_ACTIVATION
    rows = []
    for r in results:
        c = r.config
        epochs, seconds = time_to_accuracy(r, target)
        times = [h["epoch_time"] for h in r.history]
        rows.append({"model": c["model"], "activation": c["activation"] or "baseline",
                     "act_fn": c["activation"] or BASELINE_ACTIVATION[c["model"]],
                     "dataset": c["dataset"], "seed": c["seed"],
                     "epochs_to_target": float("nan") if epochs is None else epochs,
                     "seconds_to_target": float("nan") if seconds is None else seconds,
                     "epochs": len(r.history), "seconds_per_epoch": sum(times) / len(times),
                     "top1": 100 * r.history[-1]["val_acc"]})
    return pd.DataFrame(rows)


def _median_or_inf(values) -> float:
    """Median over seeds, a run that never reached the target counting as infinitely slow."""
    import numpy as np
    return float(np.median(np.nan_to_num(np.asarray(values, float), nan=np.inf)))


def _faster(lslu: float, baseline: float) -> str:
    import math
    if math.isinf(lslu) and math.isinf(baseline):
        return "neither reaches the target"
    if lslu < baseline:
        return "yes"
    return "no, the same" if lslu == baseline else "no"


def convergence_verdict(table: pd.DataFrame) -> pd.DataFrame:
    """Per model (from convergence_table): the median over seeds of epochs and seconds to the
    target for the baseline and for LSLU (inf: not reached by most seeds), how many seeds
    reached it, and whether LSLU gets there in fewer epochs / seconds ('yes', 'no',
    'no, the same' or 'neither reaches the target')."""
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
        row["seeds reached (baseline/LSLU)"] = (
            f"{base['epochs_to_target'].notna().sum()}/{len(base)} vs "
            f"{lslu['epochs_to_target'].notna().sum()}/{len(lslu)}")
        rows.append(row)
    return pd.DataFrame(rows)


def _count_text(value, digits: int = 0) -> str:
    import math
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


def convergence_headline_rows(table: pd.DataFrame, target: float, experiment: str = "E7"
                              ) -> list[dict]:
    """Rows for experiments.save_headline: per model and activation, the median over seeds of
    the epochs and the seconds to ``target`` (2 decimals, or 'not reached')."""
    rows = []
    for (model, act_fn), sub in table.groupby(["model", "act_fn"], sort=False):
        data = ", ".join(sorted(set(sub["dataset"])))
        for what, unit in (("epochs", "epochs"), ("seconds", "s")):
            value = _median_or_inf(sub[f"{what}_to_target"])
            rows.append({"experiment": experiment,
                         "quantity": f"{what} to {100 * target:g}% top-1, {model} + {act_fn} "
                                     f"on {data}",
                         "ours": round(value, 2) if value != float("inf") else "not reached",
                         "paper": "not public", "unit": unit})
    return rows


__all__ += ["check_target_accuracy", "time_to_accuracy", "convergence_table",
            "convergence_verdict", "convergence_display", "convergence_headline_rows"]



# ---------------------------------------------------------------------------------------------
# Efficiency (chapter 10, E9): train vs deploy graphs, parameters, FLOPs, latency
# ---------------------------------------------------------------------------------------------
# VanillaNet-5 as its own paper publishes it (ImageNet, 1000 classes, 224 px, deploy graph), for
# context only: these are NOT numbers of the LSLU paper. Its "FLOPs" count a multiply-add once.
VANILLANET5_PUBLISHED = {"params_M": 15.5, "GMACs": 5.2, "latency_ms": 1.61,
                         "latency_setting": "batch 1 on an A100"}


def deployed_copy(model: nn.Module) -> nn.Module:
    """The deploy graph of ``model`` (a copy, eval mode, lambda = 1): conv pairs merged, BN folded
    into the activations' convolutions. ``model`` is left unchanged."""
    deployed = copy.deepcopy(model).eval()
    if hasattr(deployed, "change_act"):
        deployed.change_act(1.0)
    deployed.switch_to_deploy()
    return deployed


def efficiency_graphs(name: str, num_classes: int, activations=("series", "lslu"),
                      act_num: int = 3, seed: int = 0) -> dict:
    """(activation, graph) -> model in eval mode, graph 'train' (as trained, lambda = 1) or
    'deploy' (deployed_copy). Weights are initialised after torch.manual_seed(seed): latency and
    counts do not depend on their values."""
    graphs = {}
    for act in activations:
        torch.manual_seed(seed)
        model = build_model(name, num_classes, act, act_num).eval()
        if hasattr(model, "change_act"):
            model.change_act(1.0)
        graphs[(act, "train")] = model
        graphs[(act, "deploy")] = deployed_copy(model)
    return graphs


def cost_table(graphs: dict, input_sizes) -> pd.DataFrame:
    """Parameters and FLOPs of every activation's train and deploy graph (``graphs`` from
    efficiency_graphs: (activation, 'train'|'deploy') -> model) at every input size: one row per
    (input size, activation), with the columns of parameter_table. FLOPs per image from
    lslu.train.count_flops (FlopCounterMode: convolutions and matrix products, a multiply-add
    counted as 2; elementwise work such as BN or the activation's g(x) is not counted)."""
    from .train import count_flops
    acts = list(dict.fromkeys(act for act, _ in graphs))
    rows = []
    for size in input_sizes:
        for act in acts:
            train, deploy = graphs[(act, "train")], graphs[(act, "deploy")]
            n = getattr(train, "act_num", None)
            rows.append({"input_size": size, "activation": act, "n": n,
                         "kernel": f"{2 * n + 1}x{2 * n + 1}" if n else "",
                         "params (train)": count_parameters(train),
                         "params (deploy)": count_parameters(deploy),
                         "MFLOPs (train)": round(count_flops(train, size) / 1e6, 2),
                         "MFLOPs (deploy)": round(count_flops(deploy, size) / 1e6, 2)})
    return pd.DataFrame(rows)


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _latency_probe(model: nn.Module, batch: int, input_size: int, device):
    """A function timing one forward of a copy of ``model`` (eval mode, channels_last; on CUDA
    bf16 autocast) on a fixed random batch, in ms, with CUDA synchronised before and after."""
    from .train import resolve_device
    _check_positive_int("batch", batch)
    _check_positive_int("input_size", input_size)
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    cuda = device.type == "cuda"
    model = copy.deepcopy(model).eval().to(device, memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, input_size, input_size, generator=gen).to(
        device, memory_format=torch.channels_last)

    def forward_ms() -> float:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                    enabled=cuda):
            if cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            model(x)
            if cuda:
                torch.cuda.synchronize(device)
            return 1e3 * (time.perf_counter() - t0)

    return forward_ms


def _latency_stats(times_ms) -> dict:
    t = np.asarray(times_ms, dtype=float)
    p10, median, p90 = np.percentile(t, [10, 50, 90])
    return {"median_ms": float(median), "p10": float(p10), "p90": float(p90)}


def measure_latency(model: nn.Module, batch: int, input_size: int, device="auto",
                    repeats: int = 5, warmup: int = 1) -> dict:
    """Latency of one forward pass of ``model`` in eval mode on a batch of ``batch`` random
    images of ``input_size`` px: ``warmup`` untimed passes, then ``repeats`` timed ones.

    Returns {"median_ms", "p10", "p90"} (milliseconds: median and 10th/90th percentiles over the
    repeats). Runs on a copy in channels_last; on CUDA under bf16 autocast, with
    torch.cuda.synchronize around each pass. ``model`` itself is not moved or changed.
    """
    _check_positive_int("repeats", repeats)
    _check_positive_int("warmup", warmup, minimum=0)
    forward_ms = _latency_probe(model, batch, input_size, device)
    for _ in range(warmup):
        forward_ms()
    return _latency_stats([forward_ms() for _ in range(repeats)])


def latency_table(graphs: dict, input_sizes, batch_sizes, device="auto", repeats: int = 5,
                  warmup: int = 1, skip=()) -> pd.DataFrame:
    """measure_latency for every (activation, graph) of ``graphs`` (from efficiency_graphs) at
    every input size x batch size, except the (input_size, batch) pairs in ``skip``.

    Within one (input size, batch) the models are timed round-robin, one pass each in turn, so
    that a change of background load hits all of them alike (ratios stay meaningful on a shared
    machine). One row per measurement: activation, graph, input_size, batch, median_ms, p10, p90.
    """
    _check_positive_int("repeats", repeats)
    _check_positive_int("warmup", warmup, minimum=0)
    skip = {tuple(pair) for pair in skip}
    rows = []
    for size in input_sizes:
        for batch in batch_sizes:
            if (size, batch) in skip:
                continue
            probes = {key: _latency_probe(m, batch, size, device) for key, m in graphs.items()}
            times = {key: [] for key in probes}
            for _ in range(warmup):
                for probe in probes.values():
                    probe()
            for _ in range(repeats):
                for key, probe in probes.items():
                    times[key].append(probe())
            for (act, graph), t in times.items():
                rows.append({"activation": act, "graph": graph, "input_size": size,
                             "batch": batch} | _latency_stats(t))
            del probes
    return pd.DataFrame(rows)


def latency_ratios(table: pd.DataFrame, numerator: str = "lslu",
                   denominator: str = "series") -> pd.DataFrame:
    """Per graph, input size and batch: median latency of ``numerator`` / ``denominator``."""
    med = table.pivot_table(index=["graph", "input_size", "batch"], columns="activation",
                            values="median_ms", sort=False)
    out = (med[numerator] / med[denominator]).rename(f"{numerator} / {denominator}")
    return out.reset_index()


def latency_display(table: pd.DataFrame) -> pd.DataFrame:
    """latency_table for the page: one row per graph, input size and batch; median (p10-p90) ms
    per activation, and the ratio of the medians of the first two activations."""
    acts = list(dict.fromkeys(table["activation"]))
    rows = []
    for (graph, size, batch), sub in table.groupby(["graph", "input_size", "batch"], sort=False):
        row = {"graph": graph, "input (px)": size, "batch": batch}
        by_act = sub.set_index("activation")
        for act in acts:
            r = by_act.loc[act]
            row[f"{act}: median ms (p10-p90)"] = (f"{r.median_ms:.1f} "
                                                  f"({r.p10:.1f}-{r.p90:.1f})")
        if len(acts) >= 2:
            row[f"{acts[1]} / {acts[0]}"] = round(by_act.loc[acts[1], "median_ms"]
                                                  / by_act.loc[acts[0], "median_ms"], 3)
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Benchmark results (benchmarks/results/*.json), rendered in chapter 10
# ---------------------------------------------------------------------------------------------
def _load_json_files(folder, pattern: str) -> dict:
    import json
    from pathlib import Path
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"benchmark results folder {folder} does not exist (relative paths are "
                         f"relative to the notebook: ../benchmarks/results)")
    return {p.stem: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(folder.glob(pattern))}


def machine_text(machine: dict) -> str:
    """One line naming the machine of a benchmark file ('cpu: AMD EPYC, 2 cores, 2 threads')."""
    if not machine:
        return "unknown machine"
    if machine.get("gpu"):
        return f"{machine.get('device', 'cuda')}: {machine['gpu']}"
    parts = [machine.get("cpu") or machine.get("processor") or "unknown CPU"]
    if machine.get("cpu_count"):
        parts.append(f"{machine['cpu_count']} cores")
    if machine.get("torch_threads"):
        parts.append(f"{machine['torch_threads']} threads")
    return f"{machine.get('device', 'cpu')}: " + ", ".join(parts)


def speed_benchmark_table(folder) -> pd.DataFrame:
    """The ratios of every benchmarks/results/activation_speed_<device>.json against their
    targets: one row per (file, ratio), with the machine it was measured on. Ratios reported
    without a target get an empty target. No file: an empty table."""
    rows = []
    for stem, data in _load_json_files(folder, "activation_speed_*.json").items():
        machine = machine_text(data.get("machine", {}))
        for name, entry in data.get("summary", {}).items():
            if isinstance(entry, dict):
                value, target = entry.get("value"), entry.get("target", "")
                verdict = {True: "pass", False: "FAIL"}.get(entry.get("pass"), "")
            else:
                value, target, verdict = entry, "", ""
            rows.append({"file": stem, "machine": machine, "ratio": name.replace("_", " "),
                         "value": None if value is None else round(float(value), 2),
                         "target": target, "verdict": verdict})
    return pd.DataFrame(rows, columns=["file", "machine", "ratio", "value", "target", "verdict"])


def gpu_check_table(folder) -> pd.DataFrame | None:
    """benchmarks/results/gpu_check.json as a table of its top-level entries (nested dicts
    flattened to 'a.b' keys, numbers rounded to 3 significant digits); None if the file does
    not exist (the check has not been run on a GPU yet)."""
    files = _load_json_files(folder, "gpu_check.json")
    if not files:
        return None
    rows = []

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            if isinstance(value, float):
                value = float(f"{value:.3g}")
            rows.append({"entry": prefix, "value": str(value)})

    walk("", files["gpu_check"])
    return pd.DataFrame(rows)


__all__ += ["VANILLANET5_PUBLISHED", "deployed_copy", "efficiency_graphs", "cost_table",
            "measure_latency", "latency_table", "latency_ratios", "latency_display",
            "machine_text", "speed_benchmark_table", "gpu_check_table"]


# ---------------------------------------------------------------------------------------------
# E6 (task-specific image folder) and E8 (class selectivity)
# ---------------------------------------------------------------------------------------------
import numpy as np  # noqa: E402  (this section's own imports; the file's head belongs to others)

from . import data as _data_lib  # noqa: E402
from .activations import AconC, FReLU, SeriesActivation, SwishBeta  # noqa: E402


def imagefolder_counts(folder, val_fraction: float = 0.2, seed: int = 0) -> pd.DataFrame:
    """Images per class of an image folder as the trainer splits it: folder/train and folder/val
    when both exist, else a stratified split keeping ``val_fraction`` of each class (the same
    split as ``load_dataset("imagefolder", ..., seed=seed)``). Columns class, train, val, total."""
    classes, train_files, val_files = _data_lib._scan_imagefolder(folder)
    if val_files is None:
        labels = np.array([y for _, y in train_files])
        train_idx, val_idx = _data_lib._stratified_split(labels, val_fraction, seed, "imagefolder")
        train_labels, val_labels = labels[train_idx], labels[val_idx]
    else:
        train_labels = np.array([y for _, y in train_files])
        val_labels = np.array([y for _, y in val_files])
    k = len(classes)
    table = pd.DataFrame({"class": classes,
                          "train": np.bincount(train_labels, minlength=k),
                          "val": np.bincount(val_labels, minlength=k)})
    table["total"] = table["train"] + table["val"]
    return table


def imagefolder_samples(folder, per_class: int = 6, seed: int = 0, max_classes: int = 20) -> dict:
    """Class name -> up to ``per_class`` images (uint8 arrays, as stored on disk, RGB) drawn with
    ``seed`` from each class of the image folder (its train/ part when it has one); at most
    ``max_classes`` classes, the first ones in sorted order."""
    from PIL import Image
    classes, train_files, _ = _data_lib._scan_imagefolder(folder)
    rng = np.random.default_rng(seed)
    samples = {}
    for label, name in enumerate(classes[:max_classes]):
        paths = [p for p, y in train_files if y == label]
        chosen = sorted(rng.choice(len(paths), size=min(per_class, len(paths)), replace=False))
        images = []
        for i in chosen:
            with Image.open(paths[i]) as im:
                images.append(np.asarray(im.convert("RGB")))
        samples[name] = images
    return samples


def validation_data(result, batch_size: int = 256, device="cpu"):
    """(loader, class names) of the validation split a finished run was evaluated on: the same
    dataset, split, seed, input size and normalization (mean/std of its train split) as in
    lslu.train, without augmentation."""
    cfg = result.config
    ds = _data_lib.load_dataset(cfg["dataset"], data_dir=cfg["data_dir"],
                                input_size=cfg["input_size"], val_fraction=cfg["val_fraction"],
                                seed=cfg["seed"], device=device, limit=cfg["limit"])
    loader = _data_lib.DeviceLoader(ds.val_images, ds.val_labels, batch_size, ds.mean, ds.std,
                                    cfg["input_size"], train=False)
    return loader, ds.classes


@torch.no_grad()
def predict(model: nn.Module, loader):
    """(true labels, predicted labels) as int64 numpy arrays over every batch of ``loader``."""
    model.eval()
    device = next(model.parameters()).device
    truth, predicted = [], []
    for images, labels in loader:
        predicted.append(model(images.to(device)).argmax(1).cpu())
        truth.append(labels.cpu())
    return torch.cat(truth).numpy(), torch.cat(predicted).numpy()


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes): row = true class, column = predicted class."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {y_true.shape} vs {y_pred.shape}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} has labels outside 0..{num_classes - 1}")
    return np.bincount(y_true * num_classes + y_pred,
                       minlength=num_classes ** 2).reshape(num_classes, num_classes)


def per_class_accuracy(matrix, classes) -> pd.DataFrame:
    """Per true class: validation images, correctly classified, accuracy in % (1 decimal)."""
    matrix = np.asarray(matrix)
    images = matrix.sum(1)
    correct = np.diag(matrix)
    acc = np.divide(100.0 * correct, images, out=np.full(len(images), np.nan), where=images > 0)
    return pd.DataFrame({"class": list(classes), "val images": images, "correct": correct,
                         "accuracy (%)": np.round(acc, 1)})


# --- E8: class selectivity -----------------------------------------------------------------
ACTIVATION_MODULE_TYPES = (SeriesActivation, FReLU, AconC, SwishBeta, nn.ReLU, nn.PReLU, nn.SiLU)


def activation_modules(model: nn.Module) -> dict:
    """Name -> module for every activation module of ``model`` in forward order: LSLU, VanillaNet's
    series activation, and the other activations of lslu.activations (plus ReLU, PReLU, SiLU)."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, ACTIVATION_MODULE_TYPES)}


#: Where a unit's response is read: "elementwise", the non-negative output g(x) of the series
#: (for LSLU and VanillaNet's series activation: before their depthwise conv and BN; for other
#: activations: their output), or "output", the activation module's output (after BN).
SELECTIVITY_POINTS = ("elementwise", "output")


@torch.no_grad()
def activation_features(model: nn.Module, loader, modules=None, points=SELECTIVITY_POINTS):
    """(features, labels): ``features[point][layer]`` is a float32 array (images, channels) of the
    response of each activation module (default: activation_modules(model)) averaged over the
    spatial positions, at each of ``points`` (see SELECTIVITY_POINTS), collected with forward
    hooks in one pass over ``loader`` in eval mode; labels is the int64 array of the classes.

    "elementwise" is read with a forward pre-hook that applies the module's own ``elementwise``
    (g(x), the series) to the module's input; a module without one contributes its output."""
    modules = activation_modules(model) if modules is None else dict(modules)
    if not modules:
        raise ValueError("the model has no activation modules to hook")
    unknown = set(points) - set(SELECTIVITY_POINTS)
    if unknown or not points:
        raise ValueError(f"points must be a non-empty subset of {SELECTIVITY_POINTS}, "
                         f"got {points!r}")
    model.eval()
    device = next(model.parameters()).device
    chunks = {point: {name: [] for name in modules} for point in points}

    def keep(point, name, value):
        value = value.detach().float()
        value = value.mean(dim=(2, 3)) if value.dim() == 4 else value.flatten(1)
        chunks[point][name].append(value.cpu())

    def pre_hook(name):
        def record(module, args):
            keep("elementwise", name, module.elementwise(args[0]))
        return record

    def hook(name, has_elementwise):
        def record(module, args, output):
            if "output" in points:
                keep("output", name, output)
            if "elementwise" in points and not has_elementwise:
                keep("elementwise", name, output)
        return record

    handles = []
    for name, m in modules.items():
        has_elementwise = callable(getattr(m, "elementwise", None))
        if has_elementwise and "elementwise" in points:
            handles.append(m.register_forward_pre_hook(pre_hook(name)))
        handles.append(m.register_forward_hook(hook(name, has_elementwise)))
    labels = []
    try:
        for images, batch_labels in loader:
            model(images.to(device))
            labels.append(batch_labels.cpu())
    finally:
        for h in handles:
            h.remove()
    features = {point: {name: torch.cat(c).numpy() for name, c in per.items() if c}
                for point, per in chunks.items()}
    return features, torch.cat(labels).numpy().astype(np.int64)


def class_means(features, labels, num_classes: int) -> np.ndarray:
    """(num_classes, channels) float64: the mean of ``features`` (images, channels) over the
    images of each class."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        raise ValueError(f"classes {np.flatnonzero(counts == 0).tolist()} have no images in the "
                         f"loader: their mean is undefined")
    sums = np.zeros((num_classes, features.shape[1]))
    np.add.at(sums, labels, np.asarray(features, dtype=np.float64))
    return sums / counts[:, None]


def class_conditional_means(model: nn.Module, loader, num_classes: int, modules=None,
                            point: str = "elementwise") -> dict:
    """Layer name -> array (num_classes, channels): for every activation module, the mean over
    the images of each class of its spatially averaged response at ``point``
    (see activation_features)."""
    features, labels = activation_features(model, loader, modules, points=(point,))
    return {name: class_means(f, labels, num_classes) for name, f in features[point].items()}


def selectivity_index(class_means, negative: str = "shift") -> np.ndarray:
    """Class selectivity index of Morcos et al. (2018) per unit, from class means (K, units):
    SI = (mu_max - mu_rest) / (mu_max + mu_rest), mu_max the largest class mean of a unit,
    mu_rest the mean of its other K - 1 class means. SI is 0 when all classes are equal and 1
    when only one class drives the unit, provided the class means are >= 0 (post-ReLU units,
    as in the paper that defined it).

    The outputs of LSLU and of VanillaNet's series activation end in a BatchNorm, so class means
    can be negative and the formula then leaves [0, 1] (or divides by zero). ``negative`` says
    what is done:

    - "shift" (default): every unit's class means are shifted by their minimum first, so the
      least-driving class is 0: SI = (mu_max - mu_rest) / (mu_max + mu_rest - 2 mu_min). This is
      in [0, 1] for every unit and does not change when a constant is added to the unit (a BN
      shift). A unit whose class means are all equal gets 0. For units that were already
      non-negative it is larger than the unshifted index (their floor is moved to 0).
    - "exclude": the index as defined, NaN for every unit with a negative class mean or a zero
      denominator; count them with np.isnan.
    """
    means = np.asarray(class_means, dtype=np.float64)
    if means.ndim != 2 or means.shape[0] < 2:
        raise ValueError(f"class_means must be (classes >= 2, units), got shape {means.shape}")
    if negative not in ("shift", "exclude"):
        raise ValueError(f"negative must be 'shift' or 'exclude', got {negative!r}")
    k = means.shape[0]
    invalid = np.zeros(means.shape[1], dtype=bool)
    if negative == "shift":
        means = means - means.min(0, keepdims=True)
    else:
        invalid = (means < 0).any(0)
    top = means.max(0)
    rest = (means.sum(0) - top) / (k - 1)
    denom = top + rest
    si = np.divide(top - rest, denom, out=np.zeros_like(top), where=denom > 0)
    if negative == "exclude":
        si[invalid | (denom <= 0)] = np.nan
    return si


def class_selectivity(model: nn.Module, loader, num_classes: int, modules=None,
                      control_seed: int | None = 0) -> dict:
    """Per activation layer (name -> dict), from one pass over ``loader``:

    - "si": the index of Morcos et al. per channel, read at the non-negative elementwise output
      g(x) (selectivity_index "exclude": NaN for a unit whose class means are all 0, a dead
      unit, or that has a negative class mean, which g(x) of LSLU and the series never has);
    - "si_shuffled" (unless ``control_seed`` is None): the same with the labels randomly
      permuted over the images (seeded), the level sampling noise alone gives;
    - "class_means": the (K, C) class means at g(x);
    - "output_negative": per channel, whether a class mean of the module's output (after its
      BN) is negative, "si_output_shift": the "shift" index of the output, and (with
      ``control_seed``) "si_output_shift_shuffled": that index with the labels permuted."""
    features, labels = activation_features(model, loader, modules)
    shuffled = None
    if control_seed is not None:
        shuffled = np.random.default_rng(control_seed).permutation(labels)
    out = {}
    for name, feats in features["elementwise"].items():
        means = class_means(feats, labels, num_classes)
        output_means = class_means(features["output"][name], labels, num_classes)
        out[name] = {"si": selectivity_index(means, "exclude"), "class_means": means,
                     "output_negative": (output_means < 0).any(0),
                     "si_output_shift": selectivity_index(output_means, "shift")}
        if shuffled is not None:
            out[name]["si_shuffled"] = selectivity_index(
                class_means(feats, shuffled, num_classes), "exclude")
            out[name]["si_output_shift_shuffled"] = selectivity_index(
                class_means(features["output"][name], shuffled, num_classes), "shift")
    return out


def selectivity_of_runs(results, results_dir=None, device="cpu", batch_size: int = 256,
                        control_seed: int | None = 0) -> dict:
    """``{run label: [class_selectivity of each run with that label]}`` for finished runs (one
    entry per seed), each trained model loaded from the results store (lslu.train.load_model)
    and evaluated on the validation split it was trained against (validation_data)."""
    from .experiments import run_label
    from .train import load_model
    out = {}
    for result in results:
        model = load_model(result, results_dir=results_dir, device=device)
        loader, classes = validation_data(result, batch_size=batch_size, device=device)
        out.setdefault(run_label(result.config), []).append(
            class_selectivity(model, loader, len(classes), control_seed=control_seed))
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
    from .models import build_model
    from .train import TrainConfig
    cfg = TrainConfig(**result.config)
    torch.manual_seed(cfg.seed if seed is None else seed)
    model = build_model(cfg.model, result.final["num_classes"], cfg.resolved_activation,
                        cfg.act_num, cfg.drop_rate, cfg.act_everywhere)
    return model.eval()


def weight_measure_table(measures: dict) -> pd.DataFrame:
    """One row per conv layer for ``{label: weight_selectivity(...)}``: the mean normalized index
    of every label, and the Kolmogorov-Smirnov distance between the first two labels'
    distributions (0: the same histogram, 1: no overlap)."""
    from scipy import stats
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


def reference_script_load(result, results_dir=None):
    """Replay the reference's class_selectivity_index.py on a finished run: write the trained
    weights as the reference's training code writes a checkpoint (``{"model": weights, "epoch":
    "best"}``, to a temporary checkpoint-best.pth), build a fresh model and load the file as the
    script does (reference_style_load). Returns (the model the script goes on to analyse, what
    the load did)."""
    import os
    import tempfile
    from .train import load_model
    trained = load_model(result, results_dir=results_dir, device="cpu")
    model = untrained_model(result)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "checkpoint-best.pth")
        torch.save(reference_checkpoint(trained), path)
        outcome = reference_style_load(model, torch.load(path, map_location="cpu"))
    return model, outcome


def selectivity_panels(selectivity: dict, key: str = "si") -> dict:
    """Layer -> {label: values of ``key`` pooled over seeds, undefined (NaN) ones left out} for
    plots.plot_histogram_grid, from ``{label: [class_selectivity(...) per seed]}`` (the layers
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


__all__ += ["imagefolder_counts", "imagefolder_samples", "validation_data", "predict",
            "confusion_matrix", "per_class_accuracy", "ACTIVATION_MODULE_TYPES",
            "SELECTIVITY_POINTS", "activation_modules", "activation_features", "class_means",
            "class_conditional_means", "selectivity_index", "class_selectivity",
            "selectivity_of_runs", "selectivity_table", "reference_weight_selectivity",
            "weight_selectivity", "reference_checkpoint", "reference_style_load",
            "untrained_model", "weight_measure_table", "reference_script_load",
            "selectivity_panels", "selectivity_display"]


def check_efficiency_parameters(model: str, num_classes: int, act_num: int, input_sizes,
                                batch_sizes, latency_skip, repeats: int, warmup: int,
                                device: str, benchmarks_dir) -> list[tuple[int, int]]:
    """Validate chapter 10's parameters (before any model is built) and return the (input size,
    batch) pairs whose latency is measured."""
    from pathlib import Path
    from .models import MODELS
    from .train import resolve_device
    if model not in MODELS or not model.startswith("vanillanet"):
        raise ValueError(f"model must be a VanillaNet (the graphs E9 compares), got {model!r}; "
                         f"valid: {', '.join(m for m in MODELS if m.startswith('vanillanet'))}")
    _check_positive_int("num_classes", num_classes, minimum=2)
    _check_positive_int("act_num", act_num)
    _check_positive_int("repeats", repeats)
    _check_positive_int("warmup", warmup, minimum=0)
    for name, values in (("input_sizes", input_sizes), ("batch_sizes", batch_sizes)):
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"{name} needs a non-empty list, got {values!r}")
        for v in values:
            _check_positive_int(name[:-1], v)
    small = [s for s in input_sizes if s < 32]
    if small:
        raise ValueError(f"input sizes {small} are below 32 px: VanillaNet-5 downsamples 32x")
    if not isinstance(latency_skip, (list, tuple)) or any(
            not isinstance(p, (list, tuple)) or len(p) != 2 for p in latency_skip):
        raise ValueError(f"latency_skip needs a list of [input_size, batch] pairs, got "
                         f"{latency_skip!r}")
    pairs = [(s, b) for s in input_sizes for b in batch_sizes]
    unknown = [list(p) for p in latency_skip if tuple(p) not in pairs]
    if unknown:
        raise ValueError(f"latency_skip names pairs {unknown} that are not input_sizes x "
                         f"batch_sizes {[list(p) for p in pairs]}")
    kept = [p for p in pairs if list(p) not in [list(q) for q in latency_skip]]
    if not kept:
        raise ValueError("latency_skip leaves no (input size, batch) pair to time")
    resolve_device(device)
    if not Path(benchmarks_dir).is_dir():
        raise ValueError(f"benchmarks_dir {benchmarks_dir!r} is not a folder (relative paths are "
                         f"relative to the notebook: ../benchmarks/results)")
    return kept


def published_vanillanet5_check(name: str = "vanillanet_5", act_num: int = 3) -> pd.DataFrame:
    """Our VanillaNet-5 with its own activation, ImageNet head (1000 classes), 224 px, deploy
    graph, against the parameters and multiply-adds VanillaNet's paper publishes for it
    (VANILLANET5_PUBLISHED; context, not the LSLU paper). FlopCounterMode counts a multiply-add
    as 2 FLOPs: multiply-adds = FLOPs / 2."""
    costs = parameter_table({name: lambda: build_model(name, 1000, "series", act_num)}, 224)
    row = costs.iloc[0]
    return pd.DataFrame([
        {"quantity": "params, deploy graph (M)",
         "VanillaNet paper (ImageNet)": VANILLANET5_PUBLISHED["params_M"],
         "ours": round(row["params (deploy)"] / 1e6, 1)},
        {"quantity": "multiply-adds per 224 px image, deploy graph (G)",
         "VanillaNet paper (ImageNet)": VANILLANET5_PUBLISHED["GMACs"],
         "ours": round(row["MFLOPs (deploy)"] / 2e3, 1)},
    ]).set_index("quantity")


def efficiency_headlines(costs: pd.DataFrame, latency: pd.DataFrame, model: str,
                         device_name: str) -> list[dict]:
    """Chapter 10's headline rows (experiments.save_headline): LSLU's deploy params and GFLOPs at
    the largest input size, LSLU's extra parameters over the series activation, and the deploy
    batch-1 latency ratio LSLU / series at the largest size timed (flagged as a timing)."""
    size = max(costs["input_size"])
    at = costs[costs["input_size"] == size].set_index("activation")
    rows = [
        {"experiment": "E9", "quantity": f"{model} + LSLU: deploy params", "ours":
         round(float(at.loc["lslu", "params (deploy)"]) / 1e6, 2), "paper": "not public",
         "unit": "M"},
        {"experiment": "E9", "quantity": f"{model} + LSLU: extra params over series (deploy)",
         "ours": int(at.loc["lslu", "params (deploy)"] - at.loc["series", "params (deploy)"]),
         "paper": "not public", "unit": "params"},
        {"experiment": "E9", "quantity": f"{model} + LSLU: deploy GFLOPs at {size} px",
         "ours": round(float(at.loc["lslu", "MFLOPs (deploy)"]) / 1e3, 2),
         "paper": "not public", "unit": "GFLOPs"},
    ]
    ratios = latency_ratios(latency)
    one = ratios[(ratios["graph"] == "deploy") & (ratios["batch"] == 1)]
    if not one.empty:
        best = one[one["input_size"] == one["input_size"].max()].iloc[0]
        rows.append({"experiment": "E9", "quantity": f"deploy latency LSLU / series, batch 1, "
                     f"{int(best['input_size'])} px, {device_name}",
                     "ours": round(float(best["lslu / series"]), 2), "paper": "not public",
                     "unit": "ratio", "timing": True})
    return rows


__all__ += ["check_efficiency_parameters", "published_vanillanet5_check", "efficiency_headlines"]


# ---------------------------------------------------------------------------------------------
# E4: the dynamics of theta and omega (chapter 05_theta_omega); E5: where dropout sits (06)
# ---------------------------------------------------------------------------------------------
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
    step (LSLU_INIT, LSLU's initialisation). Ready for plots.plot_trajectories.

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
    if not str(result.config.get("model", "")).startswith("vanillanet"):
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


def trend_display(table: pd.DataFrame, decimals: int = 3) -> pd.DataFrame:
    """trend_table for the page: layer, i, θ start → end (min, max) and label, the same for ω,
    and whether the pair matches the claim; values rounded to ``decimals``."""
    f = lambda v: _fixed(v, decimals)  # noqa: E731
    out = pd.DataFrame({"model": table["model"], "seed": table["seed"], "layer": table["layer"],
                        "i": table["i"]})
    for key, sym in (("theta", "θ"), ("omega", "ω")):
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


def dropout_sites(name: str, drop_rate: float = 0.1, num_classes: int = 10,
                  activation: str | None = "lslu") -> pd.DataFrame:
    """Where ``build_model(name, ...)`` puts its dropout: one row per nn.Dropout module, with
    its name, its rate p and the module it sits in ('(model)' for the top level)."""
    model = build_model(name, num_classes, activation, 3, drop_rate)
    rows = []
    for n, m in model.named_modules():
        if isinstance(m, nn.Dropout):
            parent = n.rsplit(".", 1)[0] if "." in n else "(model)"
            rows.append({"model": name, "module": n, "p": m.p, "inside": parent})
    if not rows:
        raise ValueError(f"{name} has no dropout module")
    return pd.DataFrame(rows)


__all__ += ["ABSTRACT_TREND", "TREND_LABELS", "TREND_TOLERANCE", "TREND_STABLE_EPOCHS",
            "TREND_FLAT", "LSLU_INIT", "check_trend_parameters", "trend_moves", "classify_trend",
            "activation_history", "lambda_ramp_end", "trend_table", "trend_summary",
            "trend_display", "is_frozen_at_init", "learnable_vs_frozen_curves", "dropout_sites"]


def learnable_vs_frozen_table(results) -> pd.DataFrame:
    """Per model and variant ('learnable θ, ω' / 'frozen θ, ω', TrainConfig.freeze_activation):
    final top-1 mean, std (ddof 1) and seeds (%), and on the learnable rows the gain over the
    frozen ones in pp with Welch's p-value (NaN with fewer than 2 seeds per variant)."""
    from .experiments import compare, results_frame, summarize
    frame = results_frame(results)
    frame["variant"] = frame["freeze_activation"].map({True: "frozen θ, ω",
                                                       False: "learnable θ, ω"})
    table = summarize(frame, ["model", "variant"])
    gains = compare(frame, ["model"], "variant", "frozen θ, ω")
    if gains.empty:
        gains = pd.DataFrame(columns=["model", "variant", "gain", "p_value"])
    table = table.merge(gains[["model", "variant", "gain", "p_value"]], on=["model", "variant"],
                        how="left")
    return table.rename(columns={"gain": "gain_over_frozen"})


def learnable_vs_frozen_display(table: pd.DataFrame) -> pd.DataFrame:
    """learnable_vs_frozen_table for the page: top-1 'mean ± std' (1 decimal), the gain in pp (1
    decimal) and Welch's p (3 decimals; 'n/a' with one seed)."""
    from .experiments import mean_std_text
    return pd.DataFrame({
        "model": table["model"], "θ, ω": table["variant"],
        "top-1 (%)": [mean_std_text(m, s, n) for m, s, n in
                      zip(table["top1_mean"], table["top1_std"], table["seeds"])],
        "seeds": table["seeds"],
        "gain over frozen (pp)": ["" if pd.isna(g) else f"{g:+.1f}"
                                  for g in table["gain_over_frozen"]],
        "Welch p": ["" if pd.isna(g) else ("n/a" if pd.isna(p) else f"{p:.3f}")
                    for g, p in zip(table["gain_over_frozen"], table["p_value"])]})


def trend_paper_vs_ours(claim: dict, freeze: pd.DataFrame, model: str) -> pd.DataFrame:
    """The abstract's statements on θ/ω beside what our runs show: the pattern (from
    trend_summary), and learnable vs frozen θ/ω (from learnable_vs_frozen_table) for ``model``."""
    gain = freeze.loc[(freeze["model"] == model) & freeze["gain_over_frozen"].notna(),
                      "gain_over_frozen"]
    pairs = claim["pairs"]
    return pd.DataFrame([
        {"claim": "θ initially decreases, then increases before stabilizing",
         "paper (abstract)": "stated; the trajectories are not public",
         "ours": f"θ down-up-stable in {claim['theta_down_up_stable']}/{pairs} (layer, i)"},
        {"claim": "ω shows an opposite trend (up, then down, then stable)",
         "paper (abstract)": "stated; the trajectories are not public",
         "ours": f"ω up-down-stable in {claim['omega_up_down_stable']}/{pairs} (layer, i)"},
        {"claim": "both at once (θ down-up-stable and ω up-down-stable)",
         "paper (abstract)": "stated",
         "ours": f"{claim['matching']}/{pairs} (layer, i) = {100 * claim['fraction']:.0f}%"},
        {"claim": "learnable θ, ω vs frozen (top-1 gain)",
         "paper (abstract)": "not public",
         "ours": "n/a" if gain.empty else f"{float(gain.iloc[0]):+.1f} pp"},
    ]).set_index("claim")


def trend_headline_rows(claim: dict, freeze: pd.DataFrame, model: str, dataset: str) -> list[dict]:
    """Rows for experiments.save_headline (E4): the share of (layer, i) pairs matching the
    abstract's pattern and, per model, the top-1 gain of learnable over frozen θ, ω."""
    rows = [{"experiment": "E4",
             "quantity": f"(layer, i) pairs with θ down-up-stable and ω up-down-stable, {model} "
                         f"on {dataset}",
             "ours": round(100 * claim["fraction"], 2), "paper": "not public", "unit": "%"}]
    for _, r in freeze[freeze["gain_over_frozen"].notna()].iterrows():
        rows.append({"experiment": "E4",
                     "quantity": f"top-1 gain, learnable over frozen θ/ω, {r['model']} on {dataset}",
                     "ours": round(float(r["gain_over_frozen"]), 2), "paper": "not public",
                     "unit": "pp"})
    return rows


__all__ += ["learnable_vs_frozen_table", "learnable_vs_frozen_display", "trend_paper_vs_ours",
            "trend_headline_rows"]

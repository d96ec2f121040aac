"""Chapter 01, the LSLU function (no training): the shape g(x) for given theta/omega, the collapse
of the series into at most three linear pieces, the exactness of our deploy against the reference
code's, and parameter/FLOP counts."""
from __future__ import annotations

import copy
import math

import numpy as np

import pandas as pd
import torch
import torch.nn as nn
from matplotlib.figure import Figure

from ..activations import LSLU, naive_series, reference_deploy_, three_piece, three_piece_parameters
from ..models import build_model, count_parameters
from ..train import count_flops
from .common import deployed_copy, below, percent
from .plots import new_axes, page_grid, style_axes


def configs(**params) -> list:
    """Chapter 01 trains nothing."""
    return []


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
    unchanged) and images (how many inputs). "ours" is switch_to_deploy() on a copy;
    "reference" is the reference code's transform (reference_deploy_) followed by
    switch_to_deploy(). ``model`` is not changed.
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


def parameter_table(models: dict, input_size: int) -> pd.DataFrame:
    """Name -> model (or a zero-argument function building it, so only one is alive at a time):
    parameters of the train and deploy graphs and FLOPs for one image of input_size x input_size.

    FLOPs come from lslu.train.count_flops (FlopCounterMode: convolutions and matrix products
    only, a multiply-add counted as 2; elementwise work such as BN or g(x) is not counted).
    ``models`` are left unchanged (deployed_copy).
    """
    rows = {}
    for name, model in models.items():
        model = (model if isinstance(model, nn.Module) else model()).eval()
        deployed = deployed_copy(model)
        act_num = getattr(model, "act_num", None)
        rows[name] = {"activation": getattr(model, "activation", ""), "n": act_num,
                      "kernel": f"{2 * act_num + 1}x{2 * act_num + 1}" if act_num else "",
                      "params (train)": count_parameters(model),
                      "MFLOPs (train)": count_flops(model, input_size) / 1e6,
                      "params (deploy)": count_parameters(deployed),
                      "MFLOPs (deploy)": count_flops(deployed, input_size) / 1e6}
        del model, deployed  # one model alive at a time
    columns = ["activation", "n", "kernel", "params (train)", "params (deploy)",
               "MFLOPs (train)", "MFLOPs (deploy)"]
    return pd.DataFrame.from_dict(rows, orient="index")[columns].round(2)


def models_per_act_num(name: str, num_classes: int, act_nums, activations=("series", "lslu")):
    """Label -> builder of ``name`` with each activation and n, for parameter_table."""
    return {f"{act}, n={n}": (lambda a=act, k=n: build_model(name, num_classes, a, k))
            for n in act_nums for act in activations}


def plot_activation_shapes(curves: dict, ax=None, title="LSLU shape g(x)"):
    """One line per label -> (x, y): the elementwise part u = g(x) of an activation."""
    fig, ax = new_axes(ax)
    for label, (x, y) in curves.items():
        ax.plot(np.asarray(x), np.asarray(y), label=label, lw=2)
    style_axes(ax, "input x", "g(x)", title)
    return fig


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in values) + ")"


def plot_three_pieces(theta, omega, points: int = 401, ncols: int = 2):
    """The series evaluated step by step (3n+1 passes) against its closed form
    c + s (clamp(x, p, q) - p), with p and q marked and the pieces shaded.

    ``theta``/``omega``: shape (n,) for one panel, or (k, n) for k panels, ``ncols`` per row.
    """
    theta = torch.as_tensor(theta, dtype=torch.float64)
    omega = torch.as_tensor(omega, dtype=torch.float64)
    if theta.dim() == 1:
        theta, omega = theta[None], omega[None]
    k = theta.shape[0]
    nrows, ncols, figsize = page_grid(k, ncols, panel_height=3.2)
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[k:]:
        ax.set_visible(False)
    for ax, t, w in zip(axes, theta, omega):
        pieces = three_piece_parameters(t, w)
        count = int(count_pieces(*pieces))
        c, s, p, q = (float(v) for v in pieces)
        right = q if math.isfinite(q) else p
        lo, hi = min(-1.0, p - 1.0), max(2.0, right + 1.0)
        x = torch.linspace(lo, hi, points, dtype=torch.float64)
        naive = naive_series(x.view(1, 1, 1, -1), t, w).flatten()
        closed = c + s * (torch.clamp(x, p, q) - p)
        ax.plot(x, naive, lw=5, alpha=0.35, color="C0", label="series (3n+1 passes)")
        ax.plot(x, closed, "--", lw=1.5, color="C3", label="closed form")
        edges = [lo, p] + ([q] if math.isfinite(q) else []) + [hi]
        for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
            if b > a and count > 1:
                ax.axvspan(a, b, color=f"C{i + 4}", alpha=0.08, lw=0)
        ax.axvline(p, color="k", ls=":", lw=1)
        ax.annotate("p = q" if p == q else "p", (p, 1), xycoords=("data", "axes fraction"),
                    ha="right", va="top")
        if math.isfinite(q) and q > p:
            ax.axvline(q, color="k", ls=":", lw=1)
            ax.annotate("q", (q, 1), xycoords=("data", "axes fraction"), ha="left", va="top")
        style_axes(ax, "input x", "u = g(x)",
               f"θ={_fmt(t.tolist())}\nω={_fmt(w.tolist())}: {count} piece{'s' * (count > 1)}",
               legend=ax is axes[0])
    return fig


# ---- statements about the reference code, checked by running code (book/reference_code.md) ----
@torch.no_grad()
def reference_deploy_exceptions(levels=(0.0, 0.7, -0.7), channels: int = 8, seed: int = 0):
    """The reference deploy against our exact deploy for theta = 1, omega = (a, -a, 0): the
    series is still relu for a >= 0 (so the reference's transform is exact there too), not for
    a < 0. Rows: a, whether the series equals relu, whether the reference's deploy is exact
    (float32 rounding, < 1e-5) or wrong (its largest error, 2 significant digits)."""
    rows = []
    for a in levels:
        torch.manual_seed(seed)
        layer = LSLU(channels, 3).eval()
        layer.omega.copy_(torch.tensor([a, -a, 0.0]))
        layer.bn.running_mean.normal_(0, 0.3)
        layer.bn.running_var.uniform_(0.5, 2.0)
        x = torch.randn(4, channels, 6, 6, generator=torch.Generator().manual_seed(seed))
        deviation = (naive_series(x, layer.theta, layer.omega) - torch.relu(x)).abs().max()
        theirs = reference_deploy_(copy.deepcopy(layer))
        error = float((theirs(x) - layer(x)).abs().max())
        rows.append({"a": a, "series = relu": "yes" if deviation < 1e-5 else "no",
                     "reference deploy": "exact (error < 1e-5)" if error < 1e-5
                     else f"wrong (max error {error:.2g})"})
    return pd.DataFrame(rows)


def naive_series_saved_tensors(act_nums=(1, 2, 3, 4), size=(2, 4, 8, 8)) -> pd.DataFrame:
    """How many full-size tensors autograd keeps for the backward of the series evaluated step
    by step (as the reference code does): n + 1 (the output of each relu)."""
    rows = []
    for n in act_nums:
        x = torch.randn(size, requires_grad=True)
        theta, omega = torch.ones(n, requires_grad=True), torch.zeros(n, requires_grad=True)
        storages = set()

        def pack(t):
            if t.numel() == x.numel():
                storages.add(t.untyped_storage().data_ptr())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            naive_series(x, theta, omega)
        rows.append({"n": n, "full-size tensors kept for backward": len(storages)})
    return pd.DataFrame(rows)


def lambda_graph_count(values=8) -> pd.DataFrame:
    """Graphs torch.compile makes over ``values`` distinct deep-training lambdas: lambda as a
    Python float attribute against lambda in a tensor buffer (as lslu.models keeps it). Counted
    with a backend that records each graph and runs it eagerly (no code generation)."""
    import torch._dynamo  # the compiler's front end; imported here, only this check needs it

    class FloatLambda(nn.Module):
        def __init__(self):
            super().__init__()
            self.lam = 0.0

        def forward(self, x):
            return (1 - self.lam) * torch.relu(x) + self.lam * x

    class BufferLambda(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("lam", torch.tensor(0.0))

        def forward(self, x):
            return (1 - self.lam) * torch.relu(x) + self.lam * x

    rows = []
    x = torch.randn(4, 8)
    for name, module in (("Python float", FloatLambda()), ("tensor buffer", BufferLambda())):
        graphs = []

        def backend(gm, example_inputs):
            graphs.append(gm)
            return gm.forward

        torch._dynamo.reset()
        compiled = torch.compile(module, backend=backend)
        for i in range(values):
            lam = i / (values - 1)
            if isinstance(module.lam, torch.Tensor):
                module.lam.fill_(lam)
            else:
                module.lam = lam
            compiled(x)
        rows.append({"lambda kept as": name, "distinct lambdas": values, "graphs": len(graphs)})
    torch._dynamo.reset()
    return pd.DataFrame(rows)

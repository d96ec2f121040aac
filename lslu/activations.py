"""LSLU and the activations it is compared with.

The LSLU of the paper (its reference code is the executable specification) is

    h_0 = x,   h_i = theta_i * relu(h_{i-1}) + omega_i  (i = 1..n),   u = relu(h_n)
    y   = BN(depthwise_conv(u, W, kernel 2n+1, padding n))

The elementwise part u = g(x) is a monotone piecewise-linear function with at most three pieces,
so it is computed in one pass forward and one backward instead of 3n+1 elementwise passes, in one
of two exact forms:

* eager on the CPU, per layer: g(x) = c + s * (clamp(x, p, q) - p), with (c, s, p, q) and their
  Jacobian computed on the host in Python floats (``_pieces_host``) and ATen's scalar-bound kernels;
* everywhere else (CUDA, torch.compile, tracing, per-channel LSLU, or ``LSLU_CPU_FAST_PATH=0``):
  g(x) = clamp(a * x + b, lo, hi), with (a, b, lo, hi) from a four-row recurrence of a few tensor
  ops per step and a hand-written backward, batched over all LSLU layers of a model
  (``share_clamp_parameters``).

The math of both forms is lslu.lslu_math; this module holds the nn.Modules, which path a layer
takes, and the registry of activations by name. See lslu-math.md (shared project docs) and
book/method.md for the derivation.
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from .lslu_math import (_ClampParameters, _ScalarSeries, clamp_affine, clamp_parameters,
                        naive_series, three_piece, three_piece_parameters)

__all__ = [
    "ACTIVATIONS",
    "LSLU",
    "SeriesActivation",
    "FReLU",
    "AconC",
    "SwishBeta",
    "make_activation",
    "naive_series",
    "three_piece_parameters",
    "three_piece",
    "clamp_parameters",
    "clamp_affine",
    "share_clamp_parameters",
    "reference_deploy_",
]


# ---------------------------------------------------------------------------------------------
# Which path LSLU takes (the eager CPU fast path or the tensor path; see lslu.lslu_math)
# ---------------------------------------------------------------------------------------------
# LSLU_CPU_FAST_PATH=0 in the environment (or this flag, in tests) switches the fast path off, so
# a CPU runs what torch.compile, CUDA and tracing run (no .item(), no data-dependent branches).
def _fast_path_from_environment() -> bool:
    value = os.environ.get("LSLU_CPU_FAST_PATH", "1").strip()
    if value not in ("0", "1"):
        raise ValueError(f"LSLU_CPU_FAST_PATH must be 0 (tensor path everywhere, as on a GPU) or 1 "
                         f"(default), got {value!r}")
    return value == "1"


_CPU_FAST_PATH = _fast_path_from_environment()


def _use_host_path(x: torch.Tensor, c: torch.Tensor) -> bool:
    return (_CPU_FAST_PATH and x.device.type == "cpu" and type(x) is torch.Tensor
            and type(c) in (torch.Tensor, nn.Parameter) and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing())


# ---------------------------------------------------------------------------------------------
# Depthwise conv + BN activations: VanillaNet's series activation and LSLU
# ---------------------------------------------------------------------------------------------
def _check_act_num(act_num) -> int:
    if isinstance(act_num, bool) or not isinstance(act_num, int) or act_num < 1:
        raise ValueError(f"act_num must be an integer >= 1 (it sets the series length n and the "
                         f"depthwise kernel 2n+1), got {act_num!r}")
    return act_num


def _check_channels(channels) -> int:
    if isinstance(channels, bool) or not isinstance(channels, int) or channels <= 0:
        raise ValueError(f"channels must be a positive integer, got {channels!r}")
    return channels


def _fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d):
    """Weight and bias of conv followed by eval-mode BN, as one conv."""
    std = torch.sqrt(bn.running_var + bn.eps)
    scale = bn.weight / std
    folded_w = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    base = bias if bias is not None else torch.zeros_like(bn.running_mean)
    folded_b = bn.bias + (base - bn.running_mean) * scale
    return folded_w, folded_b


class SeriesActivation(nn.Module):
    """VanillaNet's series-informed activation: BN(depthwise_conv(relu(x), kernel 2n+1)).

    In deploy mode the BN is folded into the conv (exact).
    """

    is_activation = True  # found by lslu.probes (make_activation marks torch's own)

    def __init__(self, channels: int, act_num: int = 3):
        super().__init__()
        self.channels = _check_channels(channels)
        self.act_num = _check_act_num(act_num)
        k = 2 * act_num + 1
        self.weight = nn.Parameter(torch.empty(channels, 1, k, k))
        self.bias = None
        self.bn = nn.BatchNorm2d(channels, eps=1e-6)
        self.deployed = False
        SeriesActivation.reset_parameters(self)  # subclasses initialise their own parameters

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.weight, std=0.02)
        if not self.deployed:
            self.bn.reset_parameters()
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} expects a 4-D input (N, C, H, W), "
                             f"got shape {tuple(x.shape)}")
        if x.shape[1] != self.channels:
            raise ValueError(f"{type(self).__name__} was built for {self.channels} channels, "
                             f"got an input with {x.shape[1]} (shape {tuple(x.shape)})")

    def elementwise(self, x: torch.Tensor) -> torch.Tensor:
        """The pointwise part g(x) before the depthwise conv (here: relu)."""
        return F.relu(x)

    def _conv(self, u: torch.Tensor) -> torch.Tensor:
        return F.conv2d(u, self.weight, self.bias, padding=self.act_num, groups=self.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        y = self._conv(self.elementwise(x))
        return y if self.deployed else self.bn(y)

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Fold BN (its running statistics) into the conv. Exact in eval mode."""
        if self.deployed:
            return
        w, b = _fold_bn(self.weight, None, self.bn)
        self.weight.data.copy_(w)
        self.bias = nn.Parameter(b.detach().clone())
        del self.bn
        self.deployed = True

    reparameterize = switch_to_deploy

    def extra_repr(self) -> str:
        return f"channels={self.channels}, act_num={self.act_num}, kernel={2 * self.act_num + 1}" + \
            (", deployed" if self.deployed else "")


class LSLU(SeriesActivation):
    """Learnable Series Linear Unit.

    ``LSLU(channels, act_num=3, per_channel=False)``: theta and omega of shape (act_num,) (the
    reference semantics: n scalars per layer) or (act_num, channels) with ``per_channel=True``.
    At initialisation (theta=1, omega=0) it equals :class:`SeriesActivation`.
    ``switch_to_deploy()`` folds BN into the conv and keeps g(x), so it is exact for every theta
    and omega (the reference code's deploy is not; see :func:`reference_deploy_`).
    """

    def __init__(self, channels: int, act_num: int = 3, per_channel: bool = False):
        super().__init__(channels, act_num)
        self.per_channel = bool(per_channel)
        shape = (act_num, channels) if per_channel else (act_num,)
        self.theta = nn.Parameter(torch.ones(shape))
        self.omega = nn.Parameter(torch.zeros(shape))
        # P = (a, b, lo, hi) frozen at deploy so inference does no scalar work per call
        self.register_buffer("deploy_pieces", None)
        # set by share_clamp_parameters' hook for one forward of the model (see there)
        self._shared_pieces = None

    def reset_parameters(self) -> None:
        super().reset_parameters()
        nn.init.ones_(self.theta)
        nn.init.zeros_(self.omega)

    def no_weight_decay(self) -> set[str]:
        """theta and omega shape the activation: no weight decay (as for PReLU)."""
        return {"theta", "omega"}

    def clamp_parameters(self) -> torch.Tensor:
        """P = (a, b, lo, hi): g(x) = clamp(a * x + b, lo, hi)."""
        if self.deploy_pieces is not None:
            return self.deploy_pieces
        return clamp_parameters(self.theta, self.omega)

    def _uses_host_path(self, x: torch.Tensor) -> bool:
        return not self.per_channel and self.theta.device.type == "cpu" \
            and _use_host_path(x, self.theta)

    def elementwise(self, x: torch.Tensor) -> torch.Tensor:
        pieces = self.deploy_pieces
        if pieces is not None and not (torch.is_grad_enabled() and x.requires_grad) \
                and self._uses_host_path(x):
            # deployed inference on the CPU: two kernels, b + a * x (b a 0-dim tensor, a a host
            # float) and an in-place clamp with host bounds (clamp with tensor bounds is ~3x
            # slower), no autograd node; this branch first: at batch 1 the Python around the
            # kernels costs as much as the kernels
            a, _, lo, hi = pieces.tolist()
            return torch.add(pieces[1], x, alpha=a).clamp_(lo, hi if math.isfinite(hi) else None)
        shared, self._shared_pieces = self._shared_pieces, None
        if pieces is None and self._uses_host_path(x):
            return _ScalarSeries.apply(x, self.theta, self.omega)
        if shared is None or pieces is not None:
            shared = self.clamp_parameters()
        return clamp_affine(x, shared)

    @torch.no_grad()
    def shape_function(self, x: torch.Tensor) -> torch.Tensor:
        """g(x) on a 1-D tensor of inputs, for plots: shape (len,) or (channels, len)."""
        a, b, lo, hi = (t.unsqueeze(-1) for t in clamp_parameters(self.theta, self.omega))
        return torch.minimum(torch.maximum(a * x + b, lo), hi)

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        if self.deployed:
            return
        self.deploy_pieces = clamp_parameters(self.theta, self.omega).detach().clone()
        super().switch_to_deploy()

    reparameterize = switch_to_deploy

    def extra_repr(self) -> str:
        return super().extra_repr() + (", per_channel=True" if self.per_channel else "")


# ---------------------------------------------------------------------------------------------
# One batched call per forward for all LSLU layers of a model
# ---------------------------------------------------------------------------------------------
# A model-level pre-forward hook stacks theta/omega of every LSLU layer that takes the tensor
# path (per-layer: (n, L); per-channel: (n, sum C)) and computes all their clamp parameters in
# one _ClampParameters call, so the ~40 small ops of the recurrence and its backward are paid
# once per step instead of once per layer.  Each layer takes its slice once; the forward hook
# drops leftovers, so nothing computed from old parameters outlives the forward.  Under
# torch.compile or tracing the hook does nothing: each layer computes its own and the compiler
# fuses them.  The hook takes the model as its argument, so deep copies (EMA) stay correct.
def _share_pieces_pre_hook(model: nn.Module, args) -> None:
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return
    x = args[0] if args and isinstance(args[0], torch.Tensor) else None
    groups: dict = {}
    for m in model.modules():
        if isinstance(m, LSLU) and m.deploy_pieces is None:
            m._shared_pieces = None
            if x is not None and m._uses_host_path(x):
                continue
            key = (m.act_num, m.per_channel, m.theta.device, m.theta.dtype)
            groups.setdefault(key, []).append(m)
    for (_, per_channel, _, _), layers in groups.items():
        if len(layers) < 2:
            continue
        if per_channel:
            theta = torch.cat([m.theta for m in layers], 1)
            omega = torch.cat([m.omega for m in layers], 1)
            pieces = _ClampParameters.apply(theta, omega).split([m.channels for m in layers], 1)
        else:
            # stacked layer by layer, seen as (n, L): see _ClampParameters.backward
            theta = torch.stack([m.theta for m in layers]).t()
            omega = torch.stack([m.omega for m in layers]).t()
            pieces = _ClampParameters.apply(theta, omega).unbind(1)
        for m, p in zip(layers, pieces):
            m._shared_pieces = p


def _share_pieces_post_hook(model: nn.Module, args, output) -> None:
    for m in model.modules():
        if isinstance(m, LSLU):
            m._shared_pieces = None


def share_clamp_parameters(model: nn.Module) -> nn.Module:
    """Compute the clamp parameters of all LSLU layers of ``model`` in one call per forward
    (exactly the same values as layer by layer).  The models of :mod:`lslu.models` do this."""
    model.register_forward_pre_hook(_share_pieces_pre_hook)
    model.register_forward_hook(_share_pieces_post_hook)
    return model


@torch.no_grad()
def reference_deploy_(module: nn.Module) -> nn.Module:
    """The reference code's deploy transform, applied in place to every LSLU in ``module``.

    The reference allocates theta with C entries (init 1) of which only the first n are used
    as scalars; at deploy it drops the series and omega, keeps relu, and scales channel k's
    kernel by entry k of that allocation, then folds BN. This reproduces that transform (it
    computes a different function from the trained model whenever theta/omega have moved).
    For ``per_channel`` LSLU the first series step's theta is used per channel.
    """
    for m in list(module.modules()):
        if isinstance(m, LSLU) and not m.deployed:
            per_channel_theta = torch.ones(m.channels, device=m.weight.device)
            if m.per_channel:
                per_channel_theta = m.theta[0].detach().clone()
            else:
                k = min(m.act_num, m.channels)
                per_channel_theta[:k] = m.theta[:k]
            m.weight.mul_(per_channel_theta.view(-1, 1, 1, 1))
            m.theta.fill_(1.0)
            m.omega.fill_(0.0)
            m.switch_to_deploy()
    return module


# ---------------------------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------------------------
class _ChannelActivation(nn.Module):
    """What the per-channel baselines share: the channel count, checked before any parameter is
    made, the mark by which lslu.probes finds them, and their repr."""

    is_activation = True  # found by lslu.probes (make_activation marks torch's own)

    def __init__(self, channels: int):
        super().__init__()
        self.channels = _check_channels(channels)

    def extra_repr(self):
        return f"channels={self.channels}"


class FReLU(_ChannelActivation):
    """Funnel activation (Ma et al. 2020): max(x, BN(depthwise_conv3x3(x)))."""

    def __init__(self, channels: int):
        super().__init__(channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.maximum(x, self.bn(self.conv(x)))


class AconC(_ChannelActivation):
    """ACON-C (Ma et al. 2021): (p1 - p2) x * sigmoid(beta (p1 - p2) x) + p2 x, per channel."""

    def __init__(self, channels: int):
        super().__init__(channels)
        self.p1 = nn.Parameter(torch.empty(1, channels, 1, 1))
        self.p2 = nn.Parameter(torch.empty(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.empty(1, channels, 1, 1))
        self.reset_parameters()

    def reset_parameters(self):
        # p1=1, p2=0, beta=1 starts as SiLU.
        nn.init.ones_(self.p1)
        nn.init.zeros_(self.p2)
        nn.init.ones_(self.beta)

    def no_weight_decay(self) -> set[str]:
        """p1, p2 and beta shape the activation: no weight decay (as for PReLU)."""
        return {"p1", "p2", "beta"}

    def forward(self, x):
        d = (self.p1 - self.p2) * x
        return d * torch.sigmoid(self.beta * d) + self.p2 * x


class SwishBeta(_ChannelActivation):
    """Swish with a learnable per-channel beta: x * sigmoid(beta x); beta=1 is SiLU."""

    def __init__(self, channels: int):
        super().__init__(channels)
        self.beta = nn.Parameter(torch.ones(1, channels, 1, 1))

    def reset_parameters(self):
        nn.init.ones_(self.beta)

    def no_weight_decay(self) -> set[str]:
        """beta shapes the activation: no weight decay (as for PReLU)."""
        return {"beta"}

    def forward(self, x):
        return x * torch.sigmoid(self.beta * x)


ACTIVATIONS = {
    "relu": lambda channels, act_num: nn.ReLU(),
    "prelu": lambda channels, act_num: nn.PReLU(channels),
    "silu": lambda channels, act_num: nn.SiLU(),
    "swish_beta": lambda channels, act_num: SwishBeta(channels),
    "series": lambda channels, act_num: SeriesActivation(channels, act_num),
    "lslu": lambda channels, act_num: LSLU(channels, act_num),
    "lslu_per_channel": lambda channels, act_num: LSLU(channels, act_num, per_channel=True),
    "frelu": lambda channels, act_num: FReLU(channels),
    "acon_c": lambda channels, act_num: AconC(channels),
}


def check_activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return name


def make_activation(name: str, channels: int, act_num: int = 3) -> nn.Module:
    """Build an activation by name (see ``ACTIVATIONS``) for ``channels`` channels."""
    check_activation(name)
    _check_channels(channels)
    _check_act_num(act_num)
    module = ACTIVATIONS[name](channels, act_num)
    # the mark by which lslu.probes finds every activation of a model, whatever its type
    module.is_activation = True
    return module

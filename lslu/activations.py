"""LSLU and the activations it is compared with.

The LSLU of the paper (its reference code is the executable specification) is

    h_0 = x,   h_i = theta_i * relu(h_{i-1}) + omega_i  (i = 1..n),   u = relu(h_n)
    y   = BN(depthwise_conv(u, W, kernel 2n+1, padding n))

The elementwise part u = g(x) is a monotone piecewise-linear function with at most three pieces,
g(x) = c + s * (clamp(x, p, q) - p), so we compute (c, s, p, q) from theta and omega with a few
differentiable scalar ops and then touch the activation tensor once forward and once backward
instead of 3n+1 times.  See docs/lslu-math.md in the shared folder and book/method.md.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

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
    "reference_deploy_",
]


# ---------------------------------------------------------------------------------------------
# The series and its closed form
# ---------------------------------------------------------------------------------------------
def naive_series(x: torch.Tensor, theta: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """The series exactly as the reference code evaluates it: 3n+1 elementwise passes.

    ``theta``/``omega`` have shape (n,) (one scalar per step) or (n, C) (per channel, x is NCHW).
    Kept as the baseline the fused form is benchmarked against.
    """
    h = x
    for i in range(theta.shape[0]):
        t, w = theta[i], omega[i]
        if t.dim() == 1:
            t, w = t.view(1, -1, 1, 1), w.view(1, -1, 1, 1)
        h = t * F.relu(h) + w
    return F.relu(h)


def three_piece_parameters(theta: torch.Tensor, omega: torch.Tensor):
    """(c, s, p, q) with g(x) = c + s * (clamp(x, p, q) - p) equal to the series for all x.

    Pushes the three-piece form through each step, starting from relu (c=0, s=1, p=0, q=inf).
    Differentiable in theta and omega; shapes (n,) give 0-dim results, (n, C) give (C,).
    """
    if theta.shape != omega.shape:
        raise ValueError(f"theta and omega must have the same shape, got {tuple(theta.shape)} "
                         f"and {tuple(omega.shape)}")
    shape = theta.shape[1:]
    zero = theta.new_zeros(shape)
    c, s, p = zero, zero + 1.0, zero
    q = zero + math.inf
    for i in range(theta.shape[0]):
        c, s = theta[i] * c + omega[i], theta[i] * s
        c, p, q = _relu_of_three_piece(c, s, p, q)
    c, p, q = _relu_of_three_piece(c, s, p, q)
    return c, s, p, q


def _relu_of_three_piece(c, s, p, q):
    # Where the linear piece crosses zero; s == 0 is replaced by 1 so no inf/nan enters the graph
    # (that branch is not selected below).
    safe_s = torch.where(s == 0, torch.ones_like(s), s)
    crossing = p - c / safe_s
    clipped = torch.minimum(torch.maximum(crossing, p), q)
    # increasing piece: the left end moves right to the crossing, and the constant there is
    # the (non-negative) value of the line at the new left end.
    p_up = clipped
    c_up = F.relu(c + s * (clipped - p))
    # decreasing piece: the right end moves left to the crossing.
    q_down = clipped
    rising, falling = s > 0, s < 0
    new_p = torch.where(rising, p_up, p)
    new_q = torch.where(falling, q_down, q)
    new_c = torch.where(rising, c_up, F.relu(c))
    return new_c, new_p, new_q


class _ThreePiece(torch.autograd.Function):
    """u = c + s * (clamp(x, p, q) - p) in one pass, with a fused backward.

    c, s, p, q are fp32 and either 0-dim or shaped (1, C, 1, 1); the elementwise work runs in
    x's dtype, the reductions for the scalar gradients in fp32.
    """

    @staticmethod
    def forward(ctx, x, c, s, p, q):
        xs = [t.to(x.dtype) for t in (c, s, p, q)]
        cx, sx, px, qx = xs
        u = torch.addcmul(cx - sx * px, torch.clamp(x, px, qx), sx)
        ctx.save_for_backward(x, s, p, q)
        return u

    @staticmethod
    def backward(ctx, grad):
        x, s, p, q = ctx.saved_tensors
        px, qx = p.to(x.dtype), q.to(x.dtype)
        inside = (x > px) & (x < qx)
        grad_inside = torch.where(inside, grad, 0)
        need_scalars = any(ctx.needs_input_grad[1:])
        grad_c = grad_s = grad_p = grad_q = None
        if need_scalars:
            dims = (0, 2, 3) if s.dim() > 0 else None
            keep = s.dim() > 0

            def total(t):
                return t.sum(dim=dims, keepdim=keep, dtype=torch.float32) if keep else \
                    t.sum(dtype=torch.float32)

            sum_all = total(grad)
            sum_inside = total(grad_inside)
            sum_high = total(torch.where(x >= qx, grad, 0))
            sum_inside_x = total(grad_inside * x)
            width = torch.where(torch.isfinite(q), q - p, torch.zeros_like(q))
            grad_c = sum_all
            grad_s = sum_inside_x - p * sum_inside + width * sum_high
            grad_p = -s * (sum_inside + sum_high)
            grad_q = torch.where(torch.isfinite(q), s * sum_high, torch.zeros_like(q))
        grad_x = grad_inside.mul_(s.to(x.dtype)) if ctx.needs_input_grad[0] else None
        return grad_x, grad_c, grad_s, grad_p, grad_q


def three_piece(x: torch.Tensor, c, s, p, q) -> torch.Tensor:
    """Evaluate c + s * (clamp(x, p, q) - p) on an NCHW tensor (per-channel pieces: shape (C,))."""
    if c.dim() == 1:
        c, s, p, q = (t.view(1, -1, 1, 1) for t in (c, s, p, q))
    return _ThreePiece.apply(x, c, s, p, q)


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
        # (c, s, p, q) frozen at deploy so inference does no scalar work per call
        self.register_buffer("deploy_pieces", None)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        nn.init.ones_(self.theta)
        nn.init.zeros_(self.omega)

    def pieces(self):
        """(c, s, p, q): g(x) = c + s * (clamp(x, p, q) - p)."""
        if self.deploy_pieces is not None:
            return tuple(self.deploy_pieces.unbind(0))
        return three_piece_parameters(self.theta, self.omega)

    def elementwise(self, x: torch.Tensor) -> torch.Tensor:
        return three_piece(x, *self.pieces())

    @torch.no_grad()
    def shape_function(self, x: torch.Tensor) -> torch.Tensor:
        """g(x) on a 1-D tensor of inputs, for plots: shape (len,) or (channels, len)."""
        c, s, p, q = (t.unsqueeze(-1) for t in three_piece_parameters(self.theta, self.omega))
        return c + s * (torch.minimum(torch.maximum(x, p), q) - p)

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        if self.deployed:
            return
        self.deploy_pieces = torch.stack(three_piece_parameters(self.theta, self.omega)).detach()
        super().switch_to_deploy()

    reparameterize = switch_to_deploy

    def extra_repr(self) -> str:
        return super().extra_repr() + (", per_channel=True" if self.per_channel else "")


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
class FReLU(nn.Module):
    """Funnel activation (Ma et al. 2020): max(x, BN(depthwise_conv3x3(x)))."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = _check_channels(channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.maximum(x, self.bn(self.conv(x)))

    def extra_repr(self):
        return f"channels={self.channels}"


class AconC(nn.Module):
    """ACON-C (Ma et al. 2021): (p1 - p2) x * sigmoid(beta (p1 - p2) x) + p2 x, per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = _check_channels(channels)
        self.p1 = nn.Parameter(torch.empty(1, channels, 1, 1))
        self.p2 = nn.Parameter(torch.empty(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.empty(1, channels, 1, 1))
        self.reset_parameters()

    def reset_parameters(self):
        # p1=1, p2=0, beta=1 starts as SiLU.
        nn.init.ones_(self.p1)
        nn.init.zeros_(self.p2)
        nn.init.ones_(self.beta)

    def forward(self, x):
        d = (self.p1 - self.p2) * x
        return d * torch.sigmoid(self.beta * d) + self.p2 * x

    def extra_repr(self):
        return f"channels={self.channels}"


class SwishBeta(nn.Module):
    """Swish with a learnable per-channel beta: x * sigmoid(beta x); beta=1 is SiLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = _check_channels(channels)
        self.beta = nn.Parameter(torch.ones(1, channels, 1, 1))

    def reset_parameters(self):
        nn.init.ones_(self.beta)

    def forward(self, x):
        return x * torch.sigmoid(self.beta * x)

    def extra_repr(self):
        return f"channels={self.channels}"


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
    return ACTIVATIONS[name](channels, act_num)


def deepcopy_deployed(model: nn.Module) -> nn.Module:
    """A deployed copy of ``model`` (the original is left as it is)."""
    deployed = copy.deepcopy(model).eval()
    deployed.switch_to_deploy()
    return deployed

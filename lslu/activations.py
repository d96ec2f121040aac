"""LSLU and the activations it is compared with.

The LSLU of the paper (its reference code is the executable specification) is

    h_0 = x,   h_i = theta_i * relu(h_{i-1}) + omega_i  (i = 1..n),   u = relu(h_n)
    y   = BN(depthwise_conv(u, W, kernel 2n+1, padding n))

The elementwise part u = g(x) is a monotone piecewise-linear function with at most three pieces,
g(x) = c + s * (clamp(x, p, q) - p), so we compute (c, s, p, q) from theta and omega with a few
differentiable scalar ops and then touch the activation tensor once forward (a clamp and a
multiply-add) and once backward (the masked gradient plus a few reductions for theta and omega)
instead of 3n+1 times.  On the CPU in eager mode the scalars are read on the host and ATen's
scalar-bound kernels do the work; torch.compile and CUDA use a tensor-only path.  See
docs/lslu-math.md in the shared folder and book/method.md.
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
        c, s, p, q = _relu_of_three_piece(c, s, p, q)
    c, s, p, q = _relu_of_three_piece(c, s, p, q)
    return c, s, p, q


def _relu_of_three_piece(c, s, p, q):
    """relu of c + s * (clamp(x, p, q) - p), as (c, s, p, q) again.

    The line crosses zero at p - c/s.  Rising (s > 0): the left end moves right to the crossing
    and the constant there becomes 0.  Falling (s < 0): the right end moves left to it.  Flat
    (s == 0): only c <- relu(c).  Ties (crossing exactly at an end, e.g. at initialisation,
    where c = 0 and the crossing is p) take the branch whose gradient equals autograd through
    the series with relu'(0) = 0: rising takes the crossing at p and the end at q, falling the
    end at p and the crossing at q.
    """
    # |s| is kept away from 0 in the division (sign kept, s == 0 -> +-tiny): the crossing is not
    # used for s == 0, and for 0 < |s| < tiny the function moves by less than |s| times the
    # input range, while the backward of c / s stays finite (s * s would otherwise underflow to
    # 0 and give 0/0 = nan).
    tiny = torch.finfo(s.dtype).tiny ** 0.5
    safe_s = torch.where(s.abs() < tiny, torch.full_like(s, tiny).copysign(s), s)
    crossing = p - c / safe_s
    below_p, above_q = crossing < p, crossing >= q
    # rising: the crossing in [p, q) becomes the left end and the constant is 0 there
    rise_inside = ~below_p & ~above_q
    p_up = torch.where(rise_inside, crossing, torch.where(below_p, p, q))
    c_up = torch.where(rise_inside, torch.zeros_like(c), F.relu(c + s * (p_up - p)))
    # falling: the crossing in (p, q] becomes the right end
    fall_inside = (crossing > p) & (crossing <= q)
    q_down = torch.where(fall_inside, crossing, torch.where(crossing <= p, p, q))
    rising, falling = s > 0, s < 0
    new_p = torch.where(rising, p_up, p)
    new_q = torch.where(falling, q_down, q)
    new_c = torch.where(rising, c_up, F.relu(c))
    # flat piece (s == 0) at or below zero: relu makes it 0 for every x and every small change
    # of s, so s carries no gradient through this step (relu'(c) = 0 for c <= 0, as in autograd
    # through the series).  The value of s (0) is unchanged.
    new_s = torch.where((s == 0) & (c <= 0), torch.zeros_like(s), s)
    return new_c, new_s, new_p, new_q


def _pieces_host(theta: list, omega: list):
    """(c, s, p, q) and their derivatives in (theta_1..n, omega_1..n), on the host in float64.

    The same recurrence and the same tie rules as :func:`three_piece_parameters` (forward-mode
    derivatives carried along), for the per-layer form on the CPU, where it replaces about a
    hundred tiny tensor operations per call by a few microseconds of Python.
    """
    n = len(theta)
    m = 2 * n
    c, s, p, q = 0.0, 1.0, 0.0, math.inf
    dc, ds, dp, dq = [0.0] * m, [0.0] * m, [0.0] * m, [0.0] * m
    tiny = torch.finfo(torch.float64).tiny ** 0.5

    def relu_step(c, s, p, q, dc, ds, dp, dq):
        if s == 0.0:
            if c > 0.0:
                return c, s, p, q, dc, ds, dp, dq
            return 0.0, s, p, q, [0.0] * m, [0.0] * m, dp, dq
        safe = s if abs(s) >= tiny else math.copysign(tiny, s)
        crossing = p - c / safe
        # d crossing = dp - dc / s + c ds / s^2
        dcross = [a - b / safe + c * e / (safe * safe) for a, b, e in zip(dp, dc, ds)]
        if s > 0.0:
            if p <= crossing < q:
                return 0.0, s, crossing, q, [0.0] * m, ds, dcross, dq
            if crossing < p:  # c > 0: unchanged
                return c, s, p, q, dc, ds, dp, dq
            value = c + s * (q - p)  # crossing >= q: the whole line is <= 0
            if value > 0.0:
                dvalue = [a + e * (q - p) + s * (f - b) for a, e, f, b in zip(dc, ds, dq, dp)]
                return value, s, q, q, dvalue, ds, dq, dq
            return 0.0, s, q, q, [0.0] * m, ds, dq, dq
        # falling
        c_new, dc_new = (c, dc) if c > 0.0 else (0.0, [0.0] * m)
        if p < crossing <= q:
            return c_new, s, p, crossing, dc_new, ds, dp, dcross
        if crossing <= p:
            return c_new, s, p, p, dc_new, ds, dp, dp
        return c_new, s, p, q, dc_new, ds, dp, dq

    for i in range(n):
        t, w = theta[i], omega[i]
        dc = [t * a for a in dc]
        dc[i] += c
        dc[n + i] += 1.0
        ds = [t * a for a in ds]
        ds[i] += s
        c, s = t * c + w, t * s
        c, s, p, q, dc, ds, dp, dq = relu_step(c, s, p, q, dc, ds, dp, dq)
    c, s, p, q, dc, ds, dp, dq = relu_step(c, s, p, q, dc, ds, dp, dq)
    return (c, s, p, q), (dc, ds, dp, dq)


# Eager CPU fast path.  Reading a few scalars on the host is free on the CPU, so per-layer LSLU
# computes (c, s, p, q) and their Jacobian in Python floats (_ScalarSeries) and uses ATen's
# kernels with scalar bounds: one clamp forward; one pass for the masked gradient
# (hardtanh_backward) and three reductions backward, no boolean masks, no work for the upper
# end when it is +inf.  Per-channel LSLU reads only whether any upper end is finite.  Tests
# switch the flag off to check the tensor path, which torch.compile, CUDA and tracing use
# (no .item(), no data-dependent Python branches).
_CPU_FAST_PATH = True


def _channel_sum(t: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """Per-channel sums of an NCHW tensor, shape (1, C, 1, 1), accumulated in ``acc``."""
    return t.sum(dim=(0, 2, 3), keepdim=True, dtype=acc)


def _use_host_path(x: torch.Tensor, c: torch.Tensor) -> bool:
    return (_CPU_FAST_PATH and x.device.type == "cpu" and type(x) is torch.Tensor
            and type(c) in (torch.Tensor, nn.Parameter) and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing())


def _dense(t: torch.Tensor) -> bool:
    return t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)


def _dot(a: torch.Tensor, b: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """sum(a * b) accumulated in ``acc`` (fp32 or fp64); one pass without a temporary when the
    two tensors have the same dtype and the same dense layout."""
    if a.dtype == acc and b.dtype == acc and a.stride() == b.stride() and _dense(a):
        n = a.numel()
        return torch.dot(a.as_strided((n,), (1,)), b.as_strided((n,), (1,)))
    return (a * b).sum(dtype=acc)


def _forward_host_scalar(x, cf, sf, pf, qf):
    """c + s * (clamp(x, p, q) - p) for host floats: one clamp, then scale and shift in place."""
    u = torch.clamp(x, min=pf, max=qf if math.isfinite(qf) else None)
    b = cf - sf * pf
    if sf != 1.0:
        u.mul_(sf)
    if b != 0.0:
        u.add_(b)
    return u


def _backward_host_scalar(host, grad, x, acc, need_x, need_scalars):
    """grad_x and the gradients of (c, s, p, q) (0-dim, dtype ``acc``) for host floats."""
    sf, pf, qf = host
    gi = torch.ops.aten.hardtanh_backward(grad, x, pf, qf)  # g [p < x < q], one pass
    grad_c = grad_s = grad_p = grad_q = None
    if need_scalars:
        grad_c = grad.sum(dtype=acc)
        sum_inside = gi.sum(dtype=acc)
        grad_s = _dot(gi, x, acc) - pf * sum_inside
        sum_beyond = sum_inside
        grad_q = grad_c.new_zeros(())
        if math.isfinite(qf):
            # g [x > q] (x == q has measure zero); nothing to do when q = +inf
            sum_high = torch.ops.aten.threshold_backward(grad, x, qf).sum(dtype=acc)
            grad_s = grad_s + (qf - pf) * sum_high
            sum_beyond = sum_inside + sum_high
            grad_q = sf * sum_high
        grad_p = -sf * sum_beyond
    grad_x = None
    if need_x:
        grad_x = gi.mul_(sf) if sf != 1.0 else gi
    return grad_x, grad_c, grad_s, grad_p, grad_q


class _ScalarSeries(torch.autograd.Function):
    """Per-layer LSLU's g(x) from (x, theta, omega) on the CPU, eagerly.

    (c, s, p, q) and their Jacobian in (theta, omega) come from :func:`_pieces_host` (host
    floats); the elementwise work and the reductions are those of :class:`_ThreePiece`, and
    the parameter gradients are the reductions times the Jacobian.
    """

    @staticmethod
    def forward(ctx, x, theta, omega):
        (cf, sf, pf, qf), jac = _pieces_host(theta.tolist(), omega.tolist())
        ctx.host, ctx.jac = (sf, pf, qf), jac
        ctx.save_for_backward(x)
        ctx.param_dtype = theta.dtype
        return _forward_host_scalar(x, cf, sf, pf, qf)

    @staticmethod
    @torch.autograd.function.once_differentiable  # host floats: no graph for double backward
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        need_x = ctx.needs_input_grad[0]
        need_params = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        if not (need_x or need_params):
            return None, None, None
        acc = torch.float64 if ctx.param_dtype == torch.float64 else torch.float32
        grad_x, *grads = _backward_host_scalar(ctx.host, grad, x, acc, need_x, need_params)
        grad_theta = grad_omega = None
        if need_params:
            weights = torch.stack(grads).tolist()
            n = len(ctx.jac[0]) // 2
            full = [sum(w * d[j] for w, d in zip(weights, ctx.jac)) for j in range(2 * n)]
            both = torch.tensor(full, dtype=ctx.param_dtype, device=x.device)
            grad_theta, grad_omega = both[:n], both[n:]
        return grad_x, grad_theta, grad_omega


class _ThreePiece(torch.autograd.Function):
    """u = c + s * (clamp(x, p, q) - p) in one pass, with a fused backward.

    c, s, p, q are fp32 (fp64 for fp64 parameters) and either 0-dim or shaped (1, C, 1, 1); the
    elementwise work runs in x's dtype, the reductions for the scalar gradients in fp32 (fp64).

    Backward: grad_x = g * s * [p < x < q] and four sums over the batch (per channel for the
    per-channel form): sum(g) for c, sum(g * (clamp(x, p, q) - p)) for s, s * sum(g [x > p])
    for p and s * sum(g [x >= q]) for q.  With gi = g [p < x < q] they are sum(g), sum(gi),
    sum(gi * (x - p)) and, only when q is finite, sum(g [x >= q]).  No reduction runs when
    theta and omega need no gradient.
    """

    @staticmethod
    def forward(ctx, x, c, s, p, q):
        ctx.host = None
        if _use_host_path(x, c):
            if c.dim() == 0:
                cf, sf, pf, qf = (float(t) for t in (c, s, p, q))
                ctx.host = (sf, pf, qf)
                u = _forward_host_scalar(x, cf, sf, pf, qf)
            else:
                # per channel: the host only learns whether any upper end is finite
                finite_q = bool(torch.isfinite(q).any())
                ctx.host = finite_q
                cx, sx, px, qx = (t.to(x.dtype) for t in (c, s, p, q))
                u = torch.clamp(x, min=px, max=qx if finite_q else None)
                u = torch.addcmul(cx - sx * px, u, sx, out=u)
        else:
            cx, sx, px, qx = (t.to(x.dtype) for t in (c, s, p, q))
            u = torch.addcmul(cx - sx * px, torch.clamp(x, px, qx), sx)
        ctx.save_for_backward(x, s, p, q)
        return u

    @staticmethod
    def backward(ctx, grad):
        x, s, p, q = ctx.saved_tensors
        need_x = ctx.needs_input_grad[0]
        need_scalars = any(ctx.needs_input_grad[1:])
        if not (need_x or need_scalars):
            return None, None, None, None, None
        if isinstance(ctx.host, tuple):
            return _backward_host_scalar(ctx.host, grad, x, q.dtype, need_x, need_scalars)
        if ctx.host is not None:
            return _ThreePiece._backward_host_channel(ctx.host, grad, x, s, p, q, need_x,
                                                     need_scalars)
        return _ThreePiece._backward_tensor(grad, x, s, p, q, need_x, need_scalars)

    @staticmethod
    def _backward_host_channel(finite_q, grad, x, s, p, q, need_x, need_scalars):
        acc = q.dtype
        px = p.to(x.dtype)
        if finite_q:
            qx = q.to(x.dtype)
            gi = grad * ((x > px) & (x < qx))
            shifted = None
        else:
            # x - p > 0 <=> x > p exactly (a difference of floats is 0 only when they are equal)
            shifted = x - px
            gi = torch.ops.aten.threshold_backward(grad, shifted, 0)
        grad_c = grad_s = grad_p = grad_q = None
        if need_scalars:
            grad_c = _channel_sum(grad, acc)
            sum_inside = _channel_sum(gi, acc)
            if shifted is not None:
                grad_s = _channel_sum(shifted.mul_(gi), acc)  # sum(gi (x - p))
                grad_p = -s * sum_inside
                grad_q = torch.zeros_like(q)
            else:
                sum_high = _channel_sum(grad * (x >= qx), acc)
                width = torch.where(torch.isfinite(q), q - p, torch.zeros_like(q))
                grad_s = _channel_sum(gi * x, acc) - p * sum_inside + width * sum_high
                grad_p = -s * (sum_inside + sum_high)
                grad_q = torch.where(torch.isfinite(q), s * sum_high, torch.zeros_like(q))
        grad_x = gi.mul_(s.to(x.dtype)) if need_x else None
        return grad_x, grad_c, grad_s, grad_p, grad_q

    @staticmethod
    def _backward_tensor(grad, x, s, p, q, need_x, need_scalars):
        # The path torch.compile traces and CUDA runs eagerly (no host reads).  Every sum is a
        # function of (grad, x) alone, so inductor computes them without intermediate tensors
        # (on the CPU: one loop for sum(grad), one for the other three, one for grad_x).
        px, qx, sx = p.to(x.dtype), q.to(x.dtype), s.to(x.dtype)
        grad_c = grad_s = grad_p = grad_q = None
        if need_scalars:
            acc = q.dtype
            total = _channel_sum if s.dim() > 0 else (lambda t, a: t.sum(dtype=a))
            grad_c = total(grad, acc)
            grad_s = total(grad * (torch.clamp(x, px, qx) - px), acc)
            grad_p = -s * total(torch.where(x > px, grad, 0), acc)
            grad_q = torch.where(torch.isfinite(q), s * total(torch.where(x >= qx, grad, 0), acc),
                                 torch.zeros_like(q))
        grad_x = torch.where((x > px) & (x < qx), grad * sx, 0) if need_x else None
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
        if not self.per_channel and _use_host_path(x, self.theta) \
                and self.theta.device.type == "cpu":
            if self.deploy_pieces is None:
                return _ScalarSeries.apply(x, self.theta, self.omega)
            if not (torch.is_grad_enabled() and x.requires_grad):
                # deployed inference: the frozen pieces, no autograd node
                return _forward_host_scalar(x, *self.deploy_pieces.tolist())
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

"""The LSLU's elementwise part g(x) = relu(theta_n relu(... relu(theta_1 x + omega_1) ...) + omega_n),
its closed form, and the two exact ways lslu.activations.LSLU computes it.

* the series as written (``naive_series``) and its (c, s, p, q) three-piece form;
* the eager CPU fast path: (c, s, p, q) and their Jacobian as host floats (``_ScalarSeries``);
* the tensor path: g(x) = clamp(a * x + b, lo, hi) from a four-row recurrence with a
  hand-written backward (``clamp_parameters``, ``clamp_affine``), batched over layers by
  lslu.activations.share_clamp_parameters.

Which path a layer takes is decided in lslu.activations (``LSLU_CPU_FAST_PATH``). See
lslu-math.md (shared project docs) and book/method.md for the derivation.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["naive_series", "three_piece_parameters", "three_piece", "clamp_parameters",
           "clamp_affine"]


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
# end when it is +inf.  Per-channel LSLU and every other device use the tensor path below.
def _dense(t: torch.Tensor) -> bool:
    return t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)


def _same_dense_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Both contiguous or both channels_last: their memory, read flat, pairs the same elements
    (strides of size-1 dimensions may differ; they are never used)."""
    if a.shape != b.shape:
        return False
    if a.is_contiguous() and b.is_contiguous():
        return True
    return a.is_contiguous(memory_format=torch.channels_last) \
        and b.is_contiguous(memory_format=torch.channels_last)


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


# ---------------------------------------------------------------------------------------------
# The tensor path: g(x) = clamp(a * x + b, lo, hi)
# ---------------------------------------------------------------------------------------------
# CUDA, torch.compile and tracing cannot read theta/omega on the host, and building (c, s, p, q)
# from them with tensor ops costs about a hundred tiny kernels per layer.  In OUTPUT space the
# series composes in a few tensor ops per step, because relu and an affine map both act on the
# ends of a clamp.  We never need to sort the ends: g is monotone, constant for x <= 0 (relu(x) = 0
# there) and towards +inf, and equal to the affine composite a x + b (a = prod theta, b = the series
# without its relus, at x = 0) wherever it is not constant (a nonzero slope needs every relu open).
# So lo and hi are the min and max of g(0) and g(+inf), and ONE recurrence over four rows
#     r = (a, b, g(0), g(+inf)),   r_0 = (1, 0, 0, +inf),
#     r <- max(theta_i * r + omega_i * (0, 1, 1, 1),  (-inf, -inf, 0, 0))      (i = 1..n)
# gives all four.  g(+inf) is NaN only when some theta_i = 0 meets the infinite row (0 * inf):
# g is then constant, and fmin/fmax take g(0) for both ends.  Ties go to the ends (y == lo is "at
# lo", as relu'(0) = 0 in the series), so gradients equal autograd through the series.
_ROW_START = (1.0, 0.0, 0.0, math.inf)
_ROW_FLOOR = (-math.inf, -math.inf, 0.0, 0.0)
_ROW_OMEGA = (0.0, 1.0, 1.0, 1.0)
_ROW_CONSTANTS: dict = {}


def _row_constants(like: torch.Tensor, extra_dims: int):
    """(start, floor, omega mask), shape (4, 1, ..., 1), on like's device and dtype; cached so
    that a step creates no tensors (on CUDA each creation is a copy from the host)."""
    key = (like.device, like.dtype, extra_dims)
    if key not in _ROW_CONSTANTS:
        shape = (4,) + (1,) * extra_dims
        made = tuple([torch.tensor(v, dtype=like.dtype, device=like.device).view(shape)
                      for v in (_ROW_START, _ROW_FLOOR, _ROW_OMEGA)])
        if torch.compiler.is_compiling():
            return made  # constants in the graph; a traced function must not fill the cache
        _ROW_CONSTANTS[key] = made
    return _ROW_CONSTANTS[key]


def _zero(like: torch.Tensor) -> torch.Tensor:
    """A cached 0-dim zero on like's device and dtype."""
    key = (like.device, like.dtype, "zero")
    if key not in _ROW_CONSTANTS:
        zero = torch.zeros((), dtype=like.dtype, device=like.device)
        if torch.compiler.is_compiling():
            return zero
        _ROW_CONSTANTS[key] = zero
    return _ROW_CONSTANTS[key]


class _ClampParameters(torch.autograd.Function):
    """(theta, omega) of shape (n, *rest) -> P of shape (4, *rest), rows (a, b, lo, hi).

    The backward is written by hand: the reverse of the recurrence (a mask and a product per
    step, then two batched sums), instead of autograd through about twenty small ops.  It equals
    autograd through the series everywhere except at a theta_i of exactly 0 (a measure-zero set
    training never meets: g is then constant in x, the clamp form keeps no memory of the inputs
    of step i, and the gradient for that theta_i is the series' gradient taken at x = 0; values
    and all other gradients stay exact).  The CPU fast path has no such exception.
    """

    @staticmethod
    def forward(ctx, theta, omega):
        start, floor, omega_rows = _row_constants(theta, theta.dim() - 1)
        steps = zip(theta.unbind(0), (omega.unsqueeze(1) * omega_rows).unbind(0))
        rows, pres = [start], []
        for t, w in steps:
            pres.append(torch.addcmul(w, rows[-1], t))
            rows.append(torch.maximum(pres[-1], floor))
        last = rows[-1]
        a, b, g0, ginf = last.unbind(0)
        rows[0] = start.expand_as(pres[0])  # the constant start row, for the stack below
        ctx.save_for_backward(theta, torch.stack(rows[:-1]), torch.stack(pres), last)
        return torch.stack((a, b, torch.fmin(g0, ginf), torch.fmax(g0, ginf)))

    @staticmethod
    def backward(ctx, grad):
        theta, rows, pres, last = ctx.saved_tensors
        g0, ginf = last[2], last[3]
        grad_a, grad_b, grad_lo, grad_hi = grad.unbind(0)
        # back through fmin/fmax: g(0) is the low end unless g(0) > g(+inf); both ends if NaN
        swapped = g0 > ginf
        zero = _zero(grad)
        grad_g0 = torch.where(swapped, grad_hi, grad_lo) + \
            torch.where(torch.isnan(ginf), grad_hi, zero)
        grad_ginf = torch.where(swapped, grad_lo, grad_hi)  # NaN rows: stopped by `opened`
        g = torch.stack((grad_a, grad_b, grad_g0, grad_ginf))
        _, floor, _ = _row_constants(theta, theta.dim() - 1)
        opened = pres > floor                       # where each relu passed its input on
        grads = []
        for i, t in reversed(list(enumerate(theta.unbind(0)))):
            g = torch.where(opened[i], g, zero)
            grads.append(g)
            if i:  # the gradient at the series' input is not needed
                g = g * t
        grads = torch.stack(grads[::-1])            # (n, 4, *rest): gradient at each step's output
        # rows at +inf (or NaN) carry no gradient: their 0 * inf must count as 0
        # written in theta's memory layout: share_clamp_parameters passes a transposed stack of
        # the layers' parameters, and each layer's slice of a gradient laid out like that is
        # contiguous, which autograd then keeps as the layer's .grad without a copy
        grad_theta = torch.sum(grads * torch.nan_to_num(rows, nan=0.0, posinf=0.0), 1,
                               out=torch.empty_like(theta))
        grad_omega = torch.sum(grads[:, 1:], 1, out=torch.empty_like(theta))  # omega: same layout
        return grad_theta, grad_omega


def clamp_parameters(theta: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """P = (a, b, lo, hi) stacked, shape (4, *theta.shape[1:]): the series equals
    clamp(a * x + b, lo, hi) for every x (lo <= hi, hi may be +inf).  Differentiable."""
    if theta.shape != omega.shape:
        raise ValueError(f"theta and omega must have the same shape, got {tuple(theta.shape)} "
                         f"and {tuple(omega.shape)}")
    return _ClampParameters.apply(theta, omega)


def _pieces_for(x: torch.Tensor, pieces: torch.Tensor) -> torch.Tensor:
    """P in x's dtype, shaped to broadcast against NCHW x: (4,) or (4, C, 1, 1)."""
    px = pieces if pieces.dtype == x.dtype else pieces.to(x.dtype)
    return px.view(4, -1, 1, 1) if pieces.dim() == 2 else px


def _rows_like(t: torch.Tensor, rows: int) -> torch.Tensor:
    """An uninitialised (rows, *t.shape) tensor whose every row has t's memory layout (NCHW or
    channels_last), so that elementwise ops with out= a row write it in one pass."""
    order = sorted(range(t.dim()), key=lambda d: -t.stride(d))   # outermost dimension first
    base = t.new_empty((rows,) + tuple(t.shape[d] for d in order))
    return base.permute([0] + [1 + order.index(d) for d in range(t.dim())])


class _ClampAffine(torch.autograd.Function):
    """u = clamp(a * x + b, lo, hi) for x (N, C, H, W) and P (4,) or (4, C): one multiply-add
    and one clamp forward.  Backward reads the regions off u itself (u < hi exactly where
    y < hi, u <= lo exactly where y <= lo; u is kept anyway, as the input of the depthwise conv)
    and takes nine kernels: two compares, four selections and a product written as the four rows
    of one buffer, one sum of the buffer (per channel for the per-channel form, accumulated in
    fp32, fp64 for fp64), and grad_x.  A tie lo == hi (a constant g) counts as "at hi": the
    gradients of theta and omega through clamp_parameters are the same either way (both ends
    are then the same row of the recurrence)."""

    @staticmethod
    def forward(ctx, x, pieces):
        px = _pieces_for(x, pieces)
        a, b, lo, hi = px.unbind(0)
        u = torch.addcmul(b, x, a).clamp_(lo, hi)
        ctx.save_for_backward(x, px, u)
        ctx.acc = torch.float64 if pieces.dtype == torch.float64 else torch.float32
        ctx.per_channel = pieces.dim() == 2
        return u

    @staticmethod
    def backward(ctx, grad):
        x, px, u = ctx.saved_tensors
        a, _, lo, hi = px.unbind(0)
        # a cached zero: torch.where with a Python 0 (or grad * mask) costs an extra kernel
        zero = _zero(grad)
        below_hi, at_lo = u < hi, u <= lo
        # rows: the gradients of a, b, lo and hi before summation (b's row is grad inside)
        rows = _rows_like(grad, 4)
        row_a, row_b, row_lo, row_hi = rows.unbind(0)
        torch.where(below_hi, zero, grad, out=row_hi)                   # y >= hi (and ties)
        torch.where(below_hi, grad, zero, out=row_b)                    # y < hi
        torch.where(at_lo, row_b, zero, out=row_lo)                     # y <= lo < hi
        torch.where(at_lo, zero, row_b, out=row_b)                      # lo < y < hi
        grad_x = row_b * a if ctx.needs_input_grad[0] else None
        grad_pieces = None
        if ctx.needs_input_grad[1]:
            torch.mul(row_b, x, out=row_a)
            dims = (1, 3, 4) if ctx.per_channel else (1, 2, 3, 4)
            grad_pieces = torch.sum(rows, dims, dtype=ctx.acc)
        return grad_x, grad_pieces


class _ClampAffineTraced(torch.autograd.Function):
    """_ClampAffine as torch.compile should see it: same values, same gradients.

    _ClampAffine's backward (masks read off the saved u, a dot through as_strided, sums written
    with out= into an empty buffer) is fine eagerly, but traced, inductor (CPU) runs it as
    several passes over the activation.  Here only x and P are saved and the backward uses plain
    ops written so that inductor (CPU, channels_last) runs it as ONE pass that reads grad, x and
    u and writes grad_x over u, the activation the depthwise conv saved anyway and no longer
    needs (no fresh buffer: a fresh 32 MB buffer costs ~8k page faults on each step):

    * the four sums read the regions off y = a * x + b, recomputed;
    * grad_x reads them off y and u (u > lo iff y > lo: the value is the same): u's only reader
      is then grad_x, which inductor requires before it writes in place, and grad_x shares
      x and grad with the sums, so that all are fused.

    Regions as in _ClampAffine: at lo where lo < hi and y <= lo, at hi where y >= hi, y is NaN
    or lo == hi (a constant g).  Used only while torch.compile traces (clamp_affine); eagerly
    _ClampAffine runs, unchanged.
    """

    @staticmethod
    def forward(ctx, x, pieces):
        px = _pieces_for(x, pieces)
        a, b, lo, hi = px.unbind(0)
        ctx.save_for_backward(x, px)
        ctx.acc = torch.float64 if pieces.dtype == torch.float64 else torch.float32
        ctx.per_channel = pieces.dim() == 2
        return torch.addcmul(b, x, a).clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad):
        x, px = ctx.saved_tensors
        a, b, lo, hi = px.unbind(0)
        y = torch.addcmul(b, x, a)               # the forward's rounding: the same regions
        below_hi, at_most_lo, tie = y < hi, y <= lo, lo >= hi   # at hi: not below hi, or a tie
        # Each mask that reads all of (x, a, b, lo, hi) has a single reader: inductor writes out
        # a quantity with several readers that reads more than four buffers, which, when grad
        # comes in another memory layout than x (torch.compile's CPU defaults), costs bool masks
        # written and read back in passes of their own.  grad_x first: then inductor fuses the
        # sums into its pass (the other order gave two passes).
        grad_x = None
        if ctx.needs_input_grad[0]:
            u = y.clamp(lo, hi)                  # inductor reads the saved u here
            # (u > lo) adds nothing to the mask but makes grad_x a reader of u (see above)
            grad_x = torch.where((below_hi & (u > lo)) & ~at_most_lo, grad, 0.0) * a
        grad_pieces = None
        if ctx.needs_input_grad[1]:
            acc = ctx.acc
            dims = [0, 2, 3] if ctx.per_channel else [0, 1, 2, 3]
            grad_pieces = torch.stack((
                torch.where((at_most_lo | ~below_hi) | tie, 0.0, grad * x).sum(dims, dtype=acc),
                torch.where((below_hi & ~at_most_lo) & ~tie, grad, 0.0).sum(dims, dtype=acc),
                torch.where((at_most_lo & ~tie) & below_hi, grad, 0.0).sum(dims, dtype=acc),
                torch.where(~below_hi | tie, grad, 0.0).sum(dims, dtype=acc)))
        return grad_x, grad_pieces


def clamp_affine(x: torch.Tensor, pieces: torch.Tensor) -> torch.Tensor:
    """clamp(a * x + b, lo, hi) on an NCHW tensor, P from :func:`clamp_parameters`."""
    if torch.compiler.is_compiling():
        return _ClampAffineTraced.apply(x, pieces)  # what inductor fuses best; same values
    return _ClampAffine.apply(x, pieces)


def three_piece(x: torch.Tensor, c, s, p, q) -> torch.Tensor:
    """c + s * (clamp(x, p, q) - p) on an NCHW tensor (per-channel pieces: shape (C,)), with plain
    autograd: the (c, s, p, q) form of the book's derivation, for plots and checks."""
    if c.dim() == 1:
        c, s, p, q = (t.view(1, -1, 1, 1) for t in (c, s, p, q))
    cx, sx, px, qx = (t.to(x.dtype) for t in (c, s, p, q))
    return cx + sx * (torch.clamp(x, px, qx) - px)

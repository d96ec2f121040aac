"""Tests of the LSLU core (lslu/activations.py) against an independent oracle.

The oracle is written here from the math (docs: lslu-math.md), not taken from the package:
    h_0 = x,  h_i = theta_i * relu(h_{i-1}) + omega_i,  u = relu(h_n)
    y = BN(depthwise_conv(u, W, padding n))
Every test of the elementwise part runs through both implementations of the closed form: the
eager CPU fast path (host scalars) and the tensor path used by torch.compile and CUDA.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lslu.activations as A
from lslu.activations import (ACTIVATIONS, LSLU, SeriesActivation, make_activation,
                              clamp_affine, clamp_parameters, reference_deploy_, three_piece,
                              three_piece_parameters)

DOUBLE = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

# ------------------------------------------------------------------------------------------
# the oracle
# ------------------------------------------------------------------------------------------
def oracle_series(x, theta, omega):
    """relu(theta_n relu(... theta_1 relu(x) + omega_1 ...) + omega_n), x NCHW."""
    h = x
    for i in range(theta.shape[0]):
        t, w = theta[i], omega[i]
        if t.dim() == 1:  # per channel
            t, w = t.view(1, -1, 1, 1), w.view(1, -1, 1, 1)
        h = t * torch.relu(h) + w
    return torch.relu(h)


def oracle_lslu(m, x, training):
    """The whole LSLU layer from its parameters, with F.conv2d and F.batch_norm."""
    u = oracle_series(x, m.theta, m.omega)
    y = F.conv2d(u, m.weight, padding=m.act_num, groups=x.shape[1])
    return F.batch_norm(y, m.bn.running_mean.clone(), m.bn.running_var.clone(), m.bn.weight,
                        m.bn.bias, training=training, momentum=0.0, eps=m.bn.eps)


def rel_err(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def close(a, b, tol):
    """max |a - b| <= tol * (1 + max |b|): relative for large outputs, absolute near 0 (BN of a
    constant channel is 0 up to rounding)."""
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max()) <= tol * (1.0 + float(b.abs().max()))


@pytest.fixture(params=[True, False], ids=["cpu_fast_path", "tensor_path"])
def path(request, monkeypatch):
    """Run the test through the eager CPU fast path and through the tensor path."""
    monkeypatch.setattr(A, "_CPU_FAST_PATH", request.param)
    return request.param


def set_params(m: LSLU, theta, omega):
    with torch.no_grad():
        m.theta.copy_(torch.as_tensor(theta, dtype=m.theta.dtype).reshape(m.theta.shape))
        m.omega.copy_(torch.as_tensor(omega, dtype=m.omega.dtype).reshape(m.omega.shape))
    return m


def random_params(m: LSLU, gen, scale=1.5):
    set_params(m, torch.randn(m.theta.shape, generator=gen, dtype=DOUBLE) * scale,
               torch.randn(m.omega.shape, generator=gen, dtype=DOUBLE))
    return m


def random_bn(bn: nn.BatchNorm2d, gen):
    with torch.no_grad():
        c = bn.num_features
        bn.running_mean.copy_(torch.randn(c, generator=gen) * 0.3)
        bn.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
        bn.weight.copy_(torch.rand(c, generator=gen) + 0.5)
        bn.bias.copy_(torch.randn(c, generator=gen) * 0.3)


# Named cases: (theta, omega) for n = 3 (per layer).
CASES = {
    "init": ([1.0, 1.0, 1.0], [0.0, 0.0, 0.0]),
    "negative_theta": ([-0.7, 1.3, -1.1], [0.2, -0.4, 0.3]),
    "negative_omega": ([0.8, 1.2, 0.9], [-0.3, -0.5, -0.2]),
    "theta_zero": ([1.2, 0.0, 0.9], [0.1, 0.4, -0.2]),
    "theta_zero_dead": ([1.2, 0.0, 0.9], [0.1, -0.4, 0.3]),
    # -relu(x)+1 gives a falling piece on [0, 1]; the second step pushes it all below zero:
    # the middle piece is empty (p == q) and the last step lifts the constant to 0.5
    "empty_middle": ([-1.0, -1.0, 1.0], [1.0, -2.0, 0.5]),
    "falling": ([-1.0, 1.5, 0.7], [1.0, 0.2, 0.1]),
    "dead": ([1.0, 1.0, 1.0], [-0.5, -2.0, -3.0]),
}


def test_empty_middle_case_really_has_an_empty_middle():
    c, s, p, q = three_piece_parameters(*(torch.tensor(v, dtype=DOUBLE)
                                          for v in CASES["empty_middle"]))
    assert float(p) == float(q) and float(c) == 0.5


# ------------------------------------------------------------------------------------------
# the train graph equals the oracle
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_layer", "per_channel"])
def test_train_graph_equals_oracle(case, per_channel, path):
    torch.manual_seed(0)
    c = 4
    m = LSLU(c, 3, per_channel=per_channel).double().train()
    theta, omega = (torch.tensor(v, dtype=DOUBLE) for v in CASES[case])
    if per_channel:  # the case on channel 0, other draws on the rest
        theta = torch.cat([theta[:, None], torch.randn(3, c - 1, dtype=DOUBLE) * 1.5], 1)
        omega = torch.cat([omega[:, None], torch.randn(3, c - 1, dtype=DOUBLE)], 1)
    set_params(m, theta, omega)
    x = torch.randn(3, c, 9, 9, dtype=DOUBLE) * 3
    for training in (True, False):
        m.train(training)
        expect = oracle_lslu(m, x, training)
        got = m(x)
        assert close(got, expect, 1e-10), (case, training)


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_layer", "per_channel"])
def test_train_graph_random_draws(per_channel, path):
    gen = torch.Generator().manual_seed(1)
    for n in range(1, 6):
        m = random_params(LSLU(5, n, per_channel=per_channel).double(), gen)
        x = torch.randn(2, 5, 8, 8, generator=gen, dtype=DOUBLE) * 3
        assert close(m(x), oracle_lslu(m, x, True), 1e-10)


# ------------------------------------------------------------------------------------------
# property: the closed form equals the series for every theta, omega
# ------------------------------------------------------------------------------------------
special = st.sampled_from([0.0, 1.0, -1.0, 0.5, -0.5, 2.0])
value = st.one_of(special, st.floats(-4, 4, allow_nan=False, allow_subnormal=False))
X_GRID = torch.cat([torch.linspace(-12, 12, 481, dtype=DOUBLE),
                    torch.tensor([0.0, 1.0, -1.0, 0.5, 2.0, 3.0], dtype=DOUBLE)])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 5), channels=st.sampled_from([0, 1, 3]), data=st.data())
def test_closed_form_equals_series(n, channels, data):
    """channels 0: per layer (theta of shape (n,)); otherwise per channel (n, channels)."""
    size = n * max(channels, 1)
    theta = torch.tensor(data.draw(st.lists(value, min_size=size, max_size=size)), dtype=DOUBLE)
    omega = torch.tensor(data.draw(st.lists(value, min_size=size, max_size=size)), dtype=DOUBLE)
    shape = (n, channels) if channels else (n,)
    theta, omega = theta.view(shape), omega.view(shape)
    c = max(channels, 1)
    x = X_GRID.view(1, 1, 1, -1).expand(2, c, 1, -1).contiguous()
    expect = oracle_series(x, theta, omega)
    scale = 1.0 + float(expect.abs().max())
    for fast in (True, False):
        A._CPU_FAST_PATH = fast
        try:
            got = three_piece(x, *three_piece_parameters(theta, omega)).detach()
            assert float((got - expect).abs().max()) <= 1e-12 * scale, (theta, omega, fast)
            got = got.detach()
            if channels == 0:  # the module path (host Jacobian on the CPU)
                m = set_params(LSLU(c, n).double(), theta, omega)
                got = m.elementwise(x).detach()
                assert float((got - expect).abs().max()) <= 1e-12 * scale
        finally:
            A._CPU_FAST_PATH = True


def test_pieces_at_most_three_and_monotone():
    gen = torch.Generator().manual_seed(2)
    theta = torch.randn(4, 256, generator=gen, dtype=DOUBLE) * 2
    omega = torch.randn(4, 256, generator=gen, dtype=DOUBLE)
    c, s, p, q = three_piece_parameters(theta, omega)
    assert bool((p >= 0).all()) and bool((p <= q).all())
    assert bool((c >= 0).all())  # the last relu


# ------------------------------------------------------------------------------------------
# deploy is exact
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_layer", "per_channel"])
@pytest.mark.parametrize("method", ["switch_to_deploy", "reparameterize"])
def test_deploy_exact_many_draws(per_channel, method):
    gen = torch.Generator().manual_seed(3)
    for draw in range(40):
        n = 1 + draw % 4
        m = LSLU(6, n, per_channel=per_channel)
        random_params(m, gen)
        random_bn(m.bn, gen)
        with torch.no_grad():
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.2)
        m.eval()
        x = torch.randn(2, 6, 10, 10, generator=gen) * 2
        with torch.no_grad():
            before = m(x)
            deployed = copy.deepcopy(m)
            getattr(deployed, method)()
            after = deployed(x)
        assert deployed.deployed and not hasattr(deployed, "bn")
        if float(before.abs().max()) > 0:
            assert rel_err(after, before) < 1e-5, draw
        # the autograd path of a deployed module (input that needs grad) agrees as well
        xg = x.clone().requires_grad_()
        assert rel_err(deployed(xg).detach(), before) < 1e-5


def test_series_activation_deploy_exact():
    gen = torch.Generator().manual_seed(4)
    m = SeriesActivation(8, 2)
    random_bn(m.bn, gen)
    m.eval()
    x = torch.randn(2, 8, 7, 7, generator=gen)
    with torch.no_grad():
        before = m(x)
        m.reparameterize()
        assert rel_err(m(x), before) < 1e-5


def test_deploy_is_idempotent_and_keeps_pieces():
    m = set_params(LSLU(4), *CASES["falling"]).eval()
    m.switch_to_deploy()
    pieces = m.deploy_pieces.clone()
    m.switch_to_deploy()
    assert torch.equal(m.deploy_pieces, pieces)


# ------------------------------------------------------------------------------------------
# gradients
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_layer", "per_channel"])
def test_gradients_reach_every_theta_and_omega(per_channel, path):
    torch.manual_seed(5)
    c, n = 6, 4
    m = LSLU(c, n, per_channel=per_channel)
    with torch.no_grad():
        m.theta.uniform_(0.6, 1.4)
        m.omega.uniform_(0.05, 0.3)
    x = torch.randn(4, c, 8, 8, requires_grad=True)
    y = m(x)
    (y * torch.randn_like(y)).sum().backward()  # BN output sums to a constant: weight it
    assert m.theta.grad.shape == m.theta.shape == ((n, c) if per_channel else (n,))
    assert bool((m.theta.grad != 0).all()) and bool((m.omega.grad != 0).all())
    assert bool((m.weight.grad != 0).any()) and bool((x.grad != 0).any())


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_layer", "per_channel"])
def test_gradcheck_module(per_channel, path):
    torch.manual_seed(6)
    c, n = 3, 2
    m = LSLU(c, n, per_channel=per_channel).double()
    if per_channel:
        set_params(m, [[1.3, 0.7, -0.9], [-0.8, 1.1, 0.6]], [[0.3, -0.2, 0.4], [0.9, 0.1, 0.2]])
    else:
        set_params(m, [1.3, -0.8], [0.3, 0.9])  # a falling piece: finite q
    with torch.no_grad():
        m.weight.normal_(0, 0.3)
    names = ["theta", "omega", "weight"]
    params = {k: v for k, v in m.named_parameters()}
    x = torch.randn(2, c, 5, 5, dtype=DOUBLE, requires_grad=True) * 2

    def f(x, theta, omega, weight):
        return torch.func.functional_call(m, {**params, "theta": theta, "omega": omega,
                                              "weight": weight}, (x,))

    inputs = (x.detach().requires_grad_(),) + tuple(
        params[k].detach().clone().requires_grad_() for k in names)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7)


def grads_of(fn, x, theta, omega, g):
    x, theta, omega = (t.detach().clone().requires_grad_() for t in (x, theta, omega))
    out = fn(x, theta, omega)
    return [out.detach()] + list(torch.autograd.grad(out, (x, theta, omega), g))


def lslu_elementwise(x, theta, omega):
    """The module's elementwise part with theta/omega given as (graph-carrying) tensors."""
    m = LSLU(x.shape[1], theta.shape[0], per_channel=theta.dim() == 2).double()
    del m.theta, m.omega
    m.theta, m.omega = theta, omega
    return m.elementwise(x)


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_layer", "per_channel"])
def test_fused_backward_equals_autograd_through_series(per_channel, path):
    gen = torch.Generator().manual_seed(7)
    draws = [CASES[k] for k in CASES]
    for _ in range(40):
        n = int(torch.randint(1, 6, (1,), generator=gen))
        draws.append((torch.randn(n, generator=gen, dtype=DOUBLE) * 1.5,
                      torch.randn(n, generator=gen, dtype=DOUBLE)))
    c = 3
    for theta, omega in draws:
        theta, omega = torch.as_tensor(theta, dtype=DOUBLE), torch.as_tensor(omega, dtype=DOUBLE)
        if per_channel:
            theta = torch.stack([theta, theta.flip(0), torch.randn(len(theta), generator=gen,
                                                                   dtype=DOUBLE)], 1)
            omega = torch.stack([omega, -omega, torch.randn(len(omega), generator=gen,
                                                            dtype=DOUBLE)], 1)
        x = torch.randn(2, c, 6, 6, generator=gen, dtype=DOUBLE) * 3
        g = torch.randn(2, c, 6, 6, generator=gen, dtype=DOUBLE)
        for fn in (lslu_elementwise, lambda x, t, w: clamp_affine(x, clamp_parameters(t, w))):
            got = grads_of(fn, x, theta, omega, g)
            ref = grads_of(oracle_series, x, theta, omega, g)
            if fn is not lslu_elementwise or not (path and not per_channel):
                # the clamp form at a theta_i of exactly 0 (a constant g, measure zero): its
                # gradient for that theta_i is taken at x = 0 (documented in _ClampParameters)
                exact_zero = theta == 0
                got[2][exact_zero] = ref[2][exact_zero]
            for a, b, what in zip(got, ref, ["value", "x", "theta", "omega"]):
                assert torch.allclose(a, b, atol=1e-10, rtol=1e-10), (what, theta, omega, a, b)


def test_gradient_at_init_equals_series():
    """At theta=1, omega=0 the crossing sits exactly on the left end (a tie); the closed form's
    omega gradient must still be the series' (the full sum, not half of it)."""
    x = torch.randn(2, 3, 6, 6, dtype=DOUBLE)
    g = torch.randn_like(x)
    theta, omega = torch.ones(3, dtype=DOUBLE), torch.zeros(3, dtype=DOUBLE)
    for fast in (True, False):
        A._CPU_FAST_PATH = fast
        try:
            got = grads_of(lslu_elementwise, x, theta, omega, g)
        finally:
            A._CPU_FAST_PATH = True
        ref = grads_of(oracle_series, x, theta, omega, g)
        assert torch.allclose(got[3], ref[3]) and torch.allclose(got[2], ref[2])
        expect = (g * (x > 0)).sum()
        assert torch.allclose(got[3], expect.expand(3))


def test_tiny_slope_gives_finite_gradients():
    theta = torch.tensor([1e-8, 1e-8, 1e-8, 1e-8, 1e-8], requires_grad=True)
    omega = torch.tensor([0.1, -0.2, 0.3, 0.0, 0.1], requires_grad=True)
    x = torch.randn(2, 2, 4, 4)
    for fast in (True, False):
        A._CPU_FAST_PATH = fast
        try:
            clamp_affine(x, clamp_parameters(theta, omega)).sum().backward()
        finally:
            A._CPU_FAST_PATH = True
        assert bool(torch.isfinite(theta.grad).all()) and bool(torch.isfinite(omega.grad).all())
        theta.grad = omega.grad = None


def test_channels_last_and_strided_gradients(path):
    torch.manual_seed(8)
    m = random_params(LSLU(8, 3), torch.Generator().manual_seed(8))
    x = torch.randn(2, 8, 6, 6)
    outs = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        m.zero_grad()
        xx = x.detach().contiguous(memory_format=fmt).requires_grad_()
        assert xx.is_contiguous(memory_format=fmt)
        y = m(xx)
        (y * torch.arange(y.numel()).view_as(y).sin()).sum().backward()
        outs.append([y.detach(), xx.grad.clone(), m.theta.grad.clone(), m.omega.grad.clone()])
        # a gradient with stride 0 (from .sum()) runs as well
        m.elementwise(xx).sum().backward()
    for a, b in zip(*outs):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


def test_bfloat16_input_fp32_reductions(path):
    torch.manual_seed(9)
    theta = torch.tensor([1.2, -0.7, 1.1], requires_grad=True)
    omega = torch.tensor([0.1, 0.6, -0.1], requires_grad=True)
    x = torch.randn(4, 8, 16, 16)
    g = torch.randn_like(x)
    ref = grads_of(oracle_series, x.double(), theta.double(), omega.double(), g.double())
    pieces = clamp_parameters(theta, omega)
    xb = x.bfloat16().requires_grad_()
    u = clamp_affine(xb, pieces)
    assert u.dtype == torch.bfloat16
    gt, gw = torch.autograd.grad(u, (theta, omega), g.bfloat16())
    assert gt.dtype == torch.float32
    assert torch.allclose(gt.double(), ref[2], rtol=3e-2, atol=3e-2 * float(ref[2].abs().max()))
    assert torch.allclose(gw.double(), ref[3], rtol=3e-2, atol=3e-2 * float(ref[3].abs().max()))


def test_no_parameter_reductions_when_frozen(path):
    m = random_params(LSLU(4, 3), torch.Generator().manual_seed(10))
    m.theta.requires_grad_(False)
    m.omega.requires_grad_(False)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    m.elementwise(x).sum().backward()
    assert x.grad is not None and m.theta.grad is None


# ------------------------------------------------------------------------------------------
# LSLU at init is VanillaNet's activation
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_layer", "per_channel"])
def test_equals_series_activation_at_init(per_channel, path):
    torch.manual_seed(11)
    lslu = LSLU(6, 3, per_channel=per_channel)
    series = SeriesActivation(6, 3)
    series.load_state_dict({k: v for k, v in lslu.state_dict().items()
                            if k in series.state_dict()})
    x = torch.randn(3, 6, 8, 8)
    for training in (True, False):
        lslu.train(training)
        series.train(training)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = lslu(xa), series(xb)
        assert torch.equal(ya, yb)
        w = torch.randn_like(ya)
        ga = torch.autograd.grad((ya * w).sum(), (xa, lslu.weight))
        gb = torch.autograd.grad((yb * w).sum(), (xb, series.weight))
        for a, b in zip(ga, gb):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------
BAD_ACT_NUM = [0, -1, 2.5, True, "3"]


@pytest.mark.parametrize("act_num", BAD_ACT_NUM)
@pytest.mark.parametrize("build", [
    lambda a: LSLU(8, a), lambda a: LSLU(8, a, per_channel=True), lambda a: SeriesActivation(8, a),
    lambda a: make_activation("lslu", 8, a)])
def test_act_num_must_be_integer_at_least_one(build, act_num):
    with pytest.raises(ValueError, match="act_num"):
        build(act_num)


@pytest.mark.parametrize("channels", [0, -4])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_channels_must_be_positive(name, channels):
    with pytest.raises(ValueError, match="channels"):
        make_activation(name, channels)


@pytest.mark.parametrize("channels", [0, -4])
def test_lslu_channels_must_be_positive(channels):
    with pytest.raises(ValueError, match="channels"):
        LSLU(channels)


@pytest.mark.parametrize("cls", [LSLU, SeriesActivation])
def test_input_must_be_4d(cls):
    with pytest.raises(ValueError, match=r"4-D.*\(8, 5, 5\)"):
        cls(8)(torch.randn(8, 5, 5))


@pytest.mark.parametrize("cls", [LSLU, SeriesActivation])
def test_wrong_channel_count_says_expected_and_got(cls):
    with pytest.raises(ValueError) as err:
        cls(8)(torch.randn(2, 5, 6, 6))
    msg = str(err.value)
    assert "8 channels" in msg and "5" in msg and "(2, 5, 6, 6)" in msg


def test_make_activation_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        make_activation("gelu", 8)
    msg = str(err.value)
    assert "'gelu'" in msg
    for name in ACTIVATIONS:
        assert name in msg


def test_theta_omega_shapes_must_match():
    with pytest.raises(ValueError, match="same shape"):
        three_piece_parameters(torch.ones(3), torch.zeros(2))


# ------------------------------------------------------------------------------------------
# the reference code's deploy
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_layer", "per_channel"])
def test_reference_deploy_equals_at_init_and_differs_when_moved(per_channel):
    gen = torch.Generator().manual_seed(12)
    base = LSLU(8, 3, per_channel=per_channel)
    random_bn(base.bn, gen)
    base.eval()
    x = torch.randn(2, 8, 9, 9, generator=gen)
    with torch.no_grad():
        truth = base(x)
        ref = reference_deploy_(copy.deepcopy(base))(x)
        assert rel_err(ref, truth) < 1e-5
        moved = copy.deepcopy(base)
        moved.theta.copy_(torch.rand(moved.theta.shape, generator=gen) + 0.5)
        moved.omega.copy_(torch.randn(moved.omega.shape, generator=gen) * 0.5)
        truth = moved(x)
        ref = reference_deploy_(copy.deepcopy(moved))(x)
        exact = copy.deepcopy(moved)
        exact.switch_to_deploy()
        assert rel_err(exact(x), truth) < 1e-5
        assert rel_err(ref, truth) > 1e-2


# ------------------------------------------------------------------------------------------
# compile friendliness
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_layer", "per_channel"])
def test_no_graph_breaks(per_channel):
    torch._dynamo.reset()
    m = LSLU(8, 3, per_channel=per_channel)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    explanation = torch._dynamo.explain(m)(x)
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1


def _compile_draws(per_channel, gen, count):
    """(theta, omega, x, x_ends): the init case first, the named cases, random draws.  x has
    exact zeros (relu's tie at init); x_ends also lands on the clamp form's ends lo and hi (up
    to the rounding of (end - b) / a, so only the two clamp-form paths are compared on it)."""
    base = [CASES["init"]] + [CASES[k] for k in CASES if k != "init"]
    base += [(torch.randn(3, generator=gen, dtype=DOUBLE) * 1.5,
              torch.randn(3, generator=gen, dtype=DOUBLE)) for _ in range(count)]
    for theta, omega in base:
        theta, omega = torch.as_tensor(theta, dtype=DOUBLE), torch.as_tensor(omega, dtype=DOUBLE)
        if per_channel:
            theta = torch.stack([theta, torch.randn(3, generator=gen, dtype=DOUBLE)], 1)
            omega = torch.stack([omega, torch.randn(3, generator=gen, dtype=DOUBLE)], 1)
        x = torch.randn(2, 2, 5, 5, generator=gen, dtype=DOUBLE) * 2
        x[:, :, 0] = 0.0
        a, b, lo, hi = clamp_parameters(theta, omega).detach().view(4, -1, 1)
        x_ends = x.clone()
        x_ends[:, :, 1, :2] = torch.where(a != 0, (lo - b) / a.where(a != 0, 1.0), 0.0)
        x_ends[:, :, 1, 2:4] = torch.where((a != 0) & hi.isfinite(),
                                           (hi - b) / a.where(a != 0, 1.0), 0.0)
        yield theta, omega, x, x_ends


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_layer", "per_channel"])
def test_compiled_path_equals_eager_and_series(per_channel):
    """Under torch.compile clamp_affine takes _ClampAffineTraced (plain ops, x saved): values
    and gradients equal the eager tensor path and autograd through the series, ties included
    (plain clamp would pass a tie y == lo to x: at init, x == 0 would get a gradient)."""
    torch._dynamo.reset()
    fn = lambda x, t, w: clamp_affine(x, clamp_parameters(t, w))  # noqa: E731
    compiled = torch.compile(fn, backend="eager", fullgraph=True, dynamic=False)
    gen = torch.Generator().manual_seed(13)
    for theta, omega, x, x_ends in _compile_draws(per_channel, gen, 30):
        g = torch.randn(x.shape, generator=gen, dtype=DOUBLE)
        got = grads_of(compiled, x, theta, omega, g)
        ref = grads_of(oracle_series, x, theta, omega, g)
        # at a theta_i of exactly 0 the clamp form's gradient for it is taken at x = 0
        # (documented in _ClampParameters); the compiled path must still equal the eager one
        ref[2][theta == 0] = got[2][theta == 0]
        for a, c, what in zip(got, ref, ["value", "x", "theta", "omega"]):
            assert torch.allclose(a, c, atol=1e-10, rtol=1e-10), (what, theta, omega, a, c)
        got = grads_of(compiled, x_ends, theta, omega, g)
        eager = grads_of(fn, x_ends, theta, omega, g)
        assert torch.equal(got[0], eager[0]), (theta, omega)   # the same ops forward
        for a, b, what in zip(got, eager, ["value", "x", "theta", "omega"]):
            assert torch.allclose(a, b, atol=1e-12, rtol=1e-12), (what, theta, omega, a, b)


def test_compiled_path_is_compile_only_and_inductor_agrees(monkeypatch):
    """The traced Function runs only while compiling (eager: _ClampAffine, unchanged), and
    inductor's kernels for it give the eager values and gradients on a tiny input."""
    theta = torch.ones(3, dtype=DOUBLE, requires_grad=True)
    x = torch.randn(2, 4, 3, 3, dtype=DOUBLE)
    eager_fn = clamp_affine(x, clamp_parameters(theta, torch.zeros(3, dtype=DOUBLE))).grad_fn
    assert type(eager_fn).__name__ == "_ClampAffineBackward"
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward
    torch._dynamo.reset()
    torch.compile(lambda x, t: clamp_affine(x, clamp_parameters(t, t)), backend=capture)(x, theta)
    traced = [str(n.meta.get("stack_trace", "")) for gm in graphs for n in gm.graph.nodes]
    assert any("_ClampAffineTraced.apply" in t for t in traced)
    monkeypatch.setattr(A, "_CPU_FAST_PATH", False)
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(5)
    for per_channel in (False, True):
        m = LSLU(4, 3, per_channel=per_channel)
        random_params(m, gen)
        eager, compiled = [], []
        inductor = torch.compile(m.elementwise, backend="inductor", fullgraph=True)
        for run, out in ((m.elementwise, eager), (inductor, compiled)):
            xx = (torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1)) * 2)
            xx[0, :, 0] = 0.0
            xx.requires_grad_()
            m.zero_grad()
            y = run(xx)
            y.backward(torch.ones_like(y))
            out += [y.detach(), xx.grad, m.theta.grad.clone(), m.omega.grad.clone()]
        for a, b in zip(compiled, eager):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), (per_channel, a, b)


def test_every_activation_runs():
    for name in ACTIVATIONS:
        act = make_activation(name, 8, 2)
        x = torch.randn(2, 8, 5, 5, requires_grad=True)
        y = act(x)
        assert y.shape == x.shape
        y.square().sum().backward()
        assert x.grad is not None and bool(torch.isfinite(x.grad).all())


def test_shape_function_matches_series():
    m = set_params(LSLU(4, 3), *CASES["falling"])
    xs = torch.linspace(-3, 3, 101)
    expect = oracle_series(xs.view(1, 1, 1, -1), m.theta, m.omega).flatten()
    assert torch.allclose(m.shape_function(xs), expect, atol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_kernel_size_follows_act_num(n):
    m = LSLU(4, n)
    assert m.weight.shape == (4, 1, 2 * n + 1, 2 * n + 1)
    assert m(torch.randn(1, 4, 9, 9)).shape == (1, 4, 9, 9)


def test_dtype_and_device_follow_module():
    m = LSLU(4, 3).double()
    assert m(torch.randn(2, 4, 5, 5, dtype=DOUBLE)).dtype == DOUBLE


def test_cases_cover_each_branch():
    """The named cases hit rising, falling, flat-and-dead and empty-middle pieces."""
    kinds = set()
    for theta, omega in CASES.values():
        c, s, p, q = (float(t) for t in three_piece_parameters(torch.tensor(theta),
                                                               torch.tensor(omega)))
        kinds.add("rising" if s > 0 and p < q else "falling" if s < 0 and p < q else
                  "empty" if p == q else "flat")
        if not math.isinf(q):
            kinds.add("finite_q")
    assert {"rising", "falling", "empty", "finite_q"} <= kinds


# ------------------------------------------------------------------------------------------
# the tensor path batched over a model's layers; its switch; its launch count
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["lslu", "lslu_per_channel"])
def test_model_batched_pieces_equal_layer_by_layer(activation, monkeypatch):
    """share_clamp_parameters (one call for all layers) gives the same outputs and gradients
    as each layer computing its own clamp parameters."""
    from lslu.models import build_model
    monkeypatch.setattr(A, "_CPU_FAST_PATH", False)
    gen = torch.Generator().manual_seed(11)
    model = build_model("vanillanet_5_x0_25", 10, activation).double()
    for m in model.modules():
        if isinstance(m, LSLU):
            random_params(m, gen)
    x = torch.randn(2, 3, 32, 32, generator=gen, dtype=DOUBLE)
    results = []
    for batched in (True, False):
        net = copy.deepcopy(model)
        if not batched:
            net._forward_pre_hooks.clear()
            net._forward_hooks.clear()
        out = net(x)
        out.square().sum().backward()
        grads = [p.grad for n, p in net.named_parameters() if n.endswith(("theta", "omega"))]
        assert len(grads) == 8
        results.append([out.detach(), *grads])
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    # nothing computed in a forward outlives it
    assert all(m._shared_pieces is None for m in net.modules() if isinstance(m, LSLU))


def test_fast_path_environment_variable():
    import subprocess
    import sys
    code = "import lslu.activations as A; print(A._CPU_FAST_PATH)"
    for value, expect in (("0", "False"), ("1", "True")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**__import__("os").environ, "LSLU_CPU_FAST_PATH": value})
        assert out.stdout.strip() == expect, out.stderr
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "LSLU_CPU_FAST_PATH": "yes"})
    assert bad.returncode != 0 and "LSLU_CPU_FAST_PATH must be 0" in bad.stderr


def test_tensor_path_launch_count_stays_near_series():
    """Kernel-launching ATen ops of one training step (lslu.profiling): the tensor path (GPU,
    compile) was 8.5x the series activation's before the clamp form; issue 12's target is 1.3x."""
    from lslu.profiling import training_step_ops
    series = training_step_ops("vanillanet_5_x0_25", "series", fast_path=False)
    for activation in ("lslu", "lslu_per_channel"):
        ratio = training_step_ops("vanillanet_5_x0_25", activation, fast_path=False) / series
        assert ratio <= 1.3, (activation, ratio)


def test_shared_clamp_parameters_hand_each_layer_its_gradient_without_a_copy(monkeypatch):
    """Per-layer theta/omega gradients of the batched call are contiguous slices of one buffer,
    which autograd keeps as .grad (a strided slice would be copied: one kernel per parameter)."""
    from lslu.models import build_model, lslu_layers
    monkeypatch.setattr(A, "_CPU_FAST_PATH", False)
    net = build_model("vanillanet_5_x0_25", 10, "lslu")
    net(torch.randn(2, 3, 32, 32)).sum().backward()
    layers = list(lslu_layers(net).values())
    assert len(layers) > 1
    for name in ("theta", "omega"):
        grads = [getattr(m, name).grad for m in layers]
        assert all(g.is_contiguous() for g in grads)
        assert len({g.untyped_storage().data_ptr() for g in grads}) == 1, name


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_layer", "per_channel"])
def test_clamp_form_routes_each_gradient_to_one_region(per_channel):
    """d/dP of clamp_affine, eager and compiled: every element's gradient goes to exactly one of
    a/b (inside), lo (y <= lo < hi) or hi (y >= hi, and every y when lo == hi: a constant g)."""
    torch._dynamo.reset()
    compiled = torch.compile(clamp_affine, backend="eager", fullgraph=True, dynamic=False)
    x = torch.tensor([-3.0, -1.0, 0.0, 0.5, 1.0, 4.0], dtype=DOUBLE).view(1, 1, 2, 3)
    g = torch.arange(1.0, 7.0, dtype=DOUBLE).view(1, 1, 2, 3)
    for a, b, lo, hi in ((2.0, 1.0, -1.0, 3.0), (1.0, 0.0, 0.5, 0.5), (1.0, 0.0, 0.0, math.inf)):
        y = a * x + b
        at_hi = (y >= hi) | (lo == hi)
        at_lo = (y <= lo) & ~at_hi
        inside = ~at_lo & ~at_hi
        want = torch.stack([(g * x)[inside].sum(), g[inside].sum(), g[at_lo].sum(), g[at_hi].sum()])
        for fn in (clamp_affine, compiled):
            pieces = torch.tensor([a, b, lo, hi], dtype=DOUBLE)
            if per_channel:
                pieces = pieces.view(4, 1)
            pieces.requires_grad_(True)
            fn(x, pieces).backward(g)
            assert torch.equal(pieces.grad.view(4), want), (fn, a, b, lo, hi, pieces.grad)

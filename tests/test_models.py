"""Model-level tests: VanillaNet and ResNet18 with every activation, exact deploy, the lambda
buffer, dropout, weight-decay groups and one torch.compile step."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from lslu.activations import ACTIVATIONS, LSLU, SeriesActivation
from lslu.models import (MODELS, BasicBlock, build_model, check_input_size, lslu_layers,
                         no_weight_decay_parameters, param_groups)
from lslu.train import compile_model


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Moved theta/omega in every LSLU and random statistics/affines in every BatchNorm."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LSLU):
                m.theta.copy_(torch.rand(m.theta.shape, generator=gen) + 0.5)
                m.theta.view(-1)[-1] = -0.8  # a falling piece somewhere
                m.omega.copy_(torch.randn(m.omega.shape, generator=gen) * 0.3)
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
    return model


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


# ------------------------------------------------------------------------------------------
# exact deploy of whole models
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["lslu", "series", "lslu_per_channel"])
@pytest.mark.parametrize("name,batch", [("vanillanet_5_x0_25", 4), ("vanillanet_6", 1)])
def test_vanillanet_deploy_is_exact(name, batch, activation):
    torch.manual_seed(0)
    model = randomise(build_model(name, 10, activation=activation)).eval()
    x = torch.randn(batch, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        model.switch_to_deploy()
        after = model(x)
    assert after.shape == (batch, 10)
    assert model.deployed and model.stem_merged is not None
    assert all(stage.merged is not None for stage in model.stages)
    assert all(m.deployed for m in model.modules() if isinstance(m, SeriesActivation))
    assert rel_err(after, before) < 1e-4


def test_reparameterize_alias_and_idempotent():
    model = randomise(build_model("vanillanet_5_x0_25", 10)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        model.reparameterize()
        model.reparameterize()
        assert rel_err(model(x), before) < 1e-4


def test_switch_to_deploy_needs_lambda_one():
    model = build_model("vanillanet_5_x0_25", 10).eval()
    model.change_act(0.5)
    with pytest.raises(ValueError, match=r"lambda = 1.*0\.5.*change_act"):
        model.switch_to_deploy()
    assert not model.deployed  # nothing half-done


def test_change_act_sets_buffer_and_forward_follows():
    torch.manual_seed(1)
    model = randomise(build_model("vanillanet_5_x0_25", 10)).eval()
    x = torch.randn(2, 3, 32, 32)
    assert float(model.lam) == 1.0 and "lam" in dict(model.named_buffers())
    with torch.no_grad():
        linear = model(x)
        model.change_act(0.0)
        assert float(model.lam) == 0.0
        relu = model(x)
        model.change_act(0.25)
        assert float(model.lam) == 0.25
        quarter = model(x)
        model.change_act(1.0)
        again = model(x)
    assert not torch.allclose(linear, relu) and not torch.allclose(quarter, relu)
    assert torch.equal(again, linear)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="lambda"):
            model.change_act(bad)


# ------------------------------------------------------------------------------------------
# ResNet18
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet18", "resnet18_cifar"])
def test_resnet_shapes(name):
    model = build_model(name, 10, activation="lslu")
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet18", "resnet18_cifar"])
def test_act_everywhere(name):
    blocks = [m for m in build_model(name, 10, activation="lslu", act_everywhere=True).modules()
              if isinstance(m, BasicBlock)]
    assert len(blocks) == 8
    assert all(isinstance(b.act1, LSLU) and isinstance(b.act2, LSLU) for b in blocks)
    plain = build_model(name, 10, activation="lslu")
    assert len(lslu_layers(plain)) == 1  # after the stem only, as in the reference code
    assert all(isinstance(b.act1, nn.ReLU) for b in plain.modules() if isinstance(b, BasicBlock))
    assert len(lslu_layers(build_model(name, 10, activation="lslu", act_everywhere=True))) == 17


def test_block_dropout_is_honoured():
    torch.manual_seed(2)
    x = torch.randn(4, 3, 32, 32)
    model = build_model("resnet18_cifar", 10, activation="relu", drop_rate=0.5)
    assert all(b.dropout.p == 0.5 for b in model.modules() if isinstance(b, BasicBlock))
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))
    no_drop = build_model("resnet18_cifar", 10, activation="relu", drop_rate=0.0).train()
    with torch.no_grad():
        assert torch.equal(no_drop(x), no_drop(x))


def test_vanillanet_dropout_in_head():
    model = build_model("vanillanet_5_x0_25", 10, drop_rate=0.3)
    assert model.dropout.p == 0.3


def _dropout_inputs(model, x):
    """Run ``model(x)`` and return, per dropout module name, (its input, its output)."""
    seen = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, (i[0], o)))
             for n, m in model.named_modules() if isinstance(m, nn.Dropout)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("placement", ["ours", "reference"])
def test_resnet_dropout_placement_acts_where_it_says(placement):
    torch.manual_seed(6)
    model = build_model("resnet18_cifar", 10, activation="relu", drop_rate=0.5,
                        dropout_placement=placement).train()
    block = model.layers[3]
    after = {}
    block.bn2.register_forward_hook(lambda m, i, o: after.__setitem__("bn2", o))
    block.act1.register_forward_hook(lambda m, i, o: after.__setitem__("act1", o))
    seen = _dropout_inputs(model, torch.randn(4, 3, 32, 32))
    block_in, block_out = seen["layers.3.dropout"]
    # the block's dropout reads the BN output (reference) or the activation output (ours)
    assert block_in is after["bn2" if placement == "reference" else "act1"]
    dropped = (block_out == 0) & (block_in != 0)
    assert 0.3 < dropped.sum() / (block_in != 0).sum() < 0.7  # a real mask at p = 0.5
    assert torch.allclose(block_out[~dropped], 2 * block_in[~dropped])
    if placement == "reference":
        head_in, head_out = seen["head_dropout"]
        assert head_in.shape == (4, 512) and bool((head_out[head_in != 0] == 0).any())
    else:
        assert "head_dropout" not in seen  # ours has no dropout before the fc


def test_resnet_reference_dropout_is_identity_in_eval():
    torch.manual_seed(7)
    x = torch.randn(3, 3, 32, 32)
    ref = randomise(build_model("resnet18_cifar", 10, activation="lslu", drop_rate=0.3,
                                dropout_placement="reference"))
    plain = build_model("resnet18_cifar", 10, activation="lslu", drop_rate=0.0)
    plain.load_state_dict(ref.state_dict())  # dropout has no weights: the same state dict
    with torch.no_grad():
        assert torch.equal(ref.eval()(x), plain.eval()(x))


def test_dropout_placement_is_checked():
    with pytest.raises(ValueError, match="dropout_placement.*'after_bn'"):
        build_model("resnet18", 10, dropout_placement="after_bn")


def test_vanillanet_13_x1_5_is_vanillanet_13_one_and_a_half_times_as_wide():
    with torch.device("meta"):  # 237M parameters: only their shapes are looked at
        base = build_model("vanillanet_13", 100, "series")
        wide = build_model("vanillanet_13_x1_5", 100, "series")
    convs = [(a, b) for a, b in zip(base.modules(), wide.modules()) if isinstance(a, nn.Conv2d)]
    assert len(convs) == len([m for m in wide.modules() if isinstance(m, nn.Conv2d)])
    for a, b in convs[:-2]:  # all but the classifier's two convs, which map to the classes
        assert (b.out_channels, b.stride) == (a.out_channels * 3 // 2, a.stride)


@pytest.mark.parametrize("name,size,ok", [("vanillanet_5", 31, False), ("vanillanet_5", 32, True),
                                          ("vanillanet_13_x1_5", 28, False),
                                          ("resnet18", 8, True)])
def test_input_size_the_model_cannot_take(name, size, ok):
    if ok:
        check_input_size(name, size)
        if name == "vanillanet_5":  # the smallest accepted size really runs
            model = build_model("vanillanet_5_x0_25", 10).eval()
            assert model(torch.randn(1, 3, size, size)).shape == (1, 10)
    else:
        with pytest.raises(ValueError, match=f"input_size {size} is too small"):
            check_input_size(name, size)


# ------------------------------------------------------------------------------------------
# every activation in both models
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("name,kwargs", [("vanillanet_5_x0_25", {}),
                                         ("resnet18", {"act_everywhere": True})])
def test_every_activation_forward_backward(name, kwargs, activation):
    torch.manual_seed(3)
    model = build_model(name, 10, activation=activation, **kwargs).train()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and bool(torch.isfinite(out).all())
    nn.functional.cross_entropy(out, torch.tensor([1, 7])).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)


@pytest.mark.parametrize("name", ["vanillanet_5_x0_25", "resnet18", "resnet18_cifar"])
def test_baseline_activation(name):
    """activation=None gives the model's own activation (the big VanillaNets follow the same
    rule; they are not built here to keep the file fast)."""
    model = build_model(name, 10, activation=None)
    assert model.activation == ("series" if name.startswith("vanillanet") else "relu")


# ------------------------------------------------------------------------------------------
# build_model errors
# ------------------------------------------------------------------------------------------
def test_build_model_unknown_model():
    with pytest.raises(ValueError) as err:
        build_model("resnet50", 10)
    assert "'resnet50'" in str(err.value)
    for name in MODELS:
        assert name in str(err.value)


@pytest.mark.parametrize("drop_rate", [-0.1, 1.0, 1.5])
def test_build_model_drop_rate_range(drop_rate):
    with pytest.raises(ValueError, match="drop_rate"):
        build_model("resnet18_cifar", 10, drop_rate=drop_rate)


@pytest.mark.parametrize("act_num", [0, -1, 2.5, True, "3"])
def test_build_model_act_num(act_num):
    with pytest.raises(ValueError, match="act_num"):
        build_model("vanillanet_5_x0_25", 10, act_num=act_num)


def test_build_model_unknown_activation_lists_names():
    with pytest.raises(ValueError) as err:
        build_model("vanillanet_5_x0_25", 10, activation="gelu")
    assert all(name in str(err.value) for name in ACTIVATIONS)


@pytest.mark.parametrize("num_classes", [1, 0, 2.0, True])
def test_build_model_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        build_model("resnet18_cifar", num_classes)


def test_act_everywhere_only_for_resnet():
    with pytest.raises(ValueError, match="act_everywhere"):
        build_model("vanillanet_5_x0_25", 10, act_everywhere=True)


# ------------------------------------------------------------------------------------------
# weight decay groups
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["lslu", "lslu_per_channel"])
@pytest.mark.parametrize("name,kwargs", [("vanillanet_5_x0_25", {}),
                                         ("resnet18", {"act_everywhere": True})])
def test_no_weight_decay_parameters(name, kwargs, activation):
    model = build_model(name, 10, activation=activation, **kwargs)
    skip = set(no_weight_decay_parameters(model))
    params = dict(model.named_parameters())
    thetas = [n for n in params if n.endswith((".theta", ".omega"))]
    assert thetas and set(thetas) <= skip
    if activation == "lslu_per_channel":
        assert all(params[n].ndim == 2 for n in thetas)
    bn = [f"{n}.{leaf}" for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)
          for leaf in ("weight", "bias")]
    assert bn and set(bn) <= skip
    biases = [n for n in params if n.endswith(".bias")]
    assert set(biases) <= skip
    convs = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    convs += [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, SeriesActivation)]
    assert convs and not (set(convs) & skip)
    groups = param_groups(model, 0.05)
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(params)
    assert {id(p) for p in groups[1]["params"]} == {id(params[n]) for n in skip}


# ------------------------------------------------------------------------------------------
# autocast and torch.compile
# ------------------------------------------------------------------------------------------
def test_bf16_autocast_training_step():
    torch.manual_seed(4)
    model = randomise(build_model("vanillanet_5_x0_25", 10, activation="lslu")).train()
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    nn.functional.cross_entropy(out.float(), torch.tensor([0, 3])).backward()
    for layer in lslu_layers(model).values():
        assert layer.theta.grad.dtype == torch.float32
        assert bool(torch.isfinite(layer.theta.grad).all())


# float32 is what training runs; per-channel in float64, where the comparison is exact up to
# rounding (at batch 2 its float32 gradients already differ by ~0.3% between eager and
# aot_eager, i.e. without inductor: BatchNorm over two samples amplifies rounding)
@pytest.mark.parametrize("activation,dtype,rtol,atol", [
    ("lslu", torch.float32, 1e-3, 1e-4),
    ("lslu_per_channel", torch.float64, 1e-7, 1e-12)])
def test_torch_compile_one_step(activation, dtype, rtol, atol):
    """One forward/backward of VanillaNet-5 x0.25 with LSLU as the engine compiles it on the CPU
    (lslu.train.compile_model: inductor, channels_last in the backward graph too, where LSLU's
    backward writes grad_x over the saved activation): the gradients of the eager model."""
    torch.manual_seed(5)
    torch._dynamo.reset()
    cl = torch.channels_last
    model = randomise(build_model("vanillanet_5_x0_25", 10, activation=activation)).train()
    model = model.to(dtype=dtype, memory_format=cl)
    twin = copy.deepcopy(model)
    x = torch.randn(2, 3, 32, 32, dtype=dtype).contiguous(memory_format=cl)
    y = torch.tensor([2, 5])
    compiled = compile_model(model, "cpu", channels_last=True)
    nn.functional.cross_entropy(compiled(x), y).backward()
    nn.functional.cross_entropy(twin(x), y).backward()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=rtol, atol=atol), name

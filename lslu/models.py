"""VanillaNet (5..13, and a x0.25 width variant) and ResNet18, with any activation.

VanillaNet's deep training: each pair of 1x1 convs has a leaky_relu(x, lambda) between them,
(1 - lambda) relu(x) + lambda x, with lambda ramped 0 -> 1 during training. At lambda = 1 the
pair is linear and merges into one conv in deploy. lambda lives in a buffer, so changing it does
not make torch.compile recompile.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .activations import LSLU, _fold_bn, check_activation, make_activation, share_clamp_parameters

__all__ = ["MODELS", "VANILLANET_MODELS", "RESNET_MODELS", "DROPOUT_PLACEMENTS", "build_model",
           "check_input_size", "VanillaNet", "ResNet18", "no_weight_decay_parameters",
           "param_groups", "lslu_layers", "count_parameters"]

# stem width first, then one width per stage; strides per stage
_VANILLA = {
    "vanillanet_5": ([512, 1024, 2048, 4096], [2, 2, 2]),
    "vanillanet_6": ([512, 1024, 2048, 4096, 4096], [2, 2, 2, 1]),
    "vanillanet_7": ([512, 512, 1024, 2048, 4096, 4096], [1, 2, 2, 2, 1]),
    "vanillanet_8": ([512, 512, 1024, 2048, 2048, 4096, 4096], [1, 2, 2, 1, 2, 1]),
    "vanillanet_9": ([512, 512, 1024] + [2048] * 3 + [4096] * 2, [1, 2, 2, 1, 1, 2, 1]),
    "vanillanet_10": ([512, 512, 1024] + [2048] * 4 + [4096] * 2, [1, 2, 2, 1, 1, 1, 2, 1]),
    "vanillanet_11": ([512, 512, 1024] + [2048] * 5 + [4096] * 2, [1, 2, 2, 1, 1, 1, 1, 2, 1]),
    "vanillanet_12": ([512, 512, 1024] + [2048] * 6 + [4096] * 2, [1, 2, 2, 1, 1, 1, 1, 1, 2, 1]),
    "vanillanet_13": ([512, 512, 1024] + [2048] * 7 + [4096] * 2,
                      [1, 2, 2, 1, 1, 1, 1, 1, 1, 2, 1]),
    "vanillanet_5_x0_25": ([128, 256, 512, 1024], [2, 2, 2]),
    # the reference's widest model: vanillanet_13 with every width x1.5
    "vanillanet_13_x1_5": ([768, 768, 1536] + [3072] * 7 + [6144] * 2,
                           [1, 2, 2, 1, 1, 1, 1, 1, 1, 2, 1]),
}

# The activation a model uses when it is not given LSLU: VanillaNet's own series activation,
# ResNet's ReLU. Notebooks compare each model's baseline with LSLU.
BASELINE_ACTIVATION = {name: "series" for name in _VANILLA}
BASELINE_ACTIVATION.update({"resnet18": "relu", "resnet18_cifar": "relu"})
MODELS = tuple(BASELINE_ACTIVATION)
# Each model's family, by which code that holds only a model's name tells the families apart
# (not by the name's prefix): VanillaNet has a deep-training lambda and one dropout, ResNet not.
VANILLANET_MODELS = tuple(_VANILLA)
RESNET_MODELS = ("resnet18", "resnet18_cifar")


def _lambda_relu(x: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    # (1 - lam) relu(x) + lam x: relu at lam=0, identity at lam=1
    return torch.lerp(F.relu(x), x, lam)


def _conv_bn(cin, cout, kernel=1, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride=stride),
                         nn.BatchNorm2d(cout, eps=1e-6))


@torch.no_grad()
def _merge_conv_bn_pair(first: nn.Sequential, second: nn.Module) -> nn.Conv2d:
    """One conv equal to conv+BN -> 1x1 conv(+BN) (eval mode, linear in between)."""
    w1, b1 = _fold_bn(first[0].weight, first[0].bias, first[1])
    if isinstance(second, nn.Sequential):
        w2, b2 = _fold_bn(second[0].weight, second[0].bias, second[1])
    else:
        w2, b2 = second.weight, second.bias
    w2 = w2.flatten(1)  # (cout, cmid)
    conv1 = first[0]
    merged = nn.Conv2d(conv1.in_channels, w2.shape[0], conv1.kernel_size, stride=conv1.stride,
                       padding=conv1.padding, bias=True).to(w1.device, w1.dtype)
    merged.weight.copy_(torch.einsum("om,mikl->oikl", w2, w1))
    merged.bias.copy_(w2 @ b1 + b2)
    return merged


class VanillaBlock(nn.Module):
    def __init__(self, cin, cout, stride, activation, act_num):
        super().__init__()
        self.conv1 = _conv_bn(cin, cin)
        self.conv2 = _conv_bn(cin, cout)
        self.merged = None
        self.pool = nn.MaxPool2d(stride) if stride > 1 else nn.Identity()
        self.act = make_activation(activation, cout, act_num)

    def forward(self, x, lam):
        if self.merged is not None:
            x = self.merged(x)
        else:
            x = self.conv2(_lambda_relu(self.conv1(x), lam))
        return self.act(self.pool(x))

    def switch_to_deploy(self):
        self.merged = _merge_conv_bn_pair(self.conv1, self.conv2)
        del self.conv1, self.conv2


class VanillaNet(nn.Module):
    """VanillaNet with a configurable activation after the stem and after every stage."""

    def __init__(self, dims, strides, num_classes=1000, activation="series", act_num=3,
                 drop_rate=0.0):
        super().__init__()
        self.activation, self.act_num = activation, act_num
        self.stem1 = _conv_bn(3, dims[0], kernel=4, stride=4)
        self.stem2 = _conv_bn(dims[0], dims[0])
        self.stem_merged = None
        self.stem_act = make_activation(activation, dims[0], act_num)
        self.stages = nn.ModuleList(
            VanillaBlock(dims[i], dims[i + 1], strides[i], activation, act_num)
            for i in range(len(strides)))
        self.dropout = nn.Dropout(drop_rate)
        self.cls1 = _conv_bn(dims[-1], num_classes)
        self.cls2 = nn.Conv2d(num_classes, num_classes, 1)
        self.cls_merged = None
        self.register_buffer("lam", torch.tensor(1.0))
        self.deployed = False
        self.apply(self._init_weights)
        share_clamp_parameters(self)  # all LSLU layers' pieces in one call per forward

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def change_act(self, lam: float) -> None:
        """Set the deep-training lambda (0: relu between the conv pairs, 1: linear)."""
        if not 0.0 <= float(lam) <= 1.0:
            raise ValueError(f"lambda must be in [0, 1], got {lam}")
        self.lam.fill_(float(lam))

    def forward(self, x):
        lam = self.lam
        if self.stem_merged is not None:
            x = self.stem_merged(x)
        else:
            x = self.stem2(_lambda_relu(self.stem1(x), lam))
        x = self.stem_act(x)
        for stage in self.stages:
            x = stage(x, lam)
        x = self.dropout(F.adaptive_avg_pool2d(x, 1))
        if self.cls_merged is not None:
            x = self.cls_merged(x)
        else:
            x = self.cls2(_lambda_relu(self.cls1(x), lam))
        return x.flatten(1)

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Merge every conv pair and fold every activation's BN. Exact at lambda = 1 only."""
        if self.deployed:
            return
        if float(self.lam) != 1.0:
            raise ValueError(
                f"switch_to_deploy needs lambda = 1 (the 1x1 conv pairs are only linear then); "
                f"this model has lambda = {float(self.lam):g}. Finish the lambda schedule or "
                f"call model.change_act(1.0) first.")
        self.stem_merged = _merge_conv_bn_pair(self.stem1, self.stem2)
        del self.stem1, self.stem2
        self.cls_merged = _merge_conv_bn_pair(self.cls1, self.cls2)
        del self.cls1, self.cls2
        for stage in self.stages:
            stage.switch_to_deploy()
        for m in self.modules():
            if m is not self and hasattr(m, "switch_to_deploy") and not isinstance(m, VanillaBlock):
                m.switch_to_deploy()
        self.deployed = True

    reparameterize = switch_to_deploy


def check_input_size(name: str, input_size: int) -> None:
    """ValueError unless ``name`` can take input_size x input_size images. A VanillaNet's stem
    (stride 4) and max-pools floor the feature map; it must keep at least 1 pixel to the end.
    ResNet18's padded convs and pool keep >= 1 pixel for any size."""
    if name not in _VANILLA:
        return
    size = input_size // 4
    for stride in _VANILLA[name][1]:
        size //= stride
    if size < 1:
        smallest = 4
        for stride in _VANILLA[name][1]:
            smallest *= stride
        raise ValueError(f"input_size {input_size} is too small for {name}: its stem and "
                         f"max-pools shrink images by {smallest}x; use input_size >= {smallest}")


DROPOUT_PLACEMENTS = ("ours", "reference")


class BasicBlock(nn.Module):
    """conv-BN-act-conv-BN + shortcut, act. ``placement`` says where ``self.dropout`` acts:
    "ours" after the first activation, "reference" (the reference code) after the second BN,
    on the residual branch just before the addition."""

    def __init__(self, cin, cout, stride, activation, act_num, drop_rate, placement="ours"):
        super().__init__()
        self.placement = placement
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = make_activation(activation, cout, act_num)
        self.dropout = nn.Dropout(drop_rate)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))
        self.act2 = make_activation(activation, cout, act_num)

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        if self.placement == "ours":
            out = self.dropout(out)
        out = self.bn2(self.conv2(out))
        if self.placement == "reference":
            out = self.dropout(out)
        return self.act2(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet18. ``activation`` goes after the stem (as in the reference code); with
    ``act_everywhere=True`` it also replaces every ReLU in the blocks. ``cifar_stem`` uses a 3x3
    stride-1 stem without max-pool for 32 px inputs. ``drop_rate`` is a dropout inside each block;
    ``dropout_placement="reference"`` puts it where the reference code has its (fixed 0.05)
    dropout: after each block's second BN, and before the final fc (``self.head_dropout``).
    """

    def __init__(self, num_classes=1000, activation="lslu", act_num=3, drop_rate=0.0,
                 act_everywhere=False, cifar_stem=False, dropout_placement="ours"):
        super().__init__()
        self.activation, self.act_num = activation, act_num
        if cifar_stem:
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                                      make_activation(activation, 64, act_num))
        else:
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                      make_activation(activation, 64, act_num),
                                      nn.MaxPool2d(3, 2, 1))
        block_act = activation if act_everywhere else "relu"
        layers, cin = [], 64
        for cout, stride in [(64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                             (512, 1)]:
            layers.append(BasicBlock(cin, cout, stride, block_act, act_num, drop_rate,
                                     dropout_placement))
            cin = cout
        self.layers = nn.Sequential(*layers)
        # ours has no head dropout; an Identity keeps the forward one line for both placements
        self.head_dropout = (nn.Dropout(drop_rate) if dropout_placement == "reference"
                             else nn.Identity())
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.groups == 1:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        share_clamp_parameters(self)  # all LSLU layers' pieces in one call per forward

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(self.head_dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))

    def change_act(self, lam: float) -> None:
        """ResNet has no deep-training lambda; accepted so one training loop drives both."""

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        for m in self.modules():
            if m is not self and hasattr(m, "switch_to_deploy"):
                m.switch_to_deploy()

    reparameterize = switch_to_deploy


def build_model(name: str, num_classes: int, activation: str | None = "lslu", act_num: int = 3,
                drop_rate: float = 0.0, act_everywhere: bool = False,
                dropout_placement: str = "ours") -> nn.Module:
    """Build a model by name; ``activation=None`` gives the model's baseline activation.

    ``dropout_placement`` (ResNet18): "ours" (inside each block, after the first activation) or
    "reference" (after each block's second BN and before the fc, as the reference code). A
    VanillaNet has one dropout, before its classifier, in both: there the reference's and ours
    are the same place."""
    if dropout_placement not in DROPOUT_PLACEMENTS:
        raise ValueError(f"dropout_placement must be one of {', '.join(DROPOUT_PLACEMENTS)}, "
                         f"got {dropout_placement!r}")
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    activation = BASELINE_ACTIVATION[name] if activation is None else check_activation(activation)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
    if isinstance(act_num, bool) or not isinstance(act_num, int) or act_num < 1:
        raise ValueError(f"act_num must be an integer >= 1, got {act_num!r}")
    if name in VANILLANET_MODELS:
        if act_everywhere:
            raise ValueError("act_everywhere applies to resnet18 models only")
        dims, strides = _VANILLA[name]
        return VanillaNet(dims, strides, num_classes, activation, act_num, drop_rate)
    return ResNet18(num_classes, activation, act_num, drop_rate, act_everywhere,
                    cifar_stem=(name == "resnet18_cifar"), dropout_placement=dropout_placement)


def no_weight_decay_parameters(model: nn.Module) -> list[str]:
    """Names of parameters to keep out of weight decay: 1-D ones (BN, biases, scalar theta/omega),
    PReLU's weight, and those a module names in its ``no_weight_decay()`` (timm's convention: the
    parameters that shape an activation, e.g. LSLU's theta/omega), so that a new activation
    declares its own and no list here needs to know it."""
    names = []
    for module_name, module in model.named_modules():
        own = module.no_weight_decay() if hasattr(module, "no_weight_decay") else set()
        for leaf, p in module.named_parameters(recurse=False):
            if p.ndim <= 1 or leaf in own or isinstance(module, nn.PReLU):
                names.append(f"{module_name}.{leaf}" if module_name else leaf)
    return names


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two optimizer groups: with weight decay, and without (see no_weight_decay_parameters)."""
    skip = set(no_weight_decay_parameters(model))
    decay = [p for n, p in model.named_parameters() if n not in skip and p.requires_grad]
    no_decay = [p for n, p in model.named_parameters() if n in skip and p.requires_grad]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def lslu_layers(model: nn.Module) -> dict:
    """Name -> LSLU module, in forward order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LSLU)}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

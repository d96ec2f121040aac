"""The run configuration: ``TrainConfig``, every knob of a run, its checks and its id.

``validate()`` rejects every bad value before any data is loaded or file touched; ``run_id`` is
the hash of the fields that decide what the run computes (lslu.results keys the store by it).
Kept apart from the training loop (lslu.train) so the chapters can build and compare configs
without reading the loop.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

import torch

from . import data as data_lib
from .activations import ACTIVATIONS
from .models import BASELINE_ACTIVATION, DROPOUT_PLACEMENTS, MODELS, RESNET_MODELS, \
    check_input_size
from .results import config_hash

__all__ = ["TrainConfig", "OPTIMIZERS", "resolve_device"]

OPTIMIZERS = ("lamb", "adamw", "sgd")
# TrainConfig fields that never enter a run id (TrainConfig.identity says why)
_NOT_IDENTITY = ("device",)


@dataclass
class TrainConfig:
    """Every knob of a run. The defaults are a small, quick run on the offline digits data."""
    model: str = "vanillanet_5_x0_25"
    activation: str | None = "lslu"      # None: the model's baseline (series / relu)
    act_num: int = 3                      # n: series length, depthwise kernel 2n+1
    act_everywhere: bool = False          # resnet18: the activation at every ReLU position too
    dataset: str = "digits"
    data_dir: str | None = None
    input_size: int = 32
    val_fraction: float = 0.2
    limit: int | None = None              # keep only this many training images
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.05
    momentum: float = 0.9                 # sgd only
    warmup_epochs: float = 1.0
    min_lr: float = 1e-6
    decay_epochs: int = 0                 # lambda 0 -> 1 over these epochs; 0: lambda = 1 throughout
    drop_rate: float = 0.0
    # resnet18: "ours" (in each block after the first activation) or "reference" (after each
    # block's second BN and before the fc, as the reference code); same place for VanillaNet
    dropout_placement: str = "ours"
    mixup: float = 0.0
    cutmix: float = 0.0
    smoothing: float = 0.0
    bce: bool = False
    rand_augment: str | None = None
    random_erasing: float = 0.0
    crop_padding: int | None = None       # None: stored size // 8
    flip: bool = True
    # "ours": pad-and-crop at the stored size, bilinear resize, the dataset's mean/std.
    # "reference": the reference code's transforms (lslu.data.DeviceLoader says which)
    pipeline: str = "ours"
    lamb_eps: float = 1e-6                # LAMB's eps: timm's default; the reference code 1e-8
    ema_decay: float = 0.0                # 0: no EMA
    amp: bool = True                      # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True
    compile: bool = False
    seed: int = 0
    device: str = "auto"
    patience: int = 0                     # early stopping after this many epochs without gain; 0: off
    freeze_activation: bool = False       # keep theta/omega at their initial values

    def __post_init__(self):
        # 1 and 1.0 are the same setting: store floats as floats so they hash alike
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("float", float) and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, f.name, float(value))

    @classmethod
    def reference_recipe(cls, **overrides) -> "TrainConfig":
        """The reference code's recipe (VanillaNet's ImageNet recipe; paper.md): 224 px, 300
        epochs, LAMB lr 3.5e-3 wd 0.35, 5 warm-up epochs, cosine to 1e-6, dropout 0.05,
        RandAugment, mixup 0.1 / cutmix 1.0, smoothing 0.1, BCE, random erasing 0.25, EMA
        0.99996, lambda over 100 epochs. Effective batch 800. Also the reference's dropout
        placement (ResNet18), its data pipeline (random-resized crops, resize + center crop for
        evaluation, ImageNet mean/std) and LAMB eps 1e-8."""
        recipe = dict(model="vanillanet_5", dataset="cifar100", input_size=224, epochs=300,
                      batch_size=800, optimizer="lamb", lr=3.5e-3, weight_decay=0.35,
                      warmup_epochs=5, min_lr=1e-6, decay_epochs=100, drop_rate=0.05,
                      dropout_placement="reference", pipeline="reference", lamb_eps=1e-8,
                      rand_augment="rand-m7-mstd0.5-inc1", mixup=0.1, cutmix=1.0, smoothing=0.1,
                      bce=True, random_erasing=0.25, ema_decay=0.99996)
        recipe.update(overrides)
        return cls(**recipe)

    def validate(self) -> None:
        """Every bad value raises a clear error here, before any data is loaded or file touched."""
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; valid: {', '.join(MODELS)}")
        if self.activation is not None and self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; valid: "
                             f"{', '.join(ACTIVATIONS)} (or None for the model's baseline)")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        for name in ("epochs", "batch_size", "act_num", "input_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        # every number must be a finite real: NaN passes every comparison below unnoticed
        for name in ("lr", "min_lr", "weight_decay", "momentum", "warmup_epochs", "drop_rate",
                     "mixup", "cutmix", "smoothing", "random_erasing", "ema_decay", "lamb_eps",
                     "val_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                    or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        for name in ("decay_epochs", "patience", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"min_lr must be in [0, lr={self.lr!r}] (the cosine schedule decays "
                             f"from lr to min_lr), got {self.min_lr!r}")
        if self.lamb_eps <= 0:
            raise ValueError(f"lamb_eps must be > 0, got {self.lamb_eps!r}")
        for name in ("weight_decay", "warmup_epochs", "mixup", "cutmix"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("drop_rate", "ema_decay", "momentum", "smoothing", "random_erasing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.dropout_placement not in DROPOUT_PLACEMENTS:
            raise ValueError(f"dropout_placement must be one of {', '.join(DROPOUT_PLACEMENTS)}, "
                             f"got {self.dropout_placement!r}")
        if self.pipeline not in data_lib.PIPELINES:
            raise ValueError(f"pipeline must be one of {', '.join(data_lib.PIPELINES)}, got "
                             f"{self.pipeline!r}")
        if (self.mixup > 0 or self.cutmix > 0) and self.batch_size % 2:
            raise ValueError(f"mixup/cutmix need an even batch_size, got {self.batch_size}")
        if self.act_everywhere and self.model not in RESNET_MODELS:
            raise ValueError("act_everywhere applies to resnet18 models only")
        check_input_size(self.model, self.input_size)
        resolve_device(self.device)
        data_lib.check_dataset_args(self.dataset, self.data_dir, self.input_size,
                                    val_fraction=self.val_fraction)
        if self.limit is not None and (isinstance(self.limit, bool)
                                       or not isinstance(self.limit, int) or self.limit <= 0):
            raise ValueError(f"limit must be a positive integer or None, got {self.limit!r}")
        data_lib.check_loader_args(self.dataset, self.input_size, self.crop_padding,
                                   self.rand_augment, self.pipeline)
        n_train = data_lib.train_set_size(self.dataset, self.data_dir, self.val_fraction,
                                          self.limit)
        if n_train is not None and self.batch_size > n_train:
            raise ValueError(f"batch_size {self.batch_size} is larger than the training set "
                             f"({n_train} images of {self.dataset}); every epoch would be empty")

    @property
    def resolved_activation(self) -> str:
        return self.activation or BASELINE_ACTIVATION[self.model]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity(self) -> dict:
        """The fields that decide what the run computes, for its id (see lslu.results).

        Left out: fields at their default value (a new field whose default keeps the old
        computation then leaves every stored run valid), ``device`` (where it runs, not what;
        the result records the hardware), and ``data_dir`` wherever it only says where the
        same official files are (cifar*, fashion_mnist) or is not used (digits, synthetic).
        For an image folder, the folder's content (a digest of its files) stands in for its
        path, so the same images give the same id on every machine."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        out = {k: v for k, v in self.to_dict().items()
               if k not in _NOT_IDENTITY and v != defaults[k]}
        out.pop("data_dir", None)
        if self.dataset == "imagefolder":
            out["data_content"] = data_lib.imagefolder_digest(self.data_dir)
        return out

    @property
    def run_id(self) -> str:
        return config_hash(self.identity())


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r} (use auto, cpu, cuda, cuda:N)") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but CUDA is not available")
    return dev

"""A loader that makes batches from uint8 datasets on the device, augmenting on the device.

The fast path follows airbench: decode the whole dataset once into a uint8 tensor (N, 3, S, S)
that lives on the training device, then build every batch with a few tensor ops (gather with a
random crop and flip, normalize, upsample). There are no worker processes and no per-image Python
work, so a small model on a GPU is not starved by the data pipeline. CIFAR-10 is 150 MB this way.

    ds = load_dataset("digits")                     # offline default: sklearn's 1,797 8x8 digits
    train = DeviceLoader(ds.train_images, ds.train_labels, 256, ds.mean, ds.std, 32, train=True)
    for epoch in range(epochs):
        train.set_epoch(epoch)                      # new shuffle and crops; forget it => same ones
        for images, labels in train: ...

Images are stored at S = 32 px (CIFAR, digits, synthetic) or at input_size (imagefolder). A
loader with input_size != S resizes each batch on the device (bilinear), so the reference
recipe's 224 px training runs without keeping 224 px copies of CIFAR (7.5 GB) anywhere.

Two parts of the reference recipe are slower by nature and optional: RandAugment (timm's, PIL,
one image at a time on the CPU) and random erasing (timm's, on the device, a Python loop over the
batch). Mixup/CutMix belongs to the trainer, which mixes labels too: see make_mixup.

The datasets themselves are read by lslu.datasets and the image-folder exports written by
lslu.exports; their public names are re-exported here, so `from lslu import data` is the one
import the trainer and the chapters need.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import random

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import Mixup
from timm.data.auto_augment import rand_augment_transform as timm_rand_augment
from timm.data.random_erasing import RandomErasing

from .datasets import (DATASETS, FASHION_MNIST_CLASSES, ImageDataset, _seed_from,
                       check_dataset_args, default_data_dir, fashion_mnist_files, load_dataset,
                       stored_size, train_set_size)
from .exports import export_digits_imagefolder, export_fashion_mnist_imagefolder, imagefolder_digest

__all__ = ["DATASETS", "ImageDataset", "check_dataset_args", "load_dataset", "default_data_dir",
           "stored_size", "train_set_size", "FASHION_MNIST_CLASSES", "fashion_mnist_files",
           "export_digits_imagefolder", "export_fashion_mnist_imagefolder", "imagefolder_digest",
           "PIPELINES", "IMAGENET_MEAN", "IMAGENET_STD", "check_loader_args",
           "rand_augment_transform", "DeviceLoader", "make_mixup"]

# How a batch is made from the stored images (DeviceLoader's docstring has the details):
# "ours" (pad-and-crop at the stored size, bilinear resize, the dataset's own mean/std) or
# "reference" (the reference code's timm/ConvNeXt transforms, ImageNet mean/std).
PIPELINES = ("ours", "reference")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_REFERENCE_CROP_PCT = 0.875  # evaluation: resize to int(input_size / 0.875), center crop


def rand_augment_transform(spec, size, mean):
    """timm's RandAugment for ``spec`` (e.g. "rand-m7-mstd0.5-inc1") on size x size images, set
    up as timm's create_transform does: translations relative to the image, fill with the mean.
    A spec timm cannot parse is a ValueError naming it."""
    hparams = dict(translate_const=int(size * 0.45), interpolation=Image.BICUBIC,
                   img_mean=tuple(min(255, round(255 * m)) for m in mean))
    if not isinstance(spec, str) or not spec.startswith("rand"):
        raise ValueError(f"bad rand_augment {spec!r}: want a timm RandAugment string such as "
                         f"'rand-m7-mstd0.5-inc1'")
    try:
        return timm_rand_augment(spec, hparams)
    except (AssertionError, ValueError, IndexError, KeyError, TypeError) as e:
        raise ValueError(f"bad rand_augment {spec!r} (want e.g. 'rand-m7-mstd0.5-inc1'): "
                         f"{e!r}") from e


def check_loader_args(name, input_size, crop_padding=None, rand_augment=None,
                      pipeline="ours") -> None:
    """ValueError for augmentation settings the DeviceLoader would refuse, before any loading."""
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {', '.join(PIPELINES)}, got {pipeline!r}")
    size = stored_size(name, input_size)
    if crop_padding is not None:
        if isinstance(crop_padding, bool) or not isinstance(crop_padding, numbers.Integral):
            raise ValueError(f"crop_padding must be an integer or None, got {crop_padding!r}")
        if pipeline == "reference":
            raise ValueError(f"crop_padding={crop_padding} applies to pipeline 'ours'; the "
                             f"reference pipeline crops its own way (leave crop_padding None)")
        if not 0 <= crop_padding < size:
            raise ValueError(f"crop_padding must be in [0, {size}) for {name}'s {size} px "
                             f"images, got {crop_padding}")
    if pipeline == "reference" and input_size <= 32 and input_size != size:
        raise ValueError(f"pipeline 'reference' at input_size <= 32 crops without resizing (as "
                         f"the reference code): it needs input_size = {size}, the size {name} "
                         f"is stored at; got {input_size}")
    if rand_augment:
        rand_augment_transform(rand_augment, size, IMAGENET_MEAN)


# ---------------------------------------------------------------------------------------------
# The loader
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _private_global_rng(state, device):
    """Run timm's augmentations on the loader's own RNG streams, so batches are reproducible and
    the caller's global RNGs are left untouched. timm draws from Python's and NumPy's global RNGs
    (RandAugment, erasing boxes) and from torch's on `device` (erasing's pixel noise)."""
    saved = random.getstate(), np.random.get_state()
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    accelerator = device.type != "cpu"
    try:
        with torch.random.fork_rng(devices=[device] if accelerator else [],
                                   device_type=device.type if accelerator else None):
            # seed only this device's generator: torch.manual_seed would reseed every GPU
            seed = random.getrandbits(63)
            torch.random.default_generator.manual_seed(seed)
            if device.type == "cuda":
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(seed)
            elif accelerator:
                torch.get_device_module(device.type).manual_seed(seed)
            yield
    finally:
        state["python"], state["numpy"] = random.getstate(), np.random.get_state()
        random.setstate(saved[0])
        np.random.set_state(saved[1])


def _reflect(index, size):
    # mirror without repeating the edge pixel, as F.pad(mode="reflect"): -1 -> 1, size -> size-2
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


class DeviceLoader:
    """Batches from uint8 tensors already on the device; crop+flip augmentation on the device.

    Each epoch's shuffle, crop offsets and flips are drawn on the CPU from a torch.Generator seeded
    by (seed, epoch), then moved to the device in one go, so the same seed and epoch give the same
    batches on any device. Call set_epoch(epoch) before each epoch (as with DistributedSampler):
    without it every epoch repeats epoch 0.

    train=True: shuffle, random crop (pad by crop_padding, default S // 8, reflect or zeros; 0
        disables), horizontal flip, and optionally
        rand_augment: a timm RandAugment string such as "rand-m7-mstd0.5-inc1" (the reference
            recipe). Slow path: applied per image with PIL on the CPU at the stored size S, after
            the crop and flip; the batch goes to the CPU and back.
        random_erasing: probability of timm's RandomErasing (mode "pixel", as the reference
            recipe), applied on the device to the normalized batch at input_size.
    train=False: no shuffle, no augmentation (the augmentation arguments are ignored), and the
        last partial batch is kept unless drop_last=True.

    pipeline="reference" makes the batches as the reference code's transforms (timm's
    create_transform via ConvNeXt/VanillaNet's build_transform); pass IMAGENET_MEAN/IMAGENET_STD
    as mean/std, as it normalises with them. Above 32 px: train = RandomResizedCrop(input_size,
    scale (0.08, 1), ratio (3/4, 4/3), bicubic) with boxes drawn per image from the epoch's
    generator, then the flip, then RandAugment at input_size; eval = Resize(int(input_size /
    0.875)) + CenterCrop(input_size) (256 -> 224 at 224; a plain resize from 384 px on). The
    crops and resizes are PIL's bicubic done as two small matrix products per image on the
    device (_bicubic_weights). At <= 32 px (the reference's branch for small inputs): train =
    RandomCrop with 4 px of black padding + flip; eval = the image as stored. Not reproduced:
    timm's ColorJitter(0.4), which it adds only when RandAugment is off; and for an image folder
    the crops start from the stored center crop (load_dataset), not the original image.

    With world_size > 1 the (shared) permutation is padded by wrapping around to a multiple of
    world_size and rank r takes every world_size-th index from r, as DistributedSampler does: the
    shards are disjoint up to the padding, and all ranks have the same number of batches. In eval
    this counts up to world_size - 1 images twice.

    Yields (images, labels): images normalized by mean/std (given in [0, 1] units), resized to
    input_size x input_size (bilinear) when that differs from the stored size, in `dtype` and,
    if channels_last, in channels_last memory format; labels int64. Mixup/CutMix is the
    trainer's job (make_mixup), because it changes the labels too.
    """

    def __init__(self, images, labels, batch_size, mean, std, input_size, train: bool, seed=0,
                 drop_last=None, crop_padding=None, flip=True, rank=0, world_size=1,
                 channels_last=False, dtype=torch.float32, rand_augment: str | None = None,
                 random_erasing: float = 0.0, padding_mode="reflect", pipeline="ours"):
        if pipeline not in PIPELINES:
            raise ValueError(f"pipeline must be one of {', '.join(PIPELINES)}, got {pipeline!r}")
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3 \
                or images.shape[2] != images.shape[3]:
            raise ValueError(f"images must be uint8 (N, 3, S, S), got {images.dtype} "
                             f"{tuple(images.shape)}")
        if labels.shape != images.shape[:1] or labels.device != images.device:
            raise ValueError(f"labels must be ({len(images)},) on {images.device}, got "
                             f"{tuple(labels.shape)} on {labels.device}")
        if not isinstance(batch_size, numbers.Integral) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(input_size, numbers.Integral) or input_size <= 0:
            raise ValueError(f"input_size must be a positive int, got {input_size!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, "
                             f"world_size={world_size}")
        if not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        size = images.shape[-1]
        # the reference above 32 px: random-resized crops (train), resize + center crop (eval)
        self.resized_crops = pipeline == "reference" and input_size > 32
        if pipeline == "reference":
            if crop_padding is not None:
                raise ValueError(f"crop_padding={crop_padding} applies to pipeline 'ours'; the "
                                 f"reference pipeline crops its own way (leave it None)")
            if input_size <= 32 and input_size != size:
                raise ValueError(f"pipeline 'reference' at input_size <= 32 crops without "
                                 f"resizing: it needs input_size = {size} (the stored size), "
                                 f"got {input_size}")
            # at <= 32 px the reference's RandomCrop(input_size, padding=4): black padding
            crop_padding = 0 if self.resized_crops else 4
            padding_mode = "zeros"
        crop_padding = size // 8 if crop_padding is None else crop_padding
        if padding_mode not in ("reflect", "zeros"):
            raise ValueError(f"padding_mode must be 'reflect' or 'zeros', got {padding_mode!r}")
        if not 0 <= crop_padding < (size if padding_mode == "reflect" else size + 1):
            raise ValueError(f"crop_padding must be in [0, {size}) for {size} px images, "
                             f"got {crop_padding}")
        if not 0.0 <= random_erasing <= 1.0:
            raise ValueError(f"random_erasing is a probability in [0, 1], got {random_erasing}")

        self.images, self.labels = images, labels
        self.batch_size, self.input_size, self.size = int(batch_size), int(input_size), size
        self.train, self.seed, self.epoch = train, int(seed), 0
        self.drop_last = train if drop_last is None else drop_last
        self.crop_padding = crop_padding if train else 0
        self.flip = flip and train
        self.padding_mode = padding_mode
        self.rank, self.world_size = rank, world_size
        self.channels_last, self.dtype = channels_last, dtype
        device = images.device
        # normalize uint8 directly: (x - 255 mean) / (255 std), one pass over the batch
        self.mean255 = torch.tensor(mean, device=device).float().view(1, 3, 1, 1) * 255
        self.inv_std255 = 1 / (torch.tensor(std, device=device).float().view(1, 3, 1, 1) * 255)

        if self.resized_crops and not train:  # one geometry for every image: computed once
            eval_size = input_size if input_size >= 384 else int(input_size / _REFERENCE_CROP_PCT)
            offset = int(round((eval_size - input_size) / 2.0))  # torchvision's center_crop
            full = _bicubic_weights(torch.zeros(1, device=device), torch.full((1,), size,
                                    device=device), size, eval_size)[0]
            self.eval_weights = full[offset:offset + input_size]

        self.rand_augment = None
        if train and rand_augment:
            # where the batch is when RandAugment runs: after the resized crop in the reference
            # pipeline (as timm's transform order), else at the stored size
            self.rand_augment = rand_augment_transform(
                rand_augment, input_size if self.resized_crops else size, mean)
        self.random_erasing = None
        if train and random_erasing > 0:
            self.random_erasing = RandomErasing(random_erasing, mode="pixel", device=device)

        self.samples_per_rank = math.ceil(len(labels) / world_size)
        if len(self) == 0:
            raise ValueError(f"batch_size {batch_size} is larger than the training set "
                             f"({self.samples_per_rank} images per rank) and drop_last=True "
                             f"leaves no batch")

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        if self.drop_last:
            return self.samples_per_rank // self.batch_size
        return math.ceil(self.samples_per_rank / self.batch_size)

    def __iter__(self):
        n, device = len(self.labels), self.images.device
        total = self.samples_per_rank * self.world_size
        # all ranks draw the same permutation (same seed), then each keeps its own shard
        g = torch.Generator().manual_seed(_seed_from(self.seed, self.epoch))
        order = torch.randperm(n, generator=g) if self.train else torch.arange(n)
        order = order.repeat(math.ceil(total / n))[:total]
        if self.resized_crops and self.train:  # crop boxes in place of the pad-and-crop shifts
            shifts = _random_resized_boxes(total, self.size, g)
        else:
            shifts = torch.randint(0, 2 * self.crop_padding + 1, (total, 2), generator=g)
        flips = torch.rand(total, generator=g) < 0.5
        mine = slice(self.rank, total, self.world_size)
        order, shifts, flips = (t[mine].to(device) for t in (order, shifts, flips))
        # timm's RandAugment and RandomErasing differ per rank; they need not match across ranks
        host_seed = _seed_from(self.seed, self.epoch, self.rank)
        host_rng = dict(python=random.Random(host_seed).getstate(),
                        numpy=np.random.RandomState(host_seed % 2**32).get_state())
        for i in range(len(self)):
            b = slice(i * self.batch_size, (i + 1) * self.batch_size)
            yield self._batch(order[b], shifts[b], flips[b], host_rng)

    def _batch(self, idx, shifts, flips, host_rng):
        S, p = self.size, self.crop_padding
        if self.resized_crops:
            x = self._resized_crops(idx, shifts, flips)
        elif p == 0 and not self.flip:
            x = self.images[idx]
        else:
            # crop and flip as one gather: the source row/column of every output pixel, with
            # positions in the padding mapped back into the image (reflect) or masked (zeros)
            base = torch.arange(S, device=idx.device)
            rows = shifts[:, :1] + base - p  # (B, S)
            cols = shifts[:, 1:] + base - p
            if self.flip:
                cols = torch.where(flips[:, None], cols.flip(1), cols)  # read the window backwards
            if self.padding_mode == "reflect":
                rows, cols = _reflect(rows, S), _reflect(cols, S)
            else:
                inside = ((rows >= 0) & (rows < S))[:, None, :, None] \
                    & ((cols >= 0) & (cols < S))[:, None, None, :]
                rows, cols = rows.clamp(0, S - 1), cols.clamp(0, S - 1)
            channels = torch.arange(3, device=idx.device)[None, :, None, None]
            x = self.images[idx[:, None, None, None], channels, rows[:, None, :, None],
                            cols[:, None, None, :]]
            if self.padding_mode == "zeros":
                x = x * inside

        if self.rand_augment is not None:
            with _private_global_rng(host_rng, x.device):
                hwc = x.permute(0, 2, 3, 1).cpu().numpy()
                out = [np.asarray(self.rand_augment(Image.fromarray(im))) for im in hwc]
            x = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x.device)

        x = x.to(torch.float32)
        if self.channels_last:  # convert at the stored size: cheaper than after upsampling
            x = x.contiguous(memory_format=torch.channels_last)
        x = (x - self.mean255) * self.inv_std255
        if x.shape[-1] != self.input_size:
            # normalizing first is exact (bilinear weights sum to 1) and touches fewer pixels
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=self.input_size < S)
        x = x.to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.random_erasing is not None:
            with _private_global_rng(host_rng, x.device):
                x = self.random_erasing(x)
        return x, self.labels[idx]

    def _resized_crops(self, idx, boxes, flips):
        """The reference pipeline above 32 px, as uint8 (B, 3, input_size, input_size).
        train: each image's box (top, left, h, w) resized to input_size, then flipped;
        eval: resize to int(input_size / 0.875) and center crop input_size (or a plain resize
        from 384 px on). Both as PIL's bicubic does it; see _bicubic_weights."""
        S, out = self.size, self.input_size
        x = self.images[idx].to(torch.float32)
        if self.train:
            top, left, h, w = boxes.unbind(1)
            wy = _bicubic_weights(top, h, S, out)  # (B, out, S)
            wx = _bicubic_weights(left, w, S, out)
            if self.flip:  # a mirrored crop: its output columns in reverse order
                wx = torch.where(flips[:, None, None], wx.flip(1), wx)
        else:
            wy = wx = self.eval_weights[None]
        # PIL resizes rows first and stores that pass as uint8 before resizing columns; rounding
        # and clipping (bicubic overshoots) in between as it does keeps noisy images equal to it
        x = (x @ wx[:, None].transpose(-1, -2)).round_().clamp_(0, 255)
        x = wy[:, None] @ x
        return x.round_().clamp_(0, 255).to(torch.uint8)


def _bicubic_kernel(t):
    # PIL's bicubic (a = -0.5), zero beyond |t| = 2
    a, t = -0.5, t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = (((t - 5) * t + 8) * t - 4) * a
    return torch.where(t < 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def _bicubic_weights(start, length, in_size, out_size):
    """(B, out_size, in_size) matrices M with M @ row = PIL's bicubic resize to out_size pixels
    of row[start : start + length] (crop, then resize, as torchvision's resized_crop on a PIL
    image): kernel centres at (i + 0.5) * length / out_size, the kernel widened by that scale
    when shrinking (antialiasing), and the weights renormalised over the pixels inside the crop.
    Equal to PIL up to PIL's 8-bit rounding between its horizontal and vertical pass (<= 1)."""
    start = start.to(torch.float32)[:, None, None]
    length = length.to(torch.float32)[:, None, None]
    scale = length / out_size
    support = scale.clamp_min(1.0)
    device = start.device
    centre = (torch.arange(out_size, device=device, dtype=torch.float32)[None, :, None] + 0.5) \
        * scale
    pos = torch.arange(in_size, device=device, dtype=torch.float32)[None, None, :] - start
    weights = _bicubic_kernel((pos + 0.5 - centre) / support) * ((pos >= 0) & (pos < length))
    return weights / weights.sum(-1, keepdim=True)


def _random_resized_boxes(n, size, generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                          attempts=10):
    """(n, 4) int64 boxes (top, left, h, w) in a size x size image, drawn as torchvision's
    RandomResizedCrop.get_params (timm's is the same): up to 10 tries of an area fraction in
    ``scale`` and a log-uniform aspect ratio in ``ratio``, the first that fits; else the whole
    (square) image. Vectorised over images and tries."""
    area = size * size
    target = torch.empty(n, attempts).uniform_(scale[0], scale[1], generator=generator) * area
    log_ratio = torch.empty(n, attempts).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                  generator=generator)
    aspect = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(target * aspect))  # round half to even, as Python's round
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= size) & (h > 0) & (h <= size)
    first = fits.to(torch.int8).argmax(1, keepdim=True)  # the first try that fits
    found = fits.any(1)
    w = torch.where(found, w.gather(1, first)[:, 0], float(size)).long()
    h = torch.where(found, h.gather(1, first)[:, 0], float(size)).long()
    u = torch.rand(n, 2, generator=generator)
    top = (u[:, 0] * (size - h + 1)).long()  # uniform over 0 .. size - h
    left = (u[:, 1] * (size - w + 1)).long()
    return torch.stack([top, left, h, w], 1)


def make_mixup(mixup, cutmix, smoothing, num_classes):
    """timm's Mixup/CutMix (per batch, switch probability 0.5, as the reference recipe), or None
    when both alphas are 0; then the trainer applies label smoothing in its loss itself.
    Mixup needs an even batch size: keep drop_last=True with an even batch_size."""
    if mixup <= 0 and cutmix <= 0:
        return None
    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=1.0, switch_prob=0.5, mode="batch",
                 label_smoothing=smoothing, num_classes=num_classes)

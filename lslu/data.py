"""Datasets as uint8 tensors on the device, and a loader that augments on the device.

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
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import numbers
import os
import random
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["DATASETS", "ImageDataset", "check_dataset_args", "load_dataset", "default_data_dir",
           "FASHION_MNIST_CLASSES", "fashion_mnist_files", "export_fashion_mnist_imagefolder",
           "imagefolder_digest",
           "DeviceLoader", "make_mixup"]

DATASETS = ("cifar10", "cifar100", "fashion_mnist", "imagefolder", "digits", "synthetic")

# what torchvision's CIFAR classes download, and where they expect it (the archive goes into
# data_dir, torchvision extracts it into data_dir/<folder>)
_CIFAR = {
    "cifar10": dict(archive="cifar-10-python.tar.gz", folder="cifar-10-batches-py",
                    files=["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                           "data_batch_5", "test_batch", "batches.meta"],
                    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "cifar100": dict(archive="cifar-100-python.tar.gz", folder="cifar-100-python",
                     files=["train", "test", "meta"],
                     url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
}
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_SYNTHETIC = dict(train=50_000, val=10_000, classes=10, size=32)
_DIGITS_COUNT = 1797  # scikit-learn's bundled digits

# How a batch is made from the stored images (DeviceLoader's docstring has the details):
# "ours" (pad-and-crop at the stored size, bilinear resize, the dataset's own mean/std) or
# "reference" (the reference code's timm/ConvNeXt transforms, ImageNet mean/std).
PIPELINES = ("ours", "reference")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_REFERENCE_CROP_PCT = 0.875  # evaluation: resize to int(input_size / 0.875), center crop


# ---------------------------------------------------------------------------------------------
# The dataset: everything the trainer needs, already on the device
# ---------------------------------------------------------------------------------------------
@dataclass
class ImageDataset:
    name: str
    train_images: torch.Tensor  # uint8 (N, 3, S, S), S = stored size
    train_labels: torch.Tensor  # int64 (N,)
    val_images: torch.Tensor
    val_labels: torch.Tensor
    num_classes: int
    classes: list[str]
    mean: tuple[float, float, float]  # per channel, [0, 1] units, from the train split
    std: tuple[float, float, float]
    # whether a horizontal flip keeps the label: not for digits (a mirrored 2, 3, 7 is no digit;
    # flips cost a tiny CNN 10 points of val accuracy after 8 epochs), so a trainer should pass
    # flip=dataset.hflip
    hflip: bool = True
    # how the stored images were made from the source, when that is not obvious (describe())
    source: str = ""

    @property
    def image_size(self) -> int:
        return self.train_images.shape[-1]

    def describe(self) -> str:
        nbytes = self.train_images.numel() + self.val_images.numel()
        return (f"{self.name}: {len(self.train_labels)} train / {len(self.val_labels)} val, "
                f"{self.num_classes} classes, stored {self.image_size}x{self.image_size} uint8 "
                f"({nbytes / 2**20:.1f} MiB on {self.train_images.device})"
                + (f"; {self.source}" if self.source else ""))


def default_data_dir() -> str:
    return os.environ.get("LSLU_DATA_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                            "lslu", "data")


# ---------------------------------------------------------------------------------------------
# Argument checks: every mistake is reported before anything is read, decoded or downloaded
# ---------------------------------------------------------------------------------------------
def check_dataset_args(name, data_dir=None, input_size=32, download=True,
                       val_fraction=0.2) -> None:
    """Raise ValueError / FileNotFoundError naming the problem; does no loading work."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    # bool is an int in Python, but input_size=True is certainly a mistake
    if not isinstance(input_size, numbers.Integral) or isinstance(input_size, bool) \
            or input_size <= 0:
        raise ValueError(f"input_size must be a positive int (32 and 224 are the common ones), "
                         f"got {input_size!r}")
    if not isinstance(val_fraction, numbers.Real) or isinstance(val_fraction, bool) \
            or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be a number strictly between 0 and 1, "
                         f"got {val_fraction!r}")
    if name == "imagefolder":
        _scan_imagefolder(data_dir)  # raises on a missing folder, no classes, no images
    if name == "fashion_mnist" and fashion_mnist_files(data_dir) is None and not download:
        raise FileNotFoundError(_fashion_missing(data_dir))
    if name in _CIFAR and not download:
        spec, root = _CIFAR[name], os.path.expanduser(data_dir or default_data_dir())
        archive = os.path.join(root, spec["archive"])
        if not (_cifar_extracted(name, root) or os.path.isfile(archive)):
            raise FileNotFoundError(
                f"{name} not found in {root} and download=False: put {spec['archive']} "
                f"(from {spec['url']}) into {root} (torchvision extracts it to "
                f"{os.path.join(root, spec['folder'])}), or pass download=True")


def stored_size(name, input_size) -> int:
    """The side of the images load_dataset stores: input_size for an image folder, else 32."""
    return input_size if name == "imagefolder" else 32


def train_set_size(name, data_dir=None, val_fraction=0.2, limit=None) -> int:
    """How many training images load_dataset(name, ...) keeps, without decoding any (an image
    folder is listed). Call check_dataset_args first."""
    if name == "imagefolder":
        _, train_files, val_files = _scan_imagefolder(data_dir)
        n = len(train_files)
        if val_files is None:  # scikit-learn's split: ceil(val_fraction * n) images go to val
            n -= math.ceil(val_fraction * n)
    elif name == "digits":
        n = _DIGITS_COUNT - math.ceil(val_fraction * _DIGITS_COUNT)
    elif name == "fashion_mnist":
        n = _FASHION_COUNTS["train"]
    else:  # cifar10, cifar100 and synthetic have 50,000
        n = _SYNTHETIC["train"]
    return n if limit is None else min(n, limit)


def rand_augment_transform(spec, size, mean):
    """timm's RandAugment for ``spec`` (e.g. "rand-m7-mstd0.5-inc1") on size x size images, set
    up as timm's create_transform does: translations relative to the image, fill with the mean.
    A spec timm cannot parse is a ValueError naming it."""
    from timm.data.auto_augment import rand_augment_transform as timm_rand_augment
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


def _cifar_extracted(name, root) -> bool:
    spec = _CIFAR[name]
    return all(os.path.isfile(os.path.join(root, spec["folder"], f)) for f in spec["files"])


def _scan_imagefolder(data_dir):
    """(classes, train_files, val_files or None); files are (path, label) lists, sorted."""
    if data_dir is None:
        raise ValueError("imagefolder needs data_dir: a folder with one sub-folder per class "
                         "(optionally inside train/ and val/)")
    data_dir = os.path.expanduser(data_dir)
    if not os.path.exists(data_dir):
        raise FileNotFoundError(f"imagefolder: data_dir {data_dir} does not exist")
    if not os.path.isdir(data_dir):
        raise ValueError(f"imagefolder: data_dir {data_dir} is not a folder")
    train_root, val_root = data_dir, None
    if os.path.isdir(os.path.join(data_dir, "train")):
        train_root = os.path.join(data_dir, "train")
        if os.path.isdir(os.path.join(data_dir, "val")):
            val_root = os.path.join(data_dir, "val")

    def class_dirs(root):
        # hidden folders (.ipynb_checkpoints, .git) are never classes
        return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))

    def image_files(root, classes):
        files = []
        for label, cls in enumerate(classes):
            found = []
            for folder, _, names in os.walk(os.path.join(root, cls), followlinks=True):
                found += [os.path.join(folder, n) for n in names
                          if n.lower().endswith(_IMAGE_EXTENSIONS) and not n.startswith(".")]
            if not found:
                raise ValueError(f"imagefolder: class folder {os.path.join(root, cls)} holds no "
                                 f"images ({', '.join(_IMAGE_EXTENSIONS)})")
            files += [(path, label) for path in sorted(found)]
        return files

    classes = class_dirs(train_root)
    if not classes:
        raise ValueError(f"imagefolder: {train_root} has no class sub-folders; expected "
                         f"{train_root}/<class>/<image>")
    train_files = image_files(train_root, classes)
    if len(classes) < 2:  # one class: nothing to classify, and every model needs >= 2 outputs
        raise ValueError(f"imagefolder: {train_root} has only one class sub-folder "
                         f"({classes[0]}); a classifier needs at least 2")
    val_files = None
    if val_root is not None:
        val_classes = class_dirs(val_root)
        unknown = sorted(set(val_classes) - set(classes))
        if unknown:
            raise ValueError(f"imagefolder: {val_root} has classes that train/ lacks: {unknown}")
        # labels follow train/'s class list, so a val/ with fewer classes still lines up
        val_files = [(path, classes.index(val_classes[y]))
                     for path, y in image_files(val_root, val_classes)]
    return classes, train_files, val_files


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
def load_dataset(name, data_dir=None, input_size=32, download=True, val_fraction=0.2, seed=0,
                 device="cpu", limit=None) -> ImageDataset:
    """Load a dataset as uint8 tensors on `device` (mean/std from the train split).

    cifar10, cifar100: torchvision's CIFAR classes (download into data_dir, default $LSLU_DATA_DIR
        or ~/.cache/lslu/data); val is the official test set. Stored at 32 px.
    imagefolder: data_dir/<class>/<image>, or data_dir/train/<class> and data_dir/val/<class>.
        Without val/ a stratified split seeded by `seed` keeps val_fraction of each class. Images
        are converted to RGB, resized (shorter side) and center-cropped to input_size and stored
        at that size: N * 3 * input_size**2 bytes, e.g. 10,000 images take 1.5 GB at 224 px and
        31 MB at 32 px.
    digits: scikit-learn's bundled 1,797 real 8x8 handwritten digits (no download), stratified
        split seeded by `seed`, upsampled once to 32 px (bilinear) and repeated over 3 channels.
        The offline dataset of the project.
    synthetic: uniform random pixels and labels (10 classes, 50,000 train / 10,000 val, 32 px),
        seeded by `seed`. Nothing to learn: it is for measuring throughput only.
    fashion_mnist: Zalando's Fashion-MNIST (60,000 train / 10,000 test 28x28 grey images of
        products, 10 classes), read from its four IDX files (see fashion_mnist_files: data_dir,
        $LSLU_DATA_DIR/fashion-mnist, Debian's dataset-fashion-mnist package), else downloaded
        by torchvision into $LSLU_DATA_DIR. val is the official 10,000-image test set. Each image
        is zero-padded by 2 px to 32x32 (the background is 0) and repeated over 3 channels.

    limit keeps only the first `limit` train images (for quick runs); val is kept whole. For
    fashion_mnist the subset is stratified (each class within one image of its share) and the
    same for every seed and machine; a smaller subset is contained in a larger one.
    """
    check_dataset_args(name, data_dir, input_size, download, val_fraction)
    if limit is not None and (not isinstance(limit, numbers.Integral) or isinstance(limit, bool)
                              or limit <= 0):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")

    if name in _CIFAR:
        root = os.path.expanduser(data_dir or default_data_dir())
        train_x, train_y, val_x, val_y, classes = _load_cifar(name, root, download)
    elif name == "imagefolder":
        train_x, train_y, val_x, val_y, classes = _load_imagefolder(data_dir, input_size,
                                                                    val_fraction, seed, limit)
    elif name == "digits":
        train_x, train_y, val_x, val_y, classes = _load_digits(val_fraction, seed)
    elif name == "fashion_mnist":
        train_x, train_y, val_x, val_y, classes = _load_fashion_mnist(data_dir, download, limit)
    else:
        train_x, train_y, val_x, val_y, classes = _make_synthetic(seed, limit)

    if limit is not None:
        train_x, train_y = train_x[:limit], train_y[:limit]
    mean, std = _channel_stats(train_x)
    return ImageDataset(name=name, train_images=train_x.to(device), train_labels=train_y.to(device),
                        val_images=val_x.to(device), val_labels=val_y.to(device),
                        num_classes=len(classes), classes=list(classes), mean=mean, std=std,
                        hflip=name != "digits", source=_SOURCES.get(name, ""))


def _load_cifar(name, root, download):
    import torchvision  # imported here: torchvision costs a second to import, digits needs none
    spec = _CIFAR[name]
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    # with the archive already in root, torchvision's download step only verifies and extracts it
    # (no network), so an archive put there by hand works with download=False too
    archive = os.path.join(root, spec["archive"])
    help_ = (f"download {spec['url']} by hand and put {spec['archive']} into {root} "
             f"(torchvision extracts it to {os.path.join(root, spec['folder'])} on first use)")
    if not _cifar_extracted(name, root) and os.path.isfile(archive):
        # torchvision would take a damaged archive for a missing one and try the network: check
        # it here, so that the message says what is wrong
        if not torchvision.datasets.utils.check_integrity(archive, cls.tgz_md5):
            raise RuntimeError(f"{name}: the archive {archive} is corrupt (its md5 is not "
                               f"{cls.tgz_md5}); delete it and {help_}")
        download = True
    import tarfile
    import zlib
    try:
        splits = [cls(root=root, train=train, download=download) for train in (True, False)]
    except (tarfile.TarError, EOFError, zlib.error) as e:  # the archive cannot be unpacked
        raise RuntimeError(f"{name}: the archive {archive} is corrupt ({e!r}); delete it and "
                           f"{help_}") from e
    except OSError as e:  # urllib's URLError and socket errors are OSErrors, so are disk errors
        if download:
            raise RuntimeError(f"could not download {name} ({e}); no network? {help_}") from e
        raise RuntimeError(f"could not read {name} from {root} ({e}); {help_}") from e
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted" (md5 mismatch)
        raise RuntimeError(f"{name} files in {root} are missing or corrupted ({e}); {help_}") from e

    def to_tensors(ds):  # ds.data is (N, 32, 32, 3) uint8 HWC
        return (torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(),
                torch.tensor(ds.targets, dtype=torch.int64))

    (train_x, train_y), (val_x, val_y) = map(to_tensors, splits)
    return train_x, train_y, val_x, val_y, splits[0].classes


def _stratified_split(labels, val_fraction, seed, what):
    from sklearn.model_selection import train_test_split
    try:
        train_idx, val_idx = train_test_split(np.arange(len(labels)), test_size=val_fraction,
                                              stratify=labels, random_state=seed)
    except ValueError as e:  # e.g. a class with one image, or fewer val images than classes
        raise ValueError(f"{what}: cannot split {len(labels)} images into a stratified "
                         f"val_fraction={val_fraction} ({e})") from e
    return train_idx, val_idx


def _load_imagefolder(data_dir, size, val_fraction, seed, limit):
    classes, train_files, val_files = _scan_imagefolder(data_dir)
    if val_files is None:
        labels = np.array([y for _, y in train_files])
        train_idx, val_idx = _stratified_split(labels, val_fraction, seed, "imagefolder")
        val_files = [train_files[i] for i in val_idx]
        train_files = [train_files[i] for i in train_idx]
    if limit is not None:
        train_files = train_files[:limit]  # decode only what is kept

    def decode(path):
        try:
            with Image.open(path) as im:
                im.draft("RGB", (size, size))  # JPEG: decode at a reduced scale >= size, faster
                im = im.convert("RGB")
                w, h = im.size
                scale = size / min(w, h)
                nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
                im = im.resize((nw, nh), Image.BICUBIC)  # PIL antialiases when shrinking
                left, top = (nw - size) // 2, (nh - size) // 2
                return np.asarray(im.crop((left, top, left + size, top + size)))
        except OSError as e:
            raise RuntimeError(f"imagefolder: cannot read image {path}: {e}") from e

    def stack(files):
        # PIL releases the GIL while decoding and resizing, so threads use all cores
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            arrays = list(pool.map(decode, [p for p, _ in files]))
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        return images, torch.tensor([y for _, y in files], dtype=torch.int64)

    return (*stack(train_files), *stack(val_files), classes)


def _load_digits(val_fraction, seed):
    from sklearn.datasets import load_digits
    digits = load_digits()  # bundled with scikit-learn: (1797, 8, 8) floats in 0..16
    labels = digits.target.astype(np.int64)
    images = torch.from_numpy(digits.images).float() * (255 / 16)
    # upsample once here, not per batch: 32 px is what the CIFAR models expect
    images = F.interpolate(images[:, None], size=(32, 32), mode="bilinear", align_corners=False)
    images = images.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    train_idx, val_idx = _stratified_split(labels, val_fraction, seed, "digits")
    labels = torch.from_numpy(labels)
    train_idx, val_idx = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    return (images[train_idx], labels[train_idx], images[val_idx], labels[val_idx],
            [str(d) for d in range(10)])


def _make_synthetic(seed, limit):
    k, s = _SYNTHETIC["classes"], _SYNTHETIC["size"]

    def draw(n, split):  # one generator per split: val does not change with limit
        g = torch.Generator().manual_seed(_seed_from(seed, split))
        return (torch.randint(0, 256, (n, 3, s, s), generator=g, dtype=torch.uint8),
                torch.randint(0, k, (n,), generator=g))

    n_train = min(limit or _SYNTHETIC["train"], _SYNTHETIC["train"])
    return (*draw(n_train, 0), *draw(_SYNTHETIC["val"], 1), [f"class_{i}" for i in range(k)])


def _channel_stats(images):
    """Per-channel mean and std over all pixels of a uint8 (N, 3, S, S) tensor, [0, 1] units."""
    # from a 256-bin histogram per channel: exact, and 20x faster than summing float64 copies
    counts = torch.zeros(3, 256, dtype=torch.float64)
    for chunk in images.split(4096):
        for c in range(3):
            counts[c] += torch.bincount(chunk[:, c].flatten(), minlength=256).double()
    value = torch.arange(256, dtype=torch.float64) / 255
    n = counts.sum(1)
    mean = (counts * value).sum(1) / n
    # a constant channel would divide by zero when normalizing; one grey level is a safe floor
    std = ((counts * value.square()).sum(1) / n - mean.square()).clamp_min(0).sqrt()
    std = std.clamp_min(1 / 255)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


# ---------------------------------------------------------------------------------------------
# The loader
# ---------------------------------------------------------------------------------------------
def _seed_from(*keys) -> int:
    # SeedSequence mixes the keys, so (seed, epoch) pairs never share a stream by accident
    a, b = np.random.SeedSequence(list(keys)).generate_state(2)
    return int(a) << 32 | int(b)


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
            from timm.data.random_erasing import RandomErasing
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
    from timm.data import Mixup
    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=1.0, switch_prob=0.5, mode="batch",
                 label_smoothing=smoothing, num_classes=num_classes)


# ---------------------------------------------------------------------------------------------
# An image folder made of real images, for the task-specific chapter's offline default
# ---------------------------------------------------------------------------------------------
_DIGITS_EXPORT_MARKER = ".lslu-digits-export.json"


def _digits_export_complete(folder: str) -> bool:
    """True when ``folder`` holds a finished export: its marker, and every PNG the marker lists."""
    import json
    try:
        with open(os.path.join(folder, _DIGITS_EXPORT_MARKER), encoding="utf-8") as f:
            marker = json.load(f)
        return all(len([n for n in os.listdir(os.path.join(folder, cls)) if n.endswith(".png")])
                   == count for cls, count in marker["per_class"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def export_digits_imagefolder(folder=None) -> str:
    """Write scikit-learn's bundled digits (1,797 real 8x8 grey images, 10 classes) as PNG files,
    ``folder/<digit>/<index>.png``, and return the folder: an image folder for
    ``load_dataset("imagefolder", data_dir=...)`` that needs no download.

    ``folder`` defaults to ``<default_data_dir()>/digits_imagefolder`` ($LSLU_DATA_DIR or
    ~/.cache/lslu/data). The images keep their native 8x8 pixels (grey levels 0..16 scaled to
    0..255); the image-folder loader resizes them to ``input_size``. A complete export (marked by
    a hidden ``.lslu-digits-export.json`` listing the images per class) is reused as it is. A new
    export is written into a hidden temporary folder next to ``folder`` and renamed into place
    only when complete, so an interrupted export is never taken for a finished one. An existing
    ``folder`` that is not a complete export is left untouched and reported (ValueError).
    """
    import json
    import shutil
    import tempfile
    from sklearn.datasets import load_digits

    folder = os.path.abspath(os.path.expanduser(
        folder if folder is not None else os.path.join(default_data_dir(), "digits_imagefolder")))
    if _digits_export_complete(folder):
        return folder
    if os.path.exists(folder) and (not os.path.isdir(folder) or os.listdir(folder)):
        raise ValueError(f"{folder} exists but is not a complete digits export (no "
                         f"{_DIGITS_EXPORT_MARKER}, or images missing); remove it or pick another "
                         f"folder")
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    digits = load_digits()
    pixels = np.clip(np.round(digits.images * (255 / 16)), 0, 255).astype(np.uint8)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(folder)}.", suffix=".tmp")
    try:
        per_class = {}
        for index, (image, label) in enumerate(zip(pixels, digits.target)):
            cls = str(int(label))
            os.makedirs(os.path.join(tmp, cls), exist_ok=True)
            Image.fromarray(image).save(os.path.join(tmp, cls, f"{index:04d}.png"))
            per_class[cls] = per_class.get(cls, 0) + 1
        marker = {"source": "sklearn.datasets.load_digits", "images": int(len(pixels)),
                  "image_size": [8, 8], "per_class": dict(sorted(per_class.items()))}
        with open(os.path.join(tmp, _DIGITS_EXPORT_MARKER), "w", encoding="utf-8") as f:
            json.dump(marker, f, indent=1)
        if os.path.isdir(folder):  # an empty folder (checked above): replace it
            os.rmdir(folder)
        try:
            os.rename(tmp, folder)
        except OSError:
            # another process finished the same export first: use theirs
            if not _digits_export_complete(folder):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST: the four original IDX files, from a folder, Debian's package or a download
# ---------------------------------------------------------------------------------------------
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
_FASHION_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
                  "val_images": "t10k-images-idx3-ubyte", "val_labels": "t10k-labels-idx1-ubyte"}
_FASHION_COUNTS = {"train": 60_000, "val": 10_000}
_FASHION_PACKAGE = "dataset-fashion-mnist"
_FASHION_STANDARD_DIRS = ("/usr/share/datasets/fashion-mnist",)  # Debian's, if dpkg cannot say
_SOURCES = {"fashion_mnist": "28x28 grey zero-padded to 32x32, repeated over 3 channels"}


@functools.lru_cache(maxsize=1)
def _debian_fashion_dirs() -> tuple:
    """Folders where Debian's package put the IDX files (``dpkg -L``), then the standard one."""
    found = []
    try:
        listing = subprocess.run(["dpkg", "-L", _FASHION_PACKAGE], capture_output=True, text=True,
                                 timeout=10, check=False).stdout
        found = sorted({os.path.dirname(line) for line in listing.splitlines()
                        if os.path.basename(line).startswith(_FASHION_FILES["train_images"])})
    except (OSError, subprocess.SubprocessError):  # no dpkg (not Debian): the standard path only
        pass
    return tuple(found) + tuple(d for d in _FASHION_STANDARD_DIRS if d not in found)


def _fashion_candidates(data_dir) -> list[str]:
    if data_dir is not None:  # a folder given on purpose is the only place looked at
        root = os.path.expanduser(data_dir)
        return [root, os.path.join(root, "fashion-mnist"),
                os.path.join(root, "FashionMNIST", "raw")]
    root = default_data_dir()
    return [os.path.join(root, "fashion-mnist"), os.path.join(root, "FashionMNIST", "raw"),
            *_debian_fashion_dirs()]


def fashion_mnist_files(data_dir=None) -> dict | None:
    """{"train_images": path, ...} of the four Fashion-MNIST IDX files (gzip'd or not) in the
    first folder that holds all four, or None. Looked at: with ``data_dir``, that folder, its
    fashion-mnist/ and FashionMNIST/raw/ (torchvision's download); without, $LSLU_DATA_DIR (or
    ~/.cache/lslu/data)/fashion-mnist and /FashionMNIST/raw, then Debian's package folder."""
    for folder in _fashion_candidates(data_dir):
        paths = {}
        for key, stem in _FASHION_FILES.items():
            for name in (stem, stem + ".gz"):
                if os.path.isfile(os.path.join(folder, name)):
                    paths[key] = os.path.join(folder, name)
                    break
        if len(paths) == len(_FASHION_FILES):
            return paths
    return None


def _fashion_missing(data_dir) -> str:
    where = ", ".join(_fashion_candidates(data_dir))
    return (f"fashion_mnist: the four IDX files ({', '.join(_FASHION_FILES.values())}, .gz or "
            f"not) are not in {where}; install them with `apt-get install {_FASHION_PACKAGE}` "
            f"(Debian/Ubuntu), or let torchvision download them (download=True, needs a network)")


def _read_idx(path: str, dims: int, count: int) -> np.ndarray:
    """An IDX file of unsigned bytes (magic 0x0000080<dims>) as a (count, ...) uint8 array."""
    import gzip
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # also a truncated gzip
        raise RuntimeError(f"fashion_mnist: cannot read {path} ({e}); reinstall "
                           f"{_FASHION_PACKAGE} or delete the file to download it again") from e
    header = 4 + 4 * dims
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)) \
        if len(raw) >= header else ()
    expected = {1: (count,), 3: (count, 28, 28)}[dims]
    if magic != 0x800 + dims or shape != expected or len(raw) != header + math.prod(expected):
        raise RuntimeError(f"fashion_mnist: {path} is not the expected IDX file (magic "
                           f"{magic}, shape {shape}, {len(raw)} bytes; want shape {expected}); "
                           f"reinstall {_FASHION_PACKAGE} or replace the file")
    # a copy: torch refuses to share the read-only bytes buffer
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(expected).copy()


def _download_fashion_mnist(root: str):
    import torchvision  # torchvision keeps the original .gz files in root/FashionMNIST/raw
    try:
        for train in (True, False):
            torchvision.datasets.FashionMNIST(root=root, train=train, download=True)
    except (OSError, RuntimeError) as e:  # URLError and socket errors are OSErrors
        raise RuntimeError(f"could not download fashion_mnist into {root} ({e}); "
                           + _fashion_missing(None)) from e


def _fashion_subset_order(labels: np.ndarray) -> np.ndarray:
    """All indices in an order whose every prefix is stratified: each class's images (in an
    order fixed by seed 0) are spread evenly over the sequence, so the first `limit` hold each
    class within one image of its share, for every limit, and a shorter prefix is inside a
    longer one. Independent of the run's seed: every seed trains on the same subset."""
    rng = np.random.default_rng(0)
    keys = np.empty(len(labels))
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        keys[members] = (np.arange(len(members)) + 0.5) / len(members)
    return np.lexsort((labels, keys))  # by position in the class, ties by class


def _load_fashion_mnist(data_dir, download, limit):
    files = fashion_mnist_files(data_dir)
    if files is None:
        if not download:
            raise FileNotFoundError(_fashion_missing(data_dir))
        _download_fashion_mnist(os.path.expanduser(data_dir or default_data_dir()))
        files = fashion_mnist_files(data_dir)
        if files is None:
            raise RuntimeError(_fashion_missing(data_dir))
    train_y = _read_idx(files["train_labels"], 1, _FASHION_COUNTS["train"]).astype(np.int64)
    val_y = _read_idx(files["val_labels"], 1, _FASHION_COUNTS["val"]).astype(np.int64)
    keep = None
    if limit is not None and limit < len(train_y):
        keep = np.sort(_fashion_subset_order(train_y)[:limit])
        train_y = train_y[keep]

    def to_images(array):  # (N, 28, 28) -> (N, 3, 32, 32): pad the black background by 2 px
        x = torch.from_numpy(np.ascontiguousarray(array))
        return F.pad(x, (2, 2, 2, 2))[:, None].expand(-1, 3, -1, -1).contiguous()

    train_x = _read_idx(files["train_images"], 3, _FASHION_COUNTS["train"])
    train_x = to_images(train_x if keep is None else train_x[keep])
    val_x = to_images(_read_idx(files["val_images"], 3, _FASHION_COUNTS["val"]))
    return (train_x, torch.from_numpy(train_y), val_x, torch.from_numpy(val_y),
            list(FASHION_MNIST_CLASSES))


_EXPORT_MARKER = ".lslu-export.json"
_FASHION_FOLDER_NAMES = ("t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                         "sneaker", "bag", "ankle_boot")


def export_fashion_mnist_imagefolder(folder=None, per_class: int = 300, val_per_class: int = 100,
                                     data_dir=None) -> str:
    """Write a Fashion-MNIST subset as PNG files, ``folder/{train,val}/<class>/<index>.png``
    (28x28 grey, as in the IDX files), and return the folder: real photographs of products for
    ``load_dataset("imagefolder", data_dir=...)``. train/ holds ``per_class`` images of each
    class from the training set, val/ ``val_per_class`` from the official test set, the same
    ones on every machine (the stratified order of the ``limit`` subset; index = position in
    the IDX file). Class folders are the class names in lower case (t-shirt_top, trouser, ...).

    ``folder`` defaults to ``<default_data_dir()>/fashion_mnist_imagefolder_<per_class>_
    <val_per_class>``. As export_digits_imagefolder: a complete export (hidden marker listing
    every file) is reused, a new one is written to a temporary folder and renamed into place,
    and an existing folder that is not a complete export of these sizes is reported."""
    import json
    import shutil
    import tempfile
    for name, value, top in (("per_class", per_class, _FASHION_COUNTS["train"] // 10),
                             ("val_per_class", val_per_class, _FASHION_COUNTS["val"] // 10)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
                or not 1 <= value <= top:
            raise ValueError(f"{name} must be an int in [1, {top}], got {value!r}")
    folder = os.path.abspath(os.path.expanduser(folder if folder is not None else os.path.join(
        default_data_dir(), f"fashion_mnist_imagefolder_{per_class}_{val_per_class}")))
    if _export_complete(folder):
        return folder
    if os.path.exists(folder) and (not os.path.isdir(folder) or os.listdir(folder)):
        raise ValueError(f"{folder} exists but is not a complete Fashion-MNIST export (no "
                         f"{_EXPORT_MARKER}, or images missing); remove it or pick another folder")
    files = fashion_mnist_files(data_dir)
    if files is None:
        raise FileNotFoundError(_fashion_missing(data_dir))
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(folder)}.", suffix=".tmp")
    try:
        listing, pixels = {}, hashlib.sha256()
        for split, count, key in (("train", per_class, "train"), ("val", val_per_class, "val")):
            labels = _read_idx(files[f"{key}_labels"], 1, _FASHION_COUNTS[key])
            images = _read_idx(files[f"{key}_images"], 3, _FASHION_COUNTS[key])
            chosen = np.sort(_fashion_subset_order(labels)[:10 * count])
            for index in chosen:
                rel = os.path.join(split, _FASHION_FOLDER_NAMES[labels[index]], f"{index:05d}.png")
                os.makedirs(os.path.dirname(os.path.join(tmp, rel)), exist_ok=True)
                Image.fromarray(images[index]).save(os.path.join(tmp, rel))
                pixels.update(rel.encode() + b"\0" + images[index].tobytes())
                listing[os.path.dirname(rel)] = listing.get(os.path.dirname(rel), 0) + 1
        marker = {"source": "Fashion-MNIST IDX files", "per_class": per_class,
                  "val_per_class": val_per_class, "image_size": [28, 28],
                  "files_per_folder": dict(sorted(listing.items())),
                  # what the images are, whatever the PNG encoder made of them (imagefolder_digest)
                  "pixels_sha256": pixels.hexdigest(), "files_sha256": _folder_bytes_digest(tmp)}
        with open(os.path.join(tmp, _EXPORT_MARKER), "w", encoding="utf-8") as f:
            json.dump(marker, f, indent=1)
        if os.path.isdir(folder):  # an empty folder (checked above): replace it
            os.rmdir(folder)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not _export_complete(folder):  # another process finished the same export first
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _export_complete(folder: str) -> bool:
    import json
    try:
        with open(os.path.join(folder, _EXPORT_MARKER), encoding="utf-8") as f:
            marker = json.load(f)
        return all(len([n for n in os.listdir(os.path.join(folder, d)) if n.endswith(".png")])
                   == count for d, count in marker["files_per_folder"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


_DIGEST_CACHE: dict = {}


def _folder_bytes_digest(data_dir) -> str:
    """sha256 over every image the loader would read (split, class, relative path, bytes)."""
    classes, train_files, val_files = _scan_imagefolder(data_dir)
    entries = [("train", p, y) for p, y in train_files] + [("val", p, y) for p, y in val_files or []]
    stats = tuple((p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for _, p, _ in entries)
    key = (os.path.abspath(data_dir), stats)
    if key not in _DIGEST_CACHE:  # hashing is done once per process while no file changes
        h = hashlib.sha256()
        for split, path, y in entries:
            with open(path, "rb") as f:
                content = hashlib.sha256(f.read()).hexdigest()
            rel = os.path.relpath(path, data_dir).replace(os.sep, "/")
            h.update(f"{split}\0{classes[y]}\0{rel}\0{content}\n".encode())
        _DIGEST_CACHE[key] = h.hexdigest()
    return _DIGEST_CACHE[key]


def imagefolder_digest(data_dir) -> str:
    """16 hex digits naming the content of an image folder (what a run on it learns from, not
    where it lies): a hash of every image file (split, class, relative path, bytes). For an
    untouched export_fashion_mnist_imagefolder, the hash of its pixels recorded at export, so
    exports made on machines whose PNG encoders differ in bytes still get the same digest."""
    import json
    data_dir = os.path.expanduser(data_dir) if data_dir is not None else data_dir
    digest = _folder_bytes_digest(data_dir)
    try:
        with open(os.path.join(data_dir, _EXPORT_MARKER), encoding="utf-8") as f:
            marker = json.load(f)
        if marker.get("files_sha256") == digest:
            digest = marker["pixels_sha256"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return digest[:16]

"""Datasets as uint8 tensors: where each comes from, and how it is read into an ImageDataset.

    ds = load_dataset("digits")    # offline default: sklearn's 1,797 8x8 digits, uint8 (N, 3, 32, 32)

Sources (load_dataset's docstring says how each is stored): CIFAR-10/100, Fashion-MNIST's IDX
files, image folders, digits, synthetic noise. check_dataset_args reports every bad argument before
any work. Batches are made by lslu.data's DeviceLoader; image-folder exports are in lslu.exports.
"""
from __future__ import annotations

import functools
import gzip
import math
import numbers
import os
import subprocess
import tarfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["DATASETS", "ImageDataset", "check_dataset_args", "load_dataset", "default_data_dir",
           "stored_size", "train_set_size", "FASHION_MNIST_CLASSES", "fashion_mnist_files"]

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
    # imported here (as below): scikit-learn costs a second to import; CIFAR with its own test set needs none
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


def _seed_from(*keys) -> int:
    # SeedSequence mixes the keys, so (seed, epoch) pairs never share a stream by accident
    a, b = np.random.SeedSequence(list(keys)).generate_state(2)
    return int(a) << 32 | int(b)


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

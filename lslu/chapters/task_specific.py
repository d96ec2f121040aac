"""Chapter 07 (E6): with and without LSLU on an image folder (the comparison's tables and figures:
lslu.chapters.cifar), what the folder holds, and the LSLU model's confusion matrix."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from .. import data as lslu_data
from ..datasets import _scan_imagefolder, _stratified_split
from ..train import TrainConfig
from .cifar import with_and_without_lslu_configs
from .common import base_from
from .plots import new_axes


def imagefolder_counts(folder, val_fraction: float = 0.2, seed: int = 0) -> pd.DataFrame:
    """Images per class of an image folder as the trainer splits it: folder/train and folder/val
    when both exist, else a stratified split keeping ``val_fraction`` of each class (the same
    split as ``load_dataset("imagefolder", ..., seed=seed)``). Columns class, train, val, total."""
    classes, train_files, val_files = _scan_imagefolder(folder)
    if val_files is None:
        labels = np.array([y for _, y in train_files])
        train_idx, val_idx = _stratified_split(labels, val_fraction, seed, "imagefolder")
        train_labels, val_labels = labels[train_idx], labels[val_idx]
    else:
        train_labels = np.array([y for _, y in train_files])
        val_labels = np.array([y for _, y in val_files])
    k = len(classes)
    table = pd.DataFrame({"class": classes,
                          "train": np.bincount(train_labels, minlength=k),
                          "val": np.bincount(val_labels, minlength=k)})
    table["total"] = table["train"] + table["val"]
    return table


def imagefolder_samples(folder, per_class: int = 6, seed: int = 0, max_classes: int = 20) -> dict:
    """Class name -> up to ``per_class`` images (uint8 arrays, as stored on disk, RGB) drawn with
    ``seed`` from each class of the image folder (its train/ part when it has one); at most
    ``max_classes`` classes, the first ones in sorted order."""
    classes, train_files, _ = _scan_imagefolder(folder)
    rng = np.random.default_rng(seed)
    samples = {}
    for label, name in enumerate(classes[:max_classes]):
        paths = [p for p, y in train_files if y == label]
        chosen = sorted(rng.choice(len(paths), size=min(per_class, len(paths)), replace=False))
        images = []
        for i in chosen:
            with Image.open(paths[i]) as im:
                images.append(np.asarray(im.convert("RGB")))
        samples[name] = images
    return samples


def per_class_accuracy(matrix, classes) -> pd.DataFrame:
    """Per true class: validation images, correctly classified, accuracy in % (1 decimal)."""
    matrix = np.asarray(matrix)
    images = matrix.sum(1)
    correct = np.diag(matrix)
    acc = np.divide(100.0 * correct, images, out=np.full(len(images), np.nan), where=images > 0)
    return pd.DataFrame({"class": list(classes), "val images": images, "correct": correct,
                         "accuracy (%)": np.round(acc, 1)})


def plot_image_grid(samples: dict, max_cols: int | None = None, size: float = 1.1):
    """One row per class, its sample images side by side (``samples``: class name -> list of
    uint8 arrays, e.g. imagefolder_samples); the class name labels each row."""
    rows = list(samples)
    ncols = max(len(v) for v in samples.values()) if samples else 1
    ncols = min(ncols, max_cols) if max_cols else ncols
    fig = Figure(figsize=(size * ncols + 0.6, size * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, name in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(samples[name]):
                ax.imshow(np.asarray(samples[name][c]), interpolation="nearest")
            if c == 0:
                ax.set_ylabel(str(name), rotation=0, ha="right", va="center")
    return fig


def plot_confusion_matrix(matrix, classes, normalize: bool = True, ax=None, title=None):
    """Confusion matrix (rows: true class, columns: predicted class). ``normalize``: each row as
    a share of its true class (in %), so classes of different sizes compare; counts otherwise.
    Cells are annotated when there are at most 20 classes."""
    matrix = np.asarray(matrix, dtype=float)
    k = len(classes)
    shown = matrix
    if normalize:
        totals = matrix.sum(1, keepdims=True)
        shown = np.divide(100 * matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    side = min(9.0, 2.0 + 0.45 * k)
    fig, ax = new_axes(ax, figsize=(side + 1.2, side))
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=100 if normalize else None)
    fig.colorbar(image, ax=ax, shrink=0.8,
                 label="share of the true class (%)" if normalize else "images")
    ticks = np.arange(k)
    ax.set_xticks(ticks, [str(c) for c in classes], rotation=90 if k > 10 else 0)
    ax.set_yticks(ticks, [str(c) for c in classes])
    if k <= 20:
        threshold = shown.max() / 2 if shown.size else 0
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    text = f"{shown[i, j]:.0f}" if normalize else f"{int(matrix[i, j])}"
                    ax.text(j, i, text, ha="center", va="center", fontsize="x-small",
                            color="white" if shown[i, j] > threshold else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title(title)
    return fig


def image_folder_source(image_folder) -> tuple[str, str, dict]:
    """(folder, a sentence naming the data, TrainConfig settings the data needs) for the
    notebook's ``image_folder``: None exports scikit-learn's digits as PNG files (offline),
    "fashion_mnist" a small Fashion-MNIST image folder (lslu.data.export_fashion_mnist_imagefolder).
    """
    if image_folder == "fashion_mnist":
        folder = lslu_data.export_fashion_mnist_imagefolder()
        return (folder, "Fashion-MNIST's product photographs (300 training and 100 test images "
                "per class, from the official splits), written as 28x28 PNG files", {})
    if image_folder is None:
        folder = lslu_data.export_digits_imagefolder()
        return (folder, "offline default: scikit-learn's handwritten digits, written as 8x8 PNG "
                "files", {"flip": False})  # mirrored digits are not digits
    folder = os.path.expanduser(str(image_folder))
    return folder, f"your image folder '{os.path.basename(os.path.normpath(folder))}'", {}


def configs(*, image_folder, models, seeds, extra=None, **settings) -> list[TrainConfig]:
    """The runs of chapter 07: every model with its baseline activation and with LSLU on the image
    folder (image_folder_source), for every seed; ``settings``: the other notebook parameters
    (``epochs``; ``extra`` overrides what the data needs, but not the data itself)."""
    folder, _, needs = image_folder_source(image_folder)
    # the folder wins over a dataset or data_dir in extra: a profile's extra reaches every
    # chapter, and its data folder (for CIFAR, say) is not this chapter's data
    data = {"dataset": "imagefolder", "data_dir": folder}
    base = base_from(settings | {"extra": needs | dict(extra or {}) | data})
    return with_and_without_lslu_configs(base, models, seeds)

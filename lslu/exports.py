"""Image folders made of real images, written once and reused, and the digest naming a folder.

export_digits_imagefolder (scikit-learn's digits, no download) and
export_fashion_mnist_imagefolder (a stratified Fashion-MNIST subset) write
``<folder>/.../<class>/<index>.png`` for ``load_dataset("imagefolder", data_dir=folder)``.
Both go through _write_export: a complete export is reused, a new one is written to a hidden
temporary folder and renamed into place, so an interrupted export is never taken for a finished
one. imagefolder_digest names what a run on an image folder learns from.
"""
from __future__ import annotations

import hashlib
import json
import numbers
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

from .datasets import (_FASHION_COUNTS, _fashion_missing, _fashion_subset_order, _read_idx,
                       _scan_imagefolder, default_data_dir, fashion_mnist_files)

__all__ = ["export_digits_imagefolder", "export_fashion_mnist_imagefolder", "imagefolder_digest"]

_DIGITS_EXPORT_MARKER = ".lslu-digits-export.json"
_EXPORT_MARKER = ".lslu-export.json"
_FASHION_FOLDER_NAMES = ("t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                         "sneaker", "bag", "ankle_boot")


# ---------------------------------------------------------------------------------------------
# What both exports share: reuse a finished one, or write a new one all at once
# ---------------------------------------------------------------------------------------------
def _export_complete(folder: str, marker_name: str, counts_key: str) -> bool:
    """True when ``folder`` holds a finished export: its marker, and every PNG the marker lists
    (marker[counts_key] maps a sub-folder to its number of images)."""
    try:
        with open(os.path.join(folder, marker_name), encoding="utf-8") as f:
            marker = json.load(f)
        return all(len([n for n in os.listdir(os.path.join(folder, d)) if n.endswith(".png")])
                   == count for d, count in marker[counts_key].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _reuse_export(folder: str, marker_name: str, counts_key: str, what: str) -> bool:
    """True for a complete export in ``folder``; False when there is nothing (or an empty folder)
    to write into; ValueError for anything else there, which is left untouched."""
    if _export_complete(folder, marker_name, counts_key):
        return True
    if os.path.exists(folder) and (not os.path.isdir(folder) or os.listdir(folder)):
        raise ValueError(f"{folder} exists but is not a complete {what} export (no "
                         f"{marker_name}, or images missing); remove it or pick another folder")
    return False


def _write_export(folder: str, marker_name: str, counts_key: str, write) -> str:
    """Run ``write(tmp)`` (writes the images, returns the marker dict) in a hidden temporary
    folder next to ``folder``, write the marker, and rename the folder into place."""
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(folder)}.", suffix=".tmp")
    try:
        marker = write(tmp)
        with open(os.path.join(tmp, marker_name), "w", encoding="utf-8") as f:
            json.dump(marker, f, indent=1)
        if os.path.isdir(folder):  # an empty folder (checked by _reuse_export): replace it
            os.rmdir(folder)
        try:
            os.rename(tmp, folder)
        except OSError:
            # another process finished the same export first: use theirs
            if not _export_complete(folder, marker_name, counts_key):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


# ---------------------------------------------------------------------------------------------
# The exports
# ---------------------------------------------------------------------------------------------
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
    folder = os.path.abspath(os.path.expanduser(
        folder if folder is not None else os.path.join(default_data_dir(), "digits_imagefolder")))
    if _reuse_export(folder, _DIGITS_EXPORT_MARKER, "per_class", "digits"):
        return folder

    def write(tmp):
        # imported here: scikit-learn costs a second to import, and only this export needs it
        from sklearn.datasets import load_digits
        digits = load_digits()
        pixels = np.clip(np.round(digits.images * (255 / 16)), 0, 255).astype(np.uint8)
        per_class = {}
        for index, (image, label) in enumerate(zip(pixels, digits.target)):
            cls = str(int(label))
            os.makedirs(os.path.join(tmp, cls), exist_ok=True)
            Image.fromarray(image).save(os.path.join(tmp, cls, f"{index:04d}.png"))
            per_class[cls] = per_class.get(cls, 0) + 1
        return {"source": "sklearn.datasets.load_digits", "images": int(len(pixels)),
                "image_size": [8, 8], "per_class": dict(sorted(per_class.items()))}

    return _write_export(folder, _DIGITS_EXPORT_MARKER, "per_class", write)


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
    for name, value, top in (("per_class", per_class, _FASHION_COUNTS["train"] // 10),
                             ("val_per_class", val_per_class, _FASHION_COUNTS["val"] // 10)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
                or not 1 <= value <= top:
            raise ValueError(f"{name} must be an int in [1, {top}], got {value!r}")
    folder = os.path.abspath(os.path.expanduser(folder if folder is not None else os.path.join(
        default_data_dir(), f"fashion_mnist_imagefolder_{per_class}_{val_per_class}")))
    if _reuse_export(folder, _EXPORT_MARKER, "files_per_folder", "Fashion-MNIST"):
        return folder
    files = fashion_mnist_files(data_dir)
    if files is None:
        raise FileNotFoundError(_fashion_missing(data_dir))

    def write(tmp):
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
        return {"source": "Fashion-MNIST IDX files", "per_class": per_class,
                "val_per_class": val_per_class, "image_size": [28, 28],
                "files_per_folder": dict(sorted(listing.items())),
                # what the images are, whatever the PNG encoder made of them (imagefolder_digest)
                "pixels_sha256": pixels.hexdigest(), "files_sha256": _folder_bytes_digest(tmp)}

    return _write_export(folder, _EXPORT_MARKER, "files_per_folder", write)


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

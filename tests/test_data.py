"""lslu.data: datasets as uint8 tensors, the device loader and its augmentation. CPU, offline, fast.

CIFAR and the image folder are exercised through their real loading code on small generated files;
digits is sklearn's bundled real data.
"""
import os
import pickle
import random
import tarfile
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

from lslu import data, datasets, exports
from lslu.data import DATASETS, DeviceLoader, check_dataset_args, load_dataset, make_mixup


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _denormalize(x, mean, std):
    """Back to uint8 pixel values (the loader's output is (x/255 - mean) / std)."""
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return ((x.float() * s + m) * 255).round().clamp(0, 255).to(torch.uint8)


def _indexed_images(n=40, size=32, seed=0):
    """Random uint8 images whose label is their index, so a batch tells which images it holds."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return images, torch.arange(n)


MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


# ---------------------------------------------------------------------------------------------
# digits: the offline default, real data
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_shapes_split_and_stats(digits):
    ds = digits
    assert ds.name == "digits" and ds.num_classes == 10
    assert ds.classes == [str(i) for i in range(10)]
    assert ds.train_images.dtype == ds.val_images.dtype == torch.uint8
    assert ds.train_images.shape == (1437, 3, 32, 32) and ds.val_images.shape == (360, 3, 32, 32)
    assert ds.train_labels.dtype == torch.int64 and ds.train_labels.shape == (1437,)
    # grey digits: the three channels are the same picture
    assert torch.equal(ds.train_images[:, 0], ds.train_images[:, 2])
    # stratified: every class in val, in about the overall proportion (each class has ~180 images)
    counts = torch.bincount(ds.val_labels, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38
    # mostly black background with white strokes; std well away from 0, no degenerate channel
    assert all(0.2 < m < 0.45 for m in ds.mean) and all(0.25 < s < 0.45 for s in ds.std)
    assert ds.train_images.max() >= 250 and ds.train_images.min() == 0
    assert not ds.hflip  # a mirrored digit is not a digit
    assert "digits" in ds.describe() and "1437 train / 360 val" in ds.describe()


def test_digits_split_follows_seed(digits):
    same = load_dataset("digits", seed=0)
    other = load_dataset("digits", seed=1)
    assert torch.equal(same.train_images, digits.train_images)
    assert torch.equal(same.val_labels, digits.val_labels)
    assert not torch.equal(other.val_images, digits.val_images)
    # the split moves images between train and val: compare as sets of images
    flat = lambda t: {bytes(row) for row in t.flatten(1).numpy()}
    assert flat(other.val_images) != flat(digits.val_images)


def test_digits_limit_and_fraction():
    ds = load_dataset("digits", limit=100, val_fraction=0.5)
    assert len(ds.train_labels) == 100 and len(ds.val_labels) == 899


def test_a_tiny_model_learns_digits(digits):
    # a linear classifier on 8x8 pooled pixels reaches > 90% only if images and labels line up
    ds = digits
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.AvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(192, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    train = DeviceLoader(ds.train_images, ds.train_labels, 64, ds.mean, ds.std, 32, train=True,
                         crop_padding=0, flip=ds.hflip)
    for epoch in range(6):
        train.set_epoch(epoch)
        for x, y in train:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    val = DeviceLoader(ds.val_images, ds.val_labels, 128, ds.mean, ds.std, 32, train=False)
    with torch.no_grad():
        correct = sum((model(x).argmax(1) == y).sum().item() for x, y in val)
    assert correct / len(ds.val_labels) > 0.9


def test_channel_stats_are_exact():
    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    images[:, 2] = 7  # a constant channel gets a floor, not std 0
    mean, std = datasets._channel_stats(images)
    x = images.double() / 255
    torch.testing.assert_close(torch.tensor(mean[:2]), x[:, :2].mean(dim=(0, 2, 3)).float())
    torch.testing.assert_close(torch.tensor(std[:2]),
                               x[:, :2].transpose(0, 1).flatten(1).std(1, correction=0).float())
    assert mean[2] == pytest.approx(7 / 255) and std[2] == pytest.approx(1 / 255)


def test_synthetic():
    ds = load_dataset("synthetic", limit=64, seed=3)
    assert ds.train_images.shape == (64, 3, 32, 32) and ds.val_images.shape == (10_000, 3, 32, 32)
    assert ds.num_classes == 10 and int(ds.train_labels.max()) < 10
    assert all(abs(m - 0.5) < 0.01 for m in ds.mean)  # uniform pixels
    assert torch.equal(load_dataset("synthetic", limit=64, seed=3).train_images, ds.train_images)


# ---------------------------------------------------------------------------------------------
# CIFAR through torchvision's real code path, on small fake files
# ---------------------------------------------------------------------------------------------
def _write_fake_cifar(root, name, per_file=6):
    """Files in the CIFAR python-pickle layout; image i of a file is filled with value i."""
    def batch(n, offset, label_key):
        images = np.repeat((np.arange(n, dtype=np.uint8) + offset)[:, None], 3072, axis=1)
        labels = [(i + offset) % 10 for i in range(n)]
        entry = {"data": images, label_key: labels}
        if label_key == "fine_labels":
            entry["coarse_labels"] = [y // 5 for y in labels]
        return entry

    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        files = {f"data_batch_{k}": batch(per_file, 10 * k, "labels") for k in range(1, 6)}
        files["test_batch"] = batch(per_file, 0, "labels")
        files["batches.meta"] = {"label_names": [f"c10_{i}" for i in range(10)]}
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        files = {"train": batch(5 * per_file, 0, "fine_labels"),
                 "test": batch(per_file, 0, "fine_labels"),
                 "meta": {"fine_label_names": [f"c100_{i}" for i in range(100)],
                          "coarse_label_names": [f"s{i}" for i in range(20)]}}
    for fname, entry in files.items():
        with open(folder / fname, "wb") as f:
            pickle.dump(entry, f)
    return folder


@pytest.fixture
def trust_fake_cifar(monkeypatch):
    # torchvision checks the md5 of every CIFAR file against the real ones, which small fake
    # files cannot match; trusting any file that exists is the only way to run the real loading
    # code offline. Patching the cifar module's check_integrity covers the data files
    # (CIFAR10._check_integrity) and the meta file (_load_meta calls check_integrity directly);
    # the utils module's copy covers the archive.
    def exists(fpath, md5=None):
        return os.path.isfile(fpath)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", exists)
    monkeypatch.setattr(torchvision.datasets.utils, "check_integrity", exists)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_loads_through_torchvision(tmp_path, trust_fake_cifar, name):
    _write_fake_cifar(tmp_path, name)
    ds = load_dataset(name, data_dir=str(tmp_path), download=False)
    assert ds.train_images.shape == (30, 3, 32, 32) and ds.train_images.dtype == torch.uint8
    assert ds.val_images.shape == (6, 3, 32, 32) and ds.val_labels.dtype == torch.int64
    assert ds.num_classes == (10 if name == "cifar10" else 100)
    assert ds.classes[1] == ("c10_1" if name == "cifar10" else "c100_1")
    # HWC -> CHW kept every pixel of an image together with its label
    pixel = ds.train_images[:, :, 0, 0].long()
    assert torch.equal(pixel[:, 0], pixel[:, 2])
    assert torch.equal(ds.train_labels, pixel[:, 0] % 10)
    assert torch.equal(ds.train_images[3],
                       torch.full((3, 32, 32), int(pixel[3, 0]), dtype=torch.uint8))


def test_cifar_archive_put_by_hand_is_extracted_offline(tmp_path, trust_fake_cifar, monkeypatch):
    source = tmp_path / "src"
    folder = _write_fake_cifar(source, "cifar10")
    root = tmp_path / "data"
    root.mkdir()
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    monkeypatch.setattr(torchvision.datasets.utils, "_urlretrieve",
                        lambda *a, **k: pytest.fail("tried the network"))
    ds = load_dataset("cifar10", data_dir=str(root), download=False)
    assert len(ds.train_labels) == 30 and (root / "cifar-10-batches-py" / "test_batch").is_file()


@pytest.mark.parametrize("name,archive", [("cifar10", "cifar-10-python.tar.gz"),
                                          ("cifar100", "cifar-100-python.tar.gz")])
def test_cifar_missing_without_download_names_archive_and_folder(tmp_path, name, archive):
    with pytest.raises(FileNotFoundError) as err:
        check_dataset_args(name, data_dir=str(tmp_path), download=False)
    assert archive in str(err.value) and str(tmp_path) in str(err.value)
    with pytest.raises(FileNotFoundError, match=archive):
        load_dataset(name, data_dir=str(tmp_path), download=False)


@pytest.mark.parametrize("error", [urllib.error.URLError("Name or service not known"),
                                   OSError("Network is unreachable")])
def test_cifar_download_without_network_is_a_clear_error(tmp_path, monkeypatch, error):
    def no_network(*args, **kwargs):
        raise error
    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", no_network)
    with pytest.raises(RuntimeError) as err:
        load_dataset("cifar10", data_dir=str(tmp_path), download=True)
    message = str(err.value)
    assert "could not download" in message and "cifar-10-python.tar.gz" in message
    assert str(tmp_path) in message


def test_default_data_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LSLU_DATA_DIR", str(tmp_path))
    assert data.default_data_dir() == str(tmp_path)
    with pytest.raises(FileNotFoundError, match="cifar-100-python.tar.gz"):
        check_dataset_args("cifar100", download=False)
    monkeypatch.delenv("LSLU_DATA_DIR")
    assert data.default_data_dir().endswith(os.path.join(".cache", "lslu", "data"))


# ---------------------------------------------------------------------------------------------
# imagefolder
# ---------------------------------------------------------------------------------------------
COLOR = {"alpha": 0, "beta": 1, "gamma": 2}  # class index in sorted order = its bright channel


def _write_image_folder(root, per_class=6, classes=("beta", "alpha", "gamma")):
    """Non-square PNGs, bright in the channel COLOR gives, so labels can be checked."""
    rng = np.random.default_rng(0)
    for cls in classes:
        k = COLOR[cls]
        os.makedirs(root / cls, exist_ok=True)
        for i in range(per_class):
            h, w = (40, 24) if i % 2 else (20, 50)
            pixels = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
            pixels[..., k] += 180
            Image.fromarray(pixels).save(root / cls / f"{i}.png")


def _check_labels_match_colors(images, labels):
    assert torch.equal(images.float().mean(dim=(2, 3)).argmax(1), labels)


def test_imagefolder_split(tmp_path):
    _write_image_folder(tmp_path)
    (tmp_path / ".ipynb_checkpoints").mkdir()  # hidden: not a class
    # a grayscale JPEG as well: it must come out RGB
    Image.fromarray(np.full((30, 30), 200, np.uint8)).save(tmp_path / "alpha" / "grey.jpg")
    ds = load_dataset("imagefolder", data_dir=str(tmp_path), input_size=16, val_fraction=0.5)
    assert ds.classes == ["alpha", "beta", "gamma"] and ds.num_classes == 3
    assert ds.train_images.shape[1:] == (3, 16, 16) and ds.train_images.dtype == torch.uint8
    assert len(ds.train_labels) + len(ds.val_labels) == 19
    assert torch.bincount(ds.val_labels, minlength=3).min() >= 3  # stratified
    images = torch.cat([ds.train_images, ds.val_images])
    labels = torch.cat([ds.train_labels, ds.val_labels])
    grey = ((images[:, 0] == images[:, 1]) & (images[:, 1] == images[:, 2])).flatten(1).all(1)
    assert grey.sum() == 1 and labels[grey].item() == 0  # the JPEG, in alpha, as RGB
    _check_labels_match_colors(images[~grey], labels[~grey])
    again = load_dataset("imagefolder", data_dir=str(tmp_path), input_size=16, val_fraction=0.5)
    assert torch.equal(again.val_images, ds.val_images)


def test_imagefolder_train_val_subfolders(tmp_path):
    _write_image_folder(tmp_path / "train", per_class=4)
    _write_image_folder(tmp_path / "val", per_class=2, classes=("gamma", "alpha"))
    ds = load_dataset("imagefolder", data_dir=str(tmp_path), input_size=24)
    assert ds.classes == ["alpha", "beta", "gamma"]
    assert ds.train_images.shape == (12, 3, 24, 24) and ds.val_images.shape == (4, 3, 24, 24)
    _check_labels_match_colors(ds.train_images, ds.train_labels)
    _check_labels_match_colors(ds.val_images, ds.val_labels)  # val labels follow train's classes
    assert sorted(ds.val_labels.tolist()) == [0, 0, 2, 2]


def test_imagefolder_bad_folders_raise_before_reading_any_image(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("decoded an image"))
    with pytest.raises(ValueError, match="needs data_dir"):
        load_dataset("imagefolder")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("imagefolder", data_dir=str(tmp_path / "nowhere"))
    (tmp_path / "loose.png").write_bytes(b"not a class folder")
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_dataset("imagefolder", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="not a folder"):
        load_dataset("imagefolder", data_dir=str(tmp_path / "loose.png"))
    (tmp_path / "cats").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        load_dataset("imagefolder", data_dir=str(tmp_path))


# ---------------------------------------------------------------------------------------------
# every bad argument is named, before any work
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,error,match", [
    (dict(name="imagenet"), ValueError, "unknown dataset 'imagenet'.*cifar10, cifar100, fashion_mnist, imagef"),
    (dict(name="digits", input_size=0), ValueError, "input_size must be a positive int"),
    (dict(name="digits", input_size=-32), ValueError, "input_size"),
    (dict(name="digits", input_size=32.0), ValueError, "input_size"),
    (dict(name="digits", input_size="224"), ValueError, "input_size"),
    (dict(name="digits", input_size=True), ValueError, "input_size"),
    (dict(name="digits", val_fraction=0.0), ValueError, "val_fraction"),
    (dict(name="digits", val_fraction=1.0), ValueError, "val_fraction"),
    (dict(name="digits", val_fraction=-0.1), ValueError, "val_fraction"),
    (dict(name="synthetic", val_fraction=2), ValueError, "val_fraction"),
    (dict(name="imagefolder"), ValueError, "imagefolder needs data_dir"),
])
def test_bad_arguments_are_named_before_any_work(monkeypatch, kwargs, error, match):
    for loader in ("_load_cifar", "_load_imagefolder", "_load_digits", "_make_synthetic"):
        monkeypatch.setattr(datasets, loader, lambda *a, **k: pytest.fail("started loading"))
    with pytest.raises(error, match=match):
        check_dataset_args(**kwargs)
    with pytest.raises(error, match=match):
        load_dataset(**kwargs)


@pytest.mark.parametrize("limit", [0, -5, 2.5, True])
def test_bad_limit(monkeypatch, limit):
    monkeypatch.setattr(datasets, "_load_digits", lambda *a, **k: pytest.fail("started loading"))
    with pytest.raises(ValueError, match="limit must be a positive int"):
        load_dataset("digits", limit=limit)


# ---------------------------------------------------------------------------------------------
# DeviceLoader
# ---------------------------------------------------------------------------------------------
def test_eval_loader_returns_stored_images_in_order():
    images, labels = _indexed_images(n=37)
    loader = DeviceLoader(images, labels, 16, MEAN, STD, 32, train=False)
    assert len(loader) == 3  # keeps the partial batch
    batches = list(loader)
    assert [len(y) for _, y in batches] == [16, 16, 5]
    x = torch.cat([b[0] for b in batches])
    assert x.dtype == torch.float32 and x.shape == (37, 3, 32, 32)
    assert torch.equal(torch.cat([b[1] for b in batches]), labels)
    assert torch.equal(_denormalize(x, MEAN, STD), images)
    # the augmentation arguments do nothing in eval
    other = DeviceLoader(images, labels, 16, MEAN, STD, 32, train=False, crop_padding=4,
                         random_erasing=1.0, rand_augment="rand-m9-n2")
    assert torch.equal(torch.cat([b[0] for b in other]), x)


def test_len_and_drop_last():
    images, labels = _indexed_images(n=100)
    assert len(DeviceLoader(images, labels, 32, MEAN, STD, 32, train=True)) == 3
    assert len(DeviceLoader(images, labels, 32, MEAN, STD, 32, train=True, drop_last=False)) == 4
    assert len(DeviceLoader(images, labels, 32, MEAN, STD, 32, train=False)) == 4
    assert len(DeviceLoader(images, labels, 32, MEAN, STD, 32, train=False, drop_last=True)) == 3
    loader = DeviceLoader(images, labels, 32, MEAN, STD, 32, train=True, drop_last=False)
    assert [len(y) for _, y in loader] == [32, 32, 32, 4]
    assert sorted(torch.cat([y for _, y in loader]).tolist()) == list(range(100))
    with pytest.raises(ValueError, match="larger than the training set"):
        DeviceLoader(images, labels, 128, MEAN, STD, 32, train=True)


def test_upsampled_batches_at_224():
    images, labels = _indexed_images(n=8)
    loader = DeviceLoader(images, labels, 4, MEAN, STD, 224, train=True)
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32 and y.shape == (4,)
    # eval at 224 is the bilinear upsampling of the normalized stored image
    x, y = next(iter(DeviceLoader(images, labels, 4, MEAN, STD, 224, train=False)))
    expected = F.interpolate(_normalize(images[:4]), size=224, mode="bilinear", align_corners=False)
    torch.testing.assert_close(x, expected)


def _normalize(images):
    m = torch.tensor(MEAN).view(1, 3, 1, 1)
    s = torch.tensor(STD).view(1, 3, 1, 1)
    return (images.float() / 255 - m) / s


@pytest.mark.parametrize("padding_mode,pad_mode", [("reflect", "reflect"), ("zeros", "constant")])
def test_train_batches_are_crops_and_flips_of_the_stored_images(padding_mode, pad_mode):
    images, labels = _indexed_images(n=24, size=16)
    p = 3
    loader = DeviceLoader(images, labels, 24, MEAN, STD, 16, train=True, crop_padding=p,
                          padding_mode=padding_mode)
    x, y = next(iter(loader))
    out = _denormalize(x, MEAN, STD)
    assert sorted(y.tolist()) == list(range(24))  # a permutation of the data
    padded = F.pad(images.float(), (p, p, p, p), mode=pad_mode).to(torch.uint8)
    flipped = 0
    for img, i in zip(out, y.tolist()):
        windows = [(padded[i, :, dy:dy + 16, dx:dx + 16], f)
                   for dy in range(2 * p + 1) for dx in range(2 * p + 1) for f in (False, True)]
        matches = [f for w, f in windows if torch.equal(w.flip(-1) if f else w, img)]
        assert matches, f"image {i} is no crop/flip of the stored image"
        flipped += matches[0]
    assert 0 < flipped < 24  # both flipped and unflipped images occur
    assert not torch.equal(out, images[y])  # augmentation changed the batch


def test_set_epoch_is_deterministic():
    images, labels = _indexed_images(n=64)

    def epoch_batches(seed, epoch, **kw):
        loader = DeviceLoader(images, labels, 16, MEAN, STD, 32, train=True, seed=seed, **kw)
        loader.set_epoch(epoch)
        return [b for batch in loader for b in batch]

    def same(a, b):
        return all(torch.equal(u, v) for u, v in zip(a, b))

    assert same(epoch_batches(0, 1), epoch_batches(0, 1))
    assert not same(epoch_batches(0, 1), epoch_batches(0, 2))
    assert not same(epoch_batches(0, 1), epoch_batches(1, 1))
    # without set_epoch a loader repeats itself (as DistributedSampler)
    loader = DeviceLoader(images, labels, 16, MEAN, STD, 32, train=True)
    assert same([b for batch in loader for b in batch], [b for batch in loader for b in batch])


def _shard(images, labels, batch_size, rank, world_size, epoch=0, **kw):
    loader = DeviceLoader(images, labels, batch_size, MEAN, STD, 32, rank=rank,
                          world_size=world_size, **kw)
    loader.set_epoch(epoch)
    return len(loader), torch.cat([y for _, y in loader]).tolist()


def test_two_ranks_take_disjoint_shards():
    images, labels = _indexed_images(n=40)
    (n0, a), (n1, b) = (_shard(images, labels, 8, r, 2, epoch=3, train=True, seed=5)
                        for r in range(2))
    assert n0 == n1 == 2 and len(a) == len(b) == 16 and not set(a) & set(b)
    # drop_last=False: the two shards cover the data exactly
    (_, a), (_, b) = (_shard(images, labels, 8, r, 2, train=True, drop_last=False)
                      for r in range(2))
    assert sorted(a + b) == list(range(40)) and not set(a) & set(b)
    # 10 images on 3 ranks: padded to 12 by wrapping around, every rank has 4, all 10 are seen
    images, labels = _indexed_images(n=10)
    shards = [_shard(images, labels, 4, r, 3, train=False)[1] for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]
    assert sorted(set(sum(shards, []))) == list(range(10))


def test_channels_last_and_dtype():
    images, labels = _indexed_images(n=8)
    for size in (32, 64):
        x, _ = next(iter(DeviceLoader(images, labels, 4, MEAN, STD, size, train=True,
                                      channels_last=True)))
        assert x.is_contiguous(memory_format=torch.channels_last)
    x, _ = next(iter(DeviceLoader(images, labels, 4, MEAN, STD, 32, train=False)))
    assert x.is_contiguous()
    x, _ = next(iter(DeviceLoader(images, labels, 4, MEAN, STD, 32, train=True,
                                  dtype=torch.bfloat16)))
    assert x.dtype == torch.bfloat16


def test_random_erasing_and_rand_augment_run_reproducibly_on_private_rngs():
    images, labels = _indexed_images(n=16)
    random.seed(123)
    np.random.seed(123)
    before = random.random(), np.random.random()
    random.seed(123)
    np.random.seed(123)

    def batch(input_size=32, **kw):
        return next(iter(DeviceLoader(images, labels, 16, MEAN, STD, input_size, train=True, **kw)))

    plain, _ = batch()
    erased, _ = batch(random_erasing=1.0)
    assert erased.shape == plain.shape and not torch.equal(erased, plain)
    assert torch.equal(erased, batch(random_erasing=1.0)[0])
    augmented, _ = batch(rand_augment="rand-m7-mstd0.5-inc1")
    assert augmented.shape == plain.shape and not torch.equal(augmented, plain)
    assert torch.equal(augmented, batch(rand_augment="rand-m7-mstd0.5-inc1")[0])
    both, _ = batch(rand_augment="rand-m7-mstd0.5-inc1", random_erasing=0.25, input_size=64,
                    channels_last=True)
    assert both.shape == (16, 3, 64, 64) and both.is_contiguous(memory_format=torch.channels_last)
    # the caller's global Python and NumPy RNGs were not consumed
    assert (random.random(), np.random.random()) == before


@pytest.mark.parametrize("kwargs,match", [
    (dict(rand_augment="augmix-m5"), "rand_augment"),
    (dict(random_erasing=1.5), "random_erasing"),
    (dict(rank=2, world_size=2), "rank"),
    (dict(crop_padding=32), "crop_padding"),
    (dict(padding_mode="edge"), "padding_mode"),
    (dict(batch_size=0), "batch_size"),
])
def test_loader_bad_arguments(kwargs, match):
    images, labels = _indexed_images(n=8)
    args = dict(batch_size=4, mean=MEAN, std=STD, input_size=32, train=True) | kwargs
    with pytest.raises(ValueError, match=match):
        DeviceLoader(images, labels, **args)
    with pytest.raises(ValueError, match="uint8"):
        DeviceLoader(images.float(), labels, 4, MEAN, STD, 32, train=True)


# ---------------------------------------------------------------------------------------------
# the reference pipeline (timm/ConvNeXt transforms) on the device
# ---------------------------------------------------------------------------------------------
def _pil(image):  # uint8 (3, S, S) -> PIL
    return Image.fromarray(image.permute(1, 2, 0).numpy())


def _from_pil(im):
    return torch.from_numpy(np.array(im)).permute(2, 0, 1).to(torch.int32)


PIXELS = ((0.0,) * 3, (1 / 255,) * 3)  # mean/std that leave pixel values as they are


def test_reference_crop_boxes_follow_random_resized_crop():
    boxes = data._random_resized_boxes(20_000, 32, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.T.double()
    assert bool(((top >= 0) & (left >= 0) & (top + h <= 32) & (left + w <= 32)).all())
    # the drawn area and ratio lie in scale (0.08, 1) / ratio (3/4, 4/3) up to rounding w and h
    assert bool(((w + 0.5) * (h + 0.5) >= 0.08 * 1024).all())
    assert bool(((w - 0.5) * (h - 0.5) <= 1024).all())
    assert bool(((h + 0.5) / (w - 0.5) >= 3 / 4).all() & ((h - 0.5) / (w + 0.5) <= 4 / 3).all())
    # the same distribution as torchvision's RandomResizedCrop.get_params
    import torchvision.transforms as T
    torch.manual_seed(0)
    theirs = torch.tensor([T.RandomResizedCrop.get_params(torch.zeros(3, 32, 32), [0.08, 1.0],
                                                          [3 / 4, 4 / 3]) for _ in range(20_000)],
                          dtype=torch.float64)
    t_top, _, t_h, t_w = theirs.T
    for ours_stat, their_stat in [((h * w).mean() / 1024, (t_h * t_w).mean() / 1024),
                                  ((h / w).log().mean(), (t_h / t_w).log().mean()),
                                  ((top + h / 2).mean(), (t_top + t_h / 2).mean())]:
        assert abs(ours_stat - their_stat) < 0.02 * max(1.0, abs(their_stat))


def test_reference_train_crops_are_pils_bicubic_resized_crops():
    import torchvision.transforms.functional as TF
    images, labels = _indexed_images(n=4)
    loader = DeviceLoader(images, labels, 4, *PIXELS, 224, train=True, pipeline="reference")
    boxes = torch.tensor([[3, 5, 10, 20], [0, 0, 32, 32], [10, 2, 17, 9], [5, 6, 9, 9]])
    flips = torch.tensor([False, True, False, True])
    out = loader._resized_crops(torch.arange(4), boxes, flips).to(torch.int32)
    assert out.shape == (4, 3, 224, 224)
    for i, (t, l, h, w) in enumerate(boxes.tolist()):
        im = TF.resized_crop(_pil(images[i]), t, l, h, w, [224, 224],
                             TF.InterpolationMode.BICUBIC)
        expected = _from_pil(TF.hflip(im) if flips[i] else im)
        assert (out[i] - expected).abs().max() <= 1  # PIL's fixed-point rounding
    # through the loader: 224 px float batches, each image a different crop of its source
    loader.set_epoch(1)
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 255 and torch.equal(x, x.round())


def test_reference_eval_is_resize_256_center_crop_224():
    import torchvision.transforms as T
    ramp = (torch.arange(32) * 8 + 4).to(torch.uint8)  # pixel x has value 8 x + 4
    images = torch.stack([ramp.expand(3, 32, 32), ramp[:, None].expand(3, 32, 32).contiguous()])
    images = torch.cat([images, _indexed_images(n=2)[0]])
    loader = DeviceLoader(images, torch.arange(4), 4, *PIXELS, 224, train=False,
                          pipeline="reference")
    x, _ = next(iter(loader))
    assert x.shape == (4, 3, 224, 224)
    # geometry: 32 -> 256 is 8 output pixels per source pixel, the crop starts at 16, so output
    # column k samples source x = (16 + k + 0.5) / 8 - 0.5, where the ramp is k + 16.5
    k = torch.arange(224, dtype=torch.float32)
    assert (x[0, :, 5, :] - (k + 16.5)).abs().max() <= 0.5 + 1e-4
    assert (x[1, :, :, 5] - (k + 16.5)).abs().max() <= 0.5 + 1e-4
    reference = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC),
                           T.CenterCrop(224)])
    for i in range(4):
        assert (x[i].to(torch.int32) - _from_pil(reference(_pil(images[i])))).abs().max() <= 1


def test_reference_pipeline_at_32_px_is_black_padded_crops_and_the_stored_image():
    images = torch.full((8, 3, 32, 32), 200, dtype=torch.uint8)
    loader = DeviceLoader(images, torch.arange(8), 8, *PIXELS, 32, train=True,
                          pipeline="reference", seed=3)
    x, _ = next(iter(loader))
    border = (x == 0).all(1)  # (B, 32, 32) black padding pixels
    assert bool(border.any()) and not bool(border[:, 4:28, 4:28].any())  # at most 4 px deep
    val = DeviceLoader(images, torch.arange(8), 8, *PIXELS, 32, train=False, pipeline="reference")
    assert torch.equal(next(iter(val))[0], images.float())


def test_training_with_the_reference_pipeline_normalises_with_imagenet_statistics(tmp_path,
                                                                                 monkeypatch):
    import lslu.train as train_mod
    seen = []

    class Stop(Exception):
        pass

    def capture(*args, **kwargs):
        seen.append(kwargs)
        raise Stop

    monkeypatch.setattr(data, "DeviceLoader", capture)
    for pipeline in ("reference", "ours"):
        cfg = train_mod.TrainConfig(limit=64, epochs=1, batch_size=32, pipeline=pipeline)
        with pytest.raises(Stop):
            train_mod.train(cfg, results_dir=tmp_path, progress=False)
    assert (seen[0]["mean"], seen[0]["std"], seen[0]["pipeline"]) == \
        (data.IMAGENET_MEAN, data.IMAGENET_STD, "reference")
    digits_stats = load_dataset("digits", limit=64)
    assert (seen[1]["mean"], seen[1]["std"]) == (digits_stats.mean, digits_stats.std)


@pytest.mark.parametrize("kwargs,match", [
    (dict(crop_padding=40), r"crop_padding must be in \[0, 32\)"),
    (dict(crop_padding=2, pipeline="reference"), "applies to pipeline 'ours'"),
    (dict(rand_augment="rand-x7"), "bad rand_augment 'rand-x7'"),
    (dict(rand_augment="augmix-m5"), "bad rand_augment"),
    (dict(pipeline="timm"), "pipeline must be one of ours, reference"),
    (dict(input_size=28, pipeline="reference"), "needs input_size = 32"),
])
def test_loader_settings_are_checked_before_loading(kwargs, match):
    args = dict(name="cifar10", input_size=32) | kwargs
    with pytest.raises(ValueError, match=match):
        data.check_loader_args(**args)


def test_imagefolder_with_one_class_fails_before_reading_naming_the_folder(tmp_path, monkeypatch):
    _write_image_folder(tmp_path, per_class=3, classes=("alpha",))
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("decoded an image"))
    with pytest.raises(ValueError, match=f"{tmp_path} has only one class"):
        check_dataset_args("imagefolder", data_dir=str(tmp_path))


def test_corrupt_cifar_archive_is_reported_as_corrupt(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets.utils, "_urlretrieve",
                        lambda *a, **k: pytest.fail("tried the network"))
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b not really a tar.gz")
    with pytest.raises(RuntimeError, match="cifar-10-python.tar.gz is corrupt") as err:
        load_dataset("cifar10", data_dir=str(tmp_path), download=False)
    assert "network" not in str(err.value)
    # an archive whose checksum passes but that does not unpack (trusted, as the fakes above)
    monkeypatch.setattr(torchvision.datasets.utils, "check_integrity",
                        lambda fpath, md5=None: os.path.isfile(fpath))
    with pytest.raises(RuntimeError, match="is corrupt"):
        load_dataset("cifar10", data_dir=str(tmp_path), download=True)


def test_make_mixup():
    assert make_mixup(0.0, 0.0, 0.1, 10) is None
    mixup = make_mixup(0.1, 1.0, 0.1, 10)
    x, y = _normalize(_indexed_images(n=8)[0]), torch.arange(8) % 10
    mixed, soft = mixup(x.clone(), y)
    assert mixed.shape == x.shape and soft.shape == (8, 10)
    torch.testing.assert_close(soft.sum(1), torch.ones(8))


def test_dataset_names():
    assert DATASETS == ("cifar10", "cifar100", "fashion_mnist", "imagefolder", "digits",
                        "synthetic")


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST: the real IDX files (Debian's dataset-fashion-mnist, `make fashion-mnist`).
# Never skipped: without the files these tests fail with the install hint.
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fashion_files():
    files = data.fashion_mnist_files()
    assert files is not None, datasets._fashion_missing(None)
    return files


def _torchvision_idx(path, tmp_path):
    """An IDX file through torchvision's own reader (the independent reference), gunzipped."""
    import gzip
    import shutil
    from torchvision.datasets.mnist import read_image_file, read_label_file
    plain = tmp_path / os.path.basename(path).removesuffix(".gz")
    with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as src, \
            open(plain, "wb") as dst:
        shutil.copyfileobj(src, dst)
    reader = read_image_file if "images" in plain.name else read_label_file
    return reader(str(plain))


@pytest.fixture(scope="module")
def fashion_subset(fashion_files, one_thread):
    return load_dataset("fashion_mnist", limit=1000, seed=0)


def test_fashion_mnist_matches_torchvision_reader(fashion_files, fashion_subset, tmp_path):
    # torchvision's own IDX reader is the independent reference for the pixels and labels
    ds = fashion_subset
    assert ds.classes == list(data.FASHION_MNIST_CLASSES) and ds.num_classes == 10
    assert ds.train_images.shape == (1000, 3, 32, 32) and ds.val_images.shape == (10000, 3, 32, 32)
    val = _torchvision_idx(fashion_files["val_images"], tmp_path)
    assert torch.equal(ds.val_images[:, 1, 2:30, 2:30], val)  # the 28x28 image, centred
    assert torch.equal(ds.val_labels, _torchvision_idx(fashion_files["val_labels"], tmp_path).long())
    border = ds.val_images.clone()
    border[:, :, 2:30, 2:30] = 0
    assert border.max() == 0  # the 2 px padding is background (0)
    assert torch.equal(ds.val_images[:, 0], ds.val_images[:, 2])  # grey over 3 channels
    assert ds.hflip and "zero-padded" in ds.describe()
    # every subset image is a training image with its own label
    train = _torchvision_idx(fashion_files["train_images"], tmp_path)
    labels = _torchvision_idx(fashion_files["train_labels"], tmp_path)
    index = {bytes(img.numpy()): int(y) for img, y in zip(train, labels)}
    assert all(index[bytes(img.numpy())] == int(y)
               for img, y in zip(ds.train_images[:, 0, 2:30, 2:30], ds.train_labels))


def test_fashion_mnist_limit_is_stratified_nested_and_seed_free(fashion_files, fashion_subset):
    ds = fashion_subset
    assert np.bincount(ds.train_labels.numpy(), minlength=10).tolist() == [100] * 10
    other_seed = load_dataset("fashion_mnist", limit=1000, seed=3)
    assert torch.equal(other_seed.train_images, ds.train_images)
    small = load_dataset("fashion_mnist", limit=37, seed=0)
    counts = np.bincount(small.train_labels.numpy(), minlength=10)
    assert counts.sum() == 37 and counts.max() - counts.min() <= 1
    big = {bytes(x.numpy()) for x in ds.train_images}
    assert all(bytes(x.numpy()) in big for x in small.train_images)  # nested subsets


def test_fashion_mnist_missing_files_fail_early_with_the_install_hint(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as err:
        check_dataset_args("fashion_mnist", data_dir=str(tmp_path), download=False)
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message and "download" in message
    assert "\n" not in message
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist", data_dir=str(tmp_path), download=False)


def test_fashion_mnist_from_a_data_dir_gzip_or_not_and_corrupt(fashion_files, tmp_path,
                                                                one_thread):
    import gzip
    import shutil
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for key, path in fashion_files.items():
        if key == "val_images":  # one file uncompressed: both forms are read
            with gzip.open(path, "rb") as src, open(folder / "t10k-images-idx3-ubyte", "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            shutil.copy(path, folder / os.path.basename(path))
    assert data.fashion_mnist_files(str(tmp_path))["val_images"].endswith("t10k-images-idx3-ubyte")
    ds = load_dataset("fashion_mnist", data_dir=str(tmp_path), limit=200)
    reference = load_dataset("fashion_mnist", limit=200)
    assert torch.equal(ds.val_images, reference.val_images)
    assert torch.equal(ds.train_images, reference.train_images)
    (folder / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 100)
    with pytest.raises(RuntimeError, match="t10k-images-idx3-ubyte is not the expected IDX"):
        load_dataset("fashion_mnist", data_dir=str(tmp_path), limit=200)


def test_fashion_mnist_imagefolder_export(fashion_files, tmp_path, one_thread):
    folder = data.export_fashion_mnist_imagefolder(str(tmp_path / "fm"), per_class=4,
                                                   val_per_class=2)
    classes, train_files, val_files = datasets._scan_imagefolder(folder)
    assert len(classes) == 10 and len(train_files) == 40 and len(val_files) == 20
    assert np.bincount([y for _, y in train_files]).tolist() == [4] * 10
    images = _torchvision_idx(fashion_files["train_images"], tmp_path).numpy()
    labels = _torchvision_idx(fashion_files["train_labels"], tmp_path).numpy()
    for path, y in train_files:  # pixels as in the IDX file, class folder = its label's name
        index = int(os.path.basename(path)[:-4])
        assert np.array_equal(np.asarray(Image.open(path)), images[index])
        assert classes[y] == exports._FASHION_FOLDER_NAMES[labels[index]]
    # deterministic: a second export elsewhere has the same content digest; reuse is a no-op
    again = data.export_fashion_mnist_imagefolder(str(tmp_path / "fm2"), per_class=4,
                                                  val_per_class=2)
    assert data.imagefolder_digest(again) == data.imagefolder_digest(folder)
    assert data.export_fashion_mnist_imagefolder(folder, per_class=4, val_per_class=2) == folder
    ds = load_dataset("imagefolder", data_dir=folder)
    assert len(ds.train_labels) == 40 and len(ds.val_labels) == 20
    with pytest.raises(ValueError, match="per_class must be an int in"):
        data.export_fashion_mnist_imagefolder(str(tmp_path / "x"), per_class=0)

"""Run identity (config + training semantics version), stored probes, and the store summary."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lslu import data, grid, probes, results
from lslu.models import build_model
from lslu.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(dataset="digits", epochs=1, limit=128, batch_size=64, decay_epochs=0)


# ---------------------------------------------------------------------------------- run identity
def test_equal_configs_equal_ids_and_every_computation_field_counts():
    assert TrainConfig(lr=0.002).run_id == TrainConfig().run_id
    assert TrainConfig(warmup_epochs=1).run_id == TrainConfig(warmup_epochs=1.0).run_id
    changed = dict(model="resnet18", activation="relu", act_num=2, epochs=3, batch_size=32,
                   lr=1e-3, weight_decay=0.01, drop_rate=0.1, seed=1, limit=100, flip=False,
                   smoothing=0.1, freeze_activation=True, dataset="synthetic", input_size=64)
    ids = {TrainConfig(**{k: v}).run_id for k, v in changed.items()}
    assert len(ids) == len(changed) and TrainConfig().run_id not in ids


def test_device_and_unused_data_dir_do_not_change_the_id(tmp_path):
    base = TrainConfig().run_id
    assert TrainConfig(device="cpu").run_id == base
    assert TrainConfig(data_dir=str(tmp_path)).run_id == base  # digits reads no folder
    assert TrainConfig(dataset="fashion_mnist", data_dir=str(tmp_path)).run_id == \
        TrainConfig(dataset="fashion_mnist").run_id  # the same official files, wherever they lie


def _image_folder(root, value):
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            pixels = np.full((8, 8, 3), value + 40 * i + (cls == "b"), dtype=np.uint8)
            from PIL import Image
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    return str(root)


def test_image_folder_id_follows_its_content_not_its_path(tmp_path):
    one = TrainConfig(dataset="imagefolder", data_dir=_image_folder(tmp_path / "x" / "one", 0))
    moved = TrainConfig(dataset="imagefolder", data_dir=_image_folder(tmp_path / "two", 0))
    other = TrainConfig(dataset="imagefolder", data_dir=_image_folder(tmp_path / "three", 5))
    assert one.run_id == moved.run_id != other.run_id
    Path(one.data_dir, "a", "0.png").unlink()  # a changed folder is a different run
    assert TrainConfig(dataset="imagefolder", data_dir=one.data_dir).run_id != moved.run_id


def test_bumping_the_training_semantics_version_changes_every_id(monkeypatch):
    configs = [TrainConfig(), TrainConfig(model="resnet18", seed=2)]
    before = [c.run_id for c in configs]
    monkeypatch.setattr(results, "TRAINING_SEMANTICS_VERSION", results.TRAINING_SEMANTICS_VERSION + 1)
    after = [c.run_id for c in configs]
    assert all(a != b for a, b in zip(before, after))
    with pytest.raises(ValueError, match="version must be a positive int"):
        results.config_hash({}, version=0)


def test_docstring_and_whitespace_edits_keep_run_ids(tmp_path):
    # a copy of the package whose training code differs only in a docstring and blank lines
    # must give the same ids (the old id hashed these files' bytes)
    copy = tmp_path / "lslu"
    shutil.copytree(ROOT / "lslu", copy, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("train.py", "activations.py", "models.py", "data.py"):
        path = copy / name
        text = path.read_text()
        path.write_text('"""An edited docstring."""\n\n\n' + text.split('"""', 2)[2] + "\n\n")
    code = ("import json; from lslu.train import TrainConfig; "
            "print(json.dumps([TrainConfig().run_id, TrainConfig(model='resnet18', seed=3).run_id]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True, env=os.environ | {"PYTHONPATH": str(tmp_path)})
    assert json.loads(out.stdout) == [TrainConfig().run_id,
                                      TrainConfig(model="resnet18", seed=3).run_id]


# ---------------------------------------------------------------------------------- probes
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, one_thread):
    store = tmp_path_factory.mktemp("store")
    return train(TrainConfig(**TINY), results_dir=store, progress=False), store


def _brute_force_index(means):
    # the definition, one unit at a time: (mu_max - mean of the other class means) / (sum)
    out = []
    for unit in means.T:
        top = unit.max()
        rest = (unit.sum() - top) / (len(unit) - 1)
        out.append((top - rest) / (top + rest))
    return np.array(out)


def test_probes_are_stored_with_the_run_and_agree_with_the_metrics(tiny_run):
    result, store = tiny_run
    p = json.loads(results.ResultsStore(store).result_path(result.run_id).read_text())["probes"]
    matrix = np.array(p["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == p["images"] == 360
    assert matrix.trace() / matrix.sum() == pytest.approx(result.final["val_acc"], abs=1e-12)
    model = build_model("vanillanet_5_x0_25", 10, "lslu", 3)
    layers = [name for name, _ in probes.activation_modules(model).items()]
    assert [e["layer"] for e in p["selectivity"]] == layers  # every activation, forward order
    for entry in p["selectivity"]:
        assert {len(entry[k]) for k in probes.PROBE_FIELDS} == {entry["units"]}
        for key in ("si", "si_shuffled", "si_output_shift", "si_output_shift_shuffled"):
            values = [v for v in entry[key] if v is not None]
            assert all(0 <= v <= 1 and round(v, 4) == v for v in values)
    assert results.ResultsStore(store).load(result.run_id).probes == p  # loaded back as stored
    arrays = probes.selectivity_arrays(result)  # the chapters' reading of them
    assert list(arrays) == layers and np.array_equal(probes.confusion_matrix_of(result), matrix)
    first = p["selectivity"][0]
    assert np.isnan(arrays[first["layer"]]["si"]).sum() == first["si"].count(None)
    with pytest.raises(ValueError, match="has no stored probes"):
        probes.selectivity_arrays(results.RunResult(run_id="old", config={}))


def test_probe_selectivity_matches_the_definition(one_thread):
    torch.manual_seed(0)
    model = build_model("vanillanet_5_x0_25", 3, "relu", 3).eval()
    images, labels = torch.randn(12, 3, 32, 32), torch.arange(12) % 3
    loader = [(images[:5], labels[:5]), (images[5:], labels[5:])]
    p = probes.compute_probes(model, loader, ["a", "b", "c"])
    name, module = next(iter(probes.activation_modules(model).items()))
    seen = []
    handle = module.register_forward_hook(lambda m, a, out: seen.append(out.mean((2, 3))))
    with torch.no_grad():
        model(images)
    handle.remove()
    feats = seen[0].double().numpy()
    means = np.stack([feats[labels.numpy() == k].mean(0) for k in range(3)])
    entry = next(e for e in p["selectivity"] if e["layer"] == name)
    expected = _brute_force_index(means)
    got = np.array([np.nan if v is None else v for v in entry["si"]])
    defined = np.isfinite(expected) & (means.min(0) >= 0)
    np.testing.assert_allclose(got[defined], expected[defined], atol=6e-5)
    assert np.isnan(got[~defined]).all()
    shifted = _brute_force_index(means - means.min(0))
    np.testing.assert_allclose(entry["si_output_shift"], np.nan_to_num(shifted), atol=6e-5)
    assert p["confusion_matrix"] == [[int(((labels == t) & (model(images).argmax(1) == q)).sum())
                                      for q in range(3)] for t in range(3)]


def test_probes_of_the_widest_model_stay_small(one_thread):
    model = build_model("vanillanet_5", 10, "lslu", 3).eval()
    loader = [(torch.randn(20, 3, 32, 32), torch.arange(20) % 10)]
    p = probes.compute_probes(model, loader, [str(k) for k in range(10)])
    stored = results.RunResult(run_id="x", config={}, probes=p).to_dict()
    assert len(json.dumps(stored, indent=1, sort_keys=True)) < 700_000  # of the 1 MB per run


# ---------------------------------------------------------------------------------- summary
def test_store_summary_and_cli(tiny_run, monkeypatch, capsys):
    result, store = tiny_run
    asked = [TrainConfig(**TINY), TrainConfig(**TINY, seed=1), TrainConfig(**TINY, act_num=2)]
    registry = {"02_cifar10": lambda **params: asked[:2], "04_num_activations": lambda **p: asked}
    summary = grid.store_summary("smoke", results_dir=store, registry=registry)
    assert summary["asked"] == 3 and summary["runs"] == 1  # shared runs are counted once
    assert [m["run_id"] for m in summary["missing"]] == [asked[1].run_id, asked[2].run_id]
    arms = {a["act_num"]: a for a in summary["arms"]}
    assert arms[3]["seeds"] == 1 and arms[3]["seeds_asked"] == 2 and arms[2]["seeds"] == 0
    assert arms[3]["top1_mean"] == round(100 * result.final["val_acc"], 2)
    assert arms[2]["top1_mean"] is None and arms[3]["activation"] == "lslu"

    from lslu.__main__ import main
    monkeypatch.setattr(grid, "default_registry", lambda: registry)
    assert main(["results", "--profile", "smoke", "--results-dir", str(store), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["runs"] == 1 and len(printed["missing"]) == 2 and len(printed["arms"]) == 2
    assert main(["results", "--profile", "nope", "--results-dir", str(store)]) == 2
    assert "unknown profile 'nope'" in capsys.readouterr().err
    # --complete (what make book checks before rendering committed runs): one line, exit 1
    assert main(["results", "--profile", "smoke", "--results-dir", str(store), "--complete"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 2 of the 3 runs of profile smoke are not stored") and \
        err.count("\n") == 1
    monkeypatch.setattr(grid, "default_registry", lambda: {"02_cifar10": lambda **p: asked[:1]})
    assert main(["results", "--profile", "smoke", "--results-dir", str(store), "--complete"]) == 0
    assert capsys.readouterr() == ("", "")


def test_grid_shards_split_the_runs_without_overlap(tmp_path, capsys):
    asked = [TrainConfig(**TINY, seed=s) for s in range(12)]
    registry = {"02_cifar10": lambda **params: asked}
    listed = []
    for k in range(3):
        grid.train_profile("smoke", results_dir=tmp_path, dry_run=True, registry=registry,
                           shard=(k, 3))
        listed.append({line.split()[0] for line in capsys.readouterr().err.splitlines()
                       if line.startswith("  ")})
    assert set().union(*listed) == {c.run_id for c in asked}
    assert sum(map(len, listed)) == len(asked) and all(listed)  # a partition, no shard empty here
    assert grid.parse_shard("1/3") == (1, 3) and grid.parse_shard(None) is None
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(ValueError, match="--shard"):
            grid.parse_shard(bad)

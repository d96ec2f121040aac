"""The training engine: learning, determinism, resume, the results store, DDP, bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lslu.train as train_mod
from lslu.results import ResultsStore, atomic_write_json
from lslu.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]

# Tiny but real: 256 digits images, enough for the machinery; learning is tested separately.
TINY = dict(dataset="digits", limit=256, epochs=3, batch_size=32, decay_epochs=2)


def _metrics(result):
    return [(h["train_loss"], h["val_loss"], h["val_acc"], h["theta"], h["omega"])
            for h in result.history]


def test_digits_training_learns_well_above_chance(tmp_path):
    result = train(TrainConfig(model="vanillanet_5_x0_25", activation="lslu", epochs=6,
                               decay_epochs=3), results_dir=tmp_path, progress=False)
    assert result.final["val_acc"] > 0.8  # chance is 0.1
    assert len(result.history) == 6
    assert [h["lam"] for h in result.history] == [0.0, 1 / 3, 2 / 3, 1.0, 1.0, 1.0]
    first = result.history[0]["theta"]
    assert set(first) == {"stem_act", "stages.0.act", "stages.1.act", "stages.2.act"}
    assert all(len(v) == 3 for v in first.values())
    assert result.history[-1]["theta"] != first  # learnable theta moved
    assert result.params > result.params_deploy > 0 and result.flops > 0
    assert result.hardware["cpu_count"] >= 1 and result.versions["torch"] == torch.__version__


def test_same_config_and_seed_give_identical_metrics(tmp_path):
    cfg = TrainConfig(**TINY, drop_rate=0.1, mixup=0.2)
    a = train(cfg, results_dir=tmp_path / "a", progress=False)
    b = train(cfg, results_dir=tmp_path / "b", progress=False)
    assert _metrics(a) == _metrics(b)
    c = train(TrainConfig(**(TINY | {"seed": 1}), drop_rate=0.1, mixup=0.2),
              results_dir=tmp_path / "c", progress=False)
    assert _metrics(c) != _metrics(a)


def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    # dropout and mixup draw from the global RNGs: resume must restore them too
    cfg = TrainConfig(**TINY, drop_rate=0.1, mixup=0.2, ema_decay=0.9)
    whole = train(cfg, results_dir=tmp_path / "whole", progress=False)

    def kill_after_second_epoch(epoch, record):
        if epoch == 1:
            raise KeyboardInterrupt

    store = ResultsStore(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, results_dir=store.root, progress=False, on_epoch_end=kill_after_second_epoch)
    assert store.checkpoint_path(cfg.run_id).exists() and not store.has_result(cfg.run_id)
    resumed_epochs = []
    resumed = train(cfg, results_dir=store.root, progress=False,
                    on_epoch_end=lambda e, r: resumed_epochs.append(e))
    assert resumed_epochs == [2]  # only the missing epoch was trained
    assert _metrics(resumed) == _metrics(whole)
    assert resumed.final["val_acc_ema"] == whole.final["val_acc_ema"]
    assert not store.checkpoint_path(cfg.run_id).exists()  # removed once the run finished


def test_finished_run_is_returned_without_training(tmp_path, monkeypatch):
    cfg = TrainConfig(**TINY)
    first = train(cfg, results_dir=tmp_path, progress=False)
    assert not first.cached

    def no_training(*args, **kwargs):
        raise AssertionError("a cached run must not build a model")

    monkeypatch.setattr(train_mod, "build_model", no_training)
    again = train(cfg, results_dir=tmp_path, progress=False)
    assert again.cached and _metrics(again) == _metrics(first)
    with pytest.raises(AssertionError, match="must not build"):
        train(cfg, results_dir=tmp_path, progress=False, force=True)


def test_frozen_activation_parameters_stay_put(tmp_path):
    result = train(TrainConfig(**TINY, freeze_activation=True), results_dir=tmp_path,
                   progress=False)
    assert all(v == [1.0, 1.0, 1.0] for h in result.history for v in h["theta"].values())
    assert all(v == [0.0, 0.0, 0.0] for h in result.history for v in h["omega"].values())


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = TrainConfig(**TINY)
    store = ResultsStore(tmp_path)

    def poison(epoch, record):
        if epoch == 0:
            raise _Poison

    class _Poison(Exception):
        pass

    # first call: one good epoch, then "crash" so that a checkpoint of epoch 1 exists
    with pytest.raises(_Poison):
        train(cfg, results_dir=tmp_path, progress=False, on_epoch_end=poison)
    ckpt = store.checkpoint_path(cfg.run_id)
    good = ckpt.read_bytes()
    original_build = train_mod.build_model

    def build_nan_model(*args, **kwargs):
        model = original_build(*args, **kwargs)
        model.load_state_dict = _loads_then_poisons(model)
        return model

    def _loads_then_poisons(model):
        load = model.load_state_dict

        def wrapped(state, *a, **k):
            out = load(state, *a, **k)
            with torch.no_grad():
                model.cls2.weight.fill_(float("nan"))
            return out
        return wrapped

    train_mod.build_model = build_nan_model
    try:
        with pytest.raises(FloatingPointError, match="last good checkpoint"):
            train(cfg, results_dir=tmp_path, progress=False)
    finally:
        train_mod.build_model = original_build
    assert ckpt.read_bytes() == good and not store.has_result(cfg.run_id)


@pytest.mark.parametrize("overrides, message", [
    ({"dataset": "imagenet"}, "unknown dataset"),
    ({"model": "vgg16"}, "unknown model"),
    ({"activation": "gelu"}, "unknown activation"),
    ({"optimizer": "adam"}, "unknown optimizer"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"batch_size": -4}, "batch_size must be a positive integer"),
    ({"act_num": 0}, "act_num must be a positive integer"),
    ({"drop_rate": 1.0}, "drop_rate must be in"),
    ({"drop_rate": 1.5}, "drop_rate must be in"),
    ({"dataset": "imagefolder", "data_dir": "no/such/folder"}, "folder"),
])
def test_bad_input_fails_before_any_work(tmp_path, monkeypatch, overrides, message):
    monkeypatch.setattr(train_mod, "_load_data", lambda *a: pytest.fail("data was loaded"))
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        train(TrainConfig(**overrides), results_dir=tmp_path, progress=False)
    assert not any(tmp_path.iterdir())  # nothing written


def test_unreadable_result_or_checkpoint_is_reported_and_left_untouched(tmp_path):
    cfg = TrainConfig(**TINY)
    store = ResultsStore(tmp_path)
    store.result_path(cfg.run_id).parent.mkdir(parents=True)
    store.result_path(cfg.run_id).write_text("{not json")
    with pytest.raises(RuntimeError, match="cannot be read"):
        train(cfg, results_dir=tmp_path, progress=False)
    assert store.result_path(cfg.run_id).read_text() == "{not json"

    store.result_path(cfg.run_id).unlink()
    store.checkpoint_path(cfg.run_id).parent.mkdir(parents=True)
    store.checkpoint_path(cfg.run_id).write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="cannot be read"):
        train(cfg, results_dir=tmp_path, progress=False)
    assert store.checkpoint_path(cfg.run_id).read_bytes() == b"garbage"


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"v": 1})

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        atomic_write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left


def test_run_id_depends_on_config_and_code():
    a, b = TrainConfig(seed=0), TrainConfig(seed=1)
    assert a.run_id != b.run_id and a.run_id == TrainConfig(seed=0).run_id


def test_reference_recipe_matches_the_paper():
    cfg = TrainConfig.reference_recipe()
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.epochs, cfg.input_size) == \
        ("lamb", 3.5e-3, 0.35, 300, 224)
    assert (cfg.mixup, cfg.cutmix, cfg.smoothing, cfg.bce, cfg.ema_decay, cfg.decay_epochs) == \
        (0.1, 1.0, 0.1, True, 0.99996, 100)


def test_reference_recipe_components_run(tmp_path):
    """LAMB, BCE with mixup/cutmix, RandAugment, random erasing and EMA in one short run."""
    cfg = TrainConfig.reference_recipe(model="vanillanet_5_x0_25", dataset="digits", input_size=32,
                                       epochs=1, batch_size=32, limit=64, decay_epochs=1,
                                       warmup_epochs=0)
    result = train(cfg, results_dir=tmp_path, progress=False)
    assert result.final["val_acc_ema"] is not None and result.history[0]["lam"] == 0.0


def _cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "lslu", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=timeout)


def test_cli_help_lists_every_config_field():
    out = _cli("train", "--help").stdout
    for name in TrainConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in out


def test_cli_bad_input_exits_with_a_message(tmp_path):
    proc = _cli("train", "--dataset", "mnist", "--results-dir", str(tmp_path))
    assert proc.returncode == 2 and "unknown dataset 'mnist'" in proc.stderr


def test_cli_trains_and_then_reuses_the_stored_run(tmp_path):
    args = ("train", "--limit", "128", "--epochs", "1", "--batch-size", "32", "--results-dir",
            str(tmp_path), "--no-progress")
    first = _cli(*args)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["cached"] is False
    second = _cli(*args)
    assert json.loads(second.stdout)["cached"] is True


def test_ddp_with_gloo_two_processes(tmp_path):
    """torchrun, 2 CPU processes (gloo): sharded data, the lambda schedule applied through the
    DDP wrapper, one result written by rank 0, identical to what rank 0 reports."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
         "-m", "lslu", "train", "--limit", "256", "--epochs", "2", "--batch-size", "32",
         "--decay-epochs", "2", "--results-dir", str(tmp_path), "--no-progress"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = list((tmp_path / "runs").glob("*.json"))
    assert len(files) == 1
    stored = json.loads(files[0].read_text())
    assert stored["hardware"]["world_size"] == 2
    assert [h["lam"] for h in stored["history"]] == [0.0, 0.5]  # the schedule ran under DDP
    assert json.loads(proc.stdout)["val_acc"] == stored["final"]["val_acc"]
    assert not list((tmp_path / "checkpoints").glob("*.pt"))

"""The training engine: learning, determinism, resume, the results store, DDP, bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lslu.train as train_mod
from lslu.results import ResultFileError, ResultsStore, atomic_write_json
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
    # issue 10.5: each of these got past validate() before
    ({"lr": float("nan")}, "lr must be a finite number, got nan"),
    ({"lr": float("inf")}, "lr must be a finite number, got inf"),
    ({"lr": -0.1}, r"lr must be > 0, got -0.1"),
    ({"limit": 100, "batch_size": 128}, "batch_size 128 is larger than the training set"),
    ({"batch_size": 2048}, r"larger than the training set \(1437 images"),
    ({"crop_padding": 40}, r"crop_padding must be in \[0, 32\)"),
    ({"rand_augment": "rand-x7"}, "bad rand_augment 'rand-x7'"),
    ({"momentum": -0.9}, r"momentum must be in \[0, 1\), got -0.9"),
    ({"smoothing": 1.0}, "smoothing must be in"),
    ({"smoothing": -0.1}, "smoothing must be in"),
    ({"random_erasing": 1.5}, "random_erasing must be in"),
    ({"input_size": 16}, "input_size 16 is too small for vanillanet_5_x0_25"),
    ({"cutmix": -1.0}, "cutmix must be >= 0, got -1.0"),
    ({"mixup": -0.5}, "mixup must be >= 0"),
    ({"min_lr": 0.1}, r"min_lr must be in \[0, lr=0.002\]"),
    ({"dropout_placement": "head"}, "dropout_placement must be one of ours, reference"),
    ({"pipeline": "timm"}, "pipeline must be one of ours, reference"),
    ({"pipeline": "reference", "crop_padding": 4}, "applies to pipeline 'ours'"),
    ({"lamb_eps": 0.0}, "lamb_eps must be > 0"),
    ({"weight_decay": "0.05"}, "weight_decay must be a finite number, got '0.05'"),
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
    with pytest.raises(ResultFileError, match="not valid JSON"):
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


def test_reference_best_follows_the_reference_evaluation_rule():
    # 300 epochs: after 20, 40, ..., 260 and every epoch after 260
    history = [{"epoch": e, "val_acc": 0.5, "val_acc_ema": 0.4} for e in range(1, 301)]
    history[254]["val_acc"] = 0.9  # epoch 255: never evaluated by the reference
    history[259]["val_acc"] = 0.7  # epoch 260: evaluated
    history[269]["val_acc_ema"] = 0.8
    best = train_mod.reference_best(history, 300)
    assert best["reference_eval_epochs"] == list(range(20, 261, 20)) + list(range(261, 301))
    assert (best["reference_best_val_acc"], best["reference_best_epoch"]) == (0.7, 260)
    assert best["reference_best_val_acc_ema"] == 0.8
    # scaled: 30 epochs -> every 2nd, every one after 26; 10 epochs -> every one
    assert train_mod.reference_best(history[:30], 30)["reference_eval_epochs"] == \
        list(range(2, 27, 2)) + [27, 28, 29, 30]
    assert train_mod.reference_best(history[:10], 10)["reference_eval_epochs"] == \
        list(range(1, 11))
    # a run stopped early is looked at over the epochs it ran
    assert train_mod.reference_best(history[:50], 300)["reference_eval_epochs"] == [20, 40]


def test_a_finished_run_stores_final_and_reference_best_accuracy(tmp_path):
    result = train(TrainConfig(**TINY), results_dir=tmp_path, progress=False)
    accs = [h["val_acc"] for h in result.history]
    assert result.final["val_acc"] == accs[-1]  # ours: the final accuracy, kept
    assert result.final["reference_best_val_acc"] == max(accs)  # 3 epochs: all evaluated
    assert result.final["reference_eval_epochs"] == [1, 2, 3]
    stored = json.loads(ResultsStore(tmp_path).result_path(result.run_id).read_text())
    assert stored["final"]["reference_best_val_acc"] == max(accs)


def test_diverged_run_stops_stores_nothing_and_names_no_missing_checkpoint(tmp_path):
    cfg = TrainConfig(**TINY, lr=1000.0)  # issue 10.1: this was stored as a success
    with pytest.raises(FloatingPointError) as err:
        train(cfg, results_dir=tmp_path, progress=False)
    message = str(err.value)
    assert "epoch 1" in message and "No checkpoint of it exists" in message
    assert "\n" not in message
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no result, weights, checkpoint


def test_an_exploding_but_finite_loss_is_divergence_too(tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "_evaluate", lambda *a, **k: (3.0e6, 0.1))
    store = ResultsStore(tmp_path)
    cfg = TrainConfig(**TINY)
    with pytest.raises(FloatingPointError, match="validation loss became 3e\\+06 in epoch 1"):
        train(cfg, results_dir=tmp_path, progress=False)
    assert not store.has_result(cfg.run_id) and not store.checkpoint_path(cfg.run_id).exists()


def test_store_that_cannot_be_written_fails_before_any_work(tmp_path, monkeypatch):
    import errno
    monkeypatch.setattr(train_mod, "_load_data", lambda *a: pytest.fail("data was loaded"))
    blocker = tmp_path / "results"
    blocker.write_text("a file where the results folder should be")
    with pytest.raises(OSError, match=f"cannot be written at {blocker}"):
        train(TrainConfig(**TINY), results_dir=blocker, progress=False)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left on device") as err:
        train(TrainConfig(**TINY), results_dir=tmp_path / "full", progress=False)
    assert err.value.errno == errno.ENOSPC
    assert not [p for p in (tmp_path / "full").rglob("*") if p.is_file()]  # probe removed


def test_extra_given_as_a_string_is_a_clear_error():
    from lslu.chapters.common import base_config
    with pytest.raises(ValueError, match="extra must be a dict.*'min_lr: 1e-6'"):
        base_config(dataset="digits", extra="min_lr: 1e-6")


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


def test_cli_help_shows_the_defaults():
    out = " ".join(_cli("train", "--help").stdout.split())
    assert "--lr FLOAT (default: 0.002)" in out
    assert "--pipeline STR (default: ours)" in out


def test_cli_expected_errors_are_one_line_exit_2(tmp_path):
    """A diverged run (issue 10.1/10.4) and a store that is a file (10.3): one line on stderr,
    no traceback, nothing on stdout (so no JSON with NaN), exit 2."""
    common = ("--limit", "128", "--epochs", "2", "--batch-size", "32", "--no-progress")
    blocker = tmp_path / "store"
    blocker.write_text("not a folder")
    for args, expected in [(("--lr", "1000", "--results-dir", str(tmp_path / "r")), "diverged"),
                           (("--results-dir", str(blocker)), "cannot be written")]:
        proc = _cli("train", *common, *args)
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == "" and "Traceback" not in proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]


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


class _Stream:
    """A stderr stand-in that records writes and answers isatty() as told."""

    def __init__(self, tty: bool):
        self.tty, self.text = tty, []

    def isatty(self):
        return self.tty

    def write(self, s):
        self.text.append(s)
        return len(s)

    def flush(self):
        pass


@pytest.mark.parametrize("tty,env,expect_bars", [(False, None, False), (True, None, True),
                                                 (False, "1", True), (True, "0", False)])
def test_progress_auto_shows_bars_only_on_a_terminal(tmp_path, monkeypatch, tty, env, expect_bars):
    # inside a notebook kernel stderr is not a TTY: every bar update would be a stderr box
    if env is None:
        monkeypatch.delenv("LSLU_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("LSLU_PROGRESS", env)
    stream = _Stream(tty)
    monkeypatch.setattr(sys, "stderr", stream)
    train_mod.run_grid([TrainConfig(**(TINY | dict(epochs=1)))], results_dir=tmp_path)
    written = "".join(stream.text)
    if expect_bars:
        assert "runs" in written and "seed=0" in written  # the grid bar and the run's bar
    else:
        assert written == ""


@pytest.mark.parametrize("progress,env,message", [("yes", None, "progress='yes'"),
                                                  (None, "true", "LSLU_PROGRESS='true'")])
def test_bad_progress_setting_is_a_clear_error(tmp_path, monkeypatch, progress, env, message):
    if env is not None:
        monkeypatch.setenv("LSLU_PROGRESS", env)
    with pytest.raises(ValueError, match=message):
        train(TrainConfig(**TINY), results_dir=tmp_path, progress=progress)
    assert not any(tmp_path.iterdir())  # failed before any work

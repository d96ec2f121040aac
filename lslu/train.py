"""Training: ``train(TrainConfig(...)) -> RunResult``.

One function trains a configured model on a dataset and returns everything the book needs:
per-epoch curves, the theta/omega of every LSLU layer per epoch, final metrics, params, FLOPs,
hardware and versions. Finished runs come from the results store; unfinished ones resume from
their last checkpoint. On CUDA it uses bf16 autocast, channels_last and (optionally)
torch.compile; under torchrun it trains with DistributedDataParallel.
"""
from __future__ import annotations

import copy
import errno
import json
import math
import os
import random
import sys
import tempfile
import time
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from timm.loss import BinaryCrossEntropy, SoftTargetCrossEntropy
from timm.optim import Lamb
from timm.utils import ModelEmaV3
from tqdm import tqdm

from . import data as data_lib
# TrainConfig and the end-of-run records live in their own modules; re-exported here because
# lslu.train is the entry point users (notebooks, benchmarks, the CLI) import from
from .config import OPTIMIZERS, TrainConfig, resolve_device
from .models import build_model, count_parameters, lslu_layers, param_groups
from .probes import compute_probes
from .results import ResultsStore, RunResult, atomic_torch_save
from .run_info import count_flops, hardware_info, portable_config, reference_best, \
    software_versions

__all__ = ["TrainConfig", "train", "run_grid", "show_progress", "OPTIMIZERS", "hardware_info",
           "load_model", "compile_model", "compile_options",
           "count_flops", "resolve_device", "reference_best"]


def compile_options(device: torch.device | str, channels_last: bool = True) -> dict:
    """Inductor options the engine compiles with (``torch.compile(..., options=...)``).

    On the CPU inductor runs every graph that contains a convolution in channels_last (its
    mkldnn rule), but it looks for ``aten.convolution`` nodes, and a backward graph holds only
    ``convolution_backward``: there the convolutions run in NCHW, with transposing copies around
    them and around every elementwise kernel that meets a channels_last tensor.
    ``force_layout_optimization`` applies the rule to the backward graph too (series and LSLU
    alike; benchmarks/activation_speed.py times both with these options and with inductor's
    defaults).  Elsewhere (CUDA) inductor's own choice is kept: not measured here.
    """
    if torch.device(device).type == "cpu" and channels_last:
        return {"force_layout_optimization": True}
    return {}


def compile_model(model: nn.Module, device: torch.device | str,
                  channels_last: bool = True) -> nn.Module:
    """``torch.compile`` with :func:`compile_options`: what ``TrainConfig(compile=True)`` runs."""
    return torch.compile(model, options=compile_options(device, channels_last))


def _lr_at(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float) -> float:
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def _lambda_at(epoch: int, decay_epochs: int) -> float:
    return 1.0 if decay_epochs <= 0 else min(1.0, epoch / decay_epochs)


def _make_optimizer(cfg: TrainConfig, model: nn.Module, device: torch.device):
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "lamb":
        return Lamb(groups, lr=cfg.lr, eps=cfg.lamb_eps)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, fused=device.type == "cuda")
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


def _make_loss(cfg: TrainConfig, mixing: bool) -> nn.Module:
    if cfg.bce:  # with mixing, smoothing is already in the soft targets
        return BinaryCrossEntropy(smoothing=0.0 if mixing else cfg.smoothing)
    if mixing:
        return SoftTargetCrossEntropy()
    return nn.CrossEntropyLoss(label_smoothing=cfg.smoothing)


def _activation_state(model: nn.Module) -> tuple[dict, dict]:
    theta, omega = {}, {}
    for name, m in lslu_layers(model).items():
        t, w = m.theta.detach().float().cpu(), m.omega.detach().float().cpu()
        if m.per_channel:
            t, w = t.mean(1), w.mean(1)
        theta[name or "act"], omega[name or "act"] = t.tolist(), w.tolist()
    return theta, omega


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


_DATA_CACHE: dict = {}


def _load_data(cfg: TrainConfig, device: torch.device) -> "data_lib.ImageDataset":
    """Datasets are loaded once per process and shared by the runs of a grid."""
    key = (cfg.dataset, cfg.data_dir, cfg.input_size, cfg.val_fraction, cfg.seed, str(device),
           cfg.limit)
    if key not in _DATA_CACHE:
        if len(_DATA_CACHE) > 4:
            _DATA_CACHE.clear()
        _DATA_CACHE[key] = data_lib.load_dataset(
            cfg.dataset, data_dir=cfg.data_dir, input_size=cfg.input_size,
            val_fraction=cfg.val_fraction, seed=cfg.seed, device=device, limit=cfg.limit)
    return _DATA_CACHE[key]


def _distributed() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment, (0, 0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 0, 1
    return int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world


@torch.no_grad()
def _evaluate(model, loader, device, amp_dtype) -> tuple[float, float]:
    model.eval()
    totals = torch.zeros(3, device=device, dtype=torch.float64)  # loss sum, correct, count
    for images, labels in loader:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)
        totals[0] += F.cross_entropy(logits.float(), labels, reduction="sum")
        totals[1] += (logits.argmax(1) == labels).sum()
        totals[2] += labels.numel()
    loss, correct, count = totals.tolist()
    return loss / count, correct / count


def show_progress(progress: bool | None = None) -> bool:
    """Resolve ``progress``: True/False as given, None means "auto".

    Auto shows bars only on a terminal (sys.stderr is a TTY) or when LSLU_PROGRESS=1; inside a
    notebook kernel (papermill, nbval) stderr is not a TTY, so every bar update would become a
    grey stderr box in the rendered book. LSLU_PROGRESS=0 turns bars off even on a terminal.
    """
    if progress is not None and not isinstance(progress, bool):
        raise ValueError(f"progress={progress!r} is not allowed: use True, False or None (auto)")
    env = os.environ.get("LSLU_PROGRESS", "").strip()
    if env not in ("", "0", "1"):
        raise ValueError(f"LSLU_PROGRESS={env!r} is not allowed: use 1 (bars on), 0 (off) or unset")
    if progress is not None:
        return progress
    if env:
        return env == "1"
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def train(config: TrainConfig, results_dir=None, force: bool = False,
          progress: bool | None = None,
          on_epoch_end: Callable[[int, dict], None] | None = None) -> RunResult:
    """Train ``config`` (or return its stored result) and return the RunResult.

    A finished run is loaded from the results store unless ``force``; an unfinished run resumes
    from its last checkpoint. ``on_epoch_end(epoch, record)`` is called after each epoch's
    checkpoint is written (used by tests to simulate a kill). ``progress``: see show_progress.
    """
    progress = show_progress(progress)
    config.validate()
    store = ResultsStore(results_dir)
    run_id = config.run_id
    rank, local_rank, world_size = _distributed()
    if not force:
        store.check_readable(run_id)
        if store.has_result(run_id):
            return store.load(run_id)
    _check_writable(store)  # before any work: a store that cannot take the result wastes it
    if config.batch_size % world_size:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the {world_size} "
                         f"processes")

    device = resolve_device(config.device)
    if world_size > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    amp_dtype = torch.bfloat16 if (config.amp and device.type == "cuda") else None
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format

    _seed_everything(config.seed)
    dataset = _load_data(config, device)
    model = build_model(config.model, dataset.num_classes, config.resolved_activation,
                        config.act_num, config.drop_rate, config.act_everywhere,
                        dropout_placement=config.dropout_placement)
    if config.freeze_activation:
        for m in lslu_layers(model).values():
            m.theta.requires_grad_(False)
            m.omega.requires_grad_(False)
    params = count_parameters(model)
    flops = count_flops(model, config.input_size)
    deployable = copy.deepcopy(model).eval()
    deployable.change_act(1.0)
    deployable.switch_to_deploy()
    params_deploy = count_parameters(deployable)
    del deployable
    model.to(device, memory_format=memory_format)

    per_rank_batch = config.batch_size // world_size
    # the reference pipeline normalises with ImageNet's statistics, ours with the dataset's
    mean, std = ((data_lib.IMAGENET_MEAN, data_lib.IMAGENET_STD) if config.pipeline == "reference"
                 else (dataset.mean, dataset.std))
    loader_args = dict(mean=mean, std=std, input_size=config.input_size,
                       channels_last=config.channels_last, pipeline=config.pipeline)
    train_loader = data_lib.DeviceLoader(
        dataset.train_images, dataset.train_labels, per_rank_batch, train=True, seed=config.seed,
        crop_padding=config.crop_padding, flip=config.flip and dataset.hflip, rank=rank, world_size=world_size,
        rand_augment=config.rand_augment, random_erasing=config.random_erasing, **loader_args)
    # Every process evaluates the whole validation set: exact metrics (a sharded eval pads the
    # last shard and counts some images twice), and no collective in the eval loop.
    val_loader = data_lib.DeviceLoader(dataset.val_images, dataset.val_labels,
                                       max(per_rank_batch, 256), train=False, **loader_args)
    if len(train_loader) == 0:
        raise ValueError(f"batch_size {config.batch_size} is larger than the training set "
                         f"({len(dataset.train_labels)} images)")

    mixup = data_lib.make_mixup(config.mixup, config.cutmix, config.smoothing, dataset.num_classes)
    criterion = _make_loss(config, mixing=mixup is not None)
    optimizer = _make_optimizer(config, model, device)
    ema = None
    if config.ema_decay > 0:
        ema = ModelEmaV3(model, decay=config.ema_decay)

    raw_model = model
    if world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    step_model = compile_model(model, device, config.channels_last) if config.compile else model

    history: list[dict] = []
    start_epoch, best, since_best, train_time = 0, -1.0, 0, 0.0
    ckpt_path = store.checkpoint_path(run_id)
    if ckpt_path.exists() and not force:
        try:
            ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        except Exception as err:  # noqa: BLE001 - any unreadable checkpoint: say so, keep it
            raise RuntimeError(f"checkpoint {ckpt_path} cannot be read ({err}); it is left "
                               f"untouched: move it away to start this run afresh") from err
        raw_model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        history, best, since_best = ckpt["history"], ckpt["best"], ckpt["since_best"]
        train_time = ckpt["train_time"]
        start_epoch = len(history)
        _set_rng_state(ckpt["rng"])

    steps_per_epoch = len(train_loader)
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    bar = None
    if progress and rank == 0:
        label = f"{config.model}/{config.resolved_activation} n={config.act_num} seed={config.seed}"
        bar = tqdm(total=config.epochs, initial=start_epoch, desc=label, leave=False,
                   file=sys.stderr, dynamic_ncols=True)

    stopped_early = False
    for epoch in range(start_epoch, config.epochs):
        if since_best >= config.patience > 0:
            stopped_early = True
            break
        lam = _lambda_at(epoch, config.decay_epochs)
        raw_model.change_act(lam)  # on the unwrapped model: DDP must not hide the schedule
        train_loader.set_epoch(epoch)
        model.train()
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        t0 = time.perf_counter()
        for i, (images, labels) in enumerate(train_loader):
            step = epoch * steps_per_epoch + i
            lr = _lr_at(step, total_steps, warmup_steps, config.lr, config.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            targets = labels
            if mixup is not None:
                images, targets = mixup(images, labels)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = step_model(images)
            loss = criterion(logits.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update(raw_model, step=step)
            loss_sum += loss.detach()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_time = time.perf_counter() - t0
        train_loss = loss_sum.item() / steps_per_epoch
        _check_diverged("training loss", train_loss, epoch, dataset.num_classes, run_id, ckpt_path)
        train_time += epoch_time
        val_loss, val_acc = _evaluate(raw_model, val_loader, device, amp_dtype)
        _check_diverged("validation loss", val_loss, epoch, dataset.num_classes, run_id, ckpt_path)
        val_acc_ema = None
        if ema is not None:
            ema.module.change_act(lam)  # the EMA averages buffers too; lambda is not a weight
            val_acc_ema = _evaluate(ema.module, val_loader, device, amp_dtype)[1]
        theta, omega = _activation_state(raw_model)
        record = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
                  "val_acc": val_acc, "val_acc_ema": val_acc_ema, "lr": lr, "lam": lam,
                  "epoch_time": epoch_time, "theta": theta, "omega": omega}
        history.append(record)
        if val_acc > best:
            best, since_best = val_acc, 0
        else:
            since_best += 1
        if rank == 0:
            atomic_torch_save({"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                               "ema": ema.state_dict() if ema is not None else None,
                               "history": history, "best": best, "since_best": since_best,
                               "train_time": train_time, "rng": _rng_state(),
                               "config": config.to_dict()}, ckpt_path)
        if bar is not None:
            bar.set_postfix(loss=f"{train_loss:.3f}", acc=f"{val_acc:.3f}")
            bar.update(1)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
    if bar is not None:
        bar.close()

    last = history[-1]
    final = {"val_acc": last["val_acc"], "val_loss": last["val_loss"],
             "best_val_acc": max(h["val_acc"] for h in history),
             "val_acc_ema": last["val_acc_ema"], "train_loss": last["train_loss"],
             "epochs_run": len(history), "stopped_early": stopped_early,
             "num_classes": dataset.num_classes,
             "train_time_s": train_time,
             "images_per_s": len(history) * steps_per_epoch * config.batch_size / max(train_time, 1e-9)}
    final |= reference_best(history, config.epochs)
    probes = {}
    if rank == 0:
        # what the chapters read from the trained model, stored with the run (weights are not
        # committed); lambda as in the last epoch, also when resuming a run whose epochs all ran
        raw_model.change_act(last["lam"])
        probes = compute_probes(raw_model, val_loader, dataset.classes, amp_dtype=amp_dtype)
    result = RunResult(run_id=run_id, config=portable_config(config.to_dict()), history=history,
                       final=final, params=params, params_deploy=params_deploy, flops=flops,
                       hardware=hardware_info(device) | {"world_size": world_size},
                       versions=software_versions(), probes=probes)
    if rank == 0:
        _check_finite_json(result.to_dict(), run_id)
        atomic_torch_save(raw_model.state_dict(), store.model_path(run_id))
        store.save(result)
        ckpt_path.unlink(missing_ok=True)
    return result


def _check_writable(store: ResultsStore) -> None:
    """OSError (one line, naming the folder) unless the store's folders can be created and take
    a file: a read-only folder, a file where a folder should be, a full disk."""
    for folder in (store.result_path("x").parent, store.checkpoint_path("x").parent,
                   store.model_path("x").parent):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(b"\0" * 4096)  # a real block: a full disk refuses it
                    f.flush()
                    os.fsync(f.fileno())
            finally:
                os.unlink(probe)
        except OSError as err:
            raise OSError(err.errno or errno.EIO,
                          f"the results store cannot be written at {folder} "
                          f"({err.strerror or err}); nothing was trained. Pick another "
                          f"results_dir (or $LSLU_RESULTS_DIR), or free that folder") from err


# A loss this many times the chance level (ln of the number of classes) only comes from weights
# that have blown up (lr 1000 gave 1.4e18): such a run stops as if the loss were NaN.
_EXPLODED = 1e3


def _check_diverged(name, value, epoch, num_classes, run_id, ckpt_path) -> None:
    """FloatingPointError when an epoch's loss is not finite or has exploded. Nothing is stored
    for the run; the message names the last good checkpoint only if there is one."""
    if math.isfinite(value) and value <= _EXPLODED * math.log(num_classes):
        return
    kept = (f"Its last good checkpoint (end of epoch {epoch}) is kept at {ckpt_path}: running "
            f"the same config resumes from it, delete it to start afresh"
            if ckpt_path.exists() else "No checkpoint of it exists")
    raise FloatingPointError(
        f"the {name} became {value:.4g} in epoch {epoch + 1} of run {run_id} (diverged: not "
        f"finite or above {_EXPLODED:g} x ln({num_classes})); the run stops and nothing is "
        f"stored. {kept}. Lower the learning rate or check the data.")


def _check_finite_json(obj, run_id) -> None:
    """A stored result is strict JSON: a NaN or infinity anywhere is an error, not a file."""
    try:
        json.dumps(obj, allow_nan=False)
    except ValueError as err:
        raise FloatingPointError(f"run {run_id} produced a non-finite number ({err}); nothing "
                                 f"is stored") from err


def load_model(result: RunResult, results_dir=None, device="cpu") -> nn.Module:
    """The trained model of a finished run (from the store's models/ folder), in eval mode."""
    cfg = TrainConfig(**result.config)
    dataset_classes = result.final.get("num_classes")
    # missing or unreadable weights: one line naming the file and how to train the run again
    state = ResultsStore(results_dir).load_weights(result.run_id, map_location=device)
    num_classes = dataset_classes or _num_classes_from_state(state)
    model = build_model(cfg.model, num_classes, cfg.resolved_activation, cfg.act_num,
                        cfg.drop_rate, cfg.act_everywhere,
                        dropout_placement=cfg.dropout_placement)
    model.load_state_dict(state)
    return model.to(device).eval()


def _num_classes_from_state(state: dict) -> int:
    for key in ("cls2.weight", "fc.weight"):
        if key in state:
            return state[key].shape[0]
    raise ValueError("cannot tell the number of classes from the saved weights")


def run_grid(configs: list[TrainConfig], results_dir=None, force: bool = False,
             progress: bool | None = None) -> list[RunResult]:
    """Run (or load) every config, validating all of them before the first one starts."""
    progress = show_progress(progress)
    configs = list(configs)
    if not configs:
        raise ValueError("run_grid needs at least one config")
    for cfg in configs:
        cfg.validate()
    results = []
    bar = None
    if progress:
        bar = tqdm(total=len(configs), desc="runs", file=sys.stderr, dynamic_ncols=True)
    for cfg in configs:
        results.append(train(cfg, results_dir=results_dir, force=force, progress=progress))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return results

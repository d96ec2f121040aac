"""What a finished run records besides its curves: the hardware and software it ran on, its
forward FLOPs, the accuracy the reference code would report, and its config as stored.
"""
from __future__ import annotations

import copy
import os
import platform

import timm
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from . import __version__

__all__ = ["hardware_info", "software_versions", "count_flops", "reference_best",
           "portable_config"]


def hardware_info(device: torch.device | None = None) -> dict:
    info = {"platform": platform.platform(terse=True), "machine": platform.machine(),
            "processor": _cpu_name(), "cpu_count": os.cpu_count(),
            # the kernels ATen picks (AVX2, AVX512...): bitwise reproducibility needs the same
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads()}
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def software_versions() -> dict:
    return {"lslu": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "python": platform.python_version(), "cuda": torch.version.cuda}


def count_flops(model: nn.Module, input_size: int, device=None) -> int:
    """Forward FLOPs for one image (torch's own FlopCounterMode; a multiply-add counts 2)."""
    m = copy.deepcopy(model).eval()
    x = torch.zeros(1, 3, input_size, input_size, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        m(x)
    return int(counter.get_total_flops())


def reference_best(history: list[dict], epochs: int) -> dict:
    """The reference code's reported accuracy: the maximum validation (= test) accuracy over the
    epochs it evaluates, a choice made on the test set (ours reports the final accuracy).

    The reference evaluates after every 20th of its 300 epochs and after every epoch past the
    260th. Scaled to ``epochs``: after every round(epochs / 15)-th epoch (at least every one)
    and every epoch past round(epochs * 13 / 15), so 300 gives 20, 40, ..., 260, 261, ..., 300
    and 10 gives every epoch. Only epochs in ``history`` (1-based "epoch") count: a run stopped
    early is looked at up to its last epoch. Returns reference_best_val_acc, its epoch, the
    epochs looked at, and reference_best_val_acc_ema when the history has EMA accuracies."""
    every, dense_after = max(1, round(epochs / 15)), round(epochs * 13 / 15)
    looked = [h for h in history if h["epoch"] % every == 0 or h["epoch"] > dense_after]
    if not looked:  # stopped before the first evaluation: the reference would report nothing
        return {"reference_best_val_acc": None, "reference_best_epoch": None,
                "reference_eval_epochs": []}
    best = max(looked, key=lambda h: h["val_acc"])  # the first of equal maxima
    out = {"reference_best_val_acc": best["val_acc"], "reference_best_epoch": best["epoch"],
           "reference_eval_epochs": [h["epoch"] for h in looked]}
    if all(h.get("val_acc_ema") is not None for h in looked):
        out["reference_best_val_acc_ema"] = max(h["val_acc_ema"] for h in looked)
    return out


def portable_config(config: dict) -> dict:
    """The config as stored: a data folder under the home directory is written as ``~/...``, so
    a committed result names no machine's path (the run id never depends on the path)."""
    data_dir = config.get("data_dir")
    if data_dir:
        home = os.path.expanduser("~")
        absolute = os.path.abspath(os.path.expanduser(data_dir))
        if absolute == home or absolute.startswith(home + os.sep):
            config = config | {"data_dir": "~" + absolute[len(home):]}
    return config

"""Kernel-launch proxy: how many ATen operations one training step dispatches.

On a GPU every top-level ATen operation of an eager step is (at least) one kernel launch, and a
small model at 32 px is launch-bound, so this count predicts eager GPU cost where CPU timings
cannot.  It is deterministic: a test can hold it, and the benchmarks report it beside timings.
Counted with ``torch.profiler`` on the CPU over the forward and backward of one step: ATen
operations that do work themselves (no ATen operation inside them does the work instead),
leaving out views and allocations (``select``, ``unsqueeze``, ``as_strided``, ``empty``...), which
launch no kernel.  The optimizer step is left out: on CUDA the default foreach (or fused) AdamW
updates all parameters in a fixed number of multi-tensor launches, while on the CPU it loops over
parameter tensors and reads step counts on the host, which a GPU never sees.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from . import activations
from .models import build_model

__all__ = ["training_step_ops"]

# metadata-only operations and allocations: no kernel runs for them on a GPU
_NO_KERNEL = frozenset("aten::" + name for name in (
    "as_strided", "as_strided_", "select", "unsqueeze", "squeeze", "view", "_unsafe_view",
    "_reshape_alias", "reshape", "unbind", "expand", "expand_as", "narrow", "slice", "split",
    "t", "transpose", "permute", "alias", "detach", "lift_fresh", "resolve_conj", "resolve_neg",
    "empty", "empty_strided", "empty_like", "new_empty_strided", "new_empty", "result_type"))


def training_step_ops(model: str = "vanillanet_5_x0_25", activation: str = "lslu",
                      fast_path: bool = False, batch: int = 8, size: int = 32,
                      num_classes: int = 10) -> int:
    """Top-level ATen operations of one training step's forward + backward (channels_last).

    ``fast_path=False`` is the tensor path every GPU, torch.compile and tracing run;
    ``fast_path=True`` the eager CPU path (host scalars for per-layer LSLU).
    """
    saved = activations._CPU_FAST_PATH
    activations._CPU_FAST_PATH = fast_path
    try:
        torch.manual_seed(0)
        net = build_model(model, num_classes, activation).to(memory_format=torch.channels_last)
        net.change_act(0.5)  # mid-schedule: the deep-training lambda is live
        x = torch.randn(batch, 3, size, size).to(memory_format=torch.channels_last)
        y = torch.randint(0, num_classes, (batch,))

        def step():
            net.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()

        step()  # warm-up: cached constants exist before counting
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
    finally:
        activations._CPU_FAST_PATH = saved
    return sum(1 for e in prof.events() if _is_kernel(e))


def _is_kernel(event) -> bool:
    """An ATen op that does work itself: not a view or allocation, and no op inside it does
    the work instead (``sum`` counts once, through the ``fill_`` it runs on the CPU)."""
    if not event.name.startswith("aten::"):
        return False
    if any(_is_kernel(child) for child in event.cpu_children):
        return False
    return event.name not in _NO_KERNEL

"""Chapter 04 (E3): top-1 and cost against the number of activations n (the series length, which
also sets the depthwise kernel 2n+1); tables and the figure: lslu.chapters.sweeps."""
from __future__ import annotations

from ..train import TrainConfig
from .common import base_from, check_sweep_levels, grid


def configs(*, models, act_nums, seeds, **settings) -> list[TrainConfig]:
    """The runs of chapter 04: every model with LSLU at every n of ``act_nums``, for every seed.
    ``settings``: the other notebook parameters (``dataset``, ``epochs``, ``extra``:
    common.base_from)."""
    act_nums = check_sweep_levels("act_nums", act_nums)
    models = check_sweep_levels("models", models)
    seeds = check_sweep_levels("seeds", seeds)
    return grid(base_from(settings), model=models, activation=["lslu"], act_num=act_nums,
                seed=seeds)




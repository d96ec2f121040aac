"""Chapter 06 (E5): where dropout sits and how the top-1 changes with its rate (tables and the
figure: lslu.chapters.sweeps)."""
from __future__ import annotations

import pandas as pd
import torch.nn as nn

from ..models import build_model
from ..train import TrainConfig
from .common import base_from, check_sweep_levels, grid


def configs(*, models, drop_rates, seeds, with_baseline=False, **settings) -> list[TrainConfig]:
    """The runs of chapter 06: every model with LSLU (and, ``with_baseline``, with its baseline
    activation) at every dropout rate, for every seed. ``settings``: the other notebook
    parameters (common.base_from: ``dataset``, ``epochs`` and ``extra`` enter the runs, the rest
    is ignored)."""
    drop_rates = [float(r) for r in check_sweep_levels("drop_rates", drop_rates)]
    models = check_sweep_levels("models", models)
    seeds = check_sweep_levels("seeds", seeds)
    if not isinstance(with_baseline, bool):
        raise ValueError(f"with_baseline must be True or False, got {with_baseline!r}")
    activations = [None, "lslu"] if with_baseline else ["lslu"]
    return grid(base_from(settings), model=models, activation=activations, drop_rate=drop_rates,
                seed=seeds)


def dropout_sites(name: str, drop_rate: float = 0.1, num_classes: int = 10,
                  activation: str | None = "lslu", placement: str = "ours") -> pd.DataFrame:
    """Where ``build_model(name, ...)`` puts its dropout with ``placement`` (TrainConfig's
    dropout_placement): one row per nn.Dropout module, with its name, its rate p and the module
    it sits in ('(model)' for the top level)."""
    model = build_model(name, num_classes, activation, 3, drop_rate, dropout_placement=placement)
    rows = []
    for n, m in model.named_modules():
        if isinstance(m, nn.Dropout):
            parent = n.rsplit(".", 1)[0] if "." in n else "(model)"
            rows.append({"model": name, "module": n, "p": m.p, "inside": parent})
    if not rows:
        raise ValueError(f"{name} has no dropout module")
    return pd.DataFrame(rows)

"""The contributor's rules (README "Contributing") that can be checked: every notebook has its
chapter module, each lists its runs without training, and the training core never imports the
chapters."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import torch
import torch.nn as nn

from lslu import activations, probes
from lslu.activations import ACTIVATIONS
from lslu.chapters import CHAPTERS
from lslu.chapters.zoo import ZOO_ACTIVATIONS
from lslu.models import build_model, param_groups
from lslu.grid import chapter_parameters
from lslu.book import load_profile
from lslu.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
STEMS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))


def test_every_notebook_has_a_chapter_module_and_back():
    assert sorted(CHAPTERS) == STEMS
    for stem, module in CHAPTERS.items():
        assert callable(getattr(module, "configs", None)), f"{module.__name__} lacks configs()"


@pytest.mark.parametrize("stem", STEMS)
def test_configs_list_the_smoke_runs_without_training(stem, tmp_path, monkeypatch):
    monkeypatch.setenv("LSLU_DATA_DIR", str(tmp_path))  # the digits export of chapter 07
    params = chapter_parameters(load_profile("smoke"), stem)
    configs = CHAPTERS[stem].configs(**params)
    assert all(isinstance(c, TrainConfig) for c in configs)
    trains = "seeds" in params or "zoo_seeds" in params
    assert bool(configs) == trains  # chapters with seeds train; 01, 10, 12 do not
    if trains:
        seeds = params.get("seeds", params.get("zoo_seeds"))
        assert {c.seed for c in configs} == set(seeds)
        assert len({c.run_id for c in configs}) == len(configs)  # no run listed twice


def test_a_chapter_rejects_a_bad_setting_before_any_run():
    params = chapter_parameters(load_profile("smoke"), "04_num_activations")
    with pytest.raises(ValueError, match="act_nums"):
        CHAPTERS["04_num_activations"].configs(**(params | {"act_nums": []}))
    with pytest.raises(ValueError, match="lr must be > 0"):
        CHAPTERS["02_cifar10"].configs(**(params | {"extra": {"lr": -1.0}}))
    with pytest.raises(ValueError, match="give TrainConfig fields through extra"):
        CHAPTERS["02_cifar10"].configs(**(params | {"lr": 1e-3}))  # not dropped silently


def test_the_training_core_never_imports_the_chapters():
    code = ("import sys, lslu.activations, lslu.models, lslu.data, lslu.train, lslu.results; "
            "print('lslu.chapters' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------ the activation registry
def _check_registered(name, model_name, kwargs):
    """Built into a model, activation ``name`` is found by the probes, its shape parameters stay
    out of weight decay (and its other weights get it), and the zoo lists it."""
    model = build_model(model_name, 10, activation=name, **kwargs)
    kind = type(activations.make_activation(name, 4, 2))
    placed = {n for n, m in model.named_modules() if type(m) is kind}
    found = probes.activation_modules(model)
    assert placed and set(found) == placed, (name, model_name)
    decay, no_decay = (set(map(id, g["params"])) for g in param_groups(model, 0.05))
    for m in found.values():
        shape = m.no_weight_decay() if hasattr(m, "no_weight_decay") else set()
        shape |= {"weight"} if isinstance(m, nn.PReLU) else set()
        for leaf, p in m.named_parameters(recurse=False):
            group = no_decay if leaf in shape or p.ndim <= 1 else decay
            assert id(p) in group, (name, model_name, leaf)
    assert name in ZOO_ACTIVATIONS


@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize("model_name,kwargs", [("vanillanet_5_x0_25", {}),
                                               ("resnet18_cifar", {"act_everywhere": True})])
def test_every_registered_activation_is_found_and_kept_out_of_weight_decay(name, model_name,
                                                                          kwargs):
    _check_registered(name, model_name, kwargs)


class _Scaled(nn.Module):
    """A new activation as a contributor would add it: one 4-D shape parameter, declared."""

    def __init__(self, channels):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1, 1))

    def no_weight_decay(self):
        return {"alpha"}

    def forward(self, x):
        return torch.relu(x) * self.alpha


def test_a_new_activation_needs_only_its_registry_entry(monkeypatch):
    # a name no list outside ACTIVATIONS knows, and a parameter name no list knows either
    monkeypatch.setitem(ACTIVATIONS, "scaled_relu", lambda channels, act_num: _Scaled(channels))
    model = build_model("vanillanet_5_x0_25", 10, activation="scaled_relu")
    found = probes.activation_modules(model)
    assert found and all(isinstance(m, _Scaled) for m in found.values())
    decay, no_decay = (set(map(id, g["params"])) for g in param_groups(model, 0.05))
    assert all(id(m.alpha) in no_decay and id(m.alpha) not in decay for m in found.values())

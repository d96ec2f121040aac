"""The smoke profile is the notebooks' own defaults, so `make book` shows what nbval pins; every
profile only passes parameters that the notebooks declare, and each parses to valid configs."""
from pathlib import Path

import papermill
import pytest

from lslu.book import load_profile, notebook_parameters
from lslu.experiments import base_config

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
COMMON = ("dataset", "data_dir", "input_size", "epochs", "batch_size", "optimizer", "lr",
          "weight_decay", "warmup_epochs", "decay_epochs", "device", "extra")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_smoke_profile_equals_the_notebook_defaults(notebook):
    declared = {name: p["default"] for name, p in papermill.inspect_notebook(str(notebook)).items()}
    passed = notebook_parameters("smoke", notebook)
    assert passed, "the smoke profile passes nothing to this notebook"
    for name, value in passed.items():
        default = declared[name]
        # papermill reports defaults as source text; compare as Python values
        assert eval(default) == value, f"{notebook.stem}: {name} = {default} in the notebook, " \
                                       f"{value!r} in profiles/smoke.yaml"


@pytest.mark.parametrize("profile", ["smoke", "fast", "paper"])
def test_every_profile_gives_valid_training_settings(profile, monkeypatch):
    defaults = load_profile(profile)["defaults"]
    settings = {k: defaults[k] for k in COMMON}
    if settings["dataset"].startswith("cifar"):
        # validation must not need the data (no download here): only the check of the name
        monkeypatch.setattr("lslu.data.check_dataset_args", lambda *a, **k: None)
    config = base_config(**settings)
    assert config["epochs"] == defaults["epochs"]
    if profile == "paper":
        assert (config["optimizer"], config["input_size"], config["epochs"]) == ("lamb", 224, 300)

"""The smoke profile is the notebooks' own defaults, so `make book` shows what nbval pins; every
profile only passes parameters that the notebooks declare, and each parses to valid configs."""
from pathlib import Path

import papermill
import pytest

from lslu.profiles import load_profile, notebook_parameters
from lslu.chapters.common import base_config

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


# ---------------------------------------------------------- keys no notebook would receive
NOTEBOOKS_DIR = NOTEBOOKS[0].parent


@pytest.mark.parametrize("profile", ["smoke", "fast", "paper"])
def test_shipped_profiles_pass_the_key_check(profile):
    load_profile(profile, notebooks_dir=NOTEBOOKS_DIR)


@pytest.mark.parametrize("text, message", [
    ("defaults: {epoch: 1}", r"'defaults' has \['epoch'\], which no notebook declares"),
    ("notebooks: {02_cifar_10: {epochs: 1}}", r"entries for \['02_cifar_10'\], which are not"),
    ("notebooks: {01_lslu_function: {epochs: 1}}", r"sets \['epochs'\], which 01_lslu_function"),
])
def test_a_misspelled_profile_key_fails_when_loaded(tmp_path, text, message):
    (tmp_path / "typo.yaml").write_text(f"description: typo\n{text}\n")
    with pytest.raises(ValueError, match=message) as err:
        load_profile("typo", tmp_path, notebooks_dir=NOTEBOOKS_DIR)
    assert "\n" not in str(err.value)


def test_profiles_are_found_from_the_current_repository(tmp_path, monkeypatch):
    from lslu import profiles as book
    repo = tmp_path / "repo"
    (repo / "profiles").mkdir(parents=True)
    (repo / "profiles" / "mine.yaml").write_text("description: mine\n")
    monkeypatch.delenv("LSLU_PROFILES_DIR", raising=False)
    monkeypatch.chdir(repo)
    assert book.available_profiles() == ["mine"]                  # ./profiles of the cwd
    monkeypatch.setenv("LSLU_PROFILES_DIR", str(NOTEBOOKS_DIR.parent / "profiles"))
    assert "smoke" in book.available_profiles()                   # the variable wins
    assert book.available_profiles(repo / "profiles") == ["mine"]  # and the argument over both
    monkeypatch.setenv("LSLU_PROFILES_DIR", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="LSLU_PROFILES_DIR .* is not a folder"):
        book.available_profiles()
    monkeypatch.delenv("LSLU_PROFILES_DIR")
    monkeypatch.chdir(tmp_path)                                    # no ./profiles here:
    monkeypatch.setattr(book, "PROFILES_DIR", tmp_path / "no-checkout")  # and no checkout
    with pytest.raises(ValueError, match="--profiles-dir / set LSLU_PROFILES_DIR"):
        book.load_profile("smoke")

"""The smoke profile is the notebooks' own defaults, so `make book` shows what nbval pins; every
profile only passes parameters that the notebooks declare, and each parses to valid configs."""
from pathlib import Path

import papermill
import pytest

from lslu.chapters import CHAPTERS
from lslu.chapters.common import TRAIN_PARAMETERS, base_from
from lslu.grid import chapter_parameters, profile_configs
from lslu.profiles import load_profile, notebook_parameters, profile_values

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_smoke_profile_equals_the_notebook_defaults(notebook):
    declared = {name: p["default"] for name, p in papermill.inspect_notebook(str(notebook)).items()}
    passed = notebook_parameters("smoke", notebook)
    assert passed, "the smoke profile passes nothing to this notebook"
    if "extra" in declared:  # a training notebook: its training settings are compared too
        assert {"epochs", "extra"} <= set(passed), sorted(passed)
    for name, value in passed.items():
        default = declared[name]
        # papermill reports defaults as source text; compare as Python values
        assert eval(default) == value, f"{notebook.stem}: {name} = {default} in the notebook, " \
                                       f"{value!r} in profiles/smoke.yaml"


@pytest.mark.parametrize("profile", ["smoke", "fast", "paper", "fashion_mnist"])
def test_every_profile_gives_valid_training_settings(profile, monkeypatch):
    defaults = load_profile(profile)["defaults"]
    # validation must not need the data (no download here): only the check of the name
    monkeypatch.setattr("lslu.data.check_dataset_args", lambda *a, **k: None)
    config = base_from({k: defaults[k] for k in (*TRAIN_PARAMETERS, "extra") if k in defaults})
    assert config["epochs"] == defaults["epochs"]
    if profile == "paper":
        assert (config["optimizer"], config["input_size"], config["epochs"]) == ("lamb", 224, 300)


def test_the_smoke_runs_take_the_notebooks_schedule():
    configs = profile_configs("smoke")
    assert configs and {(c.epochs, c.decay_epochs) for c in configs} == {(6, 3)}


def test_a_notebooks_extra_adds_to_the_profiles_extra(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        "description: mine\n"
        "defaults: {epochs: 2, extra: {device: cpu, batch_size: 32, smoothing: 0.1}}\n"
        "notebooks:\n"
        "  02_cifar10: {extra: {batch_size: 16, limit: 64}}\n"
        "  07_task_specific: {epochs: 3}\n")
    prof = load_profile("mine", tmp_path, notebooks_dir=NOTEBOOKS_DIR)
    assert profile_values(prof, "02_cifar10", ["epochs", "extra"]) == {
        "epochs": 2, "extra": {"device": "cpu", "batch_size": 16, "smoothing": 0.1, "limit": 64}}
    assert profile_values(prof, "07_task_specific", ["epochs", "extra"]) == {
        "epochs": 3, "extra": {"device": "cpu", "batch_size": 32, "smoothing": 0.1}}
    # and what extra holds reaches every run of the chapter (the device too)
    configs = CHAPTERS["02_cifar10"].configs(**chapter_parameters(prof, "02_cifar10"))
    assert {(c.device, c.batch_size, c.limit, c.smoothing, c.epochs) for c in configs} == {
        ("cpu", 16, 64, 0.1, 2)}
    # a profile's extra replaces the notebook's own (empty) one: the schedule the notebook
    # names, VanillaNet's decay_epochs, stays the notebook's
    assert {c.decay_epochs for c in configs} == {3}


def test_a_training_setting_beside_extra_is_refused():
    with pytest.raises(ValueError, match=r"lr: not a notebook parameter; give TrainConfig "
                                         r"fields through extra"):
        base_from({"dataset": "digits", "epochs": 1, "lr": 0.1, "extra": {}})


# ---------------------------------------------------------- keys no notebook would receive
NOTEBOOKS_DIR = NOTEBOOKS[0].parent


@pytest.mark.parametrize("profile", ["smoke", "fast", "paper", "fashion_mnist"])
def test_shipped_profiles_pass_the_key_check(profile):
    load_profile(profile, notebooks_dir=NOTEBOOKS_DIR)


@pytest.mark.parametrize("text, message", [
    ("defaults: {epoch: 1}", r"'defaults' has \['epoch'\], which no notebook declares"),
    ("notebooks: {02_cifar_10: {epochs: 1}}", r"entries for \['02_cifar_10'\], which are not"),
    ("notebooks: {01_lslu_function: {epochs: 1}}", r"sets \['epochs'\], which 01_lslu_function"),
    ("defaults: {batch_size: 32}", r"'defaults' has \['batch_size'\], which no notebook"),
    ("notebooks: {02_cifar10: {extra: [lr]}}", r"'notebooks: 02_cifar10: extra' must be a mapping"),
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

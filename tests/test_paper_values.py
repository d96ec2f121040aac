"""The paper's numbers as data (lslu/paper_values.yaml, read by lslu.paper.paper_values)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from lslu.paper import (NOT_AVAILABLE, PAPER_VALUES_ENV, PAPER_VALUES_FILE, SCHEMA, paper_text,
                        paper_value, paper_values)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_override(monkeypatch):
    # a reader's own override must not leak into the shipped-file tests
    monkeypatch.delenv(PAPER_VALUES_ENV, raising=False)


def shipped() -> dict:
    return yaml.safe_load(PAPER_VALUES_FILE.read_text(encoding="utf-8"))


def write(tmp_path, data, name="values.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def leaves(values: dict):
    for exp, models in values.items():
        for model, quantities in models.items():
            for q, v in quantities.items():
                yield f"{exp}.{model}.{q}", v


def test_shipped_file_has_the_one_number_and_nothing_else():
    values = paper_values()
    assert paper_value("E2", "vanillanet_5", "gain", values) == pytest.approx(3.17)
    filled = {k: v for k, v in leaves(values) if v not in (None, {})}
    assert list(filled) == ["E2.vanillanet_5.gain"]
    # every key the schema names is there, so a chapter can look any of them up
    assert {(e, m, q) for e in SCHEMA for m in SCHEMA[e] for q in SCHEMA[e][m]} == \
        {tuple(k.split(".")) for k, _ in leaves(values)}


def test_paper_text():
    assert paper_text(None) == NOT_AVAILABLE == "not available"
    assert paper_text(3.17, signed=True) == "+3.17"
    assert paper_text(-0.5, signed=True, decimals=1) == "-0.5"
    assert paper_text(76.125, decimals=1) == "76.1"


def test_unknown_lookup_names_what_is_allowed():
    with pytest.raises(ValueError, match=r"'E7' is not one of E1, E2"):
        paper_value("E7", "vanillanet_5", "gain")
    with pytest.raises(ValueError, match=r"'vanillanet_5_x0_25' is not one of vanillanet_5"):
        paper_value("E2", "vanillanet_5_x0_25", "gain")


@pytest.mark.parametrize("bad, shown", [("3.17%", "'3.17%' (str)"), (True, "True (bool)"),
                                        (float("nan"), "nan (float)"), ([1, 2], "[1, 2] (list)")])
def test_a_value_that_is_not_a_number_fails_with_one_line(tmp_path, bad, shown):
    data = shipped()
    data["E1"]["resnet18"]["gain"] = bad
    path = write(tmp_path, data)
    with pytest.raises(ValueError) as info:
        paper_values(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: E1.resnet18.gain is {shown}; allowed: a finite number")


def test_an_unknown_key_fails_naming_the_allowed_ones(tmp_path):
    data = shipped()
    data["E2"]["vanillanet_5"]["gian"] = data["E2"]["vanillanet_5"].pop("gain")
    path = write(tmp_path, data)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: E2\.vanillanet_5\.gian is not a known key; "
                                         r"allowed under E2\.vanillanet_5: top1_baseline, "
                                         r"top1_lslu, gain$"):
        paper_values(path)
    with pytest.raises(ValueError, match=r"E10 is not a known key; allowed at the top: E1, E2"):
        paper_values(write(tmp_path, {"E10": {}}))
    with pytest.raises(ValueError, match=r"E2\.vgg16 is not a known key"):
        paper_values(write(tmp_path, {"E2": {"vgg16": {"gain": 1.0}}}))


def test_sweeps_check_their_swept_values(tmp_path):
    ok = write(tmp_path, {"E3": {"resnet18": {"top1_by_act_num": {1: 70.0, 3: 71.5},
                                               "best_act_num": 3}},
                          "E5": {"resnet18": {"top1_by_drop_rate": {0.0: 60, 0.05: 61.5}}}})
    values = paper_values(ok)
    assert values["E3"]["resnet18"] == {"top1_by_act_num": {1: 70.0, 3: 71.5}, "best_act_num": 3}
    assert values["E5"]["resnet18"]["top1_by_drop_rate"] == {0.0: 60, 0.05: 61.5}
    cases = [({"E3": {"resnet18": {"top1_by_act_num": {2.5: 70.0}}}},
              r"E3\.resnet18\.top1_by_act_num\.2\.5 is 2\.5; allowed: a whole number n >= 1$"),
             ({"E5": {"resnet18": {"top1_by_drop_rate": {1.0: 70.0}}}},
              r"top1_by_drop_rate\.1\.0 is 1\.0; allowed: a dropout rate in \[0, 1\)$"),
             ({"E5": {"resnet18": {"best_drop_rate": -0.1}}},
              r"best_drop_rate is -0\.1; allowed: a dropout rate in \[0, 1\), or null"),
             ({"E3": {"resnet18": {"top1_by_act_num": {3: "high"}}}},
              r"top1_by_act_num\.3 is 'high' \(str\); allowed: a finite number"),
             ({"E3": {"resnet18": {"top1_by_act_num": [70.0]}}},
              r"top1_by_act_num is \[70\.0\]; allowed: a mapping swept value -> top-1")]
    for data, message in cases:
        with pytest.raises(ValueError, match=message):
            paper_values(write(tmp_path, data))


def test_override_file_from_the_environment_replaces_values_key_by_key(tmp_path, monkeypatch):
    # a reader with the PDF fills in one value in a copy of the file
    data = shipped()
    data["E1"]["resnet18"]["top1_lslu"] = 95.25
    monkeypatch.setenv(PAPER_VALUES_ENV, str(write(tmp_path, data, "copy.yaml")))
    values = paper_values()
    assert values["E1"]["resnet18"]["top1_lslu"] == 95.25
    assert values["E2"]["vanillanet_5"]["gain"] == pytest.approx(3.17)
    # a file with only the added value works too, and may also set a value back to null
    monkeypatch.setenv(PAPER_VALUES_ENV, str(write(tmp_path, {
        "E6": {"vanillanet_5": {"gain": 1.5}}, "E2": {"vanillanet_5": {"gain": None}}}, "o.yaml")))
    values = paper_values()
    assert values["E6"]["vanillanet_5"]["gain"] == 1.5
    assert values["E2"]["vanillanet_5"]["gain"] is None
    assert values["E1"]["resnet18"]["top1_lslu"] is None  # the first override is gone
    # an explicit path wins over the environment
    assert paper_values(write(tmp_path, {}, "empty.yaml"))["E6"]["vanillanet_5"]["gain"] is None


def test_override_errors_name_the_override_file(tmp_path, monkeypatch):
    bad = write(tmp_path, {"E4": {"vanillanet_5": {"gain_over_frozen": "n/a"}}}, "mine.yaml")
    monkeypatch.setenv(PAPER_VALUES_ENV, str(bad))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(bad))}: E4\.vanillanet_5\.gain_over_frozen is 'n/a'"):
        paper_values()
    monkeypatch.setenv(PAPER_VALUES_ENV, str(tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match=r"missing\.yaml: no such paper-values file"):
        paper_values()
    broken = tmp_path / "broken.yaml"
    broken.write_text("E2: {vanillanet_5: {gain: [}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.yaml: not valid YAML") as info:
        paper_values(broken)
    assert "\n" not in str(info.value)


def test_an_incomplete_shipped_file_fails(tmp_path, monkeypatch):
    # the shipped file must list every key (with null), so every lookup has an answer
    data = shipped()
    del data["E9"]["vanillanet_5"]["gflops_lslu"]
    monkeypatch.setattr("lslu.paper.PAPER_VALUES_FILE", write(tmp_path, data))
    with pytest.raises(ValueError, match=r"E9\.vanillanet_5 lacks gflops_lslu; every key"):
        paper_values()


def test_the_wheel_ships_the_values_file(tmp_path):
    """Build a wheel from a copy of the package and find the file in it (package-data)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "lslu", src / "lslu", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-q", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True)
    wheel, = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert "lslu/paper_values.yaml" in z.namelist()

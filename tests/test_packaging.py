"""The project's infrastructure agrees with itself: pins, book configuration, notebooks, toc."""
from __future__ import annotations

import ast
import importlib
import importlib.metadata
import os
import re
import stat
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml

from lslu.book import toc_files as book_toc_files

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lines) -> dict[str, str]:
    pins = {}
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert m, f"not an exact pin (name==version): {raw!r}"
        name = _norm(m.group(1))
        assert name not in pins, f"{name} pinned twice"
        pins[name] = m.group(2)
    return pins


def requirements() -> dict[str, str]:
    return _pins((ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines())


def environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))


def environment_pip() -> list[str]:
    deps = environment()["dependencies"]
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one `pip:` section"
    return [str(x) for x in pip_sections[0]]


def book_config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))


def toc_files() -> list[str]:
    return book_toc_files(ROOT)


# ----------------------------------------------------------------------------- pins
def test_requirements_are_exact_pins():
    pins = requirements()
    assert len(pins) >= 20
    for must in ("torch", "jupyter-book", "papermill", "nbval", "pytest", "sphinx-mathjax-offline"):
        assert must in pins, f"{must} missing from requirements.txt"


def test_environment_yml_matches_requirements():
    env = environment()
    assert env["channels"] == ["conda-forge"]
    deps = env["dependencies"]
    assert "python=3.11" in deps
    assert "pip" in deps
    pip = environment_pip()
    assert "-e ." in pip, "environment.yml should install the package itself (-e .)"
    env_pins = _pins(x for x in pip if x != "-e .")
    req = requirements()
    assert sorted(env_pins) == sorted(req), (
        f"only in environment.yml: {sorted(set(env_pins) - set(req))}; "
        f"only in requirements.txt: {sorted(set(req) - set(env_pins))}")
    differ = {k: (env_pins[k], req[k]) for k in req if env_pins[k] != req[k]}
    assert not differ, f"versions differ (environment.yml, requirements.txt): {differ}"


def test_jupyter_book_is_pinned_to_1x():
    # jupyter-book 2.x ignores _config.yml/_toc.yml, builds nothing and still exits 0.
    assert requirements()["jupyter-book"].startswith("1.")
    assert importlib.metadata.version("jupyter-book").startswith("1.")


def test_pyproject_version_and_package():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    tree = ast.parse((ROOT / "lslu" / "__init__.py").read_text(encoding="utf-8"))
    versions = [node.value.value for node in tree.body if isinstance(node, ast.Assign)
                and any(getattr(t, "id", None) == "__version__" for t in node.targets)]
    assert versions == [meta["project"]["version"]]
    assert meta["project"]["requires-python"] == ">=3.11"
    # every package folder of lslu ships (a new subpackage missing here would be left out of a wheel)
    folders = sorted(".".join(p.parent.relative_to(ROOT).parts)
                     for p in (ROOT / "lslu").rglob("__init__.py"))
    assert sorted(meta["tool"]["setuptools"]["packages"]) == folders


# ------------------------------------------------------------------------ book config
def test_book_config_offline_and_not_executing():
    cfg = book_config()
    assert cfg["title"] == "LSLU companion"
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert cfg["only_build_toc_files"] is True
    excluded = set(cfg["exclude_patterns"])
    for d in (".venv", "_build", "lslu", "tests", "profiles", "notebooks", ".pytest_cache"):
        assert d in excluded, f"{d} should be in exclude_patterns"
    extensions = cfg["sphinx"]["extra_extensions"]
    assert "sphinx-mathjax-offline" in extensions
    importlib.import_module("sphinx-mathjax-offline")  # the module really has dashes
    assert not any("intersphinx" in e for e in extensions)  # fails offline under -W
    assert cfg["launch_buttons"]["thebe"] is False
    assert cfg["html"]["use_repository_button"] is False


def test_toc_files_exist_and_match_notebooks():
    files = toc_files()
    assert files[0] == "book/intro"
    for f in files:
        if f.startswith("book/executed/"):
            continue
        assert (ROOT / f"{f}.md").exists() or (ROOT / f"{f}.ipynb").exists(), f
    executed = {f.removeprefix("book/executed/") for f in files if f.startswith("book/executed/")}
    sources = {p.stem for p in NOTEBOOKS}
    assert executed == sources, (
        f"notebooks without a chapter in _toc.yml: {sorted(sources - executed)}; "
        f"chapters without a notebook: {sorted(executed - sources)}")


# ---------------------------------------------------------------------------- notebooks
def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 1
    assert (ROOT / "notebooks" / "01_lslu_function.ipynb") in NOTEBOOKS


# Never an empty (skipped) parametrization: without notebooks, 01's check fails.
_CHECKED = NOTEBOOKS or [ROOT / "notebooks" / "01_lslu_function.ipynb"]


@pytest.mark.parametrize("path", _CHECKED, ids=[p.stem for p in _CHECKED])
def test_notebook_conventions(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code", \
        "exactly one code cell tagged `parameters`"
    code_lines = [ln.strip() for c in nb.cells if c.cell_type == "code"
                  for ln in c.source.splitlines()]
    assert "%matplotlib inline" in code_lines
    assert any(ln.startswith("# ") for c in nb.cells if c.cell_type == "markdown"
               for ln in c.source.splitlines()), "a markdown `# ` heading gives the chapter title"
    injected = [c for c in nb.cells if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    assert not injected, "papermill's injected-parameters cell must not be committed"


# ---------------------------------------------------------------------------- profiles
@pytest.mark.parametrize("name", ["smoke", "fast", "paper"])
def test_profiles_load(name):
    from lslu.book import load_profile
    prof = load_profile(name)
    assert prof["name"] == name
    assert prof["description"]
    assert prof["defaults"].get("profile") == name
    stems = {p.stem for p in NOTEBOOKS}
    assert set(prof["notebooks"]) <= stems


# ------------------------------------------------------------------------ make and CI
def test_makefile_targets_and_ci_entry_point():
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("venv", "book", "test", "baselines", "clean"):
        assert re.search(rf"^{target}:", text, re.MULTILINE), f"make target {target} missing"
    assert "--nbval" in text and "tests/nbval_sanitize.cfg" in text
    ci = ROOT / ".ci" / "run"
    assert ci.stat().st_mode & stat.S_IXUSR
    body = ci.read_text(encoding="utf-8")
    assert "set -euo pipefail" in body and "make test" in body


def test_nbval_sanitizers():
    from nbval.plugin import get_sanitize_patterns
    pats = get_sanitize_patterns((ROOT / "tests" / "nbval_sanitize.cfg").read_text(encoding="utf-8"))
    assert len(pats) >= 4

    def sanitize(s):
        for regex, replace in pats:
            s = re.sub(regex, replace, s)
        return s

    bar1 = "epoch 1:  45%|####5     | 45/100 [00:01<00:02, 30.1it/s]\r"
    bar2 = "epoch 1: 100%|##########| 100/100 [00:03<00:00, 31.2it/s, loss=0.2]\ndone"
    assert sanitize(bar1 + bar2) == sanitize(bar2) == "TQDM-PROGRESS\ndone"
    assert sanitize("took 12.3 s") == sanitize("took 0.4s") == "took N s"
    assert sanitize("elapsed 0:00:12") == sanitize("elapsed 1:02:03") == "elapsed H:MM:SS"
    assert sanitize("<object at 0x7f3a2c1e5d90>") == sanitize("<object at 0x55d1>")
    kept = "12 seeds, 3 samples, top-1 45.3%, 10 epochs, split 80:20, lr 2e-3"
    assert sanitize(kept) == kept


def test_no_absolute_paths_of_this_machine():
    home = os.path.expanduser("~")
    files = [ROOT / n for n in ("Makefile", "pyproject.toml", "environment.yml", "_config.yml",
                                "_toc.yml", "README.md", "lslu/book.py")]
    files += list((ROOT / "book").glob("*.md")) + list((ROOT / "profiles").glob("*.yaml"))
    for f in files:
        text = f.read_text(encoding="utf-8")
        assert str(ROOT) not in text, f"{f.name} contains the checkout's absolute path"
        if home not in ("", "/"):
            assert home + "/" not in text, f"{f.name} contains the home directory"

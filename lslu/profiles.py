"""Named profiles of notebook parameters, and what each notebook declares and receives.

A profile is ``<profiles dir>/<name>.yaml`` (``--profiles-dir``, else ``$LSLU_PROFILES_DIR``, else
``./profiles``, else the checkout's ``profiles/``; see find_profiles_dir)::

    description: one line shown on result pages
    defaults:            # offered to every notebook that declares a parameter of that name
      dataset: digits
      extra: {batch_size: 128}   # TrainConfig fields without a notebook parameter of their own
    notebooks:           # per-notebook overrides, keyed by notebook stem
      02_cifar10: {epochs: 5, extra: {lr: 0.001}}

Each notebook receives, through papermill, only the parameters that its ``parameters`` cell
declares: the profile's defaults, overridden by its own entry under ``notebooks``, and always
``profile`` (the profile's name) when it declares one; a profile key that no notebook would
receive is an error before anything runs.

``extra`` holds every training setting that is not a notebook parameter of its own (any
TrainConfig field, lslu/config.py), and a profile holds only what it changes. It is merged key
by key: an entry's ``extra`` adds to and overrides ``defaults: extra``, so each setting is written
once (above, 02_cifar10 gets ``{batch_size: 128, lr: 0.001}``). The merged dict replaces the
notebook's own ``extra`` as a whole: a profile that gives ``extra`` lists every field it wants
away from TrainConfig's defaults (e.g. the notebooks' ``decay_epochs: 3``).

``python -m lslu.book baselines`` passes no parameters, so the notebooks run with their own
defaults (the smoke profile); that regenerates the outputs that ``pytest --nbval`` compares
against.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import yaml

__all__ = ["PROFILES_DIR", "find_profiles_dir", "available_profiles", "load_profile",
           "profile_values", "declared_parameters", "notebook_parameters", "find_notebooks"]

#: ``profiles/`` of the checkout this package runs from (the last place find_profiles_dir looks).
PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"
_PROFILE_KEYS = {"description", "defaults", "notebooks"}


def find_profiles_dir(profiles_dir: str | os.PathLike | None = None) -> Path:
    """The profiles folder of the repository being worked on.

    ``profiles_dir`` if given, else ``$LSLU_PROFILES_DIR``, else ``./profiles`` of the working
    directory, else the ``profiles/`` of the checkout this package was imported from. A folder
    given explicitly (argument or variable) must exist; ValueError when none is found.
    """
    for given, what in ((profiles_dir, "profiles_dir"),
                        (os.environ.get("LSLU_PROFILES_DIR") or None, "LSLU_PROFILES_DIR")):
        if given is not None:
            d = Path(given).expanduser()
            if not d.is_dir():
                raise ValueError(f"{what} {str(given)!r} is not a folder (it should hold the "
                                 f"profiles <name>.yaml)")
            return d.resolve()
    for d in (Path.cwd() / "profiles", PROFILES_DIR):
        if d.is_dir():
            return d.resolve()
    raise ValueError("no profiles folder found: run from the repository root (./profiles), or "
                     "pass --profiles-dir / set LSLU_PROFILES_DIR")


def available_profiles(profiles_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the profiles in ``profiles_dir`` (default: find_profiles_dir())."""
    return sorted(p.stem for p in find_profiles_dir(profiles_dir).glob("*.yaml"))


def load_profile(name: str, profiles_dir: str | os.PathLike | None = None,
                 notebooks_dir: str | os.PathLike | None = None) -> dict:
    """Load and validate ``<profiles_dir>/<name>.yaml`` (profiles_dir: see find_profiles_dir).

    Returns a dict with ``name``, ``description`` (str), ``defaults`` (dict) and ``notebooks``
    (dict of stem -> dict).  Raises ``ValueError`` naming the valid profiles if ``name`` is
    unknown, or describing the problem if the file is malformed. With ``notebooks_dir``, a key
    that would be dropped silently is an error too: a default that no notebook declares (a
    misspelled ``epoch``), an entry for a notebook that does not exist, an override that its
    notebook does not declare.
    """
    d = find_profiles_dir(profiles_dir)
    valid = available_profiles(d)
    if name not in valid:
        raise ValueError(f"unknown profile {name!r}; valid profiles: {', '.join(valid) or '(none)'}"
                         f" (files {d.name}/<name>.yaml)")
    path = d / f"{name}.yaml"
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: expected a mapping at the top level")
    unknown = set(data) - _PROFILE_KEYS
    if unknown:
        raise ValueError(f"{path.name}: unknown keys {sorted(unknown)}; "
                         f"allowed: {sorted(_PROFILE_KEYS)}")
    description = data.get("description") or ""
    defaults = data.get("defaults") or {}
    notebooks = data.get("notebooks") or {}
    if not isinstance(description, str) or "\n" in description.strip():
        raise ValueError(f"{path.name}: 'description' must be a one-line string")
    if not isinstance(defaults, dict):
        raise ValueError(f"{path.name}: 'defaults' must be a mapping of parameter -> value")
    if not isinstance(notebooks, dict) or not all(isinstance(v, dict) or v is None
                                                  for v in notebooks.values()):
        raise ValueError(f"{path.name}: 'notebooks' must map notebook stems to mappings")
    for where, values in [("defaults", defaults)] + [(f"notebooks: {k}", v or {})
                                                     for k, v in notebooks.items()]:
        if not isinstance(values.get("extra") or {}, dict):
            raise ValueError(f"{path.name}: '{where}: extra' must be a mapping of TrainConfig "
                             f"fields, got {values['extra']!r}")
    prof = {"name": name, "description": description.strip(), "defaults": dict(defaults),
            "notebooks": {str(k): dict(v or {}) for k, v in notebooks.items()},
            "path": str(path)}
    if notebooks_dir is not None:
        _check_profile_keys(prof, path, notebooks_dir)
    return prof


def _check_profile_keys(prof: dict, path: Path, notebooks_dir: str | os.PathLike) -> None:
    """ValueError for a key of the profile that no notebook in ``notebooks_dir`` would receive."""
    declared = {p.stem: set(declared_parameters(p)) for p in find_notebooks(notebooks_dir)}
    if not declared:
        raise ValueError(f"no notebooks found in {notebooks_dir}")
    stems = sorted(declared)
    unknown = sorted(set(prof["notebooks"]) - set(declared))
    if unknown:
        raise ValueError(f"{path.name}: 'notebooks' has entries for {unknown}, which are not "
                         f"notebooks in {notebooks_dir} ({', '.join(stems)})")
    anywhere = set().union(*declared.values())
    unused = sorted(set(prof["defaults"]) - anywhere)
    if unused:
        raise ValueError(f"{path.name}: 'defaults' has {unused}, which no notebook declares "
                         f"(declared: {', '.join(sorted(anywhere))})")
    for stem, overrides in prof["notebooks"].items():
        bad = sorted(set(overrides) - declared[stem])
        if bad:
            raise ValueError(f"{path.name}: 'notebooks: {stem}' sets {bad}, which {stem} does not "
                             f"declare (it declares: {', '.join(sorted(declared[stem]))})")


def _as_profile(profile: str | dict, notebooks_dir: str | os.PathLike | None = None,
                profiles_dir: str | os.PathLike | None = None) -> dict:
    if isinstance(profile, str):
        return load_profile(profile, profiles_dir, notebooks_dir)
    return profile


def profile_values(profile: dict, stem: str, declared: Iterable[str]) -> dict:
    """What a loaded ``profile`` gives the notebook ``stem`` declaring ``declared``: its
    ``defaults`` overridden by ``notebooks[stem]`` (``extra`` merged key by key), restricted to
    the declared names, and ``profile`` (the profile's name) when declared. Used to run a
    notebook and, in the summary, to recognise the headlines a notebook saved when it ran with
    this profile."""
    declared = set(declared)
    defaults = profile.get("defaults", {})
    own = profile.get("notebooks", {}).get(stem) or {}
    merged = {**defaults, **own}
    if "extra" in defaults and "extra" in own:  # per key: a profile writes a setting once
        merged["extra"] = {**(defaults["extra"] or {}), **(own["extra"] or {})}
    values = {k: v for k, v in merged.items() if k in declared}
    if "profile" in declared and profile.get("name") is not None:
        values["profile"] = profile["name"]
    return values


def declared_parameters(notebook_path: str | os.PathLike) -> dict:
    """The parameters declared in the notebook's ``parameters`` cell (papermill's inspection)."""
    import papermill  # imported here: a second to import, and only this inspection needs it
    return dict(papermill.inspect_notebook(str(notebook_path)))


def notebook_parameters(profile: str | dict, notebook_path: str | os.PathLike) -> dict:
    """Parameters to pass to one notebook under ``profile`` (a name or a loaded profile).

    The profile's ``defaults`` overridden by ``notebooks[<stem>]`` (``extra`` merged key by key:
    profile_values), restricted to the names the notebook declares; ``profile`` is always set to
    the profile's name if declared.  A per-notebook override for a name the notebook does not
    declare is a mistake in the profile and raises ``ValueError`` (a default that a notebook does
    not declare is simply not passed).
    """
    prof = _as_profile(profile)
    path = Path(notebook_path)
    declared = declared_parameters(path)
    overrides = prof.get("notebooks", {}).get(path.stem, {}) or {}
    undeclared = sorted(set(overrides) - set(declared))
    if undeclared:
        raise ValueError(
            f"profile {prof.get('name')!r} overrides {undeclared} for {path.stem}, which declares "
            f"only {sorted(declared) or '(no parameters)'} in its 'parameters' cell")
    return profile_values(prof, path.stem, declared)



def find_notebooks(notebooks_dir: str | os.PathLike = "notebooks",
                   only: Iterable[str] | None = None) -> list[Path]:
    """``notebooks_dir/*.ipynb`` sorted by name, restricted to the stems in ``only`` if given."""
    d = Path(notebooks_dir)
    found = sorted(p for p in d.glob("*.ipynb") if not p.name.startswith("."))
    if only:
        wanted = [Path(s).stem if s.endswith(".ipynb") else Path(s).name for s in only]
        stems = {p.stem for p in found}
        missing = [w for w in wanted if w not in stems]
        if missing:
            raise ValueError(f"no notebook named {missing} in {d}; available: "
                             f"{', '.join(sorted(stems)) or '(none)'}")
        found = [p for p in found if p.stem in set(wanted)]
    return found

"""The LSLU paper's numbers, read from data: ``lslu/paper_values.yaml``.

This book was written from the paper's abstract and its reference code. The abstract gives one
number (LSLU's +3.17 pp top-1 on CIFAR-100 for VanillaNet, Table 3); every other entry of the
file is null, "not available". A reader with the PDF fills in a value there (or in a file named
by the environment variable ``LSLU_PAPER_VALUES``, whose values replace the shipped ones key by
key), rebuilds, and the chapter's "paper vs ours" shows it. Chapters never type a paper number:
they read it with :func:`paper_value` and show it with :func:`paper_text`.

The file is checked before anything uses it: an unknown key, or a value that is neither a finite
number nor null, raises a ValueError of one line naming the file, the key and what is allowed.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import yaml

__all__ = ["PAPER_VALUES_FILE", "PAPER_VALUES_ENV", "NOT_AVAILABLE", "SCHEMA", "paper_values",
           "paper_value", "paper_text"]

PAPER_VALUES_FILE = Path(__file__).resolve().parent / "paper_values.yaml"
PAPER_VALUES_ENV = "LSLU_PAPER_VALUES"
#: How a paper entry the book does not have is shown (the PDF exists; we only lack its tables).
NOT_AVAILABLE = "not available"

# What the file may hold: experiment -> model -> quantity -> kind. Kinds: "number" (a finite
# number, or null); "level:<axis>" (one swept value of <axis>, or null); "sweep:<axis>" (a mapping
# swept value -> top-1, empty until filled in). To give a chapter a new paper entry, add its key
# here and to the file.
_WITH_WITHOUT = {"top1_baseline": "number", "top1_lslu": "number", "gain": "number"}
_MODELS = ("vanillanet_5", "resnet18")
SCHEMA: dict[str, dict[str, dict[str, str]]] = {
    "E1": {m: _WITH_WITHOUT for m in _MODELS},
    "E2": {m: _WITH_WITHOUT for m in _MODELS},
    "E3": {m: {"top1_by_act_num": "sweep:act_num", "best_act_num": "level:act_num"}
           for m in _MODELS},
    "E4": {m: {"gain_over_frozen": "number"} for m in _MODELS},
    "E5": {m: {"top1_by_drop_rate": "sweep:drop_rate", "best_drop_rate": "level:drop_rate"}
           for m in _MODELS},
    "E6": {m: _WITH_WITHOUT for m in _MODELS},
    "E9": {"vanillanet_5": {f"{q}_{arm}": "number" for q in ("params_m", "gflops", "latency_ms")
                            for arm in ("baseline", "lslu")}},
}

# The values an axis may take, and the same in words for the error message.
_LEVELS = {
    "act_num": (lambda v: _is_number(v) and float(v).is_integer() and v >= 1,
                "a whole number n >= 1"),
    "drop_rate": (lambda v: _is_number(v) and 0 <= v < 1, "a dropout rate in [0, 1)"),
}


def _is_number(value) -> bool:
    # bool is an int in Python, but `true` in the file is a mistake, not 1
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _fail(path, key: str, what: str):
    raise ValueError(f"{path}: {key} {what}")


def _check_number(path, key: str, value) -> None:
    if value is not None and not _is_number(value):
        _fail(path, key, f"is {value!r} ({type(value).__name__}); allowed: a finite number, "
                         f"or null for not available")


def _check_level(path, key: str, axis: str, value, nullable: bool = True) -> None:
    ok, words = _LEVELS[axis]
    if not ((value is None and nullable) or ok(value)):
        _fail(path, key, f"is {value!r}; allowed: {words}" + (", or null for not available"
                                                              if nullable else ""))


def _check_mapping(path, key: str, value, allowed, partial: bool) -> dict:
    """``value`` as a mapping whose keys are all in ``allowed`` (and, unless ``partial``, that
    has every one of them)."""
    value = {} if value is None else value
    where = key or "the file"
    if not isinstance(value, dict):
        _fail(path, where, f"is {value!r}; allowed: a mapping with the keys "
                           f"{', '.join(map(str, allowed))}")
    unknown = [k for k in value if k not in allowed]
    if unknown:
        _fail(path, f"{key}.{unknown[0]}" if key else str(unknown[0]),
              f"is not a known key; allowed {'under ' + key if key else 'at the top'}: "
              f"{', '.join(map(str, allowed))}")
    missing = [k for k in allowed if k not in value]
    if missing and not partial:
        _fail(path, where, f"lacks {', '.join(map(str, missing))}; every key must be present "
                           f"(null for not available)")
    return value


def _read(path: Path, partial: bool) -> dict:
    """The file at ``path``, checked against SCHEMA, as experiment -> model -> quantity -> value.
    ``partial``: keys may be left out (an override file holds only what it adds)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such paper-values file (set {PAPER_VALUES_ENV} to an "
                         f"existing YAML file, or unset it)") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    out: dict = {}
    for exp, models in _check_mapping(path, "", raw, SCHEMA, partial).items():
        for model, quantities in _check_mapping(path, exp, models, SCHEMA[exp], partial).items():
            allowed = SCHEMA[exp][model]
            got = _check_mapping(path, f"{exp}.{model}", quantities, allowed, partial)
            for q, value in got.items():
                key = f"{exp}.{model}.{q}"
                kind, _, axis = allowed[q].partition(":")
                if kind == "number":
                    _check_number(path, key, value)
                elif kind == "level":
                    _check_level(path, key, axis, value)
                else:  # a sweep: swept value -> top-1
                    value = {} if value is None else value
                    if not isinstance(value, dict):
                        _fail(path, key, f"is {value!r}; allowed: a mapping swept value -> "
                                         f"top-1 (%), e.g. {{3: 76.1}}, or {{}} for none")
                    for level, top1 in value.items():
                        _check_level(path, f"{key}.{level}", axis, level, nullable=False)
                        _check_number(path, f"{key}.{level}", top1)
                    value = dict(value)
                out.setdefault(exp, {}).setdefault(model, {})[q] = value
    return out


def paper_values(path: str | os.PathLike | None = None) -> dict:
    """The paper's values: experiment -> model -> quantity -> number, or None (not available);
    a sweep quantity (``top1_by_act_num``, ``top1_by_drop_rate``) is a dict swept value -> top-1.

    Reads the shipped ``lslu/paper_values.yaml``, then the override file ``path`` (default: the
    file named by ``$LSLU_PAPER_VALUES``, if set), whose values replace the shipped ones. Raises
    ValueError (one line: the file, the key, what is allowed) for an unknown key or a value that
    is neither a finite number nor null.
    """
    values = _read(PAPER_VALUES_FILE, partial=False)
    override = path if path is not None else os.environ.get(PAPER_VALUES_ENV) or None
    if override is not None:
        for exp, models in _read(Path(override), partial=True).items():
            for model, quantities in models.items():
                for q, value in quantities.items():
                    if isinstance(value, dict):  # a sweep: add or replace swept values
                        values[exp][model][q] = {**values[exp][model][q], **value}
                    else:
                        values[exp][model][q] = value
    return values


def paper_value(experiment: str, model: str, quantity: str, values: dict | None = None):
    """One entry of :func:`paper_values` (None when not available). Raises ValueError naming
    the allowed keys for an experiment, model or quantity the file does not have."""
    values = paper_values() if values is None else values
    for key, allowed in ((experiment, SCHEMA), (model, SCHEMA.get(experiment, {})),
                         (quantity, SCHEMA.get(experiment, {}).get(model, {}))):
        if key not in allowed:
            raise ValueError(f"no paper value {experiment}.{model}.{quantity}: {key!r} is not "
                             f"one of {', '.join(map(str, allowed))}")
    return values[experiment][model][quantity]


def paper_text(value, signed: bool = False, decimals: int = 2) -> str:
    """A paper value as a table shows it: NOT_AVAILABLE for None, else the number with
    ``decimals`` decimals (and a sign when ``signed``, for gains)."""
    if value is None:
        return NOT_AVAILABLE
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"

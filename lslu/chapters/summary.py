"""Chapter 12, the results summary: every chapter's headline numbers for one profile."""
from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd

from ..book import load_profile, profile_values
from ..results import ResultsStore
from ..paper import NOT_AVAILABLE, paper_values
from .plots import as_frame, new_axes, style_axes


def configs(**params) -> list:
    """Chapter 12 trains nothing (it reads the other chapters' headlines)."""
    return []


HEADLINE_KEYS = ("experiment", "quantity", "ours", "paper", "unit")


# Units of quantities that are times: they change from run to run and machine to machine.
TIMING_UNITS = ("s", "ms", "us", "min", "h", "img/s", "images/s", "it/s")


def load_headlines(profile: str, results_dir=None, profiles_dir=None) -> dict:
    """Notebook stem -> the headline rows (save_headline) its notebook saved when it ran with the
    parameters ``profile`` gives it (profiles/<profile>.yaml over the notebook's defaults); rows
    saved with other parameters (a notebook run by hand) are not shown. Raises a RuntimeError
    saying what to run when there are none."""
    prof = load_profile(profile, profiles_dir)
    store = ResultsStore(results_dir)
    headlines = store.headlines(
        profile, lambda stem, defaults: {**defaults, **profile_values(prof, stem, defaults)})
    if not headlines:
        raise RuntimeError(
            f"no headline numbers for profile {profile!r} in {store.root / 'headlines' / profile}"
            f" saved with the profile's parameters: run the other notebooks first: python -m "
            f"lslu.book execute --profile {profile} (with the same LSLU_RESULTS_DIR / results_dir)")
    return headlines


def _numbers(tree) -> list[float]:
    """Every number of lslu.paper.paper_values() (sweeps included)."""
    if isinstance(tree, dict):
        return [n for v in tree.values() for n in _numbers(v)]
    return [] if tree is None else [float(tree)]


def paper_value_count() -> int:
    """How many numbers of the paper lslu/paper_values.yaml (or $LSLU_PAPER_VALUES) gives."""
    return len(_numbers(paper_values()))


# Experiments whose headlines derive paper values from the file's (E9: extra parameters, latency
# ratio), so that their number need not be one of the file's.
_DERIVED_PAPER_VALUES = ("E9",)


def _paper_value_ok(value, known: list[float], experiment: str) -> bool:
    """NOT_AVAILABLE (or empty), or a text that starts with one of the paper's numbers (as
    lslu.paper.paper_text writes it, e.g. '+3.17 (VanillaNet-5, CIFAR-100)'), or with any number
    for an experiment in _DERIVED_PAPER_VALUES."""
    text = str(value if value is not None else "").strip()
    if text in ("", NOT_AVAILABLE):
        return True
    head = text.split()[0]
    try:
        number = float(head.rstrip("%"))
    except ValueError:
        return False
    return any(abs(number - k) < 0.005 for k in known) or experiment in _DERIVED_PAPER_VALUES


def _experiment_key(experiment: str):
    text = str(experiment)
    if text[:1].upper() == "E" and text[1:].isdigit():
        return (0, int(text[1:]), "")
    return (1, 0, text)


def headline_frame(headlines: dict) -> pd.DataFrame:
    """One row per headline number (from load_headlines): chapter, experiment, quantity, ours,
    paper, unit and ``timing`` (True for times and latency ratios: flagged ``"timing": True`` by
    their chapter, or a time unit). Sorted by experiment (E1..E9, then the rest), chapter, order.

    Raises ValueError for a row without the keys experiment, quantity, ours, paper, unit, and for
    a row whose paper value is neither NOT_AVAILABLE nor a number of lslu.paper.paper_values().
    """
    known = _numbers(paper_values())
    rows = []
    for chapter, numbers in headlines.items():
        if isinstance(numbers, dict):
            numbers = numbers.get("rows", [numbers])
        for i, row in enumerate(numbers):
            missing = [k for k in HEADLINE_KEYS if k not in row]
            if missing:
                raise ValueError(f"headline {i} of {chapter} lacks {missing}: {row}")
            if not _paper_value_ok(row["paper"], known, str(row["experiment"])):
                raise ValueError(
                    f"headline {i} of {chapter} ({row['quantity']}) gives the paper's value as "
                    f"{row['paper']!r}; allowed: {NOT_AVAILABLE!r} or a number of "
                    f"lslu/paper_values.yaml ({', '.join(f'{k:g}' for k in known) or 'none'})")
            timing = bool(row.get("timing")) or str(row["unit"]).strip() in TIMING_UNITS
            rows.append({"chapter": chapter, "experiment": str(row["experiment"]),
                         "quantity": row["quantity"], "ours": row["ours"],
                         "paper": row["paper"] or NOT_AVAILABLE, "unit": row["unit"],
                         "timing": timing, "_order": i})
    frame = pd.DataFrame(rows, columns=["chapter", "experiment", "quantity", "ours", "paper",
                                        "unit", "timing", "_order"])
    # keep ints and text as given
    frame["ours"] = pd.Series([r["ours"] for r in rows], dtype=object)
    keys = frame["experiment"].map(_experiment_key)
    frame = frame.assign(_key=keys).sort_values(["_key", "chapter", "_order"], kind="stable")
    return frame.drop(columns=["_key", "_order"]).reset_index(drop=True)


def format_headline_value(value) -> str:
    """A headline's value as shown: floats with 2 decimals, integers and text as they are."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def headline_display(frame: pd.DataFrame, timing: bool | None = None) -> pd.DataFrame:
    """headline_frame for the page (values via format_headline_value); ``timing`` True/False keeps
    only the machine-dependent / only the stable rows, None keeps all."""
    if timing is not None:
        frame = frame[frame["timing"] == timing]
    return pd.DataFrame({
        "experiment": frame["experiment"], "quantity": frame["quantity"],
        "ours": [format_headline_value(v) for v in frame["ours"]], "paper": frame["paper"],
        "unit": frame["unit"], "chapter": frame["chapter"]}).reset_index(drop=True)


def experiments_without_headline(frame: pd.DataFrame, experiments=None) -> list[str]:
    """The experiments E1..E9 (or ``experiments``) no chapter reported a headline for."""
    wanted = experiments or [f"E{i}" for i in range(1, 10)]
    have = set(frame["experiment"])
    return [e for e in wanted if e not in have]


def plot_headline_gains(frame, paper_gain: float | None = None, ax=None,
                        title="Gains reported by the chapters", wrap: int = 48,
                        paper_setting: str = "VanillaNet, CIFAR-100"):
    """Horizontal bars of every headline gain (rows of headline_frame with unit 'pp'
    whose quantity names a gain, and a numeric value), labelled 'experiment: quantity' (wrapped
    at ``wrap`` characters), with the paper's gain (measured on ``paper_setting``) as a dashed
    line when given (lslu.paper: None when not available). No such rows: an empty panel that says
    so."""
    df = as_frame(frame)
    if len(df):
        numeric = pd.to_numeric(df["ours"], errors="coerce")
        keep = (df["unit"] == "pp") & numeric.notna() & df["quantity"].str.contains("gain",
                                                                                   case=False)
        rows, values = df[keep], numeric[keep].to_numpy()
    else:
        rows, values = df, np.array([])
    labels = [textwrap.fill(f"{e}: {q}", wrap) for e, q in zip(rows.get("experiment", []),
                                                                rows.get("quantity", []))]
    height = sum(0.22 * (label.count("\n") + 1) + 0.2 for label in labels)
    fig, ax = new_axes(ax, figsize=(9.0, max(2.5, height + 1.5)))
    if len(rows):
        pos = np.arange(len(rows))[::-1]
        ax.barh(pos, values, color=["C0" if v >= 0 else "C3" for v in values])
        ax.set_yticks(pos, labels, fontsize="small")
        ax.axvline(0, color="k", lw=0.8)
    else:
        ax.text(0.5, 0.5, "no chapter reported a gain in pp", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_yticks([])
    if paper_gain is not None:
        ax.axvline(paper_gain, color="C1", ls="--", lw=1.5,
                   label=f"paper: {paper_gain:+g} pp ({paper_setting})")
    style_axes(ax, "gain (pp)", None, title)
    return fig

"""Chapter 12, the results summary: every chapter's headline numbers for one profile."""
from __future__ import annotations

import math
import re
import textwrap

import numpy as np
import pandas as pd

from ..book import load_profile, profile_values
from ..results import ResultsStore
from ..paper import NOT_AVAILABLE, paper_values
from .common import (bootstrap_interval, fmt_interval, fmt_p, fmt_pp, show_table, verdict,
                     welch_test, wrap)
from .plots import new_axes, style_axes


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
    """A headline's value as shown: floats with the shared 2 decimals, integers with thousands
    separators, text as it is."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
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


# --- One row per distinct comparison, with its interval and a verdict -------------------------

# "<label>, <model> on <datasets>" ends every gain's quantity (cifar.headline_rows, zoo_headlines),
# optionally followed by " (paper: <setting>)": the setting two comparisons must share to be
# reconciled.
_SETTING = re.compile(r",\s*([\w.-]+) on ([\w, .-]+?)(?: \(paper: .*\))?$")


def comparison_frame(headlines: dict) -> pd.DataFrame:
    """One row per distinct comparison among the gains (unit 'pp') of ``headlines``
    (load_headlines): rows that carry the same run ids (chapters that reuse the same runs, e.g.
    E1, E7, E8) become one row listing every experiment and chapter. With the per-seed values a
    row stores, the gain is recomputed from them with Welch's p and a bootstrap 95% interval;
    a gain saved without them (or with one seed) has 'n/a' for both. Columns: comparison,
    setting, experiments, chapters, gain, ci_low, ci_high, p_value, seeds, verdict."""
    groups: dict = {}
    for chapter, numbers in headlines.items():
        if isinstance(numbers, dict):
            numbers = numbers.get("rows", [numbers])
        for i, row in enumerate(numbers):
            if str(row.get("unit", "")).strip() != "pp" or "gain" not in str(row["quantity"]):
                continue
            try:
                ours = float(row["ours"])
            except (TypeError, ValueError):
                continue
            runs = row.get("runs")
            key = tuple(runs) if runs else (chapter, i)  # no run ids: cannot be shared
            group = groups.setdefault(key, {"row": row, "ours": ours, "experiments": [],
                                            "chapters": []})
            for name, value in (("experiments", str(row["experiment"])), ("chapters", chapter)):
                if value not in group[name]:
                    group[name].append(value)
    out = []
    for group in groups.values():
        row = group["row"]
        a, b = row.get("baseline_values"), row.get("values")
        gain, p, (lo, hi), seeds = group["ours"], math.nan, (math.nan, math.nan), "n/a"
        if a and b:
            gain = float(np.mean(b) - np.mean(a))
            _, p = welch_test(a, b)
            if min(len(a), len(b)) >= 2:
                lo, hi = bootstrap_interval(a, b)
            seeds = f"{len(a)}/{len(b)}"
        match = _SETTING.search(str(row["quantity"]))
        out.append({"comparison": str(row["quantity"]),
                    "setting": f"{match.group(1)} on {match.group(2)}" if match else "",
                    "experiments": ", ".join(group["experiments"]),
                    "chapters": ", ".join(group["chapters"]), "gain": gain, "ci_low": lo,
                    "ci_high": hi, "p_value": p, "seeds": seeds,
                    "verdict": verdict(gain, lo, hi, p).split(": ", 1)[-1]
                    if a and b else "per-seed numbers not stored: no interval"})
    return pd.DataFrame(out, columns=["comparison", "setting", "experiments", "chapters", "gain",
                                      "ci_low", "ci_high", "p_value", "seeds", "verdict"])


def comparison_display(comparisons: pd.DataFrame):
    """comparison_frame for the page (common.show_table): gains and intervals in pp with the
    shared rounding, p with 3 significant digits."""
    table = pd.DataFrame({
        "comparison": comparisons["comparison"], "used by": comparisons["chapters"],
        "gain (pp)": [fmt_pp(g) for g in comparisons["gain"]],
        "95% interval (pp)": [fmt_interval(lo, hi) for lo, hi in
                              zip(comparisons["ci_low"], comparisons["ci_high"])],
        "Welch p": [fmt_p(p) for p in comparisons["p_value"]],
        "seeds": comparisons["seeds"], "verdict": comparisons["verdict"]})
    return show_table(table)


def reconcile(first: pd.Series, second: pd.Series) -> str:
    """Why two comparisons of the same setting (rows of comparison_frame from different runs)
    report different gains, from their numbers: intervals that overlap do not contradict each
    other; disjoint ones mean the runs differ by more than seed noise (other seeds, epochs or
    parameters: compare the chapters' parameters)."""
    head = (f"{first['comparison']} ({first['chapters']}): {fmt_pp(first['gain'])} pp vs "
            f"{second['comparison']} ({second['chapters']}): {fmt_pp(second['gain'])} pp, "
            f"seeds {first['seeds']} vs {second['seeds']}, different runs")
    intervals = [(r["ci_low"], r["ci_high"]) for r in (first, second)]
    if any(pd.isna(lo) or pd.isna(hi) for lo, hi in intervals):
        return (f"{head}; at least one has no interval (one seed), so the difference cannot be "
                f"told from seed noise.")
    (lo1, hi1), (lo2, hi2) = intervals
    if lo1 <= hi2 and lo2 <= hi1:
        return (f"{head}; the intervals {fmt_interval(lo1, hi1)} and {fmt_interval(lo2, hi2)} "
                f"overlap: the two gains do not contradict each other at this budget.")
    return (f"{head}; the intervals {fmt_interval(lo1, hi1)} and {fmt_interval(lo2, hi2)} do not "
            f"overlap: the runs differ by more than seed noise (seeds, epochs or other "
            f"parameters of the two chapters).")


def verdict_paragraph(comparisons: pd.DataFrame) -> str:
    """The summary's verdict, computed: one sentence per distinct comparison (common.verdict),
    then a reconciliation (reconcile) for every pair of comparisons on the same setting from
    different runs. Wrapped to the page."""
    if comparisons.empty:
        return wrap("No chapter saved a gain in pp for this profile: nothing to conclude.")
    lines = []
    for _, r in comparisons.iterrows():
        if r["seeds"] == "n/a":
            lines.append(f"- {r['comparison']} ({r['chapters']}): gain {fmt_pp(r['gain'])} pp; "
                         f"per-seed numbers not stored (rerun the chapter): no verdict.")
        else:
            lines.append(f"- {r['comparison']} ({r['chapters']}): "
                         f"{verdict(r['gain'], r['ci_low'], r['ci_high'], r['p_value'])}.")
    rows = [r for _, r in comparisons.iterrows() if r["setting"]]
    for i, first in enumerate(rows):
        for second in rows[i + 1:]:
            if first["setting"] == second["setting"]:
                lines.append("- " + reconcile(first, second))
    return wrap("\n".join(lines))


def plot_comparisons(comparisons: pd.DataFrame, paper_gain: float | None = None, ax=None,
                     title="Distinct comparisons: gain and 95% interval", wrap_at: int = 40,
                     paper_setting: str = "VanillaNet-5, CIFAR-100"):
    """One horizontal bar per distinct comparison (comparison_frame) with its bootstrap 95%
    interval as an error bar (none where it is n/a), labelled with the comparison and its
    chapters, and the paper's gain (on ``paper_setting``) as a dashed line when given. Sized
    for the page (7.5 in wide)."""
    labels = [textwrap.fill(f"{r.comparison} [{r.chapters}]", wrap_at)
              for r in comparisons.itertuples()]
    height = sum(0.22 * (label.count("\n") + 1) + 0.25 for label in labels)
    fig, ax = new_axes(ax, figsize=(7.5, max(2.5, height + 1.5)))
    if len(comparisons):
        pos = np.arange(len(comparisons))[::-1]
        gains = comparisons["gain"].to_numpy(float)
        low = (gains - comparisons["ci_low"].to_numpy(float))
        high = (comparisons["ci_high"].to_numpy(float) - gains)
        err = np.nan_to_num(np.vstack([low, high]), nan=0.0)
        ax.barh(pos, gains, xerr=err, capsize=4, color=["C0" if g >= 0 else "C3" for g in gains])
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

"""The committed evidence (results/, the fashion_mnist profile) is what the committed code computes.

* The cheapest committed run is trained again from scratch and must give the committed numbers
  exactly: a change of training semantics without a bump of TRAINING_SEMANTICS_VERSION, or a
  store the code cannot reproduce, fails here.
* Every committed run is one the profile asks for (nothing orphaned), and each is a valid result.
* Every run the profile asks for is committed, and the book of this profile (what `make book`
  executes) runs every notebook over them without training.
The grid is trained with one thread (OMP_NUM_THREADS=1, as `python -m lslu grid` in the README);
the retraining does the same, so the floating-point reductions run in the same order.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lslu.grid import _cost, chapter_parameters, default_registry, profile_configs
from lslu.results import ResultsStore
from lslu.train import train

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "results"
PROFILE = "fashion_mnist"


@pytest.fixture(scope="module")
def asked():
    return {c.run_id: c for c in profile_configs(PROFILE)}


@pytest.fixture(scope="module")
def stored():
    runs = sorted((COMMITTED / "runs").glob("*.json"))
    assert runs, f"no committed runs in {COMMITTED / 'runs'}"
    return [p.stem for p in runs]


def test_committed_runs_are_asked_for_and_valid(asked, stored):
    store = ResultsStore(COMMITTED)
    orphans = [run_id for run_id in stored if run_id not in asked]
    assert not orphans, f"committed runs the {PROFILE} profile does not ask for: {orphans}"
    for run_id in stored:
        result = store.load(run_id)  # checks the digest and the required metrics
        text = (COMMITTED / "runs" / f"{run_id}.json").read_text()
        assert "NaN" not in text and "Infinity" not in text
        assert result.config["dataset"] in ("fashion_mnist", "imagefolder")
        # no path of the machine that trained it: a data folder is stored home-relative
        data_dir = result.config.get("data_dir")
        assert data_dir is None or data_dir.startswith("~"), data_dir
        assert str(Path.home()) not in text


def test_every_run_the_profile_asks_for_is_committed(asked, stored):
    # `make book` renders this profile from results/ and trains nothing: a run the profile asks
    # for that is not committed would stop it (see `python -m lslu results --complete`)
    missing = sorted(f"{run_id} {c.model}/{c.activation} seed {c.seed}"
                     for run_id, c in asked.items() if run_id not in set(stored))
    assert not missing, (f"{len(missing)} of the {len(asked)} runs of the {PROFILE} profile are "
                         f"not committed: {missing}")


def test_the_default_book_renders_the_committed_runs_without_training(asked, stored, tmp_path):
    # what `make book` executes (the fashion_mnist profile over results/), on a copy of the
    # committed runs: every notebook runs, trains nothing and loads every run its chapter asks for
    missing = set(asked) - set(stored)
    assert not missing, f"{len(missing)} runs are not committed (see the test above)"
    store = tmp_path / "store"
    shutil.copytree(COMMITTED / "runs", store / "runs")
    env = os.environ | {"LSLU_RESULTS_DIR": str(store), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "lslu.book", "execute", "--profile", PROFILE,
                    "--out-dir", str(tmp_path / "executed")], cwd=REPO, env=env, check=True,
                   timeout=1200)
    log = json.loads((tmp_path / "executed" / "run_log.json").read_text())
    assert log["profile"] == PROFILE
    assert sorted(log["notebooks"]) == sorted(p.stem for p in (REPO / "notebooks").glob("*.ipynb"))
    registry = default_registry()
    for stem, entry in log["notebooks"].items():
        assert entry["status"] == "ok" and entry["trained_runs"] == 0, (stem, entry)
        wanted = registry[stem](**chapter_parameters(PROFILE, stem)) if stem in registry else []
        assert entry["loaded_runs"] == len({c.run_id for c in wanted}), (stem, entry)
    assert log["notebooks"]["02_cifar10"]["loaded_runs"] == 20  # 2 models x 2 arms x 5 seeds
    assert sorted(p.name for p in (store / "runs").iterdir()) == \
        sorted(f"{run_id}.json" for run_id in stored)   # nothing trained, nothing removed


def test_cheapest_committed_run_is_reproduced_exactly(asked, stored, tmp_path):
    run_id = min(stored, key=lambda r: _cost(asked[r]))
    committed = ResultsStore(COMMITTED).load(run_id)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        again = train(asked[run_id], results_dir=tmp_path, force=True, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert again.run_id == run_id
    if _same_kind_of_cpu(committed.hardware, again.hardware):
        # the same kernels in the same order: the numbers must be the committed ones, bit for bit
        for key in ("val_acc", "val_loss", "train_loss", "best_val_acc"):
            assert again.final[key] == committed.final[key], (key, again.final[key],
                                                                committed.final[key])
        for mine, theirs in zip(again.history, committed.history):
            for key in ("train_loss", "val_loss", "val_acc", "theta", "omega"):
                assert mine[key] == theirs[key], (key, mine["epoch"])
        assert json.dumps(again.probes, sort_keys=True) == \
            json.dumps(committed.probes, sort_keys=True)
    else:
        # another CPU kind (other vector kernels) rounds differently; the run must still land
        # where the committed one did
        assert abs(again.final["val_acc"] - committed.final["val_acc"]) <= 0.01, \
            ("bitwise equality is expected only on the CPU kind that trained the run",
             again.hardware, committed.hardware, again.final, committed.final)
        assert again.final["val_loss"] == pytest.approx(committed.final["val_loss"], rel=0.02)


def _same_kind_of_cpu(trained: dict, here: dict) -> bool:
    """Same processor model and (where the run recorded it) the same ATen CPU capability."""
    return trained.get("processor") == here.get("processor") and \
        trained.get("cpu_capability", here.get("cpu_capability")) == here.get("cpu_capability")


def test_the_landing_figure_is_saved_with_or_without_a_comparison(tmp_path):
    import matplotlib.image
    from lslu.chapters import cifar, evidence
    from lslu.chapters.common import results_frame
    # without a comparison: a small figure that says so, in a folder created for it
    empty = evidence.save_landing_figure(None, tmp_path / "_static" / "evidence_top1.png")
    assert empty.is_file() and matplotlib.image.imread(empty).shape[:2] == (120, 640)
    # with one: the page's bar figure, as drawn
    runs = [ResultsStore(COMMITTED).load(p.stem)
            for p in sorted((COMMITTED / "runs").glob("*.json"))]
    fig = cifar.plot_top1_bars(results_frame(runs))
    saved = evidence.save_landing_figure(fig, tmp_path / "bars.png")
    height, width = matplotlib.image.imread(saved).shape[:2]
    assert (width, height) == tuple(round(100 * v) for v in fig.get_size_inches())
    with pytest.raises(ValueError, match="matplotlib Figure or None"):
        evidence.save_landing_figure("bars", tmp_path / "x.png")


def test_evidence_summary_states_both_arms_the_gain_and_what_is_missing(tmp_path):
    from lslu.chapters import evidence
    stored, missing = evidence.stored_runs(PROFILE, COMMITTED)
    lines = evidence.summary_lines(PROFILE, COMMITTED)
    assert lines[0].startswith(f"Evidence profile {PROFILE} (fashion_mnist, ")
    assert f"{len(stored)} runs of {len(stored) + len(missing)} stored" in lines[0]
    assert lines[-1] == evidence.NOT_COVERED
    for model in dict.fromkeys([c.model for c in missing] + [r.config["model"] for r in stored]):
        top1 = {act: [100 * r.final["val_acc"] for r in stored
                      if (r.config["model"], r.config["activation"]) == (model, act)]
                for act in (None, "lslu")}
        (line,) = [x for x in lines if x.startswith(f"{model}: ")]
        if min(map(len, top1.values())) >= 2:
            assert f"LSLU {sum(top1['lslu']) / len(top1['lslu']):.2f}% top-1" in line
            assert "Welch p = " in line and "95% interval" in line
            assert f"seeds: {len(top1[None])} without, {len(top1['lslu'])} with LSLU" in line
        else:
            assert "not compared yet" in line
    # the landing page's Markdown list holds the same sentences
    saved = evidence.save_landing_summary(lines, tmp_path / "_static" / "summary.md").read_text()
    items = [" ".join(item.split()) for item in saved.split("\n- ")]
    assert items[0].startswith("- ") and [items[0][2:]] + items[1:] == lines

    # a store with one seed per arm compares nothing yet, and says so for every model
    one_each = {}
    for r in stored:
        one_each.setdefault((r.config["model"], r.config["activation"]), r.run_id)
    (tmp_path / "store" / "runs").mkdir(parents=True)
    for run_id in one_each.values():
        (tmp_path / "store" / "runs" / f"{run_id}.json").write_bytes(
            (COMMITTED / "runs" / f"{run_id}.json").read_bytes())
    partial = evidence.summary_lines(PROFILE, tmp_path / "store")
    assert all("not compared yet" in x for x in partial[1:-1]) and len(partial) >= 4

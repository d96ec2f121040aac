"""The runs a profile asks for, without executing a notebook, and what the store holds of them.

    configs = profile_configs("fashion_mnist")        # every run of every chapter, no duplicates
    summary = store_summary("fashion_mnist")          # python -m lslu results --profile NAME

A chapter's runs come from a registry ``{notebook stem: configs(**params) -> [TrainConfig]}``;
the default is every chapter module of lslu.chapters.CHAPTERS that has ``configs``. Each is
called with the parameters the notebook would run with under the profile: the literal defaults
of its ``parameters`` cell, overridden by what lslu.book passes it (the profile's defaults and
its entry for that notebook). Chapters share runs: a config asked for twice is listed once.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable, Mapping

import nbformat
import numpy as np
from tqdm import tqdm

from .data import train_set_size
from .models import VANILLANET_MODELS
from .notebook import _defaults
from .profiles import load_profile, notebook_parameters
from .results import ResultsStore
from .train import TrainConfig, _check_writable, train

__all__ = ["default_registry", "notebook_defaults", "chapter_parameters", "profile_configs",
           "store_summary", "format_summary", "train_profile", "parse_shard", "in_shard"]

Registry = Mapping[str, Callable[..., list]]
NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def default_registry() -> dict:
    """{stem: configs} for every chapter module of lslu.chapters that trains runs."""
    from .chapters import CHAPTERS  # imported here: the training core never imports chapters
    return {stem: module.configs for stem, module in CHAPTERS.items()
            if callable(getattr(module, "configs", None))}


def notebook_defaults(notebook_path) -> dict:
    """The literal values assigned in the notebook's cell tagged ``parameters``."""
    nb = nbformat.read(str(notebook_path), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{notebook_path}: expected one cell tagged 'parameters', found "
                         f"{len(cells)}")
    return _defaults(cells[0].source)


def chapter_parameters(profile, stem: str, notebooks_dir=None) -> dict:
    """What notebook ``stem`` runs with under ``profile`` (a name or a loaded profile)."""
    path = Path(notebooks_dir or NOTEBOOKS_DIR) / f"{stem}.ipynb"
    if not path.is_file():
        raise ValueError(f"the registry names notebook {stem!r}, but {path} does not exist")
    return notebook_defaults(path) | notebook_parameters(profile, path)


def profile_configs(profile_name: str, registry: Registry | None = None,
                    notebooks_dir=None) -> list[TrainConfig]:
    """Every run the chapters ask for under profile ``profile_name``, in chapter order, each
    once (chapters share runs with the same id)."""
    profile = load_profile(profile_name)
    registry = default_registry() if registry is None else registry
    seen, out = set(), []
    for stem, configs in registry.items():
        for config in configs(**chapter_parameters(profile, stem, notebooks_dir)):
            if config.run_id not in seen:
                seen.add(config.run_id)
                out.append(config)
    return out


# The fields that name an arm in the summary (with seeds pooled); any other field that differs
# between the profile's arms is listed under "settings".
_ARM_FIELDS = ("model", "activation", "act_num", "drop_rate", "freeze_activation", "dataset")


def _arm_key(config: TrainConfig) -> str:
    identity = config.identity()
    identity.pop("seed", None)
    return json.dumps(identity, sort_keys=True)


def _described(config: TrainConfig) -> dict:
    # every field that enters the id, defaults included (shown as they are), never the paths
    fields = {k: v for k, v in config.to_dict().items() if k not in ("device", "data_dir")}
    return fields | config.identity()


def store_summary(profile_name: str, results_dir=None, registry: Registry | None = None,
                  notebooks_dir=None) -> dict:
    """What the store holds of a profile: ``runs`` (its runs that are stored), ``asked``,
    ``missing`` (asked for, not stored: run_id and arm), ``other_stored`` (stored runs the
    profile does not ask for), and ``arms``: per arm (the runs that differ only in seed) its
    fields, ``seeds`` (stored), ``seeds_asked``, ``top1_mean`` and ``top1_std`` (percent,
    final validation top-1 over the stored seeds; null without stored seeds / with one)."""
    store = ResultsStore(results_dir)
    configs = profile_configs(profile_name, registry, notebooks_dir)
    arms: dict[str, dict] = {}
    missing, asked = [], set()
    for config in configs:
        run_id = config.run_id
        asked.add(run_id)
        arm = arms.setdefault(_arm_key(config), {
            "model": config.model, "activation": config.resolved_activation,
            "baseline": config.activation is None, "act_num": config.act_num,
            "drop_rate": config.drop_rate, "frozen": config.freeze_activation,
            "dataset": config.dataset, "identity": _described(config),
            "seeds_asked": 0, "top1": []})
        arm["seeds_asked"] += 1
        if store.has_result(run_id):
            arm["top1"].append(100 * store.load(run_id).final["val_acc"])
        else:
            missing.append({"run_id": run_id, "model": config.model,
                            "activation": config.resolved_activation, "seed": config.seed})
    # settings that tell arms apart beyond _ARM_FIELDS (e.g. epochs, input_size, limit)
    keys = {k for a in arms.values() for k in a["identity"]} - set(_ARM_FIELDS) - {"seed"}
    varying = sorted(k for k in keys if len({json.dumps(a["identity"].get(k)) for a in
                                             arms.values()}) > 1)
    out_arms = []
    for arm in arms.values():
        top1 = arm.pop("top1")
        identity = arm.pop("identity")
        arm["settings"] = {k: identity.get(k) for k in varying}
        arm["seeds"] = len(top1)
        arm["top1_mean"] = round(float(np.mean(top1)), 2) if top1 else None
        arm["top1_std"] = round(float(np.std(top1, ddof=1)), 2) if len(top1) > 1 else None
        out_arms.append(arm)
    stored = sorted(p.stem for p in (store.root / "runs").glob("*.json"))
    return {"profile": profile_name, "results_dir": str(store.root),
            "asked": len(asked), "runs": len(asked) - len(missing), "missing": missing,
            "other_stored": len([s for s in stored if s not in asked]), "arms": out_arms}


def format_summary(summary: dict) -> str:
    """The summary as text: one line per arm, then the missing runs."""
    lines = [f"profile {summary['profile']}: {summary['runs']} of {summary['asked']} runs stored "
             f"in {summary['results_dir']}; {len(summary['missing'])} missing; "
             f"{summary['other_stored']} stored runs not asked for by this profile"]
    lines.append(f"{'model':<20} {'activation':<16} {'n':>2} {'drop':>5} {'frozen':>6} "
                 f"{'seeds':>7} {'top1 %':>14}  settings")
    for a in summary["arms"]:
        act = a["activation"] + (" (baseline)" if a["baseline"] else "")
        top1 = "-" if a["top1_mean"] is None else (
            f"{a['top1_mean']:.2f}" + ("" if a["top1_std"] is None else f" ± {a['top1_std']:.2f}"))
        settings = ", ".join(f"{k}={v}" for k, v in a["settings"].items())
        lines.append(f"{a['model']:<20} {act:<16} {a['act_num']:>2} {a['drop_rate']:>5g} "
                     f"{str(a['frozen']):>6} {a['seeds']:>3}/{a['seeds_asked']:<3} {top1:>14}  "
                     f"{settings}")
    for m in summary["missing"]:
        lines.append(f"missing: {m['run_id']} {m['model']}/{m['activation']} seed {m['seed']}")
    return "\n".join(lines)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """"K/N" -> (K, N), checked; None -> None (all runs)."""
    if text is None:
        return None
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must be K/N with integers, e.g. 0/2; got {text!r}") from None
    if not 0 <= k < n:
        raise ValueError(f"--shard K/N needs 0 <= K < N; got {text!r}")
    return k, n


def in_shard(run_id: str, shard: tuple[int, int] | None) -> bool:
    """Whether a run belongs to shard (K, N): a fixed split by run id (a hex digest), so that the
    split does not depend on what is stored yet and N processes never train the same run."""
    return shard is None or int(run_id, 16) % shard[1] == shard[0]


def train_profile(profile_name: str, results_dir=None, dry_run: bool = False,
                  registry: Registry | None = None,
                  shard: tuple[int, int] | None = None) -> list:
    """Train every run of ``profile_name`` that the store lacks, in chapter order (the with/without
    LSLU comparison first), with one progress bar and an ETA over the whole grid on stderr.

    Resumable: finished runs are skipped and an interrupted run continues from its checkpoint,
    so the command can be stopped at any time and started again.  Every config is validated
    before the first run starts.  ``shard=(K, N)`` trains only the runs of shard K (see
    :func:`in_shard`).  Returns the RunResults trained.
    """
    configs = profile_configs(profile_name, registry)
    store = ResultsStore(results_dir)
    _check_writable(store)
    # the cheapest run first (the reproduction test retrains the cheapest stored run), then seed
    # by seed over the arms, full-data runs first, the smaller (cheaper) model first: a grid
    # stopped early still holds balanced arms of the main comparison
    stored = {c.run_id for c in configs if store.has_result(c.run_id)}
    todo = sorted((c for c in configs
                   if c.run_id not in stored and in_shard(c.run_id, shard)),
                  key=lambda c: (c.limit is not None, c.dataset == "imagefolder", _cost_rank(c),
                                 c.seed))
    if todo:
        cheapest = min(todo, key=_cost)
        todo.remove(cheapest)
        todo.insert(0, cheapest)
    part = "" if shard is None else f" in shard {shard[0]}/{shard[1]}"
    print(f"profile {profile_name}: {len(configs)} runs, {len(stored)} stored, "
          f"{len(todo)} to train{part} (store: {store.root})", file=sys.stderr, flush=True)
    if dry_run:
        for c in todo:
            print(f"  {c.run_id}  {_label(c)}", file=sys.stderr)
        return []
    # the bar counts image-epochs, so runs of different sizes weigh what they cost
    sizes = [_cost(c) for c in todo]
    bar = tqdm(total=sum(sizes), desc=profile_name, unit="img-ep", unit_scale=True,
               file=sys.stderr, dynamic_ncols=True, mininterval=5)
    results = []
    started = time.perf_counter()
    for i, (config, size) in enumerate(zip(todo, sizes)):
        bar.set_postfix_str(f"run {i + 1}/{len(todo)}: {_label(config)}")
        result = train(config, results_dir=results_dir, progress=False)
        results.append(result)
        bar.update(size)
        print(f"[{time.perf_counter() - started:7.0f} s] {i + 1}/{len(todo)} {config.run_id} "
              f"{_label(config)}: top-1 {100 * result.final['val_acc']:.2f}%",
              file=sys.stderr, flush=True)
    bar.close()
    return results


def _label(config: TrainConfig) -> str:
    """model/activation and what else sets this run apart, for the log."""
    parts = [f"{config.model}/{config.resolved_activation}", f"data={config.dataset}"]
    for name, shown in (("limit", "images"), ("act_num", "n"), ("drop_rate", "dropout"),
                        ("freeze_activation", "frozen")):
        if config.identity().get(name) is not None:
            parts.append(f"{shown}={getattr(config, name)}")
    return " ".join(parts + [f"epochs={config.epochs}", f"seed={config.seed}"])


def _cost(config: TrainConfig) -> int:
    """Image-epochs a run trains (its training-set size from the data module, without loading)."""
    return config.epochs * train_set_size(config.dataset, config.data_dir, config.val_fraction,
                                          config.limit)


def _cost_rank(config: TrainConfig) -> int:
    """0 for the VanillaNet family (cheap on a CPU at 32 px), 1 for the others."""
    return 0 if config.model in VANILLANET_MODELS else 1

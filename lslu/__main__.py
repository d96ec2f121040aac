"""Command line: ``python -m lslu train --model vanillanet_5 --dataset cifar100 ...``.

Every TrainConfig field is a flag (``--help`` lists them with their defaults). Under
``torchrun --nproc_per_node=N -m lslu train ...`` the run uses DistributedDataParallel.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing

import torch.distributed as dist

from .grid import format_summary, parse_shard, store_summary, train_profile
from .train import TrainConfig, train


def _field_type(f: dataclasses.Field):
    hint = typing.get_type_hints(TrainConfig)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args else hint
    optional = type(None) in typing.get_args(hint)
    return base, optional


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lslu", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train one configuration (or load its stored result)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(TrainConfig):
        base, optional = _field_type(f)
        flag = "--" + f.name.replace("_", "-")
        # argparse prints no default for an argument without a help text: give every one
        if base is bool:
            tr.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                            help="(default: %(default)s)")
        else:
            def convert(text, base=base, optional=optional):
                if optional and text.lower() in ("none", "null", ""):
                    return None
                return base(text)
            convert.__name__ = base.__name__  # argparse's error: "invalid float value: 'x'"
            tr.add_argument(flag, type=convert, default=f.default,
                            help="(default: %(default)s)",
                            metavar=base.__name__.upper() + ("|none" if optional else ""))
    tr.add_argument("--recipe", choices=["reference"], default=None,
                    help="start from the reference code's recipe; other flags override it")
    tr.add_argument("--results-dir", default=None,
                    help="results store (default: $LSLU_RESULTS_DIR or ~/.cache/lslu/results)")
    tr.add_argument("--force", action="store_true", help="train even if a stored result exists")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    rs = sub.add_parser("results", help="what the results store holds of a profile's runs",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    rs.add_argument("--profile", required=True, help="profile name (profiles/<name>.yaml)")
    rs.add_argument("--complete", action="store_true",
                    help="print nothing but check: exit 1, with one line, if any run the profile "
                         "asks for is not stored (make book does this for committed results)")
    rs.add_argument("--json", action="store_true",
                    help="one JSON object: runs, asked, missing, other_stored, arms")
    rs.add_argument("--results-dir", default=None,
                    help="results store (default: $LSLU_RESULTS_DIR or ~/.cache/lslu/results)")
    gr = sub.add_parser("grid", help="train every run a profile asks for that is not stored yet "
                        "(resumable: stop it any time, run it again to continue)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    gr.add_argument("--profile", required=True, help="profile name (profiles/<name>.yaml)")
    gr.add_argument("--results-dir", default=None,
                    help="results store (default: $LSLU_RESULTS_DIR or ~/.cache/lslu/results)")
    gr.add_argument("--dry-run", action="store_true",
                    help="list what would be trained, train nothing")
    gr.add_argument("--shard", default=None, metavar="K/N",
                    help="train only shard K of N (0 <= K < N), a fixed split of the runs by run "
                         "id: N processes (GPUs, cores) can share one store without overlap")
    return parser


def _grid(args) -> int:
    try:
        train_profile(args.profile, results_dir=args.results_dir, dry_run=args.dry_run,
                      shard=parse_shard(args.shard))
    except (ValueError, OSError, RuntimeError, FloatingPointError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    return 0


def _results(args) -> int:
    try:
        summary = store_summary(args.profile, results_dir=args.results_dir)
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.complete:
        if summary["missing"]:
            print(f"error: {len(summary['missing'])} of the {summary['asked']} runs of profile "
                  f"{args.profile} are not stored in {summary['results_dir']}; train them with "
                  f"`python -m lslu grid --profile {args.profile} --results-dir "
                  f"{summary['results_dir']}`", file=sys.stderr)
            return 1
        return 0
    print(json.dumps(summary, indent=1, allow_nan=False) if args.json else format_summary(summary))
    return 0


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "results":
        return _results(args)
    if args.command == "grid":
        return _grid(args)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    try:
        if args.recipe == "reference":
            defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
            overrides = {k: v for k, v in given.items() if v != defaults[k]}
            config = TrainConfig.reference_recipe(**overrides)
        else:
            config = TrainConfig(**given)
        result = train(config, results_dir=args.results_dir, force=args.force,
                       progress=False if args.no_progress else None)  # None: bars on a TTY
    # expected failures (bad input, a store that cannot be written, a diverged run, missing or
    # damaged files) are one line, not a traceback; OSError covers FileNotFoundError
    except (ValueError, OSError, RuntimeError, FloatingPointError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        # strict JSON: train() stores and returns no NaN/Infinity, and this would refuse one
        print(json.dumps({"run_id": result.run_id, "cached": result.cached, **result.final},
                         indent=1, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

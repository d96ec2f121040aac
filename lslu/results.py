"""The results store: one JSON file per finished run, checkpoints for resume, atomic writes.

A run is identified by a hash of what it computes: the config fields that change the computation
(TrainConfig.identity()) plus TRAINING_SEMANTICS_VERSION, which is bumped on purpose when the
code computes something else for the same config. Editing a docstring, a comment or the layout
of the code keeps every stored run. Layout under the results dir:

    runs/<run_id>.json         the RunResult of a finished run, with a sha256 digest of its
                               content (a file edited or damaged since is reported, not served)
    checkpoints/<run_id>.pt    the last finished epoch of an unfinished run (removed at the end)
    models/<run_id>.pt         final weights of a finished run (for analyses that need the model)
    headlines/<profile>/<notebook>/<parameters hash>.json   a chapter's headline numbers for the
                               summary, with the notebook parameters that produced them
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["RunResult", "ResultsStore", "default_results_dir", "config_hash",
           "TRAINING_SEMANTICS_VERSION", "atomic_write_bytes", "atomic_write_json",
           "atomic_torch_save", "ResultFileError", "content_digest", "parameters_hash"]

# The version of what training computes, part of every run id. Bump it by one, in the same commit,
# whenever the same config would now produce a different stored result: other numerics in a
# model, an activation, the loss, optimizer, schedule or initialisation; another data pipeline
# (decoding, split, subset, augmentation, normalization, RNG use); a changed TrainConfig default;
# other or more metrics and probes recorded. Stored runs then get new ids and are trained again;
# the reproduction test (a committed run trained afresh must match exactly) catches a forgotten
# bump. Do not bump for docstrings, comments, refactors or speed-ups with bit-identical results,
# nor for a new TrainConfig field whose default keeps the old computation (identity() leaves
# default values out, so old ids stay valid).
TRAINING_SEMANTICS_VERSION = 1


def default_results_dir() -> Path:
    """``$LSLU_RESULTS_DIR`` or ``~/.cache/lslu/results`` (outside the source tree)."""
    env = os.environ.get("LSLU_RESULTS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lslu" / "results"


def config_hash(identity: dict, version: int | None = None) -> str:
    """16 hex digits naming a run: sha256 of ``identity`` (the computation-relevant config fields,
    JSON with sorted keys) and the training semantics ``version`` (default: the current one)."""
    version = TRAINING_SEMANTICS_VERSION if version is None else version
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive int, got {version!r}")
    try:
        payload = json.dumps({"config": identity, "semantics": version}, sort_keys=True,
                             allow_nan=False)
    except (TypeError, ValueError) as err:  # default=str would hash an object's address
        raise ValueError(f"a run identity must be plain JSON values (no NaN), got {identity!r}: "
                         f"{err}") from err
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``: a reader
    (or a crash) sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


@dataclass
class RunResult:
    """Everything one training run produced. ``history`` has one dict per epoch with
    train_loss, val_loss, val_acc, val_acc_ema, lr, lam, epoch_time, theta, omega
    (theta/omega: {layer name: list of n floats}; per-channel LSLU: the mean over channels)."""
    run_id: str
    config: dict
    history: list[dict] = field(default_factory=list)
    final: dict = field(default_factory=dict)
    params: int = 0
    params_deploy: int = 0
    flops: int = 0
    hardware: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    # what chapters need from the trained model, measured at the end of training (lslu.probes):
    # confusion_matrix, per-layer class selectivity; {} for runs stored before probes existed
    probes: dict = field(default_factory=dict)
    cached: bool = False  # set when returned from the store; never saved

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("cached")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunResult":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def __repr__(self) -> str:
        c = self.config
        return (f"RunResult({self.run_id}: {c.get('model')}/{c.get('activation')} n={c.get('act_num')} "
                f"on {c.get('dataset')}, {len(self.history)} epochs, "
                f"val_acc={self.final.get('val_acc', float('nan')):.4f})")


class ResultsStore:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root is not None else default_results_dir()

    def result_path(self, run_id: str) -> Path:
        return self.root / "runs" / f"{run_id}.json"

    def checkpoint_path(self, run_id: str) -> Path:
        return self.root / "checkpoints" / f"{run_id}.pt"

    def model_path(self, run_id: str) -> Path:
        return self.root / "models" / f"{run_id}.pt"

    def has_result(self, run_id: str) -> bool:
        return self.result_path(run_id).exists()

    def _retrain(self, run_id: str) -> str:
        # a notebook cannot pass force=True: say what works from anywhere
        return (f"delete {self.result_path(run_id)} to train run {run_id} again (or use the "
                f"CLI's --force)")

    def load(self, run_id: str) -> RunResult:
        """The stored result of ``run_id``; ResultFileError naming the file when it is not valid
        JSON, not a complete run result (no config, history or final metrics) or when its
        content differs from what was written (the sha256 digest stored with it)."""
        path = self.result_path(run_id)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ResultFileError(f"results file {path} cannot be read "
                                  f"({err.strerror or err}); check its permissions") from err
        try:
            data = json.loads(text)
        except ValueError as err:
            problem = f"is not valid JSON ({err})"
        else:
            problem = _result_problem(data, run_id)
        if problem:
            raise ResultFileError(f"results file {path} {problem}; it is not used: "
                                  f"{self._retrain(run_id)}")
        result = RunResult.from_dict(data)
        result.cached = True
        return result

    def check_readable(self, run_id: str) -> None:
        """Raise before any work when an existing result or checkpoint of this run is unreadable."""
        if self.has_result(run_id):
            self.load(run_id)

    def save(self, result: RunResult) -> None:
        data = result.to_dict()
        data[DIGEST_KEY] = content_digest(data)
        atomic_write_json(self.result_path(result.run_id), data)

    def load_weights(self, run_id: str, map_location="cpu") -> dict:
        """The state dict saved at the end of ``run_id``; FileNotFoundError / ResultFileError
        naming the file and how to train the run again when it is missing or unreadable."""
        path = self.model_path(run_id)
        if not path.exists():
            raise FileNotFoundError(f"no saved weights for run {run_id} at {path}: "
                                    f"{self._retrain(run_id)}")
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
            first = (str(err).strip().splitlines() or [""])[0][:200]
            raise ResultFileError(f"weights file {path} cannot be read ({type(err).__name__}: "
                                  f"{first}): delete it and "
                                  f"{self._retrain(run_id).removeprefix('delete ')}") from err

    def save_headline(self, profile: str, notebook: str, numbers, parameters: dict,
                      defaults: dict | None = None) -> Path:
        """Store a chapter's headline numbers with the notebook ``parameters`` that produced them
        (and the ``defaults`` of its parameters cell), under
        ``headlines/<profile>/<notebook>/<parameters_hash>.json``: a run with other parameters
        (a notebook run by hand) never replaces the numbers of the profile's own parameters."""
        if not isinstance(parameters, dict) or not parameters:
            raise ValueError(f"save_headline needs the notebook's parameters as a non-empty dict, "
                             f"got {parameters!r}")
        record = {"profile": profile, "notebook": notebook, "parameters": parameters,
                  "defaults": parameters if defaults is None else defaults, "rows": numbers,
                  "saved": datetime.now(timezone.utc).isoformat(timespec="microseconds")}
        record[DIGEST_KEY] = content_digest(record)
        path = self.root / "headlines" / profile / notebook / f"{parameters_hash(parameters)}.json"
        atomic_write_json(path, record)
        return path

    def headlines(self, profile: str, expected: Callable[[str, dict], dict]) -> dict[str, list]:
        """Notebook stem -> the headline rows saved under ``profile`` by a run whose parameters
        equal ``expected(notebook, defaults)`` (what the profile gives the notebook, over the
        defaults the run recorded); the newest when several do. Records with other parameters
        are skipped; a damaged or edited record raises ResultFileError naming it."""
        found = {}
        for folder in sorted(p for p in (self.root / "headlines" / profile).glob("*")
                             if p.is_dir()):
            best = None
            for path in sorted(folder.glob("*.json")):
                record = _read_headline(path)
                wanted = expected(record["notebook"], record["defaults"])
                if parameters_hash(record["parameters"]) == parameters_hash(wanted) and (
                        best is None or record["saved"] > best["saved"]):
                    best = record
            if best is not None:
                found[folder.name] = best["rows"]
        return found


DIGEST_KEY = "sha256"
# What every finished run reports; a file without them is no run result (e.g. "final": null).
_FINAL_METRICS = ("val_acc", "val_loss", "best_val_acc", "train_loss", "epochs_run")


class ResultFileError(ValueError):
    """A file of the results store that must not be served: damaged, edited or incomplete."""


def content_digest(data: dict) -> str:
    """sha256 of ``data`` (less its own digest key) as canonical JSON: detects a stored file
    edited by hand or damaged, since JSON floats and ints read back to the same values."""
    body = {k: v for k, v in data.items() if k != DIGEST_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def parameters_hash(parameters: dict) -> str:
    """16 hex digits naming a notebook's parameter values. ``results_dir`` is left out: it says
    where numbers are stored, not how they were made."""
    body = {k: v for k, v in parameters.items() if k != "results_dir"}
    payload = json.dumps(body, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _result_problem(data, run_id: str) -> str | None:
    """What makes ``data`` (a parsed results file) unusable, or None."""
    if not isinstance(data, dict):
        return f"holds a JSON {type(data).__name__}, not a run result"
    if data.get("run_id") != run_id:
        return f"names run {data.get('run_id')!r}, not {run_id!r}"
    for key, kind in (("config", dict), ("history", list), ("final", dict)):
        if not isinstance(data.get(key), kind) or not data[key]:
            return f"has no {key} (got {data.get(key)!r})"
    missing = [m for m in _FINAL_METRICS if not isinstance(data["final"].get(m), (int, float))
               or isinstance(data["final"].get(m), bool)]
    if missing:
        return f"lacks the metrics {missing} in 'final'"
    if DIGEST_KEY not in data:
        return "has no content digest (written by an older version, or edited by hand)"
    if data[DIGEST_KEY] != content_digest(data):
        return "differs from what was written (content digest mismatch: edited or damaged)"
    return None


def _read_headline(path: Path) -> dict:
    fix = f"delete it and run the notebook {path.parent.name} again"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ResultFileError(f"headline file {path} cannot be read ({err}): {fix}") from err
    keys = ("notebook", "parameters", "defaults", "rows", "saved", DIGEST_KEY)
    if not isinstance(record, dict) or any(k not in record for k in keys):
        raise ResultFileError(f"headline file {path} is not a headline record (keys "
                              f"{list(keys)}): {fix}")
    if record[DIGEST_KEY] != content_digest(record):
        raise ResultFileError(f"headline file {path} differs from what was written (content "
                              f"digest mismatch: edited or damaged): {fix}")
    return record

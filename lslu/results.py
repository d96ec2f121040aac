"""The results store: one JSON file per finished run, checkpoints for resume, atomic writes.

A run is identified by a hash of its config plus a fingerprint of the code that trains it, so a
cached result is never served for code that has changed since. Layout under the results dir:

    runs/<run_id>.json         the RunResult of a finished run
    checkpoints/<run_id>.pt    the last finished epoch of an unfinished run (removed at the end)
    models/<run_id>.pt         final weights of a finished run (for analyses that need the model)
    headlines/<profile>/<notebook>.json   headline numbers each chapter reports for the summary
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["RunResult", "ResultsStore", "default_results_dir", "config_hash", "code_fingerprint",
           "atomic_write_bytes", "atomic_write_json", "atomic_torch_save"]

# Files whose content decides what a run computes.
_TRAINING_CODE = ("activations.py", "models.py", "data.py", "train.py")


def default_results_dir() -> Path:
    """``$LSLU_RESULTS_DIR`` or ``~/.cache/lslu/results`` (outside the source tree)."""
    env = os.environ.get("LSLU_RESULTS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lslu" / "results"


def _fingerprint_files() -> str:
    here = Path(__file__).parent
    h = hashlib.sha256()
    for name in _TRAINING_CODE:
        path = here / name
        if path.exists():
            h.update(name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


# Read once, when the package is imported: a run id must name the code that is running, even if
# the files on disk are edited while a long-lived kernel keeps training with the old code.
_FINGERPRINT = _fingerprint_files()


def code_fingerprint() -> str:
    return _FINGERPRINT


def config_hash(config: dict) -> str:
    payload = json.dumps({"config": config, "code": code_fingerprint()}, sort_keys=True,
                         default=str)
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
    import io
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
    cached: bool = False  # set when returned from the store; never saved

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("cached")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunResult":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def curve(self, key: str) -> list:
        return [epoch[key] for epoch in self.history]

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

    def load(self, run_id: str) -> RunResult:
        path = self.result_path(run_id)
        try:
            data = json.loads(path.read_text())
            result = RunResult.from_dict(data)
        except (OSError, ValueError, TypeError) as err:
            raise RuntimeError(
                f"the results file {path} cannot be read ({err}). It is left untouched: move it "
                f"away (or pass force=True to train again and replace it).") from err
        result.cached = True
        return result

    def check_readable(self, run_id: str) -> None:
        """Raise before any work when an existing result or checkpoint of this run is unreadable."""
        if self.has_result(run_id):
            self.load(run_id)

    def save(self, result: RunResult) -> None:
        atomic_write_json(self.result_path(result.run_id), result.to_dict())

    def save_headline(self, profile: str, notebook: str, numbers: dict) -> Path:
        path = self.root / "headlines" / profile / f"{notebook}.json"
        atomic_write_json(path, numbers)
        return path

    def headlines(self, profile: str) -> dict[str, dict]:
        folder = self.root / "headlines" / profile
        return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}

"""Execute the companion's notebooks for the Jupyter Book, with named profiles.

Usage::

    python -m lslu.book execute --profile smoke            # all notebooks -> book/executed/
    python -m lslu.book execute --profile fast --only 01_lslu_function
    python -m lslu.book baselines                           # re-execute notebooks/ in place

Profiles (``<profiles dir>/<name>.yaml``) and what each notebook receives from one are
lslu.profiles; this module runs the notebooks and records how they ran.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import nbformat
import torch
import yaml

from .profiles import (_as_profile, _check_profile_keys, available_profiles, find_notebooks,
                       notebook_parameters)
# public here too: notebooks/12_summary.ipynb, lslu.chapters.summary and the book's tests import
# them as lslu.book.x (their home is lslu.profiles)
from .profiles import (PROFILES_DIR, declared_parameters, find_profiles_dir,  # noqa: F401
                       load_profile, profile_values)
from .grid import chapter_parameters, default_registry
from .results import default_results_dir

__all__ = ["toc_files", "PROFILES_DIR", "find_profiles_dir", "available_profiles", "load_profile",
           "profile_values", "notebook_parameters", "find_notebooks", "execute", "baselines",
           "hardware_description", "resolve_results_dir_env", "NotebookExecutionError", "main"]

KERNEL_NAME = "python3"


class NotebookExecutionError(RuntimeError):
    """A notebook failed; ``notebook`` is the source, ``partial`` the partially executed copy."""

    def __init__(self, message: str, notebook: Path, partial: Path):
        super().__init__(message)
        self.notebook = notebook
        self.partial = partial


def toc_files(root: str | os.PathLike) -> list[str]:
    """Every page of the book, in ``_toc.yml`` order (the root page first)."""
    toc = yaml.safe_load((Path(root) / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                files.append(e["file"])
            walk(e.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


# ------------------------------------------------------------------------------- notebooks
def check_kernel(kernel_name: str = KERNEL_NAME) -> None:
    """Raise ``RuntimeError`` with instructions if the Jupyter kernel is not installed."""
    # imported here: only execution needs Jupyter's kernel machinery
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    try:
        KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        raise RuntimeError(
            f"Jupyter kernel {kernel_name!r} not found (searched {KernelSpecManager().kernel_dirs})."
            f" Install ipykernel into this environment ({sys.executable} -m pip install ipykernel,"
            f" or `make venv`); notebooks are executed with -k {kernel_name}.") from None


def _has_inline_magic(notebook_path: Path) -> bool:
    nb = nbformat.read(str(notebook_path), as_version=4)
    return any(c.cell_type == "code" and any(line.strip() == "%matplotlib inline"
                                             for line in c.source.splitlines())
               for c in nb.cells)


def check_matplotlib_backend(notebooks: Iterable[Path]) -> None:
    """Fail early if ``MPLBACKEND`` would leave executed notebooks without figures.

    A non-interactive backend in the environment (``MPLBACKEND=Agg``, common in CI) is inherited
    by the kernel and suppresses the inline figures, unless the notebook itself selects
    ``%matplotlib inline``, as every notebook of this project must.
    """
    backend = os.environ.get("MPLBACKEND", "")
    if not backend or "inline" in backend:
        return
    bad = [p.name for p in notebooks if not _has_inline_magic(p)]
    if bad:
        raise RuntimeError(
            f"MPLBACKEND={backend} is set and {bad} do not run '%matplotlib inline': their figures"
            f" would be missing from the book. Unset MPLBACKEND or add '%matplotlib inline'.")


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def hardware_description() -> dict:
    """What the notebooks ran on, without the host name."""
    info = {"machine": platform.machine(), "processor": platform.processor() or None,
            "system": platform.system(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "cpu_model": _cpu_model()}
    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
    info["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if torch.cuda.is_available():
        info["cuda_device_count"] = torch.cuda.device_count()
    return info


def _home_relative(path: str | None) -> str | None:
    home = os.path.expanduser("~")
    if path and home not in ("", "/") and path.startswith(home + os.sep):
        return "~" + path[len(home):]
    return path


def _hardware_line(hw: dict) -> str:
    dev = hw.get("cuda_device") or (f"CPU only ({hw.get('cpu_count')} cores, "
                                    f"{hw.get('cpu_model') or hw.get('machine')})")
    return f"{dev}, torch {hw.get('torch')}"


def _add_profile_note(out_path: Path, prof: dict, seconds: float, hw: dict) -> None:
    """Insert a short markdown note (profile, description, time, hardware) into the executed copy.

    It goes right after papermill's ``injected-parameters`` cell (or after the first cell, which
    holds the page title, if nothing was injected).
    """
    nb = nbformat.read(str(out_path), as_version=4)
    pos = 1 if nb.cells else 0
    for i, c in enumerate(nb.cells):
        tags = c.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags:
            # the reader sees the notebook's own parameters cell and the note below; a second,
            # near-identical block would only confuse (myst-nb drops cells tagged remove-cell)
            if "remove-cell" not in tags:
                c.metadata["tags"] = [*tags, "remove-cell"]
            pos = i + 1
            break
    text = (f"> **Profile `{prof['name']}`.** {prof['description']}  \n"
            f"> Executed in {seconds:.0f} s on {_hardware_line(hw)} "
            f"(`python -m lslu.book execute --profile {prof['name']}`).")
    cell = nbformat.v4.new_markdown_cell(text, metadata={"tags": ["lslu-profile-note"]})
    nb.cells.insert(pos, cell)
    nbformat.write(nb, str(out_path))


def resolve_results_dir_env() -> str | None:
    """Make a relative ``$LSLU_RESULTS_DIR`` absolute, against the working directory the command
    was started in, and return it (None when unset).

    The notebooks run with the notebooks folder as working directory; resolved there, a relative
    folder would be another cache than the one the CLI (``python -m lslu train``) uses from the
    repository root, and every run would be trained twice.
    """
    value = os.environ.get("LSLU_RESULTS_DIR")
    if not value:
        return None
    resolved = str(Path(value).expanduser().resolve())
    os.environ["LSLU_RESULTS_DIR"] = resolved  # inherited by every kernel started from here
    return resolved


@contextlib.contextmanager
def _environ(values: dict):
    """Set the environment variables in ``values`` (None: leave as is) for the block only."""
    saved = {k: os.environ.get(k) for k, v in values.items() if v is not None}
    os.environ.update({k: v for k, v in values.items() if v is not None})
    try:
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


def _show(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def _kernel_stderr(lines: list[str]):
    """Send the kernel subprocess's stderr (it inherits fd 2) to a temporary file.

    ipykernel writes start-up/shutdown chatter there; it is dropped on success and its tail is
    shown on failure (useful when the kernel itself dies, e.g. out of memory).
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2: leave things as they are
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode("utf-8", "replace").splitlines())


def _run_one(src: Path, dst: Path, parameters: dict | None, cwd: Path) -> float:
    import papermill  # imported here: a second to import, and only executing needs it
    t0 = time.perf_counter()
    kernel_log: list[str] = []
    try:
        with _kernel_stderr(kernel_log):
            papermill.execute_notebook(str(src), str(dst), parameters=parameters,
                                       kernel_name=KERNEL_NAME, cwd=str(cwd),
                                       progress_bar=False, log_output=False)
    except Exception as exc:  # papermill.PapermillExecutionError and kernel/startup failures
        seconds = time.perf_counter() - t0
        if hasattr(exc, "exec_count"):
            where = f" in cell [{exc.exec_count}] ({exc.ename}: {exc.evalue})"
        else:
            where = f" ({type(exc).__name__}: {exc})"
        msg = (f"FAILED {_show(src)}{where} after {seconds:.1f} s; "
               f"partial notebook with the traceback: {_show(dst)}")
        tail = [ln for ln in kernel_log if "without encryption" not in ln][-20:]
        if tail:
            msg += "\nkernel stderr (last lines):\n  " + "\n  ".join(tail)
        raise NotebookExecutionError(msg, src, dst) from exc
    return time.perf_counter() - t0


def execute(profile: str | dict, only: Iterable[str] | None = None,
            out_dir: str | os.PathLike = "book/executed",
            notebooks_dir: str | os.PathLike = "notebooks",
            profiles_dir: str | os.PathLike | None = None) -> dict:
    """Execute the notebooks with ``profile``'s parameters into ``out_dir`` for the book.

    Notebooks run sorted by name, one kernel each, with the notebooks directory as working
    directory.  Writes ``out_dir/run_log.json`` and returns its content.  On the first failure,
    prints which notebook failed and where its partial copy is, records it in the log and raises
    ``NotebookExecutionError``. ``profile`` is a name (looked up with find_profiles_dir) or a
    loaded profile; its keys are checked against the notebooks before any notebook runs.
    """
    nb_dir = Path(notebooks_dir).resolve()
    out = Path(out_dir)
    notebooks = find_notebooks(nb_dir, only)
    if not notebooks:
        raise ValueError(f"no notebooks found in {notebooks_dir}")
    prof = _as_profile(profile, nb_dir, profiles_dir)
    if not isinstance(profile, str):  # a profile loaded without notebooks: check its keys here
        _check_profile_keys(prof, Path(prof.get("path") or f"{prof['name']}.yaml"), nb_dir)
    check_kernel()
    check_matplotlib_backend(notebooks)
    params = {p.stem: notebook_parameters(prof, p) for p in notebooks}  # validate all first
    registry = default_registry()
    asked = {p.stem: _asked_runs(prof, p, registry) for p in notebooks}
    out.mkdir(parents=True, exist_ok=True)

    log_path = out / "run_log.json"
    log = {"profile": prof["name"], "description": prof["description"], "notebooks": {}}
    if only and log_path.exists():  # keep the other notebooks' entries of the same profile
        try:
            old = json.loads(log_path.read_text(encoding="utf-8"))
            if old.get("profile") == prof["name"]:
                log["notebooks"] = old.get("notebooks", {})
        except (OSError, ValueError):
            pass
    hw = hardware_description()
    results_dir = resolve_results_dir_env()
    log.update(started=datetime.now(timezone.utc).isoformat(timespec="seconds"), hardware=hw,
               results_dir=_home_relative(results_dir))

    def write_log():
        log["total_seconds"] = round(sum(v.get("seconds", 0.0) for v in log["notebooks"].values()), 1)
        log_path.write_text(json.dumps(log, indent=2, sort_keys=False) + "\n", encoding="utf-8")

    # The kernels inherit the environment: the summary notebook finds this very profile.
    kernel_env = {"LSLU_PROFILES_DIR": str(Path(prof["path"]).parent) if prof.get("path") else None}
    print(f"profile {prof['name']}: {len(notebooks)} notebook(s) -> {out}", flush=True)
    t_all = time.perf_counter()
    runs_before = _stored_runs()
    for src in notebooks:
        dst = out / src.name
        try:
            with _environ(kernel_env):
                seconds = _run_one(src, dst.resolve(), params[src.stem], nb_dir)
        except NotebookExecutionError as exc:
            log["notebooks"][src.stem] = {"status": "failed", "parameters": params[src.stem]}
            write_log()
            print(exc, file=sys.stderr, flush=True)
            raise
        except BaseException as exc:  # Ctrl-C, SIGTERM (see main): the log still says so
            log["notebooks"][src.stem] = {"status": "interrupted", "parameters": params[src.stem],
                                          "reason": type(exc).__name__}
            write_log()
            raise
        _add_profile_note(dst, prof, seconds, hw)
        runs_after = _stored_runs()
        trained = len(runs_after - runs_before)
        loaded = len(asked[src.stem] & runs_before)
        runs_before = runs_after
        log["notebooks"][src.stem] = {"status": "ok", "seconds": round(seconds, 1),
                                      "trained_runs": trained, "loaded_runs": loaded,
                                      "parameters": params[src.stem]}
        # the kernels show no progress bars (lslu.train.show_progress): this line is the progress
        what = (f"trained {_plural(trained, 'new run')}, loaded {loaded}" if trained
                else f"nothing trained ({_plural(loaded, 'run')} loaded)" if asked[src.stem]
                else "no runs")
        print(f"  {src.stem:<32s} {seconds:8.1f} s  {what}", flush=True)
    write_log()
    print(f"done in {time.perf_counter() - t_all:.1f} s; log: {log_path}", flush=True)
    return log


def _asked_runs(profile: dict, notebook: Path, registry: dict) -> set[str]:
    """Run ids the chapter of ``notebook`` asks for under ``profile`` (``registry``:
    lslu.grid.default_registry; empty for a notebook that trains nothing): those already stored
    are the runs it loads."""
    configs = registry.get(notebook.stem)
    if configs is None:
        return set()
    return {c.run_id for c in configs(**chapter_parameters(profile, notebook.stem,
                                                             notebook.parent))}


def _stored_runs() -> set[str]:
    """Run ids with a finished result in the store the kernels use (new ones were trained)."""
    return {p.stem for p in (default_results_dir() / "runs").glob("*.json")}


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _strip_run_metadata(path: Path) -> None:
    """Drop papermill's per-run timestamps so re-generated baselines diff cleanly."""
    nb = nbformat.read(str(path), as_version=4)
    nb.metadata.pop("papermill", None)
    for c in nb.cells:
        c.metadata.pop("papermill", None)
        c.metadata.pop("execution", None)
        if c.metadata.get("tags") == []:
            del c.metadata["tags"]
    nbformat.write(nb, str(path))


def baselines(only: Iterable[str] | None = None, notebooks_dir: str | os.PathLike = "notebooks"
              ) -> dict:
    """Re-execute the notebooks in place with no parameters (their own defaults).

    This regenerates the stored outputs that ``pytest --nbval`` compares against.
    """
    nb_dir = Path(notebooks_dir).resolve()
    notebooks = find_notebooks(nb_dir, only)
    if not notebooks:
        raise ValueError(f"no notebooks found in {notebooks_dir}")
    check_kernel()
    check_matplotlib_backend(notebooks)
    resolve_results_dir_env()
    times = {}
    for src in notebooks:
        seconds = _run_one(src, src, None, nb_dir)  # a failure leaves the partial in place
        _strip_run_metadata(src)
        times[src.stem] = round(seconds, 1)
        print(f"  {src.stem:<32s} {seconds:8.1f} s", flush=True)
    return times


# ------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lslu.book",
        description="Execute the notebooks for the Jupyter Book (see profiles/*.yaml).")
    sub = p.add_subparsers(dest="command", required=True)
    try:
        profiles = ", ".join(available_profiles())
    except ValueError:  # no profiles folder here: --help must still work
        profiles = "(no profiles folder found)"
    e = sub.add_parser("execute", help="execute notebooks with a profile into book/executed/",
                       description="Execute notebooks/*.ipynb with a profile's parameters into "
                                   "OUT_DIR for the book, and write OUT_DIR/run_log.json.")
    e.add_argument("--profile", default="smoke",
                   help=f"profile name, one of: {profiles} (default: smoke)")
    e.add_argument("--profiles-dir", help="folder of the profiles <name>.yaml (default: "
                                          "$LSLU_PROFILES_DIR, else ./profiles, else the "
                                          "checkout's profiles/)")
    e.add_argument("--only", nargs="+", metavar="NOTEBOOK",
                   help="notebook stems to execute (default: all), e.g. 01_lslu_function")
    e.add_argument("--out-dir", default="book/executed", help="default: book/executed")
    e.add_argument("--notebooks-dir", default="notebooks", help="default: notebooks")
    b = sub.add_parser("baselines", help="re-execute notebooks in place (nbval baselines)",
                       description="Re-execute notebooks/*.ipynb in place with no parameters "
                                   "(their defaults = the smoke profile), regenerating the "
                                   "outputs that pytest --nbval compares.")
    b.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="notebook stems (default: all)")
    b.add_argument("--notebooks-dir", default="notebooks", help="default: notebooks")
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that execute() records it in run_log.json on its way out."""


def _on_sigterm(signum, frame):
    raise Terminated(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if args.command == "execute":
            execute(args.profile, only=args.only, out_dir=args.out_dir,
                    notebooks_dir=args.notebooks_dir, profiles_dir=args.profiles_dir)
        else:
            baselines(only=args.only, notebooks_dir=args.notebooks_dir)
    except NotebookExecutionError:
        return 1  # already reported
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        where = ("; the notebook that was running is marked 'interrupted' in "
                 f"{Path(args.out_dir) / 'run_log.json'}" if args.command == "execute" else "")
        print(f"interrupted ({'SIGTERM' if isinstance(exc, Terminated) else 'Ctrl-C'}){where}",
              file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run inside a notebook's kernel: refuse a parameter that the notebook does not declare.

Papermill (and so ``python -m lslu.book``) inserts its ``injected-parameters`` cell right after
the cell tagged ``parameters``, and only *warns* about a name that cell does not declare: a typo
such as ``-p epoch 1`` would train the whole notebook with its defaults. Every notebook
therefore wraps its parameters cell in two small cells::

    from lslu.notebook import check_parameters, start_parameters
    start_parameters()        # the cell before `parameters`
    <the parameters cell>
    <papermill's injected cell, when parameters are given>
    check_parameters()        # the cell after: ValueError on a name the parameters cell lacks

``start_parameters`` records the source of every cell executed after it (IPython's
``pre_run_cell`` event), so the check reads the parameters cell's own assignments and those of the
cells run after it: the list of parameters is written once, in the parameters cell. The checked values are kept for ``save_headline``,
which files a chapter's headline numbers under the parameters that produced them.
"""
from __future__ import annotations

import ast
import difflib
import json

__all__ = ["start_parameters", "check_parameters", "current_parameters", "assigned_names"]

_state: dict = {}


def assigned_names(source: str) -> list[str]:
    """Names bound at the top level of ``source`` by ``name = ...`` (or ``name: T = ...``), in
    order. A parameters cell must consist of such assignments (papermill's own rule)."""
    names = []
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        for t in targets:
            if isinstance(t, ast.Name) and t.id not in names:
                names.append(t.id)
    return names


def _literal(node) -> object:
    try:
        return ast.literal_eval(node)
    except ValueError:  # not a literal: keep its source text, it still names the default
        return ast.unparse(node)


def _defaults(source: str) -> dict:
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and node.value is not None:
            for t in node.targets:
                if isinstance(t, ast.Name):
                    out[t.id] = _literal(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            out[node.target.id] = _literal(node.value)
    return _plain(out)


def _plain(value):
    """A JSON-shaped copy (tuples become lists): what is hashed and stored must not change when a
    later cell mutates the notebook's variables."""
    return json.loads(json.dumps(value, default=repr))


def start_parameters() -> None:
    """Mark the next executed cell as the parameters cell (call it in the cell just before).

    From here on every executed cell's source is recorded through IPython's ``pre_run_cell``
    event: the kernel's history (``In``) is not enough, since nbval runs cells without storing
    them there.
    """
    shell = _shell()
    _stop_recording(shell)
    _state.clear()
    cells: list[str] = []

    def record(info) -> None:
        cells.append(info.raw_cell)

    shell.events.register("pre_run_cell", record)
    _state.update(cells=cells, hook=record)


def _shell():
    from IPython import get_ipython  # only inside a kernel; the package itself needs no IPython
    shell = get_ipython()
    if shell is None:
        raise RuntimeError("lslu.notebook checks run only inside a Jupyter/IPython kernel")
    return shell


def _stop_recording(shell) -> None:
    hook = _state.pop("hook", None)
    if hook is not None:
        try:
            shell.events.unregister("pre_run_cell", hook)
        except ValueError:  # already gone (a kernel restart keeps no events)
            pass


def check_parameters() -> None:
    """Fail on a parameter given to the notebook that its parameters cell does not declare.

    Call in the cell right after the parameters cell. Raises ValueError naming the unknown names
    (with the nearest declared one) and what the notebook declares. The checked values are kept
    for ``current_parameters()`` (nothing is returned: the cell shows no output).
    """
    shell = _shell()
    namespace = shell.user_ns
    cells = _state.pop("cells", None)
    _stop_recording(shell)
    # cells: the parameters cell, papermill's injected cell (if any), then this cell itself
    if cells is None or len(cells) < 2:
        raise RuntimeError("check_parameters(): run the notebook's cells in order from the cell "
                           "that calls start_parameters() (just before the parameters cell)")
    history, start = cells, 0
    current = len(cells) - 1
    declared = assigned_names(history[start])
    if not declared:
        raise RuntimeError("check_parameters(): the cell run after start_parameters() declares "
                           "no parameters; run the notebook's cells in order")
    given = []
    for source in history[start + 1:current]:  # papermill's injected cell (or a re-run)
        given += [n for n in assigned_names(source) if n not in given]
    unknown = [n for n in given if n not in declared]
    if unknown:
        hints = [f"{m[0]!r} for {n!r}" for n in unknown
                 for m in [difflib.get_close_matches(n, declared, n=1)] if m]
        raise ValueError(
            f"unknown parameter(s) {unknown} given to this notebook"
            f"{' (did you mean ' + ', '.join(hints) + '?)' if hints else ''}; its parameters "
            f"cell declares only: {', '.join(declared)}")
    values = _plain({name: namespace[name] for name in declared})
    _state["checked"] = {"parameters": values, "defaults": _defaults(history[start])}


def current_parameters() -> dict:
    """``{"parameters": ..., "defaults": ...}`` of the last ``check_parameters()`` in this
    process: the values the notebook runs with and those its parameters cell writes."""
    if "checked" not in _state:
        raise RuntimeError("the notebook's parameters are unknown: call "
                           "lslu.notebook.check_parameters() in the cell after the parameters "
                           "cell (or pass parameters= explicitly)")
    return json.loads(json.dumps(_state["checked"]))

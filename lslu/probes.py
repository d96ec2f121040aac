"""What the chapters need from a trained model, measured once at the end of training and stored
with the run (``RunResult.probes``), so that no chapter needs the weights (they are not committed).

    probes = compute_probes(model, val_loader, classes, amp_dtype=None)   # a JSON-ready dict

Two probes, both on the whole validation split in eval mode:

- the confusion matrix (sklearn.metrics.confusion_matrix; row = true class, column = predicted),
  from the same forward pass and autocast as the trainer's evaluation, so its trace / sum is
  the run's final top-1;
- the class selectivity index of Morcos et al. (2018) of every unit of every activation module
  (found by the mark ``is_activation`` that lslu.activations.make_activation sets on every module
  it builds). A unit's response to an image is its spatial mean; mu_k is its mean response over
  the images of class k;
  SI = (mu_max - mu_rest) / (mu_max + mu_rest), mu_rest the mean of the other K - 1 class means.
  It is read at two points: g(x), the non-negative elementwise series of LSLU and VanillaNet's
  series activation (the module's output for the other activations), with NaN (stored as null)
  where it is undefined; and the module's output (after its BN, so class means can be negative)
  with every unit shifted by its smallest class mean first. Each comes with a control: the same
  index with the labels randomly permuted over the images, the level that sampling noise gives.

Class means are accumulated batch by batch (float64 sums per class), so memory does not grow with
the number of images. Per-unit values are stored rounded to 4 decimals (a run of full-width
VanillaNet-5 stays well under 1 MB). The stored layout is described in PROBE_FIELDS.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

__all__ = ["PROBE_FIELDS", "DECIMALS", "activation_modules",
           "selectivity_index", "compute_probes", "selectivity_arrays", "confusion_matrix_of"]

DECIMALS = 4
# per-layer keys of probes["selectivity"][i] besides "layer" and "units"
PROBE_FIELDS = ("si", "si_shuffled", "si_output_shift", "si_output_shift_shuffled",
                "output_negative")


def activation_modules(model: nn.Module) -> dict:
    """Name -> module for every activation module of ``model``, in forward (registration) order:
    those lslu.activations.make_activation built (marked ``is_activation``), whatever their type."""
    return {name: m for name, m in model.named_modules() if getattr(m, "is_activation", False)}


def selectivity_index(class_means, negative: str = "shift") -> np.ndarray:
    """Morcos et al.'s index per unit from class means (K, units), K >= 2.

    negative="exclude": the index as defined; NaN for a unit with a negative class mean or a zero
    denominator (a dead unit). negative="shift": each unit's class means are shifted by their
    minimum first, SI = (mu_max - mu_rest) / (mu_max + mu_rest - 2 mu_min), in [0, 1] for every
    unit and unchanged by a constant added to the unit (a BN shift); 0 when all means are equal.
    """
    means = np.asarray(class_means, dtype=np.float64)
    if means.ndim != 2 or means.shape[0] < 2:
        raise ValueError(f"class_means must be (classes >= 2, units), got shape {means.shape}")
    if negative not in ("shift", "exclude"):
        raise ValueError(f"negative must be 'shift' or 'exclude', got {negative!r}")
    invalid = np.zeros(means.shape[1], dtype=bool)
    if negative == "shift":
        means = means - means.min(0, keepdims=True)
    else:
        invalid = (means < 0).any(0)
    top = means.max(0)
    rest = (means.sum(0) - top) / (means.shape[0] - 1)
    denom = top + rest
    si = np.divide(top - rest, denom, out=np.zeros_like(top), where=denom > 0)
    if negative == "exclude":
        si[invalid | (denom <= 0)] = np.nan
    return si


def _rounded(values) -> list:
    # JSON has no NaN: an undefined index is stored as null
    return [None if not math.isfinite(v) else round(v, DECIMALS) for v in map(float, values)]


@torch.no_grad()
def compute_probes(model: nn.Module, loader, classes, amp_dtype=None, control_seed: int = 0
                   ) -> dict:
    """The probes of a trained ``model`` over every batch of ``loader`` (yielding (images,
    labels) in a fixed order, e.g. a DeviceLoader with train=False); ``classes`` are the class
    names (label = index). ``amp_dtype``: the autocast dtype the trainer evaluated with (None:
    full precision). Returns the JSON-ready dict stored as RunResult.probes."""
    num_classes = len(classes)
    if num_classes < 2:
        raise ValueError(f"probes need at least 2 classes, got {num_classes}")
    device = next(model.parameters()).device
    # the label order first (cheap: no forward), so the permutation control is known up front
    labels = torch.cat([y.cpu() for _, y in loader]).numpy().astype(np.int64)
    if labels.size == 0:
        raise ValueError("probes need at least one validation image, the loader yields none")
    shuffled = np.random.default_rng(control_seed).permutation(labels)
    counts = np.bincount(labels, minlength=num_classes)
    present = np.flatnonzero(counts)  # a class without images has no mean: left out of the index

    modules = activation_modules(model)
    sums = {}  # (layer, point, "true"/"shuffled") -> float64 (K, C)
    batch = {}  # the current batch's true and permuted labels, read by the hooks

    def add(name, point, value):
        value = value.detach().float()
        value = value.mean(dim=(2, 3)) if value.dim() == 4 else value.flatten(1)
        value = value.double().cpu()
        for which in ("true", "shuffled"):
            key = (name, point, which)
            if key not in sums:
                sums[key] = torch.zeros(num_classes, value.shape[1], dtype=torch.float64)
            sums[key].index_add_(0, batch[which], value)

    def pre_hook(name):
        def record(module, args):
            add(name, "elementwise", module.elementwise(args[0]))
        return record

    def hook(name, has_elementwise):
        def record(module, args, output):
            add(name, "output", output)
            if not has_elementwise:
                add(name, "elementwise", output)
        return record

    handles = []
    for name, m in modules.items():
        has_elementwise = callable(getattr(m, "elementwise", None))
        if has_elementwise:
            handles.append(m.register_forward_pre_hook(pre_hook(name)))
        handles.append(m.register_forward_hook(hook(name, has_elementwise)))
    was_training = model.training
    model.eval()
    predicted, start = [], 0
    try:
        for images, y in loader:
            n = len(y)
            batch["true"] = torch.from_numpy(labels[start:start + n])
            batch["shuffled"] = torch.from_numpy(shuffled[start:start + n])
            start += n
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(images.to(device))
            predicted.append(logits.argmax(1).cpu())
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    # imported here: scikit-learn costs a second, and lslu.train (which imports this) rarely needs it
    from sklearn.metrics import confusion_matrix
    matrix = confusion_matrix(labels, torch.cat(predicted).numpy(),
                              labels=np.arange(num_classes))
    selectivity = []
    if len(present) >= 2:
        for name in modules:
            if (name, "output", "true") not in sums:
                continue  # a module the forward pass never reached
            mean = {key[1:]: (s.numpy() / counts[:, None])[present]
                    for key, s in sums.items() if key[0] == name}
            output_means = mean[("output", "true")]
            selectivity.append({
                "layer": name, "units": int(output_means.shape[1]),
                "si": _rounded(selectivity_index(mean[("elementwise", "true")], "exclude")),
                "si_shuffled": _rounded(selectivity_index(mean[("elementwise", "shuffled")],
                                                          "exclude")),
                "si_output_shift": _rounded(selectivity_index(output_means, "shift")),
                "si_output_shift_shuffled": _rounded(selectivity_index(
                    mean[("output", "shuffled")], "shift")),
                "output_negative": [bool(v) for v in (output_means < 0).any(0)]})
    return {"split": "val", "images": int(labels.size), "classes": [str(c) for c in classes],
            "confusion_matrix": matrix.astype(int).tolist(), "control_seed": int(control_seed),
            "selectivity_classes": [int(k) for k in present], "selectivity": selectivity}


def _probes_of(result) -> dict:
    probes = getattr(result, "probes", None)
    if not probes:
        raise ValueError(f"run {getattr(result, 'run_id', '?')} has no stored probes (trained "
                         f"before they were stored): train it again to get them")
    return probes


def selectivity_arrays(result) -> dict:
    """{layer: {"si": array, "si_shuffled": ..., "si_output_shift": ...,
    "si_output_shift_shuffled": ..., "output_negative": bool array}} in forward order, from a
    stored run (null -> NaN): the form lslu.analysis.class_selectivity returns, less class_means."""
    out = {}
    for entry in _probes_of(result)["selectivity"]:
        out[entry["layer"]] = {
            key: (np.array(entry[key], dtype=bool) if key == "output_negative"
                  else np.array([np.nan if v is None else v for v in entry[key]], dtype=float))
            for key in PROBE_FIELDS}
    return out


def confusion_matrix_of(result) -> np.ndarray:
    """The stored validation confusion matrix (K, K) of a run: row = true, column = predicted."""
    return np.array(_probes_of(result)["confusion_matrix"], dtype=np.int64)

"""An exported model: NAME.pt, the state dict alone (it loads with plain
`torch.load(path, weights_only=True)`, no code of ours needed), and NAME.json beside it, what
rebuilds and evaluates it: hyperparameters, seed, data source and checksum, validation subjects,
the inputs' normalisation, protocol, code version, device and execution, and the metrics recorded
at its epoch. `larnn export` writes the pair from a trial's kept model; `larnn evaluate` reads it.

Evaluated on the data it was trained on, on the same kind of device with the same execution and
thread count, an exported model gives exactly the recorded numbers (tests/test_export.py).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from larnn_core.checkpoint import restore_model
from larnn_core.classifier import build_model
from larnn_core.data import HARData
from larnn_core.execution import resolve
from larnn_core.files import atomic_write, read_json_object
from larnn_core.hparams import HParams
from larnn_core.provenance import resolve_device
from larnn_core.train import confusion_matrix, metrics, predict

SPLITS = ("test", "validation")


def description_path(path: Path) -> Path:
    return path.with_suffix(".json")


def write_export(out: Path, weights: dict[str, torch.Tensor], description: dict[str, Any]) -> None:
    """out (a .pt file) and its description beside it, each written whole; the description records
    the weights' SHA-256, so a pair that was mixed up or damaged is refused when read."""
    if out.suffix != ".pt":
        raise ValueError(f"--out {out}: an exported model is a .pt file (its description goes beside it as .json)")
    buffer = io.BytesIO()
    torch.save({name: tensor.detach().cpu() for name, tensor in weights.items()}, buffer)
    data = buffer.getvalue()
    described = {**description, "weights_sha256": hashlib.sha256(data).hexdigest()}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, data)
    atomic_write(description_path(out), (json.dumps(described, indent=2) + "\n").encode())


def read_export(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights and description of an exported model; ValueError or FileNotFoundError, naming
    the file, for anything else."""
    described = description_path(path)
    if path.suffix != ".pt" or not path.is_file():
        raise FileNotFoundError(f"{path} is not an exported model (a .pt file written by larnn export)")
    if not described.is_file():
        raise FileNotFoundError(f"{path}: its description {described.name} is missing beside it")
    description = read_json_object(described)
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != description.get("weights_sha256"):
        raise ValueError(f"{path} does not match its description {described.name} (weights_sha256)")
    try:
        weights = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as error:  # torch raises many kinds for a file that is not its format
        raise ValueError(f"{path} does not load as a state dict ({str(error)[:120]})") from None
    if not isinstance(weights, dict) or not all(isinstance(t, torch.Tensor) for t in weights.values()):
        raise ValueError(f"{path} is not a state dict (a mapping of names to tensors)")
    return weights, description


def _field(description: dict[str, Any], name: str, kind: type) -> Any:
    value = description.get(name)
    if not isinstance(value, kind):
        raise ValueError(f"the model's description lacks {name} (or it is not a {kind.__name__})")
    return value


def evaluate_export(
    weights: dict[str, torch.Tensor], description: dict[str, Any], data: HARData, split: str, device: str
) -> dict[str, Any]:
    """The model rebuilt from its description and evaluated on one split of data, its inputs
    normalised with the training's statistics: loss, accuracy, weighted F1, confusion matrix."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    hp = HParams.from_dict(_field(description, "hyperparameters", dict))
    normalisation = _field(description, "normalisation", dict)
    dev = resolve_device(device)
    recorded = description.get("execution") if str(description.get("device", "")).startswith(dev.type) else None
    execution = resolve(dev.type, **(recorded or {}))
    if split == "test":
        rows = data.split == "test"
    else:
        rows = (data.split == "train") & np.isin(data.subject, _field(description, "validation_subjects", list))
    if not rows.any():
        raise ValueError(f"the data has no {split} windows for this model (its validation subjects are not in it)")
    mean, std = (np.asarray(normalisation[key], dtype=data.X.dtype) for key in ("mean", "std"))
    X = torch.from_numpy(((data.X[rows] - mean) / std).astype(np.float32)).to(dev)
    y = torch.from_numpy(data.y[rows]).to(dev)
    n_classes = weights["head.weight"].shape[0] if "head.weight" in weights else int(data.y.max()) + 1
    model = build_model(hp, n_inputs=X.shape[2], n_classes=n_classes, steps=X.shape[1], execution=execution).to(dev)
    restore_model(model, weights)
    logits = predict(model, X)
    measured = metrics(logits, y, n_classes)
    return {
        "split": split,
        "windows": int(rows.sum()),
        **measured,
        "confusion": confusion_matrix(y.cpu().numpy(), logits.argmax(1).cpu().numpy(), n_classes).tolist(),
    }

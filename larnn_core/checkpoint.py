"""A training's state at an epoch boundary (Checkpoint) and a trained model (ModelFile), as bytes
that hold tensors and JSON only.

A checkpoint is everything the next epoch depends on: the weights and the batch norms'
statistics, Adam's moments, the positions of the training's own random generators (shuffling,
dropout), the epochs reported so far and the best epoch's weights. The learning rate is not kept:
it is a function of the epoch (train.py sets it at each epoch's start). Restored into a model built
from the same hyperparameters and seed, the training goes on as if it had never stopped: on CPU
the result is bit for bit the uninterrupted one's (tests/test_checkpoint.py).

Both are safetensors files (a JSON header, then raw tensors), never pickle: reading a checkpoint
from a store, or a model from someone else, runs no code. The header's metadata says what the
file is and which training wrote it, and a file that does not parse, or belongs to another
training (other hyperparameters, seed, data or validation subjects), is refused with one line
(CheckpointRefused); a damaged file is caught before that by the checksum its keeper recorded.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from larnn_core.records import EpochReport

CHECKPOINT_FORMAT = "larnn-checkpoint/1"
MODEL_FORMAT = "larnn-model/1"
# what a checkpoint must share with the training that resumes from it
IDENTITY = ("hyperparameters", "seed", "validation_subjects", "data_checksum", "selection")
# what a model file (and an exported model) describes besides its IDENTITY: the result's provenance
DESCRIBED = ("model", "protocol", "data_source", "normalisation", "code_version", "device", "execution")


class CheckpointRefused(ValueError):
    """A checkpoint or model file that is damaged, of another format, or of another training."""


def header(data: bytes, kind: str) -> dict[str, Any]:
    """The description a file of format `kind` carries (its safetensors metadata, as JSON)."""
    try:
        (length,) = struct.unpack("<Q", data[:8])
        metadata = json.loads(data[8 : 8 + length])["__metadata__"]
        description = json.loads(metadata["description"])
    except (struct.error, ValueError, KeyError, TypeError):
        raise CheckpointRefused(f"not a {kind} file (its header does not parse)") from None
    if metadata.get("format") != kind:
        raise CheckpointRefused(f"a {metadata.get('format')!r} file, not a {kind} file")
    return description


def _tensors(data: bytes, kind: str) -> dict[str, torch.Tensor]:
    try:
        return load_tensors(data)
    except Exception as error:  # safetensors raises its own error types for every kind of damage
        raise CheckpointRefused(f"the {kind} file's tensors do not read ({str(error)[:120]})") from None


def _encode(tensors: dict[str, torch.Tensor], kind: str, description: dict[str, Any]) -> bytes:
    cpu = {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}
    return save_tensors(cpu, metadata={"format": kind, "description": json.dumps(description)})


def _prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{name}": tensor for name, tensor in tensors.items()}


def _unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name[len(prefix) + 1 :]: t for name, t in tensors.items() if name.startswith(prefix + ".")}


@dataclass(frozen=True)
class Checkpoint:
    """A training after `epoch` epochs. `identity` holds IDENTITY's values; the tensors are the
    model's state dict, Adam's state (`<parameter index>.<name>`), the generators' states and the
    best epoch's state dict (None before an epoch could be selected) and, under weight averaging,
    the averaged weights (averaging.py; None without)."""

    epoch: int
    identity: dict[str, Any]
    epochs: tuple[EpochReport, ...]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    generators: dict[str, torch.Tensor]
    best_epoch: int | None = None
    best: dict[str, torch.Tensor] | None = None
    averaged: dict[str, torch.Tensor] | None = None

    def to_bytes(self) -> bytes:
        tensors = {
            **_prefixed("model", self.model),
            **_prefixed("optimizer", self.optimizer),
            **_prefixed("generator", self.generators),
            **_prefixed("best", self.best or {}),
            **_prefixed("averaged", self.averaged or {}),
        }
        description = {
            "epoch": self.epoch,
            "best_epoch": self.best_epoch,
            "epochs": [e.to_document() for e in self.epochs],
            **self.identity,
        }
        return _encode(tensors, CHECKPOINT_FORMAT, description)

    @classmethod
    def from_bytes(cls, data: bytes, expected: dict[str, Any]) -> Checkpoint:
        """The checkpoint in data, refused unless it was written by a training with `expected`
        identity (IDENTITY's values)."""
        description = header(data, CHECKPOINT_FORMAT)
        for name in IDENTITY:
            if description.get(name) != expected[name]:
                raise CheckpointRefused(f"written by another training (its {name} differs)")
        tensors = _tensors(data, "checkpoint")
        try:
            epochs = tuple(EpochReport.from_document(e) for e in description["epochs"])
            epoch, best_epoch = int(description["epoch"]), description["best_epoch"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointRefused("its description lacks the epochs trained") from None
        if len(epochs) != epoch:
            raise CheckpointRefused(f"it says {epoch} epochs but reports {len(epochs)}")
        best = _unprefixed("best", tensors)
        averaged = _unprefixed("averaged", tensors)
        return cls(
            epoch,
            {name: description[name] for name in IDENTITY},
            epochs,
            _unprefixed("model", tensors),
            _unprefixed("optimizer", tensors),
            _unprefixed("generator", tensors),
            best_epoch,
            best or None,
            averaged or None,
        )


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Adam's per-parameter state (step, moments) by parameter index; its hyperparameters come from
    the same HParams on resume, and the learning rate from the epoch."""
    return {
        f"{index}.{name}": value
        for index, state in optimizer.state_dict()["state"].items()
        for name, value in state.items()
    }


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    current = optimizer.state_dict()
    try:
        optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})
    except (ValueError, KeyError, RuntimeError) as error:
        raise CheckpointRefused(f"its optimizer state does not fit this model ({str(error)[:120]})") from None


def restore_model(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copies in place (a CUDA graph captured on the model keeps reading the same addresses)."""
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:
        raise CheckpointRefused(f"its weights do not fit this model ({str(error).splitlines()[0][:160]})") from None


def model_bytes(weights: dict[str, torch.Tensor], description: dict[str, Any]) -> bytes:
    """A trained model: its state dict and what rebuilds and evaluates it (hyperparameters, data,
    seed, validation subjects, the metrics at its epoch)."""
    return _encode(weights, MODEL_FORMAT, description)


def read_model(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A model file's state dict and description; CheckpointRefused for anything else."""
    description = header(data, MODEL_FORMAT)
    return _tensors(data, "model"), description

"""`larnn train --checkpoint-dir DIR` and `larnn train --resume DIR`: a local training that can be
stopped at any time and go on from its last epoch.

DIR holds training.json (the command's settings: hyperparameters, seed, data source, validation
subjects), the last epoch's checkpoint (checkpoint-EPOCH.safetensors, larnn_core/checkpoint.py)
and checkpoint.json, the record naming it with its size and SHA-256. Each file is written whole
(larnn_core/files.py), the checkpoint before its record and the older checkpoint deleted after:
a training killed at any moment leaves a record that names a whole checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from larnn_core.checkpoint import Checkpoint, CheckpointRefused
from larnn_core.files import atomic_write, read_json_object

SETTINGS, RECORD = "training.json", "checkpoint.json"


class CheckpointFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _read_json(self, name: str) -> dict[str, Any] | None:
        path = self.path / name
        return read_json_object(path) if path.is_file() else None

    def start(self, settings: dict[str, Any]) -> None:
        """A new training's folder; refused where one already holds a training (go on with --resume)."""
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"--checkpoint-dir {self.path} is not a folder")
        if (self.path / SETTINGS).exists():
            raise ValueError(
                f"{self.path} already holds a training: go on with `larnn train --resume {self.path}`, "
                "or choose another --checkpoint-dir"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path / SETTINGS, (json.dumps(settings, indent=2) + "\n").encode())

    def settings(self) -> dict[str, Any]:
        settings = self._read_json(SETTINGS)
        if settings is None:
            raise FileNotFoundError(
                f"--resume {self.path}: no {SETTINGS} there (written by larnn train --checkpoint-dir)"
            )
        return settings

    def save(self, checkpoint: Checkpoint) -> None:
        data = checkpoint.to_bytes()
        name = f"checkpoint-{checkpoint.epoch}.safetensors"
        atomic_write(self.path / name, data)
        record = {
            "file": name,
            "epoch": checkpoint.epoch,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        atomic_write(self.path / RECORD, (json.dumps(record) + "\n").encode())
        for older in self.path.glob("checkpoint-*.safetensors"):
            if older.name != name:
                older.unlink(missing_ok=True)

    def load(self, identity: dict[str, Any]) -> Checkpoint | None:
        """The recorded checkpoint (None before the first epoch ended); CheckpointRefused, naming the
        file, when it is damaged or another training's."""
        record = self._read_json(RECORD)
        if record is None:
            return None
        path = self.path / str(record.get("file"))
        if path.parent != self.path or not path.is_file():
            raise CheckpointRefused(f"{self.path / RECORD} names {record.get('file')!r}, which is not there")
        data = path.read_bytes()
        if len(data) != record.get("size") or hashlib.sha256(data).hexdigest() != record.get("sha256"):
            raise CheckpointRefused(f"{path} fails its SHA-256 check")
        try:
            return Checkpoint.from_bytes(data, identity)
        except CheckpointRefused as error:
            raise CheckpointRefused(f"{path}: {error}") from None

"""Files written whole or not at all: what a crash, a full disk or a reader at the wrong moment sees
is the old file or the new one, never half of either."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MAX_JSON_BYTES = 1 << 20  # a settings or description file; anything larger is not ours


def atomic_write(path: Path, data: bytes) -> None:
    """A temporary file beside path, fsync, rename over path, fsync of the folder (the rename
    itself survives a crash); the temporary file is removed if any step fails."""
    part = path.with_name(path.name + ".part")
    try:
        with open(part, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def read_json_object(path: Path) -> dict[str, Any]:
    """A small JSON object from path; ValueError naming the file for anything else."""
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ValueError(f"{path} is {path.stat().st_size} bytes: not a file larnn wrote")
    try:
        document = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({str(error)[:120]})") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path} must be a JSON object")
    return document

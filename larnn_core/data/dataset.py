"""The in-memory HAR dataset both sources produce, and its verified on-disk cache."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CHANNELS = (
    "body_acc_x",
    "body_acc_y",
    "body_acc_z",
    "body_gyro_x",
    "body_gyro_y",
    "body_gyro_z",
    "total_acc_x",
    "total_acc_y",
    "total_acc_z",
)
CLASSES = ("walking", "upstairs", "downstairs", "sitting", "standing", "laying")
TEST_SUBJECTS = (2, 4, 9, 10, 12, 13, 18, 20, 24)  # the official UCI HAR split
TRAIN_SUBJECTS = 30 - len(TEST_SUBJECTS)  # the volunteers of the training split, of whom validation takes some
ARRAYS = ("X", "y", "subject", "split")


@dataclass
class HARData:
    X: np.ndarray  # float32 [N, 128, 9], channels in CHANNELS order
    y: np.ndarray  # int64 [N], 0..5 in CLASSES order
    subject: np.ndarray  # int [N], volunteer 1..30
    split: np.ndarray  # str [N], "train" | "test" (the official subject split)
    source: str  # "hapt" | "uci"
    origin: str  # where the arrays came from (package or URL, with its checksum)
    checksum: str = field(default="")

    def __post_init__(self):
        self.checksum = self.checksum or content_checksum(self)

    def summary(self) -> dict:
        """Counts per split and class, subjects, source and checksum."""
        out = {"source": self.source, "origin": self.origin, "checksum": self.checksum, "splits": {}}
        for name in ("train", "test"):
            mask = self.split == name
            counts = np.bincount(self.y[mask], minlength=len(CLASSES))
            out["splits"][name] = {
                "windows": int(mask.sum()),
                "classes": dict(zip(CLASSES, map(int, counts))),
                "subjects": sorted(map(int, np.unique(self.subject[mask]))),
            }
        return out


def content_checksum(data: HARData) -> str:
    """SHA-256 of the arrays' contents: identifies the data in every result."""
    digest = hashlib.sha256()
    for name in ARRAYS:
        array = np.ascontiguousarray(getattr(data, name))
        digest.update(name.encode() + str(array.dtype).encode() + str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def sha256_file(path: os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """Where prepared arrays live: the argument, else $LARNN_DATA, else the user cache dir."""
    if path is not None:
        return Path(path)
    if os.environ.get("LARNN_DATA"):
        return Path(os.environ["LARNN_DATA"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "larnn"


def cache_path(source: str, directory: str | os.PathLike | None = None) -> Path:
    return data_dir(directory) / f"har-{source}.npz"


def save(data: HARData, path: Path) -> None:
    """Write atomically: a crash never leaves a half-written cache under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # workers may prepare at the same time
    meta = {"source": data.source, "origin": data.origin, "checksum": data.checksum}
    np.savez(tmp, meta=json.dumps(meta), **{name: getattr(data, name) for name in ARRAYS})
    os.replace(tmp, path)


def read(path: Path) -> HARData:
    """Read a cache and verify its contents against the checksum stored with it."""
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        data = HARData(**{name: f[name] for name in ARRAYS}, source=meta["source"], origin=meta["origin"])
    if data.checksum != meta["checksum"]:
        raise ValueError(f"checksum {data.checksum} does not match the recorded {meta['checksum']}")
    return data


def load(
    source: str = "hapt",
    directory: str | os.PathLike | None = None,
    *,
    rebuild: bool = False,
    progress: bool = True,
    **source_options,
) -> HARData:
    """The HAR arrays of a source, prepared on first use and cached; a corrupt cache is rebuilt."""
    from larnn_core.data import hapt, uci

    builders = {"hapt": hapt.build, "uci": uci.build}
    if source not in builders:
        raise ValueError(f"unknown data source {source!r}; choose one of {sorted(builders)}")
    path = cache_path(source, directory)
    if path.exists() and not rebuild:
        try:
            return read(path)
        except Exception as error:  # any unreadable or altered cache is rebuilt, never trusted
            warnings.warn(f"data cache {path} is corrupt ({error}); rebuilding it", stacklevel=2)
    data = builders[source](progress=progress, **source_options)
    save(data, path)
    return data

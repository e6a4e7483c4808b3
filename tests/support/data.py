"""Small data for the tests: a learnable HAR-shaped set, tiny hyperparameters, a miniature UCI zip."""

from __future__ import annotations

import io
import zipfile

import numpy as np

from larnn_core import data as har
from larnn_core.data import HARData
from larnn_core.data.dataset import TEST_SUBJECTS

TINY = dict(
    hidden_size=8,
    attention_heads=2,
    larnn_window_size=3,
    num_layers=1,
    batch_size=32,
    training_epochs=3,
    learning_rate=0.01,
    decay_each_N_epoch=2,
)  # trains in about a second on small_har


def synthetic_har(windows_per_subject: int = 12, steps: int = 16, seed: int = 0) -> HARData:
    """A small, learnable HAR-shaped dataset: the class sets the mean of one channel."""
    rng = np.random.default_rng(seed)
    subjects = np.repeat(np.arange(1, 31), windows_per_subject).astype(np.int16)
    y = np.tile(np.arange(6), len(subjects) // 6 + 1)[: len(subjects)].astype(np.int64)
    X = rng.normal(size=(len(y), steps, 9)).astype(np.float32)
    X[np.arange(len(y)), :, y] += 3.0
    split = np.where(np.isin(subjects, TEST_SUBJECTS), "test", "train")
    return HARData(X=X, y=y, subject=subjects, split=split, source="synthetic", origin="tests/support/data.py")


def write_uci_zip(path, n_train=4, n_test=3, nested=False):
    """A miniature 'UCI HAR Dataset.zip' with the official layout."""
    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    expected = {}
    with zipfile.ZipFile(buffer, "w") as z:
        for split, n in (("train", n_train), ("test", n_test)):
            X = rng.normal(size=(n, 128, 9)).round(6)
            y = np.arange(n) % 6 + 1
            subject = np.arange(n) + (1 if split == "train" else 2)
            for c, name in enumerate(har.CHANNELS):
                text = "\n".join("  " + "  ".join(f"{v:.6e}" for v in row) for row in X[:, :, c])
                z.writestr(f"UCI HAR Dataset/{split}/Inertial Signals/{name}_{split}.txt", text + "\n")
            z.writestr(f"UCI HAR Dataset/{split}/y_{split}.txt", "\n".join(map(str, y)) + "\n")
            z.writestr(f"UCI HAR Dataset/{split}/subject_{split}.txt", "\n".join(map(str, subject)) + "\n")
            expected[split] = (X, y - 1, subject)
    payload = buffer.getvalue()
    if nested:  # the current UCI download wraps the dataset zip in another zip
        outer = io.BytesIO()
        with zipfile.ZipFile(outer, "w") as z:
            z.writestr("UCI HAR Dataset.zip", payload)
        payload = outer.getvalue()
    path.write_bytes(payload)
    return expected

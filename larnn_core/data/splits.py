"""Train / validation / test arrays for one training run.

Validation is made of training subjects only (model selection never sees a test subject), and
the per-channel standardisation is fitted on the training part only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from larnn_core.data.dataset import HARData
from larnn_core.selection import VALIDATION_SUBJECTS


@dataclass
class Splits:
    train: tuple[np.ndarray, np.ndarray]  # X [N, 128, 9] standardised, y [N]
    validation: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    validation_subjects: list[int]
    mean: np.ndarray  # [9], fitted on the training part
    std: np.ndarray


def validation_subjects(data: HARData, n: int, seed: int) -> list[int]:
    """n of the official training subjects, drawn with seed."""
    train_subjects = np.unique(data.subject[data.split == "train"])
    if not 1 <= n < len(train_subjects):
        raise ValueError(f"validation subjects must be between 1 and {len(train_subjects) - 1}, got {n}")
    return sorted(map(int, np.random.default_rng(seed).choice(train_subjects, n, replace=False)))


def make_splits(data: HARData, n_validation_subjects: int = VALIDATION_SUBJECTS, seed: int = 0) -> Splits:
    val = validation_subjects(data, n_validation_subjects, seed)
    is_val = np.isin(data.subject, val) & (data.split == "train")
    masks = {"train": (data.split == "train") & ~is_val, "validation": is_val, "test": data.split == "test"}
    train_X = data.X[masks["train"]]
    mean = train_X.mean(axis=(0, 1))
    std = train_X.std(axis=(0, 1)) + 1e-8
    parts = {name: (((data.X[m] - mean) / std).astype(np.float32), data.y[m]) for name, m in masks.items()}
    return Splits(**parts, validation_subjects=val, mean=mean, std=std)

"""The objective a worker runs for each trial: train one model with larnn_core's protocol.

An objective is any callable (hyperparameters, objective settings, seed, device, on_epoch) -> TrainResult
(larnn_core/records.py); tests inject a fast one. on_epoch(report) must be called after each
epoch with its EpochReport: it reports the epoch to the store, raises for the worker's stop
requests, and returns True when the pruner stops the trial, which must then end with the epochs
it has.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from larnn_core import data as har
from larnn_core.records import EpochReport, TrainResult
from larnn_core.train import train
from workers.records import Objective
from workers.suggest import trial_hparams

ObjectiveFunction = Callable[[dict, Objective, int, str, Callable[[EpochReport], bool]], TrainResult]


@functools.lru_cache(maxsize=2)
def _dataset(source: str) -> har.HARData:
    """Loaded once per worker process, prepared on first use."""
    return har.load(source, progress=False)


def train_objective(
    hyperparameters: dict, objective: Objective, seed: int, device: str, on_epoch: Callable[[EpochReport], bool]
) -> TrainResult:
    return train(
        trial_hparams(hyperparameters, objective),
        _dataset(objective.source),
        device=device,
        seed=seed,
        validation_subjects=objective.validation_subjects,
        progress=False,
        on_epoch=on_epoch,
    )

"""The objective a worker runs for each trial: train one model with larnn_core's protocol.

An objective is any callable (hyperparameters, objective settings, seed, device, trial) -> TrainResult
(larnn_core/records.py); tests inject a fast one. `trial` (worker.TrialSession) is called after each
epoch with its EpochReport: it reports the epoch to the store, raises for the worker's stop
requests, and returns True when the pruner stops the trial, which must then end with the epochs
it has. It also keeps the trial's checkpoints (`save`) and offers the last one (`resume_from`), so
a trial that another worker started goes on from its last epoch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from larnn_core import data as har
from larnn_core.checkpoint import CheckpointRefused
from larnn_core.records import TrainResult
from larnn_core.train import train
from workers.records import Objective
from workers.suggest import trial_hparams

if TYPE_CHECKING:
    from workers.worker import TrialSession

ObjectiveFunction = Callable[[dict, Objective, int, str, "TrialSession"], TrainResult]


@functools.lru_cache(maxsize=2)
def _dataset(source: str) -> har.HARData:
    """Loaded once per worker process, prepared on first use."""
    return har.load(source, progress=False)


def train_objective(
    hyperparameters: dict, objective: Objective, seed: int, device: str, trial: TrialSession
) -> TrainResult:
    """Trains from the trial's checkpoint when it has one that fits; from scratch when it has none,
    or when its checkpoint is refused (the session logs why)."""
    run = functools.partial(
        train,
        trial_hparams(hyperparameters, objective),
        _dataset(objective.source),
        device=device,
        seed=seed,
        validation_subjects=objective.validation_subjects,
        selection=objective.selection,
        progress=False,
        on_epoch=trial,
        on_checkpoint=trial.save,
        test_curves=objective.test_curves,
    )
    try:
        return run(resume_from=trial.resume_from)
    except CheckpointRefused as error:
        trial.refused(error)
        return run()

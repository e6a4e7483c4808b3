"""Trials of one or several experiments as one pandas DataFrame, read through the store interface.

One row per trial: experiment, tid, state, metrics, times, and one flat column per hyperparameter
the space sampled (conditional spaces: NaN where a branch did not define it). Per-epoch reports
(larnn_core.records.EpochReport) stay available: `history`, the result's epochs, and `curve`, the
epochs reported while the trial ran.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from larnn_core.records import HONEST, SELECTED, TEST_PICKED, TRAIN_ACCURACY, VALIDATION_ACCURACY
from workers.records import STATE_NAMES
from workers.store import BaseStore

# the 2018 files' best_train_accuracy: the best over epochs of one 256-sequence batch's accuracy, not
# a training-set accuracy (their train curves measure the same batch); kept under a name that says
# so, never as train_accuracy
TRAIN_BATCH_2018 = "train_batch_accuracy_2018"
METRICS = [*SELECTED, TRAIN_ACCURACY, TRAIN_BATCH_2018, "best_epoch", "epochs", "wall_time_s"]  # at the selected epoch
INFO = [
    "experiment",
    "tid",
    "state",
    "status",
    "protocol",
    "model",
    "loss",
    *METRICS,
    "book_time",
    "finish_time",
    "worker",
    "attempts",
    "error",
    "history",
    "curve",
]


def trials_frame(store: BaseStore, names: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """(frame, hyperparameter column names). Unknown experiment names raise."""
    rows, hyperparameters = [], []
    for name in names:
        imported = store.get_experiment(name).imported
        for trial in store.trials(name):
            result, point = trial.result, trial.point
            # results stored before they recorded it: imports are the 2018 protocol's, trainings honest
            protocol = result.protocol or (TEST_PICKED if imported else HONEST)
            hyperparameters += [k for k in point if k not in hyperparameters]
            rows.append(
                {
                    "experiment": name,
                    "tid": trial.tid,
                    "state": STATE_NAMES[trial.state],
                    "status": result.status,
                    "protocol": protocol,
                    "model": point.get("model", (result.hyperparameters or {}).get("model", "larnn")),
                    "loss": _number(result.loss),  # what the search minimised: its selection rule's objective
                    **{metric: _number(getattr(result.chosen, metric)) for metric in SELECTED},
                    TRAIN_ACCURACY: np.nan if protocol == TEST_PICKED else _number(result.chosen.train_accuracy),
                    TRAIN_BATCH_2018: _number(result.extra.get("best_train_accuracy")),
                    "best_epoch": result.best_epoch if result.best_epoch is not None else np.nan,
                    "epochs": len(result.epochs) or np.nan,
                    "wall_time_s": _number(
                        result.wall_time_s if result.wall_time_s is not None else result.extra.get("trial_wall_time_s")
                    ),
                    "book_time": trial.book_time,
                    "finish_time": trial.refresh_time,
                    "worker": result.extra.get("worker"),
                    "error": result.error,
                    "history": result.epochs,
                    "curve": trial.curve,  # the result's epochs; those reported while it ran
                    "attempts": len(trial.attempt_log) or trial.attempts,
                    **{f"hp.{k}": v for k, v in point.items() if k != "model"},  # model has its own column
                }
            )
    frame = pd.DataFrame(rows, columns=INFO + [f"hp.{k}" for k in hyperparameters if k != "model"])
    frame.columns = [c[3:] if c.startswith("hp.") else c for c in frame.columns]
    for column in ("book_time", "finish_time"):  # the store keeps seconds since the epoch
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    return frame, hyperparameters


def _number(value: float | None) -> float:
    return np.nan if value is None else value


def finished(frame: pd.DataFrame) -> pd.DataFrame:
    """Trials with a validation accuracy, best first as `larnn best` ranks them (by loss: the
    selection rule's objective, under the default rule minus the validation accuracy)."""
    done = frame[(frame["state"] == "done") & frame[VALIDATION_ACCURACY].notna()]
    return done.sort_values(["loss", "tid"])


def export_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame without the nested per-epoch curves: for CSV."""
    return frame.drop(columns=["history", "curve"])

"""Trials of one or several experiments as one pandas DataFrame, read through the store interface.

One row per trial: experiment, tid, state, metrics, times, and one flat column per hyperparameter
the space sampled (conditional spaces: NaN where a branch did not define it). Per-epoch curves
stay available in the `history` column.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from workers.store import STATE_NAMES, BaseStore

METRICS = ["validation_accuracy", "test_accuracy", "validation_f1", "test_f1", "train_accuracy", "best_epoch", "epochs",
           "wall_time_s"]
INFO = ["experiment", "tid", "state", "status", "protocol", "model", *METRICS, "book_time", "finish_time", "worker", "attempts",
        "error", "history", "curve"]


def trials_frame(store: BaseStore, names: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """(frame, hyperparameter column names). Unknown experiment names raise."""
    rows, hyperparameters = [], []
    for name in names:
        store.get_experiment(name)
        imported = store.get_experiment(name)["algorithm"] == "imported"
        for trial in store.trials(name):
            result = trial.get("result") or {}
            point = result.get("space") or {}
            hyperparameters += [k for k in point if k not in hyperparameters]
            history = result.get("history") or {}
            rows.append({
                "experiment": name, "tid": trial["tid"], "state": STATE_NAMES[trial["state"]],
                "status": result.get("status"),
                # results stored before they recorded it: imports are the 2018 protocol's, trainings honest
                "protocol": result.get("protocol") or ("test-picked" if imported else "honest"),
                "model": point.get("model", (result.get("hyperparameters") or {}).get("model", "larnn")),
                "validation_accuracy": result.get("best_validation_accuracy", np.nan),
                "test_accuracy": result.get("test_accuracy", np.nan),
                "validation_f1": result.get("best_validation_f1_score", np.nan),  # weighted F1 at the selected epoch
                "test_f1": result.get("test_f1_score", np.nan),
                "train_accuracy": train_accuracy(result),
                "best_epoch": result.get("best_epoch", np.nan),
                "epochs": len(history.get("validation_accuracies", [])) or np.nan,
                "wall_time_s": result.get("wall_time_s", result.get("trial_wall_time_s", np.nan)),
                "book_time": trial.get("book_time"), "finish_time": trial.get("refresh_time"),
                "worker": result.get("worker"), "error": result.get("error"), "history": history,
                "curve": trial.get("curve") or [],  # epochs reported while it ran (running trials too)
                "attempts": len(trial.get("attempt_log") or []) or trial.get("attempts", 0),
                **{f"hp.{k}": v for k, v in point.items() if k != "model"},  # model has its own column
            })
    frame = pd.DataFrame(rows, columns=INFO + [f"hp.{k}" for k in hyperparameters if k != "model"])
    frame.columns = [c[3:] if c.startswith("hp.") else c for c in frame.columns]
    for column in ("book_time", "finish_time"):  # the store keeps seconds since the epoch
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    return frame, hyperparameters


def train_accuracy(result: dict) -> float:
    """Training accuracy at the selected epoch (2018 files keep their best over epochs instead)."""
    if result.get("best_train_accuracy") is not None:
        return result["best_train_accuracy"]
    curve, epoch = (result.get("history") or {}).get("train_accuracies") or [], result.get("best_epoch")
    return curve[epoch - 1] if isinstance(epoch, int) and 0 < epoch <= len(curve) else np.nan


def finished(frame: pd.DataFrame) -> pd.DataFrame:
    """Trials with a validation accuracy, best first."""
    done = frame[(frame["state"] == "done") & frame["validation_accuracy"].notna()]
    return done.sort_values(["validation_accuracy", "tid"], ascending=[False, True])


def export_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame without the nested per-epoch curves: for CSV."""
    return frame.drop(columns=["history", "curve"])

"""Synthetic finished searches in a real store, for the analysis tests and notebook runs."""

import numpy as np

from larnn_core.records import TrainResult
from search_spaces import load_space
from workers.experiment import make_experiment
from workers.records import DONE, ERROR, Trial


def planted_accuracy(point: dict, rng) -> float:
    """learning_rate alone drives accuracy (best at 0.006); everything else is noise."""
    return float(0.93 - 0.6 * abs(np.log(point["learning_rate"] / 0.006)) ** 2 + rng.normal(0, 0.002))


def add_synthetic_experiment(
    store, name: str, space: str = "larnn-vs-lstm", n: int = 60, seed: int = 0, accuracy=None
) -> None:
    """n finished trials (and one failed) at random points, their accuracy planted_accuracy's
    (or `accuracy(point, rng)`'s)."""
    rng, planted = np.random.default_rng(seed), accuracy or planted_accuracy
    space_obj = load_space(space)
    store.create_experiment(make_experiment(name, space_obj, max_evals=n + 1, seed=seed))
    for tid in range(n):
        point = space_obj.sample(rng)
        accuracy = planted(point, rng)
        epochs = 12
        curve = list(
            np.minimum(accuracy, accuracy - 0.3 * np.exp(-np.arange(1, epochs + 1) / 3) + rng.normal(0, 0.003, epochs))
        )
        best_epoch = int(np.argmax(curve)) + 1
        result = {
            "status": "ok",
            "loss": -max(curve),
            "best_validation_accuracy": max(curve),
            "best_epoch": best_epoch,
            "test_accuracy": max(curve) - 0.01 + rng.normal(0, 0.005),
            "wall_time_s": float(rng.uniform(50, 90)),
            "history": {"validation_accuracies": curve},
            "space": point,
            "worker": "synthetic",
        }
        trial = Trial.new(name, tid, {}, {}, owner="synthetic")
        store.insert_trial(trial)
        store.finish(name, tid, "synthetic", DONE, TrainResult.from_document(result))
    store.insert_trial(Trial.new(name, n, {}, {}, owner="synthetic"))
    store.finish(name, n, "synthetic", ERROR, TrainResult("fail", error="CUDA out of memory"))


def result_2018(lr: float, accuracy: float) -> dict:
    return {
        "space": {"learning_rate": lr, "hidden_size": 81, "attention_heads": 27, "larnn_mode": "residual"},
        "loss": -accuracy,
        "status": "ok",
        "best_validation_accuracy": accuracy,
        "best_validation_f1_score": accuracy - 0.01,
        "best_train_accuracy": 0.8,
        "history": {
            "train_accuracies": [0.5, 0.8],
            "train_losses": [1.0, 0.5],
            "validation_accuracies": [0.6, accuracy],
            "validation_losses": [0.9, 0.4],
        },
        "model_name": "LARNN",
        "dataset_name": "UCIHAR",
    }

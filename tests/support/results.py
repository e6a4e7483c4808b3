"""Training results for fake objectives: what larnn_core.train returns, without training."""

from __future__ import annotations

from larnn_core.records import OK, EpochReport, TrainResult


def result_with(
    validation_accuracies: list[float], test_accuracy: float | None = None, stopped_at_epoch: int | None = None
) -> TrainResult:
    """An ok result with these per-epoch validation accuracies, the best epoch selected (its test
    accuracy test_accuracy, else the same as its validation accuracy)."""
    best = max(range(len(validation_accuracies)), key=validation_accuracies.__getitem__) + 1
    epochs = tuple(
        EpochReport(
            epoch,
            validation_accuracy=accuracy,
            test_accuracy=accuracy if test_accuracy is None or epoch != best else test_accuracy,
        )
        for epoch, accuracy in enumerate(validation_accuracies, 1)
    )
    return TrainResult(OK, epochs, best_epoch=best, stopped_at_epoch=stopped_at_epoch)

"""What a training emits: an EpochReport after every epoch, a TrainResult at the end.

These records are the names the whole service uses for a training's numbers: a worker stores each
EpochReport as one entry of its trial's curve, pruners and `larnn status` read the curve back, and
the stored result is a TrainResult's document. Changing what an epoch reports is a change to
EpochReport and to the code that fills it (larnn_core/train.py).

Stored documents keep the format of earlier releases, so stores and the 2018 result files read
unchanged: a result's `history` holds one list per metric (HISTORY names them), and the selected
epoch's numbers sit at the top level under their 2018 names (`best_validation_accuracy`, ...).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from larnn_core.selection import LEGACY_RULE, select

OK, FAIL = "ok", "fail"  # a result's status (hyperopt's words)
# a result's protocol, how its selected epoch was chosen: on validation subjects (this project's
# trainings), or on the test set (the 2018 code, whose imported results say so)
HONEST, TEST_PICKED = "honest", "test-picked"


@dataclass(frozen=True)
class EpochReport:
    """One epoch's numbers; a metric not measured is None (older stored curves lack some)."""

    epoch: int
    train_loss: float | None = None
    train_accuracy: float | None = None
    validation_loss: float | None = None
    validation_accuracy: float | None = None
    validation_f1: float | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None
    test_f1: float | None = None
    seconds: float | None = None

    def to_document(self) -> dict[str, Any]:
        """Its curve entry: the metrics measured."""
        return {name: value for name, value in dataclasses.asdict(self).items() if value is not None}

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> EpochReport:
        return cls(**{name: document.get(name) for name in FIELDS})

    @property
    def evaluation_finite(self) -> bool:
        """Whether the validation loss stayed finite (an epoch whose evaluation diverged is never
        selected; selection never looks at the test split)."""
        return self.validation_loss is not None and math.isfinite(self.validation_loss)


FIELDS = tuple(f.name for f in dataclasses.fields(EpochReport))
# metrics named where they are keys or columns (`larnn best`, the analysis frame): EpochReport's field names
TRAIN_ACCURACY, VALIDATION_ACCURACY, TEST_ACCURACY = "train_accuracy", "validation_accuracy", "test_accuracy"
# a result document's `history`: one list per metric, under the names the 2018 result files use
HISTORY = {
    "train_loss": "train_losses",
    TRAIN_ACCURACY: "train_accuracies",
    "validation_loss": "validation_losses",
    VALIDATION_ACCURACY: "validation_accuracies",
    "validation_f1": "validation_f1_scores",
    "test_loss": "test_losses",
    TEST_ACCURACY: "test_accuracies",
    "test_f1": "test_f1_scores",
    "seconds": "epoch_seconds",
}
# the selected epoch's numbers at a result document's top level, under their 2018 names
SELECTED = {
    VALIDATION_ACCURACY: "best_validation_accuracy",
    "validation_f1": "best_validation_f1_score",
    TEST_ACCURACY: TEST_ACCURACY,
    "test_f1": "test_f1_score",
    "test_loss": "test_loss",
}
assert set(HISTORY) == set(FIELDS[1:]) and set(SELECTED) <= set(FIELDS)  # each names EpochReport's fields


@dataclass(frozen=True)
class TrainResult:
    """A training's outcome: its epochs, the one chosen on validation, and where it came from.

    `loss` is minus the objective of its selection rule (larnn_core/selection.py; what hyperopt
    minimises): by default minus the selected epoch's validation accuracy. Provenance
    (model, protocol, device, execution, data, code version) is filled by larnn_core.train; a
    test's objective may leave it out."""

    status: str
    epochs: tuple[EpochReport, ...] = ()
    best_epoch: int | None = None
    error: str | None = None
    model: str | None = None
    protocol: str | None = None
    selection: str | None = None  # the selection rule (None: a result of a release before rules, LEGACY_RULE)
    hyperparameters: dict[str, Any] | None = None
    seed: int | None = None
    device: str | None = None
    execution: dict[str, bool] | None = None
    data_source: str | None = None
    data_origin: str | None = None
    data_checksum: str | None = None
    validation_subjects: list[int] | None = None
    normalisation: dict[str, list[float]] | None = None  # the inputs' per-channel mean and std (training part)
    code_version: str | None = None
    stopped_at_epoch: int | None = None
    resumed_from_epoch: int | None = None  # the checkpoint's epoch, when the training went on from one
    test_curves: bool | None = None  # True: the test split was evaluated at every epoch (test-picked curves)
    nonfinite_evaluation_epochs: int | None = None
    first_nonfinite_evaluation_epoch: int | None = None
    evaluation_diverged: bool | None = None
    wall_time_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # fields of other producers (2018 files, workers), kept

    @property
    def selected(self) -> EpochReport | None:
        return self.epochs[self.best_epoch - 1] if self.best_epoch and self.best_epoch <= len(self.epochs) else None

    @property
    def chosen(self) -> EpochReport:
        """The selected epoch's numbers as its result reports them: the epoch's report, where a
        stored document's own top-level number wins if it differs (from_document keeps it in
        `extra`) or stands in for an epoch its history lacks (a test's document, another
        producer's). Every metric None before a selection."""
        selected = self.selected or EpochReport(self.best_epoch or 0)
        stored = {metric: self.extra[name] for metric, name in SELECTED.items() if self.extra.get(name) is not None}
        return dataclasses.replace(selected, **stored) if stored else selected

    @property
    def loss(self) -> float | None:
        """What hyperopt minimises: minus the selection rule's objective, under the default rule
        minus the selected epoch's validation accuracy (a stored loss that differs wins, as in
        `chosen`)."""
        if self.extra.get("loss") is not None:
            return self.extra["loss"]
        if self.selection not in (None, LEGACY_RULE):
            chosen = select(self.selection, self.epochs)
            return None if chosen is None else -chosen.objective
        accuracy = self.chosen.validation_accuracy
        return None if accuracy is None else -accuracy

    def to_document(self) -> dict[str, Any]:
        """The stored result: hyperopt's status and loss, the selected epoch's numbers, the history
        (one list per metric measured at every epoch, when an epoch was trained: the test split,
        read at the selected epoch only, has none unless test curves were asked for)."""
        document = {"status": self.status}
        if self.loss is not None:
            document["loss"] = self.loss
        selected = self.selected
        if selected is not None:
            document.update(
                {
                    name: getattr(selected, metric)
                    for metric, name in SELECTED.items()
                    if getattr(selected, metric) is not None
                }
            )
        for name in _PROVENANCE:
            if getattr(self, name) is not None:
                document[name] = getattr(self, name)
        if self.epochs:
            document["history"] = {
                HISTORY[metric]: [getattr(e, metric) for e in self.epochs]
                for metric in HISTORY
                if all(getattr(e, metric) is not None for e in self.epochs)
            }
        return {**document, **self.extra}

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> TrainResult:
        """A stored result of any release, a 2018 result file's included (the selected epoch's
        numbers there are kept in `extra` when no epoch of the history holds them)."""
        history = _per_epoch(document.get("history") or {})
        length = max((len(values) for values in history.values() if isinstance(values, list)), default=0)
        epochs = [
            EpochReport(epoch, **{metric: _at(history.get(name), epoch) for metric, name in HISTORY.items()})
            for epoch in range(1, length + 1)
        ]
        best_epoch = document.get("best_epoch")
        if isinstance(best_epoch, int) and 1 <= best_epoch <= length:  # numbers measured at that epoch only
            once = {m: document[n] for m, n in SELECTED.items() if HISTORY[m] not in history and n in document}
            epochs[best_epoch - 1] = dataclasses.replace(epochs[best_epoch - 1], **once)
        epochs = tuple(epochs)
        values = {name: document[name] for name in ("status", *_PROVENANCE) if name in document}
        values.setdefault("status", FAIL)
        # what the epochs imply (the selected epoch's numbers, the loss): without epochs, nothing
        derived = cls(epochs=epochs, **values).to_document() if epochs else {}
        extra = {
            key: value
            for key, value in document.items()
            if key not in _KNOWN and key != "history" and derived.get(key, _MISSING) != value
        }
        return cls(epochs=epochs, extra=extra, **values)


_MISSING = object()
# the fields of TrainResult that its document keeps under their own names, besides status
_PROVENANCE = tuple(f.name for f in dataclasses.fields(TrainResult) if f.name not in ("status", "epochs", "extra"))
_KNOWN = frozenset(("status", *_PROVENANCE))


# the 2018 code recorded its training curves once per batch (a whole number of times per epoch)
PER_STEP_2018 = (HISTORY[TRAIN_ACCURACY], HISTORY["train_loss"], "train_f1_scores")


def _per_epoch(history: dict[str, Any]) -> dict[str, Any]:
    """The history with one value per epoch: curves recorded per batch (2018 files: 28 batches an
    epoch) averaged over each epoch's batches, so that epoch k is epoch k in every curve."""
    epochs = {len(v) for name, v in history.items() if name not in PER_STEP_2018 and isinstance(v, list)}
    if len(epochs) != 1 or not (n := epochs.pop()):
        return history
    steps = {name: v for name, v in history.items() if name in PER_STEP_2018 and isinstance(v, list)}
    if not all(len(v) > n and len(v) % n == 0 and all(map(_is_number, v)) for v in steps.values()):
        return history
    averaged = {
        name: [statistics.fmean(v[i : i + len(v) // n]) for i in range(0, len(v), len(v) // n)]
        for name, v in steps.items()
    }
    return {**history, **averaged}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _at(values: list | None, epoch: int) -> float | None:
    return values[epoch - 1] if isinstance(values, list) and epoch <= len(values) else None

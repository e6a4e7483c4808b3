"""The training protocol: Adam + L2, the 2018 step decay (or a cosine schedule), epoch chosen on
validation subjects by a selection rule (larnn_core/selection.py),
test split read once, with the selected epoch's weights (2018 defect 5, docs/design.md: it took the
best test epoch; reading the test split at every epoch also cost each epoch an evaluation).

`train` reports each epoch as an EpochReport and returns a TrainResult (larnn_core/records.py),
whose document is a hyperopt-valid result: `loss` is minus the selected epoch's validation
accuracy and `status` is "ok" or "fail"; a NaN training loss or a CUDA out-of-memory is a "fail"
with a reason.

An epoch whose validation loss is not finite (the model diverged in evaluation) is never
selected. The result counts such epochs (`nonfinite_evaluation_epochs`, the first in
`first_nonfinite_evaluation_epoch`) and flags them (`evaluation_diverged`), but stays "ok" when
another epoch is eligible: that epoch's numbers are real measurements chosen on validation alone,
and failing the trial would throw them away (and leave TPE nothing to learn from). With no
eligible epoch the trial fails.

A training can stop at any epoch boundary and go on later from a Checkpoint (larnn_core/checkpoint.py):
`on_checkpoint` receives one after every epoch, `resume_from` offers one at the start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from larnn_core.averaging import WeightAverage
from larnn_core.checkpoint import Checkpoint, CheckpointRefused, optimizer_tensors, restore_model, restore_optimizer
from larnn_core.classifier import build_model
from larnn_core.data import HARData, make_splits
from larnn_core.execution import Execution, resolve
from larnn_core.execution.cuda_graphs import Graphed, TrainStep, make_optimizer, set_learning_rate
from larnn_core.execution.torch_compile import compiled_training
from larnn_core.hparams import HParams
from larnn_core.provenance import code_version, describe_device, resolve_device
from larnn_core.records import FAIL, HONEST, OK, EpochReport, TrainResult
from larnn_core.selection import DEFAULT_RULE, VALIDATION_SUBJECTS, check_rule, select
from larnn_core.statistics import REFRESH_SAMPLES, refresh

PROTOCOL = HONEST  # results say how their numbers were chosen; 2018's imports are TEST_PICKED
LR_DECAY = 0.75  # learning rate multiplied by this every decay_each_N_epoch epochs (2018)


def learning_rate(hp: HParams, epoch: int) -> float:
    """The learning rate of epoch (from 1): the 2018 step decay, or a cosine from
    hp.learning_rate at the first epoch toward 0 after the last."""
    if hp.lr_schedule == "cosine":
        return hp.learning_rate * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / hp.training_epochs))
    return hp.learning_rate * LR_DECAY ** ((epoch - 1) // hp.decay_each_N_epoch)


EVAL_BATCH = 1024


class TrainingFailed(RuntimeError):
    pass


GLOBAL_RNG = threading.Lock()  # torch's global generator, shared by every training thread of the process


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """[true class, predicted class] counts."""
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes**2).reshape(n_classes, n_classes)


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """F1 per class, averaged with the class frequencies as weights."""
    confusion = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(confusion).astype(float)
    precision = np.divide(tp, confusion.sum(0), out=np.zeros(n_classes), where=confusion.sum(0) > 0)
    recall = np.divide(tp, confusion.sum(1), out=np.zeros(n_classes), where=confusion.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n_classes), where=precision + recall > 0)
    support = confusion.sum(1)
    return float((f1 * support).sum() / support.sum())


@torch.no_grad()
def predict(
    model: torch.nn.Module, X: torch.Tensor, forward: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> torch.Tensor:
    """Logits of the model in eval mode, EVAL_BATCH sequences at a time; forward (default: the
    model) may be a Graphed model."""
    model.eval()
    forward = forward or model
    # clone: a graphed forward's output is overwritten by its next replay
    return torch.cat([forward(X[i : i + EVAL_BATCH]).clone() for i in range(0, len(X), EVAL_BATCH)])


def metrics(logits: torch.Tensor, y: torch.Tensor, n_classes: int) -> dict[str, float]:
    predictions = logits.argmax(1)
    return {
        "loss": F.cross_entropy(logits, y).item(),
        "accuracy": (predictions == y).float().mean().item(),
        "f1": weighted_f1(y.cpu().numpy(), predictions.cpu().numpy(), n_classes),
    }


def evaluate(
    model: torch.nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Loss, accuracy and weighted F1 of the model in eval mode (forward: as predict's)."""
    return metrics(predict(model, X, forward), y, n_classes)


def train(
    hp: HParams,
    data: HARData,
    *,
    device: str = "auto",
    seed: int = 0,
    validation_subjects: int = VALIDATION_SUBJECTS,
    selection: str = DEFAULT_RULE,
    progress: bool = True,
    on_epoch: Callable[[EpochReport], bool | None] | None = None,
    on_checkpoint: Callable[[Checkpoint], None] | None = None,
    resume_from: Callable[[dict[str, Any]], Checkpoint | None] | None = None,
    test_curves: bool = False,
    cpu_loops: bool | None = None,
    torch_compile: bool | None = None,
    cuda_graphs: bool | None = None,
) -> TrainResult:
    """Train one model and return its result; on_epoch(report) runs after each epoch, and
    returning True stops the training there (a pruner's decision: the result then holds the
    epochs trained, and `stopped_at_epoch`).
    on_checkpoint(checkpoint) runs at each epoch boundary, before on_epoch (the checkpoint holds
    the live training's tensors: encode it during the call). resume_from(identity) is asked once,
    before the first epoch, for a checkpoint of this training to go on from (identity: the values
    of checkpoint.IDENTITY); None trains from scratch, and one that does not fit the model raises
    CheckpointRefused before any epoch is trained.
    selection: the rule that picks the epoch whose weights are tested, and the objective the result's
    loss reports.
    test_curves: evaluate the test split at every epoch too (test-picked curves, for studies of
    the protocol; the result records it); otherwise the test split is read once, at the end.
    cpu_loops, torch_compile, cuda_graphs: the execution (larnn_core/execution/choice.py; None:
    the device's default unless the environment turns it off), resolved here once and recorded
    as the result's `execution`."""
    started = time.time()
    check_rule(selection)
    dev = resolve_device(device)
    execution = resolve(dev.type, cpu_loops=cpu_loops, torch_compile=torch_compile, cuda_graphs=cuda_graphs)
    if hp.model == "lstm":  # torch.nn.LSTM: no LARNN steps to run on loops or to compile
        execution = dataclasses.replace(execution, cpu_loops=False, torch_compile=False)
    splits = make_splits(data, validation_subjects, seed)
    identity = dict(
        hyperparameters=hp.to_dict(),
        seed=seed,
        validation_subjects=splits.validation_subjects,
        data_checksum=data.checksum,
        selection=selection,
    )
    provenance = dict(
        model=hp.model,
        protocol=PROTOCOL,
        device=describe_device(dev),
        execution=execution.as_record(),
        data_source=data.source,
        data_origin=data.origin,
        normalisation={"mean": splits.mean.tolist(), "std": splits.std.tolist()},
        code_version=code_version(),
        **identity,
    )
    outcome: dict = {"status": FAIL, "test_curves": test_curves or None}
    epochs: list[EpochReport] = []
    try:
        with compiled_training() if execution.torch_compile else contextlib.nullcontext():
            run = Run(hp, splits, dev, execution, identity, progress, test_curves)
            resume = resume_from(identity) if resume_from is not None else None
            if resume is not None:
                run.restore(resume)
                outcome["resumed_from_epoch"] = resume.epoch
            epochs = run.epochs
            outcome["stopped_at_epoch"] = run.fit(on_epoch, on_checkpoint)
            if not epochs:
                raise TrainingFailed("no epoch was trained")
            diverged = [e.epoch for e in epochs if not e.evaluation_finite]
            outcome.update(
                nonfinite_evaluation_epochs=len(diverged),
                evaluation_diverged=bool(diverged),
                first_nonfinite_evaluation_epoch=diverged[0] if diverged else None,
            )
            if run.best_epoch is None:
                raise TrainingFailed(
                    f"evaluation diverged at every epoch (non-finite validation loss from epoch {diverged[0]})"
                )
            run.test_selected()
            outcome.update(status=OK, best_epoch=run.best_epoch)
    except TrainingFailed as error:
        outcome["error"] = str(error)
    except torch.cuda.OutOfMemoryError as error:
        outcome["error"] = f"CUDA out of memory: {error}"
    outcome = {key: value for key, value in outcome.items() if value is not None}
    return TrainResult(epochs=tuple(epochs), wall_time_s=time.time() - started, **provenance, **outcome)


def dropout_generator(dev: torch.device, execution: Execution, seed: int) -> torch.Generator | None:
    """The training's own generator for dropout masks, so that trainings running side by side in
    one process (worker slots) each reproduce their seed. None under CUDA graphs: a captured graph
    replays the device's default generator, and one of our own would have to be registered with
    every capture (not done: dropout there draws from the default generator)."""
    if execution.cuda_graphs:
        return None
    return torch.Generator(device=dev).manual_seed(seed + 1)  # not the shuffle's stream (seed)


class Run:
    """One training: its model, optimizer and random generators, the epochs trained so far and the
    best epoch's weights (its state dict after that epoch, batch-norm statistics included: the
    model the test split is read with). Under weight averaging, the model evaluated, selected and
    tested holds the averaged weights (averaging.py)."""

    def __init__(
        self,
        hp: HParams,
        splits,
        dev: torch.device,
        execution: Execution,
        identity: dict,
        progress: bool,
        test_curves: bool,
    ):
        self.hp, self.dev, self.identity, self.progress, self.test_curves = hp, dev, identity, progress, test_curves
        seed = identity["seed"]
        self.n_classes = int(max(splits.train[1].max(), splits.test[1].max())) + 1
        _, steps, n_inputs = splits.train[0].shape
        self.dropout = dropout_generator(dev, execution, seed)
        with GLOBAL_RNG:  # initialisation draws from the global generator: one training at a time
            seed_everything(seed)
            self.model = build_model(
                hp,
                n_inputs=n_inputs,
                n_classes=self.n_classes,
                steps=steps,
                execution=execution,
                generator=self.dropout,
            ).to(dev)
        self.optimizer = make_optimizer(self.model, hp.learning_rate, hp.l2_weight_reg, capturable=dev.type == "cuda")
        self.average = WeightAverage(self.model, hp.weight_averaging) if hp.weight_averaging > 0 else None
        self.step = TrainStep(self.model, self.optimizer, hp.clip_grad_norm, execution.cuda_graphs)
        self.forward = Graphed(self.model) if execution.cuda_graphs else self.model
        self.tensors = {
            name: (torch.from_numpy(X).to(dev), torch.from_numpy(y).to(dev))
            for name, (X, y) in (("train", splits.train), ("validation", splits.validation), ("test", splits.test))
        }
        self.shuffle = torch.Generator().manual_seed(seed)
        self.epochs: list[EpochReport] = []
        self.best_epoch: int | None = None
        self.best: dict[str, torch.Tensor] | None = None

    def generators(self) -> dict[str, torch.Tensor]:
        """The state of every random stream the epochs draw from (under CUDA graphs, dropout draws
        from the device's default generator)."""
        states = {"shuffle": self.shuffle.get_state()}
        if self.dropout is not None:
            states["dropout"] = self.dropout.get_state()
        elif self.dev.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.dev)
        return states

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(
            len(self.epochs),
            self.identity,
            tuple(self.epochs),
            self.model.state_dict(),
            optimizer_tensors(self.optimizer),
            self.generators(),
            self.best_epoch,
            self.best,
            self.average.state() if self.average is not None else None,
        )

    def restore(self, checkpoint: Checkpoint) -> None:
        """Goes on from checkpoint (CheckpointRefused if it does not fit this training)."""
        restore_model(self.model, checkpoint.model)
        restore_optimizer(self.optimizer, checkpoint.optimizer)
        if set(checkpoint.generators) != set(self.generators()):
            raise CheckpointRefused(f"its random streams ({', '.join(checkpoint.generators)}) are not this training's")
        self.shuffle.set_state(checkpoint.generators["shuffle"])
        if self.dropout is not None:
            self.dropout.set_state(checkpoint.generators["dropout"])
        elif self.dev.type == "cuda":
            torch.cuda.set_rng_state(checkpoint.generators["cuda"], self.dev)
        if self.average is not None:
            if checkpoint.averaged is None:
                raise CheckpointRefused("it holds no averaged weights")
            try:
                self.average.restore(checkpoint.averaged)
            except (ValueError, RuntimeError) as error:
                raise CheckpointRefused(f"its averaged weights do not fit this model ({str(error)[:120]})") from None
        self.epochs[:] = checkpoint.epochs
        self.best_epoch, self.best = checkpoint.best_epoch, checkpoint.best

    def fit(self, on_epoch, on_checkpoint) -> int | None:
        """Trains the epochs left; returns the epoch at which on_epoch asked to stop, if it did."""
        for epoch in range(len(self.epochs) + 1, self.hp.training_epochs + 1):
            report = self.train_epoch(epoch)
            self.epochs.append(report)
            chosen = select(self.identity["selection"], self.epochs)
            if chosen is not None and chosen.epoch == epoch:  # a rule keeps its choice or takes the newest
                self.best_epoch = epoch
                with self.evaluated():
                    self.best = {name: t.detach().clone() for name, t in self.model.state_dict().items()}
            if on_checkpoint is not None:
                on_checkpoint(self.checkpoint())
            if on_epoch is not None and on_epoch(report) and epoch < self.hp.training_epochs:
                return epoch
        return None

    def evaluated(self) -> contextlib.AbstractContextManager:
        """The weights evaluation reads: the model's own, or their average."""
        return self.average.swapped_in() if self.average is not None else contextlib.nullcontext()

    def evaluate(self, split: str) -> dict[str, float]:
        return evaluate(self.model, *self.tensors[split], self.n_classes, self.forward)

    def test_selected(self) -> None:
        """Reads the test split once, with the selected epoch's weights, into that epoch's report
        (with test curves the same weights gave the same numbers at that epoch)."""
        restore_model(self.model, self.best)
        measured = {f"test_{metric}": value for metric, value in self.evaluate("test").items()}
        self.epochs[self.best_epoch - 1] = dataclasses.replace(self.epochs[self.best_epoch - 1], **measured)

    def train_epoch(self, epoch: int) -> EpochReport:
        hp, model, optimizer = self.hp, self.model, self.optimizer
        epoch_start = time.time()
        set_learning_rate(optimizer, learning_rate(hp, epoch))
        model.train()
        X_train, y_train = self.tensors["train"]
        order = torch.randperm(len(X_train), generator=self.shuffle).to(self.dev)
        batches = order.split(hp.batch_size)
        if len(batches) > 1 and len(batches[-1]) == 1:  # batch norm cannot normalise one sequence alone
            batches = (*batches[:-2], torch.cat(batches[-2:]))
        with tqdm(
            total=len(batches), desc=f"epoch {epoch}/{hp.training_epochs}", unit="batch", disable=not self.progress
        ) as bar:
            total_loss, correct = 0.0, 0
            for step, index in enumerate(batches, (epoch - 1) * len(batches)):
                loss, logits = self.step(X_train[index], y_train[index])
                if self.average is not None:
                    self.average.update(step)
                if not math.isfinite(loss.item()):
                    raise TrainingFailed(f"loss became {loss.item()} at epoch {epoch}")
                total_loss += loss.item() * len(index)
                correct += (logits.argmax(1) == y_train[index]).sum().item()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}")
            with self.evaluated():
                # evaluation normalises with statistics of the weights it reads (statistics.py)
                refresh(model, X_train[order[:REFRESH_SAMPLES]])
                measured = {
                    f"{name}_{metric}": value
                    for name in ("validation", "test")
                    if name == "validation" or self.test_curves
                    for metric, value in self.evaluate(name).items()
                }
            report = EpochReport(
                epoch,
                train_loss=total_loss / len(X_train),
                train_accuracy=correct / len(X_train),
                seconds=time.time() - epoch_start,
                **measured,
            )
            bar.set_postfix(loss=f"{report.train_loss:.4f}", val_acc=f"{report.validation_accuracy:.4f}")
        return report

"""Selection rules (larnn_core/selection.py), and trainings under each rule, schedule and weight
averaging: the epoch a rule names is the one tested, and the loss is minus its objective."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from larnn_core import train as training
from larnn_core.averaging import WeightAverage
from larnn_core.hparams import HParams
from larnn_core.records import EpochReport, TrainResult
from larnn_core.selection import LAST_MEAN_EPOCHS, RULES, select
from tests.support.data import TINY


def epochs(accuracies, losses):
    return [
        EpochReport(i, validation_accuracy=accuracy, validation_loss=loss)
        for i, (accuracy, loss) in enumerate(zip(accuracies, losses), 1)
    ]


CURVE = epochs([0.5, 0.8, 0.8, 0.6, 0.7, 0.75, 0.7], [1.0, 0.6, 0.5, 0.55, 0.52, 0.4, float("nan")])


@pytest.mark.parametrize(
    "rule, epoch, objective",
    [
        ("max-accuracy", 2, 0.8),  # the first of equal maxima
        ("min-loss", 6, -0.4),
        ("last", 6, 0.75),  # epoch 7's evaluation diverged: never selected
        ("last-mean", 6, np.mean([0.5, 0.8, 0.8, 0.6, 0.7, 0.75][-LAST_MEAN_EPOCHS:])),
    ],
)
def test_each_rule_names_its_epoch_and_objective(rule, epoch, objective):
    chosen = select(rule, CURVE)
    assert chosen.epoch == epoch and chosen.objective == pytest.approx(objective)


def test_a_rule_keeps_its_choice_or_takes_the_newest_epoch():
    """What lets a training keep one copy of the selected weights."""
    for rule in RULES:
        before = None
        for k in range(1, len(CURVE) + 1):
            chosen = select(rule, CURVE[:k])
            assert chosen.epoch in ((before.epoch,) if before else ()) + (k,) or not CURVE[k - 1].evaluation_finite
            before = chosen


def test_no_finite_epoch_selects_nothing_and_an_unknown_rule_is_refused():
    assert select("last", epochs([0.5], [float("inf")])) is None
    with pytest.raises(ValueError, match="selection rule must be one of max-accuracy, min-loss, last, last-mean"):
        select("best", CURVE)


def test_a_results_loss_is_minus_its_rules_objective_and_older_results_keep_theirs():
    for rule in RULES:
        result = TrainResult("ok", epochs=tuple(CURVE), best_epoch=select(rule, CURVE).epoch, selection=rule)
        assert result.loss == pytest.approx(-select(rule, CURVE).objective)
        assert TrainResult.from_document(result.to_document()).loss == pytest.approx(result.loss)
    older = TrainResult("ok", epochs=tuple(CURVE), best_epoch=2)  # no rule recorded: the maximum's
    assert older.loss == -0.8


@pytest.mark.parametrize("rule", RULES)
def test_a_training_tests_the_epoch_its_rule_selects(small_har, rule):
    hp = HParams.from_dict({**TINY, "training_epochs": 4})
    result = training.train(hp, small_har, device="cpu", seed=2, progress=False, selection=rule, test_curves=True)
    once = training.train(hp, small_har, device="cpu", seed=2, progress=False, selection=rule)
    chosen = select(rule, result.epochs)
    assert result.selection == rule and result.to_document()["selection"] == rule
    assert result.best_epoch == once.best_epoch == chosen.epoch
    assert result.loss == pytest.approx(-chosen.objective)
    assert once.selected.test_accuracy == result.epochs[chosen.epoch - 1].test_accuracy  # the same weights


def test_the_cosine_schedule_falls_from_the_learning_rate_toward_zero():
    hp = HParams.from_dict({**TINY, "training_epochs": 4, "lr_schedule": "cosine", "learning_rate": 0.01})
    rates = [training.learning_rate(hp, epoch) for epoch in range(1, 5)]
    assert rates == pytest.approx(
        [0.01, 0.01 * (1 + math.cos(math.pi / 4)) / 2, 0.005, 0.01 * (1 + math.cos(3 * math.pi / 4)) / 2]
    )
    step = HParams.from_dict({**TINY, "training_epochs": 4, "decay_each_N_epoch": 2, "learning_rate": 0.01})
    assert [training.learning_rate(step, epoch) for epoch in range(1, 5)] == pytest.approx([0.01, 0.01, 0.0075, 0.0075])


def test_the_weight_average_follows_the_weights_with_its_warm_up_and_swaps_back_exactly():
    model = torch.nn.Linear(3, 2)
    average = WeightAverage(model, 0.9)
    start = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    average.update(0)  # decay min(0.9, 1/10): the average moves 90 % of the way
    assert all(torch.allclose(a, s + 0.9) for a, s in zip(average.averaged, start))
    raw = [p.detach().clone() for p in model.parameters()]
    with average.swapped_in():
        assert all(torch.equal(p, a) for p, a in zip(model.parameters(), average.averaged))
    assert all(torch.equal(p, r) for p, r in zip(model.parameters(), raw))
    average.update(1000)  # past the warm-up: decay 0.9, 10 % of the 0.1 left
    assert all(torch.allclose(a, s + 0.91) for a, s in zip(average.averaged, start))


def test_a_training_with_weight_averaging_tests_the_averaged_weights(small_har, monkeypatch):
    hp = HParams.from_dict({**TINY, "training_epochs": 3, "weight_averaging": 0.9})
    tested = []
    original = training.evaluate

    def spy(model, X, y, n_classes, forward=None):
        tested.append([p.detach().clone() for p in model.parameters()])
        return original(model, X, y, n_classes, forward)

    averages = []
    original_update = WeightAverage.update

    def record(self, step):
        original_update(self, step)
        averages.append([a.clone() for a in self.averaged])

    monkeypatch.setattr(training, "evaluate", spy)
    monkeypatch.setattr(WeightAverage, "update", record)
    result = training.train(hp, small_har, device="cpu", seed=1, progress=False)
    ours = list(tested)  # the plain training's evaluations come after
    assert len(ours) == 4
    plain = training.train(
        HParams.from_dict({**TINY, "training_epochs": 3}), small_har, device="cpu", seed=1, progress=False
    )
    steps = len(averages) // 3
    # every evaluation (validation after each epoch, the test at the end) read an average
    for epoch in range(3):
        assert all(torch.equal(t, a) for t, a in zip(ours[epoch], averages[(epoch + 1) * steps - 1]))
    assert all(torch.equal(t, a) for t, a in zip(ours[-1], averages[result.best_epoch * steps - 1]))
    # the average changes what is evaluated, not the training
    assert [e.train_loss for e in result.epochs] == [e.train_loss for e in plain.epochs]
    assert [e.validation_accuracy for e in result.epochs] != [e.validation_accuracy for e in plain.epochs]

"""Pruning: median, ASHA and Hyperband decisions on hand-made curves, rung records that two processes update
at once, and workers that stop pruned trials at the right epoch."""

import multiprocessing
import random

import pytest

from larnn_core import cli
from larnn_core.records import EpochReport
from tests.support.results import result_with
from workers.experiment import submit
from workers.pruners import (
    ASHAPruner,
    HyperbandPruner,
    MedianPruner,
    NoPruner,
    PrunerSettingError,
    PrunerSettings,
    promotable,
)
from workers.records import DONE, FINAL, PRUNED, RUNNING, Trial
from workers.store import open_store
from workers.worker import Worker


@pytest.fixture
def store(tmp_path):
    return open_store(f"sqlite:///{tmp_path / 'store.db'}")


def curve(*accuracies: float) -> list[EpochReport]:
    return [EpochReport(e, validation_accuracy=a) for e, a in enumerate(accuracies, 1)]


def add_finished(store, name: str, curves: list[list[EpochReport]]) -> None:
    for tid, points in enumerate(curves):
        store.insert_trial(
            Trial(
                name, tid, state=DONE, curve=tuple(points), result=result_with([p.validation_accuracy for p in points])
            )
        )


def test_median_stops_a_below_median_trial_after_warmup_once_enough_trials_completed(store):
    add_finished(store, "exp", [curve(0.5, 0.6, 0.7), curve(0.5, 0.7, 0.8), curve(0.4, 0.5, 0.9), curve(0.3)])
    # running trials and a pruned one past epoch 2: not completed, not counted (as Optuna's); with
    # them the median at epoch 2 would be 0.7
    for tid in (10, 11, 12):
        store.insert_trial(Trial("exp", tid, state=RUNNING, curve=tuple(curve(0.95, 0.95))))
    store.insert_trial(Trial("exp", 13, state=PRUNED, curve=tuple(curve(0.01, 0.01))))
    median = MedianPruner(warmup=1, min_trials=3)
    # at epoch 2 the others' best-so-far are 0.6, 0.7, 0.5 (the fourth trial stopped at epoch 1): median 0.6
    assert not median.prune(store, "exp", 99, curve(0.9, 0.55))  # its best so far, 0.9, is above
    assert not median.prune(store, "exp", 99, curve(0.1, 0.65))
    assert median.prune(store, "exp", 99, curve(0.1, 0.55))
    assert not median.prune(store, "exp", 99, curve(0.1))  # epoch 1: within the warm-up
    assert not MedianPruner(warmup=1, min_trials=4).prune(store, "exp", 99, curve(0.1, 0.2))  # 3 reported epoch 2


def test_the_median_pruner_reads_each_completed_trial_once_and_sees_new_ones(store):
    """At every epoch past the warm-up it reads only the trials completed since its last read: at
    thousands of trials a whole read of the experiment takes seconds (README, How far one store goes)."""
    add_finished(store, "exp", [curve(0.5, 0.6, 0.6), curve(0.5, 0.7, 0.7)])
    store.insert_trial(Trial("exp", 2, state=RUNNING, owner="w", curve=tuple(curve(0.9, 0.8, 0.7))))
    read = []
    original = store.trials
    store.trials = lambda name, tids=None: read.append(tids) or original(name, tids)
    median = MedianPruner(warmup=1, min_trials=3)
    assert not median.prune(store, "exp", 99, curve(0.1, 0.1))  # 2 completed: too few
    assert not median.prune(store, "exp", 99, curve(0.1, 0.1))  # nothing new: nothing read
    assert store.finish("exp", 2, "w", DONE, result_with([0.9, 0.8, 0.7]))  # trial 2 completes
    assert median.prune(store, "exp", 99, curve(0.1, 0.1, 0.1))  # 3 completed: below their median
    assert read == [[0, 1], [2]]


def test_asha_promotes_the_top_one_in_eta_as_trials_arrive_in_any_order(store):
    values = [0.91, 0.55, 0.83, 0.62, 0.70, 0.88, 0.47, 0.79, 0.66]
    for order in range(5):
        name = f"order{order}"
        arrivals = list(enumerate(values))
        random.Random(order).shuffle(arrivals)
        asha = ASHAPruner(min_epochs=2, eta=3, max_epochs=20)
        for n, (tid, value) in enumerate(arrivals, 1):
            pruned = asha.prune(store, name, tid, curve(value - 0.1, value))
            seen = sorted((v for _, v in arrivals[:n]), reverse=True)
            top = max(1, n // 3)
            assert pruned == (value < seen[top - 1]), (order, n)
        # the last arrival of nine goes on only if it is in the top three of all nine
        last_tid, last_value = arrivals[-1]
        assert (last_value >= sorted(values, reverse=True)[2]) == promotable(last_value, values, 3)


def test_asha_rungs_and_epochs_between_them():
    asha = ASHAPruner(min_epochs=2, eta=3, max_epochs=60)
    assert asha.rungs == [2, 6, 18, 54]
    assert ASHAPruner(min_epochs=5, eta=3, max_epochs=5).rungs == []  # no rung at the last epoch


def _record(url: str, tids: list[int], queue) -> None:
    store = open_store(url)
    rng = random.Random(tids[0])
    queue.put([(tid, store.append_record("race", "rung 4", tid, rng.random())) for tid in tids])


def test_two_processes_recording_at_one_rung_at_once_see_one_serial_order(tmp_path):
    """Every decision is taken from a prefix of the one arrival order the store keeps: insert and
    read are one transaction, so two workers never decide from rungs that disagree."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    open_store(url)
    queue = multiprocessing.get_context("spawn").Queue()
    procs = [
        multiprocessing.get_context("spawn").Process(target=_record, args=(url, tids, queue))
        for tids in (list(range(0, 40)), list(range(100, 140)))
    ]
    for p in procs:
        p.start()
    seen = queue.get(timeout=120) + queue.get(timeout=120)
    for p in procs:
        p.join(timeout=60)
    final = open_store(url).append_record("race", "rung 4", -1, 0.0)[:-1]  # the whole rung, in arrival order
    assert len(final) == 80
    for tid, returned in seen:
        position = [t for t, _ in final].index(tid)
        assert [tuple(r) for r in returned] == final[: position + 1], tid


def test_hyperband_deals_trials_to_asha_brackets_by_hyperbands_budget_and_keeps_their_rungs_apart(store):
    hyperband = HyperbandPruner(min_epochs=5, eta=3, max_epochs=100)
    assert [b.rungs for b in hyperband.brackets] == [[5, 15, 45], [15, 45], [45], []]  # the last: no pruning
    dealt = [hyperband.bracket_of(tid) for tid in range(1000)]
    weights = [27 / 4, 9 / 3, 3 / 2, 1 / 1]  # eta^s / (s + 1), s the bracket's rungs
    for bracket, weight in enumerate(weights):
        assert dealt.count(bracket) / 1000 == pytest.approx(weight / sum(weights), abs=0.01)
    assert dealt == [hyperband.bracket_of(tid) for tid in range(1000)]  # from the tid alone: workers agree
    # two trials of different brackets at epoch 15: each is judged among its own bracket only
    first, second = (next(t for t in range(100) if hyperband.bracket_of(t) == b) for b in (0, 1))
    strong = curve(*[0.9] * 15)
    assert not hyperband.prune(store, "hb", first, strong)  # bracket 0's rung 15: alone there, it goes on
    assert not hyperband.prune(store, "hb", second, curve(*[0.2] * 15))  # bracket 1's rung 15: alone as well
    assert [r[0] for r in store.append_record("hb", "bracket 1 rung 15", -1, 0.0)] == [second, -1]
    assert not hyperband.prune(store, "hb", first, curve(*[0.9] * 14))  # epoch 14: no rung in any bracket
    last = next(t for t in range(100) if hyperband.bracket_of(t) == 3)
    assert not any(hyperband.prune(store, "hb", last, curve(*[0.01] * e)) for e in range(1, 100))


def test_pruner_settings_are_stored_with_defaults_and_refused_by_parameter_name():
    assert PrunerSettings.of("asha", eta=2).to_document() == {"kind": "asha", "min_epochs": 5, "eta": 2}
    assert PrunerSettings.of("none").to_document() == {"kind": "none"}
    with pytest.raises(PrunerSettingError, match="^warmup does not apply to the asha pruner$"):
        PrunerSettings.of("asha", warmup=3)
    with pytest.raises(PrunerSettingError, match="^eta must be a whole number of at least 2, got 1$"):
        PrunerSettings.of("asha", eta=1)
    with pytest.raises(PrunerSettingError, match="^kind must be one of none, median, asha, hyperband"):
        PrunerSettings.of("oracle")
    settings = PrunerSettings.of("hyperband", min_epochs=2)
    assert settings.to_document() == {"kind": "hyperband", "min_epochs": 2, "eta": 3}
    assert PrunerSettings.from_document(settings.to_document()) == settings
    assert isinstance(settings.for_trial(100), HyperbandPruner) and settings.for_trial(100).max_epochs == 100
    assert isinstance(PrunerSettings.from_document(None).for_trial(100), NoPruner)  # experiments before pruners


def test_the_command_line_refuses_a_pruner_setting_under_its_flag_and_writes_nothing(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    for options, message in (
        (["--pruner", "asha", "--asha-eta", "1"], "--asha-eta must be a whole number of at least 2, got 1"),
        (["--pruner", "asha", "--prune-warmup", "3"], "--prune-warmup does not apply to the asha pruner"),
        (["--asha-eta", "3"], "--asha-eta does not apply to the median pruner"),  # the default pruner's
    ):
        assert cli.main(["submit", "smoke", "--name", "x", "--store", url, *options]) == 2
        assert capsys.readouterr().err.strip() == f"larnn submit: error: {message}"
    assert open_store(url).experiments() == []


@pytest.mark.parametrize(
    "make, parameter",
    [
        (lambda: ASHAPruner(eta=1), "eta"),
        (lambda: ASHAPruner(min_epochs=0), "min_epochs"),
        (lambda: HyperbandPruner(eta=True), "eta"),
        (lambda: MedianPruner(warmup=2.5), "warmup"),
        (lambda: MedianPruner(min_trials=-1), "min_trials"),
    ],
)
def test_each_pruner_refuses_its_own_bad_parameters(make, parameter):
    with pytest.raises(PrunerSettingError) as refused:
        make()
    assert refused.value.parameter == parameter


def curve_objective(epochs_run: list):
    """Accuracy rises with the epoch towards a ceiling set by the learning rate; honours the
    pruner's stop (on_epoch's True), as larnn_core.train does."""

    def objective(hp, settings, seed, device, on_epoch):
        ceiling = 0.5 + 40 * hp["learning_rate"]  # smoke's learning rates: 0.003-0.03
        accuracies = []
        for epoch in range(1, settings.epochs + 1):
            accuracies.append(ceiling * (1 - 0.5**epoch))
            if on_epoch(EpochReport(epoch, validation_accuracy=accuracies[-1])):
                break
        epochs_run.append(epoch)
        return result_with(accuracies)

    return objective


def test_a_worker_stops_pruned_trials_at_a_rung_and_keeps_their_curves(tmp_path, store):
    submit(
        store,
        "asha",
        "smoke",
        max_evals=12,
        epochs=8,
        algorithm="rand",
        pruner=PrunerSettings.of("asha", min_epochs=1, eta=2),
    )
    epochs_run = []
    Worker(store, curve_objective(epochs_run), poll_s=0.01, idle_exit_s=0.0, spool=tmp_path / "spool").run()
    trials = store.trials("asha")
    assert len(trials) == 12 and all(t.state in FINAL for t in trials)
    pruned = [t for t in trials if t.state == PRUNED]
    assert pruned and len(pruned) < 12
    for trial in pruned:
        stopped = trial.result.extra["pruned_at_epoch"]
        assert stopped in (1, 2, 4) and len(trial.curve) == stopped  # a rung; nothing trained after it
        assert trial.result.loss == -max(e.validation_accuracy for e in trial.curve)
    assert all(len(t.curve) == 8 for t in trials if t.state == DONE)
    assert sum(epochs_run) < 12 * 8


def test_status_shows_each_running_trials_latest_epoch(store, capsys):
    from workers import report

    submit(store, "live", "smoke", max_evals=2)
    store.insert_trial(Trial.new("live", 0, {}, {}, owner="host:1:abc"))
    assert report.running_lines(report.read(store)) == ["live trial 0 running on host:1:abc: no epoch reported yet"]
    store.report_epoch("live", 0, "host:1:abc", EpochReport(3, validation_accuracy=0.8125))
    assert report.running_lines(report.read(store)) == [
        "live trial 0 running on host:1:abc: epoch 3, validation accuracy 0.8125"
    ]

"""Search-level stops: no improvement for N completed trials, a duration; --extend-to restarts."""

import pytest

from larnn_core import cli
from tests.support.results import result_with
from workers.experiment import submit
from workers.records import DONE
from workers.stops import duration
from workers.store import open_store
from workers.worker import Worker

ACCURACIES = [0.5, 0.7, 0.6, 0.65, 0.69, 0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]


def scripted_objective():
    """The n-th trial run reaches ACCURACIES[n]."""
    calls = []

    def objective(hp, settings, seed, device, on_epoch):
        accuracy = ACCURACIES[len(calls)]
        calls.append(accuracy)
        return result_with([accuracy])

    return objective


def run_worker(store, tmp_path, objective):
    return Worker(store, objective, poll_s=0.01, idle_exit_s=0.0, spool=tmp_path / "spool").run()


def test_no_improvement_stops_the_experiment_at_the_right_count_and_extend_restarts_it(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)
    submit(store, "flat", "smoke", max_evals=12, algorithm="rand", stop_after_no_improvement=3)
    objective = scripted_objective()
    assert run_worker(store, tmp_path, objective) == 5  # best 0.7 at the 2nd; 0.6, 0.65, 0.69 then: stop
    stopped = store.get_experiment("flat").stopped
    assert stopped["reason"] == "no new best in the last 3 completed trials (best 0.7000, trial 1)"
    assert cli.main(["status", "flat", "--store", url]) == 0
    out = capsys.readouterr().out
    assert " stopped " in out and "flat stopped: no new best in the last 3" in out
    submit(store, "flat", "smoke", extend_to=20)  # a new budget; the rule counts from now
    assert store.get_experiment("flat").stopped is None
    assert run_worker(store, tmp_path, objective) == 4  # 0.9 (a new best), then 0.1, 0.2, 0.3: stop again
    assert len(store.trials("flat")) == 9 and all(t.state == DONE for t in store.trials("flat"))


def test_a_duration_stops_the_experiment_before_its_next_suggestion(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    submit(store, "short", "smoke", max_evals=5, stop_after_s=1e-6)
    assert run_worker(store, tmp_path, scripted_objective()) == 0
    assert store.get_experiment("short").stopped["reason"].endswith("(--stop-after)")


def test_durations_take_units_and_refuse_the_rest():
    assert [duration(t) for t in ("3600", "90m", "12h", "2d", "1.5h")] == [3600, 5400, 43200, 172800, 5400]
    for bad in ("", "3q", "-5", "0", "h"):
        with pytest.raises(ValueError, match="--stop-after: expected a positive duration"):
            duration(bad)

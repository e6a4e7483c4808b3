"""benchmarks/bench_search.py: a replay over curves a store recorded, scored on the noise-free
curve of the trial a search hands its user."""

import json
from pathlib import Path

import numpy as np
import pytest

from search_spaces import load_space
from tests.support.benchmarks import load
from tests.support.results import result_with
from workers.experiment import make_experiment
from workers.pruners import PrunerSettings
from workers.records import DONE, Trial
from workers.store import open_store

ROOT = Path(__file__).resolve().parents[1]
SCALED = ROOT / "benchmarks" / "data" / "scaled-round2.yaml"


@pytest.fixture(scope="module")
def bench():
    return load("bench_search")


@pytest.fixture
def recorded(tmp_path):
    """A store whose experiment holds 8 finished trials of the scaled space, each curve rising to
    a level set by the trial's learning rate, plus a pruned one (not replayed)."""
    url = f"sqlite:///{tmp_path / 'curves.db'}"
    store, space = open_store(url), load_space(SCALED)
    experiment = make_experiment("rec", space, algorithm="rand", max_evals=9, pruner=PrunerSettings.of("none"))
    store.create_experiment(experiment)
    rng = np.random.default_rng(0)
    for tid in range(9):
        point = space.sample(rng)
        idxs, vals = space.trial_misc(point, tid)
        store.insert_trial(Trial.new("rec", tid, idxs, vals, owner="w"))
        level = 0.6 + 20 * point["learning_rate"]
        curve = [round(level * (1 - 0.5**epoch), 4) for epoch in range(1, 11 if tid < 8 else 4)]
        store.finish("rec", tid, "w", DONE, result_with(curve))
    return url


def test_a_replay_of_a_stores_curves_returns_them_at_their_points(bench, recorded):
    space, curves = bench.recorded_in_store(recorded, "rec")
    assert len(curves) == 8 and all(len(curve) == 10 for _, curve in curves)  # the short one is left out
    replay = bench.Replay(space, curves)
    for vals, curve in curves:
        assert replay.truth(vals) == pytest.approx(curve, abs=1e-4)
    assert replay.signal() > 0.5  # the planted effect of the learning rate is smooth: the blend predicts it


def test_a_search_is_scored_on_the_noise_free_value_of_the_trial_it_hands_over(bench, recorded):
    space, curves = bench.recorded_in_store(recorded, "rec")
    replay = bench.Replay(space, curves, noise=0.05)
    run = bench.search(replay, space, PrunerSettings.of("none"), "none", 2, 3, 6)
    again = bench.search(replay, space, PrunerSettings.of("none"), "none", 2, 3, 6)
    assert run == again  # seeded
    # the chosen trial's noise-free curve at its selected epoch, not the noisy maximum it was chosen by
    experiment = make_experiment("replay", space, max_evals=6, seed=3, pruner=PrunerSettings.of("none"))
    from workers.history import History
    from workers.suggest import suggest

    trials = []
    for tid in range(run["chosen"]["tid"] + 1):
        idxs, vals = suggest(experiment, History.of(experiment, trials), tid)
        trials.append(Trial.new("replay", tid, idxs, vals))
    truth = replay.truth(trials[-1].vals)
    assert run["true"] == pytest.approx(truth[run["chosen"]["epoch"] - 1])
    assert run["observed"] != pytest.approx(run["true"], abs=1e-3)


def test_the_benchmark_replays_a_store_experiment_end_to_end(bench, recorded, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench.main(
        ["--curves-from", recorded, "--experiment", "rec", "--seeds", "2", "--trials", "4", "--out", str(out)]
    )
    result = json.loads(out.read_text())
    (source,) = result["sources"].values()
    assert code == 0 and source["curves"] == 8 and source["epochs"] == 10
    assert set(source["pruners"]) == {"none", "median", "asha", "hyperband"}
    assert source["pruners"]["none"]["epochs"]["mean"] == 40  # 4 trials of 10 epochs
    with pytest.raises(SystemExit):
        bench.main(["--curves-from", recorded])
    assert "--curves-from and --experiment go together" in capsys.readouterr().err

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from analysis.frame import finished, trials_frame
from analysis.import2018 import import_results
from analysis.importance import POOLED, RELIABLE_R2, importance, importance_by_experiment, ranking
from larnn_core import cli
from larnn_core.records import EpochReport, TrainResult
from search_spaces import load_space
from tests.support.browser import headless, needs_chromium
from tests.support.searches import add_synthetic_experiment, result_2018
from workers.experiment import make_experiment
from workers.records import DONE, Trial
from workers.store import open_store

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def store(url):
    store = open_store(url)
    add_synthetic_experiment(store, "round2", n=50, seed=0)
    add_synthetic_experiment(store, "round3", n=30, seed=1)
    return store


def test_frame_has_one_row_per_trial_and_nan_for_absent_branches(store):
    frame, hyperparameters = trials_frame(store, ["round2", "round3"])
    assert len(frame) == 82 and set(frame["experiment"]) == {"round2", "round3"}
    assert {"learning_rate", "attention_heads", "model"} <= set(hyperparameters)
    done = frame[frame["state"] == "done"]
    lstm = done[done["model"] == "lstm"]
    assert len(lstm) and lstm["attention_heads"].isna().all()
    assert done.loc[done["model"] == "larnn", "attention_heads"].notna().all()
    assert (frame["state"] == "failed").sum() == 2


def test_importance_ranks_the_planted_hyperparameter_first(store):
    frame, hyperparameters = trials_frame(store, ["round2", "round3"])
    table = importance(frame[frame["state"] == "done"], hyperparameters)
    assert table["hyperparameter"].iloc[0] == "learning_rate"
    assert table["mean"].iloc[0] > 10 * max(table["mean"].iloc[1], 1e-3)
    assert table["r2"].iloc[0] > 0.5 > RELIABLE_R2  # a surrogate that predicts unseen trials
    assert (table["low"] <= table["mean"]).all() and (table["mean"] <= table["high"]).all()


def test_importance_refuses_to_rank_random_accuracies_and_says_so(url, tmp_path):
    store = open_store(url)
    add_synthetic_experiment(store, "noise", n=40, seed=7, accuracy=lambda point, rng: rng.uniform(0.6, 0.9))
    frame, hyperparameters = trials_frame(store, ["noise"])
    table = importance_by_experiment(frame[frame["state"] == "done"], hyperparameters)
    assert table["r2"].max() < RELIABLE_R2 and ranking(table) == []
    assert cli.main(["plot", "noise", "--out", str(tmp_path / "plots"), "--store", url]) == 0
    svg = (tmp_path / "plots" / "importance.svg").read_text()
    assert "too few or too noisy trials to rank" in svg and "<!-- learning_rate -->" not in svg
    assert "noise: too few or too noisy trials to rank" in (tmp_path / "plots" / "index.html").read_text()


def axes_in_svg(path: Path) -> int:
    return len(re.findall(r'<g id="axes_\d+"', path.read_text()))


@pytest.mark.slow
def test_plot_writes_every_figure_and_an_offline_report(store, url, tmp_path, capsys):
    out = tmp_path / "plots"
    assert cli.main(["plot", "round2", "round3", "--out", str(out), "--store", url]) == 0
    stems = {p.stem for p in out.glob("*.png")}
    expected = {
        "history",
        "importance",
        "learning_curves",
        "larnn_vs_lstm",
        "validation_vs_test",
        "hp_learning_rate",
        "hp_larnn_mode",
        "hp_attention_heads",
    }
    assert expected <= stems and len([s for s in stems if s.startswith("pair_")]) == 2
    for stem in stems:
        image = matplotlib.image.imread(out / f"{stem}.png")
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0  # a real, non-blank picture
        assert (out / f"{stem}.svg").stat().st_size > 1000
    pairs = sorted(out.glob("pair_learning_rate__*.svg"))  # the strongest pairs include the planted one
    assert len(pairs) == 2
    for stem in stems:  # one axes each; a pair plot one panel and its colour bar per experiment (2 here)
        assert axes_in_svg(out / f"{stem}.svg") == (4 if stem.startswith("pair_") else 1), stem
    html = (out / "index.html").read_text()
    references = re.findall(r"(?:src|href)='([^']+)'", html)
    assert references and all((out / r).is_file() for r in references)
    assert "http" not in html  # no external assets
    assert "Best trials" in html and "round3" in html and "learning_rate" in html


def test_best_and_plot_note_a_failed_experiment(store, url, tmp_path, capsys):
    store.fail_experiment("round3", "suggesting trial 31 failed: ValueError: low > high")
    assert cli.main(["best", "round3", "--format", "json", "--store", url]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) and "note: experiment round3 failed: suggesting trial 31" in captured.err
    out = tmp_path / "plots"
    assert cli.main(["plot", "round3", "--out", str(out), "--store", url]) == 0
    assert "note: experiment round3 failed: suggesting trial 31" in capsys.readouterr().out
    assert "Note: experiment round3 failed: suggesting trial 31" in (out / "index.html").read_text()


def test_plot_refuses_unknown_or_empty_experiments(store, url, tmp_path, capsys):
    assert cli.main(["plot", "nope", "--out", str(tmp_path / "x"), "--store", url]) == 2
    assert "no experiment named 'nope'" in capsys.readouterr().err
    assert cli.main(["submit", "smoke", "--name", "empty", "--store", url]) == 0
    assert cli.main(["plot", "empty", "--out", str(tmp_path / "x"), "--store", url]) == 2
    assert "no finished trials" in capsys.readouterr().err


def test_trials_export(store, url, tmp_path, capsys):
    target = tmp_path / "trials.csv"
    assert cli.main(["trials", "round3", "--export", str(target), "--store", url]) == 0
    lines = target.read_text().splitlines()
    assert len(lines) == 32 and "learning_rate" in lines[0] and "validation_accuracy" in lines[0]
    rows = list(csv.DictReader(lines))
    assert {row["attempts"] for row in rows} == {"1"}  # each synthetic trial was reserved once


@pytest.mark.slow
def test_notebook_runs_as_a_script(store, url, tmp_path):
    out = tmp_path / "nb"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "analysis/notebooks/hyperparameter_influence.py"),
            "--store",
            url,
            "--experiment",
            "round2",
            "--experiment",
            "round3",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "learning_rate" in run.stdout and (out / "importance.png").exists()
    assert run.stdout.count("# %%") == 0 and "figures in" in run.stdout


def test_import_of_2018_results_round_trips_and_skips_malformed_files(tmp_path, url, capsys):
    files = []
    for lr, acc in [(0.005, 0.91), (0.006, 0.9192), (0.004, 0.88)]:
        files.append(tmp_path / f"{acc}.json")
        files[-1].write_text(json.dumps(result_2018(lr, acc)))
    bad_curve = result_2018(0.1, 0.5)
    bad_curve["history"]["validation_accuracies"] = "high"
    bad = {"missing.json": {"loss": -0.5}, "broken.json": None, "curve.json": bad_curve}
    for name, content in bad.items():
        (tmp_path / name).write_text("{not json" if content is None else json.dumps(content))
    paths = [str(p) for p in files] + [str(tmp_path / n) for n in bad]
    assert cli.main(["import-results", *paths, "--name", "paper-2018", "--store", url]) == 0
    captured = capsys.readouterr()
    assert "imported 3 trial(s)" in captured.out and "3 file(s) skipped" in captured.out
    assert "missing.json: missing key 'space'" in captured.err and "broken.json: not readable JSON" in captured.err
    assert "curve.json: history.validation_accuracies must be a list of numbers" in captured.err
    frame, _ = trials_frame(open_store(url), ["paper-2018"])
    assert sorted(frame["validation_accuracy"]) == [0.88, 0.91, 0.9192]
    assert set(frame["learning_rate"]) == {0.005, 0.006, 0.004} and set(frame["model"]) == {"larnn"}
    assert frame["best_epoch"].tolist() == [2, 2, 2]
    assert cli.main(["import-results", *paths[:1], "--name", "paper-2018", "--store", url]) == 2
    assert "already exists" in capsys.readouterr().err
    # `best` and `status` name the imports' numbers by their protocol: test-picked, not validation
    assert cli.main(["best", "paper-2018", "--format", "json", "--store", url]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["test_picked_accuracy"] for row in rows] == [0.9192, 0.91, 0.88]
    assert all(row["protocol"] == "test-picked" and "validation_accuracy" not in row for row in rows)
    assert cli.main(["best", "paper-2018", "--store", url]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("protocol: test-picked: 2018 results: the epoch was chosen on the test set")
    header = next(line for line in table if line.startswith("tid"))
    assert "test_picked_accuracy" in header and "validation" not in header
    assert cli.main(["status", "paper-2018", "--store", url]) == 0
    status = capsys.readouterr().out.splitlines()
    assert "chosen_on" in status[0] and "test (2018)" in status[1] and "best_val" not in status[0]


def test_import_of_only_bad_files_writes_nothing(tmp_path, url):
    (tmp_path / "bad.json").write_text("[]")
    store = open_store(url)
    assert import_results(store, "nothing", [tmp_path / "bad.json"]) == (
        0,
        [f"{tmp_path / 'bad.json'}: not a JSON object"],
    )
    assert store.experiments() == []


def test_an_import_cut_short_by_the_store_writes_nothing(tmp_path, url, monkeypatch, capsys):
    """The store fails at the third trial (a lock held too long): the experiment and its first
    trials are rolled back, the command says why on one line, and a retry imports everything."""
    from workers.store import StoreUnavailable
    from workers.store.sqlite import SQLiteStore

    paths = []
    for lr, acc in [(0.005, 0.91), (0.006, 0.9192), (0.004, 0.88)]:
        paths.append(tmp_path / f"{acc}.json")
        paths[-1].write_text(json.dumps(result_2018(lr, acc)))
    insert = SQLiteStore._insert_trial

    def fail_at_third(db, trial):
        if trial.tid == 2:
            raise StoreUnavailable("SQLite store: database is locked")
        insert(db, trial)

    monkeypatch.setattr(SQLiteStore, "_insert_trial", staticmethod(fail_at_third))
    assert cli.main(["import-results", *map(str, paths), "--name", "paper-2018", "--store", url]) == 2
    assert capsys.readouterr().err.strip() == "larnn import-results: error: SQLite store: database is locked"
    store = open_store(url)
    assert store.experiments() == [] and store.trials("paper-2018") == []
    monkeypatch.undo()
    assert cli.main(["import-results", *map(str, paths), "--name", "paper-2018", "--store", url]) == 0
    assert len(open_store(url).trials("paper-2018")) == 3


def test_the_report_shows_running_trials_curves_and_marks_pruned_ones(store, url, tmp_path):
    """A search in progress: one trial running (its epochs reported live), one pruned at epoch 2."""
    from workers.store import PRUNED

    running = Trial.new("round3", 100, {}, {}, owner="host:1:live")
    store.insert_trial(running)
    for epoch, accuracy in enumerate((0.5, 0.62, 0.7), 1):
        assert store.report_epoch("round3", 100, "host:1:live", EpochReport(epoch, validation_accuracy=accuracy))
    curve = (EpochReport(1, validation_accuracy=0.3), EpochReport(2, validation_accuracy=0.35))
    store.insert_trial(
        Trial(
            "round3",
            101,
            state=PRUNED,
            curve=curve,
            result=TrainResult(
                "ok", curve, best_epoch=2, extra={"pruned_at_epoch": 2, "space": {"learning_rate": 0.01}}
            ),
        )
    )
    out = tmp_path / "plots"
    assert cli.main(["plot", "round3", "--out", str(out), "--store", url]) == 0
    progress = (out / "progress.svg").read_text()
    assert "running" in progress and "pruned" in progress and "done" in progress
    assert "pruned (best before the stop)" in (out / "history.svg").read_text()
    frame, _ = trials_frame(store, ["round3"])
    assert frame.set_index("tid").loc[100, "curve"][-1] == EpochReport(3, validation_accuracy=0.7)


def test_imports_are_labelled_test_picked_in_the_export_the_figures_and_the_report(tmp_path, url):
    """The 2018 code picked its epoch on the test set: its scores must not be called validation
    accuracy, and wherever they meet honest results the report says so."""
    paths = []
    for i, (lr, acc) in enumerate([(0.005, 0.91), (0.006, 0.9192), (0.004, 0.88), (0.003, 0.85)]):
        paths.append(tmp_path / f"{acc}.json")
        paths[-1].write_text(json.dumps(result_2018(lr, acc)))
        os.utime(paths[-1], (1e9 + 600 * i, 1e9 + 600 * i))  # written as the trials ended: ordered
    assert cli.main(["import-results", *map(str, paths), "--name", "paper-2018", "--store", url]) == 0
    export = tmp_path / "trials.csv"
    assert cli.main(["trials", "paper-2018", "--export", str(export), "--store", url]) == 0
    rows = list(csv.DictReader(export.open()))
    assert {row["protocol"] for row in rows} == {"test-picked"}
    # the 2018 files' best_train_accuracy (one batch's, the best over epochs) kept under a name that says so
    assert {row["train_accuracy"] for row in rows} == {""}
    assert {row["train_batch_accuracy_2018"] for row in rows} == {"0.8"}
    assert sorted(float(row["validation_f1"]) for row in rows) == pytest.approx([0.84, 0.87, 0.9, 0.9092])
    out = tmp_path / "plots"
    assert cli.main(["plot", "paper-2018", "--out", str(out), "--store", url]) == 0
    assert "test-picked accuracy" in (out / "history.svg").read_text()
    curves = (out / "learning_curves.svg").read_text()  # per epoch: each point one epoch's test number
    assert "test accuracy per epoch" in curves and "best test epoch" not in curves
    page = (out / "index.html").read_text()
    assert "Caveat: trials marked test-picked" in page
    # captions and the best-trials table name the imports' numbers test-picked, never validation
    assert "Test-picked accuracy against" in page and "Validation accuracy" not in page
    assert "<th>test-picked_accuracy</th>" in page and "<th>validation_accuracy</th>" not in page
    assert "validation_f1" in (out / "index.html").read_text()  # F1 in the best-trials table
    store = open_store(url)
    add_synthetic_experiment(store, "honest", n=30, seed=2)
    frame, _ = trials_frame(store, ["honest", "paper-2018"])
    assert dict(frame.groupby("experiment")["protocol"].unique().map(list)) == {
        "honest": ["honest"],
        "paper-2018": ["test-picked"],
    }
    from analysis.plots import accuracy_label

    assert accuracy_label(frame) == "accuracy: validation, or test-picked for 2018 imports"
    assert accuracy_label(frame[frame["experiment"] == "honest"]) == "validation accuracy"


def test_imports_are_ordered_by_when_each_file_was_written_and_get_the_space_they_fit(tmp_path, url):
    """2018 file names begin with the accuracy: ordered by name, the history was a fake staircase.
    Points that paper-round1 can produce get its space, so the figures draw its distributions."""
    import os

    import numpy as np

    from search_spaces import load_space

    space = load_space("paper-round1")
    paths = []
    for i, acc in enumerate([0.95, 0.93, 0.91, 0.89]):  # names in falling accuracy ...
        data = result_2018(0.005, acc)
        data["space"] = space.sample(np.random.default_rng(i))
        paths.append(tmp_path / f"{acc}.json")
        paths[-1].write_text(json.dumps(data))
        os.utime(paths[-1], (1e9 - 100 * i, 1e9 - 100 * i))  # ... written in rising accuracy
    assert cli.main(["import-results", *map(str, paths), "--name", "r1", "--store", url]) == 0
    store = open_store(url)
    accuracies = [t.result.chosen.validation_accuracy for t in store.trials("r1")]
    assert accuracies == [0.89, 0.91, 0.93, 0.95]
    assert store.get_experiment("r1").space_name == "paper-round1"
    assert store.get_experiment("r1").trial_order == "file times"
    odd = json.loads(paths[0].read_text())
    odd["space"]["num_layers"] = 16  # outside both 2018 spaces
    paths[0].write_text(json.dumps(odd))
    assert cli.main(["import-results", *map(str, paths), "--name", "mixed", "--store", url]) == 0
    assert store.get_experiment("mixed").space is None


def test_a_numeric_choice_sits_at_the_category_its_pair_plot_tick_names():
    """The ticks of a choice are its categories at 0..n-1; its points sat at their raw numbers."""
    import pandas as pd

    from analysis.plots import pair_coordinates

    rates = [0.001 * (i + 1) for i in range(8)]  # a number with many values: an axis of its own
    data = pd.DataFrame(
        {
            "attention_heads": [9, 27, 27, 9] * 2,
            "learning_rate": rates,
            "larnn_mode": ["layer", "residual", "layer", "layer"] * 2,
        }
    )
    coded = pair_coordinates(data, ["attention_heads", "learning_rate"])
    assert coded["attention_heads"].tolist() == [0.0, 1.0, 1.0, 0.0] * 2  # 9 before 27, by value
    assert coded["learning_rate"].tolist() == rates
    assert pair_coordinates(data, ["larnn_mode"])["larnn_mode"].tolist() == [0.0, 1.0, 0.0, 0.0] * 2
    from analysis.plots import categories

    assert categories(data["attention_heads"]) == ["9", "27"] and categories(data["larnn_mode"]) == [
        "layer",
        "residual",
    ]


def add_two_rounds(store, n: int = 40) -> None:
    """Two rounds that differ in epochs and level (as 2018's round 1 and round 2); within each,
    only dropout moves accuracy."""
    rng = np.random.default_rng(4)
    for name, epochs, level in (("short", 25, 0.75), ("long", 100, 0.88)):
        store.create_experiment(make_experiment(name, load_space("paper-round1"), max_evals=n))
        for tid in range(n):
            point = {
                "training_epochs": epochs,
                "dropout_drop_proba": float(rng.uniform(0.05, 0.5)),
                "learning_rate": float(rng.uniform(0.001, 0.01)) * (2 if epochs == 100 else 1),
                "hidden_size": int(rng.integers(40, 120)),
            }
            accuracy = level - 0.3 * abs(point["dropout_drop_proba"] - 0.2) + rng.normal(0, 0.002)
            store.insert_trial(Trial.new(name, tid, {}, {}, owner="synthetic"))
            store.finish(
                name,
                tid,
                "synthetic",
                DONE,
                TrainResult.from_document(
                    {"status": "ok", "loss": -accuracy, "space": point, "best_validation_accuracy": accuracy}
                ),
            )


def test_importance_is_ranked_within_each_experiment_and_pooled_only_beyond_each_experiments_mean(url):
    store = open_store(url)
    add_two_rounds(store)
    frame, hyperparameters = trials_frame(store, ["short", "long"])
    done = frame[frame["state"] == "done"]
    assert importance(done, hyperparameters)["hyperparameter"].iloc[0] != "dropout_drop_proba"  # pooled: the round
    table = importance_by_experiment(done, hyperparameters)
    for name in ("short", "long"):
        own = table[table["experiment"] == name]
        assert own["hyperparameter"].iloc[0] == "dropout_drop_proba", own
        assert "training_epochs" not in set(own["hyperparameter"])  # fixed within a round
    pooled = table[table["experiment"] == POOLED]
    assert pooled["hyperparameter"].iloc[0] == "dropout_drop_proba"  # within the rounds, not their levels
    assert "training_epochs" not in set(pooled["hyperparameter"])  # it only tells the rounds apart
    assert ranking(table)[0] == "dropout_drop_proba"


def svg_colours(path: Path) -> dict[str, set[str]]:
    """The colours of each experiment's marks: fills and strokes under its group id."""
    import xml.etree.ElementTree as ET

    found: dict[str, set[str]] = {}
    for group in ET.parse(path).getroot().iter("{http://www.w3.org/2000/svg}g"):
        if group.get("id", "").startswith("experiment-"):
            styles = " ".join(e.get("style", "") for e in group.iter())
            colours = set(re.findall(r"(?:fill|stroke): (#[0-9a-f]{6})", styles))
            found.setdefault(group.get("id")[len("experiment-") :], set()).update(colours)
    return found


@pytest.mark.slow
def test_each_experiment_has_one_colour_in_every_figure(url, tmp_path):
    store = open_store(url)
    add_synthetic_experiment(store, "round2", n=30, seed=0)
    add_synthetic_experiment(store, "round3", n=30, seed=1)
    add_two_rounds(store, n=12)
    out = tmp_path / "plots"
    names = ["round3", "short", "round2", "long"]
    assert cli.main(["plot", *names, "--out", str(out), "--store", url]) == 0
    colours: dict[str, set[str]] = {}
    figures_with = {name: 0 for name in names}
    for svg in out.glob("*.svg"):
        for name, used in svg_colours(svg).items():
            colours.setdefault(name, set()).update(used)
            figures_with[name] += 1
    assert all(len(colours[name]) == 1 for name in names), colours
    assert len({next(iter(colours[name])) for name in names}) == len(names)  # and no two share one
    assert min(figures_with.values()) >= 5, figures_with  # history, importance, hyperparameters, ...
    # training_epochs separates "short" from "long" and never varies within one: not drawn as an effect
    assert not (out / "hp_training_epochs.svg").exists() and (out / "hp_dropout_drop_proba.svg").exists()
    page = (out / "index.html").read_text()
    assert "training_epochs is not drawn against accuracy: it differs only between experiments (long 100, " in page
    # a pair plot draws each experiment in a panel of its own, on its own colour scale
    panels = re.findall(r"(\w+): \d+ trials, best", next(out.glob("pair_*.svg")).read_text())
    assert len(panels) >= 2 and len(set(panels)) == len(panels) and set(panels) <= set(names)


def test_each_box_says_how_many_trials_it_summarises(url, tmp_path):
    store = open_store(url)
    add_synthetic_experiment(store, "round2", n=30, seed=0)
    out = tmp_path / "plots"
    assert cli.main(["plot", "round2", "--out", str(out), "--store", url]) == 0
    done = finished(trials_frame(store, ["round2"])[0])
    counts = done["larnn_mode"].dropna().astype(str).value_counts()
    texts = re.findall(r"n=(\d+)", (out / "hp_larnn_mode.svg").read_text())
    assert sorted(map(int, texts)) == sorted(counts.tolist())


@pytest.mark.slow
def test_imports_whose_files_were_written_at_once_are_unordered_and_left_out_of_the_history(tmp_path, url):
    """A clone or a copy writes every 2018 file within moments, in name (accuracy) order: their
    times say nothing about when each trial ran, and a history drawn from them would be a staircase."""
    paths = []
    for i, acc in enumerate([0.95, 0.93, 0.91, 0.89, 0.87, 0.85]):
        paths.append(tmp_path / f"model_{acc}_{i}.txt.json")
        paths[-1].write_text(json.dumps(result_2018(0.004 + 0.0005 * i, acc)))
    assert cli.main(["import-results", *map(str, paths), "--name", "cloned", "--store", url]) == 0
    assert open_store(url).get_experiment("cloned").trial_order == "unordered"
    out = tmp_path / "plots"
    assert cli.main(["plot", "cloned", "--out", str(out), "--store", url]) == 0
    assert not (out / "history.svg").exists()
    assert (
        "cloned is left out of the optimisation history: its trials are unordered" in (out / "index.html").read_text()
    )
    add_synthetic_experiment(open_store(url), "honest", n=12, seed=3)
    assert cli.main(["plot", "honest", "cloned", "--out", str(tmp_path / "both"), "--store", url]) == 0
    history = (tmp_path / "both" / "history.svg").read_text()
    assert "experiment-honest" in history and "experiment-cloned" not in history


@needs_chromium
def test_the_report_in_a_real_browser_fits_the_page_and_shows_every_figure(url, tmp_path):
    """index.html as a user opens it (headless Chromium, 1280 px wide): no table runs off the page
    (wide ones scroll inside it), every figure loads, imports are named test-picked in the captions."""
    store = open_store(url)
    add_synthetic_experiment(store, "honest", n=30, seed=2)
    paths = []
    for i, (lr, acc) in enumerate([(0.005, 0.91), (0.006, 0.9192), (0.004, 0.88)]):
        paths.append(tmp_path / f"{acc}.json")
        paths[-1].write_text(json.dumps(result_2018(lr, acc)))
        os.utime(paths[-1], (1e9 + 600 * i, 1e9 + 600 * i))
    assert cli.main(["import-results", *map(str, paths), "--name", "paper-2018", "--store", url]) == 0
    out = tmp_path / "plots"
    assert cli.main(["plot", "honest", "paper-2018", "--out", str(out), "--store", url]) == 0
    with headless(1280, 1000) as browser:
        browser.get((out / "index.html").as_uri())
        page_width = browser.execute_script("return document.documentElement.clientWidth")
        assert browser.execute_script("return document.documentElement.scrollWidth") <= page_width
        overflowing = browser.execute_script(
            "return [...document.querySelectorAll('table')].filter(t => t.getBoundingClientRect().right > "
            "document.documentElement.clientWidth && !t.parentElement.classList.contains('wide')).length"
        )
        assert overflowing == 0
        images = browser.execute_script("return [...document.images].map(i => i.complete && i.naturalWidth > 0)")
        assert len(images) >= 10 and all(images)
        captions = browser.execute_script("return [...document.querySelectorAll('figcaption')].map(c => c.textContent)")
        assert any("test-picked" in caption for caption in captions), captions
        browser.save_screenshot(str(tmp_path / "report.png"))
    assert os.path.getsize(tmp_path / "report.png") > 10_000


def test_the_report_orders_trials_by_the_selection_rules_objective_as_best_does(url):
    """Under min-loss, the report's best trial is `larnn best`'s: lowest validation loss first."""
    from workers import report

    store = open_store(url)
    store.create_experiment(make_experiment("rule", load_space("smoke"), max_evals=3, selection="min-loss"))
    for tid, (accuracy, loss) in enumerate([(0.9, 0.5), (0.8, 0.3), (0.95, 0.4)]):
        store.insert_trial(Trial.new("rule", tid, {}, {}, owner="w"))
        epochs = (EpochReport(1, validation_accuracy=accuracy, validation_loss=loss),)
        store.finish("rule", tid, "w", DONE, TrainResult("ok", epochs, best_epoch=1, selection="min-loss"))
    done = finished(trials_frame(store, ["rule"])[0])
    assert list(done["tid"]) == [1, 2, 0] == [row["tid"] for row in report.best_trials(store, "rule")]

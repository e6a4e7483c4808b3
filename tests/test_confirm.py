"""`larnn confirm`: a search's best configurations trained again over shared seeds, as the trials
of a confirmation experiment that ordinary workers run, reported with intervals and paired
differences, and shown beside the search's numbers by `larnn best`."""

import dataclasses
import json
import math
import statistics
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from larnn_core import cli
from larnn_core.hparams import HParams
from larnn_core.records import EpochReport, TrainResult
from tests.support.results import result_with
from workers import confirm
from workers.experiment import submit
from workers.history import History
from workers.records import DONE, NEW, Trial
from workers.store import open_store
from workers.suggest import hyperparameters, suggest, trial_seed
from workers.worker import Worker


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'store.db'}"


def searched(store, name="s", n=6, space="smoke"):
    """A finished search: trial t's validation accuracy 0.5 + 0.05 t (trial 5 best)."""
    experiment = submit(store, name, space, max_evals=n, algorithm="rand", seed=3)
    for tid in range(n):
        idxs, vals = suggest(experiment, History.of(experiment, store.trials(name)), tid)
        point = hyperparameters(experiment, Trial(name, tid, idxs, vals))
        result = dataclasses.replace(
            result_with([0.5 + 0.05 * tid], test_accuracy=0.4 + 0.05 * tid), extra={"space": point}
        )
        store.insert_trial(Trial(name, tid, idxs, vals, DONE, result=result))
    return experiment


def seeded_objective(seen: list):
    """Accuracy from the configuration's learning rate plus a shift shared by every configuration
    trained with the same seed (what pairing cancels) and a small one of its own."""

    def objective(point, settings, seed, device, on_epoch):
        shared = np.random.default_rng(seed).uniform(0, 0.1)
        configuration = int(point["learning_rate"] * 1e9) * 2 + (point["model"] == "lstm")
        own = np.random.default_rng([seed, configuration]).uniform(0, 0.002)
        accuracy = 0.5 + 10 * point["learning_rate"] + shared + own
        seen.append((seed, point))
        on_epoch(EpochReport(1, validation_accuracy=accuracy, test_accuracy=accuracy - 0.01))
        return TrainResult("ok", (EpochReport(1, validation_accuracy=accuracy, test_accuracy=accuracy - 0.01),), 1)

    return objective


def test_a_confirmation_trains_the_top_configurations_and_the_lstm_on_shared_seeds(tmp_path, url):
    store = open_store(url)
    search = searched(store, space="paper-round2")  # its points leave `model` out (at its default)
    experiment = confirm.make_confirmation(store, "s", top=2, seeds=3, baseline="lstm")
    assert experiment.name == "s-confirm" and experiment.max_evals == 9 and experiment.pruner.kind == "none"
    assert [c["tid"] for c in experiment.confirms["configurations"]] == [5, 4, None]
    queued = store.trials("s-confirm")
    assert [t.state for t in queued] == [NEW] * 9
    best, second = (HParams.from_dict(store.trials("s", tids=[tid])[0].point).to_dict() for tid in (5, 4))
    points = [hyperparameters(experiment, t) for t in queued]
    assert points[:3] == [best] * 3 and points[3:6] == [second] * 3 and best["model"] == "larnn"
    assert points[6:] == [{**best, "model": "lstm"}] * 3
    seeds = [trial_seed(experiment, t.tid) for t in queued]
    assert seeds[:3] == seeds[3:6] == seeds[6:] and len(set(seeds[:3])) == 3  # paired: seed j for every one
    assert not set(seeds) & {trial_seed(search, tid) for tid in range(6)}  # new seeds

    seen = []
    Worker(store, seeded_objective(seen), poll_s=0.01, idle_exit_s=0.0, spool=tmp_path / "spool").run()
    assert sorted(seed for seed, _ in seen) == sorted(seeds)
    report = confirm.confirmation_report(store, "s-confirm")
    rows = report["configurations"]
    assert sorted(r["configuration"] for r in rows) == ["lstm (trial 5's size)", "trial 4", "trial 5"]
    for row in rows:
        index = [c["label"] for c in experiment.confirms["configurations"]].index(row["configuration"])
        values = [t.result.chosen.validation_accuracy for t in store.trials("s-confirm") if t.tid // 3 == index]
        half = stats.t.ppf(0.975, 2) * statistics.stdev(values) / math.sqrt(3)
        got = row["validation_accuracy"]
        assert row["done"] == 3 and got["mean"] == pytest.approx(statistics.fmean(values))
        assert (got["low"], got["high"]) == pytest.approx((got["mean"] - half, got["mean"] + half))
    means = [r["validation_accuracy"]["mean"] for r in rows]
    assert means == sorted(means, reverse=True)  # re-ranked
    for row in rows[1:]:
        paired = row["difference_with_first"]["validation_accuracy"]
        unpaired = row["validation_accuracy"]["high"] - row["validation_accuracy"]["low"]
        # the shared shift cancels: the paired interval is far narrower than either mean's
        assert paired["n"] == 3 and paired["high"] - paired["low"] < unpaired / 5
        assert paired["mean"] == pytest.approx(row["validation_accuracy"]["mean"] - means[0])
    text = confirm.format_report(report)
    assert "paired differences with" in text and "95% interval" in text
    assert max(map(len, text.splitlines())) <= 100 and "that the seeds can tell" not in text  # pairing works
    assert json.loads(confirm.format_report(report, "json"))["configurations"][0]["done"] == 3


def test_larnn_best_shows_the_confirmed_figures_beside_the_searchs(tmp_path, url, capsys):
    store = open_store(url)
    searched(store)
    confirm.make_confirmation(store, "s", top=2, seeds=2)
    Worker(store, seeded_objective([]), poll_s=0.01, idle_exit_s=0.0, spool=tmp_path / "spool").run()
    assert cli.main(["best", "s", "--store", url, "--format", "json", "--top", "3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["tid"] for r in rows] == [5, 4, 3]
    assert rows[0]["confirmation"]["validation_accuracy"]["n"] == 2 and rows[2]["confirmed_validation"] is None
    assert rows[0]["confirmed_validation"].startswith(f"{rows[0]['confirmation']['validation_accuracy']['mean']:.4f} [")
    assert cli.main(["best", "s", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "confirmed by s-confirm" in out and rows[0]["confirmed_validation"] in out
    assert max(map(len, out.splitlines())) <= 100  # the confirmed figures in a table of their own


def test_the_html_report_shows_the_confirmed_configurations_beside_the_searchs_numbers(tmp_path, url):
    store = open_store(url)
    searched(store)
    confirm.make_confirmation(store, "s", top=2, seeds=2, baseline="lstm")
    Worker(store, seeded_objective([]), poll_s=0.01, idle_exit_s=0.0, spool=tmp_path / "spool").run()
    assert cli.main(["plot", "s", "--out", str(tmp_path / "plots"), "--store", url]) == 0
    page = (tmp_path / "plots" / "index.html").read_text()
    section = page[page.index("<h2>Confirmed configurations: s</h2>") :].split("<h2>")[1]
    report = confirm.confirmation_report(store, "s-confirm")
    for row in report["configurations"]:
        assert f"<td>{row['configuration']}</td>" in section.replace("&#x27;", "'")
        assert confirm.span(row["validation_accuracy"]) in section
    assert "<td>0.7500</td>" in section  # trial 5's single training, beside its confirmation
    assert "difference with the first" in section
    assert "s: too few or too noisy trials to rank (cross-validated R² needs 10 trials" in page  # 6 trials


def test_the_command_registers_once_reports_later_and_refuses_bad_input_naming_it(tmp_path, url, capsys):
    store = open_store(url)
    searched(store)
    submit(store, "empty", "smoke", max_evals=2)
    refusals = [
        (["confirm", "missing"], "no experiment named 'missing'"),
        (["confirm", "s", "--seeds", "1"], "--seeds must be at least 2"),
        (["confirm", "s", "--top", "0"], "--top: must be at least 1"),
        (["confirm", "s", "--baseline", "gru"], "--baseline: invalid choice"),
        (["confirm", "s", "--epochs", "0"], "--epochs: must be at least 1"),
        (["confirm", "empty"], "'empty' has no finished trial to confirm yet"),
        (["confirm", "s", "--name", "empty"], "'empty' exists and does not confirm 's'"),
        (["confirm", "s", "--name", "bad name"], "experiment name 'bad name' must be"),
    ]
    for argv, message in refusals:
        try:
            code = cli.main([*argv, "--store", url, "--workers", "0"])
        except SystemExit as exit:  # argparse's own refusals
            code = exit.code
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert sorted(e.name for e in store.experiments()) == ["empty", "s"]  # nothing written
    assert cli.main(["confirm", "s", "--top", "2", "--seeds", "2", "--store", url, "--workers", "0"]) == 0
    out, err = capsys.readouterr()
    assert "larnn worker" in err and "--experiment s-confirm" in err and "0/2" in out
    Worker(store, seeded_objective([]), poll_s=0.01, idle_exit_s=0.0, spool=tmp_path / "spool").run()
    assert cli.main(["confirm", "s", "--store", url, "--workers", "0", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["done"] for r in report["configurations"]] == [2, 2] and len(store.trials("s-confirm")) == 4


def test_local_workers_that_all_exit_are_reported_in_one_line(tmp_path, url, capsys, monkeypatch):
    """What `larnn search` and `larnn confirm` say when every worker they started has exited
    before the experiment finished (it was a traceback)."""
    from workers import commands

    store = open_store(url)
    searched(store)
    popen = subprocess.Popen
    monkeypatch.setattr(commands.har, "load", lambda source: None)
    monkeypatch.setattr(
        commands.subprocess, "Popen", lambda command, **kw: popen([sys.executable, "-c", "raise SystemExit(1)"], **kw)
    )
    argv = ["confirm", "s", "--top", "1", "--seeds", "2", "--device", "cpu", "--logs", str(tmp_path / "logs")]
    assert cli.main([*argv, "--store", url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "every worker exited before the experiment finished" in err[-1] and "Traceback" not in "\n".join(err)


@pytest.mark.slow
def test_larnn_confirm_trains_for_real_on_the_offline_data(tmp_path, isolated_data_dir, monkeypatch, capsys):
    """The best configuration of a real (tiny) search and its LSTM, 2 seeds each, one epoch, local workers."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'larnn.db'}"
    search = ["search", "smoke", "--name", "tiny", "--max-evals", "2", "--epochs", "1", "--workers", "2"]
    assert cli.main([*search, "--store", url]) == 0
    capsys.readouterr()
    argv = ["confirm", "tiny", "--top", "1", "--seeds", "2", "--baseline", "lstm", "--workers", "2", "--format", "json"]
    assert cli.main([*argv, "--store", url]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["done"] for r in report["configurations"]] == [2, 2]
    assert all(np.isfinite(r["test_accuracy"]["low"]) for r in report["configurations"])
    assert any(r["tid"] is None for r in report["configurations"])  # the LSTM baseline

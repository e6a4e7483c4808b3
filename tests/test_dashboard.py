"""`larnn dashboard`: the store as optuna-dashboard studies, read-only, live in a real browser."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from analysis.dashboard import TRIAL_IDS, ReadOnly, StoreStudies
from larnn_core.records import EpochReport, TrainResult
from search_spaces import load_space
from tests.support.browser import headless, needs_chromium
from tests.support.searches import add_synthetic_experiment
from workers.records import ERROR, PRUNED, Trial
from workers.store import open_store

ROOT = Path(__file__).resolve().parents[1]


def fixture_store(url: str) -> None:
    """Two finished experiments, a running trial with two epochs and a pruned one in the second."""
    store = open_store(url)
    add_synthetic_experiment(store, "round-a", n=12)
    add_synthetic_experiment(store, "round-b", space="paper-round2", n=10, seed=1)
    space = load_space("paper-round2")
    for tid, owner, seed in ((11, "gpu-7", 5), (12, "gpu-8", 6)):
        point = space.sample(np.random.default_rng(seed))
        store.insert_trial(Trial.new("round-b", tid, *space.trial_misc(point, tid), owner=owner))
        for epoch in (1, 2):
            store.report_epoch("round-b", tid, owner, EpochReport(epoch, validation_accuracy=0.5 + 0.1 * epoch))
    store.finish(
        "round-b",
        12,
        "gpu-8",
        PRUNED,
        TrainResult.from_document(
            {"status": "ok", "loss": -0.7, "best_validation_accuracy": 0.7, "pruned_at_epoch": 2, "space": point}
        ),
    )


def test_experiments_are_studies_and_trials_keep_their_state_curve_and_distributions(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    fixture_store(url)
    studies = StoreStudies(open_store(url))
    assert [s.study_name for s in studies.get_all_studies()] == ["round-a", "round-b"]
    assert studies.get_all_studies()[1].system_attrs == {"study:metric_names": ["validation accuracy"]}
    study = studies.get_study_id_from_name("round-b")
    assert studies.get_study_system_attrs(study) == {"study:metric_names": ["validation accuracy"]}
    trials = studies.get_all_trials(study)
    assert [t.number for t in trials] == list(range(13))
    assert [t.state for t in trials[9:]] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.RUNNING,
        TrialState.PRUNED,
    ]
    running, pruned = trials[11], trials[12]
    assert running.intermediate_values == {1: 0.6, 2: 0.7} and running.value is None
    assert pruned.user_attrs["pruned_at_epoch"] == 2
    done = open_store(url).trials("round-b")[0]
    assert trials[0].value == done.result.chosen.validation_accuracy
    assert trials[0].intermediate_values == {e.epoch: e.validation_accuracy for e in done.result.epochs}
    assert running.distributions["learning_rate"] == FloatDistribution(
        running.distributions["learning_rate"].low, running.distributions["learning_rate"].high, log=True
    )
    assert running.distributions["larnn_mode"] == CategoricalDistribution(["residual", "layer"])
    assert "batch_size" not in running.distributions  # fixed by the space
    for trial in trials:
        for name, value in trial.params.items():
            assert trial.distributions[name]._contains(trial.distributions[name].to_internal_repr(value)), name
    assert studies.get_trial(study * TRIAL_IDS + 11).intermediate_values == {1: 0.6, 2: 0.7}


def test_the_dashboard_never_writes_to_the_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    fixture_store(url)
    studies = StoreStudies(open_store(url))
    before = [json.dumps(open_store(url).trials(n), sort_keys=True, default=str) for n in ("round-a", "round-b")]
    writes = [
        ("create_new_study", ([],)),
        ("delete_study", (0,)),
        ("set_study_user_attr", (0, "k", 1)),
        ("set_study_system_attr", (0, "k", 1)),
        ("create_new_trial", (0,)),
        ("set_trial_state_values", (11, TrialState.COMPLETE)),
        ("set_trial_intermediate_value", (11, 3, 0.9)),
        ("set_trial_user_attr", (11, "k", 1)),
        ("set_trial_system_attr", (11, "k", 1)),
    ]
    for method, args in writes:
        with pytest.raises(ReadOnly):
            getattr(studies, method)(*args)
    assert before == [
        json.dumps(open_store(url).trials(n), sort_keys=True, default=str) for n in ("round-a", "round-b")
    ]


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("DELETE", "/api/studies/1", b""),
        ("PUT", "/api/studies/1/note", b'{"version": 1, "body": "a note"}'),
        ("POST", "/api/trials/{trial}/tell", b'{"state": "Fail"}'),
        ("POST", "/api/studies/1/rename", b'{"study_name": "renamed"}'),
    ],
)
def test_each_write_button_answers_that_the_page_is_read_only(tmp_path, method, path, body):
    """optuna-dashboard's API hands the page a refusal's text: the page says why, not 'internal
    server error' (rename catches every error itself: it answers its own failure, and writes nothing)."""
    import io
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard._app import create_app

    from analysis.dashboard import READ_ONLY

    url = f"sqlite:///{tmp_path / 'd.db'}"
    fixture_store(url)
    before = json.dumps(open_store(url).trials("round-b"), sort_keys=True, default=str)
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path.format(trial=1 * TRIAL_IDS + 11),
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    setup_testing_defaults(environ)
    status = []
    answer = b"".join(create_app(StoreStudies(open_store(url)))(environ, lambda s, h, e=None: status.append(s)))
    if path.endswith("rename"):
        assert status[0].startswith("500") and b"read-only" not in answer
    else:
        assert status[0].startswith("403") and json.loads(answer)["reason"] == READ_ONLY
    assert json.dumps(open_store(url).trials("round-b"), sort_keys=True, default=str) == before


def test_pruned_trials_keep_their_value_failed_ones_their_reason_and_the_notice_comes_first(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    fixture_store(url)
    store = open_store(url)
    store.insert_trial(Trial.new("round-b", 13, {}, {}, owner="gpu-9"))
    store.finish("round-b", 13, "gpu-9", ERROR, TrainResult("fail", error="loss became nan at epoch 3"))
    studies = StoreStudies(store)
    study = studies.get_study_id_from_name("round-b")
    trials = {t.number: t for t in studies.get_all_trials(study)}
    assert trials[12].state == TrialState.PRUNED and trials[12].value == 0.7  # epoch 2's, where it stopped
    assert trials[13].state == TrialState.FAIL and trials[13].user_attrs["error"] == "loss became nan at epoch 3"
    assert next(iter(studies.get_study_user_attrs(study))) == "this page"


def get(application, path: str) -> tuple[str, dict]:
    from wsgiref.util import setup_testing_defaults

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path}
    setup_testing_defaults(environ)
    status = []
    answer = b"".join(application(environ, lambda s, h, e=None: status.append(s)))
    return status[0], json.loads(answer)


def test_the_importance_panel_ranks_as_the_report_and_stays_empty_where_the_report_refuses(tmp_path):
    from analysis.dashboard import app
    from analysis.frame import finished, trials_frame
    from analysis.importance import importance_by_experiment

    url = f"sqlite:///{tmp_path / 'd.db'}"
    store = open_store(url)
    add_synthetic_experiment(store, "planted", n=40, seed=0)  # accuracy driven by learning_rate
    add_synthetic_experiment(store, "noise", n=40, seed=7, accuracy=lambda point, rng: rng.uniform(0.6, 0.9))
    application, studies = app(store), StoreStudies(store)
    listed = {s.study_name: s.user_attrs["importance"] for s in studies.get_all_studies()}
    assert listed["planted"].startswith("being computed")  # the list never waits for a forest
    frame, hyperparameters = trials_frame(store, ["planted"])
    done = finished(frame)
    report = importance_by_experiment(done, [h for h in hyperparameters if h in done])
    status, answer = get(application, f"/api/studies/{studies.get_study_id_from_name('planted')}/param_importances")
    (bars,) = answer["param_importances"]
    assert status.startswith("200") and bars[0]["name"] == "learning_rate"
    reads, read = [], store.trials
    store.trials = lambda *args, **kwargs: reads.append(args) or read(*args, **kwargs)
    path = f"/api/studies/{studies.get_study_id_from_name('planted')}/param_importances"
    assert get(application, path)[1] == answer and reads == []  # the page polls: nothing new, nothing read
    store.trials = read
    params = {name for t in studies.get_all_trials(studies.get_study_id_from_name("planted")) for name in t.params}
    assert [(b["name"], round(b["importance"], 9)) for b in bars] == [
        (row.hyperparameter, round(row.mean, 9)) for row in report.itertuples() if row.hyperparameter in params
    ]  # the same order and numbers; a bar only for what the page knows as a parameter (not a fixed one)
    assert "cross-validated R²" in studies.get_study_user_attrs(studies.get_study_id_from_name("planted"))["importance"]
    noise = studies.get_study_id_from_name("noise")
    assert get(application, f"/api/studies/{noise}/param_importances")[1] == {"param_importances": [[]]}
    note = studies.get_study_user_attrs(noise)["importance"]
    assert note.startswith("noise: too few or too noisy trials to rank") and "panel stays empty" in note
    assert list(studies.get_study_user_attrs(noise))[:2] == ["this page", "importance"]


def test_an_unordered_import_gets_no_times_and_says_its_numbers_are_no_history(tmp_path):
    from analysis.import2018 import import_results
    from tests.support.searches import result_2018

    paths = []
    for i, acc in enumerate([0.95, 0.93, 0.91, 0.89]):  # written at once, in name (accuracy) order
        paths.append(tmp_path / f"model_{acc}_{i}.txt.json")
        paths[-1].write_text(json.dumps(result_2018(0.004 + 0.0005 * i, acc)))
    store = open_store(f"sqlite:///{tmp_path / 'd.db'}")
    import_results(store, "cloned", paths)
    assert store.get_experiment("cloned").trial_order == "unordered"
    studies = StoreStudies(store)
    study = studies.get_study_id_from_name("cloned")
    trials = studies.get_all_trials(study)
    assert len(trials) == 4 and all(t.datetime_start is None and t.datetime_complete is None for t in trials)
    order = studies.get_study_user_attrs(study)["trial order"]
    assert order.startswith("unordered") and "the History panel's line is no history" in order


def test_imported_experiments_are_labelled_test_picked(tmp_path):
    from analysis.import2018 import import_results
    from tests.support.searches import result_2018

    paths = []
    for i, (lr, acc) in enumerate([(0.005, 0.8), (0.007, 0.85)]):
        paths.append(tmp_path / f"model_{acc}_{i}.txt.json")
        paths[-1].write_text(json.dumps(result_2018(lr, acc)))
    store = open_store(f"sqlite:///{tmp_path / 'd.db'}")
    import_results(store, "paper-2018", paths)
    studies = StoreStudies(store)
    study = studies.get_study_id_from_name("paper-2018")
    assert studies.get_study_system_attrs(study)["study:metric_names"][0].startswith("test-picked")
    assert studies.get_study_user_attrs(study)["protocol"].startswith("test-picked")
    assert {t.state for t in studies.get_all_trials(study)} == {TrialState.COMPLETE}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dashboard(tmp_path):
    """`larnn dashboard` on a fixture store, as a user starts it: (store URL, base URL)."""
    url = f"sqlite:///{tmp_path / 'd.db'}"
    fixture_store(url)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "larnn_core.cli", "dashboard", "--store", url, "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = server.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in banner, banner  # loopback unless the user says otherwise
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        yield url, f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@needs_chromium
def test_dashboard_in_a_real_browser_shows_experiments_and_a_curve_that_grows_without_reload(dashboard, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    url, base = dashboard
    with headless(1400, 1000) as browser:
        browser.get(f"{base}/dashboard")
        WebDriverWait(browser, 30).until(lambda b: "round-b" in b.find_element("tag name", "body").text)
        assert "round-a" in browser.find_element("tag name", "body").text
        study = StoreStudies(open_store(url)).get_study_id_from_name("round-b")
        browser.get(f"{base}/dashboard/studies/{study}")
        curve = (
            "return (document.getElementById('graph-intermediate-values')?.data || [])"
            ".filter(t => t.name.startsWith('trial #11 ')).map(t => Array.from(t.y))[0] || null"
        )
        assert WebDriverWait(browser, 30).until(lambda b: b.execute_script(curve)) == [0.6, 0.7]
        browser.save_screenshot(str(tmp_path / "dashboard.png"))
        text = browser.find_element("tag name", "body").text
        assert "read-only: larnn dashboard never writes to the trial store" in text, text[:2000]
        # the pruned trial #12 is drawn in the History panel at its value where it stopped (0.7)
        history = (
            "return (document.getElementById('plot-history')?.data || [])"
            ".flatMap(t => Array.from(t.x || []).map((x, i) => [x, (t.y || [])[i]]))"
        )
        assert [12, 0.7] in WebDriverWait(browser, 30).until(lambda b: b.execute_script(history))
        # the importance panel's request computes the ranking; the next poll says how sure it is
        assert WebDriverWait(browser, 60, poll_frequency=1).until(
            lambda b: (
                "too few or too noisy trials to rank" in b.find_element("tag name", "body").text
                or "cross-validated R² 0" in b.find_element("tag name", "body").text
            )
        )
        open_store(url).report_epoch("round-b", 11, "gpu-7", EpochReport(3, validation_accuracy=0.8))
        assert WebDriverWait(browser, 60, poll_frequency=1).until(
            lambda b: (b.execute_script(curve) or [])[2:] == [0.8] and b.execute_script(curve)
        )  # no reload
        origins = browser.execute_script("return performance.getEntriesByType('resource').map(r => r.name)")
        assert origins and all(o.startswith(base) for o in origins), origins  # offline: nothing from a CDN
    store = open_store(url)
    assert store.trials("round-b")[11].curve[-1].epoch == 3 and store.counts("round-b")["running"] == 1
    assert os.path.getsize(tmp_path / "dashboard.png") > 10_000

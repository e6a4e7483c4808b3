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
from analysis.import2018 import import_results
from larnn_core.records import EpochReport, TrainResult
from search_spaces import load_space
from tests.support.browser import headless, needs_chromium
from tests.support.searches import add_synthetic_experiment, result_2018
from workers.records import ERROR, PRUNED, Trial
from workers.store import open_store

ROOT = Path(__file__).resolve().parents[1]


def write_2018_files(folder: Path, accuracies: list[float]) -> list[Path]:
    """2018 result files written at once, named (as the 2018 code named them) by their accuracy."""
    paths = []
    for i, accuracy in enumerate(accuracies):
        paths.append(folder / f"model_{accuracy}_{i}.txt.json")
        paths[-1].write_text(json.dumps(result_2018(0.004 + 0.0005 * i, accuracy)))
    return paths


def fixture_store(url: str, folder: Path) -> None:
    """Two finished experiments, a running trial with two epochs and a pruned one in the second; an
    unordered 2018 import."""
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
    import_results(store, "cloned-2018", write_2018_files(folder, [0.85, 0.88, 0.9, 0.93]))


def request(application, method: str, path: str, body: bytes = b"") -> tuple[str, dict[str, str], bytes]:
    """One HTTP request to a WSGI application, as the page makes it: (status, headers, body)."""
    import io
    from wsgiref.util import setup_testing_defaults

    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    setup_testing_defaults(environ)
    started = []
    answer = b"".join(application(environ, lambda status, headers, exc=None: started.append((status, headers))))
    return started[0][0], dict(started[0][1]), answer


def test_experiments_are_studies_and_trials_keep_their_state_curve_and_distributions(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    fixture_store(url, tmp_path)
    studies = StoreStudies(open_store(url))
    assert [s.study_name for s in studies.get_all_studies()] == ["round-a", "round-b", "cloned-2018"]
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
    fixture_store(url, tmp_path)
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
    from analysis.dashboard import READ_ONLY, app

    url = f"sqlite:///{tmp_path / 'd.db'}"
    fixture_store(url, tmp_path)
    before = json.dumps(open_store(url).trials("round-b"), sort_keys=True, default=str)
    status, _, answer = request(app(open_store(url)), method, path.format(trial=1 * TRIAL_IDS + 11), body)
    if path.endswith("rename"):
        assert status.startswith("500") and b"read-only" not in answer
    else:
        assert status.startswith("403") and json.loads(answer)["reason"] == READ_ONLY
    assert json.dumps(open_store(url).trials("round-b"), sort_keys=True, default=str) == before


def test_pruned_trials_keep_their_value_failed_ones_their_reason_and_the_notice_comes_first(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    fixture_store(url, tmp_path)
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
    store = open_store(f"sqlite:///{tmp_path / 'd.db'}")
    import_results(store, "cloned", write_2018_files(tmp_path, [0.95, 0.93, 0.91, 0.89]))
    assert store.get_experiment("cloned").trial_order == "unordered"
    studies = StoreStudies(store)
    study = studies.get_study_id_from_name("cloned")
    trials = studies.get_all_trials(study)
    assert len(trials) == 4 and all(t.datetime_start is None and t.datetime_complete is None for t in trials)
    order = studies.get_study_user_attrs(study)["trial order"]
    assert order.startswith("unordered") and "follow file names" in order
    notes = studies.page_notes()[str(study)]  # what the page's script shows instead of the History panel
    assert notes["objective"].startswith("test-picked") and "follow file names" in notes["no_history"]


def test_the_page_gets_our_script_under_optuna_dashboards_content_security_policy(tmp_path):
    """The page is optuna-dashboard's with one script tag more, from this server (its policy
    allows no other), and the script's JSON answers by study id."""
    from analysis.dashboard import NOTES_ROUTE, SCRIPT_ROUTE, app

    store = open_store(f"sqlite:///{tmp_path / 'd.db'}")
    add_synthetic_experiment(store, "round-a", n=6)
    application = app(store)
    status, headers, page = request(application, "GET", "/dashboard/studies/0")
    assert status.startswith("200") and f'<script defer src="{SCRIPT_ROUTE}"></script></head>'.encode() in page
    assert "script-src 'self'" in headers["Content-Security-Policy"] and b"/static/bundle.js" in page
    assert b"MutationObserver" in request(application, "GET", SCRIPT_ROUTE)[2]
    assert json.loads(request(application, "GET", NOTES_ROUTE)[2]) == {
        "0": {
            "name": "round-a",
            "objective": "validation accuracy",
            "no_history": None,
            "importance": "being computed for the Hyperparameter Importance panel (this line updates by itself)",
        }
    }


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
    fixture_store(url, tmp_path)
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
        # the study list names each study's objective under its name
        labels = "return [...document.querySelectorAll('[data-larnn=\"objective\"]')].map(e => e.textContent)"
        assert sorted(WebDriverWait(browser, 30).until(lambda b: b.execute_script(labels))) == [
            "objective: test-picked accuracy (2018: best test epoch)",
            "objective: validation accuracy",
            "objective: validation accuracy",
        ]
        browser.save_screenshot(str(tmp_path / "studies.png"))
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
        assert browser.find_element("id", "plot-history").is_displayed()  # a search's numbers are its history
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
        importance = browser.find_element("css selector", '[data-larnn="importance"]')
        assert importance.is_displayed() and importance.text.startswith("Importance: ") and "R²" in importance.text
        origins = browser.execute_script("return performance.getEntriesByType('resource').map(r => r.name)")
        assert origins and all(o.startswith(base) for o in origins), origins  # offline: nothing from a CDN
        # an unordered import: a sentence in the History panel's place, no panel
        browser.get(f"{base}/dashboard/studies/{StoreStudies(open_store(url)).get_study_id_from_name('cloned-2018')}")
        note = WebDriverWait(browser, 30).until(lambda b: b.find_elements("css selector", '[data-larnn="no-history"]'))[
            0
        ]
        assert note.is_displayed() and note.text.startswith("History: not drawn.") and "file names" in note.text
        assert not browser.find_element("id", "plot-history").is_displayed()
        browser.save_screenshot(str(tmp_path / "unordered.png"))
    store = open_store(url)
    assert store.trials("round-b")[11].curve[-1].epoch == 3 and store.counts("round-b")["running"] == 1
    assert os.path.getsize(tmp_path / "dashboard.png") > 10_000

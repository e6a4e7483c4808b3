"""workers/tpe.py and workers/history.py: TPE on a worker's arrays suggests exactly what
hyperopt.tpe.suggest suggests from documents, whatever the space, the history and the seed."""

import dataclasses

import numpy as np
import pytest
from hyperopt import Domain, Trials, hp, rand
from hyperopt import tpe as hyperopt_tpe

from larnn_core.records import FAIL, TrainResult
from search_spaces import load_space
from tests.support.results import result_with
from workers import tpe
from workers.experiment import WARM_TIDS, make_experiment
from workers.history import History
from workers.records import DONE, ERROR, NEW, PRUNED, RUNNING, Trial
from workers.suggest import suggest, trial_seed

EVERY_KIND = {  # each of hyperopt's distributions, a conditional branch among them
    "u": hp.uniform("u", -1, 1),
    "qu": hp.quniform("qu", 2, 40, 1),
    "lu": hp.loguniform("lu", -5, 0),
    "qlu": hp.qloguniform("qlu", 0, 4, 2),
    "n": hp.normal("n", 0, 1),
    "qn": hp.qnormal("qn", 10, 4, 1),
    "ln": hp.lognormal("ln", 0, 1),
    "qln": hp.qlognormal("qln", 1, 1, 1),
    "ri": hp.randint("ri", 3, 9),
    "branch": hp.choice("branch", [{"kind": "a", "qa": hp.quniform("qa", 0, 10, 1)}, {"kind": "b"}]),
}


def documents(domain: Domain, n: int, seed: int) -> list[dict]:
    """n trials drawn at random: most done with a loss, some running, queued or failed (hyperopt
    leaves failed ones out), a few tied losses."""
    rng = np.random.default_rng(seed)
    docs = rand.suggest(list(range(n)), domain, Trials(), seed)
    for doc in docs:
        state = rng.choice([DONE] * 6 + [RUNNING, NEW, ERROR])
        doc["state"] = int(state)
        if state == DONE:
            doc["result"] = {"status": "ok", "loss": float(np.round(rng.normal(), 1 if rng.random() < 0.2 else 6))}
    return docs


def hyperopts_choice(domain: Domain, docs: list[dict], tid: int, seed: int) -> tuple[dict, dict]:
    trials = Trials()
    trials.insert_trial_docs(docs)
    trials.refresh()
    (doc,) = hyperopt_tpe.suggest([tid], domain, trials, seed)
    return doc["misc"]["idxs"], doc["misc"]["vals"]


def as_arrays(domain: Domain, docs: list[dict]):
    """What tpe.suggest gathers from its documents, as Posterior.suggest takes it."""
    kept = sorted((d for d in docs if d["state"] in (NEW, RUNNING, DONE)), key=lambda d: d["tid"])
    tids = np.array([d["tid"] for d in kept])
    losses = np.array([d["result"].get("loss", np.inf) for d in kept], dtype=float)
    observed = {
        label: (
            np.array([d["tid"] for d in kept if d["misc"]["idxs"][label]], dtype=np.int64),
            np.array([d["misc"]["vals"][label][0] for d in kept if d["misc"]["idxs"][label]]),
        )
        for label in domain.params
    }
    return tids, losses, observed


@pytest.mark.parametrize("n", [25, 80, 500])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_posterior_suggests_what_hyperopt_does_for_every_kind_of_hyperparameter(n, seed):
    domain = Domain(lambda point: 0.0, EVERY_KIND)
    docs = documents(domain, n, seed)
    posterior = tpe.Posterior(domain)
    for tid in (n, n + 7):  # one graph, used twice
        idxs, vals = posterior.suggest(tid, seed * 31 + tid, *as_arrays(domain, docs))
        assert (idxs, vals) == hyperopts_choice(domain, docs, tid, seed * 31 + tid)


def test_the_vectorised_functions_return_hyperopts_floats_to_the_bit():
    rng = np.random.default_rng(5)
    weights = rng.dirichlet(np.ones(300))
    mus, sigmas = rng.normal(20, 5, 300), rng.uniform(0.5, 4, 300)
    samples = np.round(rng.uniform(5, 35, 24))  # quantized candidates repeat
    for low, high in ((None, None), (5.0, 35.0)):
        assert np.array_equal(
            tpe.larnn_GMM1_lpdf(samples, weights, mus, sigmas, low, high, 1.0),
            hyperopt_tpe.GMM1_lpdf(samples, weights, mus, sigmas, low, high, 1.0),
        )
        log_mus = np.log(np.abs(mus))
        assert np.array_equal(
            tpe.larnn_LGMM1_lpdf(samples, weights, log_mus, sigmas / 10, low and 1.0, high and 4.0, 2.0),
            hyperopt_tpe.LGMM1_lpdf(samples, weights, log_mus, sigmas / 10, low and 1.0, high and 4.0, 2.0),
        )
    losses = np.round(rng.normal(size=400), 1)  # ties
    o_idxs = np.sort(rng.choice(400, 300, replace=False))
    ours = tpe.larnn_ap_split_trials(o_idxs, o_idxs * 0.5, np.arange(400), losses, 0.25)
    theirs = hyperopt_tpe.ap_split_trials(list(o_idxs), list(o_idxs * 0.5), np.arange(400), losses, 0.25)
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))


def service_trials(space: str, n: int, seed: int) -> tuple[list[Trial], list[dict]]:
    """Trials of the service (done, pruned, running, failed) at random points of a built-in space,
    and the documents hyperopt would read of them (a pruned trial as done)."""
    experiment = make_experiment("h", load_space(space), algorithm="rand", seed=seed)
    rng = np.random.default_rng(seed)
    trials, docs = [], []
    for tid in range(n):
        idxs, vals = suggest(experiment, History.of(experiment, trials), tid)
        state = int(rng.choice([DONE, DONE, DONE, PRUNED, RUNNING, ERROR]))
        trial = Trial.new("h", tid, idxs, vals, owner="w")
        if state in (DONE, PRUNED):
            trial = dataclasses.replace(trial, state=state, result=result_with(list(rng.uniform(0.3, 0.9, 3))))
        elif state == ERROR:
            trial = dataclasses.replace(trial, state=state, result=TrainResult(FAIL, error="diverged"))
        trials.append(trial)
        result = {"status": trial.result.status, **({"loss": trial.result.loss} if trial.result.loss else {})}
        docs.append(
            {
                "tid": tid,
                "state": DONE if state == PRUNED else state,
                "result": result,
                "misc": {"tid": tid, "cmd": None, "workdir": None, "idxs": idxs, "vals": vals},
                "exp_key": None,
                "owner": None,
                "version": 0,
                "book_time": None,
                "refresh_time": None,
                "spec": None,
            }
        )
    return trials, docs


@pytest.mark.parametrize("space", ["smoke", "paper-round2", "larnn-vs-lstm"])
@pytest.mark.parametrize("seed", [0, 1])
def test_a_worker_suggests_what_hyperopt_would_from_the_same_trials(space, seed):
    trials, docs = service_trials(space, 45, seed)
    experiment = make_experiment("h", load_space(space), seed=seed)
    history = History.of(experiment, trials)
    for tid in (45, 46):
        assert suggest(experiment, history, tid) == hyperopts_choice(
            history.domain, docs, tid, trial_seed(experiment, tid)
        )


def test_a_warm_start_enters_the_arrays_as_done_trials():
    trials, docs = service_trials("smoke", 30, 4)
    warm = [  # five points of the history again, under tids of their own, as experiment.warm_start keeps them
        {
            "source": "old",
            "tid": WARM_TIDS + i,
            "idxs": {label: [WARM_TIDS + i] if ids else [] for label, ids in d["misc"]["idxs"].items()},
            "vals": d["misc"]["vals"],
            "loss": -0.99,
        }
        for i, d in enumerate(docs[:5])
    ]
    experiment = dataclasses.replace(
        make_experiment("h", load_space("smoke"), seed=4), warm_start={"experiments": ["old"], "trials": warm}
    )
    warm_docs = [
        {
            **docs[0],
            "tid": w["tid"],
            "state": DONE,
            "result": {"status": "ok", "loss": -0.99},
            "misc": {"tid": w["tid"], "cmd": None, "workdir": None, "idxs": w["idxs"], "vals": w["vals"]},
        }
        for w in warm
    ]
    history = History.of(experiment, trials)
    assert suggest(experiment, history, 30) == hyperopts_choice(
        history.domain, docs + warm_docs, 30, trial_seed(experiment, 30)
    )

"""`larnn dashboard`: a live web page over the trial store, served by optuna-dashboard, read-only.

optuna-dashboard is the web UI Optuna users already know (study list, counts by state, best
trials, intermediate-value curves, slice, parallel-coordinate and contour plots, importance),
bundled with its scripts, so it works offline. It reads any optuna.storages.BaseStorage, and
StoreStudies is one over our store: each experiment is a study maximising validation accuracy,
each trial a trial (queued: waiting, running, done: complete, failed: fail, pruned), its
reported epochs the intermediate values, the space's hyperparameters its distributions (log where
the space draws them log-uniformly). The page polls, so a running trial's curve grows as epochs
arrive. A pruned trial's value is its curve's at the pruning epoch (Optuna's convention), a failed
trial shows its reason. Every write method raises ReadOnly: the dashboard never writes to the
store. ReadOnly is an HTTP 403 whose text optuna-dashboard's API passes to the page, so a write
button (note, delete, fail trial) answers that the page is read-only; each study's first
attribute says so before anyone presses one.

Importance is the report's (analysis/importance.py), not optuna-dashboard's own PED-ANOVA: the
panel's bars are the report's ranking of the experiment, drawn only where its surrogate predicts
unseen trials, and the study's `importance` attribute gives the cross-validated R² or says why
there is no ranking. Two pages that rank differently would contradict each other.

Two things optuna-dashboard has no setting for are added to its page by a small script of ours
(analysis/dashboard_page.js, served beside it): the study list names each study's objective under
its name, an unordered import's study page says why it has no History panel instead of drawing
one (its best-so-far line would turn the file names' order into a climb), and the importance panel
says how sure its ranking is.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Container
from pathlib import Path
from typing import Any

from bottle import HTTPError, HTTPResponse, static_file
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from analysis.frame import finished, trials_frame
from analysis.importance import METHOD, POOLED, RELIABLE_R2, importance_by_experiment, refusals, reliable
from analysis.plots import AXIS_LABELS, TEST_PICKED_NAME, VALIDATION_NAME
from larnn_core.records import TEST_ACCURACY
from search_spaces import Space
from search_spaces.format import Choice, Fixed, is_log_scaled
from search_spaces.validate import FIELD_TYPES
from workers.experiment import stored_space
from workers.records import DONE, ERROR, NEW, PRUNED, RUNNING, Experiment, Trial
from workers.store import BaseStore

STATES = {
    NEW: TrialState.WAITING,
    RUNNING: TrialState.RUNNING,
    DONE: TrialState.COMPLETE,
    ERROR: TrialState.FAIL,
    PRUNED: TrialState.PRUNED,
}
TRIAL_IDS = 1 << 32  # trial_id = study_id * TRIAL_IDS + tid: unique across studies, below 2^53 for JavaScript
USER_ATTRS = (
    "error",  # why a failed trial failed
    TEST_ACCURACY,
    "best_epoch",
    "protocol",
    "pruned_at_epoch",
    "stopped_at_epoch",
    "worker",
    "wall_time_s",
    "data_source",
    "code_version",
    "device",
)  # result fields shown beside each trial


READ_ONLY = (
    "read-only: larnn dashboard never writes to the trial store (notes, renames, deletes and state changes are refused)"
)


NO_HISTORY = (
    "The result files were written within moments, so trial numbers follow file names (which hold the "
    "accuracy), not the order the trials ran in: a history of best-so-far values would be invented."
)


class ReadOnly(HTTPError):
    """The dashboard asked to write: it never does (HTTP 403, its text shown by the page)."""

    def __init__(self) -> None:
        super().__init__(403, READ_ONLY)


class StoreStudies(BaseStorage):
    """The store's experiments as Optuna studies (read-only)."""

    def __init__(self, store: BaseStore):
        self.store = store
        # experiment -> (finished trials, the report's importance table, the panel's bars)
        self.rankings: dict[str, tuple[int, Any, list[dict[str, Any]]]] = {}

    def importance(self, name: str, compute: bool = True) -> tuple[Any, list[dict[str, Any]]] | None:
        """The report's importance table of one experiment and the panel's bars drawn from it,
        computed again only when its count of finished trials changes (the page polls, and each
        computation reads the experiment's trials); without compute, None unless already computed."""
        count = self.store.counts(name).get("done", 0)
        if self.rankings.get(name, (None,))[0] != count:
            if not compute:
                return None
            frame, hyperparameters = trials_frame(self.store, [name])
            done = finished(frame)
            table = importance_by_experiment(done, [h for h in hyperparameters if h in done])
            self.rankings[name] = (count, table, self._bars(name, table))
        return self.rankings[name][1:]

    def _bars(self, name: str, table) -> list[dict[str, Any]]:
        """optuna-dashboard's importance bars: the reliable ranking within the experiment, for the
        hyperparameters the page knows as parameters."""
        trials = self.get_all_trials(self.get_study_id_from_name(name))
        kinds = {n: d.__class__.__name__ for t in trials for n, d in t.distributions.items()}
        shown = reliable(table)
        return [
            {"name": row.hyperparameter, "importance": float(row.mean), "distribution": kinds[row.hyperparameter]}
            for row in shown[shown["experiment"] != POOLED].itertuples()
            if row.hyperparameter in kinds
        ]

    def importance_note(self, name: str) -> str:
        """How sure the importance panel is. The study list and page read it without computing it:
        the panel's own request computes it, and the page's next poll shows it."""
        computed = self.importance(name, compute=False)
        if computed is None:
            return "being computed for the Hyperparameter Importance panel (this line updates by itself)"
        table, _ = computed
        if table.empty:
            return "no ranking yet: it needs 5 finished trials"
        refused = refusals(table)
        if refused:
            return f"{refused[0]}; the Hyperparameter Importance panel stays empty"
        return f"{METHOD}; cross-validated R² {table['r2'].iloc[0]:.2f} (at least {RELIABLE_R2} to rank)"

    def page_notes(self) -> dict[str, dict[str, Any]]:
        """What analysis/dashboard_page.js adds to the page, by study id: the objective's name for the
        study list, why there is no History panel (None: there is one), how sure the importance
        panel is."""
        return {
            str(i): {
                "name": e.name,
                "objective": objective_name(e),
                "no_history": NO_HISTORY if e.imported and e.trial_order == "unordered" else None,
                "importance": self.importance_note(e.name),
            }
            for i, e in enumerate(self._experiments())
        }

    def param_importances(self, study_id: int) -> dict[str, Any]:
        """optuna-dashboard's importance answer, from the report's ranking (only a reliable one)."""
        _, bars = self.importance(self.get_study_name_from_id(study_id))
        return {"param_importances": [bars]}

    # -- studies: numbered in order of creation, the same for every reader of the store
    def _experiments(self) -> list[Experiment]:
        return sorted(self.store.experiments(), key=lambda e: (e.created or 0, e.name))

    def get_all_studies(self) -> list[FrozenStudy]:
        return [
            FrozenStudy(
                study_name=e.name,
                direction=StudyDirection.MAXIMIZE,
                user_attrs=study_attrs(e, importance=self.importance_note(e.name)),
                system_attrs=system_attrs(e),
                study_id=i,
            )
            for i, e in enumerate(self._experiments())
        ]

    def get_study_id_from_name(self, study_name: str) -> int:
        names = [e.name for e in self._experiments()]
        if study_name not in names:
            raise KeyError(f"no experiment {study_name!r}")
        return names.index(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        experiments = self._experiments()
        if not 0 <= study_id < len(experiments):
            raise KeyError(f"no study {study_id}")
        return experiments[study_id].name

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return [StudyDirection.MAXIMIZE]

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        """The study page's attributes: the list's, and how sure its importance is."""
        name = self.get_study_name_from_id(study_id)
        self.importance(name)
        return study_attrs(self.store.get_experiment(name), importance=self.importance_note(name))

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return system_attrs(self.store.get_experiment(self.get_study_name_from_id(study_id)))

    # -- trials
    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        experiment = self.store.get_experiment(self.get_study_name_from_id(study_id))
        trials = sorted(self.store.trials(experiment.name), key=lambda t: t.tid)
        space = stored_space(experiment) if experiment.space else None  # parsed once per read
        points = [point_of(space, t) for t in trials]
        distributions = distributions_of(space, points)
        timed = experiment.trial_order != "unordered"
        frozen = [frozen_trial(study_id, t, p, distributions, timed) for t, p in zip(trials, points)]
        return [t for t in frozen if states is None or t.state in states]

    def get_trial(self, trial_id: int) -> FrozenTrial:
        study_id, tid = divmod(trial_id, TRIAL_IDS)
        for trial in self.get_all_trials(study_id):
            if trial.number == tid:
                return trial
        raise KeyError(f"no trial {trial_id}")

    # -- writes: refused
    def _refuse(self, *args, **kwargs):
        raise ReadOnly()

    create_new_study = delete_study = set_study_user_attr = set_study_system_attr = _refuse
    create_new_trial = set_trial_param = set_trial_state_values = set_trial_intermediate_value = _refuse
    set_trial_user_attr = set_trial_system_attr = _refuse


def study_attrs(experiment: Experiment, importance: str | None = None) -> dict[str, Any]:
    """What the study page shows of the experiment, the notices first (its table pages)."""
    attrs = {"this page": READ_ONLY}
    if experiment.imported:
        attrs["protocol"] = "test-picked: the 2018 code picked its epoch on the test set"
        attrs["trial order"] = (
            f"unordered: {NO_HISTORY} The Timeline is empty"
            if experiment.trial_order == "unordered"
            else "the result files' times"
        )
    attrs["importance"] = importance
    attrs |= {
        "space": experiment.space_name or (experiment.space or {}).get("name"),
        "algorithm": experiment.algorithm,
        "max_evals": experiment.max_evals,
        "pruner": experiment.pruner.kind,
        "liar": experiment.liar,
        "selection": experiment.objective.selection if not experiment.imported else None,
    }
    for key, ended in (("failure", experiment.failure), ("stopped", experiment.stopped)):
        if ended:
            attrs[key] = ended.get("reason")
    return {key: value for key, value in attrs.items() if value is not None}


def objective_name(experiment: Experiment) -> str:
    """The label the report's axes give the experiment's numbers: test-picked for 2018 imports."""
    return AXIS_LABELS[TEST_PICKED_NAME if experiment.imported else VALIDATION_NAME]


def system_attrs(experiment: Experiment) -> dict[str, Any]:
    """The objective's name, under Optuna's key for it."""
    return {"study:metric_names": [objective_name(experiment)]}


def point_of(space: Space | None, trial: Trial) -> dict[str, Any]:
    """The trial's hyperparameters: from its result once finished, else from its suggestion."""
    if trial.point:
        return trial.point
    if space is not None and any(trial.vals.values()):
        return space.point_of(trial.vals)
    return {}


def distributions_of(space: Space | None, points: list[dict]) -> dict[str, BaseDistribution]:
    """One distribution per hyperparameter that varies: the space's choices as categories, numbers
    over the range the trials cover (log where the space draws them log-uniformly); a hyperparameter
    the space fixes, or that never changes, is left out."""
    nodes = space.hyperparameters() if space is not None else {}
    distributions: dict[str, BaseDistribution] = {}
    for name in dict.fromkeys(key for point in points for key in point):
        values = [point[name] for point in points if name in point]
        given = nodes.get(name, [])
        if all(isinstance(node, Fixed) for node in given) and len({repr(v) for v in values}) < 2:
            continue
        options = [o for node in given if isinstance(node, Choice) for o in node.options]
        if options or any(isinstance(v, (str, bool)) for v in values):
            distributions[name] = CategoricalDistribution(list(dict.fromkeys(options + values)))
            continue
        low, high = min(values), max(values)
        log = any(map(is_log_scaled, given)) and low > 0
        if FIELD_TYPES.get(name) == "int":
            distributions[name] = IntDistribution(int(low), int(high), log=log)
        else:
            distributions[name] = FloatDistribution(float(low), float(high), log=log)
    return distributions


def _time(seconds: float | None) -> datetime.datetime | None:
    return datetime.datetime.fromtimestamp(seconds) if seconds else None


def frozen_trial(
    study_id: int, trial: Trial, point: dict, distributions: dict[str, BaseDistribution], timed: bool = True
) -> FrozenTrial:
    """timed: False for an unordered import, whose file times say nothing of when each trial ran:
    its trials get no times, so the Timeline draws none of them (not all within 2 seconds)."""
    result = trial.result
    state = STATES[trial.state]
    epochs = (
        trial.curve or result.epochs
    )  # live epochs; a result stored without them (imports, older trials): its history
    finished = result.extra.get("finished_at") or (trial.refresh_time if state.is_finished() else None)
    intermediate = {
        e.epoch: float(e.validation_accuracy)
        for e in epochs
        if e.validation_accuracy is not None and math.isfinite(e.validation_accuracy)
    }
    if state == TrialState.PRUNED:  # its value at the pruning epoch, as Optuna gives a pruned trial
        value = intermediate[max(intermediate)] if intermediate else None
    else:
        value = result.chosen.validation_accuracy if state == TrialState.COMPLETE else None
    attrs = {**result.to_document(), TEST_ACCURACY: result.chosen.test_accuracy}
    return FrozenTrial(
        number=trial.tid,
        trial_id=study_id * TRIAL_IDS + trial.tid,
        state=state,
        value=float(value) if value is not None else None,
        values=None,
        datetime_start=_time(trial.book_time or finished) if timed else None,
        datetime_complete=_time(finished) if timed else None,
        params={name: point[name] for name in distributions if name in point},
        distributions={name: d for name, d in distributions.items() if name in point},
        user_attrs={key: attrs[key] for key in USER_ATTRS if attrs.get(key) is not None},
        system_attrs={},
        intermediate_values=intermediate,
    )


IMPORTANCE_ROUTE = "/api/studies/<study_id:int>/param_importances"  # optuna-dashboard's, answered here
PAGE_ROUTE = "/dashboard<:re:(/.*)?>"  # optuna-dashboard's page, served here with our script added
SCRIPT = Path(__file__).with_name("dashboard_page.js")
SCRIPT_ROUTE, NOTES_ROUTE = "/larnn/page.js", "/larnn/studies"


def app(store: BaseStore):
    """optuna-dashboard's WSGI application over the store, its importance answered by the report's,
    its page with our script (the same routes replace the built-in ones)."""
    import optuna_dashboard

    studies = StoreStudies(store)
    application = optuna_dashboard.wsgi(studies)
    built_in_page = next(r for r in application.routes if r.rule == PAGE_ROUTE).call
    tag = f'<script defer src="{SCRIPT_ROUTE}"></script>'
    html = (
        Path(optuna_dashboard.__file__)
        .with_name("index.html")
        .read_text(encoding="utf-8")
        .replace("</head>", f"{tag}</head>", 1)
    )

    def page() -> HTTPResponse:
        """optuna-dashboard's page and its headers (its Content-Security-Policy allows a script
        from this server), with our script's tag; never a 304 of the page without it."""
        response = built_in_page()
        if hasattr(response.body, "close"):
            response.body.close()
        csp = {k: v for k, v in response.headers.items() if k == "Content-Security-Policy"}
        return HTTPResponse(html, headers={**csp, "Content-Type": "text/html", "Cache-Control": "no-cache"})

    application.route(IMPORTANCE_ROUTE, "GET", studies.param_importances)
    application.route(PAGE_ROUTE, "GET", page)
    application.route(SCRIPT_ROUTE, "GET", lambda: static_file(SCRIPT.name, root=str(SCRIPT.parent)))
    application.route(NOTES_ROUTE, "GET", studies.page_notes)
    return application


def serve(store: BaseStore, host: str, port: int) -> None:
    """Blocks until interrupted."""
    from bottle import run

    run(app(store), host=host, port=port)

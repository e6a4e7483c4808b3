"""Which hyperparameters move accuracy, and how sure that is: permutation importance of a
random-forest surrogate, read only where the surrogate predicts.

The forest learns accuracy from the hyperparameters of the finished trials; a hyperparameter's
importance is how much the forest's R^2 drops when that column is shuffled. Each of `fits` forests
learns from a bootstrap resample of the trials, so the spread over fits and shuffles (a 90 %
interval) includes which trials happened to be run. A ranking means something only where the
forest predicts trials it has not seen: its 5-fold cross-validated R^2 is given with every
ranking, and below RELIABLE_R2 the trials are too few or too noisy to rank (the 2018 rounds' own
forests predict worse than their mean).

Several experiments are ranked each within itself: pooled, whatever tells the experiments apart
(training_epochs between the two 2018 rounds, or the decay period they drew from different
ranges) would rank first and only identify the experiment. The pooled ranking is given too, of
each trial's accuracy less its experiment's mean: a hyperparameter explains there only what it
explains within the experiments, and one fixed within each is left out.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor
from sklearn.inspection import permutation_importance
from sklearn.model_selection import KFold, cross_val_score

from larnn_core.records import VALIDATION_ACCURACY

RELIABLE_R2 = 0.1  # a surrogate explaining less of unseen trials' variance ranks noise
METHOD = (
    "permutation importance (drop in R²) of a random-forest surrogate, fitted on bootstrap resamples "
    f"of the trials; ranked only where the forest's 5-fold cross-validated R² reaches {RELIABLE_R2}"
)
COLUMNS = ["hyperparameter", "mean", "std", "low", "high", "r2"]


def encode(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Numbers as they are; choices (text, booleans) as category codes; absent stays NaN."""
    encoded = {}
    for column in columns:
        values = frame[column]
        numeric = pd.to_numeric(values, errors="coerce")
        if values.notna().sum() == numeric.notna().sum() and not values.dropna().map(type).eq(bool).any():
            encoded[column] = numeric.astype(float)
        else:
            codes = values.astype("string").astype("category").cat.codes.astype(float)
            encoded[column] = codes.where(values.notna())
    return pd.DataFrame(encoded, index=frame.index)


def varying(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    return [c for c in columns if frame[c].astype("string").nunique(dropna=False) > 1]


def surrogate(seed: int) -> RandomForestRegressor:
    return RandomForestRegressor(n_estimators=200, min_samples_leaf=2, random_state=seed)


def importance(
    frame: pd.DataFrame,
    columns: list[str],
    target: str = VALIDATION_ACCURACY,
    fits: int = 5,
    shuffles: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """Rows (hyperparameter, mean, std, low, high, r2), most important first; only hyperparameters
    that vary. low and high: the 5th and 95th percentiles over fits and shuffles; r2: the forest's
    5-fold cross-validated R², the same on every row (read the ranking only at RELIABLE_R2 or more)."""
    columns = varying(frame, columns)
    if not columns or len(frame) < 5:
        return pd.DataFrame(columns=COLUMNS)
    X, y = encode(frame, columns).to_numpy(), frame[target].to_numpy(dtype=float)
    folds = KFold(n_splits=5, shuffle=True, random_state=seed)
    r2 = (  # R² needs 2 trials in each held-out fold
        float(np.mean(cross_val_score(surrogate(seed), X, y, cv=folds, scoring="r2"))) if len(y) >= 10 else math.nan
    )
    rng, scores = np.random.default_rng(seed), []
    for fit in range(fits):
        resample = rng.integers(0, len(y), len(y))
        forest = surrogate(seed + fit).fit(X[resample], y[resample])
        result = permutation_importance(forest, X, y, n_repeats=shuffles, random_state=seed + fit)
        scores.append(result.importances)  # [columns, shuffles]
    scores = np.concatenate(scores, axis=1)
    low, high = np.percentile(scores, [5, 95], axis=1)
    table = pd.DataFrame(
        {"hyperparameter": columns, "mean": scores.mean(1), "std": scores.std(1), "low": low, "high": high, "r2": r2}
    )
    return table.sort_values("mean", ascending=False, ignore_index=True)


POOLED = "all (each experiment's mean removed)"


def importance_by_experiment(
    frame: pd.DataFrame, columns: list[str], target: str = VALIDATION_ACCURACY
) -> pd.DataFrame:
    """Rows (experiment, *COLUMNS): each experiment's own ranking, most important first, then,
    for several experiments, the pooled ranking (experiment POOLED) of the accuracy less each
    experiment's mean, over the hyperparameters that vary within some experiment."""
    parts = [
        importance(part, columns, target).assign(experiment=name)
        for name, part in frame.groupby("experiment", sort=False)
    ]
    if frame["experiment"].nunique() > 1:  # a hyperparameter fixed within each experiment is the experiment
        within = [c for c in columns if any(varying(part, [c]) for _, part in frame.groupby("experiment"))]
        centred = frame.assign(**{target: frame[target] - frame.groupby("experiment")[target].transform("mean")})
        parts.append(importance(centred, within, target).assign(experiment=POOLED))
    parts = [part for part in parts if not part.empty]
    if not parts:
        return pd.DataFrame(columns=["experiment", *COLUMNS])
    return pd.concat(parts, ignore_index=True)[["experiment", *COLUMNS]]


def reliable(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of the rankings whose surrogate predicts unseen trials (r2 >= RELIABLE_R2)."""
    return table[table["r2"] >= RELIABLE_R2]


def refusals(table: pd.DataFrame) -> list[str]:
    """One sentence per ranking that cannot be read (its surrogate's R² below RELIABLE_R2, or
    fewer than 10 trials to cross-validate it), as the figure and the report print it."""
    r2 = table.groupby("experiment", sort=False)["r2"].first()
    return [
        f"{name}: too few or too noisy trials to rank (cross-validated R² "
        f"{'needs 10 trials' if math.isnan(value) else f'{value:.2f}'} < {RELIABLE_R2})"
        for name, value in r2.items()
        if not value >= RELIABLE_R2
    ]


def ranking(table: pd.DataFrame) -> list[str]:
    """Hyperparameters by their largest importance within any one experiment that can be ranked
    (none when no experiment's surrogate predicts its trials)."""
    table = reliable(table)
    own = table[table["experiment"] != POOLED]
    return list(own.groupby("hyperparameter")["mean"].max().sort_values(ascending=False, kind="stable").index)

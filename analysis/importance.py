"""Which hyperparameters move accuracy: permutation importance of a random-forest surrogate.

The forest learns accuracy from the hyperparameters of the finished trials; a hyperparameter's
importance is how much the forest's R^2 drops when that column is shuffled. Repeating the fit
with other seeds (and the shuffles) gives the uncertainty.

Several experiments are ranked each within itself: pooled, whatever tells the experiments apart
(training_epochs between the two 2018 rounds) would rank first and only identify the experiment.
The pooled ranking is given too, with the experiment as a feature of its own, shown as such.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor
from sklearn.inspection import permutation_importance

from larnn_core.records import VALIDATION_ACCURACY

METHOD = "permutation importance (drop in R²) of a random-forest surrogate"


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


def importance(
    frame: pd.DataFrame,
    columns: list[str],
    target: str = VALIDATION_ACCURACY,
    fits: int = 5,
    shuffles: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """Rows (hyperparameter, mean, std), most important first; only hyperparameters that vary."""
    columns = varying(frame, columns)
    if not columns or len(frame) < 5:
        return pd.DataFrame(columns=["hyperparameter", "mean", "std"])
    X, y = encode(frame, columns).to_numpy(), frame[target].to_numpy(dtype=float)
    scores = []
    for fit in range(fits):
        forest = RandomForestRegressor(n_estimators=200, min_samples_leaf=2, random_state=seed + fit).fit(X, y)
        result = permutation_importance(forest, X, y, n_repeats=shuffles, random_state=seed + fit)
        scores.append(result.importances)  # [columns, shuffles]
    scores = np.concatenate(scores, axis=1)
    table = pd.DataFrame({"hyperparameter": columns, "mean": scores.mean(1), "std": scores.std(1)})
    return table.sort_values("mean", ascending=False, ignore_index=True)


POOLED = "all (experiment as a feature)"


def importance_by_experiment(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Rows (experiment, hyperparameter, mean, std): each experiment's own ranking, most important
    first, then, for several experiments, the pooled ranking (experiment POOLED) in which
    `experiment` is one of the features, standing also for the hyperparameters that only tell the
    experiments apart (fixed within each)."""
    parts = [
        importance(part, columns).assign(experiment=name) for name, part in frame.groupby("experiment", sort=False)
    ]
    if frame["experiment"].nunique() > 1:  # a hyperparameter fixed within each experiment is the experiment
        within = [c for c in columns if any(varying(part, [c]) for _, part in frame.groupby("experiment"))]
        parts.append(importance(frame, ["experiment", *within]).assign(experiment=POOLED))
    parts = [part for part in parts if not part.empty]
    if not parts:
        return pd.DataFrame(columns=["experiment", "hyperparameter", "mean", "std"])
    return pd.concat(parts, ignore_index=True)[["experiment", "hyperparameter", "mean", "std"]]


def ranking(table: pd.DataFrame) -> list[str]:
    """Hyperparameters by their largest importance within any one experiment."""
    own = table[(table["experiment"] != POOLED) & (table["hyperparameter"] != "experiment")]
    return list(own.groupby("hyperparameter")["mean"].max().sort_values(ascending=False, kind="stable").index)

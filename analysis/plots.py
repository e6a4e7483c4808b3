"""The figures of a search, each saved as PNG and SVG. Every function returns the figures it
wrote as (file stem, title, axes count)."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.importance import encode, importance  # noqa: E402

ACC = "validation_accuracy"


VALIDATION_LABEL, TEST_PICKED_LABEL = "validation accuracy", "test-picked accuracy (2018: best test epoch)"


def accuracy_label(data: pd.DataFrame) -> str:
    """What the accuracy column holds for these trials: honest validation accuracy, or the 2018
    protocol's test-picked score (the best epoch on the test set), or both, which then says so."""
    protocols = set(data["protocol"]) if "protocol" in data and len(data) else {"honest"}
    if protocols == {"test-picked"}:
        return TEST_PICKED_LABEL
    if "test-picked" in protocols:
        return "accuracy: validation, or test-picked for 2018 imports"
    return VALIDATION_LABEL

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]
plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                     "axes.spines.right": False, "font.size": 10})

Figure = tuple[str, str, int]


def _save(fig, out: Path, stem: str, title: str) -> Figure:
    fig.tight_layout()
    for suffix in ("png", "svg"):
        fig.savefig(out / f"{stem}.{suffix}")
    axes = len(fig.axes)
    plt.close(fig)
    return stem, title, axes


def _log_axis(axis) -> None:
    """Log scale labelled 1-2-5 in plain numbers (matplotlib's default crowds narrow ranges)."""
    axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _color(experiments: list[str], name: str) -> str:
    return COLORS[experiments.index(name) % len(COLORS)]


def is_categorical(values: pd.Series) -> bool:
    """Choices: text, booleans, or few distinct numbers."""
    present = values.dropna()
    return present.map(type).isin([str, bool]).any() or present.nunique() <= 6


def log_distributed(experiments: list[dict]) -> set[str]:
    """Hyperparameters the experiments' spaces draw log-uniformly (scaled form, (q)loguniform)."""
    from search_spaces.format import is_log_scaled
    from workers.experiment import stored_space

    return {name for experiment in experiments if experiment.get("space")
            for name, nodes in stored_space(experiment).hyperparameters().items() if any(map(is_log_scaled, nodes))}


def is_log_scale(values: pd.Series, log_names: set[str] = frozenset()) -> bool:
    """Log axis for log-distributed hyperparameters, and for positive values spanning 20x or more."""
    present = pd.to_numeric(values.dropna())
    if values.name in log_names:
        return True
    return len(present) > 0 and present.min() > 0 and present.max() / present.min() > 20


def binned_median(x: np.ndarray, y: np.ndarray, log: bool, bins: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The trend: median accuracy in quantile bins of the value (centres at the bins' median x)."""
    if len(x) < 2 * bins:
        bins = max(2, len(x) // 3)
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    centres = [np.median(x[which == b]) for b in range(len(edges) - 1) if (which == b).any()]
    medians = [np.median(y[which == b]) for b in range(len(edges) - 1) if (which == b).any()]
    return np.asarray(centres), np.asarray(medians)


def hyperparameter_figures(done: pd.DataFrame, hyperparameters: list[str], out: Path,
                           log_names: set[str] = frozenset()) -> list[Figure]:
    experiments = list(dict.fromkeys(done["experiment"]))
    best = done.iloc[0]
    figures = []
    for name in hyperparameters:
        if name == "model" or name not in done or done[name].dropna().astype(str).nunique() < 2:
            continue  # model has its own figure; a value that never changes says nothing
        data = done[done[name].notna()]
        fig, ax = plt.subplots(figsize=(5.2, 3.6))
        if is_categorical(data[name]):
            labels = sorted(data[name].astype(str).unique(), key=lambda v: (len(v), v))
            groups = [data.loc[data[name].astype(str) == v, ACC].to_numpy() for v in labels]
            ax.boxplot(groups, widths=0.5, showfliers=False, medianprops={"color": "black"})
            ax.set_xticks(range(1, len(labels) + 1), labels)
            rng = np.random.default_rng(0)
            for experiment in experiments:
                part = data[data["experiment"] == experiment]
                x = [labels.index(str(v)) + 1 + rng.uniform(-0.15, 0.15) for v in part[name]]
                ax.scatter(x, part[ACC], s=14, alpha=0.6, color=_color(experiments, experiment), label=experiment)
            if pd.notna(best[name]):
                ax.scatter([labels.index(str(best[name])) + 1], [best[ACC]], marker="*", s=180, color="gold",
                           edgecolor="black", zorder=5, label="best trial")
        else:
            x_all = pd.to_numeric(data[name]).to_numpy(dtype=float)
            log = is_log_scale(data[name], log_names)
            for experiment in experiments:
                part = data[data["experiment"] == experiment]
                x, y = pd.to_numeric(part[name]).to_numpy(dtype=float), part[ACC].to_numpy()
                ax.scatter(x, y, s=14, alpha=0.6, color=_color(experiments, experiment), label=experiment)
                if len(x) >= 6:
                    cx, cy = binned_median(np.log(x) if log else x, y, log)
                    ax.plot(np.exp(cx) if log else cx, cy, color=_color(experiments, experiment), lw=2)
            if log:
                ax.set_xscale("log")
                _log_axis(ax.xaxis)
            if pd.notna(best[name]):
                ax.scatter([float(best[name])], [best[ACC]], marker="*", s=180, color="gold", edgecolor="black",
                           zorder=5, label="best trial")
            ax.set_xlim(x_all.min() / 1.1 if log else None, x_all.max() * 1.1 if log else None)
        ax.set_xlabel(name)
        ax.set_ylabel(accuracy_label(done))
        ax.set_title(f"{name}: accuracy by value (line: binned median)" if not is_categorical(data[name])
                     else f"{name}: accuracy by choice", fontsize=10)
        ax.legend(fontsize=8, loc="best", framealpha=0.85)
        figures.append(_save(fig, out, f"hp_{_slug(name)}", f"Validation accuracy against {name}"))
    return figures


def importance_figure(done: pd.DataFrame, hyperparameters: list[str], out: Path) -> tuple[list[Figure], pd.DataFrame]:
    table = importance(done, [h for h in hyperparameters if h in done])
    if table.empty:
        return [], table
    fig, ax = plt.subplots(figsize=(6.4, 0.32 * len(table) + 1.8))
    order = table.iloc[::-1]
    ax.barh(order["hyperparameter"], order["mean"], xerr=order["std"], color=COLORS[0], alpha=0.85, capsize=3)
    ax.set_xlabel("drop in R² when shuffled (mean ± std)")
    ax.set_title(f"Hyperparameter importance ({len(done)} trials)\npermutation importance of a random-forest "
                 "surrogate,\n5 fits x 5 shuffles", fontsize=9)
    return [_save(fig, out, "importance", "Hyperparameter importance")], table


def pair_coordinates(data: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Where each trial sits on a pair plot's axes: numbers as they are, a choice (also a numeric
    one, such as attention_heads in {9, 27}) at its category's position, 0..n-1, the one its tick
    names."""
    coded = encode(data, names)
    for name in names:
        if is_categorical(data[name]):
            order = categories(data[name])
            coded[name] = data[name].map(lambda v: order.index(str(v)) if pd.notna(v) else np.nan).astype(float)
    return coded


def categories(values: pd.Series) -> list[str]:
    """A choice's values as tick labels, in order: numbers by value (9 before 27), the rest as text."""
    present = values.dropna()
    numeric = pd.to_numeric(present, errors="coerce")
    if numeric.notna().all() and not present.map(type).eq(bool).any():
        return [str(v) for v in sorted(set(present), key=float)]
    return sorted({str(v) for v in present})


def pair_figures(done: pd.DataFrame, table: pd.DataFrame, out: Path,
                 log_names: set[str] = frozenset()) -> list[Figure]:
    """The two strongest pairs among the three most important hyperparameters."""
    top = list(table["hyperparameter"][:3])
    pairs = [(top[0], top[1]), (top[0], top[2])] if len(top) == 3 else [tuple(top)] if len(top) == 2 else []
    figures = []
    for a, b in pairs:
        data = done[done[a].notna() & done[b].notna()]
        coded = pair_coordinates(data, [a, b])
        fig, ax = plt.subplots(figsize=(5.2, 4.0))
        points = ax.scatter(coded[a], coded[b], c=data[ACC], cmap="viridis", s=26, edgecolor="none")
        for name, setter, ticks, axis in ((a, ax.set_xscale, ax.set_xticks, ax.xaxis),
                                          (b, ax.set_yscale, ax.set_yticks, ax.yaxis)):
            if is_categorical(data[name]):
                labels = categories(data[name])
                ticks(range(len(labels)), labels)
            elif is_log_scale(data[name], log_names):
                setter("log")
                _log_axis(axis)
        best = data.iloc[0]
        ax.scatter([coded[a].iloc[0]], [coded[b].iloc[0]], marker="*", s=200, color="gold", edgecolor="black")
        ax.set_xlabel(a)
        ax.set_ylabel(b)
        fig.colorbar(points, ax=ax, label=accuracy_label(done))
        ax.set_title(f"{a} x {b} (star: best trial, {best[ACC]:.4f})", fontsize=10)
        figures.append(_save(fig, out, f"pair_{_slug(a)}__{_slug(b)}", f"Validation accuracy over {a} and {b}"))
    return figures


def history_figure(frame: pd.DataFrame, out: Path) -> list[Figure]:
    fig, ax = plt.subplots(figsize=(6.2, 3.6))
    experiments = list(dict.fromkeys(frame["experiment"]))
    for experiment in experiments:
        part = frame[(frame["experiment"] == experiment) & frame[ACC].notna()].sort_values("tid")
        color = _color(experiments, experiment)
        pruned = part["state"] == "pruned"
        ax.scatter(part["tid"][~pruned], part[ACC][~pruned], s=12, alpha=0.5, color=color, label=f"{experiment}: trials")
        if pruned.any():
            ax.scatter(part["tid"][pruned], part[ACC][pruned], s=16, marker="x", color=color,
                       label=f"{experiment}: pruned (best before the stop)")
        ax.step(part["tid"], part[ACC].cummax(), where="post", color=color, lw=2, label=f"{experiment}: best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(accuracy_label(frame))
    ax.set_title("Optimisation history", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return [_save(fig, out, "history", "Optimisation history")]


PROGRESS_STYLES = {"running": dict(color="tab:blue", lw=1.6, ls="-"), "pruned": dict(color="tab:orange", lw=1, ls="--"),
                   "done": dict(color="0.6", lw=0.8, ls="-")}


def progress_figure(frame: pd.DataFrame, out: Path) -> list[Figure]:
    """Every trial's curve as the workers reported it epoch by epoch: running trials (solid, a dot
    at the latest epoch), pruned ones (dashed, a cross where they were stopped), finished ones."""
    rows = [row for _, row in frame.iterrows() if row["state"] in PROGRESS_STYLES and _reported(row)[1]]
    if not any(row["state"] != "done" for row in rows):
        return []  # nothing running or pruned: the learning curves figure says the rest
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    seen = set()
    for row in sorted(rows, key=lambda r: list(PROGRESS_STYLES)[::-1].index(r["state"])):  # running on top
        epochs, values = _reported(row)
        state = row["state"]
        ax.plot(epochs, values, **PROGRESS_STYLES[state], label=None if state in seen else state)
        seen.add(state)
        if state != "done":
            ax.scatter(epochs[-1:], values[-1:], marker="x" if state == "pruned" else "o", s=18,
                       color=PROGRESS_STYLES[state]["color"], zorder=4)
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(accuracy_label(frame))
    ax.set_title("Trials as they ran (x: pruned there; o: running, latest epoch)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return [_save(fig, out, "progress", "Trials as they ran: running, pruned and finished")]


def _reported(row: pd.Series) -> tuple[list[int], list[float]]:
    """(epochs, validation accuracies) of a trial: its live curve, else its result's history
    (trials finished before curves were reported, and imports)."""
    curve = [e for e in row["curve"] if "validation_accuracy" in e]
    if curve:
        return [e["epoch"] for e in curve], [e["validation_accuracy"] for e in curve]
    values = list(row["history"].get("validation_accuracies") or [])
    return list(range(1, len(values) + 1)), values


def learning_curves_figure(done: pd.DataFrame, out: Path, top: int = 10) -> list[Figure]:
    best = [row for _, row in done.head(top).iterrows() if row["history"].get("validation_accuracies")]
    if not best:
        return []
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    cmap = plt.get_cmap("viridis")
    for rank, row in enumerate(best):
        curve = row["history"]["validation_accuracies"]
        ax.plot(range(1, len(curve) + 1), curve, color=cmap(rank / max(1, len(best) - 1)), lw=1.4,
                marker="o" if len(curve) < 5 else None, ms=4,  # a one-epoch trial is a point, not a line
                label=f"#{rank + 1} {row['experiment']}/{row['tid']} ({row[ACC]:.4f})")
        if pd.notna(row["best_epoch"]):
            ax.scatter([row["best_epoch"]], [curve[int(row["best_epoch"]) - 1]], color="black", s=10, zorder=4)
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(accuracy_label(done))
    ax.set_title(f"Learning curves of the top {len(best)} trials (dots: selected epoch)", fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    return [_save(fig, out, "learning_curves", "Learning curves of the best trials")]


def model_figure(done: pd.DataFrame, out: Path) -> list[Figure]:
    models = sorted(done["model"].dropna().unique())
    if len(models) < 2:
        return []
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    groups = [done.loc[done["model"] == m, ACC].to_numpy() for m in models]
    ax.boxplot(groups, widths=0.5, showfliers=False, medianprops={"color": "black"})
    ax.set_xticks(range(1, len(models) + 1), [f"{m}\n(n={len(g)}, best {g.max():.4f})" for m, g in zip(models, groups)])
    rng = np.random.default_rng(0)
    for i, g in enumerate(groups):
        ax.scatter(i + 1 + rng.uniform(-0.15, 0.15, len(g)), g, s=14, alpha=0.6, color=COLORS[i])
    ax.set_ylabel(accuracy_label(done))
    ax.set_title("LARNN against LSTM, same protocol", fontsize=10)
    return [_save(fig, out, "larnn_vs_lstm", "LARNN against LSTM")]


def selection_figure(done: pd.DataFrame, out: Path) -> list[Figure]:
    data = done[done["test_accuracy"].notna()]
    if data.empty:
        return []
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    experiments = list(dict.fromkeys(data["experiment"]))
    for experiment in experiments:
        part = data[data["experiment"] == experiment]
        ax.scatter(part[ACC], part["test_accuracy"], s=16, alpha=0.6, color=_color(experiments, experiment),
                   label=experiment)
    low = min(data[ACC].min(), data["test_accuracy"].min())
    high = max(data[ACC].max(), data["test_accuracy"].max())
    ax.plot([low, high], [low, high], color="gray", ls="--", lw=1, label="test = validation")
    r = np.corrcoef(data[ACC], data["test_accuracy"])[0, 1] if len(data) > 2 else np.nan
    ax.set_xlabel("validation accuracy (selects the epoch)")
    ax.set_ylabel("test accuracy at that epoch")
    ax.set_title(f"Is selection honest? Pearson r = {r:.2f}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_aspect("equal", adjustable="datalim")
    return [_save(fig, out, "validation_vs_test", "Validation against test accuracy")]

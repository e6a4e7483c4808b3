"""The figures of a search, each saved as PNG and SVG. Every function returns the figures it
wrote as (file stem, title, axes count).

Experiments are told apart by colour, one per experiment in every figure (`palette`, made once
per report and passed to each), and their marks carry the SVG group id `experiment-<name>`.
Boxes, trends and importance are drawn per experiment: pooled, the experiments' differences
(another number of epochs, another range) would pass for a hyperparameter's effect."""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import ticker  # noqa: E402

from analysis.importance import POOLED, encode, importance_by_experiment, refusals, reliable  # noqa: E402
from larnn_core.records import HONEST, TEST_ACCURACY, TEST_PICKED, VALIDATION_ACCURACY  # noqa: E402
from workers.records import Experiment  # noqa: E402

ACC, TEST = VALIDATION_ACCURACY, TEST_ACCURACY  # the frame's columns


VALIDATION_NAME, TEST_PICKED_NAME, MIXED_NAME = (
    "validation accuracy",
    "test-picked accuracy",
    "validation or test-picked accuracy",
)
AXIS_LABELS = {  # an axis says what a test-picked number is
    VALIDATION_NAME: VALIDATION_NAME,
    TEST_PICKED_NAME: "test-picked accuracy (2018: best test epoch)",
    MIXED_NAME: "accuracy: validation, or test-picked for 2018 imports",
}


def accuracy_name(data: pd.DataFrame) -> str:
    """What the accuracy column holds for these trials, as a caption or a table names it: honest
    validation accuracy, the 2018 protocol's test-picked score (the best epoch on the test set), or
    both."""
    protocols = set(data["protocol"]) if "protocol" in data and len(data) else {HONEST}
    if protocols == {TEST_PICKED}:
        return TEST_PICKED_NAME
    return MIXED_NAME if TEST_PICKED in protocols else VALIDATION_NAME


def accuracy_label(data: pd.DataFrame) -> str:
    """accuracy_name as an axis says it."""
    return AXIS_LABELS[accuracy_name(data)]


CURVE_LABELS = {  # a per-epoch curve's axis: each point is one epoch's number, nothing was picked
    VALIDATION_NAME: "validation accuracy per epoch",
    TEST_PICKED_NAME: "test accuracy per epoch\n(2018: its 'validation' curve)",  # two lines: one overran
    MIXED_NAME: "accuracy per epoch: validation,\nor test for 2018 imports",
}


def curve_label(data: pd.DataFrame) -> str:
    """accuracy_name as a learning curve's axis says it."""
    return CURVE_LABELS[accuracy_name(data)]


COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]
plt.rcParams.update(
    {
        "figure.dpi": 110,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "font.size": 10,
    }
)

Figure = tuple[str, str, int]


def _save(fig, out: Path, stem: str, title: str) -> Figure:
    fig.tight_layout()
    for suffix in ("png", "svg"):
        fig.savefig(out / f"{stem}.{suffix}")
    axes = len(fig.axes)
    plt.close(fig)
    return stem, title, axes


class Log125(ticker.Locator):
    """Ticks at 1, 2 and 5 times powers of ten; where fewer than 3 of those fall in view (2018's
    learning rates span 0.003-0.009), 4 evenly spaced round values instead. matplotlib's LogLocator
    falls back there to a tick at every 0.001, whose labels run into each other."""

    def __call__(self) -> list[float]:
        low, high = sorted(self.axis.get_view_interval())
        low = max(low, 1e-300)
        decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        ticks = [m * 10.0**k for k in decades for m in (1, 2, 5) if low <= m * 10.0**k <= high]
        if len(ticks) >= 3:
            return ticks
        return [t for t in ticker.MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high) if t > 0]


def _log_axis(axis) -> None:
    """Log scale labelled in plain numbers, few enough to read (Log125)."""
    axis.set_major_locator(Log125())
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def palette(names: list[str]) -> dict[str, str]:
    """One colour per experiment, in the order the user named them, for every figure."""
    return {name: COLORS[i % len(COLORS)] for i, name in enumerate(dict.fromkeys(names))}


def tag(name: str) -> str:
    """The SVG group id of an experiment's marks."""
    return f"experiment-{_slug(name)}"


def _offsets(count: int, width: float = 0.8) -> list[float]:
    """Where each of `count` experiments sits beside a category's position, and its share of it."""
    step = width / count
    return [(k - (count - 1) / 2) * step for k in range(count)]


def is_categorical(values: pd.Series) -> bool:
    """Choices: text, booleans, or few distinct numbers."""
    present = values.dropna()
    return present.map(type).isin([str, bool]).any() or present.nunique() <= 6


def log_distributed(experiments: list[Experiment]) -> set[str]:
    """Hyperparameters the experiments' spaces draw log-uniformly (scaled form, (q)loguniform)."""
    from search_spaces.format import is_log_scaled
    from workers.experiment import stored_space

    return {
        name
        for experiment in experiments
        if experiment.space
        for name, nodes in stored_space(experiment).hyperparameters().items()
        if any(map(is_log_scaled, nodes))
    }


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


def between_experiments(done: pd.DataFrame, hyperparameters: list[str]) -> dict[str, list[str]]:
    """The hyperparameters that differ between experiments but never within one (2018's epochs: 25
    in round 1, 100 in round 2), with their values per experiment: accuracy against them is the
    experiments' difference, which everything else between them also explains."""
    apart = {}
    for name in hyperparameters:
        if name not in done:
            continue
        values = (
            done[done[name].notna()]
            .groupby("experiment")[name]
            .agg(
                lambda v: sorted({f"{x:g}" if isinstance(x, float) else str(x) for x in v})  # 100, not 100.0
            )
        )
        if len(values) > 1 and all(len(v) == 1 for v in values) and len({v[0] for v in values}) > 1:
            apart[name] = [f"{experiment} {v[0]}" for experiment, v in values.items()]
    return apart


def hyperparameter_figures(
    done: pd.DataFrame, hyperparameters: list[str], out: Path, colors: dict[str, str], log_names: set[str] = frozenset()
) -> list[Figure]:
    """Accuracy against each hyperparameter that varies within an experiment: numbers on their axis
    (log where drawn so) with a binned-median trend per experiment, choices as one box and strip
    per experiment, each box with its number of trials."""
    experiments = [name for name in colors if name in set(done["experiment"])]  # legends in the palette's order
    best = done.iloc[0]
    figures = []
    apart = between_experiments(done, hyperparameters)
    for name in hyperparameters:
        if name == "model" or name not in done or done[name].dropna().astype(str).nunique() < 2 or name in apart:
            continue  # model has its own figure; a value that never changes, or only between experiments, says nothing
        data = done[done[name].notna()]
        fig, ax = plt.subplots(figsize=(5.2, 3.6))
        categorical = is_categorical(data[name])
        if categorical:
            labels = categories(data[name])
            offsets = dict(zip(experiments, _offsets(len(experiments))))
            width = 0.8 / len(experiments)
            rng = np.random.default_rng(0)
            for experiment in experiments:
                part, color = data[data["experiment"] == experiment], colors[experiment]
                at = [
                    (i + 1 + offsets[experiment], part.loc[part[name].astype(str) == v, ACC].to_numpy())
                    for i, v in enumerate(labels)
                ]
                at = [(x, group) for x, group in at if len(group)]
                if not at:
                    continue
                style = {"color": color}
                boxes = ax.boxplot(
                    [group for _, group in at],
                    positions=[x for x, _ in at],
                    widths=0.8 * width,
                    showfliers=False,
                    manage_ticks=False,
                    medianprops={"color": color, "lw": 2},
                    boxprops=style,
                    whiskerprops=style,
                    capprops=style,
                )
                for artist in (a for artists in boxes.values() for a in artists):
                    artist.set_gid(tag(experiment))
                for x, group in at:  # under each box, how many trials it summarises
                    ax.annotate(
                        f"n={len(group)}",
                        (x, 0),
                        xycoords=("data", "axes fraction"),
                        xytext=(0, 2),
                        textcoords="offset points",
                        ha="center",
                        fontsize=7,
                        color=color,
                        gid=tag(experiment),
                    )
                x = [
                    labels.index(str(v)) + 1 + offsets[experiment] + rng.uniform(-width / 4, width / 4)
                    for v in part[name]
                ]
                ax.scatter(x, part[ACC], s=12, alpha=0.6, color=color, label=experiment, gid=tag(experiment))
            ax.set_xticks(range(1, len(labels) + 1), labels)
            if pd.notna(best[name]):
                ax.scatter(
                    [labels.index(str(best[name])) + 1 + offsets[best["experiment"]]],
                    [best[ACC]],
                    marker="*",
                    s=180,
                    color="gold",
                    edgecolor="black",
                    zorder=5,
                    label="best trial",
                )
        else:
            x_all = pd.to_numeric(data[name]).to_numpy(dtype=float)
            log = is_log_scale(data[name], log_names)
            for experiment in experiments:
                part = data[data["experiment"] == experiment]
                x, y = pd.to_numeric(part[name]).to_numpy(dtype=float), part[ACC].to_numpy()
                ax.scatter(x, y, s=14, alpha=0.6, color=colors[experiment], label=experiment, gid=tag(experiment))
                if len(x) >= 6:
                    cx, cy = binned_median(np.log(x) if log else x, y, log)
                    ax.plot(np.exp(cx) if log else cx, cy, color=colors[experiment], lw=2, gid=tag(experiment))
            if log:
                ax.set_xscale("log")
                _log_axis(ax.xaxis)
            if pd.notna(best[name]):
                ax.scatter(
                    [float(best[name])],
                    [best[ACC]],
                    marker="*",
                    s=180,
                    color="gold",
                    edgecolor="black",
                    zorder=5,
                    label="best trial",
                )
            ax.set_xlim(x_all.min() / 1.1 if log else None, x_all.max() * 1.1 if log else None)
        ax.set_xlabel(name)
        ax.set_ylabel(accuracy_label(done))
        ax.set_title(
            f"{name}: accuracy by choice, per experiment"
            if categorical
            else f"{name}: accuracy by value (lines: binned medians)",
            fontsize=10,
        )
        ax.legend(fontsize=8, loc="best", framealpha=0.85)
        caption = f"{accuracy_name(done).capitalize()} against {name}"
        figures.append(_save(fig, out, f"hp_{_slug(name)}", caption))
    return figures


def importance_figure(
    done: pd.DataFrame, hyperparameters: list[str], out: Path, colors: dict[str, str]
) -> tuple[list[Figure], pd.DataFrame]:
    """Importance within each experiment (its colour), and pooled with the experiment as a
    feature (grey), each with its surrogate's cross-validated R²; an experiment whose surrogate
    does not predict its trials (importance.RELIABLE_R2) gets a sentence saying so, not bars. The
    table: importance.importance_by_experiment."""
    table = importance_by_experiment(done, [h for h in hyperparameters if h in done])
    if table.empty:
        return [], table
    r2 = table.groupby("experiment", sort=False)["r2"].first()
    shown = reliable(table)
    largest = shown.groupby("hyperparameter", sort=False)["mean"].max()
    names = [name for name, top in largest.items() if top >= 0.01 * largest.max()][::-1]
    groups = list(dict.fromkeys(shown["experiment"]))
    refused = refusals(table)
    fig, ax = plt.subplots(figsize=(7.4, 0.3 * len(names) * max(1.5, len(groups) * 0.7) + 1.9 + 0.2 * len(refused)))
    for group, offset in zip(groups, _offsets(max(len(groups), 1))[::-1]):
        part = shown[shown["experiment"] == group].set_index("hyperparameter")
        rows = [i for i, name in enumerate(names) if name in part.index]
        chosen = part.loc[[names[i] for i in rows]]
        ax.barh(
            [i + offset for i in rows],
            chosen["mean"],
            xerr=[chosen["mean"] - chosen["low"], chosen["high"] - chosen["mean"]],
            height=0.8 / len(groups),
            color="0.55" if group == POOLED else colors[group],
            alpha=0.85,
            capsize=2,
            label=f"{group} (cross-validated R² {r2[group]:.2f})",
            gid=None if group == POOLED else tag(group),
        )
    if names:
        ax.set_yticks(range(len(names)), names)
        ax.legend(fontsize=8, loc="best")
    else:  # no ranking stands: the sentences above say why, and no empty axis pretends to measure
        ax.set_axis_off()
    ax.set_xlabel("drop in R² when shuffled (mean; 90% interval over bootstrap fits and shuffles)")
    ax.set_title(  # a refused experiment's sentence here, above the bars, never over them
        "\n".join(
            [
                f"Hyperparameter importance within each experiment ({len(done)} trials)",
                "permutation importance of a random-forest surrogate, 5 bootstrap fits x 5 shuffles",
                "(left out: below 1% of the largest)",
                *refused,
            ]
        ),
        fontsize=9,
    )
    return [_save(fig, out, "importance", "Hyperparameter importance")], table


def pair_coordinates(data: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Where each trial sits on a pair plot's axes: numbers as they are, a choice (also a numeric
    one, such as attention_heads in {9, 27}) at its category's position, 0..n-1, the one its tick
    names."""
    coded = encode(data, names)
    for name in names:
        if is_categorical(data[name]):
            order = categories(data[name])
            coded[name] = data[name].map(lambda v, order=order: order.index(str(v)) if pd.notna(v) else np.nan)
            coded[name] = coded[name].astype(float)
    return coded


def categories(values: pd.Series) -> list[str]:
    """A choice's values as tick labels, in order: numbers by value (9 before 27), the rest as text."""
    present = values.dropna()
    numeric = pd.to_numeric(present, errors="coerce")
    if numeric.notna().all() and not present.map(type).eq(bool).any():
        return [str(v) for v in sorted(set(present), key=float)]
    return sorted({str(v) for v in present})


def pair_figures(done: pd.DataFrame, ranked: list[str], out: Path, log_names: set[str] = frozenset()) -> list[Figure]:
    """The two strongest pairs among the three most important hyperparameters (importance.ranking),
    a panel per experiment, each on its own colour scale: experiments at different levels (2018's
    rounds) on one scale would show the experiments, not the pair."""
    top = ranked[:3]
    pairs = [(top[0], top[1]), (top[0], top[2])] if len(top) == 3 else [tuple(top)] if len(top) == 2 else []
    figures = []
    for a, b in pairs:
        data = done[done[a].notna() & done[b].notna()]
        coded = pair_coordinates(data, [a, b])  # one coding for every panel: the same ticks
        shown = list(dict.fromkeys(data["experiment"]))
        fig, axes = plt.subplots(1, len(shown), figsize=(5.2 * len(shown), 4.0), squeeze=False)
        for ax, experiment in zip(axes[0], shown):
            part = data["experiment"] == experiment
            points = ax.scatter(
                coded[a][part], coded[b][part], c=data[ACC][part], cmap="viridis", s=26, edgecolor="none"
            )
            for name, setter, ticks, axis in (
                (a, ax.set_xscale, ax.set_xticks, ax.xaxis),
                (b, ax.set_yscale, ax.set_yticks, ax.yaxis),
            ):
                if is_categorical(data[name]):
                    labels = categories(data[name])
                    ticks(range(len(labels)), labels)
                elif is_log_scale(data[name], log_names):
                    setter("log")
                    _log_axis(axis)
            first = part.to_numpy().argmax()  # done is sorted best first
            ax.scatter(
                [coded[a].iloc[first]], [coded[b].iloc[first]], marker="*", s=200, color="gold", edgecolor="black"
            )
            ax.set_xlabel(a)
            ax.set_ylabel(b)
            fig.colorbar(points, ax=ax, label=accuracy_label(done))
            ax.set_title(f"{experiment}: {part.sum()} trials, best {data[ACC].iloc[first]:.4f} (star)", fontsize=10)
        if len(shown) > 1:
            fig.suptitle(f"{a} x {b}: each experiment on its own colour scale", fontsize=10)
        caption = f"{accuracy_name(done).capitalize()} over {a} and {b}, per experiment"
        figures.append(_save(fig, out, f"pair_{_slug(a)}__{_slug(b)}", caption))
    return figures


def history_figure(
    frame: pd.DataFrame, out: Path, colors: dict[str, str], unordered: set[str] = frozenset()
) -> list[Figure]:
    """Accuracy by trial number; experiments whose trials have no known order are left out."""
    experiments = [e for e in dict.fromkeys(frame["experiment"]) if e not in unordered]
    if not experiments:
        return []
    fig, ax = plt.subplots(figsize=(6.2, 3.6))
    for experiment in experiments:
        part = frame[(frame["experiment"] == experiment) & frame[ACC].notna()].sort_values("tid")
        color, gid = colors[experiment], tag(experiment)
        pruned = part["state"] == "pruned"
        ax.scatter(
            part["tid"][~pruned],
            part[ACC][~pruned],
            s=12,
            alpha=0.5,
            color=color,
            label=f"{experiment}: trials",
            gid=gid,
        )
        if pruned.any():
            ax.scatter(
                part["tid"][pruned],
                part[ACC][pruned],
                s=16,
                marker="x",
                color=color,
                label=f"{experiment}: pruned (best before the stop)",
                gid=gid,
            )
        ax.step(
            part["tid"],
            part[ACC].cummax(),
            where="post",
            color=color,
            lw=2,
            label=f"{experiment}: best so far",
            gid=gid,
        )
    ax.set_xlabel("trial")
    ax.set_ylabel(accuracy_label(frame))
    ax.set_title("Optimisation history", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return [_save(fig, out, "history", "Optimisation history")]


PROGRESS_STYLES = {
    "running": dict(lw=1.6, ls="-"),
    "pruned": dict(lw=1, ls="--"),
    "done": dict(lw=0.7, ls="-", alpha=0.4),
}


def progress_figure(frame: pd.DataFrame, out: Path, colors: dict[str, str]) -> list[Figure]:
    """Every trial's curve as the workers reported it epoch by epoch, in its experiment's colour:
    running trials (solid, a dot at the latest epoch), pruned ones (dashed, a cross where they were
    stopped), finished ones (thin)."""
    rows = [row for _, row in frame.iterrows() if row["state"] in PROGRESS_STYLES and _reported(row)[1]]
    if not any(row["state"] != "done" for row in rows):
        return []  # nothing running or pruned: the learning curves figure says the rest
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    seen = set()
    for row in sorted(rows, key=lambda r: list(PROGRESS_STYLES)[::-1].index(r["state"])):  # running on top
        epochs, values = _reported(row)
        state, experiment = row["state"], row["experiment"]
        label = f"{experiment}: {state}"
        ax.plot(
            epochs,
            values,
            **PROGRESS_STYLES[state],
            color=colors[experiment],
            gid=tag(experiment),
            label=None if label in seen else label,
        )
        seen.add(label)
        if state != "done":
            ax.scatter(
                epochs[-1:],
                values[-1:],
                marker="x" if state == "pruned" else "o",
                s=18,
                color=colors[experiment],
                zorder=4,
                gid=tag(experiment),
            )
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(curve_label(frame))
    ax.set_title("Trials as they ran (x: pruned there; o: running, latest epoch)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return [_save(fig, out, "progress", "Trials as they ran: running, pruned and finished")]


def _reported(row: pd.Series) -> tuple[list[int], list[float]]:
    """(epochs, validation accuracies) of a trial: its live curve, else its result's history
    (trials finished before curves were reported, and imports)."""
    measured = [e for e in row["curve"] or row["history"] if e.validation_accuracy is not None]
    return [e.epoch for e in measured], [e.validation_accuracy for e in measured]


def learning_curves_figure(done: pd.DataFrame, out: Path, colors: dict[str, str], top: int = 10) -> list[Figure]:
    best = [row for _, row in done.head(top).iterrows() if row["history"]]
    if not best:
        return []
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    for rank, row in enumerate(best):
        curve = [e.validation_accuracy for e in row["history"]]
        ax.plot(
            range(1, len(curve) + 1),
            curve,
            color=colors[row["experiment"]],
            lw=2.2 - 0.15 * rank,
            alpha=1 - 0.06 * rank,
            gid=tag(row["experiment"]),
            marker="o" if len(curve) < 5 else None,
            ms=4,  # a one-epoch trial is a point, not a line
            label=f"#{rank + 1} {row['experiment']}/{row['tid']} ({row[ACC]:.4f})",
        )
        if pd.notna(row["best_epoch"]):
            ax.scatter([row["best_epoch"]], [curve[int(row["best_epoch"]) - 1]], color="black", s=10, zorder=4)
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(curve_label(done))
    ax.set_title(
        f"Learning curves of the top {len(best)} trials (dots: selected epoch; thinner: lower rank)", fontsize=10
    )
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    return [_save(fig, out, "learning_curves", "Learning curves of the best trials")]


def model_figure(done: pd.DataFrame, out: Path, colors: dict[str, str]) -> list[Figure]:
    models = sorted(done["model"].dropna().unique())
    if len(models) < 2:
        return []
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    groups = [done.loc[done["model"] == m, ACC].to_numpy() for m in models]
    ax.boxplot(groups, widths=0.5, showfliers=False, medianprops={"color": "black"})
    ax.set_xticks(range(1, len(models) + 1), [f"{m}\n(n={len(g)}, best {g.max():.4f})" for m, g in zip(models, groups)])
    rng = np.random.default_rng(0)
    for i, model in enumerate(models):
        for experiment in dict.fromkeys(done["experiment"]):
            part = done.loc[(done["model"] == model) & (done["experiment"] == experiment), ACC]
            ax.scatter(
                i + 1 + rng.uniform(-0.15, 0.15, len(part)),
                part,
                s=14,
                alpha=0.6,
                color=colors[experiment],
                label=experiment if i == 0 else None,
                gid=tag(experiment),
            )
    ax.legend(fontsize=8, loc="lower right")
    ax.set_ylabel(accuracy_label(done))
    ax.set_title("LARNN against LSTM, same protocol", fontsize=10)
    return [_save(fig, out, "larnn_vs_lstm", "LARNN against LSTM")]


def selection_figure(done: pd.DataFrame, out: Path, colors: dict[str, str]) -> list[Figure]:
    data = done[done[TEST].notna()]
    if data.empty:
        return []
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for experiment in dict.fromkeys(data["experiment"]):
        part = data[data["experiment"] == experiment]
        ax.scatter(
            part[ACC], part[TEST], s=16, alpha=0.6, color=colors[experiment], label=experiment, gid=tag(experiment)
        )
    low = min(data[ACC].min(), data[TEST].min())
    high = max(data[ACC].max(), data[TEST].max())
    ax.plot([low, high], [low, high], color="gray", ls="--", lw=1, label="test = validation")
    r = np.corrcoef(data[ACC], data[TEST])[0, 1] if len(data) > 2 else np.nan
    ax.set_xlabel("validation accuracy (selects the epoch)")
    ax.set_ylabel("test accuracy at that epoch")
    ax.set_title(f"Is selection honest? Pearson r = {r:.2f}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_aspect("equal", adjustable="datalim")
    return [_save(fig, out, "validation_vs_test", "Validation against test accuracy")]

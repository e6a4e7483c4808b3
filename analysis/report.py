"""`larnn plot`: every figure of one or several experiments, and an offline index.html."""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

import pandas as pd

from analysis import plots
from analysis.frame import METRICS, finished, trials_frame
from analysis.importance import METHOD, ranking, refusals
from larnn_core.records import TEST_PICKED, VALIDATION_ACCURACY
from workers import confirm
from workers.store import BaseStore

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1,h2{font-weight:600}figure{display:inline-block;margin:0.6em;vertical-align:top}
figure img{max-width:520px;border:1px solid #ddd}figcaption{font-size:0.85em;color:#555}
table{border-collapse:collapse;font-size:0.8em}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
pre{background:#f6f6f6;padding:0.8em;font-size:0.8em;overflow-x:auto}.wide{max-width:100%;overflow-x:auto}"""


def make_report(store: BaseStore, names: list[str], out: Path) -> list[plots.Figure]:
    """Write the figures and index.html under out; returns the figures."""
    frame, hyperparameters = trials_frame(store, names)
    done = finished(frame)
    if done.empty:
        raise ValueError(f"no finished trials in {', '.join(names)} yet: nothing to plot")
    out.mkdir(parents=True, exist_ok=True)  # only once there is something to plot
    experiments = [store.get_experiment(n) for n in names]
    log_names = plots.log_distributed(experiments)
    colors = plots.palette(names)
    importance_figures, table = plots.importance_figure(done, hyperparameters, out, colors)
    unordered = {x.name for x in experiments if x.trial_order == "unordered"}
    figures = (
        plots.history_figure(frame, out, colors, unordered)
        + plots.progress_figure(frame, out, colors)
        + importance_figures
        + plots.pair_figures(done, ranking(table), out, log_names)
        + plots.hyperparameter_figures(done, hyperparameters, out, colors, log_names)
        + plots.learning_curves_figure(done, out, colors)
        + plots.model_figure(done, out, colors)
        + plots.selection_figure(done, out, colors)
    )
    confirmed = {x.name: report for x in experiments if (report := confirm.latest_report(store, x.name))}
    (out / "index.html").write_text(_html(experiments, frame, done, hyperparameters, table, figures, confirmed))
    return figures


TEST_PICKED_CAVEAT = (
    "Caveat: trials marked test-picked come from the 2018 protocol, which evaluated its "
    '"validation" curves on the test set and kept their best epoch; their accuracy is a test-picked '
    "score, optimistic against an honest validation accuracy, and they have no separate test "
    "accuracy. Compare the two kinds only with that in mind."
)


def scrolled(table: str) -> str:
    """A table that scrolls sideways within the page's width instead of running off it."""
    return f"<div class='wide'>{table}</div>"


def _confirmed_html(name: str, report: dict, done) -> list[str]:
    """A confirmation's configurations beside the search's single-training numbers."""
    e = html.escape
    single = done[done["experiment"] == name].set_index("tid")[VALIDATION_ACCURACY]
    rows = [
        {
            "configuration": row["configuration"],
            "search (one training)": "" if row["tid"] not in single else f"{single[row['tid']]:.4f}",
            "done": f"{row['done']}/{row['of']}",
            **{f"{metric} mean [95% interval]": confirm.span(row[metric]) for metric in confirm.METRICS},
            "validation difference with the first": confirm.span(row["difference_with_first"][VALIDATION_ACCURACY])
            if "difference_with_first" in row
            else "",
        }
        for row in report["configurations"]
    ]
    return [
        f"<h2>Confirmed configurations: {e(name)}</h2>",
        f"<p>{e(report['experiment'])}: each configuration trained again with the same {report['seeds']} seeds; "
        "means over the seeds with 95% Student-t intervals, and paired differences with the first "
        "(larnn confirm).</p>",
        scrolled(pd.DataFrame(rows).to_html(index=False)),
    ]


def _html(experiments, frame, done, hyperparameters, table, figures, confirmed) -> str:
    e = html.escape
    title = ", ".join(x.name for x in experiments)
    counts = frame.groupby(["experiment", "state"]).size().unstack(fill_value=0)
    columns = [
        "experiment",
        "tid",
        "protocol",
        "model",
        *METRICS,
        *[h for h in hyperparameters if h in done and h != "model"],
    ]
    best = done.head(10)[columns].dropna(axis="columns", how="all")  # a metric none of them has: no column
    # the selection number named by its protocol (plots.accuracy_name)
    best = best.rename(columns={VALIDATION_ACCURACY: plots.accuracy_name(best).replace(" ", "_")})
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>larnn: {e(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>Search report: {e(title)}</h1>",
        f"<p>{len(frame)} trials, {len(done)} finished; generated {time.strftime('%Y-%m-%d %H:%M')}.</p>",
        *[
            f"<p class='note'>Note: experiment {e(x.name)} failed: {e(x.failure['reason'])}</p>"
            for x in experiments
            if x.failure
        ],
        *([f"<p class='note'>{e(TEST_PICKED_CAVEAT)}</p>"] if (frame["protocol"] == TEST_PICKED).any() else []),
        *[
            f"<p class='note'>Note: {e(x.name)} is left out of the optimisation history: its trials are "
            "unordered (its result files were all written within moments, by a copy or a clone, so their "
            "times do not say when each trial ran).</p>"
            for x in experiments
            if x.trial_order == "unordered"
        ],
        "<h2>Trials by state</h2>",
        counts.to_html(),
        "<h2>Best trials</h2>",
        scrolled(best.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="")),
        *[line for name, report in confirmed.items() for line in _confirmed_html(name, report, done)],
    ]
    if not table.empty:
        parts += [
            f"<h2>Importance</h2><p>{e(METHOD)}.</p>",
            *[f"<p class='note'>{e(sentence)}: its rows below are no ranking.</p>" for sentence in refusals(table)],
            scrolled(table.to_html(index=False, float_format=lambda v: f"{v:.4f}")),
        ]
    parts.append("<h2>Figures</h2>")
    parts += [
        f"<p class='note'>{e(name)} is not drawn against accuracy: it differs only between experiments "
        f"({e(', '.join(values))}), so any difference it shows is the experiments' own.</p>"
        for name, values in plots.between_experiments(done, hyperparameters).items()
    ]
    for stem, caption, _ in figures:
        parts.append(
            f"<figure><a href='{stem}.svg'><img src='{stem}.png' alt='{e(caption)}'></a>"
            f"<figcaption>{e(caption)}</figcaption></figure>"
        )
    parts.append("<h2>Experiments</h2>")
    for x in experiments:
        settings = {k: v for k, v in x.to_document().items() if k != "space"}
        parts += [
            f"<h3>{e(x.name)}</h3><pre>{e(json.dumps(settings, indent=2, default=str))}</pre>",
            f"<p>Space:</p><pre>{e(json.dumps(x.space, indent=2))}</pre>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts)

"""The training protocol, measured: which selection rule, validation split, schedule and weight
averaging make a training's objective predict its test accuracy. Real trainings on the offline
data; prints and writes numbers, asserts nothing.

    python benchmarks/bench_protocol.py [--epochs 15] [--seeds 3] [--jobs 2] [--runs protocol-runs.jsonl]
    python benchmarks/bench_protocol.py --report-only --runs protocol-runs.jsonl

Configurations: four points of the 2018 round-2 space (paper-round2) scaled to fit a 2-core
machine (one LARNN layer of 32 units instead of three of about 68, an LSTM of two, EPOCHS epochs
with the step decay's period scaled alike), each trained with SEEDS seeds under four variants of
the protocol, one change at a time from the base (the 2018 step decay, the raw weights, 5
validation subjects): a cosine schedule, weight averaging (decay 0.99), 8 validation subjects.
Every training evaluates the test split at every epoch as well (`test_curves`), so each selection
rule of larnn_core/selection.py is applied to the same training afterwards, reading validation
only, and its test accuracy is the test curve's value at the epoch it selected: the number a
training under that rule would report (the weights at that epoch are the same).

Per variant and rule: the mean test accuracy at the selected epoch over every training (with a
95 % Student-t interval over the trainings), the mean paired difference with the base's
max-accuracy over the same configuration and seed (and its interval), and the Spearman rank
correlation between the trainings' objectives and their test accuracies (how well the objective
ranks trials by what a search wants), with a bootstrap interval over the trainings, and its
difference with the base max-accuracy's on the same resampled configurations and seeds.

Each finished training is appended to --runs as one JSON line, so a run that stops goes on
where it was.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from larnn_core.hparams import HParams
from larnn_core.records import EpochReport
from larnn_core.selection import RULES, select
from workers import confirm

BASE = dict(batch_size=256, num_layers=1, hidden_size=32, is_stacked_residual=True)
CONFIGS = {  # scaled points of paper-round2 (a LARNN's heads divide its hidden size)
    "larnn-a": dict(
        learning_rate=0.006, l2_weight_reg=0.002, dropout_drop_proba=0.1, attention_heads=4, larnn_window_size=16
    ),
    "larnn-b": dict(
        learning_rate=0.0045,
        l2_weight_reg=0.0005,
        dropout_drop_proba=0.3,
        attention_heads=8,
        larnn_window_size=8,
        larnn_mode="layer",
        use_positional_encoding=True,
    ),
    "larnn-c": dict(
        learning_rate=0.008, l2_weight_reg=0.006, dropout_drop_proba=0.2, attention_heads=4, larnn_window_size=24
    ),
    "lstm": dict(model="lstm", num_layers=2, learning_rate=0.006, l2_weight_reg=0.002, dropout_drop_proba=0.1),
}
DECAY_PERIOD = 0.27  # round 2's decay period, 5.5-50.5 of 100 epochs, about a quarter of the training
VARIANTS = {  # one change at a time from the base
    "base": ({}, 5),
    "cosine": ({"lr_schedule": "cosine"}, 5),
    "averaged": ({"weight_averaging": 0.99}, 5),
    "8-subjects": ({}, 8),
}
BASE_RULE = ("base", "max-accuracy")


def hyperparameters(config: str, variant: str, epochs: int) -> HParams:
    changes, _ = VARIANTS[variant]
    decay = max(1, round(DECAY_PERIOD * epochs))
    return HParams.from_dict(
        {**BASE, **CONFIGS[config], **changes, "training_epochs": epochs, "decay_each_N_epoch": decay}
    )


def run_one(config: str, variant: str, seed: int, epochs: int) -> dict:
    """One training, in a worker process of its own thread."""
    import torch

    from larnn_core import data as har
    from larnn_core.train import train

    torch.set_num_threads(1)
    _, subjects = VARIANTS[variant]
    result = train(
        hyperparameters(config, variant, epochs),
        har.load("hapt", progress=False),
        device="cpu",
        seed=seed,
        validation_subjects=subjects,
        progress=False,
        test_curves=True,
    )
    return dict(
        config=config,
        variant=variant,
        seed=seed,
        epochs=epochs,
        status=result.status,
        error=result.error,
        curves=[e.to_document() for e in result.epochs],
        wall_time_s=result.wall_time_s,
        code_version=result.code_version,
        device=result.device,
        data_source=result.data_source,
    )


def key(run: dict) -> tuple:
    return run["config"], run["variant"], run["seed"], run["epochs"]


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % Student-t interval (larnn confirm's; NaN ends below 2 values)."""
    spread = confirm.interval(values)
    return spread["mean"], *(math.nan if spread[end] is None else spread[end] for end in ("low", "high"))


def spearman(x: list[float], y: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic) if len(set(x)) > 1 and len(set(y)) > 1 else math.nan


def ranks_test(trainings: dict[tuple, tuple[float, float]], keys: list[tuple]) -> float:
    """How well the objective ranks these trainings by test accuracy (Spearman)."""
    return spearman([trainings[k][0] for k in keys], [trainings[k][1] for k in keys])


def percentiles(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    return (float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))) if values else (math.nan, math.nan)


def bootstrap_spearman(trainings: dict, base: dict, resamples: int = 2000) -> tuple[tuple, tuple]:
    """95 % bootstrap intervals of the Spearman correlation, over the trainings resampled, and of
    its difference with the base rule's on the same resampled configurations and seeds."""
    rng = np.random.default_rng(0)
    keys, common = sorted(trainings), sorted(set(trainings) & set(base))
    own, difference = [], []
    for _ in range(resamples):
        own.append(ranks_test(trainings, [keys[i] for i in rng.integers(0, len(keys), len(keys))]))
        pick = [common[i] for i in rng.integers(0, len(common), len(common))]
        difference.append(ranks_test(trainings, pick) - ranks_test(base, pick))
    return percentiles(own), percentiles(difference)


def outcomes(runs: list[dict]) -> dict[tuple[str, str], dict[tuple, tuple[float, float]]]:
    """(variant, rule) -> {(config, seed): (objective, test accuracy at the selected epoch)}."""
    table: dict[tuple[str, str], dict[tuple, tuple[float, float]]] = {}
    for run in runs:
        if run["status"] != "ok":
            continue
        epochs = [EpochReport.from_document(e) for e in run["curves"]]
        for rule in RULES:
            chosen = select(rule, epochs)
            if chosen is not None:
                test = epochs[chosen.epoch - 1].test_accuracy
                table.setdefault((run["variant"], rule), {})[(run["config"], run["seed"])] = (chosen.objective, test)
    return table


def report(runs: list[dict]) -> dict:
    table = outcomes(runs)
    base = table.get(BASE_RULE, {})
    rows = []
    for (variant, rule), trainings in sorted(
        table.items(), key=lambda item: (list(VARIANTS).index(item[0][0]), RULES.index(item[0][1]))
    ):
        tests = [test for _, test in trainings.values()]
        paired = [test - base[k][1] for k, (_, test) in trainings.items() if k in base]
        objective = [o for o, _ in trainings.values()]
        interval, difference = bootstrap_spearman(trainings, base)
        common = sorted(set(trainings) & set(base))
        rows.append(
            dict(
                variant=variant,
                rule=rule,
                trainings=len(trainings),
                test=t_interval(tests),
                paired_with_base=t_interval(paired) if len(paired) > 1 else None,
                spearman=spearman(objective, tests),
                spearman_interval=interval,
                spearman_minus_base=ranks_test(trainings, common) - ranks_test(base, common),
                spearman_minus_base_interval=difference,
            )
        )
    return dict(rows=rows)


def print_report(summary: dict) -> None:
    heading = ("variant", "rule", "n", "test accuracy [95% CI]", "vs base", "Spearman", "vs base")
    print("{:<11} {:<13} {:>3} {:>25} {:>27} {:>20} {:>20}".format(*heading))
    for row in summary["rows"]:
        mean, low, high = row["test"]
        paired = row["paired_with_base"]
        paired_text = "-" if paired is None else f"{paired[0]:+.4f} [{paired[1]:+.4f}, {paired[2]:+.4f}]"
        (low_r, high_r), (low_d, high_d) = row["spearman_interval"], row["spearman_minus_base_interval"]
        print(
            f"{row['variant']:<11} {row['rule']:<13} {row['trainings']:>3} {mean:.4f} [{low:.4f}, {high:.4f}] "
            f"{paired_text:>27} {row['spearman']:+.2f} [{low_r:+.2f}, {high_r:+.2f}] "
            f"{row['spearman_minus_base']:+.2f} [{low_d:+.2f}, {high_d:+.2f}]"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="trainings at once, one thread each")
    parser.add_argument("--runs", type=Path, default=Path("protocol-runs.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("bench_protocol.json"))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    done = [json.loads(line) for line in args.runs.read_text().splitlines()] if args.runs.exists() else []
    if not args.report_only:
        have = {key(run) for run in done}
        todo = [
            (config, variant, seed, args.epochs)
            for seed in range(args.seeds)
            for variant in VARIANTS
            for config in CONFIGS
            if (config, variant, seed, args.epochs) not in have
        ]
        random.Random(0).shuffle(todo)  # the variants progress together if the run stops early
        started = time.time()
        with ProcessPoolExecutor(args.jobs) as pool, args.runs.open("a") as sink:
            futures = [pool.submit(run_one, *job) for job in todo]
            for count, future in enumerate(as_completed(futures), 1):
                run = future.result()
                sink.write(json.dumps(run) + "\n")
                sink.flush()
                done.append(run)
                print(f"[{count}/{len(todo)}, {time.time() - started:.0f} s] {key(run)} {run['status']}", flush=True)
    runs = [run for run in done if run["epochs"] == args.epochs]
    summary = dict(
        machine=f"{platform.machine()}, {platform.processor() or 'cpu'}",
        epochs=args.epochs,
        seeds=args.seeds,
        configs=CONFIGS,
        variants={name: dict(changes=c, validation_subjects=s) for name, (c, s) in VARIANTS.items()},
        **report(runs),
    )
    print_report(summary)
    args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

"""workers' sub-commands: `larnn submit | worker | status | best | search | confirm`."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from larnn_core import data as har
from larnn_core.cli import nonnegative_int, nonnegative_seconds, positive_int, seconds, seed
from larnn_core.records import VALIDATION_ACCURACY
from larnn_core.selection import DEFAULT_RULE, RULES, VALIDATION_SUBJECTS
from larnn_core.selection import HELP as SELECTION_HELP
from workers import confirm, pruners, report
from workers.experiment import ALGORITHMS, LIARS, submit
from workers.records import DEFAULT_KEEP, Experiment, models_kept
from workers.slots import MAX_SLOTS
from workers.stops import duration
from workers.store import BaseStore, open_store, store_url

STORE_HELP = (
    "trial store URL: sqlite:///PATH or mongodb://USER:PW@HOST:PORT/DB (default: $LARNN_STORE, else sqlite:///larnn.db)"
)


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


def _experiment_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("space", help="a built-in space (larnn spaces list) or a space file")
    parser.add_argument("--name", required=True, help="experiment name (letters, digits, - _ .)")
    parser.add_argument("--max-evals", type=positive_int, default=100, help="trials to run (default 100)")
    parser.add_argument("--algorithm", choices=ALGORITHMS, default="tpe", help="hyperopt algorithm (default tpe)")
    parser.add_argument("--seed", type=seed, default=0, help="seeds the suggestions and each trial's training")
    parser.add_argument("--epochs", type=positive_int, default=None, help="override every trial's training_epochs")
    parser.add_argument("--source", choices=har.SOURCES, default="hapt", help="data source (default hapt)")
    parser.add_argument(
        "--validation-subjects",
        type=positive_int,
        default=VALIDATION_SUBJECTS,
        help=f"training subjects held out for validation (default {VALIDATION_SUBJECTS})",
    )
    parser.add_argument(
        "--selection",
        choices=RULES,
        default=DEFAULT_RULE,
        help=SELECTION_HELP,
    )
    parser.add_argument(
        "--points",
        default=None,
        metavar="FILE",
        help="a YAML or JSON list of points (hyperparameter mappings) to run first, each checked against the space",
    )
    parser.add_argument(
        "--warm-start",
        default=None,
        metavar="EXPERIMENT[,EXPERIMENT...]",
        help="seed the suggestions with these experiments' finished trials whose points fit the "
        "space (imported 2018 results too); the others are left out and counted",
    )
    parser.add_argument(
        "--stop-after-no-improvement",
        type=positive_int,
        default=None,
        metavar="N",
        help="stop the experiment after N completed trials without a new best",
    )
    parser.add_argument(
        "--stop-after",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="stop the experiment this long after it was submitted (3600, 90m, 12h, 2d)",
    )
    parser.add_argument(
        "--liar",
        choices=LIARS,
        default="none",
        help="running trials count in each suggestion with the worst, mean or best finished "
        "loss (constant liar); default none: TPE already counts them as the worst",
    )
    parser.add_argument(
        "--keep-artifacts",
        type=_keep,
        default=DEFAULT_KEEP,
        metavar="top-K|all|none",
        help="the trained models (selected-epoch weights) kept in the store once trials end, for "
        f"`larnn export`: the K best trials', every trial's, or none (default {DEFAULT_KEEP})",
    )
    parser.add_argument(
        "--test-curves",
        action="store_true",
        help="evaluate the test split at every epoch (test-picked curves, for protocol studies; "
        "the epoch is still chosen on validation); default: once, at the selected epoch",
    )
    add_pruner_options(parser)
    parser.add_argument("--store", default=None, help=STORE_HELP)


def slot_count(text: str) -> int:
    """argparse type for --slots: 1 to MAX_SLOTS (each slot is a thread, a CUDA stream and its graphs' memory)."""
    value = positive_int(text)
    if value > MAX_SLOTS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SLOTS}, got {value}")
    return value


def _keep(text: str) -> str:
    try:
        models_kept(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("keep_artifacts ")) from None
    return text


def _duration(text: str) -> float:
    try:
        return duration(text)
    except ValueError as error:  # argparse reports an ArgumentTypeError's own message
        raise argparse.ArgumentTypeError(str(error).removeprefix("--stop-after: ")) from None


def add_pruner_options(parser: argparse.ArgumentParser, kind: bool = True) -> None:
    """--pruner (unless kind is False) and every registered pruner's parameters (workers/pruners.py),
    each under its flag."""
    if kind:
        parser.add_argument(
            "--pruner",
            choices=tuple(pruners.PRUNERS),
            default=pruners.DEFAULT,
            help="stop hopeless trials early: median, asha (asynchronous successive halving) or "
            f"hyperband (over ASHA brackets); default {pruners.DEFAULT}",
        )
    for flag, parameter in pruners.flags().items():
        kinds = [kind for kind, cls in pruners.PRUNERS.items() if parameter in cls.parameters]
        parser.add_argument(
            flag,
            type=positive_int,
            default=None,
            dest=parameter.name,
            metavar=parameter.name.upper(),
            help=f"{', '.join(kinds)}: {parameter.help} (default {parameter.default})",
        )


def pruner_settings(args: argparse.Namespace) -> pruners.PrunerSettings:
    """The --pruner options as an experiment's PrunerSettings; a refusal names the flag."""
    flags = pruners.flags()
    try:
        return pruners.PrunerSettings.of(args.pruner, **{p.name: getattr(args, p.name) for p in flags.values()})
    except pruners.PrunerSettingError as error:
        flag = next((flag for flag, p in flags.items() if p.name == error.parameter), "--pruner")
        raise ValueError(f"{flag} {error.problem}") from None


def _submit_options(args) -> dict:
    pruner = pruner_settings(args)
    warm = [name.strip() for name in args.warm_start.split(",")] if args.warm_start else []
    return dict(
        points=args.points,
        warm=warm,
        max_evals=args.max_evals,
        algorithm=args.algorithm,
        seed=args.seed,
        epochs=args.epochs,
        source=args.source,
        validation_subjects=args.validation_subjects,
        selection=args.selection,
        pruner=pruner,
        liar=args.liar,
        stop_after_no_improvement=args.stop_after_no_improvement,
        stop_after_s=args.stop_after,
        keep_artifacts=args.keep_artifacts,
        test_curves=args.test_curves,
    )


def register_submit(subparsers) -> None:
    parser = subparsers.add_parser(
        "submit",
        help="register an experiment; workers anywhere then run it",
        description="Validate a search space and register an experiment in the trial store. Returns at once; "
        "start `larnn worker` processes (one per GPU) on any machine that reaches the store.",
    )
    _experiment_options(parser)
    parser.add_argument(
        "--extend-to", type=positive_int, default=None, help="raise an existing experiment's budget to N"
    )
    parser.set_defaults(run=_submit)


def _submit(args) -> None:
    url = store_url(args.store)
    trials = open_store(url)
    experiment = submit(trials, args.name, args.space, extend_to=args.extend_to, **_submit_options(args))
    store = "" if args.store is None else f" --store '{redact(url)}'"
    verb = "extended" if args.extend_to is not None else "submitted"
    print(f"{verb} {experiment.name!r}: {experiment.max_evals} trials, {experiment.algorithm}, store {redact(url)}")
    if args.points and args.extend_to is None:
        print(f"  queued first:   the {len(trials.trials(args.name))} points of {args.points}")
    if experiment.warm_start:
        warm = experiment.warm_start
        print(
            f"  warm start:     {len(warm['trials'])} finished trial(s) of {', '.join(warm['experiments'])}; "
            f"{warm['left_out']} left out (their points do not fit the space)"
        )
    print(f"  start workers:  larnn worker{store} --experiment {experiment.name} --devices all")
    print(f"  watch:          larnn status {experiment.name}{store}")
    print(f"  best trials:    larnn best {experiment.name}{store}")


def register_worker(subparsers) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="run trials from the store until stopped (one per GPU)",
        description="A long-lived worker: takes the next queued trial of any experiment with budget left "
        "(or only --experiment), suggesting one when none is queued, trains it and reports. "
        "SIGTERM or Ctrl-C stops at the next epoch boundary and gives the trial back. "
        "With --devices, one worker process per device, each restarted if it dies.",
    )
    parser.add_argument("--store", default=None, help=STORE_HELP)
    parser.add_argument("--experiment", default=None, help="work only on this experiment")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto): one worker")
    where.add_argument(
        "--devices",
        default=None,
        metavar="LIST",
        help="all (every visible CUDA device) or a list such as cuda:0,cuda:2 or cpu,cpu: "
        "one worker process per entry, restarted if it dies; SIGTERM stops them all",
    )
    parser.add_argument(
        "--slots",
        type=slot_count,
        default=1,
        metavar="N",
        help="trials at once on each device, in one process: one thread, CUDA stream and set of "
        "CUDA graphs each (default 1; README, Throughput, says when more pay)",
    )
    parser.add_argument("--max-trials", type=positive_int, default=None, help="exit after this many trials (per slot)")
    parser.add_argument(
        "--idle-exit",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="exit after this long with nothing to do (for batch schedulers)",
    )
    parser.add_argument(
        "--heartbeat", type=seconds, default=10.0, metavar="SECONDS", help="heartbeat period (default 10)"
    )
    parser.add_argument(
        "--stale-after",
        type=seconds,
        default=120.0,
        metavar="SECONDS",
        help="requeue running trials without a heartbeat for this long (default 120)",
    )
    parser.add_argument(
        "--max-attempts", type=positive_int, default=3, help="reservations before a trial is failed (default 3)"
    )
    parser.add_argument(
        "--checkpoint-every",
        type=nonnegative_seconds,
        default=0.0,
        metavar="SECONDS",
        help="keep a trial's checkpoint at an epoch boundary once this long has passed since the last "
        "(default 0: every epoch); a stop request and the last epoch always keep one. A fleet of fast "
        "GPUs sets it to bound what checkpoints write to the store",
    )
    parser.set_defaults(run=_worker)


def _worker(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.devices is not None:
        return _supervise(args)
    from larnn_core.provenance import resolve_device
    from workers.slots import run_slots
    from workers.supervisor import CANNOT_GO_ON
    from workers.worker import ExperimentFailed, SpoolUnwritable, Worker, wait_for_store

    resolve_device(args.device)  # a missing GPU is an error now, not at the first trial
    store = wait_for_store(lambda: open_store(args.store))

    def make_worker(owner: str | None) -> Worker:
        return Worker(
            store,
            experiment=args.experiment,
            device=args.device,
            owner=owner,
            heartbeat_s=args.heartbeat,
            stale_after_s=args.stale_after,
            max_attempts=args.max_attempts,
            idle_exit_s=args.idle_exit,
            max_trials=args.max_trials,
            checkpoint_every_s=args.checkpoint_every,
        )

    try:
        run_slots(make_worker, args.slots, args.device)
    except (SpoolUnwritable, ExperimentFailed) as error:
        print(f"larnn worker: error: {error}", file=sys.stderr)
        return CANNOT_GO_ON
    return 0


def _supervise(args) -> int:
    from workers.supervisor import Supervisor, parse_devices

    def cuda_count() -> int:
        import torch

        return torch.cuda.device_count()

    devices = parse_devices(args.devices, cuda_count)
    passed_on = [
        ("--experiment", args.experiment),
        ("--slots", args.slots),
        ("--max-trials", args.max_trials),
        ("--idle-exit", args.idle_exit),
        ("--heartbeat", args.heartbeat),
        ("--stale-after", args.stale_after),
        ("--max-attempts", args.max_attempts),
        ("--checkpoint-every", args.checkpoint_every),
    ]
    worker_args = [str(part) for option, value in passed_on if value is not None for part in (option, value)]
    return Supervisor(devices, worker_args, store_url(args.store)).run()


def register_status(subparsers) -> None:
    parser = subparsers.add_parser(
        "status",
        help="progress of experiments: trials by state, best so far, workers, ETA",
        description="Trials by state (pruned counted apart), best so far, live workers and an "
        "ETA; with NAMEs, also each running trial's latest epoch and accuracy.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="experiments (default: all)")
    parser.add_argument("--store", default=None, help=STORE_HELP)
    parser.set_defaults(run=_status)


def _status(args) -> None:
    store = open_store(args.store, read_only=True)
    for name in args.names:
        store.get_experiment(name)  # unknown names are an error, not an empty table
    snapshot = report.read(store, args.names or None)
    rows = report.status_rows(snapshot)
    print(report.table(rows) if rows else f"no experiments in {redact(store_url(args.store))}")
    for line in report.running_lines(snapshot) if args.names else []:
        print(line)
    for line in report.worker_lines(snapshot) + report.failures(snapshot):
        print(line)


def register_best(subparsers) -> None:
    parser = subparsers.add_parser("best", help="the best trials of an experiment")
    parser.add_argument("name", help="experiment")
    parser.add_argument("--top", type=positive_int, default=10, help="how many (default 10)")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    parser.add_argument(
        "--wide",
        action="store_true",
        help="table: every hyperparameter as a column (default: those the trials share once above the "
        f"table, the others as columns where they fit in {report.WIDTH} characters, else under each trial)",
    )
    parser.add_argument(
        "--include-pruned", action="store_true", help="rank pruned trials too (their accuracy comes from fewer epochs)"
    )
    parser.add_argument("--store", default=None, help=STORE_HELP)
    parser.set_defaults(run=_best)


def _best(args) -> None:
    store = open_store(args.store, read_only=True)
    failure = store.get_experiment(args.name).failure
    rows = confirm.with_confirmed(store, args.name, report.best_trials(store, args.name, args.top, args.include_pruned))
    print(report.format_best(rows, args.format, args.wide))
    if failure:  # on stderr, so that json and csv output stay parseable
        print(f"note: experiment {args.name} failed: {failure['reason']}", file=sys.stderr)


def register_search(subparsers) -> None:
    parser = subparsers.add_parser(
        "search",
        help="submit and run an experiment here with local worker processes",
        description="The embedded mode: submit the experiment to the store (default: SQLite in the working "
        "directory), run --workers local worker processes with a live progress bar, and print the "
        "best trials at the end. Ctrl-C stops every worker at its next epoch boundary; "
        "`larnn worker --experiment NAME` continues later.",
    )
    _experiment_options(parser)
    parser.add_argument("--workers", type=positive_int, default=1, help="local worker processes (default 1)")
    parser.add_argument("--device", default="auto", help="device for every worker (default auto)")
    parser.add_argument(
        "--slots",
        type=slot_count,
        default=1,
        metavar="N",
        help="trials at once in each worker process (larnn worker --slots; default 1)",
    )
    parser.add_argument("--logs", default="larnn-logs", help="directory for the workers' logs (default larnn-logs)")
    parser.set_defaults(run=_search)


def _search(args) -> int:
    if args.workers < 1:
        raise ValueError(f"--workers must be positive, got {args.workers}")
    from larnn_core.provenance import resolve_device

    resolve_device(args.device)  # a bad or missing device is an error now, not in every worker's log
    url = store_url(args.store)
    store = open_store(url)
    experiment = submit(store, args.name, args.space, **_submit_options(args))
    har.load(args.source)  # prepared once here, with a progress bar, rather than in every worker
    if _run_here(store, url, experiment, args) != 0:
        return 130
    print(report.format_best(report.best_trials(store, args.name, 5), "table"))
    where = "" if args.store is None else f" --store '{redact(url)}'"
    print(f"the best trial's model: larnn export {args.name}{where} --out {args.name}.pt")
    return 0


def _run_here(store: BaseStore, url: str, experiment: Experiment, args) -> int:
    """Run args.workers local worker processes on the experiment until every trial is final, with
    a progress bar; 130 after Ctrl-C or SIGTERM (the workers stopped at their next epoch boundary)."""
    name = experiment.name
    logs = Path(args.logs) / name
    logs.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "larnn_core.cli",
        "worker",
        "--experiment",
        name,
        "--device",
        args.device,
        "--slots",
        str(args.slots),
    ]
    # the store through the environment (a command line is public: `ps`); local CPU workers share
    # the cores instead of each spinning one thread per core
    env = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // args.workers)), **os.environ, "LARNN_STORE": url}
    workers = [
        subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=open(logs / f"worker-{i}.log", "w"),
            env=env,
            start_new_session=True,
        )
        for i in range(args.workers)
    ]
    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM stops the workers as Ctrl-C does
    print(f"{args.workers} worker(s) on {name!r}, logs in {logs}/", file=sys.stderr)
    total, best = experiment.max_evals, []
    try:
        with tqdm(total=total, desc=name, unit="trial") as bar:
            while True:
                counts = store.counts(name)
                final = counts["done"] + counts["failed"] + counts["pruned"]
                if final != bar.n:  # trials are read only when one has finished, not every poll
                    best = report.best_trials(store, name, 1)
                bar.update(final - bar.n)
                bar.set_postfix(
                    running=counts["running"],
                    failed=counts["failed"],
                    pruned=counts["pruned"],
                    best_val=f"{best[0][VALIDATION_ACCURACY]:.4f}" if best else "-",
                )
                if final >= total:
                    break
                if all(w.poll() is not None for w in workers):
                    raise ChildProcessError(f"every worker exited before the experiment finished; see {logs}/")
                time.sleep(1.0)
    except KeyboardInterrupt:
        print(f"\nstopping {len(workers)} worker(s) at their next epoch boundary...", file=sys.stderr)
        _stop(workers)
        print(f"stopped; continue with: larnn worker --store '{redact(url)}' --experiment {name}", file=sys.stderr)
        return 130
    _stop(workers)
    return 0


def register_confirm(subparsers) -> None:
    parser = subparsers.add_parser(
        "confirm",
        help="train an experiment's best configurations again over several seeds, with intervals",
        description="Is the search's best configuration really the best? Trains the top --top configurations "
        "of EXPERIMENT again with --seeds new seeds each (the same seeds for every configuration, so "
        "their differences are paired), as the trials of a confirmation experiment (default "
        "EXPERIMENT-confirm) that ordinary workers run. Prints, per configuration, the mean and 95% "
        "interval over the seeds of the selected epoch's validation accuracy and of the test accuracy "
        "there, re-ranked, and the paired differences with the first. Run again to see the report of a "
        "confirmation made earlier (its missing trials are run first); `larnn best EXPERIMENT` then "
        "shows the confirmed figures beside the search's.",
    )
    parser.add_argument("experiment", help="the search whose best configurations are confirmed")
    parser.add_argument("--top", type=positive_int, default=3, help="how many configurations (default 3)")
    parser.add_argument("--seeds", type=positive_int, default=3, help="trainings per configuration (default 3)")
    parser.add_argument(
        "--baseline",
        choices=("lstm",),
        default=None,
        help="also train the LSTM of the best configuration's size, optimiser and schedule, with the same seeds",
    )
    parser.add_argument("--name", default=None, help="the confirmation experiment (default EXPERIMENT-confirm)")
    parser.add_argument("--epochs", type=positive_int, default=None, help="epochs per training (default: the search's)")
    parser.add_argument("--seed", type=seed, default=None, help="the seeds' root (default: the search's seed + 1)")
    parser.add_argument(
        "--workers",
        type=nonnegative_int,
        default=1,
        help="local worker processes that run it here (default 1); 0: only register it, for "
        "`larnn worker --experiment NAME` anywhere",
    )
    parser.add_argument("--device", default="auto", help="device for every local worker (default auto)")
    parser.add_argument("--slots", type=slot_count, default=1, metavar="N", help="trials at once per worker")
    parser.add_argument("--logs", default="larnn-logs", help="directory for the workers' logs (default larnn-logs)")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--store", default=None, help=STORE_HELP)
    parser.set_defaults(run=_confirm)


def _confirm(args) -> int:
    url = store_url(args.store)
    store = open_store(url)
    if args.workers:  # a bad or missing device is an error now, before anything is written
        from larnn_core.provenance import resolve_device

        resolve_device(args.device)
    name = args.name or confirm.confirmation_name(args.experiment)
    existing = {e.name: e for e in store.experiments()}.get(name)
    if existing is None:
        experiment = confirm.make_confirmation(
            store,
            args.experiment,
            top=args.top,
            seeds=args.seeds,
            baseline=args.baseline,
            name=name,
            epochs=args.epochs,
            seed=args.seed,
        )
        print(
            f"confirmation {name!r}: {len(experiment.confirms['configurations'])} configuration(s) of "
            f"{args.experiment!r} x {args.seeds} seeds = {experiment.max_evals} trainings",
            file=sys.stderr,
        )
    elif (existing.confirms or {}).get("experiment") != args.experiment:
        raise ValueError(f"experiment {name!r} exists and does not confirm {args.experiment!r}; choose another --name")
    else:
        experiment = existing  # made earlier: what a crash left unqueued, its missing trials, then its report
        confirm.queue(store, experiment)
    counts = store.counts(name)
    if args.workers and counts["queued"] + counts["running"]:
        har.load(experiment.objective.source)
        if _run_here(store, url, experiment, args) != 0:
            return 130
    elif counts["queued"] + counts["running"]:
        where = "" if args.store is None else f" --store '{redact(url)}'"
        print(f"start workers: larnn worker{where} --experiment {name} --devices all", file=sys.stderr)
    print(confirm.format_report(confirm.confirmation_report(store, name), args.format))
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _stop(workers: list[subprocess.Popen]) -> None:
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    for w in workers:
        w.wait()

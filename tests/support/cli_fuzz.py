"""The whole `larnn` command line as a hostile user would drive it: argv generated from the parser
itself (every sub-command and option), with values drawn from numbers, text and the files and
store URLs of a prepared folder (a store, another program's database, a FIFO, /dev/zero, ...).

Each case runs in-process. Where a valid command would go on to long work (train, prepare data,
run workers, serve), `Reached` is raised instead: the case is then counted as accepted, since
everything before that point took its input. Otherwise the case must end with exit 0, 2 or 3 and,
if refused, at most one line per problem of at most MAX_MESSAGE characters, with every file of the
folder unchanged (a store compared by its rows, not its bytes: a reader may checkpoint its WAL).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import yaml
from hypothesis import strategies as st

from larnn_core import cli
from tests.support.searches import result_2018
from tests.support.trees import trees

MULTI_LINE = {"spaces", "import-results"}  # a line per file or problem, each bounded
CASE_TIMEOUT_S = 30  # a case that takes longer hangs


class Reached(BaseException):
    """A valid command got to its long work (BaseException: the CLI's handlers let it through)."""


class Hang(BaseException):
    pass


def prepare(folder: Path) -> None:
    """The files that values point at."""
    from tests.support.store_contract import experiment
    from workers.store import open_store

    store = open_store(f"sqlite:///{folder / 'store.db'}")
    store.create_experiment(experiment("exp"))
    store.close()
    with sqlite3.connect(folder / "foreign.db") as db:
        db.execute("CREATE TABLE photos (id INTEGER)")
    (folder / "text.txt").write_text("hello\n")
    (folder / "space.yaml").write_text("space:\n  hidden_size: {quniform: [8, 16, 4]}\n  training_epochs: 1\n")
    (folder / "points.yaml").write_text("- {hidden_size: 8}\n")
    (folder / "result.json").write_text(json.dumps(result_2018(0.005, 0.9)))
    os.mkfifo(folder / "fifo")


def values(folder: Path) -> st.SearchStrategy[str]:
    words = [
        *["0", "1", "-1", "2", "3", "64", "65", "100000", "1e400", "nan", "inf", "-inf", "0.5", "9" * 400],
        *["", " ", "x" * 5000, "é", "a\nb", ";", "a/../b", "--", "-x"],
        *["smoke", "paper-round1", "larnn-vs-lstm", "nosuch", "exp", "new", "list", "show", "check"],
        *["auto", "cpu", "cuda", "cuda:0", "cuda:-1", "mps", "meta", "all", "cpu,cpu", "cpu,gpu0"],
        *["tpe", "rand", "none", "asha", "median", "hapt", "uci", "larnn", "lstm", "json", "csv", "table"],
        *["127.0.0.1", "0.0.0.0", "{}", "[1]", '{"batch_size": 1e999}', '{"hidden_size": "big"}', '{"x": 1}'],
        *[str(folder / name) for name in ("missing", "fifo", "text.txt", "space.yaml", "points.yaml", GENERATED)],
        *[str(folder / name) for name in ("result.json", "foreign.db", "store.db", "out/x.csv")],
        *[str(folder), "/dev/zero", "/", (folder / "missing.zip").as_uri(), "file:///dev/zero", "ftp://x"],
        *[f"sqlite:///{folder / name}" for name in ("store.db", "new.db", "foreign.db", "fifo", GENERATED)],
        *[f"sqlite:///{folder}", "sqlite:///", "mongodb://", "mongodb://h:99999", "mongodb://@/x"],
    ]
    return st.sampled_from(words) | st.text(st.characters(exclude_characters="\x00"), max_size=30)


NUMBERS = ("1", "2", "3", "5", "0.5", "10")
STORES = ("store.db", "new.db", "sub/new.db")


def likely(option: argparse.Action, folder: Path) -> st.SearchStrategy[str]:
    """Values an option takes when it is given right, so that cases get past argparse."""
    if option.choices:
        return st.sampled_from(list(option.choices))
    if option.dest == "store":
        return st.sampled_from([f"sqlite:///{folder / name}" for name in STORES])
    if option.dest in ("name", "experiment"):
        return st.sampled_from(["exp", "new", "fz-1"])
    if option.type is not None and option.type is not str:  # the CLI's number types
        return st.sampled_from(NUMBERS)
    files = ("space.yaml", "points.yaml", "out/x", "result.json", GENERATED, GENERATED)
    return st.sampled_from([str(folder / name) for name in files])


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


GENERATED = "generated"  # the file each case writes first: a space, points, config or result of any content


def contents() -> st.SearchStrategy[bytes]:
    """What a generated input file holds: any bytes, or a JSON or YAML tree of the names files use."""
    return (
        st.binary(max_size=300)
        | trees.map(lambda tree: json.dumps(tree).encode())
        | trees.map(lambda tree: yaml.safe_dump(tree, allow_unicode=True).encode())
    )


@st.composite
def cases(draw, folder: Path) -> tuple[list[str], bytes]:
    """A command line and the content of the generated file it may name: a sub-command (and its
    action), some of its options and its positionals, each value drawn from the option's likely
    values or from values(folder)."""
    parser = cli.build_parser()
    commands = subcommands(parser)
    name = draw(st.sampled_from(sorted(commands)))
    argv, command = [name], commands[name]
    if any(isinstance(a, argparse._SubParsersAction) for a in command._actions):
        actions = subcommands(command)
        action = draw(st.sampled_from(sorted(actions)))
        argv, command = [*argv, action], actions[action]
    value = values(folder)
    for option in command._actions:
        if isinstance(option, argparse._HelpAction) and draw(st.integers(0, 30)) != 0:
            continue  # --help now and then
        if option.option_strings:
            if not (option.required or draw(st.booleans())):
                continue
            argv.append(option.option_strings[-1])
            if option.nargs == 0:
                continue
            argv.append(draw(likely(option, folder) | value))
        else:
            count = {"+": draw(st.integers(1, 3)), "*": draw(st.integers(0, 2))}.get(option.nargs, 1)
            argv += [draw(value) for _ in range(count)]
    return argv, draw(contents())


def snapshot(folder: Path) -> dict[str, str]:
    """Each file's digest, a SQLite database's by its rows (its bytes move with checkpoints);
    the -wal and -shm files that come and go with connections left out."""
    state = {}
    for path in sorted(folder.rglob("*")):
        if path.name.endswith(("-wal", "-shm", "-journal")):
            continue
        if path.is_dir() or path.is_fifo():
            state[str(path)] = "folder" if path.is_dir() else "fifo"
            continue
        data = path.read_bytes()
        if data.startswith(b"SQLite format 3\x00"):
            with contextlib.suppress(sqlite3.DatabaseError):  # a damaged one: by its bytes
                with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
                    data = "\n".join(db.iterdump()).encode()
        state[str(path)] = hashlib.sha256(data).hexdigest()
    return state


@dataclasses.dataclass
class Outcome:
    kind: str  # accepted, refused, traceback, hang, bad exit, long message, store changed
    argv: list[str]
    detail: str = ""


def run(argv: list[str], content: bytes, folder: Path) -> Outcome:
    """One case, judged."""
    (folder / GENERATED).write_bytes(content)
    before = snapshot(folder)
    out, err = io.StringIO(), io.StringIO()

    def hang(*_):
        raise Hang()

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(CASE_TIMEOUT_S)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
    except Reached:
        return Outcome("accepted", argv)
    except SystemExit as exit:  # argparse: --help (0) or a refusal (2)
        code = exit.code
    except Hang:
        return Outcome("hang", argv)
    except Exception as error:  # noqa: BLE001 (what the harness looks for)
        return Outcome("traceback", argv, f"{type(error).__name__}: {str(error)[:300]}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    if code not in (0, 2, 3):
        return Outcome("bad exit", argv, f"exit {code}")
    if code == 0:
        return Outcome("accepted", argv)
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    too_many = len(lines) > 1 and argv[0] not in MULTI_LINE
    if not lines or too_many or any(len(line) > cli.MAX_MESSAGE for line in lines):
        return Outcome("long message", argv, err.getvalue()[:600])
    after = snapshot(folder)
    changed = sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))
    if changed:
        return Outcome("store changed", argv, f"{changed[:3]}: {lines[0]}")
    return Outcome("refused", argv, lines[0])


def isolate(monkeypatch, folder: Path) -> None:
    """Cases run in folder (the default store, larnn.db, is created there), with no $LARNN_STORE;
    where a valid command would start long work, Reached is raised."""
    monkeypatch.chdir(folder)
    monkeypatch.delenv("LARNN_STORE", raising=False)
    _long_work_reached(monkeypatch)


def _long_work_reached(monkeypatch) -> None:
    import analysis.dashboard
    import larnn_core.data
    import larnn_core.train
    import workers.slots
    import workers.supervisor

    def reached(*args, **kwargs):
        raise Reached()

    monkeypatch.setattr(larnn_core.data, "load", reached)
    monkeypatch.setattr(larnn_core.train, "train", reached)
    monkeypatch.setattr(workers.slots, "run_slots", reached)
    monkeypatch.setattr(workers.supervisor.Supervisor, "run", reached)
    monkeypatch.setattr(analysis.dashboard, "serve", reached)


def counts(outcomes: list[Outcome]) -> Counter:
    return Counter(outcome.kind for outcome in outcomes)

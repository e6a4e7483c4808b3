"""search_spaces' sub-command: `larnn spaces list|show|check`."""

from __future__ import annotations

import sys

from larnn_core.cli import one_line
from search_spaces.format import Branches, Fixed
from search_spaces.space import builtin_names, builtin_path, load_space


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "spaces",
        help="list, show and check search spaces",
        description="Search spaces are YAML (or JSON) files: each hyperparameter a fixed value or a "
        "distribution. See search_spaces/format.py for the format, and the built-in spaces "
        "(`larnn spaces show NAME`) for examples.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="the built-in spaces").set_defaults(run=_list)
    show = actions.add_parser("show", help="print a built-in space's file")
    show.add_argument("name", help="a name from `larnn spaces list`")
    show.set_defaults(run=_show)
    check = actions.add_parser(
        "check",
        help="validate space files (the same check every submit runs)",
        description="Validate space files: every problem is reported with the file, "
        "the field and what is wrong. Exit status 2 if any file is invalid.",
    )
    check.add_argument("files", nargs="+", metavar="FILE", help="space file, or a built-in name")
    check.set_defaults(run=_check)


def _list(args) -> None:
    for name in builtin_names():
        print(f"{name:<16} {load_space(name).description}")


def _show(args) -> None:
    print(builtin_path(args.name).read_text(), end="")


def _check(args) -> int:
    status = 0
    for file in args.files:
        try:
            space = load_space(file)
        except ValueError as error:  # a checker: every problem, one bounded line each
            for line in str(error).splitlines():
                print(one_line(line), file=sys.stderr)
            status = 2
            continue
        searched = sum(not isinstance(n, Fixed) for n in space.nodes.values())
        branches = sum(isinstance(n, Branches) for n in space.nodes.values())
        print(f"{file}: ok ({len(space.nodes)} entries: {searched} searched, of which {branches} conditional)")
    return status

"""The `larnn` command. Each package registers its sub-commands under the entry-point group
`larnn.commands` (see setup.cfg), so this entry imports none of the higher layers by name."""

from __future__ import annotations

import argparse
import math
import sys
from importlib.metadata import entry_points

GROUP = "larnn.commands"
MAX_SEED = 2**32 - 1  # what numpy's and torch's generators take
MAX_MESSAGE = 400  # characters of a refusal: a file, a field, a reason, even two SHA-256 digests and a URL


def one_line(message: str) -> str:
    """A refusal as one line of at most MAX_MESSAGE characters, however large the input it quotes
    (its middle is cut: the start names the command and file, the end says what is wrong) or
    however many problems it lists (the first, and how many more)."""
    lines = message.strip().splitlines() or [""]
    text = lines[0] + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else "")
    if len(text) <= MAX_MESSAGE:
        return text
    cut = f" ...({len(text)} characters)... "
    keep = (MAX_MESSAGE - len(cut)) // 2
    return text[:keep] + cut + text[-keep:]


class OneLineParser(argparse.ArgumentParser):
    """argparse that refuses a command line in one line (its usage is one --help away), exit 2."""

    def error(self, message: str):
        self.exit(2, one_line(f"{self.prog}: error: {message}") + "\n")


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text[:40]!r}") from None


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse reports a refusal on one line, exit 2)."""
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def seed(text: str) -> int:
    """argparse type: a seed in 0..2^32 - 1."""
    value = _whole_number(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_SEED}, got {text[:40]}")
    return value


def _seconds(text: str, zero_allowed: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text[:40]!r}") from None
    if not (math.isfinite(value) and (value >= 0 if zero_allowed else value > 0)):
        kind = "a non-negative" if zero_allowed else "a positive"
        raise argparse.ArgumentTypeError(f"must be {kind} number of seconds, got {text[:40]}")
    return value


def seconds(text: str) -> float:
    """argparse type: a finite, positive duration in seconds."""
    return _seconds(text, zero_allowed=False)


def nonnegative_seconds(text: str) -> float:
    """argparse type: a finite duration in seconds, 0 included."""
    return _seconds(text, zero_allowed=True)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="larnn",
        description="Hyperparameter optimisation of LARNN (Linear Attention Recurrent Neural Network) on UCI HAR.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for entry in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        entry.load()(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except BrokenPipeError:  # output piped into `head` and the like (an OSError: caught first)
        sys.stderr.close()
        return 0
    except (ValueError, OSError) as error:  # bad input, a missing file, no network: one clear line
        print(one_line(f"larnn {args.command}: error: {error}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"larnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

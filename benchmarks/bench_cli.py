"""How fast the `larnn` command answers. Prints numbers; asserts nothing.

    python benchmarks/bench_cli.py [--repeat 5] [--root DIR] [--out bench.json]

Each command runs as a fresh process (what a user waits for, interpreter start included), in a
scratch directory with an empty SQLite store; the median of --repeat runs is compared with its
target. --root runs another checkout's code (PYTHONPATH) with this interpreter: the same
machine and load measure a change before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPACE = "search_spaces/builtin/paper-round2.yaml"
COMMANDS = {  # arguments after `larnn`, and the target in seconds
    "--help": (["--help"], 0.5),
    "spaces check": (["spaces", "check", SPACE], 0.5),
    "status": (["status"], 1.0),
}


def seconds(root: Path, arguments: list[str], repeat: int) -> float:
    """Median wall time of `python -m larnn_core.cli ARGUMENTS` with root's code first on the path."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    with tempfile.TemporaryDirectory() as scratch:
        env["LARNN_STORE"] = f"sqlite:///{scratch}/larnn.db"
        arguments = [str(root / a) if a == SPACE else a for a in arguments]
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "larnn_core.cli", *arguments],
                cwd=scratch,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=True,
            )
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command; the median is reported")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose code runs (default: this one)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "root": str(args.root.resolve()),
        "commands": {},
    }
    for name, (arguments, target) in COMMANDS.items():
        measured = seconds(args.root.resolve(), arguments, args.repeat)
        report["commands"][name] = {"seconds": round(measured, 3), "target_s": target, "met": measured < target}
        print(f"larnn {name:<14} {measured:6.2f} s   target < {target} s   {'met' if measured < target else 'MISSED'}")
    print(json.dumps(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

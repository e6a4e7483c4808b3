"""Every `larnn` sub-command fuzzed (tests/support/cli_fuzz.py): whatever the command line and
whatever the input file it names, exit
0, 2 or 3, never a traceback or a hang, a refusal in one bounded line, and no file changed by a
refused command. `--fuzz-cases N` runs N cases and prints the counts (CI runs the default)."""

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from tests.support import cli_fuzz

CASES = 150


def test_no_command_line_surprises_a_user(monkeypatch, request, isolated_data_dir):
    folder = Path(tempfile.mkdtemp())
    cli_fuzz.prepare(folder)
    cli_fuzz.isolate(monkeypatch, folder)
    outcomes = []

    @settings(
        max_examples=request.config.getoption("--fuzz-cases") or CASES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(cli_fuzz.cases(folder))
    def case(argv_and_content):
        outcomes.append(cli_fuzz.run(*argv_and_content, folder))

    case()
    counts = cli_fuzz.counts(outcomes)
    print(f"\n{len(outcomes)} command lines: " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())))
    problems = [o for o in outcomes if o.kind not in ("accepted", "refused")]
    report = [f"{o.kind}: larnn {' '.join(map(repr, o.argv))[:300]}\n  {o.detail}" for o in problems[:10]]
    assert not problems, "\n".join(report)

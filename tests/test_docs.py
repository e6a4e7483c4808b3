"""Every file and test the documentation names exists: the repository explains itself."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "docs" / "design.md"]


def test_every_test_the_design_names_exists():
    design = (ROOT / "docs" / "design.md").read_text()
    named = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?((?:`, `\w+)*)`", design)
    assert len(named) >= 7
    for path, first, more in named:
        module = ROOT / path
        assert module.is_file(), path
        functions = {node.name for node in ast.walk(ast.parse(module.read_text())) if isinstance(node, ast.FunctionDef)}
        for name in [first, *re.findall(r"\w+", more)] if first else []:
            assert name in functions, f"{path}::{name}"


def test_every_repository_path_the_docs_name_exists():
    for doc in DOCS:
        for path in re.findall(
            r"`((?:larnn_core|search_spaces|workers|analysis|tests|benchmarks|docs)/[\w/.]+)", doc.read_text()
        ):
            assert (ROOT / path.rstrip(".")).exists(), f"{doc.name}: {path}"


def test_the_design_lists_every_field_of_every_stored_record():
    """docs/design.md, section 5, names each record's fields in one line; the line and the record agree."""
    import dataclasses

    from larnn_core.records import EpochReport, TrainResult
    from workers.records import Attempt, Experiment, Objective, Trial

    design = (ROOT / "docs" / "design.md").read_text()
    section = design[design.index("## 5. The store's documents") :]
    for record in (Experiment, Objective, Trial, Attempt, EpochReport, TrainResult):
        line = re.search(rf"^- `{record.__name__}`: (.+)$", section, re.M)
        assert line, f"docs/design.md, section 5, has no line for {record.__name__}"
        assert re.findall(r"`(\w+)`", line[1]) == [f.name for f in dataclasses.fields(record)], record.__name__

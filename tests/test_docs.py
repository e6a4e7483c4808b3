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
        for path in re.findall(r"`((?:larnn_core|search_spaces|workers|analysis|tests|benchmarks|docs)/[\w/.]+)", doc.read_text()):
            assert (ROOT / path.rstrip(".")).exists(), f"{doc.name}: {path}"

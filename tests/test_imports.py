"""Commands that only read a file or a store answer at once: they must not import torch or numba
(seconds on a small machine), nor hyperopt (which imports scipy) to check a space."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "numba", "hyperopt", "scipy")

LIGHT = f"""
import sys, json
from larnn_core.cli import build_parser
import larnn_core.hparams, search_spaces, workers.store, workers.store.sqlite, workers.store.mongo
import workers.report, analysis.frame, analysis.import2018
build_parser()  # every command's registration, as `larnn --help` runs it
from search_spaces import load_space
load_space("paper-round2")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})))
"""


def test_cli_spaces_stores_and_readers_import_no_torch_numba_or_hyperopt():
    done = subprocess.run([sys.executable, "-c", LIGHT], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


def test_sampling_still_finds_hyperopt():
    """The lazy import is real: a space samples (hyperopt loaded on first use)."""
    import numpy as np

    from search_spaces import load_space

    point = load_space("smoke").sample(np.random.default_rng(0))
    assert point["model"] in ("larnn", "lstm")

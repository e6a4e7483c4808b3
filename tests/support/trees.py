"""Hypothesis strategies for what input files hold: JSON and YAML trees whose keys are often the
names a space, a points file or a config uses (tests/test_fuzz_inputs.py, tests/support/cli_fuzz.py)."""

from hypothesis import strategies as st

from larnn_core.hparams import HParams

NAMES = list(HParams().to_dict()) + [
    "architecture",
    "space",
    "description",
    "uniform",
    "quniform",
    "loguniform",
    "qloguniform",
    "normal",
    "qnormal",
    "randint",
    "choice",
    "base",
    "log_multiplier",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["larnn", "lstm", "residual", "layer", "batch"])
)
trees = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)

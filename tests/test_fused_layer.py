"""The fused kernels (larnn_core/execution/fused_layer.py) compute the layer as the reference does:
outputs and every parameter gradient in float32, training and evaluation, the running statistics
and dropout masks as the ops path leaves and draws them. Without a GPU they run in Triton's
interpreter, on CPU (tests/conftest.py sets TRITON_INTERPRET=1 before Triton is imported)."""

import copy

import pytest
import torch

from larnn_core import train as training
from larnn_core.execution import Execution, resolve
from larnn_core.execution.cell_step import whole_layer
from larnn_core.hparams import HParams
from larnn_core.model import LARNN
from tests.support.data import TINY, synthetic_har
from tests.test_reference import config_id, configurations, errors, float32_close, run

pytest.importorskip("triton", reason="Triton is not installed (pip install triton; the dev extra has it)")
pytestmark = [pytest.mark.cuda] if torch.cuda.is_available() else []  # on a GPU: the kernels compiled


FUSED = ("cuda" if torch.cuda.is_available() else "cpu", Execution(cpu_loops=False, fused_kernel=True))
OPS = (FUSED[0], Execution(cpu_loops=False))
DEVICE = FUSED[0]
CONFIGS = [c for c in configurations() if c["norm"] == "batch"] + [
    dict(next(c for c in configurations() if c["norm"] == "batch"), num_layers=2, is_stacked_residual=True)
]


def _stack(config: dict, execution: Execution, **extra) -> LARNN:
    torch.manual_seed(0)
    kwargs = {k: v for k, v in config.items() if k not in ("hidden_size", "num_layers", "is_stacked_residual")}
    return LARNN(
        config["hidden_size"], config["num_layers"], config["is_stacked_residual"], execution, **kwargs, **extra
    ).to(DEVICE)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_fused_kernels_match_the_reference_in_float32(config):
    """Training (batch statistics): test_reference's yardstick, float32 rounding as the reference
    itself suffers it; evaluation (running statistics): within 1e-4 of the float64 reference."""
    assert float32_close(config, FUSED)
    fused = run(config, torch.float32, FUSED, False, reference=False)
    truth = run(config, torch.float64, FUSED, False, reference=True)
    assert max(errors(fused, truth)) < 1e-4


def test_the_kernels_run_the_layer_and_the_ops_path_does_not():
    """The comparison above compares the kernels: the fused path really leaves the ops path, whose
    float32 result differs from the kernels' in its last digits."""
    config = CONFIGS[1]
    fused = run(config, torch.float32, FUSED, True, reference=False)[0]
    ops = run(config, torch.float32, OPS, True, reference=False)[0]
    assert not torch.equal(fused, ops) and torch.allclose(fused, ops, atol=1e-4)


def test_running_statistics_move_as_the_ops_path_moves_them():
    """Two training batches of 9 steps on a model keeping 5 rows of statistics: steps 4 to 8 all
    move the last row, in turn."""
    config = CONFIGS[1]
    states = []
    for path in (FUSED, OPS):
        stack = _stack(config, path[1], steps=5).train()
        for seed in range(2):
            x = torch.randn(6, 9, config["hidden_size"], generator=torch.Generator().manual_seed(seed)).to(DEVICE)
            stack(x)
        states.append({k: v for k, v in stack.state_dict().items() if "running" in k})
    assert states[0].keys() == states[1].keys() and len(states[0]) == 12
    for key in states[0]:
        torch.testing.assert_close(states[0][key], states[1][key], rtol=1e-5, atol=1e-6, msg=key)


def test_precise_statistics_are_the_ops_paths():
    """statistics.refresh trains the norms alone, the cells in evaluation: the kernels follow the
    norms' mode, and the cumulative average it sets through their momentum."""
    from larnn_core import statistics

    config = CONFIGS[1]
    states = []
    for path in (FUSED, OPS):
        stack = _stack(config, path[1])
        assert statistics.refresh(stack, torch.randn(6, 9, config["hidden_size"], device=DEVICE)) == 1
        states.append({k: v for k, v in stack.state_dict().items() if "running" in k})
    for key in states[0]:
        torch.testing.assert_close(
            states[0][key], states[1][key], rtol=1e-4, atol=1e-6, msg=key
        )  # float32 sums in other orders


def test_dropout_masks_are_the_ops_paths_from_the_same_generator():
    config = dict(CONFIGS[0], is_stacked_residual=False)  # the layer's own output, zeros where dropped
    outputs = []
    for path in (FUSED, OPS):
        generator = torch.Generator(device=DEVICE).manual_seed(7)
        stack = _stack(config, path[1], dropout=0.3, generator=generator).train()
        x = torch.randn(6, 9, config["hidden_size"], generator=torch.Generator().manual_seed(1)).to(DEVICE)
        outputs.append(stack(x))
    assert (outputs[1] == 0).float().mean() > 0.2  # dropout did drop
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-5)


def test_the_seam_takes_the_kernels_for_batch_norm_in_float32_only():
    on = Execution(cpu_loops=False, fused_kernel=True)
    stack = _stack(CONFIGS[0], on)
    cell, x = stack.cells[0], torch.randn(2, 3, CONFIGS[0]["hidden_size"], device=DEVICE)
    assert whole_layer(cell, on, x) is not None
    assert whole_layer(cell, Execution(cpu_loops=False), x) is None
    assert whole_layer(cell, on, x.double()) is None  # the kernels are float32's
    layer_norm = _stack(dict(CONFIGS[0], norm="layer"), on).cells[0]
    assert whole_layer(layer_norm, on, x) is None
    copy.deepcopy(stack).double()(x.double())  # float64 runs on the ops path, unrefused


def test_resolve_asks_for_a_gpu_or_the_interpreter():
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        resolve("cpu", fused_kernel=True, environ={})
    assert resolve("cpu", fused_kernel=True, environ={"TRITON_INTERPRET": "1"}).fused_kernel
    assert resolve("cuda", fused_kernel=True, environ={}).as_record()["fused_kernel"] is True
    assert not resolve("cuda", environ={}).fused_kernel  # off by default until measured faster on a GPU
    assert resolve("cuda", environ={"LARNN_FUSED_KERNEL": "1"}).fused_kernel  # every training of a process
    assert not resolve("cpu", environ={"LARNN_FUSED_KERNEL": "1"}).fused_kernel  # where it runs


def test_a_training_on_the_kernels_learns_as_on_the_ops_path_and_records_them(monkeypatch):
    """LARNN_FUSED_KERNEL=1, as a worker's environment sets it: larnn_core.train resolves the
    kernels, trains through them (dropout from the training's generator, evaluation without
    gradients) and records them; its losses are the ops path's, epoch by epoch."""
    hp = HParams.from_dict({**TINY, "training_epochs": 2, "dropout_drop_proba": 0.2})
    data = synthetic_har(windows_per_subject=4, steps=8)
    ops = training.train(hp, data, device=FUSED[0], progress=False, cpu_loops=False)
    monkeypatch.setenv("LARNN_FUSED_KERNEL", "1")
    fused = training.train(hp, data, device=FUSED[0], progress=False, cpu_loops=False)
    assert fused.status == "ok" and fused.execution["fused_kernel"] is True and not ops.execution["fused_kernel"]
    assert fused.epochs[-1].train_loss < fused.epochs[0].train_loss  # it learns
    for name in ("train_loss", "validation_loss", "validation_accuracy"):
        assert [getattr(e, name) for e in fused.epochs] == pytest.approx(
            [getattr(e, name) for e in ops.epochs], rel=1e-3
        )

"""The training step (larnn_core/execution/cuda_graphs.py): replayed CUDA graphs update a model exactly
as eager steps do; and the execution choice that decides whether they run (execution/choice.py)."""

import pytest
import torch

from larnn_core import train as training
from larnn_core.classifier import build_model
from larnn_core.execution import Execution, resolve
from larnn_core.execution.cuda_graphs import Graphed, TrainStep, make_optimizer, set_learning_rate
from larnn_core.hparams import HParams
from tests.support.data import TINY
from tests.support.marks import cuda


def tiny_model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    hp = HParams.from_dict({**TINY, "model": kind, "dropout_drop_proba": 0.0})
    return build_model(hp).to(device="cuda", dtype=torch.float64)


@cuda
@pytest.mark.parametrize("kind", ["larnn", "lstm"])
def test_graphed_steps_match_eager_steps(kind):
    """Two batch shapes (two graphs, each run eagerly once, then captured), gradient clipping, and
    the learning rate halved between steps: every loss, parameter and running statistic matches."""
    models = [tiny_model(kind), tiny_model(kind)]
    steps, optimizers = [], []
    for model, graphs in zip(models, (False, True)):
        optimizers.append(make_optimizer(model, 0.01, 1e-4, capturable=True))  # the same Adam for both
        steps.append(TrainStep(model, optimizers[-1], clip_grad_norm=0.5, graphs=graphs))
    generator = torch.Generator().manual_seed(0)
    for n, size in enumerate((16, 16, 7, 16, 7, 16, 7, 16)):
        x = torch.randn(size, 12, 9, generator=generator, dtype=torch.float64).cuda()
        y = torch.randint(0, 6, (size,), generator=generator).cuda()
        (eager_loss, eager_logits), (graph_loss, graph_logits) = steps[0](x, y), steps[1](x, y)
        torch.testing.assert_close(graph_loss, eager_loss, rtol=1e-9, atol=0)
        torch.testing.assert_close(graph_logits, eager_logits, rtol=1e-9, atol=1e-12)
        for optimizer in optimizers:
            set_learning_rate(optimizer, 0.01 * 0.5 ** (n + 1))
        eager_state, graph_state = (model.state_dict() for model in models)
        for name, value in eager_state.items():
            torch.testing.assert_close(graph_state[name], value, rtol=1e-9, atol=1e-12, msg=name)


@cuda
def test_graphed_forward_reads_the_current_parameters():
    """Evaluation forwards, two shapes: after parameters and running statistics change in place
    (as a training step changes them), each replay computes with the new values."""
    model = tiny_model("larnn").eval()
    graphed = Graphed(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for size in (16, 16, 7, 16, 7, 16, 7):
            x = torch.randn(size, 12, 9, generator=generator, dtype=torch.float64).cuda()
            torch.testing.assert_close(graphed(x).clone(), model(x), rtol=1e-12, atol=1e-12)
            for tensor in (*model.parameters(), *model.buffers()):
                if tensor.is_floating_point():
                    tensor.mul_(1.01)


@cuda
def test_training_on_cuda_with_graphs_follows_eager_training(small_har):
    """The whole training loop (a short last batch, LR decay, clipping, evaluation): graphed and
    eager training on CUDA record the same history (without dropout, whose random masks differ).
    Both use the capturable Adam, so the graphs are the only difference."""
    hp = HParams.from_dict({**TINY, "dropout_drop_proba": 0.0})
    graphed, eager = (
        training.train(hp, small_har, device="cuda", seed=1, progress=False, cuda_graphs=graphs)
        for graphs in (True, False)
    )
    assert graphed.status == eager.status == "ok"
    assert graphed.execution["cuda_graphs"] is True and eager.execution["cuda_graphs"] is False
    for metric in ("train_loss", "validation_loss", "test_loss"):
        torch.testing.assert_close(
            [getattr(e, metric) for e in graphed.epochs],
            [getattr(e, metric) for e in eager.epochs],
            rtol=1e-4,
            atol=0,
            msg=metric,
        )


def test_a_graphed_step_is_freed_without_the_garbage_collector():
    """Its graphs hold GPU memory (a pool per batch shape): a reference cycle would keep them past
    the end of a training, until a garbage collection, while a worker starts the next trial."""
    import gc
    import weakref

    model = build_model(HParams.from_dict(TINY))
    step = TrainStep(model, make_optimizer(model, 0.01, 0.0, capturable=False), graphs=True)
    gc.disable()
    try:
        freed = weakref.ref(step)
        del step
        assert freed() is None
    finally:
        gc.enable()


def test_execution_defaults_per_device_arguments_and_environment():
    """Graphs and compilation on CUDA, loops on CPU; an explicit argument wins; LARNN_COMPILE=0 and
    LARNN_CUDA_GRAPHS=0 turn the defaults off for every training in a process, a worker's too."""
    assert resolve("cuda", environ={}) == Execution(cpu_loops=False, torch_compile=True, cuda_graphs=True)
    assert resolve("cpu", environ={}) == Execution(cpu_loops=True, torch_compile=False, cuda_graphs=False)
    assert resolve("cuda", cuda_graphs=False, environ={}).cuda_graphs is False
    assert resolve("cpu", cpu_loops=False, torch_compile=True, environ={}) == Execution(False, True, False)
    assert resolve("cpu", cuda_graphs=True, environ={}).cuda_graphs is False  # graphs need CUDA
    off = {"LARNN_COMPILE": "0", "LARNN_CUDA_GRAPHS": "0"}
    assert resolve("cuda", environ=off) == Execution(cpu_loops=False, torch_compile=False, cuda_graphs=False)
    assert resolve("cuda", torch_compile=True, cuda_graphs=True, environ=off).cuda_graphs is True
    assert resolve("cuda", environ={"LARNN_COMPILE": "1"}).as_record() == {
        "cpu_loops": False,
        "torch_compile": True,
        "cuda_graphs": True,
        "fused_kernel": False,  # off until measured faster on a GPU (tests/test_fused_layer.py)
    }


def test_learning_rate_is_set_in_place_when_it_is_a_tensor():
    """A captured step reads the tensor from its address: replacing it would freeze the rate."""
    model = build_model(HParams.from_dict(TINY))
    lr = torch.tensor(0.01)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    set_learning_rate(optimizer, 0.0075)
    assert optimizer.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(0.0075)
    plain = make_optimizer(model, 0.01, 0.0, capturable=False)
    set_learning_rate(plain, 0.0075)
    assert plain.param_groups[0]["lr"] == 0.0075

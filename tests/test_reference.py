"""The fast LARNN (model.py) computes the same function as the straightforward reference
(reference.py): outputs and every parameter gradient, in float64 and float32, CPU and CUDA."""

import itertools
import random

import pytest
import torch
from torch._dynamo.utils import counters

from larnn_core.execution import Execution, torch_compile
from larnn_core.execution.cell_step import whole_step_on_loops
from larnn_core.model import LARNN
from larnn_core.reference import reference_forward

# (device, execution): CPU on numba loops (step_loops with batch norm, attention_loops otherwise),
# CPU on the torch ops CUDA runs, CUDA as training runs it (the ops and the cell's update
# compiled by torch.compile)
CPU = ("cpu", Execution(cpu_loops=True))
PATHS = [CPU, ("cpu", Execution(cpu_loops=False))] + (
    [pytest.param(("cuda", Execution(cpu_loops=False, torch_compile=True)), marks=pytest.mark.cuda)]
    if torch.cuda.is_available()
    else []
)
PATH_IDS = ["cpu-loops", "cpu-torch-ops", "cuda"][: len(PATHS)]
COMPILED_ON_CPU = ("cpu", Execution(cpu_loops=False, torch_compile=True))  # through inductor's C++ backend
BATCH = 6
ORDERS = 4  # batch orders whose float32 rounding of the reference sets the yardstick (float32_errors)


def configurations(n: int = 12, seed: int = 0):
    """Random configurations that together cover both modes, positional encoding and activation
    on/off, 1-3 layers, stacked residual on/off, every norm, narrow and wide heads."""
    rng = random.Random(seed)
    corners = list(itertools.product(("residual", "layer"), (False, True), (False, True)))
    for i in range(n):
        mode, pe, act = corners[i % len(corners)]
        heads = rng.choice([1, 2, 4])
        width = (3, 6)[2 * i // n]
        yield dict(
            hidden_size=heads * width,
            num_layers=1 + i % 3,
            is_stacked_residual=i % 2 == 0,
            attention_heads=heads,
            window_size=rng.choice([1, 3, 6]),
            larnn_mode=mode,
            use_positional_encoding=pe,
            activation_on_keys_and_values=act,
            norm=("batch", "layer", "none")[i % 3],
        )


def run(
    config: dict,
    dtype: torch.dtype,
    path: tuple[str, Execution],
    train: bool,
    reference: bool,
    order: torch.Tensor | None = None,
):
    """Output and parameter gradients of one forward and backward, fast path (executed on path's
    device as its Execution says) or reference, from the same parameters and (float64-drawn)
    inputs whatever the dtype; order: the batch's sequences in this order (the same function,
    other rounding: batch statistics and weight gradients sum over the batch in another order)."""
    torch.manual_seed(0)
    device, execution = path
    H = config["hidden_size"]
    stack = LARNN(
        H,
        config["num_layers"],
        config["is_stacked_residual"],
        execution,
        **{k: v for k, v in config.items() if k not in ("hidden_size", "num_layers", "is_stacked_residual")},
    )
    stack = stack.to(device=device, dtype=dtype).train(train)
    x = torch.randn(BATCH, 9, H, dtype=torch.float64).to(device=device, dtype=dtype)
    target = torch.randn(BATCH, 9, H, dtype=torch.float64).to(device=device, dtype=dtype)
    order = torch.arange(BATCH) if order is None else order
    out = (reference_forward(stack, x[order]) if reference else stack(x[order]))[order.argsort()]
    (out * target).sum().backward()
    return out.detach().double(), {n: p.grad.detach().double() for n, p in stack.named_parameters()}


def errors(run_a, run_b) -> tuple[float, float, float]:
    """(output error, per-parameter gradient error, whole-gradient error) of a against b.

    Output error: max |a - b| / max |b|. Per-parameter gradient error: the worst
    parameter's max |a - b| / max |b|, the denominator floored at 1e-6 of the model's
    largest gradient, so that a gradient which cancels to almost nothing by structure (a bias
    in front of a batch norm, the query when the window holds one cell) is judged against the
    model's scale rather than its own rounding noise. Whole-gradient error: the same with all
    parameters' gradients taken as one vector."""
    (fast, fast_grads), (ref, ref_grads) = run_a, run_b
    output_error = ((fast - ref).abs().max() / ref.abs().max()).item()
    floor = 1e-6 * max(g.abs().max() for g in ref_grads.values())
    per_parameter = max(
        ((fast_grads[n] - g).abs().max() / g.abs().max().clamp_min(floor)).item() for n, g in ref_grads.items()
    )
    whole = (max((fast_grads[n] - g).abs().max() for n, g in ref_grads.items()) / (floor * 1e6)).item()
    return output_error, per_parameter, whole


def compare(config: dict, dtype: torch.dtype, path, train: bool) -> tuple[float, float, float]:
    """errors() of the fast path against the reference, both in dtype."""
    return errors(run(config, dtype, path, train, False), run(config, dtype, path, train, True))


def float32_errors(config: dict, path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(output, whole-gradient) errors against the float64 reference: of the fast path in float32,
    and the largest of the reference's own in float32 over ORDERS batch orders: what float32
    rounding costs on this configuration. One order alone is a poor yardstick: where the
    recurrence amplifies rounding, the reference's float32 error varies thirtyfold with the order
    of its sums (measured: 5e-6 or 1.5e-4 for one configuration, by torch's thread count)."""
    truth = run(config, torch.float64, path, True, True)
    fast = errors(run(config, torch.float32, path, True, False), truth)
    orders = [torch.arange(BATCH)] + [
        torch.randperm(BATCH, generator=torch.Generator().manual_seed(k)) for k in range(1, ORDERS)
    ]
    refs = [errors(run(config, torch.float32, path, True, True, order), truth) for order in orders]
    return (fast[0], fast[2]), (max(r[0] for r in refs), max(r[2] for r in refs))


def float32_close(config: dict, path) -> bool:
    """float32: outputs and the whole gradient within 1e-4 of the float64 reference, or no further
    from it than twice the reference's own float32 error (a configuration whose float32 rounding
    is amplified through the recurrence loses digits on both paths alike)."""
    fast, ref = float32_errors(config, path)
    return all(f < max(1e-4, 2 * r) for f, r in zip(fast, ref))


def config_id(config: dict) -> str:
    return (
        f"{config['larnn_mode']}-pe{int(config['use_positional_encoding'])}"
        f"-act{int(config['activation_on_keys_and_values'])}-L{config['num_layers']}-{config['norm']}"
    )


@pytest.fixture(params=PATHS, ids=PATH_IDS)
def path(request):
    torch_compile.forget()  # each configuration compiled afresh, never past dynamo's recompile limit
    return request.param


@pytest.mark.parametrize("config", list(configurations()), ids=config_id)
def test_fast_matches_reference(config, path):
    assert max(compare(config, torch.float64, path, train=True)) < 1e-6
    assert max(compare(config, torch.float64, path, train=False)) < 1e-6


@pytest.mark.parametrize("config", list(configurations()), ids=config_id)
def test_fast_matches_reference_in_float32(config, path):
    """float32 (float32_close; a single parameter's gradient that cancels over the batch, such as a
    bias in front of a batch norm, loses more digits)."""
    assert float32_close(config, path)


@pytest.mark.slow
@pytest.mark.parametrize("config", [c for i, c in enumerate(configurations()) if i in (3, 4)], ids=config_id)
def test_compiled_path_matches_reference(config):
    """The torch.compile path that CUDA takes by default, on CPU, from no compiled graphs: the same
    function as the reference, training and evaluation modes."""
    torch_compile.forget()
    graphs = counters["stats"]["unique_graphs"]
    assert max(compare(config, torch.float64, COMPILED_ON_CPU, train=True)) < 1e-6
    assert max(compare(config, torch.float64, COMPILED_ON_CPU, train=False)) < 1e-6
    assert float32_close(config, COMPILED_ON_CPU)
    assert counters["stats"]["unique_graphs"] > graphs  # it did run compiled


def test_a_failed_compilation_says_how_to_do_without():
    import torch._inductor.config

    torch_compile.forget()
    stack = LARNN(4, 1, execution=COMPILED_ON_CPU[1], attention_heads=2, window_size=2)
    # no C++ compiler, and no compiled graph from an earlier test (inductor's own patch: monkeypatch
    # would delete these config entries on undo)
    with torch._inductor.config.patch({"cpp.cxx": ("/nonexistent/g++",), "fx_graph_cache": False}):
        with pytest.raises(torch_compile.CompileFailed, match="LARNN_COMPILE=0"):
            stack(torch.randn(3, 5, 4))
    torch_compile.forget()
    stack.execution = Execution(cpu_loops=False, torch_compile=False)  # what LARNN_COMPILE=0 resolves to
    assert stack(torch.randn(3, 5, 4)).shape == (3, 5, 4)


@pytest.mark.parametrize("config", [c for c in configurations() if c["norm"] == "batch"], ids=config_id)
def test_compiled_loops_keep_batch_norm_statistics_as_torch_does(config):
    """Training on CPU runs the cell's update as numba loops (step_loops.py), which keep each
    batch norm's running mean, variance and count themselves: the same as torch's ops leave them."""
    states = []
    for loops in (True, False):
        torch.manual_seed(0)
        stack = LARNN(
            config["hidden_size"],
            config["num_layers"],
            config["is_stacked_residual"],
            Execution(cpu_loops=loops),
            **{k: v for k, v in config.items() if k not in ("hidden_size", "num_layers", "is_stacked_residual")},
        )
        stack.double().train()
        for _ in range(2):
            stack(torch.randn(6, 9, config["hidden_size"], dtype=torch.float64))
        states.append({n: b for n, b in stack.named_buffers() if "running" in n})
    loops, ops = states
    assert loops.keys() == ops.keys() and len(loops) >= 4 * config["num_layers"]
    for name in ops:
        assert torch.allclose(loops[name], ops[name], rtol=1e-12, atol=1e-12), name


def autograd_nodes(t: torch.Tensor) -> set[str]:
    seen, todo, names = set(), [t.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        todo += [next_node for next_node, _ in node.next_functions]
    return names


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_cpu_training_with_batch_norm_runs_the_compiled_step(norm):
    """Training with batch norm on CPU is one step_loops Function per step and layer (the tests above
    hold it to the reference); other norms, and evaluation with gradients, run autograd's ops."""
    stack = LARNN(8, 2, attention_heads=2, window_size=3, norm=norm)
    x = torch.randn(4, 5, 8, requires_grad=True)
    assert ("_StepBackward" in autograd_nodes(stack(x))) == (norm == "batch")
    assert "_StepBackward" not in autograd_nodes(stack.eval()(x))


@pytest.mark.parametrize("config", [c for c in configurations() if c["norm"] == "batch"], ids=config_id)
@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-6), (torch.float32, 1e-4)], ids=["f64", "f32"])
def test_evaluation_without_gradients_matches_reference(config, dtype, tolerance):
    """Evaluation under no_grad runs the compiled loops too, normalising with the running
    statistics, and leaves them as they were."""
    torch.manual_seed(0)
    H = config["hidden_size"]
    stack = LARNN(
        H,
        config["num_layers"],
        config["is_stacked_residual"],
        **{k: v for k, v in config.items() if k not in ("hidden_size", "num_layers", "is_stacked_residual")},
    )
    stack = stack.to(dtype)
    for _ in range(2):  # running statistics away from their initial values
        stack(torch.randn(6, 9, H, dtype=dtype))
    stack.eval()
    buffers = {n: b.clone() for n, b in stack.named_buffers()}
    x = torch.randn(6, 9, H, dtype=dtype)
    with torch.no_grad():
        assert all(whole_step_on_loops(cell, stack.execution, x) for cell in stack.cells)  # the loops' path
        fast, ref = stack(x), reference_forward(stack, x)
    assert ((fast - ref).abs().max() / ref.abs().max()).item() < tolerance
    assert all(torch.equal(b, buffers[n]) for n, b in stack.named_buffers())

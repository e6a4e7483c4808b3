"""Model tests; each of the 2018 reference defects (docs/design.md, section 2) has one that catches it."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from larnn_core.classifier import build_model
from larnn_core.execution import Execution
from larnn_core.execution.cell_step import cell_step
from larnn_core.hparams import HParams
from larnn_core.model import LARNN, LARNNCell


def one_step(cell: LARNNCell, xq, xz, state):
    """One step of the cell, executed as training on CPU would (the seam's choice for these tensors)."""
    return cell_step(cell, cell.step_weights(), Execution(), xq)(xq, xz, state)


SMALL = dict(hidden_size=8, attention_heads=2, larnn_window_size=3, num_layers=2, dropout_drop_proba=0.0)
COMBOS = [
    dict(larnn_mode=m, use_positional_encoding=p, activation_on_keys_and_values=a, is_stacked_residual=r, norm=n)
    for m, p, a, r, n in itertools.product(
        ("residual", "layer"), (False, True), (False, True), (False, True), ("batch", "layer", "none")
    )
]


def small_model(dtype=torch.float32, **overrides):
    torch.manual_seed(0)
    return build_model(HParams.from_dict({**SMALL, **overrides})).to(dtype)


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_shapes_and_every_parameter_gets_a_gradient(combo):
    """Defect 1 (unregistered cells never trained) and any dead parameter show up as a zero gradient."""
    model = small_model(torch.float64, **combo)
    x = torch.randn(5, 7, 9, dtype=torch.float64)
    logits = model(x)
    assert logits.shape == (5, 6)
    assert model.body(torch.randn(5, 7, 8, dtype=torch.float64)).shape == (5, 7, 8)
    torch.nn.functional.cross_entropy(logits, torch.arange(5) % 6).backward()
    scale = max(p.grad.abs().max() for p in model.parameters() if p.grad is not None)
    for name, p in model.named_parameters():  # rounding noise is not a gradient: a dead parameter gets ~1e-16
        assert p.grad is not None and p.grad.abs().max() > 1e-7 * scale, f"{name} received no gradient"


def test_lstm_baseline_every_parameter_gets_a_gradient():
    model = small_model(model="lstm", num_layers=3, is_stacked_residual=True)
    logits = model(torch.randn(4, 6, 9))
    assert logits.shape == (4, 6)
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_optimizer_reaches_every_layer():
    model = small_model(num_layers=3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(4, 5, 9)).sum().backward()
    opt.step()
    unchanged = [n for n, p in model.named_parameters() if torch.equal(before[n], p)]
    assert not unchanged
    assert sum(isinstance(m, LARNNCell) for m in model.modules()) == 3


@pytest.mark.parametrize("model_name", ["larnn", "lstm"])
def test_eval_reaches_every_submodule_and_is_deterministic(model_name):
    model = small_model(model=model_name, dropout_drop_proba=0.5, num_layers=3)
    x = torch.randn(4, 6, 9)
    model.train()
    assert not torch.equal(model(x), model(x)), "dropout should make training passes differ"
    model.eval()
    assert all(not m.training for m in model.modules())
    assert torch.equal(model(x), model(x))


def test_second_layer_reads_the_first_layers_output():
    """Defect 2: every 'layer' re-ran the first cell on the raw input."""
    torch.manual_seed(0)
    stack = LARNN(8, 2, attention_heads=2, window_size=3)
    seen = []
    original = LARNNCell.project_inputs

    def spy(cell, x):
        seen.append((cell, x.detach().clone()))
        return original(cell, x)

    x = torch.randn(3, 5, 8)
    LARNNCell.project_inputs = spy
    try:
        stack(x)
        with torch.no_grad():
            stack.cells[0].query.weight.mul_(2.0)
        stack(x)
    finally:
        LARNNCell.project_inputs = original
    (c0, in0), (c1, in1), (_, in0_again), (_, in1_again) = seen
    assert c0 is stack.cells[0] and c1 is stack.cells[1] and c0 is not c1
    assert torch.equal(in0, x) and torch.equal(in0_again, x)
    assert not torch.allclose(in1, x)
    assert not torch.allclose(in1, in1_again), "layer 2's input must depend on layer 1's weights"


def test_layers_have_separate_states_and_norms():
    """Defect 6: one state object across layers, keys and values sharing one norm."""
    cell = LARNNCell(8, 8, attention_heads=2, window_size=3, activation_on_keys_and_values=True)
    assert cell.norm_key is not cell.norm_value
    stack = LARNN(8, 2, attention_heads=2, window_size=3)
    states = []
    original = LARNNCell.initial_state
    LARNNCell.initial_state = lambda self, *a, **kw: states.append(original(self, *a, **kw)) or states[-1]
    try:
        stack(torch.randn(2, 4, 8))
    finally:
        LARNNCell.initial_state = original
    assert len(states) == 2 and states[0] is not states[1]


@pytest.mark.parametrize("pe", [False, True])
def test_window_holds_exactly_k_cells(pe):
    """A cell pushed k+1 steps ago has no influence on the attention; the last k all do."""
    k = 4
    torch.manual_seed(0)
    cell = LARNNCell(6, 6, attention_heads=2, window_size=k, use_positional_encoding=pe, norm="layer")
    cells = [torch.randn(3, 6, requires_grad=True) for _ in range(k + 1)]
    state = cell.initial_state(3, k + 2)
    weights = cell.step_weights()
    for c in cells:
        state.window.push(c, 2 * c)  # as key and value
    heads = state.window.attend(torch.randn(3, 6), weights.pos_k, weights.pos_v)
    (heads * torch.randn(3, 6)).sum().backward()
    assert cells[0].grad is None or cells[0].grad.abs().sum() == 0
    for c in cells[1:]:
        assert c.grad.abs().sum() > 0


def test_window_refuses_more_steps_than_it_was_sized_for():
    cell = LARNNCell(6, 6, attention_heads=2, window_size=2)
    state = cell.initial_state(3, 1)
    state.window.push(torch.randn(3, 6), torch.randn(3, 6))
    with pytest.raises(IndexError, match="sized for 1 steps"):
        state.window.push(torch.randn(3, 6), torch.randn(3, 6))


def test_a_second_backward_through_the_same_graph_is_refused():
    """The window's gradient buffers are spent by one backward; a second would add to them again."""
    stack = LARNN(8, 2, attention_heads=2, window_size=3)
    loss = stack(torch.randn(4, 6, 8)).square().sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward through a LARNN window twice"):
        loss.backward()


def test_project_once_per_cell():
    """Defect 4: the window was re-projected at every step; each cell must go through W_k once.
    Every product with the key weights (alone, or stacked with the value weights) is recorded."""
    stack = LARNN(8, 1, attention_heads=2, window_size=5)
    key = stack.cells[0].key.weight
    rows = []

    class Spy(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if func is torch.cat and any(t is key for t in args[0]):
                out.is_key_weight = True
            if func is F.linear and (args[1] is key or getattr(args[1], "is_key_weight", False)):
                rows.append(tuple(args[0].shape))
            return out

    with Spy():
        stack(torch.randn(2, 7, 8))
    assert rows == [(2, 8)] * 7


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_returned_preactivation_is_normalised_and_drives_the_gates(norm):
    """Defect 3: the normalised pre-activation was computed and then discarded."""
    torch.manual_seed(0)
    cell = LARNNCell(5, 8, attention_heads=2, window_size=3, norm=norm)
    x = torch.randn(64, 1, 5)
    state = cell.initial_state(64, 1)
    state = state._replace(h=torch.randn(64, 8), c=torch.randn(64, 8))
    xq, xz = cell.project_inputs(x)
    new, z = one_step(cell, xq[:, 0], xz[:, 0], state)
    axis = 0 if norm == "batch" else 1
    assert torch.allclose(z.mean(axis), torch.zeros(1), atol=1e-5)
    assert torch.allclose(z.var(axis, unbiased=False), torch.ones(1), atol=1e-3)
    H = 8
    g, f, i = torch.tanh(z[:, :H]), torch.sigmoid(z[:, H : 2 * H]), torch.sigmoid(z[:, 2 * H : 3 * H])
    assert torch.allclose(new.c, g * i + state.c * f, atol=1e-5)  # the carried cell


def test_heads_must_divide_hidden_size():
    with pytest.raises(ValueError, match=r"hidden_size \(10\).*attention_heads \(4\)"):
        build_model(HParams.from_dict({**SMALL, "hidden_size": 10, "attention_heads": 4}))


def test_window_must_be_positive():
    with pytest.raises(ValueError, match="larnn_window_size"):
        LARNNCell(4, 8, attention_heads=2, window_size=0)


def test_window_and_its_graph_are_freed_after_backward_without_the_garbage_collector(monkeypatch):
    """Backward nodes that referenced their window formed a cycle (window.link -> node -> window):
    the window and its autograd graph outlived the step until a garbage collection."""
    import gc
    import weakref

    from larnn_core.execution import window

    windows = []
    original_init = window.Window.__init__

    def tracked_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        windows.append(weakref.ref(self))

    monkeypatch.setattr(window.Window, "__init__", tracked_init)
    stack = LARNN(8, 2, attention_heads=2, window_size=3, use_positional_encoding=True)
    gc.disable()
    try:
        stack(torch.randn(4, 6, 8)).square().sum().backward()
        assert len(windows) == 2 and all(ref() is None for ref in windows)
    finally:
        gc.enable()


def test_training_dropout_drops_at_its_rate_and_scales_what_it_keeps():
    """Training on CPU draws its own dropout masks (execution/step_loops.py): an entry of h is zero with
    probability p, the others are scaled by 1 / (1 - p), gradients pass only where it kept, and
    torch.manual_seed reproduces the masks."""
    B, H, p = 512, 16, 0.3
    cell = LARNNCell(H, H, attention_heads=4, window_size=3, dropout=p)
    x = torch.randn(B, 1, H)
    weights = torch.randn(B, H)

    def step(drop: float, seed: int = 0, loss_weights: torch.Tensor = weights) -> tuple[torch.Tensor, torch.Tensor]:
        """(h after one step, the gradient of sum(h * loss_weights) at the previous h)"""
        cell.dropout.p = drop
        h0 = torch.randn(B, H, generator=torch.Generator().manual_seed(1), requires_grad=True)
        state = cell.initial_state(B, 1)._replace(h=h0)
        xq, xz = cell.project_inputs(x)
        torch.manual_seed(seed)
        new, _ = one_step(cell, xq[:, 0], xz[:, 0], state)
        (new.h * loss_weights).sum().backward()
        return new.h.detach(), h0.grad

    kept, _ = step(0.0)
    dropped, grad = step(p)
    zero = dropped == 0
    assert abs(zero.float().mean().item() - p) < 0.02
    assert torch.allclose(dropped[~zero], kept[~zero] / (1 - p), rtol=1e-5)
    assert torch.allclose(grad, step(0.0, loss_weights=weights * ~zero / (1 - p))[1], rtol=1e-4, atol=1e-6)
    again, grad_again = step(p)
    assert torch.equal(again, dropped) and torch.equal(grad_again, grad)
    assert not torch.equal(step(p, seed=1)[0] == 0, zero)

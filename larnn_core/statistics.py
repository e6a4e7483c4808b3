"""Population statistics of the batch norms, recomputed for the weights that evaluation uses.

In training, each StepBatchNorm normalises with the batch's statistics and moves its running
statistics by momentum 0.1, so they average the last ~10 batches, each taken under different
weights. Evaluation normalises with them. Early in training, or at a high learning rate, the
weights move faster than that average follows: the evaluation of step t is then normalised
with statistics of other weights, and in a recurrence the mismatch carries on to every later
step (measured before this: the eval/train ratio of the last layer's mean |h| grew along the
sequence to 1.48 by step 128 for the 2018 best configuration after 60 training steps, seed 0).

`refresh` replaces them, before each evaluation, with the plain average of the statistics of a
few training batches passed through the current weights (precise batch norm, Wu & Johnson 2021,
"Rethinking 'Batch' in BatchNorm"): each step is normalised with the batch's statistics as in
training, dropout is off as in evaluation, and nothing else changes (no gradient, no parameter,
no optimizer state, no random draw).
"""

from __future__ import annotations

import torch

from larnn_core.model import StepBatchNorm

REFRESH_SAMPLES = 1024  # training sequences whose statistics the estimate takes (training: the epoch's first)
CHUNK = 1024  # sequences per forward pass


@torch.no_grad()
def refresh(model: torch.nn.Module, X: torch.Tensor) -> int:
    """Set every StepBatchNorm's running statistics to the average of the statistics of X's
    chunks (training sequences [N, T, inputs]) under the model's current weights; returns the
    number of chunks (0: no batch norm). Leaves the model in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, StepBatchNorm)]
    momenta = [m.momentum for m in norms]
    model.eval()  # dropout off, as evaluation runs
    if not norms:
        return 0
    for norm in norms:
        norm.train()  # normalise with each batch's statistics and move the running ones
    used = 0
    try:
        for used, x in enumerate(X.split(CHUNK), 1):
            for norm in norms:
                norm.momentum = 1.0 / used  # a cumulative average: the k-th batch weighs 1/k
            model(x)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
            norm.eval()
    return used


@torch.no_grad()
def agreement(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """How far evaluation strays from training on one batch: the ratio of the last recurrent
    layer's mean |h| in eval mode to train mode's (with the batch's own statistics) at each time
    step [T], then the eval and train losses. Running statistics and the mode are left as they were."""
    layer = model.body.cells[-1]
    buffers, mode = {n: b.clone() for n, b in model.named_buffers()}, model.training
    scales, losses = {}, {}
    for train_mode in (True, False):
        hook = layer.register_forward_hook(
            lambda module, args, out, mode=train_mode: scales.__setitem__(mode, out.abs().mean((0, 2)))
        )
        model.train(train_mode)
        losses[train_mode] = torch.nn.functional.cross_entropy(model(X), y).item()
        hook.remove()
    model.load_state_dict(buffers, strict=False)
    model.train(mode)
    return scales[False] / scales[True], losses[False], losses[True]

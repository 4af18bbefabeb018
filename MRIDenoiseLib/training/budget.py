"""Training inside a time budget with held-out selection: what adapting to one user's scans needs.

Used by fine-tuning on one scan and by training on two acquisitions: Adam steps until the budget
ends, the held-out loss checked every few steps, and the weights with the lowest held-out loss
kept (the starting weights when nothing beats them). Cancelling raises before anything is kept.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..progress import CancelToken, ProgressCallback

VALIDATE_EVERY = 20
HELD_OUT_EVERY = 10


def split_slices(count: int, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre slices of a ``count``-slice stack for training and, every tenth one, for held-out selection.

    A stack too thin to spare a slice uses its middle one for both.
    """
    centres = np.arange(context, count - context)
    held_out = centres % HELD_OUT_EVERY == HELD_OUT_EVERY // 2
    if held_out.all() or not held_out.any():
        held_out = np.zeros_like(held_out)
        held_out[len(centres) // 2] = True
    train, kept = centres[~held_out], centres[held_out]
    return (train if train.size else kept), kept


@dataclass
class BudgetFit:
    """Steps taken, and the held-out loss at the start and of the weights kept."""

    steps: int
    held_out_before: float
    held_out_after: float


Clock = Callable[[], float]
"""Seconds from an arbitrary origin (``time.monotonic`` unless a test injects another)."""


def fit_within_budget(
    module: nn.Module,
    loss_of: Callable[[list[torch.Tensor]], torch.Tensor],
    next_batch: Callable[[], list[torch.Tensor]],
    held_out: list[torch.Tensor],
    seconds: float,
    learning_rate: float,
    cancel: CancelToken,
    progress: ProgressCallback,
    label: str,
    penalty: Callable[[], torch.Tensor] | None = None,
    clock: Clock = time.monotonic,
) -> BudgetFit:
    """Train ``module`` on ``loss_of(next_batch())`` (+ ``penalty()``) for ``seconds``; load the best weights.

    The held-out score is ``loss_of(held_out)`` without the penalty; ``module`` ends in eval mode.
    ``clock`` is read once per step: tests inject one that advances a fixed amount per reading, so
    the number of steps does not depend on the machine's speed.
    """

    def evaluate() -> float:
        module.eval()
        with torch.no_grad():
            value = float(loss_of(held_out))
        module.train()
        return value

    started = clock()
    before = best = evaluate()
    best_state = copy.deepcopy(module.state_dict())
    optimizer = torch.optim.Adam(module.parameters(), lr=learning_rate)
    module.train()
    steps = 0
    while (elapsed := clock() - started) < seconds:
        cancel.raise_if_cancelled()
        value = loss_of(next_batch())
        if penalty is not None:
            value = value + penalty()
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        steps += 1
        if steps % VALIDATE_EVERY == 0:
            current = evaluate()
            if current < best:
                best, best_state = current, copy.deepcopy(module.state_dict())
        progress(min(elapsed / seconds, 1.0), f"{label}: step {steps}, held-out loss {best:.4g}")
    cancel.raise_if_cancelled()
    module.load_state_dict(best_state)
    module.eval()
    return BudgetFit(steps, before, best)

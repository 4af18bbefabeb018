"""Training inside a time budget with held-out selection: what adapting to one user's scans needs.

Used by fine-tuning on one scan and by training on two acquisitions: Adam steps in the one training
loop until the budget ends, the held-out loss checked every few steps, and the weights with the
lowest held-out loss kept (the starting weights when nothing beats them). Cancelling raises before
anything is kept.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..progress import CancelToken, ProgressCallback
from .loop import LOWEST_MSE, Clock, LoopSettings, Reporting, TrainingLoop

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


class _BudgetTask:
    """The training loop's task for one module, one loss and Adam; nothing is saved to disk."""

    def __init__(
        self,
        module: nn.Module,
        loss_of: Callable[[list[torch.Tensor]], torch.Tensor],
        next_batch: Callable[[], list[torch.Tensor]],
        held_out: list[torch.Tensor],
        learning_rate: float,
        penalty: Callable[[], torch.Tensor] | None,
    ) -> None:
        self.network, self.loss_of, self.next_batch, self.held_out = module, loss_of, next_batch, held_out
        self.penalty = penalty
        self.optimizer = torch.optim.Adam(module.parameters(), lr=learning_rate)

    def train_step(self) -> dict[str, float]:
        value = self.loss_of(self.next_batch())
        if self.penalty is not None:
            value = value + self.penalty()
        self.optimizer.zero_grad(set_to_none=True)
        value.backward()
        self.optimizer.step()
        return {"loss": value.item()}

    def validate(self, network: nn.Module) -> dict[str, float]:
        return {"validation_mse": float(self.loss_of(self.held_out))}

    def checkpoint_state(self) -> dict[str, Any]:
        return {}

    def load_checkpoint_state(self, payload: dict[str, Any]) -> None:
        """Nothing to restore: budget runs keep no checkpoint."""

    def save_weights(self, path: Path, network: nn.Module) -> None:
        raise AssertionError("budget runs keep their best weights in memory")


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

    Runs the one training loop with the best weights kept in memory: the held-out score is
    ``loss_of(held_out)`` without the penalty, checked every few steps and at the end; the starting
    weights are kept when nothing beats them. ``module`` ends in eval mode; Cancel raises before
    anything is kept. ``clock`` is read once per step: tests inject one that advances a fixed
    amount per reading, so the number of steps does not depend on the machine's speed.
    """
    task = _BudgetTask(module, loss_of, next_batch, held_out, learning_rate, penalty)
    settings = LoopSettings(
        total_steps=sys.maxsize,
        validate_every=VALIDATE_EVERY,
        selection=LOWEST_MSE,
        validate_at_start=True,
        label=label,
    )
    loop = TrainingLoop(task, settings, Reporting(callback=progress), cancel, clock)
    state = loop.run(max_seconds=seconds)
    cancel.raise_if_cancelled()
    return BudgetFit(state.step, loop.score_at_start, state.best_validation_mse)

"""The one training loop every trainer runs.

A trainer is a :class:`Task`: it owns its networks, optimisers and data and knows how to take one
step and how to score the network. The loop owns everything around that: counting steps, stopping
(at the run's length, after a step limit or a time budget read from an injectable clock, on
Cancel), the history (``history.jsonl``), progress (a tqdm bar or a callback), validation and
the choice of the best weights, the exponential moving average of the weights, checkpoints and
resume, and the rules of a distributed run (only the first process writes).

Two ways to keep the best weights: in a run folder (``best.safetensors`` / ``last.safetensors``
and a checkpoint to resume from, for the ``train`` command) or in memory (restored when the loop
ends, for the few-minute adaptations of fine-tuning and two-scan training, which write nothing
until they succeed).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from ..errors import ConfigError
from ..progress import CancelToken, ProgressCallback
from .checkpoints import (
    BEST_WEIGHTS_NAME,
    CHECKPOINT_NAME,
    HISTORY_NAME,
    LAST_WEIGHTS_NAME,
    read_checkpoint,
    write_checkpoint,
)
from .distributed import DistributedContext, barrier

Clock = Callable[[], float]
"""Seconds from an arbitrary origin (``time.monotonic`` unless a test injects another)."""


@dataclass
class TrainingState:
    """Where a run is: what a resumed run needs besides the weights and optimisers."""

    step: int = 0
    best_psnr: float = -math.inf
    best_step: int = 0
    wall_seconds: float = 0.0
    hardware: str = ""
    best_validation_mse: float = math.inf


@dataclass(frozen=True)
class Selection:
    """Which validation metric picks the best weights, in which direction, and the state field that keeps it."""

    metric: str
    higher_is_better: bool
    state_field: str
    title: str

    def improves(self, value: float, best: float) -> bool:
        return value > best if self.higher_is_better else value < best


BEST_PSNR = Selection("psnr_foreground", True, "best_psnr", "best PSNR")
"""Image training: the highest mean foreground PSNR of the validation slabs."""
LOWEST_MSE = Selection("validation_mse", False, "best_validation_mse", "held-out loss")
"""Lowest validation error (q-space signals, held-out self-supervised losses)."""


class Task(Protocol):
    """What a trainer gives the loop."""

    @property
    def network(self) -> nn.Module:
        """The network whose weights are selected, averaged and saved."""
        ...

    def train_step(self) -> dict[str, float]:
        """Draw a batch, take one optimiser step (or, for epoch-based tasks, one epoch); named losses."""
        ...

    def validate(self, network: nn.Module) -> dict[str, float]:
        """Metrics of ``network`` (the trained one or its average) on held-out data; {} when there is none."""
        ...

    def checkpoint_state(self) -> dict[str, Any]:
        """Tensors and plain values the task needs to resume (optimisers, samplers, other networks)."""
        ...

    def load_checkpoint_state(self, payload: dict[str, Any]) -> None:
        """Restore what :meth:`checkpoint_state` saved (the loop restores the network itself)."""
        ...

    def save_weights(self, path: Path, network: nn.Module) -> None:
        """Write ``network`` as a safetensors file the catalogue can load."""
        ...


@dataclass
class LoopSettings:
    """How long a run is, how often it logs and validates, and where (if anywhere) it keeps files."""

    total_steps: int
    validate_every: int
    selection: Selection
    log_every: int = 50
    run_dir: Path | None = None
    """A run folder for history, best/last weights and checkpoints; None keeps the best weights in memory."""
    ema_decay: float = 0.0
    validate_at_start: bool = False
    """Score the starting weights too (they are kept when nothing beats them)."""
    identity: str = ""
    """What a checkpoint must share with this run to be resumed (network and data, not the schedule)."""
    label: str = "train"


@dataclass
class Reporting:
    """Where progress goes: a tqdm bar (command line) and/or a callback (panel, adaptations)."""

    bar: bool = False
    callback: ProgressCallback | None = None
    distributed: DistributedContext = field(default_factory=DistributedContext)


class TrainingLoop:
    """Runs a :class:`Task` step by step under :class:`LoopSettings`."""

    def __init__(
        self,
        task: Task,
        settings: LoopSettings,
        reporting: Reporting | None = None,
        cancel: CancelToken | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.task, self.settings = task, settings
        self.reporting = reporting or Reporting()
        self.cancel = cancel or CancelToken()
        self.clock = clock
        self.state = TrainingState()
        self.average = (
            AveragedModel(task.network, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay), use_buffers=True)
            if settings.ema_decay > 0
            else None
        )
        self.best_in_memory: dict[str, torch.Tensor] | None = None
        self.score_at_start = math.nan

    @property
    def is_main(self) -> bool:
        return self.reporting.distributed.is_main

    @property
    def kept_network(self) -> nn.Module:
        """The network validated and saved: the moving average of the weights when ``ema_decay`` > 0."""
        return self.task.network if self.average is None else self.average.module

    @property
    def best_score(self) -> float:
        return float(getattr(self.state, self.settings.selection.state_field))

    # ---- checkpoints ---------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.settings.run_dir is None else self.settings.run_dir / CHECKPOINT_NAME

    def save_checkpoint(self) -> None:
        if self.checkpoint_path is None or not self.is_main:
            return
        payload = {
            "network": self.task.network.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "state": json.dumps(self.state.__dict__),
            "identity": self.settings.identity,
            **({} if self.average is None else {"average": self.average.state_dict()}),
            **self.task.checkpoint_state(),
        }
        write_checkpoint(self.checkpoint_path, payload)

    def resume(self) -> bool:
        """Continue from the run folder's checkpoint; False when there is none.

        Raises ConfigError when the checkpoint belongs to another network or data, or lacks the
        moving average this run keeps.
        """
        payload = read_checkpoint(self.checkpoint_path) if self.checkpoint_path is not None else None
        if payload is None:
            return False
        folder = self.settings.run_dir
        if payload.get("identity", self.settings.identity) != self.settings.identity:
            raise ConfigError(
                f"the checkpoint in {folder} comes from a run with another network or data; "
                "choose another --output (or delete that folder)"
            )
        if self.average is not None and "average" not in payload:
            raise ConfigError(
                f"the checkpoint in {folder} was trained without optim.ema_decay; resume it without, "
                "or choose another --output"
            )
        self.task.network.load_state_dict(payload["network"])
        torch.set_rng_state(payload["torch_rng"])
        self.state = TrainingState(**json.loads(payload["state"]))
        if self.average is not None:
            self.average.load_state_dict(payload["average"])
        self.task.load_checkpoint_state(payload)
        return True

    # ---- the loop ------------------------------------------------------------------------------
    def run(self, max_seconds: float | None = None, max_steps: int | None = None) -> TrainingState:
        """Step to ``total_steps``, or stop early: after the step that uses up ``max_seconds`` (by the
        clock, read once per step) or makes ``max_steps`` steps of this call, or on Cancel. A run
        folder gets a checkpoint at every validation and at an early stop (Cancel included); in
        memory, the best weights are loaded into the network when the loop ends."""
        settings = self.settings
        started = self.clock()
        first_step, wall_before = self.state.step, self.state.wall_seconds
        bar = tqdm(
            total=settings.total_steps,
            initial=self.state.step,
            disable=not (self.reporting.bar and self.is_main),
            desc=settings.label,
            unit="step",
        )
        if settings.validate_at_start and self.state.step == 0:
            self._validate_and_keep()
        running: dict[str, list[float]] = {}
        self.task.network.train()
        while self.state.step < settings.total_steps and not self.cancel.cancelled:
            for name, value in self.task.train_step().items():
                running.setdefault(name, []).append(value)
            if self.average is not None:
                self.average.update_parameters(self.task.network)
            self.state.step += 1
            elapsed = self.clock() - started
            self.state.wall_seconds = wall_before + elapsed
            bar.update(1)
            record: dict[str, Any] = {}
            if self.state.step % settings.log_every == 0:
                record = {name: float(np.mean(values)) for name, values in running.items()}
                bar.set_postfix(loss=f"{record.get('loss', math.nan):.4f}")
                running = {}
            stopping = (max_steps is not None and self.state.step - first_step >= max_steps) or (
                max_seconds is not None and elapsed >= max_seconds
            )
            quitting = self.cancel.cancelled and settings.run_dir is None
            periodic = self.state.step % settings.validate_every == 0 or self.state.step == settings.total_steps
            if (periodic or stopping or self.cancel.cancelled) and not quitting:
                record |= self._validation_record()
            self._write_history(record)
            self._report(elapsed, max_seconds)
            if stopping:
                break
        bar.close()
        return self._finish()

    def _finish(self) -> TrainingState:
        if self.best_in_memory is not None:
            self.kept_network.load_state_dict(self.best_in_memory)
        self.task.network.eval()
        return self.state

    def _validation_record(self) -> dict[str, Any]:
        """Validate, keep the best weights, write last weights and a checkpoint; the history fields.

        Only the first process of a distributed run validates and writes; the others wait for it.
        """
        if not self.is_main:
            barrier(self.reporting.distributed)
            return {}
        metrics = self._score()
        selection = self.settings.selection
        improved = selection.metric in metrics and selection.improves(metrics[selection.metric], self.best_score)
        if improved:
            setattr(self.state, selection.state_field, metrics[selection.metric])
            self.state.best_step = self.state.step
        self._keep(improved)
        if self.reporting.bar and metrics:
            tqdm.write(f"step {self.state.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        barrier(self.reporting.distributed)
        return {"wall_seconds": round(self.state.wall_seconds, 1), **metrics}

    def _validate_and_keep(self) -> None:
        """Score the starting weights and keep them as the best so far (in ``score_at_start``)."""
        metrics = self._score()
        self.score_at_start = metrics.get(self.settings.selection.metric, math.nan)
        setattr(self.state, self.settings.selection.state_field, self.score_at_start)
        self._keep(True)

    def _score(self) -> dict[str, float]:
        network = self.kept_network
        was_training = self.task.network.training
        network.eval()
        with torch.no_grad():
            metrics = self.task.validate(network)
        self.task.network.train(was_training)
        return metrics

    def _keep(self, improved: bool) -> None:
        run_dir = self.settings.run_dir
        if run_dir is None:
            if improved:
                self.best_in_memory = copy.deepcopy(self.kept_network.state_dict())
            return
        names = [LAST_WEIGHTS_NAME] + ([BEST_WEIGHTS_NAME] if improved else [])
        for name in names:
            self.task.save_weights(run_dir / name, self.kept_network)
        self.save_checkpoint()

    def _write_history(self, record: dict[str, Any]) -> None:
        if not record or self.settings.run_dir is None or not self.is_main:
            return
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.settings.run_dir / HISTORY_NAME, "a") as handle:
            handle.write(json.dumps({"step": self.state.step, **record}) + "\n")

    def _report(self, elapsed: float, max_seconds: float | None) -> None:
        callback = self.reporting.callback
        if callback is None:
            return
        fraction = self.state.step / self.settings.total_steps
        if max_seconds:
            fraction = max(fraction, elapsed / max_seconds)
        title = self.settings.selection.title
        callback(min(fraction, 1.0), f"{self.settings.label}: step {self.state.step}, {title} {self.best_score:.4g}")

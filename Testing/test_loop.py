"""The one training loop: stopping rules, best-weights selection (in memory and in a run folder), resume,
Cancel and the history, on a small regression task whose steps cost nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import StepClock
from safetensors.torch import load_file, save_file
from torch import nn

from MRIDenoiseLib.progress import CancelToken
from MRIDenoiseLib.training.checkpoints import HISTORY_NAME
from MRIDenoiseLib.training.loop import LOWEST_MSE, LoopSettings, Reporting, TrainingLoop


class Regression:
    """Fit y = 3x + 1 with a Linear layer; its weights are saved as a plain state dict."""

    def __init__(self, learning_rate: float = 0.05, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.network = nn.Linear(1, 1)
        self.optimizer = torch.optim.SGD(self.network.parameters(), lr=learning_rate)
        self.generator = torch.Generator().manual_seed(seed)
        self.steps_taken = 0

    def _batch(self, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.rand(size, 1, generator=self.generator) * 2 - 1
        return x, 3 * x + 1

    def train_step(self) -> dict[str, float]:
        x, y = self._batch()
        loss = ((self.network(x) - y) ** 2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.steps_taken += 1
        return {"loss": loss.item()}

    def validate(self, network: nn.Module) -> dict[str, float]:
        x = torch.linspace(-1, 1, 64)[:, None]
        with torch.no_grad():
            return {"validation_mse": float(((network(x) - (3 * x + 1)) ** 2).mean())}

    def checkpoint_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state()}

    def load_checkpoint_state(self, payload: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(payload["optimizer"])
        self.generator.set_state(payload["generator"])

    def save_weights(self, path: Path, network: nn.Module) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(path))


def _settings(run_dir: Path | None, total: int = 40, **overrides: Any) -> LoopSettings:
    return LoopSettings(total_steps=total, validate_every=10, selection=LOWEST_MSE, log_every=5, run_dir=run_dir,
                        **overrides)  # fmt: skip


def test_in_memory_the_best_weights_are_kept_and_the_start_when_nothing_beats_it():
    task = Regression()
    loop = TrainingLoop(task, _settings(None, validate_at_start=True))
    state = loop.run()
    assert state.step == 40 and state.best_validation_mse < loop.score_at_start
    assert task.validate(task.network)["validation_mse"] == pytest.approx(state.best_validation_mse)

    diverging = Regression(learning_rate=5.0)  # every step makes it worse
    start = {k: v.clone() for k, v in diverging.network.state_dict().items()}
    loop = TrainingLoop(diverging, _settings(None, validate_at_start=True))
    loop.run()
    assert diverging.steps_taken == 40
    for name, tensor in diverging.network.state_dict().items():
        assert torch.equal(tensor, start[name]), "the starting weights should have been restored"


def test_a_time_budget_is_read_from_the_clock_once_per_step():
    task = Regression()
    loop = TrainingLoop(task, _settings(None, total=1000), clock=StepClock(1.0))
    state = loop.run(max_seconds=7)
    assert state.step == 7 and task.steps_taken == 7  # the 7th step uses up the budget


def test_a_stopped_run_resumes_to_the_same_weights_as_one_straight_run(tmp_path):
    straight = Regression()
    TrainingLoop(straight, _settings(tmp_path / "straight")).run()

    first = Regression()
    TrainingLoop(first, _settings(tmp_path / "split")).run(max_steps=13)
    second = Regression(seed=99)  # everything it starts with must come from the checkpoint
    loop = TrainingLoop(second, _settings(tmp_path / "split"))
    assert loop.resume() and loop.state.step == 13
    loop.run()
    for name, tensor in straight.network.state_dict().items():
        assert torch.equal(second.network.state_dict()[name], tensor), name
    history = [json.loads(line) for line in (tmp_path / "split" / HISTORY_NAME).read_text().splitlines()]
    validated = [record["step"] for record in history if "validation_mse" in record]
    assert validated == [10, 13, 20, 30, 40]  # every validation_every steps, at the stop and at the end
    assert all("loss" in record for record in history if record["step"] % 5 == 0)


def test_cancel_stops_with_a_checkpoint_in_a_run_folder_and_without_a_score_in_memory(tmp_path):
    cancel = CancelToken()
    task = Regression()
    take_step = task.train_step

    def step_then_cancel_at_seven() -> dict[str, float]:
        losses = take_step()
        if task.steps_taken == 7:
            cancel.cancel()
        return losses

    task.train_step = step_then_cancel_at_seven  # type: ignore[method-assign]
    TrainingLoop(task, _settings(tmp_path / "run"), cancel=cancel).run()
    resumed = TrainingLoop(Regression(), _settings(tmp_path / "run"))
    assert resumed.resume() and resumed.state.step == 7

    scores: list[float] = []
    quiet = Regression()
    quiet.validate = lambda network: scores.append(1.0) or {"validation_mse": 1.0}  # type: ignore[method-assign]
    cancelled = CancelToken()
    cancelled.cancel()
    state = TrainingLoop(quiet, _settings(None), cancel=cancelled).run()
    assert state.step == 0 and scores == []


def test_progress_reports_the_step_and_the_best_score():
    messages: list[tuple[float, str]] = []
    loop = TrainingLoop(Regression(), _settings(None, total=20, label="fitting"),
                        Reporting(callback=lambda fraction, text: messages.append((fraction, text))))  # fmt: skip
    loop.run()
    assert len(messages) == 20 and messages[-1][0] == 1.0
    assert messages[-1][1].startswith("fitting: step 20, held-out loss ")


def test_the_average_of_the_weights_is_what_a_run_folder_keeps(tmp_path):
    task = Regression()
    TrainingLoop(task, _settings(tmp_path / "run", total=10, ema_decay=0.5)).run()
    kept = load_file(str(tmp_path / "run" / "last.safetensors"))
    assert not torch.equal(kept["weight"], task.network.weight.detach())

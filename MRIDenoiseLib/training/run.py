"""The library's training entry point: ``train(config)`` runs a whole config, stages included.

One table (:data:`KINDS`) maps each kind of training to its trainer and its exporter; the CLI's
``train`` and ``export`` commands are thin calls of :func:`train` and :func:`export`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..progress import CancelToken
from .config import (
    RUN_CONFIGS,
    ConsensusRunConfig,
    GanRunConfig,
    QSpaceRunConfig,
    ShellRunConfig,
    SupervisedConfig,
    TrainConfig,
    load_config,
)
from .export import default_run_dir

if TYPE_CHECKING:  # the loop imports torch; the CLI imports this module for light commands too
    from .loop import TrainingLoop, TrainingState


class Trainer(Protocol):
    """What :func:`train` needs of a trainer (every one runs the loop of ``loop.py``)."""

    loop: TrainingLoop

    def resume(self) -> bool: ...

    def fit(self, max_minutes: float | None = None, max_steps: int | None = None) -> TrainingState: ...


@dataclass(frozen=True)
class Kind:
    """How one kind of training is started and exported (imports are deferred: each pulls in its own stack)."""

    start: Callable[[Any, Path, str, CancelToken], Trainer]
    """(config, run folder, device, cancel) -> the trainer."""
    exporter: Callable[[], Callable[..., Path]]
    total_steps: Callable[[Any], int]


def _supervised(config: SupervisedConfig, output: Path, device: str, cancel: CancelToken) -> Trainer:
    from .trainer import SupervisedTrainer

    return SupervisedTrainer(config, output, device=device, cancel=cancel)


def _consensus(config: ConsensusRunConfig, output: Path, device: str, cancel: CancelToken) -> Trainer:
    from .consensus import ConsensusTrainer

    return ConsensusTrainer(config, output, device=device, cancel=cancel)


def _gan(config: GanRunConfig, output: Path, device: str, cancel: CancelToken) -> Trainer:
    from .gan import GanTrainer

    return GanTrainer(config, output, device=device, cancel=cancel)


def _qspace(config: QSpaceRunConfig, output: Path, device: str, cancel: CancelToken) -> Trainer:
    """Q-space models are small and train on the CPU whatever ``device`` says."""
    from .qspace import QSpaceTrainer

    return QSpaceTrainer(config, output, cancel=cancel)


def _shells(config: ShellRunConfig, output: Path, device: str, cancel: CancelToken) -> Trainer:
    """The shell network trains on the CPU (its data come from MP-PCA, which runs there anyway)."""
    from .shells import ShellTrainer

    return ShellTrainer(config, output, cancel=cancel)


def _export_image() -> Callable[..., Path]:
    from .export import export_run

    return export_run


def _export_consensus() -> Callable[..., Path]:
    from .consensus import export_consensus_run

    return export_consensus_run


def _export_qspace() -> Callable[..., Path]:
    from .qspace import export_qspace_run

    return export_qspace_run


def _export_shells() -> Callable[..., Path]:
    from .shells import export_shell_run

    return export_shell_run


KINDS: dict[str, Kind] = {
    "supervised": Kind(_supervised, _export_image, lambda config: config.optim.steps),
    "consensus": Kind(_consensus, _export_consensus, lambda config: config.optim.steps),
    "gan": Kind(_gan, _export_image, lambda config: config.optim.steps),
    "qspace": Kind(_qspace, _export_qspace, lambda config: config.qspace.epochs),
    "shells": Kind(_shells, _export_shells, lambda config: config.optim.steps),
}
"""Each kind of training (a config's ``kind``): how its trainer starts, its exporter, and how many steps make a run."""


@dataclass
class TrainOutcome:
    """What :func:`train` did: the final state, whether the run is complete, where it lives, what it exported."""

    state: TrainingState | None
    finished: bool
    run_dir: Path
    total: int
    kind: str
    main: bool = True
    """Whether this is the process that reports and exports (the first of a distributed run)."""
    exported: Path | None = None


def train(
    config: TrainConfig | str | Path,
    output: str | Path | None = None,
    *,
    device: str = "auto",
    resume: bool = False,
    max_minutes: float | None = None,
    max_steps: int | None = None,
    export_when_done: bool = False,
    cancel: CancelToken | None = None,
) -> TrainOutcome:
    """Train ``config`` (a TrainConfig or a JSON path) into ``output`` (default ``runs/<model id>``).

    A transfer config's pretraining stage is trained (or resumed) first; a consensus run with
    ``distil_steps`` then distils its pair. ``max_minutes`` and ``max_steps`` stop a stage early with
    a checkpoint (``resume`` continues it; an unfinished run is reported as such, not an error).
    """
    config = config if isinstance(config, RUN_CONFIGS) else load_config(config)
    output = Path(output) if output else default_run_dir(config)
    cancel = cancel or CancelToken()
    kind = KINDS[config.kind]
    total = kind.total_steps(config)
    if isinstance(config, SupervisedConfig) and not _train_pretraining_stage(
        config, output, device, max_minutes, max_steps, cancel
    ):
        return TrainOutcome(None, False, output, total, config.kind)
    trainer = kind.start(config, output, device, cancel)
    if resume and not trainer.resume():
        print(f"no checkpoint in {output}; starting from scratch", file=sys.stderr)
    state = trainer.fit(max_minutes=max_minutes, max_steps=max_steps)
    if isinstance(config, ConsensusRunConfig) and config.consensus.distil_steps and state.step >= total:
        state = _distil(config, output, device, max_minutes, max_steps, cancel)
        total = config.consensus.distil_steps
    outcome = TrainOutcome(state, state.step >= total, output, total, config.kind, trainer.loop.is_main)
    if export_when_done and outcome.finished and outcome.main:
        outcome.exported = export(config, output)
    return outcome


def export(config: TrainConfig | str | Path, run_dir: str | Path | None = None, models_dir: Path | None = None) -> Path:
    """Export a run's selected weights, model card and catalogue entry; returns the weights file."""
    config = config if isinstance(config, RUN_CONFIGS) else load_config(config)
    run_dir = Path(run_dir) if run_dir else default_run_dir(config)
    return KINDS[config.kind].exporter()(config, run_dir, models_dir)


def _distil(
    config: ConsensusRunConfig,
    output: Path,
    device: str,
    max_minutes: float | None,
    max_steps: int | None,
    cancel: CancelToken,
) -> TrainingState:
    """Train (or resume) the distilled network of a finished consensus pair, in ``<output>/distilled``."""
    from .consensus import DistillationTrainer, distillation_config, distillation_run_dir

    print(f"distilling the pair into one network in {distillation_run_dir(output)}", file=sys.stderr)
    student = distillation_config(config)
    trainer = DistillationTrainer(student, distillation_run_dir(output), output, device=device, cancel=cancel)
    trainer.resume()
    return trainer.fit(max_minutes=max_minutes, max_steps=max_steps)


def _train_pretraining_stage(
    config: SupervisedConfig,
    output: Path,
    device: str,
    max_minutes: float | None,
    max_steps: int | None,
    cancel: CancelToken,
) -> bool:
    """Train (or resume) the stage a transfer config starts from; False when it did not finish."""
    from .trainer import SupervisedTrainer
    from .transfer import pretraining_config, pretraining_finished, pretraining_run_dir

    pretraining = pretraining_config(config)
    if pretraining is None:
        return True
    stage_dir = pretraining_run_dir(pretraining, output)
    if pretraining_finished(pretraining, stage_dir):
        return True
    if not _train_pretraining_stage(pretraining, stage_dir, device, max_minutes, max_steps, cancel):
        return False
    print(f"pretraining stage {pretraining.model.id!r} first, in {stage_dir}", file=sys.stderr)
    trainer = SupervisedTrainer(pretraining, stage_dir, device=device, cancel=cancel)
    trainer.resume()
    state = trainer.fit(max_minutes=max_minutes, max_steps=max_steps)
    if state.step < pretraining.optim.steps:
        print(f"pretraining stopped at step {state.step}; run the same command again to go on", file=sys.stderr)
        return False
    return True

"""Training from two noisy realisations (paper 004): the consensus pair, its baselines, distillation.

``ConsensusTrainer`` runs the three modes of a ``consensus`` config section on the same data,
so that paper 004's Table 2 (Noise2Noise, consensus, Noise2Clean) can be re-measured;
``DistillationTrainer`` then fits one network to the pair's consensus image (9).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.weights import load_network
from ..nets.consensus import ConsensusPair
from .checkpoints import read_run_state, selected_weights_name
from .config import ConsensusRunConfig
from .data import PairSampler
from .losses import consensus_loss, image_consistency, squared_error, weight_decay
from .trainer import ImageTrainer, make_optimizer

DISTILLED_FOLDER = "distilled"
STUDENT_ARCHITECTURE = "residual-unet-2.5d"


class RealisationPairSampler(PairSampler):
    """Examples of two independent noise draws, at one level, on the same clean patch.

    Each example is (first input, second input, clean centre slice); an input is the noisy
    slices followed by the noise-level map.
    """

    def _pair(self) -> tuple[np.ndarray, ...]:
        clean = self._augment_intensity(self._clean_patch())
        draw = self._noise()
        return self._noisy(clean, draw), self._noisy(clean, draw), self.centre(clean)


class _MemberOutputs(nn.Module):
    """The pair's training forward pass, one realisation per member (what DDP wraps)."""

    def __init__(self, pair: ConsensusPair) -> None:
        super().__init__()
        self.pair = pair

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pair.pair(first, second)


class ConsensusTrainer(ImageTrainer):
    """Consensus (8)-(12), plain Noise2Noise or Noise2Clean, chosen by ``consensus.mode``."""

    config: ConsensusRunConfig

    def __init__(self, config: ConsensusRunConfig, output_dir: str | Path, **kwargs: Any) -> None:
        optim = config.optim
        super().__init__(
            config, output_dir, ema_decay=optim.ema_decay, bfloat16=optim.precision == "bfloat16", **kwargs
        )

    def make_optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer(self.network.parameters(), self.config.optim)

    def make_sampler(self, context: int) -> PairSampler:
        seed = self.config.seed + 7919 * self.distributed.rank
        return RealisationPairSampler(self.train_volumes, self.config.data, context, seed)

    def training_module(self) -> nn.Module:
        return _MemberOutputs(self.network) if isinstance(self.network, ConsensusPair) else self.network

    def batch_loss(self, batch: list[torch.Tensor]) -> torch.Tensor:
        return self.pair_loss(*batch)

    def pair_loss(self, first: torch.Tensor, second: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """The mode's loss on a batch of realisation pairs (``clean`` is used by Noise2Clean only)."""
        settings = self.config.consensus
        centre = slice(self.sampler.context, self.sampler.context + 1)
        first_noisy, second_noisy = first[:, centre], second[:, centre]
        first, second = self.network_inputs(first), self.network_inputs(second)
        if settings.mode == "noise2clean":
            return squared_error(self.model(first), clean)
        if settings.mode == "noise2noise":
            return squared_error(self.model(first), second_noisy)
        first_output, second_output = self.model(first, second)
        loss = consensus_loss(first_output, second_output, first_noisy, second_noisy)
        if settings.weight_decay:
            loss = loss + settings.weight_decay * weight_decay(self.network)
        if settings.consistency:
            estimate = 0.5 * (first_noisy + second_noisy)
            loss = loss + settings.consistency * image_consistency(0.5 * (first_output + second_output), estimate)
        return loss


def distillation_config(config: ConsensusRunConfig) -> ConsensusRunConfig:
    """The student's run: one member-sized network, ``distil_steps`` steps, the same data and model id."""
    student = copy.deepcopy(config)
    student.model.architecture = STUDENT_ARCHITECTURE
    student.optim.steps = config.consensus.distil_steps
    student.optim.warmup_steps = min(config.optim.warmup_steps, max(config.consensus.distil_steps // 10, 1))
    return student


def distillation_run_dir(run_dir: Path) -> Path:
    return Path(run_dir) / DISTILLED_FOLDER


class DistillationTrainer(ConsensusTrainer):
    """Fits one network, from one realisation, to the frozen pair's consensus image of both (9)."""

    def __init__(
        self, config: ConsensusRunConfig, output_dir: str | Path, teacher_dir: str | Path, **kwargs: Any
    ) -> None:
        super().__init__(config, output_dir, **kwargs)
        arguments = config.model.arguments
        teacher_weights = Path(teacher_dir) / selected_weights_name(config.export_weights)
        teacher = load_network(teacher_weights, "consensus-pair", arguments)
        if not isinstance(teacher, ConsensusPair):
            raise TypeError(f"{teacher_weights} is not a consensus pair")
        self.teacher = teacher.to(self.device).eval()
        self.network.load_state_dict(self.teacher.first.state_dict())

    def make_sampler(self, context: int) -> PairSampler:
        seed = self.config.seed + 104729 + 7919 * self.distributed.rank
        return RealisationPairSampler(self.train_volumes, self.config.data, context, seed)

    def batch_loss(self, batch: list[torch.Tensor]) -> torch.Tensor:
        first, second, _ = batch
        with torch.no_grad():
            target = self.teacher.combine(first, second)
        return squared_error(self.model(self.network_inputs(first)), target)


def pair_export_config(config: ConsensusRunConfig) -> ConsensusRunConfig:
    """The pair itself as a catalogue model, ``<id>-pair``, beside the distilled ``<id>``."""
    pair = copy.deepcopy(config)
    pair.model.id = f"{config.model.id}-pair"
    pair.model.title = f"{config.model.title.removesuffix(', distilled')}: the two-network pair"
    pair.model.description = (
        "The two U-Nets of the consensus run; on one scan both see it and their outputs are averaged. "
        + config.model.description
    )
    return pair


def export_consensus_run(config: ConsensusRunConfig, run_dir: Path, models_dir: Path | None = None) -> Path:
    """Export a consensus-mode run: the pair, and the distilled network when there is one."""
    from .export import export_run

    if config.consensus.mode != "consensus" or not config.consensus.distil_steps:
        return export_run(config, run_dir, models_dir)
    pair = pair_export_config(config)
    export_run(pair, run_dir, models_dir)
    state = read_run_state(run_dir)
    first_stage = (
        f"the consensus pair `{pair.model.id}`: {state['step']} steps (best at {state['best_step']}), "
        f"{state['wall_seconds'] / 60:.0f} min; the steps and wall time above are the distillation's"
    )
    return export_run(distillation_config(config), distillation_run_dir(run_dir), models_dir, first_stage)

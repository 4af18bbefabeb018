"""The jobs the panel runs (no engine imports: the panel reads these before dependencies are installed)."""

from __future__ import annotations

from enum import Enum


class JobAction(str, Enum):
    """What a job runs: the engine command, and what the panel does with its result."""

    DENOISE = "denoise"
    FINETUNE = "finetune"
    TRAIN_CONSENSUS = "train-consensus"

    @property
    def registers_model(self) -> bool:
        """Whether a successful job saved a user model (the panel refreshes its model list)."""
        return self is not JobAction.DENOISE

    @property
    def output_suffix(self) -> str:
        """The name a new output node gets after the input's."""
        return "consensus" if self is JobAction.TRAIN_CONSENSUS else "denoised"

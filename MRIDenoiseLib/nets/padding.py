"""Padding a batch of slices to a multiple of a network's total downsampling, and back."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to_multiple(inputs: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad the last two axes up to a multiple; returns the padded tensor and original size."""
    height, width = inputs.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        inputs = F.pad(inputs, (0, pad_w, 0, pad_h), mode="replicate")
    return inputs, (height, width)


def crop_to(outputs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return outputs[..., : size[0], : size[1]]

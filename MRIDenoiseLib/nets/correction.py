"""Residual corrections counted in noise levels: the shared head of noise-scaled networks.

A noise-scaled network predicts the change it makes to its input in units of the noise-level map,
optionally squashed by ``bound * tanh(x / bound)`` so that no pixel moves by more than ``bound``
noise levels. At 1 % noise the change is a hundredth of what the head outputs, whatever the
network's error floor, and a head that extrapolates cannot move a pixel far.
"""

from __future__ import annotations

import torch


def check_correction_arguments(residual: bool, noise_scaled: bool, correction_bound: float | None) -> None:
    """Scaling needs a residual network; a bound needs scaling and must be positive."""
    if noise_scaled and not residual:
        raise ValueError("noise_scaled needs residual=True")
    if correction_bound is not None and not (noise_scaled and correction_bound > 0):
        raise ValueError("correction_bound needs noise_scaled=True and a positive bound")


def noise_scaled_correction(head: torch.Tensor, level: torch.Tensor, bound: float | None) -> torch.Tensor:
    """The change in intensity units: ``head`` (in noise levels), squashed by ``bound``, times ``level``."""
    if bound is not None:
        head = bound * torch.tanh(head / bound)
    return head * level

"""Paper 004's consensus network: two U-Nets trained on two noisy realisations of one object.

During training each member sees one realisation (``pair``); the denoised image is the mean of
their outputs, equation (9). Given one scan, both members see it and their outputs are averaged,
so the pair deploys like any other 2.5-D network.
"""

from __future__ import annotations

import torch

from .contract import SliceNetwork
from .unet25d import ResidualUNet25D


class ConsensusPair(SliceNetwork):
    """Two residual 2.5-D U-Nets with a noise-level map input; ``forward`` averages them."""

    noise_level_input = True

    def __init__(self, context: int = 2, channels: tuple[int, ...] = (24, 48, 64), summed_skips: int = 0) -> None:
        super().__init__()
        self.context = context
        self.first = ResidualUNet25D(context, channels, summed_skips)
        self.second = ResidualUNet25D(context, channels, summed_skips)

    def pair(self, first_input: torch.Tensor, second_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``f(x + n1; theta1)`` and ``f(x + n2; theta2)``: each member on its own realisation."""
        return self.first(first_input), self.second(second_input)

    def combine(self, first_input: torch.Tensor, second_input: torch.Tensor) -> torch.Tensor:
        """Equation (9): the consensus image of two realisations."""
        first, second = self.pair(first_input, second_input)
        return 0.5 * (first + second)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.combine(inputs, inputs)

"""A 3-D U-Net over one diffusion shell's spherical-harmonic coefficients (``denoisers/shells.py``).

Input channels (all in units of the series' median b0 in the brain, see
:func:`MRIDenoiseLib.denoisers.shells.network_input`): the b0 image, the noise level per voxel,
that level carried into one fitted coefficient, the shell's b-value / 1000, then the shell's 15
coefficients after MP-PCA and the 15 of the noisy data. The network predicts the correction added
to the MP-PCA coefficients (Rician bias removed first, when built with ``rician_correction``), so it
starts as MP-PCA and learns only what improves on it. Two
down-samplings (inputs are padded to a multiple of 4) keep it small enough for CPUs.
"""

from __future__ import annotations

import torch
from torch import nn

from ..spherical import COEFFICIENTS

CONDITION_CHANNELS = 4
"""b0, noise level, coefficient noise level, b-value / 1000."""
SIGMA_CHANNEL = 1
"""Where the noise level per voxel sits among the input channels."""
MPPCA_SLICE = slice(CONDITION_CHANNELS, CONDITION_CHANNELS + COEFFICIENTS)
"""Where the MP-PCA coefficients sit among the input channels."""
INPUT_CHANNELS = CONDITION_CHANNELS + 2 * COEFFICIENTS
DOWNSAMPLING = 4


class _DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv3d(in_channels, out_channels, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv3d(out_channels, out_channels, 3, padding=1),
            nn.LeakyReLU(0.1),
        )


class ShellUNet3D(nn.Module):
    """``(B, 34, Z, Y, X)`` with Z, Y, X multiples of 4 -> corrected coefficients ``(B, 15, Z, Y, X)``."""

    def __init__(self, channels: tuple[int, int, int] = (24, 40, 64), rician_correction: bool = False) -> None:
        """``rician_correction``: the MP-PCA coefficients this network corrects have had MP-PCA's Rician
        bias removed first (``denoisers/shells.rician_debiased``), in training and in use."""
        super().__init__()
        self.rician_correction = rician_correction
        fine, middle, coarse = channels
        self.encode_fine = _DoubleConv(INPUT_CHANNELS, fine)
        self.down_middle = nn.Conv3d(fine, middle, 2, stride=2)
        self.encode_middle = _DoubleConv(middle, middle)
        self.down_coarse = nn.Conv3d(middle, coarse, 2, stride=2)
        self.encode_coarse = _DoubleConv(coarse, coarse)
        self.up_middle = nn.ConvTranspose3d(coarse, middle, 2, stride=2)
        self.decode_middle = _DoubleConv(2 * middle, middle)
        self.up_fine = nn.ConvTranspose3d(middle, fine, 2, stride=2)
        self.decode_fine = _DoubleConv(2 * fine, fine)
        self.correction = nn.Conv3d(fine, COEFFICIENTS, 1)
        nn.init.zeros_(self.correction.weight)  # an untrained network returns MP-PCA's coefficients
        if self.correction.bias is not None:
            nn.init.zeros_(self.correction.bias)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        fine = self.encode_fine(inputs)
        middle = self.encode_middle(self.down_middle(fine))
        coarse = self.encode_coarse(self.down_coarse(middle))
        middle = self.decode_middle(torch.cat([self.up_middle(coarse), middle], 1))
        fine = self.decode_fine(torch.cat([self.up_fine(middle), fine], 1))
        return inputs[:, MPPCA_SLICE] + self.correction(fine)

"""The default model's network: a 2.5-D residual U-Net conditioned on a noise-level map.

Input channels: ``2 * context + 1`` adjacent slices (the centre one is denoised) and one channel
holding the noise standard deviation of each pixel, all in normalised intensity units. The
network predicts the correction added to the centre slice, so at low noise it stays close to
identity. Inside, two downsamplings keep the cost per voxel small enough for CPUs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .padding import crop_to, pad_to_multiple


class _DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
        )


class ResidualUNet25D(nn.Module):
    """2.5-D U-Net: ``(B, 2*context+2, H, W)`` -> denoised centre slice ``(B, 1, H, W)``."""

    noise_level_input = True

    def __init__(self, context: int = 2, channels: tuple[int, ...] = (32, 64, 96)) -> None:
        super().__init__()
        self.context = context
        self.in_channels = 2 * context + 2
        self.levels = len(channels) - 1
        self.encoders = nn.ModuleList()
        previous = self.in_channels
        for width in channels:
            self.encoders.append(_DoubleConv(previous, width))
            previous = width
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for skip_width, deeper_width in zip(channels[-2::-1], channels[:0:-1], strict=True):
            self.upsamplers.append(nn.ConvTranspose2d(deeper_width, skip_width, 2, stride=2))
            self.decoders.append(_DoubleConv(2 * skip_width, skip_width))
        self.head = nn.Conv2d(channels[0], 1, 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        padded, size = pad_to_multiple(inputs, 2**self.levels)
        skips = []
        features = padded
        for level, encoder in enumerate(self.encoders):
            features = encoder(features)
            if level < self.levels:
                skips.append(features)
                features = F.avg_pool2d(features, 2)
        for upsample, decoder, skip in zip(self.upsamplers, self.decoders, reversed(skips), strict=True):
            features = decoder(torch.cat([upsample(features), skip], dim=1))
        centre = padded[:, self.context : self.context + 1]
        return crop_to(centre + self.head(features), size)

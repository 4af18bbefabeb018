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

from .contract import SliceNetwork
from .padding import crop_to, pad_to_multiple


class _DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
        )


class ResidualUNet25D(SliceNetwork):
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

    @property
    def channels(self) -> tuple[int, ...]:
        """Feature channels per level, shallowest first."""
        return tuple(_conv(encoder, 0).out_channels for encoder in self.encoders)

    @torch.no_grad()
    def load_narrower(self, narrower: ResidualUNet25D) -> None:
        """Start from a trained network with fewer channels per level, computing what it computes.

        Its weights fill the first channels of each layer; the weights from the added channels
        into the original ones start at zero, so the output is unchanged, and the added channels
        keep their random initialisation and learn from there (Net2Net-style widening).
        """
        old, new = narrower.channels, self.channels
        fits = len(old) == len(new) and all(o <= n for o, n in zip(old, new, strict=True))
        if narrower.context != self.context or not fits:
            raise ValueError(
                f"cannot widen channels {list(old)} (context {narrower.context}) "
                f"into {list(new)} (context {self.context})"
            )
        inputs = range(self.in_channels)
        for level, (target, source) in enumerate(zip(self.encoders, narrower.encoders, strict=True)):
            previous = inputs if level == 0 else range(old[level - 1])
            _embed(_conv(target, 0), _conv(source, 0), range(old[level]), previous)
            _embed(_conv(target, 2), _conv(source, 2), range(old[level]), range(old[level]))
        for index, skip in enumerate(range(self.levels - 1, -1, -1)):
            kept = range(old[skip])
            _embed(_conv(self.upsamplers, index), _conv(narrower.upsamplers, index), kept, range(old[skip + 1]), True)
            concatenated = [*kept, *(new[skip] + k for k in kept)]  # [upsampled, skip] channels
            decoder, narrower_decoder = self.decoders[index], narrower.decoders[index]
            _embed(_conv(decoder, 0), _conv(narrower_decoder, 0), kept, concatenated)
            _embed(_conv(decoder, 2), _conv(narrower_decoder, 2), kept, kept)
        _embed(self.head, narrower.head, range(1), range(old[0]))

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


def _conv(layers: nn.Module, index: int) -> nn.Conv2d | nn.ConvTranspose2d:
    """The convolution at ``index`` of a sequence of layers (a double-convolution block, the upsamplers)."""
    if not isinstance(layers, nn.Sequential | nn.ModuleList):
        raise TypeError(f"{type(layers).__name__} is not a sequence of layers")
    layer = layers[index]
    if not isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
        raise TypeError(f"layer {index} is a {type(layer).__name__}, not a convolution")
    return layer


def _embed(
    target: nn.Conv2d | nn.ConvTranspose2d,
    source: nn.Conv2d | nn.ConvTranspose2d,
    outputs: range,
    inputs: range | list[int],
    transposed: bool = False,
) -> None:
    """Copy ``source`` into the ``outputs`` x ``inputs`` block of ``target``; the original outputs
    get zero weight from every other input channel."""
    weight = target.weight.transpose(0, 1) if transposed else target.weight
    old = source.weight.transpose(0, 1) if transposed else source.weight
    rows = torch.as_tensor(list(outputs))
    weight[rows] = 0
    weight[rows[:, None], torch.as_tensor(list(inputs))[None, :]] = old
    if target.bias is not None and source.bias is not None:
        target.bias[rows] = source.bias

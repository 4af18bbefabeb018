"""The default model's network: a 2.5-D residual U-Net conditioned on a noise-level map.

Input channels: ``2 * context + 1`` adjacent slices (the centre one is denoised) and one channel
holding the noise standard deviation of each pixel, all in normalised intensity units. The
network predicts the correction added to the centre slice, so at low noise it stays close to
identity. Inside, downsamplings keep the cost per voxel small enough for CPUs; the shallowest
levels may add their skip connection to the upsampled features instead of concatenating it,
which halves those decoders' first convolution (most of the cost sits at full resolution).
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
    """2.5-D U-Net: ``(B, 2*context+2, H, W)`` -> denoised centre slice ``(B, 1, H, W)``.

    ``summed_skips``: how many of the shallowest levels add their skip connection to the
    upsampled features rather than concatenating it (0: every level concatenates).
    """

    noise_level_input = True

    def __init__(self, context: int = 2, channels: tuple[int, ...] = (32, 64, 96), summed_skips: int = 0) -> None:
        super().__init__()
        self.context = context
        self.in_channels = 2 * context + 2
        self.levels = len(channels) - 1
        if not 0 <= summed_skips <= self.levels:
            raise ValueError(f"summed_skips must be between 0 and {self.levels} for {len(channels)} levels")
        self.summed_skips = summed_skips
        self.encoders = nn.ModuleList()
        previous = self.in_channels
        for width in channels:
            self.encoders.append(_DoubleConv(previous, width))
            previous = width
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for skip in range(self.levels - 1, -1, -1):
            self.upsamplers.append(nn.ConvTranspose2d(channels[skip + 1], channels[skip], 2, stride=2))
            merged_width = channels[skip] if self._sums(skip) else 2 * channels[skip]
            self.decoders.append(_DoubleConv(merged_width, channels[skip]))
        self.head = nn.Conv2d(channels[0], 1, 1)

    @property
    def channels(self) -> tuple[int, ...]:
        """Feature channels per level, shallowest first."""
        return tuple(_conv(encoder, 0).out_channels for encoder in self.encoders)

    @property
    def arguments(self) -> dict[str, object]:
        """The constructor arguments that rebuild this network, as a catalogue entry stores them."""
        arguments: dict[str, object] = {"context": self.context, "channels": list(self.channels)}
        if self.summed_skips:
            arguments["summed_skips"] = self.summed_skips
        return arguments

    def _sums(self, level: int) -> bool:
        """Whether the skip connection of ``level`` (0: full resolution) is added, not concatenated."""
        return level < self.summed_skips

    @torch.no_grad()
    def load_narrower(self, narrower: ResidualUNet25D) -> None:
        """Start from a trained network with fewer channels per level, computing what it computes.

        Its weights fill the first channels of each layer; the weights from the added channels
        into the original ones start at zero, so the output is unchanged, and the added channels
        keep their random initialisation and learn from there (Net2Net-style widening).
        """
        old, new = narrower.channels, self.channels
        fits = len(old) == len(new) and all(o <= n for o, n in zip(old, new, strict=True))
        if narrower.context != self.context or narrower.summed_skips != self.summed_skips or not fits:
            raise ValueError(
                f"cannot widen channels {list(old)} (context {narrower.context}, summed skips "
                f"{narrower.summed_skips}) into {list(new)} (context {self.context}, summed skips {self.summed_skips})"
            )
        inputs = range(self.in_channels)
        for level, (target, source) in enumerate(zip(self.encoders, narrower.encoders, strict=True)):
            previous = inputs if level == 0 else range(old[level - 1])
            _embed(_conv(target, 0), _conv(source, 0), range(old[level]), previous)
            _embed(_conv(target, 2), _conv(source, 2), range(old[level]), range(old[level]))
        for index, skip in enumerate(range(self.levels - 1, -1, -1)):
            kept = range(old[skip])
            _embed(_conv(self.upsamplers, index), _conv(narrower.upsamplers, index), kept, range(old[skip + 1]), True)
            merged = kept if self._sums(skip) else [*kept, *(new[skip] + k for k in kept)]  # [upsampled, skip]
            decoder, narrower_decoder = self.decoders[index], narrower.decoders[index]
            _embed(_conv(decoder, 0), _conv(narrower_decoder, 0), kept, merged)
            _embed(_conv(decoder, 2), _conv(narrower_decoder, 2), kept, kept)
        _embed(self.head, narrower.head, range(1), range(old[0]))

    @torch.no_grad()
    def load_concatenating(self, concatenating: ResidualUNet25D) -> None:
        """Start from a trained network of the same widths that concatenates skips this one sums.

        Every layer is copied; a decoder that now sees ``upsampled + skip`` instead of
        ``[upsampled, skip]`` starts with the weights its original gave the skip, so the skip's
        detail passes as it did and training re-learns how the deeper features enter.
        """
        same = concatenating.context == self.context and concatenating.channels == self.channels
        if not same or concatenating.summed_skips > self.summed_skips:
            raise ValueError(
                f"cannot start {list(self.channels)} (context {self.context}, summed skips {self.summed_skips}) "
                f"from {list(concatenating.channels)} (context {concatenating.context}, "
                f"summed skips {concatenating.summed_skips})"
            )
        state = concatenating.state_dict()
        for index, skip in enumerate(range(self.levels - 1, -1, -1)):
            if self._sums(skip) and not concatenating._sums(skip):
                key = f"decoders.{index}.0.weight"
                state[key] = state[key][:, self.channels[skip] :].clone()  # the half that read the skip
        self.load_state_dict(state)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        padded, size = pad_to_multiple(inputs, 2**self.levels)
        skips = []
        features = padded
        for level, encoder in enumerate(self.encoders):
            features = encoder(features)
            if level < self.levels:
                skips.append(features)
                features = F.avg_pool2d(features, 2)
        for level, upsample, decoder in zip(
            range(self.levels - 1, -1, -1), self.upsamplers, self.decoders, strict=True
        ):
            upsampled, skip = upsample(features), skips[level]
            features = decoder(upsampled + skip if self._sums(level) else torch.cat([upsampled, skip], dim=1))
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

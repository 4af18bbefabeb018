"""Paper 002 (Shylaja): convolutional denoising autoencoder.

Encoder: 3x3 convolutions with 32, 64, 128 and 128 filters, ReLU, 2x2 max-pooling after the first
three; decoder: 2x2 up-sampling and 3x3 convolutions back to the input channels, sigmoid output.
The paper's 224x224 RGB slices become three adjacent MRI slices (``context=1``); any in-plane size
is padded to a multiple of 8 and cropped back. Intensities (brightest tissue ~ 1 after the
engine's normalisation) are divided by ``intensity_range`` so the sigmoid's (0, 1) covers them, and
multiplied back on the way out.

``fusion=False`` is the paper's model: blind, the image comes out of the bottleneck, so fine detail
is lost (measured: below the noisy input up to about 15 % noise). ``fusion=True`` adds one learned
1x1 gate over the last decoder features and the log noise level that mixes the autoencoder's image
with the centre input slice pixel by pixel (``x + g (cdae(x) - x)``): flat regions take the
autoencoder's estimate, edges and low-noise scans keep the input. The network then takes the
engine's noise-level map as an extra input channel.
"""

from __future__ import annotations

import torch
from torch import nn

from .contract import SliceNetwork
from .padding import crop_to, pad_to_multiple


class ConvDenoisingAutoencoder(SliceNetwork):
    """``(B, 2*context+1 [+1 noise map], H, W)`` slices -> denoised centre slice ``(B, 1, H, W)``."""

    def __init__(
        self,
        context: int = 1,
        filters: tuple[int, ...] = (32, 64, 128, 128),
        intensity_range: float = 2.0,
        fusion: bool = False,
    ) -> None:
        super().__init__()
        self.context = context
        self.intensity_range = intensity_range
        self.noise_level_input = fusion
        channels = 2 * context + 1
        encoder: list[nn.Module] = []
        previous = channels
        for index, width in enumerate(filters):
            encoder += [nn.Conv2d(previous, width, 3, padding=1), nn.ReLU(inplace=True)]
            if index < len(filters) - 1:
                encoder.append(nn.MaxPool2d(2))
            previous = width
        decoder: list[nn.Module] = []
        for width in reversed(filters[:-1]):
            decoder += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(previous, width, 3, padding=1),
                nn.ReLU(inplace=True),
            ]
            previous = width
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder)
        self.output = nn.Sequential(nn.Conv2d(previous, channels, 3, padding=1), nn.Sigmoid())
        self.gate = nn.Sequential(nn.Conv2d(previous + 1, 1, 1), nn.Sigmoid()) if fusion else None
        self.downsampling = 2 ** (len(filters) - 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        slices = inputs[:, : 2 * self.context + 1]
        padded, size = pad_to_multiple(slices / self.intensity_range, self.downsampling)
        features = self.decoder(self.encoder(padded))
        centre = slice(self.context, self.context + 1)
        image = crop_to(self.output(features)[:, centre], size) * self.intensity_range
        if self.gate is None:
            return image
        log_level = torch.log(inputs[:, -1:].clamp(min=1e-4))  # the optimal mix goes with sigma^2
        padded_level, _ = pad_to_multiple(log_level, self.downsampling)
        gate = crop_to(self.gate(torch.cat([features, padded_level], dim=1)), size)
        return slices[:, centre] + gate * (image - slices[:, centre])

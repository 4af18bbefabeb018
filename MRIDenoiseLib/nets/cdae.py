"""Paper 002 (Shylaja): convolutional denoising autoencoder.

Encoder: 3x3 convolutions with 32, 64, 128 and 128 filters, ReLU, 2x2 max-pooling after the first
three; decoder: 2x2 up-sampling and 3x3 convolutions back to the input channels, sigmoid output.
The paper's 224x224 RGB slices become three adjacent MRI slices (``context=1``); any in-plane size
is padded to a multiple of 8 and cropped back. Intensities (brightest tissue ~ 1 after the
engine's normalisation) are divided by ``intensity_range`` so the sigmoid's (0, 1) covers them, and
multiplied back on the way out. No noise-level input: the model is blind, as in the paper.
With ``residual=True`` the sigmoid output, centred and scaled to (-range/2, range/2), is the noise
estimate subtracted from the centre slice instead of the image itself: the paper's image output
caps quality well below the noisy input at low noise levels (see the model card).
"""

from __future__ import annotations

import torch
from torch import nn

from .padding import crop_to, pad_to_multiple


class ConvDenoisingAutoencoder(nn.Module):
    """``(B, 2*context+1, H, W)`` noisy slices -> denoised centre slice ``(B, 1, H, W)``."""

    noise_level_input = False

    def __init__(
        self,
        context: int = 1,
        filters: tuple[int, ...] = (32, 64, 128, 128),
        intensity_range: float = 2.0,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.context = context
        self.residual = residual
        self.intensity_range = intensity_range
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
        decoder += [nn.Conv2d(previous, channels, 3, padding=1), nn.Sigmoid()]
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder)
        self.downsampling = 2 ** (len(filters) - 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        padded, size = pad_to_multiple(inputs / self.intensity_range, self.downsampling)
        centre = slice(self.context, self.context + 1)
        output = crop_to(self.decoder(self.encoder(padded))[:, centre], size)
        if self.residual:
            return inputs[:, centre] - (output - 0.5) * self.intensity_range
        return output * self.intensity_range

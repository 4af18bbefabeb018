"""Paper 000's networks: the disentangled-representation denoiser and its CycleGAN baseline.

Both work on single slices in normalised intensity units and take no noise-level map (they
are blind by construction). No normalisation layers: batch or instance statistics of training
patches would differ from those of whole slices at inference.

- ``ContentEncoder`` (E_c, shared by both domains), ``NoiseEncoder`` (E_n: a spatial code at
  half resolution with a mean and a log-variance per element, pushed towards N(0, I) by the KL
  loss), ``Generator`` (G_H or G_L: content features and, for the disentangled model, a noise
  code in; an image out), ``PatchDiscriminator`` (D_H, D_L).
- ``DisentangledDenoiser`` is what ships: equation (12), G_H(E_c(I), E_n(I)), with the mean code.
- ``CycleGANGenerator`` is the baseline's noisy-to-clean generator.

``residual`` generators add their output to the input image (a change of domain rather than a
new image); the paper's generators are not residual. ``noise_scaled`` generators (residual only)
also take the engine's noise-level map: it joins the content features, and the output counts the
change in units of the map, so at 5 % noise a generator moves pixels a sixth as far as at 30 %.
A ``correction_bound`` (in units of the map) squashes the output through ``bound * tanh(x / bound)``
first, so no pixel moves by more than that many noise levels. The paper's model is blind; with
``noise_scaled`` it is blind in the product's sense (the noise level is estimated from the scan).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .contract import SliceNetwork
from .correction import check_correction_arguments, noise_scaled_correction
from .padding import crop_to, pad_to_multiple


def _act() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.2, inplace=True)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), _act(), nn.Conv2d(channels, channels, 3, padding=1)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features + self.body(features)


class ContentEncoder(nn.Sequential):
    """Image ``(B, 1, H, W)`` -> content features ``(B, 2 * width, H / 2, W / 2)``."""

    def __init__(self, width: int = 32, blocks: int = 3) -> None:
        super().__init__(
            nn.Conv2d(1, width, 3, padding=1),
            _act(),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            _act(),
            *(_ResidualBlock(2 * width) for _ in range(blocks)),
        )


class NoiseEncoder(nn.Module):
    """Image -> mean and log-variance of a noise code ``(B, code, H / 2, W / 2)``."""

    def __init__(self, width: int = 32, code: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            _act(),
            nn.Conv2d(width, width, 4, stride=2, padding=1),
            _act(),
            nn.Conv2d(width, 2 * code, 3, padding=1),
        )

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_variance = self.body(image).chunk(2, dim=1)
        return mean, log_variance.clamp(-10.0, 10.0)


def sample_code(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """A draw from N(mean, exp(log_variance)) that gradients flow through (reparameterisation)."""
    return mean + torch.randn_like(mean) * (0.5 * log_variance).exp()


class Generator(nn.Module):
    """Content features (and a noise code when ``code`` > 0) -> image ``(B, 1, H, W)``.

    With ``residual`` the decoded map is added to the image the content came from (given as
    ``image``), so the generator only has to produce the change between the domains. With
    ``noise_scaled`` the noise-level map (``level``, the image's shape) is an input too and the
    change is counted in units of it, squashed by ``correction_bound`` when one is set.
    """

    def __init__(
        self,
        width: int = 32,
        blocks: int = 3,
        code: int = 0,
        residual: bool = False,
        noise_scaled: bool = False,
        correction_bound: float | None = None,
    ) -> None:
        super().__init__()
        check_correction_arguments(residual, noise_scaled, correction_bound)
        self.code = code
        self.residual = residual
        self.noise_scaled = noise_scaled
        self.correction_bound = correction_bound
        self.merge = nn.Conv2d(2 * width + code + int(noise_scaled), 2 * width, 3, padding=1)
        self.blocks = nn.Sequential(*(_ResidualBlock(2 * width) for _ in range(blocks)))
        self.up = nn.Sequential(nn.ConvTranspose2d(2 * width, width, 2, stride=2), _act())
        self.head = nn.Conv2d(width, 1, 3, padding=1)

    def forward(
        self,
        content: torch.Tensor,
        code: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
        level: torch.Tensor | None = None,
    ) -> torch.Tensor:
        parts = [content] if code is None else [content, code]
        if self.noise_scaled:
            if level is None:
                raise ValueError("a noise-scaled generator needs the noise-level map")
            parts.append(F.avg_pool2d(level, 2))
        features = self.blocks(F.leaky_relu(self.merge(torch.cat(parts, dim=1)), 0.2))
        decoded = self.head(self.up(features))
        if not self.residual:
            return decoded
        if image is None:
            raise ValueError("a residual generator needs the image its content came from")
        if self.noise_scaled:
            if level is None:
                raise ValueError("a noise-scaled generator needs the noise-level map")
            decoded = noise_scaled_correction(decoded, level, self.correction_bound)
        return image + decoded


def split_level(inputs: torch.Tensor, noise_scaled: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A network input -> the image and, for noise-scaled networks, its noise-level map (last channel)."""
    if not noise_scaled:
        return inputs, None
    return inputs[:, :1], inputs[:, 1:2]


class PatchDiscriminator(nn.Sequential):
    """Image -> a map of real/fake logits, one per overlapping patch (about 22 pixels across)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__(
            nn.Conv2d(1, width, 4, stride=2, padding=1),
            _act(),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            _act(),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1),
            _act(),
            nn.Conv2d(4 * width, 1, 3, padding=1),
        )


class DisentangledDenoiser(SliceNetwork):
    """Paper 000's denoiser, equation (12): ``G_H(E_c(I), E_n(I))`` on one slice ``(B, 1, H, W)``.

    ``noise_scaled`` networks take ``(B, 2, H, W)``: the slice and its noise-level map.
    """

    context = 0

    def __init__(
        self,
        width: int = 32,
        blocks: int = 3,
        code: int = 4,
        residual: bool = False,
        noise_scaled: bool = False,
        correction_bound: float | None = None,
    ) -> None:
        super().__init__()
        self.noise_level_input = noise_scaled
        self.content_encoder = ContentEncoder(width, blocks)
        self.noise_encoder = NoiseEncoder(width, code)
        self.clean_generator = Generator(width, blocks, code, residual, noise_scaled, correction_bound)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        padded, size = pad_to_multiple(inputs, 2)
        image, level = split_level(padded, self.noise_level_input)
        mean, _ = self.noise_encoder(image)
        return crop_to(self.clean_generator(self.content_encoder(image), mean, image, level), size)


class CycleGANGenerator(SliceNetwork):
    """The CycleGAN baseline's generator: encoder and decoder of the same shape, no noise code.

    ``noise_scaled`` generators take ``(B, 2, H, W)``: the slice and its noise-level map.
    """

    context = 0

    def __init__(
        self,
        width: int = 32,
        blocks: int = 3,
        residual: bool = False,
        noise_scaled: bool = False,
        correction_bound: float | None = None,
    ) -> None:
        super().__init__()
        self.noise_level_input = noise_scaled
        self.encoder = ContentEncoder(width, blocks)
        self.decoder = Generator(width, blocks, 0, residual, noise_scaled, correction_bound)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        padded, size = pad_to_multiple(inputs, 2)
        image, level = split_level(padded, self.noise_level_input)
        return crop_to(self.decoder(self.encoder(image), None, image, level), size)

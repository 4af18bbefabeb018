"""Paper 001 (Glaser): voxel-wise q-space autoencoders for diffusion-weighted signals.

Input: one voxel's signal over the gradient table (normalised by its b0 mean). Encoder: three
fully connected layers narrowing towards the latent size; ``QSpaceVAE`` ends in two parallel
layers for the mean and log-variance of a Gaussian latent (reparameterised sampling while
training, the mean at inference), ``QSpaceDAE`` in one plain latent layer (the paper's baseline).
Decoder: three fully connected layers widening back to the table size.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn


def _widths(inputs: int, latent: int) -> list[int]:
    """Three widths stepping geometrically from the input size down towards the latent size."""
    return [max(latent, round(float(w))) for w in np.geomspace(inputs * 2, latent * 2, 3)]


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for first, second in itertools.pairwise(sizes):
        layers += [nn.Linear(first, second), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class QSpaceDAE(nn.Module):
    """Denoising autoencoder: ``(N, K)`` noisy signals -> ``(N, K)`` clean estimate."""

    def __init__(self, measurements: int = 32, latent: int = 7) -> None:
        super().__init__()
        widths = _widths(measurements, latent)
        self.encoder = _mlp([measurements, *widths])
        self.latent = nn.Linear(widths[-1], latent)
        self.decoder = nn.Sequential(_mlp([latent, *reversed(widths)]), nn.Linear(widths[0], measurements))

    def forward(self, signals: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.latent(self.encoder(signals)))


class QSpaceVAE(nn.Module):
    """Variational autoencoder; ``forward`` returns (reconstruction, mean, log-variance)."""

    def __init__(self, measurements: int = 32, latent: int = 7) -> None:
        super().__init__()
        widths = _widths(measurements, latent)
        self.encoder = _mlp([measurements, *widths])
        self.mean = nn.Linear(widths[-1], latent)
        self.log_variance = nn.Linear(widths[-1], latent)
        self.decoder = nn.Sequential(_mlp([latent, *reversed(widths)]), nn.Linear(widths[0], measurements))

    def forward(self, signals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.encoder(signals)
        mean, log_variance = self.mean(hidden), self.log_variance(hidden).clamp(-20.0, 10.0)
        latent = mean + torch.exp(0.5 * log_variance) * torch.randn_like(mean) if self.training else mean
        return self.decoder(latent), mean, log_variance


def kl_divergence(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """KL(q || N(0, I)) per sample, summed over latent dimensions (paper equation 3), batch mean."""
    return (-0.5 * (1 + log_variance - mean**2 - log_variance.exp()).sum(dim=1)).mean()


def kl_weight(epoch: int, start: int = 2, step: float = 1e-4, maximum: float = 1.5e-3) -> float:
    """Paper Table 1: 0 before epoch ``start``, then rising by ``step`` per epoch up to ``maximum``."""
    return 0.0 if epoch < start else min(maximum, step * (epoch - start + 1))

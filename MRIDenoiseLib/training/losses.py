"""Loss terms of papers 004 (consensus Noise2Noise) and 000 (disentangled GAN), equation by equation.

Image norms follow the papers: a squared L2 norm is summed over an image's pixels and averaged
over the batch, so their published weights (beta_w, beta_r) keep their meaning.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _squared_norm(difference: torch.Tensor) -> torch.Tensor:
    """``||.||_2^2`` of each image in a batch, averaged over the batch."""
    return difference.pow(2).flatten(1).sum(dim=1).mean()


def consensus_loss(
    first_output: torch.Tensor, second_output: torch.Tensor, first_noisy: torch.Tensor, second_noisy: torch.Tensor
) -> torch.Tensor:
    """Paper 004, equation (8): each member fitted to the other realisation, minus a quarter of their disagreement."""
    return (
        0.5 * _squared_norm(first_output - second_noisy)
        + 0.5 * _squared_norm(second_output - first_noisy)
        - 0.25 * _squared_norm(first_output - second_output)
    )


def weight_decay(*networks: nn.Module) -> torch.Tensor:
    """Paper 004, equation (10): the summed squared L2 norms of every weight of the networks."""
    return torch.stack([parameter.pow(2).sum() for network in networks for parameter in network.parameters()]).sum()


def image_consistency(consensus: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """Paper 004, equation (11): the consensus image (9) held near an estimate of the object."""
    return _squared_norm(consensus - estimate)


def squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||output - target||_2^2`` per image, batch-averaged: Noise2Noise (paper 004's equation (2)) when the
    target is another noisy realisation, Noise2Clean (1) when it is the clean image."""
    return _squared_norm(output - target)


def kl_to_standard_normal(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """Paper 000, equation (2): KL(N(mean, var) || N(0, I)), summed over code dimensions, batch-averaged."""
    terms = mean.pow(2) + log_variance.exp() - log_variance - 1.0
    return 0.5 * terms.flatten(1).sum(dim=1).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Paper 000, equations (3) and (5) as the discriminator maximises them: -E[log D(real)] - E[log(1 - D(fake))]."""
    return F.binary_cross_entropy_with_logits(
        real_logits, torch.ones_like(real_logits)
    ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generators' side of (3) and (5) in the non-saturating form: -E[log D(fake)]."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def cycle_loss(original: torch.Tensor, reconstructed: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Paper 000, equation (7), one domain: mean absolute difference after the round trip.

    ``scale`` (one value per example) divides each example's mean difference before averaging.
    """
    difference = (original - reconstructed).abs().mean(dim=tuple(range(1, original.dim())))
    return (difference if scale is None else difference / scale).mean()


def rician_mean(signal: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Mean of the magnitude of ``signal`` plus complex Gaussian noise of std ``sigma`` per channel.

    sigma sqrt(pi / 2) L_1/2(-signal^2 / (2 sigma^2)), written with exponentially scaled Bessel
    functions so that it stays finite for any signal to noise ratio: sigma sqrt(pi / 2) at zero
    signal, signal + sigma^2 / (2 signal) far above the noise. Below zero, where no magnitude
    lies, it continues as the signal plus the bias at |signal|, so that it increases everywhere
    and a fit cannot land on the signal's negative. ``sigma`` may be a tensor that broadcasts against
    ``signal`` (a level per example).
    """
    signal = signal.float()
    magnitude = signal.abs()
    u = (magnitude / (2.0 * sigma)).pow(2).clamp(min=1e-6)
    mean = sigma * math.sqrt(math.pi / 2) * ((1 + 2 * u) * torch.special.i0e(u) + 2 * u * torch.special.i1e(u))
    return signal + (mean - magnitude)

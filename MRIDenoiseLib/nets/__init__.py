"""Network families, one file each, and the registry from architecture id to constructor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from .cdae import ConvDenoisingAutoencoder
from .consensus import ConsensusPair
from .gan import CycleGANGenerator, DisentangledDenoiser
from .qspace import QSpaceDAE, QSpaceVAE
from .shells import ShellUNet3D
from .unet25d import ResidualUNet25D
from .unet_dctd import UNetDCTDA

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "residual-unet-2.5d": ResidualUNet25D,
    "cdae": ConvDenoisingAutoencoder,
    "consensus-pair": ConsensusPair,
    "disentangled-denoiser": DisentangledDenoiser,
    "cyclegan-generator": CycleGANGenerator,
    "unet-dctd-a": UNetDCTDA,
    "qspace-vae": QSpaceVAE,
    "qspace-dae": QSpaceDAE,
    "shell-unet-3d": ShellUNet3D,
}
"""Image networks take slices (2.5-D); the q-space ones take one voxel's diffusion signal; the shell
network takes a diffusion shell's spherical-harmonic coefficients in 3-D."""
DIFFUSION_ARCHITECTURES = frozenset({"qspace-vae", "qspace-dae", "shell-unet-3d"})
"""The architectures of :data:`ARCHITECTURES` that denoise diffusion series rather than image slices."""


def build_network(architecture: str, arguments: dict[str, Any] | None = None) -> nn.Module:
    """Instantiate a registered architecture with its catalogue arguments."""
    try:
        constructor = ARCHITECTURES[architecture]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise KeyError(f"unknown architecture {architecture!r}; known: {known}") from None
    return constructor(**(arguments or {}))

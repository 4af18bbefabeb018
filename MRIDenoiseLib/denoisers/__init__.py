"""Every denoiser behind one interface: classical filters by name, networks from the catalogue."""

from .base import Denoiser
from .classical import AnisotropicDiffusion, GaussianSmoothing, NonLocalMeans
from .network import NetworkDenoiser
from .refinement import WienerRefined

CLASSICAL_METHODS: dict[str, type[Denoiser]] = {
    "gaussian": GaussianSmoothing,
    "adf": AnisotropicDiffusion,
    "nlm": NonLocalMeans,
}

__all__ = ["CLASSICAL_METHODS", "Denoiser", "NetworkDenoiser", "WienerRefined"]

"""Diffusion series denoised jointly in q-space and in space: MP-PCA, then the scalar network's spatial prior.

MP-PCA (DIPY) uses the redundancy between the volumes of a series inside 5x5x5 patches and estimates
the noise per voxel, sigma(x), from all volumes together. What it leaves is a smaller noise, which
this method measures voxel by voxel (below) and hands, as a noise-level map, to the 2.5-D network
trained on magnitude MRI: a spatial prior per volume that MP-PCA does not have. The Rician bias that
MP-PCA keeps (it estimates the magnitude's mean) is removed first, with sigma(x).

The noise MP-PCA leaves: MP-PCA projects each voxel's q-space signal onto the signal components of
its patch, so the noise it removes and the noise it keeps are orthogonal parts of one noise vector;
over the n volumes of a voxel, removed power + kept power = n sigma(x)^2. The kept level is therefore
sqrt(sigma^2 - mean removed^2), both powers averaged over a few voxels first (each voxel's estimate
rests on n values), then bounded to [LEAST_LEFT, 1] x sigma.

What the network is told: ``level_factor`` times that level. The noise MP-PCA leaves is not white
(each voxel is a mean of overlapping patch projections, so neighbours share it), and a network that
learned white noise, told its full level, also smooths away the small differences between gradient
directions that carry the fibre orientation (the DWI benchmark at b0 SNR 10). ``mppca-spatial-v2``
tells it half: chosen on phantoms of another subject (the Philips DTI at 2 and 3 mm), where half
lowered MP-PCA's direction and FA errors at b0 SNR 10 and 20 and the full level raised them at 10.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..diffusion import GradientTable
from ..noise import signal_from_rician_mean
from ..progress import CancelToken, ProgressCallback, no_progress, scaled
from .base import Denoiser, PerVolume, SeriesDenoiser
from .dipy_methods import MarchenkoPasturPCA

LEAST_LEFT = 0.1
"""The smallest noise level, as a fraction of sigma, MP-PCA is taken to leave."""
SMOOTHING_VOXELS = 2.0
"""Gaussian width (voxels) over which the per-voxel estimate of the noise left is averaged."""


class MPPCAWithSpatialPrior(SeriesDenoiser):
    """MP-PCA, Rician bias removed with its sigma map, then ``spatial`` per volume told ``level_factor``
    times the noise MP-PCA left (see the module's docstring)."""

    model_id = "mppca-spatial"
    gives_signal_components = True

    def __init__(
        self,
        spatial: Denoiser,
        spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0),
        level_factor: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0 < level_factor <= 1:
            raise ValueError(f"level_factor must be in (0, 1], got {level_factor}")
        self.spatial, self.spacing_zyx, self.level_factor = spatial, spacing_zyx, level_factor
        self.left_map: np.ndarray | None = None
        """The noise level MP-PCA left per voxel (z, y, x), after a call."""

    @property
    def device_name(self) -> str:
        return self.spatial.device_name

    def denoise_series(
        self,
        series: np.ndarray,
        table: GradientTable | None,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        mppca = MarchenkoPasturPCA()
        first = mppca.denoise_series(series, table, scaled(progress, 0.0, 0.5), cancel)
        sigma = mppca.sigma_map if mppca.sigma_map is not None else np.zeros(series.shape[:3], np.float32)
        self.sigma_map = sigma
        self.left_map = noise_left(series, first, sigma)
        per_volume = PerVolume(self.spatial, self.level_factor * self.left_map, self.spacing_zyx)
        denoised = per_volume.denoise_series(rician_signal(first, sigma), table, scaled(progress, 0.5, 1.0), cancel)
        return denoised.astype(np.float32)


def noise_left(series: np.ndarray, denoised: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """The noise level a projection denoiser left per voxel: sqrt(sigma^2 - mean removed power), the powers
    smoothed, then bounded to [LEAST_LEFT, 1] x sigma (see the module's docstring)."""
    removed_power = np.mean((np.asarray(series, np.float64) - denoised) ** 2, axis=-1)
    power = np.asarray(sigma, np.float64) ** 2
    kept_power = ndimage.gaussian_filter(power, SMOOTHING_VOXELS) - ndimage.gaussian_filter(
        removed_power, SMOOTHING_VOXELS
    )  # averaged before bounding: bounding each voxel's noisy estimate first would bias the level up
    return np.sqrt(np.clip(kept_power, LEAST_LEFT**2 * power, power)).astype(np.float32)


def rician_signal(mean: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """The signal under a Rician magnitude mean, voxel by voxel, with a noise level per voxel (z, y, x)."""
    level = np.asarray(sigma, np.float64)[..., None]
    safe = np.where(level > 0, level, 1.0)
    signal = signal_from_rician_mean(np.asarray(mean, np.float64) / safe, 1.0) * safe
    return np.where(level > 0, signal, mean).astype(np.float32)

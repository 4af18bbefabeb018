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

What the network is shown (``mppca-spatial-v3``, ``project_shells``): each shell of MP-PCA's debiased
output reduced to its fit in spherical harmonics first (``spherical.project_shells``: order 4 for 20-37
directions, up to 8 for 60 and more). What the fit leaves out is noise the shell's directions cannot
resolve as signal (at b = 1000 and 32 directions, 17 of 32 dimensions), so the network sees
sqrt(kept / directions) of the noise MP-PCA left (``spherical.kept_noise_fraction``) and is told
``level_factor`` times that. With ``noisy_level_factor`` the fraction told depends on the series' b0
signal-to-noise ratio (:func:`b0_snr`): ``level_factor`` from :data:`HIGH_SNR`, ``noisy_level_factor``
up to :data:`LOW_SNR`, linear in log SNR between. On phantoms of the Philips DTI at 2 and 3 mm
(single-shell, b0 SNR 10 and 20; one-off runs) of the two fractions tried, 0.75 of the noise seen gave
the lower direction error at SNR 20 on both grids (5.31 vs 5.78 and 5.70 vs 5.98 degrees) and 0.5 at
SNR 10 (10.41 vs 10.43 and 11.64 vs 11.93): the more the noise dominates the small differences between
directions, the more of them a network told a high level takes for noise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..diffusion import GradientTable, is_b0
from ..errors import InputError
from ..masks import foreground_mask
from ..noise import signal_from_rician_mean
from ..progress import CancelToken, ProgressCallback, no_progress, scaled
from ..spherical import kept_noise_fraction, project_shells
from .base import Denoiser, PerVolume, SeriesDenoiser
from .dipy_methods import MarchenkoPasturPCA

LEAST_LEFT = 0.1
"""The smallest noise level, as a fraction of sigma, MP-PCA is taken to leave."""
SMOOTHING_VOXELS = 2.0
"""Gaussian width (voxels) over which the per-voxel estimate of the noise left is averaged."""
LOW_SNR = 10.0
"""b0 signal-to-noise ratio at and below which the network is told ``noisy_level_factor``."""
HIGH_SNR = 20.0
"""b0 signal-to-noise ratio from which the network is told ``level_factor``."""


class MPPCAWithSpatialPrior(SeriesDenoiser):
    """MP-PCA, Rician bias removed with its sigma map, with ``project_shells`` each shell reduced to its
    spherical-harmonic fit, then ``spatial`` per volume told ``level_factor`` times the noise it sees
    (``noisy_level_factor`` at low b0 SNR; see the module's docstring)."""

    model_id = "mppca-spatial"
    gives_signal_components = True

    def __init__(
        self,
        spatial: Denoiser,
        spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0),
        level_factor: float = 1.0,
        project_shells: bool = False,
        noisy_level_factor: float | None = None,
    ) -> None:
        super().__init__()
        for factor in (level_factor, level_factor if noisy_level_factor is None else noisy_level_factor):
            if not 0 < factor <= 1:
                raise ValueError(f"level factors must be in (0, 1], got {factor}")
        self.spatial, self.spacing_zyx, self.level_factor = spatial, spacing_zyx, level_factor
        self.project_shells, self.noisy_level_factor = project_shells, noisy_level_factor
        self.left_map: np.ndarray | None = None
        """The noise level MP-PCA left per voxel (z, y, x), after a call."""
        self.told_fraction: float | None = None
        """The fraction of the noise it sees the network was told in the last call."""

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
        if self.project_shells and table is None:
            raise InputError("projecting shells onto spherical harmonics needs the series' gradient table")
        mppca = MarchenkoPasturPCA()
        first = mppca.denoise_series(series, table, scaled(progress, 0.0, 0.5), cancel)
        sigma = mppca.sigma_map if mppca.sigma_map is not None else np.zeros(series.shape[:3], np.float32)
        self.sigma_map = sigma
        self.left_map = noise_left(series, first, sigma)
        signal = rician_signal(first, sigma)
        seen = np.ones(series.shape[-1])
        if self.project_shells and table is not None:
            signal, seen = project_shells(signal, table), kept_noise_fraction(table)
        fraction = self.level_factor
        if self.noisy_level_factor is not None and table is not None:
            fraction = told_fraction(b0_snr(series, table, sigma), self.level_factor, self.noisy_level_factor)
        self.told_fraction = fraction
        denoised = np.empty_like(signal)
        groups = np.unique(seen)
        for index, gain in enumerate(groups):
            volumes = np.flatnonzero(seen == gain)
            per_volume = PerVolume(self.spatial, np.float32(fraction * gain) * self.left_map, self.spacing_zyx)
            part = scaled(progress, 0.5 + 0.5 * index / len(groups), 0.5 + 0.5 * (index + 1) / len(groups))
            denoised[..., volumes] = per_volume.denoise_series(signal[..., volumes], None, part, cancel)
        return denoised.astype(np.float32)


def b0_snr(series: np.ndarray, table: GradientTable, sigma: np.ndarray) -> float:
    """The median b0 signal over the median noise level inside the b0 volumes' foreground (0 where there is
    no b0 volume or no noise)."""
    b0 = is_b0(table.bvalues)
    if not b0.any():
        return 0.0
    mean_b0 = np.asarray(series, np.float32)[..., b0].mean(axis=-1)
    inside = foreground_mask(mean_b0)
    noise = float(np.median(sigma[inside])) if inside.any() else 0.0
    return float(np.median(mean_b0[inside])) / noise if noise > 0 else 0.0


def told_fraction(snr: float, level_factor: float, noisy_level_factor: float) -> float:
    """``level_factor`` at b0 SNR from :data:`HIGH_SNR` (and where it is unknown, 0), ``noisy_level_factor``
    up to :data:`LOW_SNR`, linear in log SNR between."""
    if snr <= 0 or snr >= HIGH_SNR:
        return level_factor
    if snr <= LOW_SNR:
        return noisy_level_factor
    weight = np.log(snr / LOW_SNR) / np.log(HIGH_SNR / LOW_SNR)
    return float(noisy_level_factor + weight * (level_factor - noisy_level_factor))


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

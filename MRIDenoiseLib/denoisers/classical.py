"""Classical denoisers behind the common interface, each with parameters derived from sigma.

The noise level they adapt to is ``sigma / intensity_scale``: the noise in units of the
brightest tissue, the same quantity EVALUATION.md calls the noise level.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from skimage.restoration import denoise_nl_means

from ..normalization import intensity_scale
from ..progress import CancelToken, ProgressCallback
from .base import Denoiser


def _image(volume: np.ndarray, spacing_zyx: tuple[float, float, float]) -> sitk.Image:
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    return image


STABLE_TIME_STEP = 1.0 / 2 ** (3 + 1)
"""ITK's stability bound for 3-D diffusion filters, which work in voxel units."""


class GaussianSmoothing(Denoiser):
    """Gaussian smoothing whose width (in voxels of the finest axis) grows with the noise level."""

    model_id = "gaussian"
    magnitude_only = False

    def _denoise(self, volume, sigma, spacing_zyx, progress: ProgressCallback, cancel: CancelToken | None):
        level = sigma / intensity_scale(volume)
        width = float(np.clip(0.3 + 6.0 * level, 0.3, 2.0)) * min(spacing_zyx)
        smoothed = sitk.SmoothingRecursiveGaussian(_image(volume, spacing_zyx), width)
        return sitk.GetArrayFromImage(smoothed)


class AnisotropicDiffusion(Denoiser):
    """Curvature anisotropic diffusion (the papers' ADF); more iterations at higher noise."""

    model_id = "adf"
    magnitude_only = False

    def _denoise(self, volume, sigma, spacing_zyx, progress: ProgressCallback, cancel: CancelToken | None):
        level = sigma / intensity_scale(volume)
        iterations = int(np.clip(round(4 + 60 * level), 4, 24))
        image = _image(volume, spacing_zyx)
        diffusion = sitk.CurvatureAnisotropicDiffusionImageFilter()
        diffusion.SetTimeStep(STABLE_TIME_STEP)
        diffusion.SetConductanceParameter(1.5)
        diffusion.SetNumberOfIterations(1)
        for iteration in range(iterations):
            if cancel is not None:
                cancel.raise_if_cancelled()
            image = diffusion.Execute(image)
            progress((iteration + 1) / iterations, f"diffusion {iteration + 1}/{iterations}")
        return sitk.GetArrayFromImage(image)


class NonLocalMeans(Denoiser):
    """Non-local means (scikit-image, fast mode) with a Rician bias correction.

    The filter's strength h follows sigma; the magnitude bias of Rician noise,
    E[M]^2 ~ A^2 + sigma^2, is removed from the result.
    """

    model_id = "nlm"

    def _denoise(self, volume, sigma, spacing_zyx, progress: ProgressCallback, cancel: CancelToken | None):
        filtered = np.empty_like(volume)
        depth = volume.shape[0]
        for start in range(0, depth, NLM_SLAB):
            if cancel is not None:
                cancel.raise_if_cancelled()
            stop = min(start + NLM_SLAB, depth)
            low, high = max(start - NLM_HALO, 0), min(stop + NLM_HALO, depth)
            slab = denoise_nl_means(
                volume[low:high], patch_size=3, patch_distance=4, h=0.9 * sigma, sigma=sigma, fast_mode=True,
                preserve_range=True,
            )  # fmt: skip
            filtered[start:stop] = slab[start - low : start - low + stop - start]
            progress(stop / depth, f"non-local means, slice {stop}/{depth}")
        return np.sqrt(np.clip(filtered.astype(np.float32) ** 2 - sigma**2, 0, None))


NLM_SLAB = 16
"""Slices filtered per call, so a cancel is honoured within one slab (a few seconds)."""
NLM_HALO = 6
"""Slices of context on each side of a slab: patch distance 4 + patch radius 1 + 1, so results match the
whole-volume filter."""

"""Intensity normalisation: one recorded scale so networks see the brightest tissue near 1."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import InputError
from .masks import brightest_tissue_mean


def intensity_scale(volume: np.ndarray) -> float:
    """Mean of the brightest tissue class, measured on a lightly smoothed copy.

    Smoothing (Gaussian, 1 voxel) makes the figure nearly the same for a clean volume and for
    the same volume with heavy noise, so training (on clean data) and inference (on noisy
    data) normalise alike. Divide by it to normalise; multiply to invert.
    """
    data = np.asarray(volume, np.float32)
    smoothed = ndimage.gaussian_filter(data, sigma=1.0) if min(data.shape) > 2 else data
    scale = brightest_tissue_mean(smoothed)
    if not np.isfinite(scale) or scale <= 0:
        raise InputError("the volume has no positive signal to normalise by")
    return scale

"""The diffusion community's own denoisers, from DIPY: MP-PCA (MRtrix dwidenoise's method) and Patch2Self.

DIPY (and, for Patch2Self, scikit-learn) is an optional dependency, installed on first use: a clear
error names the package when it is missing.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..diffusion import B0_THRESHOLD, GradientTable
from ..errors import InputError, ModelError
from ..progress import CancelToken, ProgressCallback, no_progress
from .base import SeriesDenoiser


def _require(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelError(f"this method needs {package}: pip install {package}") from None


PATCH_RADIUS = 2
"""MP-PCA's patches: 5x5x5 voxels."""


class MarchenkoPasturPCA(SeriesDenoiser):
    """MP-PCA (Veraart et al. 2016): local PCA over 5x5x5 patches of the whole series, the noise
    components chosen by the Marchenko-Pastur law; gives the noise sigma per voxel (``sigma_map``)
    and, on request, the number of signal components per voxel (:func:`count_signal_components`)."""

    model_id = "mppca"
    gives_signal_components = True

    def denoise_series(
        self,
        series: np.ndarray,
        table: GradientTable | None,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        localpca = _require("dipy.denoise.localpca", "dipy")
        if series.ndim != 4 or series.shape[3] < 4:
            raise InputError(f"MP-PCA needs a 4-D series of at least 4 volumes, got shape {series.shape}")
        progress(0.0, "MP-PCA")
        with warnings.catch_warnings():  # DIPY averages empty patches at the edges (NaN sigma, handled below)
            warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
            warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
            denoised, sigma = localpca.mppca(
                np.asarray(series, np.float64), patch_radius=PATCH_RADIUS, return_sigma=True, suppress_warning=True
            )
        if cancel is not None:
            cancel.raise_if_cancelled()
        self.sigma_map = np.nan_to_num(np.asarray(sigma, np.float32))  # no estimate where the patch is empty
        return np.clip(np.asarray(denoised, np.float32), 0, None)


def count_signal_components(series: np.ndarray) -> np.ndarray:
    """The number of signal components MP-PCA keeps in the patch centred on each voxel (z, y, x), like
    MRtrix ``dwidenoise -rank``: DIPY's decision, re-run on each centred patch (DIPY does not return it).

    Per patch: the eigenvalues of the q-space covariance of its 125 voxels; the Marchenko-Pastur
    classifier (Veraart et al. 2016, as DIPY implements it) gives the noise variance; components whose
    eigenvalue reaches (1 + sqrt(n / 125))^2 times that variance are signal. Voxels within two of the
    edge take the nearest full patch's count.
    """
    if series.ndim != 4:
        raise InputError(f"signal components need a 4-D series, got shape {series.shape}")
    side = 2 * PATCH_RADIUS + 1
    samples, volumes = side**3, series.shape[3]
    if any(extent < side for extent in series.shape[:3]):
        raise InputError(f"MP-PCA needs at least {side} voxels along each axis, got shape {series.shape[:3]}")
    # one window per voxel whose patch fits: (z', y', x', 1, 5, 5, 5, n), copied one z plane at a time
    patches = np.lib.stride_tricks.sliding_window_view(np.asarray(series, np.float64), (side, side, side, volumes))
    tau_factor = 1 + np.sqrt(volumes / samples)
    inside = np.empty(patches.shape[:3], np.int16)
    for plane in range(patches.shape[0]):
        block = patches[plane].reshape(-1, samples, volumes)
        centred = block - block.mean(axis=1, keepdims=True)
        eigenvalues = np.linalg.eigvalsh(centred.transpose(0, 2, 1) @ centred / samples)  # ascending
        noise_variance = _marchenko_pastur_variance(eigenvalues, samples)
        counts = (eigenvalues >= tau_factor**2 * noise_variance[:, None]).sum(axis=1)
        inside[plane] = counts.reshape(patches.shape[1:3])
    return np.pad(inside, PATCH_RADIUS, mode="edge").astype(np.float32)


def _marchenko_pastur_variance(eigenvalues: np.ndarray, samples: int) -> np.ndarray:
    """Noise variance per row of ascending eigenvalues: the largest set of smallest eigenvalues whose
    spread fits the Marchenko-Pastur law (the test DIPY's classifier runs, for every row at once)."""
    kept = eigenvalues[:, -(samples - 1) :] if eigenvalues.shape[1] > samples - 1 else eigenvalues
    count = kept.shape[1]
    ranks = np.arange(count)
    running_mean = np.cumsum(kept, axis=1) / (ranks + 1)  # mean of the c + 1 smallest
    spread = kept - kept[:, :1] - 4 * np.sqrt((ranks + 1) / samples) * running_mean
    # DIPY walks down from the top while the spread is positive: stop at the highest c where it is not
    fits = spread <= 0
    highest = count - 1 - np.argmax(fits[:, ::-1], axis=1)
    highest = np.where(fits.any(axis=1), highest, 0)
    return running_mean[np.arange(len(kept)), highest]


class Patch2Self(SeriesDenoiser):
    """Patch2Self (Fadnavis et al. 2020): each volume predicted from all the others by a linear model,
    self-supervised; needs the b-values to treat b0 volumes apart."""

    model_id = "patch2self"
    sigma_estimated = False

    def denoise_series(
        self,
        series: np.ndarray,
        table: GradientTable | None,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        _require("sklearn.linear_model", "scikit-learn")
        patch2self = _require("dipy.denoise.patch2self", "dipy")
        if table is None:
            raise InputError("Patch2Self needs the series' b-values (.bval/.bvec or NRRD DWMRI keys)")
        progress(0.0, "Patch2Self")
        denoised = patch2self.patch2self(
            np.asarray(series, np.float64), table.bvalues, model="ols", b0_threshold=B0_THRESHOLD, verbose=False
        )
        if cancel is not None:
            cancel.raise_if_cancelled()
        self.sigma_map = None
        return np.clip(np.asarray(denoised, np.float32), 0, None)


SERIES_METHODS: dict[str, type[SeriesDenoiser]] = {"mppca": MarchenkoPasturPCA, "patch2self": Patch2Self}
"""Catalogue architecture of a classical diffusion method -> its class."""

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


class MarchenkoPasturPCA(SeriesDenoiser):
    """MP-PCA (Veraart et al. 2016): local PCA over 5x5x5 patches of the whole series, the noise
    components chosen by the Marchenko-Pastur law; gives the noise sigma per voxel (``sigma_map``)."""

    model_id = "mppca"

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
                np.asarray(series, np.float64), patch_radius=2, return_sigma=True, suppress_warning=True
            )
        if cancel is not None:
            cancel.raise_if_cancelled()
        self.sigma_map = np.nan_to_num(np.asarray(sigma, np.float32))  # no estimate where the patch is empty
        return np.clip(np.asarray(denoised, np.float32), 0, None)


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

"""The one interface every denoiser, learned or classical, implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..diffusion import GradientTable
from ..errors import InputError
from ..noise import estimate_sigma
from ..progress import CancelToken, ProgressCallback, no_progress


class Denoiser(ABC):
    """Denoise a 3-D magnitude volume: same shape in, same shape out, float32.

    ``sigma`` is the noise standard deviation in the volume's own intensity units; ``None``
    estimates it blindly from the volume. ``spacing_zyx`` lets a method respect anisotropy.
    """

    #: the catalogue id this instance was built from
    model_id: str = ""
    #: whether the method assumes magnitude data (never negative); signed data is refused for it
    magnitude_only: bool = True

    def denoise(
        self,
        volume: np.ndarray,
        sigma: float | None = None,
        *,
        spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0),
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        data = np.asarray(volume, np.float32)
        if data.ndim != 3:
            raise InputError(f"denoisers take 3-D volumes, got shape {data.shape}")
        if sigma is None:
            sigma = estimate_sigma(data)
        if cancel is not None:
            cancel.raise_if_cancelled()
        result = self._denoise(data, float(sigma), spacing_zyx, progress, cancel)
        progress(1.0, "done")
        return result.astype(np.float32, copy=False)

    @abstractmethod
    def _denoise(
        self,
        volume: np.ndarray,
        sigma: float,
        spacing_zyx: tuple[float, float, float],
        progress: ProgressCallback,
        cancel: CancelToken | None,
    ) -> np.ndarray:
        """Denoise a float32 volume with a known sigma."""


class SeriesDenoiser(ABC):
    """Denoise a 4-D diffusion series (z, y, x, n) as a whole, using the redundancy across its volumes.

    ``table`` is the series' gradient table, or None for a series without one (methods that need it
    refuse). After a call, ``sigma_map`` holds the noise standard deviation per voxel the method
    estimated (z, y, x), or None when it estimates none.
    """

    model_id: str = ""
    sigma_map: np.ndarray | None = None

    @abstractmethod
    def denoise_series(
        self,
        series: np.ndarray,
        table: GradientTable | None,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        """The denoised series, float32, the shape of ``series``."""

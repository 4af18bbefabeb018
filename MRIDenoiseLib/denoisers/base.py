"""The interfaces every denoiser implements: 3-D volumes (:class:`Denoiser`) and whole series
(:class:`SeriesDenoiser`; a 3-D denoiser joins it volume by volume through :class:`PerVolume`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import numpy as np

from ..bands import acquired_band, check_zero_fill, in_plane_axes, merge_band, resample_map, split_band
from ..diffusion import GradientTable
from ..errors import InputError
from ..noise import check_coils, estimate_sigma, estimate_sigma_map, rician_from_chi
from ..progress import CancelToken, ProgressCallback, no_progress, scaled

if TYPE_CHECKING:  # only the network denoisers need torch
    import torch
    from torch import nn


class Denoiser(ABC):
    """Denoise a 3-D magnitude volume: same shape in, same shape out, float32.

    ``sigma`` is the noise standard deviation in the volume's own intensity units; ``None``
    estimates it blindly from the volume. ``spacing_zyx`` lets a method respect anisotropy.
    """

    #: the catalogue id this instance was built from
    model_id: str = ""
    #: whether the method assumes magnitude data (never negative); signed data is refused for it
    magnitude_only: bool = True

    @property
    def device_name(self) -> str:
        """Where the method runs, for reports (classical methods run on the CPU)."""
        return "cpu"

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

    def denoise_with_map(
        self,
        volume: np.ndarray,
        sigma_map: np.ndarray,
        *,
        spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0),
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        """Denoise a 3-D volume whose noise level varies, given per voxel (only trained networks can)."""
        raise InputError(f"{self.model_id or 'this method'} takes one noise level; only trained networks take a map")

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
    """Denoise a 4-D series (z, y, x, n) as a whole; what the pipeline runs for every input.

    ``table`` is the series' gradient table, or None for a series without one (methods that need it
    refuse). After a call, ``sigmas`` holds the noise standard deviation used for each volume ([]
    when the method has none per volume), ``sigma_map`` the noise per voxel the method estimated
    (z, y, x) or None, and ``sigma_estimated`` whether the noise was estimated rather than given.
    """

    model_id: str = ""
    sigma_map: np.ndarray | None = None
    sigmas: list[float]
    sigma_estimated: bool = True
    #: whether it needs a real series (diffusion methods) rather than any stack of volumes
    needs_series: bool = True
    #: whether it runs MP-PCA, whose signal components per voxel the pipeline can count
    gives_signal_components: bool = False

    def __init__(self) -> None:
        self.sigmas = []

    @property
    def device_name(self) -> str:
        """Where the method runs, for reports."""
        return "cpu"

    @abstractmethod
    def denoise_series(
        self,
        series: np.ndarray,
        table: GradientTable | None,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        """The denoised series, float32, the shape of ``series``."""


class NetworkSeriesDenoiser(SeriesDenoiser):
    """A series denoiser that runs a trained network on ``device`` (in evaluation mode)."""

    def __init__(self, network: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.network = network.eval().to(device)
        self.device = device

    @property
    def device_name(self) -> str:
        from ..inference import describe_device

        return describe_device(self.device)


class PerVolume(SeriesDenoiser):
    """A 3-D denoiser run on each volume of a series (or on a 3-D volume as a series of one).

    ``sigma`` (the input's units) applies to every volume: one level, or a map of a volume's shape
    given to the denoiser voxel by voxel. None estimates it per volume: one level, or with ``varying``
    a map (:func:`estimate_sigma_map`). ``sigma_map`` is then the map used (averaged over the volumes
    of a series). A constant volume (blank frames of some series) is passed through.
    """

    needs_series = False

    def __init__(
        self,
        denoiser: Denoiser,
        sigma: float | np.ndarray | None,
        spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0),
        varying: bool = False,
        coils: int = 1,
        zero_filled: float = 1.0,
    ) -> None:
        """``coils`` > 1: the volumes are sum-of-squares magnitudes of that many channels (non-central
        chi); each is moved onto the Rician floor of its noise level (``noise.rician_from_chi``) first.
        ``zero_filled`` > 1: each volume was reconstructed at that many times its acquired resolution in
        the slice plane (zero-filled k-space); the acquired band is denoised on the acquired grid and the
        rest, which holds no noise, kept (``bands.py``); a noise level is the scan's per voxel."""
        super().__init__()
        if varying and sigma is not None:
            raise InputError("a noise level that varies is estimated from the scan; give no sigma with it")
        check_coils(coils)
        check_zero_fill(zero_filled)
        self.denoiser, self.sigma, self.spacing_zyx, self.varying = denoiser, sigma, spacing_zyx, varying
        self.coils, self.zero_filled = coils, zero_filled
        self.model_id = denoiser.model_id
        self.sigma_estimated = sigma is None
        self.acquired_shape: tuple[int, ...] | None = None
        """The grid the last volume was denoised on, where ``zero_filled`` > 1 (None otherwise)."""

    @property
    def device_name(self) -> str:
        return self.denoiser.device_name

    def denoise_series(
        self,
        series: np.ndarray,
        table: GradientTable | None,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        count = series.shape[3]
        outputs, self.sigmas = [], []
        maps: list[np.ndarray] = []
        band = acquired_band(series.shape[:3], in_plane_axes(self.spacing_zyx), self.zero_filled)
        for index in range(count):
            frame = series[..., index]
            if float(frame.max()) == float(frame.min()):
                outputs.append(frame.copy())
                self.sigmas.append(0.0)
                continue
            rest = None
            if band:
                frame, rest = split_band(frame, band)
                self.acquired_shape = frame.shape
            part = scaled(progress, index / count, (index + 1) / count)
            level = self._level(frame)
            frame = rician_from_chi(frame, level, self.coils)
            if isinstance(level, np.ndarray):
                maps.append(level if rest is None else resample_map(level, rest.shape))
                self.sigmas.append(float(np.median(level)))
                output = self.denoiser.denoise_with_map(
                    frame, level, spacing_zyx=self.spacing_zyx, progress=part, cancel=cancel
                )
            else:
                self.sigmas.append(float(level))
                output = self.denoiser.denoise(frame, level, spacing_zyx=self.spacing_zyx, progress=part, cancel=cancel)
            outputs.append(output if rest is None else np.clip(merge_band(output, rest, band), 0, None))
        self.sigma_map = np.mean(maps, axis=0).astype(np.float32) if maps else None
        return np.stack(outputs, axis=-1)

    def _level(self, frame: np.ndarray) -> float | np.ndarray:
        """The noise level given (a map resampled onto ``frame``'s grid), or estimated from ``frame``
        (a map with ``varying``)."""
        if isinstance(self.sigma, np.ndarray) and self.sigma.shape != frame.shape:
            return resample_map(self.sigma, frame.shape)
        if self.sigma is not None:
            return self.sigma
        return estimate_sigma_map(frame) if self.varying else estimate_sigma(frame)

"""A trained 2.5-D network behind the common denoiser interface."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..inference import denoise_slices, describe_device, select_device
from ..nets.contract import SliceNetwork
from ..normalization import intensity_scale
from ..progress import CancelToken, ProgressCallback, no_progress, scaled
from ..volume import slice_axis_for
from .base import Denoiser


class NetworkDenoiser(Denoiser):
    """Normalise, run the network slice by slice with a noise-level map, and scale back.

    ``planes="all"`` averages the passes along the three axes of an isotropic volume (three
    times the cost, a little better); ``"auto"`` makes one pass along :func:`slice_axis_for`.
    """

    def __init__(self, network: nn.Module, device: str | torch.device = "auto", planes: str = "auto") -> None:
        if not isinstance(network, SliceNetwork):
            raise TypeError(f"{type(network).__name__} is not a 2.5-D image network (SliceNetwork)")
        self.network: SliceNetwork = network.eval()
        self.device = device if isinstance(device, torch.device) else select_device(device)
        self.planes = planes
        self.last_scale: float | None = None
        """The intensity scale (brightest tissue, :func:`intensity_scale`) the last call normalised by."""

    @property
    def device_name(self) -> str:
        return describe_device(self.device)

    def denoise_with_map(
        self,
        volume: np.ndarray,
        sigma_map: np.ndarray,
        *,
        spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0),
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        """Denoise a 3-D volume whose noise level varies: ``sigma_map`` (the volume's shape, its units)
        goes to the network's noise-level map input voxel by voxel (its training drew such maps)."""
        data = np.asarray(volume, np.float32)
        level = np.asarray(sigma_map, np.float32)
        if data.ndim != 3 or level.shape != data.shape:
            raise InputError(f"a noise map must have the volume's shape {data.shape}, got {level.shape}")
        if not (np.isfinite(level).all() and (level >= 0).all()):
            raise InputError("a noise map must be finite and not negative")
        if cancel is not None:
            cancel.raise_if_cancelled()
        return self._denoise(data, level, spacing_zyx, progress, cancel).astype(np.float32, copy=False)

    def _denoise(
        self,
        volume: np.ndarray,
        sigma: float | np.ndarray,
        spacing_zyx: tuple[float, float, float],
        progress: ProgressCallback,
        cancel: CancelToken | None,
    ) -> np.ndarray:
        scale = self.last_scale = intensity_scale(volume)
        normalised = np.clip(volume, 0, None) / scale
        axes = self._axes(spacing_zyx, volume.shape)
        total = np.zeros_like(normalised)
        for index, axis in enumerate(axes):
            total += denoise_slices(
                self.network,
                normalised,
                sigma / scale,
                slice_axis=axis,
                device=self.device,
                progress=scaled(progress, index / len(axes), (index + 1) / len(axes)),
                cancel=cancel,
            )
        return np.clip(total / len(axes), 0, None) * scale

    def _axes(self, spacing_zyx: tuple[float, float, float], shape: tuple[int, ...]) -> list[int]:
        main = slice_axis_for(spacing_zyx)
        spacing = np.asarray(spacing_zyx, float)
        isotropic = spacing.max() <= 1.2 * spacing.min()
        if self.planes == "all" and isotropic:
            return [axis for axis in range(3) if shape[axis] >= 3]
        return [main]

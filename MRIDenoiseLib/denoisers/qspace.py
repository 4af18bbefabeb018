"""Diffusion-weighted series denoised voxel by voxel with a q-space autoencoder (paper 001).

A model is tied to the gradient table it was trained for. Tables match when their b-values agree
and the angles between their directions agree: the simulated tensors have random orientations, so
a model serves any rotation (or sign flip) of its table, whatever frame the file stores it in.
Voxels outside the object (Otsu on the mean low-b volume) are left exactly as they are.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..diffusion import B0_THRESHOLD, GradientTable, normalise_signals
from ..errors import InputError
from ..masks import foreground_mask
from ..progress import CancelToken, ProgressCallback, no_progress
from .base import NetworkSeriesDenoiser

BATCH_VOXELS = 65536


def tables_match(
    first: GradientTable, second: GradientTable, b_tolerance: float = 0.05, angle_tolerance: float = 0.02
) -> bool:
    """Same b-values (within 5 % or 10 s/mm^2) and the same |cosines| between directions, in order."""
    if first.size != second.size:
        return False
    if np.any(np.abs(first.bvalues - second.bvalues) > np.maximum(b_tolerance * first.bvalues, 10.0)):
        return False
    weighted = first.bvalues > B0_THRESHOLD
    gram = [np.abs(t.directions[weighted] @ t.directions[weighted].T) for t in (first, second)]
    return bool(np.all(np.abs(gram[0] - gram[1]) <= angle_tolerance))


class QSpaceDenoiser(NetworkSeriesDenoiser):
    """Apply a q-space VAE or DAE to every foreground voxel of a 4-D series."""

    model_id = ""
    sigma_estimated = False

    def __init__(self, network: nn.Module, table: GradientTable, device: torch.device) -> None:
        super().__init__(network, device)
        self.table = table

    def denoise_series(
        self,
        series: np.ndarray,
        table: GradientTable | None,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        if table is None:
            raise InputError(f"model {self.model_id!r} needs the series' gradient table (.bval/.bvec)")
        if series.ndim != 4 or series.shape[3] != self.table.size:
            raise InputError(
                f"model {self.model_id!r} expects {self.table.size} measurements per voxel, got shape {series.shape}"
            )
        if not tables_match(self.table, table):
            raise InputError(f"model {self.model_id!r} was trained for another gradient table")
        low = table.bvalues <= B0_THRESHOLD
        reference = series[..., low].mean(axis=-1) if low.any() else series.mean(axis=-1)
        mask = foreground_mask(reference.astype(np.float32))
        voxels, scale = normalise_signals(series[mask].astype(np.float64))
        output = np.empty_like(voxels, dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(voxels), BATCH_VOXELS):
                if cancel is not None:
                    cancel.raise_if_cancelled()
                batch = torch.from_numpy(voxels[start : start + BATCH_VOXELS].astype(np.float32)).to(self.device)
                result = self.network(batch)
                output[start : start + BATCH_VOXELS] = (
                    (result[0] if isinstance(result, tuple) else result).cpu().numpy()
                )
                progress(min(1.0, (start + BATCH_VOXELS) / max(len(voxels), 1)), "denoising voxels")
        denoised = np.array(series, dtype=np.float32, copy=True)
        denoised[mask] = np.clip(output * scale[:, None], 0, None)
        progress(1.0, "done")
        return denoised

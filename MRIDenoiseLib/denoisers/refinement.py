"""A second stage after a network at low noise: empirical Wiener filtering in 3-D DCT blocks, the
network's output as the pilot (the second step of BM3D / BM4D, without the block matching).

At low noise a network trained over 1-30 % gives up fine detail that the noisy scan still shows
clearly. The Wiener step takes it back: in every 8 x 8 x 8 block, each DCT coefficient of the noisy
scan is kept in the proportion P^2 / (P^2 + sigma^2), P being the pilot's coefficient, so structure
the pilot holds passes and what it calls noise does not. Overlapping blocks (every ``step`` voxels
along each axis) are averaged with BM3D's weights, 1 / (sigma^2 * sum of squared gains).

It runs only where the scan's noise level is at most :data:`HIGHEST_LEVEL` % of its brightest
tissue (the network's own intensity scale, so the gate costs nothing): above that, the pilot is the
better estimate (the quality benchmark: see the README).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from ..progress import CancelToken, ProgressCallback, no_progress, scaled
from .base import Denoiser
from .network import NetworkDenoiser

BLOCK = 8
"""Block edge (voxels) of the DCT."""
STEP = 2
"""Distance (voxels) between overlapping blocks along each axis."""
HIGHEST_LEVEL = 2.5
"""The highest noise level (% of the brightest tissue) at which the stage runs; chosen on Colin27, the
team's validation volume, where the stage gained at 1 % and held even at 2 % (blind levels 1.3 and 2.1 % of the
network's intensity scale) and lost from 3 % (3.1 %)."""
DARK = 0.5
"""Blocks whose pilot stays below this many sigma everywhere are background: left to the pilot."""
BLOCK_ROWS = 4
"""Rows of blocks along the first axis transformed at once (bounds the memory of a large volume)."""


def dct_matrix(size: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix (rows are the basis vectors)."""
    index = torch.arange(size, dtype=torch.float64)
    basis = torch.cos(math.pi * (index[None, :] + 0.5) * index[:, None] / size) * math.sqrt(2.0 / size)
    basis[0] /= math.sqrt(2.0)
    return basis.float()


def _transform(blocks: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``matrix`` applied along each of the last three axes of ``blocks`` (n, b, b, b): the last two
    at once through their Kronecker product (one large product beats many small ones), then the first."""
    count, size = blocks.shape[0], matrix.shape[0]
    out = blocks.reshape(-1, size * size) @ torch.kron(matrix, matrix).T
    return (matrix @ out.reshape(count, size, size * size)).reshape(blocks.shape)


def _to_blocks(array: torch.Tensor, block: int) -> torch.Tensor:
    """(Z, Y, X), each a multiple of ``block`` -> (Z/b, Y/b, X/b, b, b, b)."""
    z, y, x = (size // block for size in array.shape)
    return array.reshape(z, block, y, block, x, block).permute(0, 2, 4, 1, 3, 5)


def _from_blocks(blocks: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`_to_blocks`."""
    z, y, x, block = blocks.shape[0], blocks.shape[1], blocks.shape[2], blocks.shape[3]
    return blocks.permute(0, 3, 1, 4, 2, 5).reshape(z * block, y * block, x * block)


def wiener_refine(
    noisy: np.ndarray,
    pilot: np.ndarray,
    sigma: float | np.ndarray,
    block: int = BLOCK,
    step: int = STEP,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Empirical Wiener estimate of ``noisy`` (z, y, x) with ``pilot`` as the guide (see the module's
    docstring). ``sigma`` is the noise level in the volume's units, one value or one per voxel; the
    transforms run on ``device``."""
    if noisy.shape != pilot.shape or noisy.ndim != 3:
        raise ValueError(f"noisy and pilot must be 3-D of one shape, got {noisy.shape} and {pilot.shape}")
    if block % step:
        raise ValueError(f"step {step} must divide block {block}")
    unit = float(np.mean(sigma))
    if unit <= 0:
        return np.asarray(pilot, np.float32)
    pad = [(block, block)] * 3

    def padded(array: np.ndarray | float) -> torch.Tensor:
        full = np.broadcast_to(np.asarray(array, np.float32) / np.float32(unit), noisy.shape)
        return torch.from_numpy(np.pad(full, pad, mode="symmetric")).to(device)

    observed, guide = padded(noisy), padded(pilot)
    variance = padded(sigma) ** 2
    total = torch.zeros_like(observed)
    weights = torch.zeros_like(observed)
    matrix = dct_matrix(block).to(device)
    shifts = list(itertools.product(range(0, block, step), repeat=3))
    for index, origin in enumerate(shifts):
        if cancel is not None:
            cancel.raise_if_cancelled()
        ends = [o + (size - o) // block * block for o, size in zip(origin, observed.shape, strict=True)]
        for row in range(origin[0], ends[0], BLOCK_ROWS * block):
            window = (slice(row, min(row + BLOCK_ROWS * block, ends[0])), *map(slice, origin[1:], ends[1:]))
            guide_blocks = _to_blocks(guide[window], block)
            shape = guide_blocks.shape
            guide_blocks = guide_blocks.reshape(-1, block, block, block)
            lit = guide_blocks.amax(dim=(1, 2, 3)) > DARK  # blocks of background: the pilot stands there
            level = _to_blocks(variance[window], block).reshape(-1, block**3)[lit].mean(dim=1)[:, None, None, None]
            pilot_power = _transform(guide_blocks[lit], matrix) ** 2
            gain = pilot_power / (pilot_power + level)
            coefficients = _transform(_to_blocks(observed[window], block).reshape(-1, block, block, block)[lit], matrix)
            weight = 1.0 / (level * (gain**2).sum(dim=(1, 2, 3), keepdim=True)).clamp_min(1e-12)
            weighted = torch.zeros_like(guide_blocks)
            weighted[lit] = _transform(gain * coefficients, matrix.T) * weight
            spread = torch.zeros_like(guide_blocks)
            spread[lit] = weight.expand(-1, block, block, block)
            total[window] += _from_blocks(weighted.reshape(shape))
            weights[window] += _from_blocks(spread.reshape(shape))
        progress((index + 1) / len(shifts), "refining")
    inner = tuple(slice(block, -block) for _ in range(3))
    covered = weights[inner] > 0
    estimate = torch.where(covered, total[inner] / weights[inner].clamp_min(1e-30), guide[inner])
    return (estimate.cpu().numpy() * unit).astype(np.float32)


class WienerRefined(Denoiser):
    """``inner``, a network, then :func:`wiener_refine` with its output as the pilot where the noise
    level is at most ``highest_level`` % of the brightest tissue. ``refined`` says whether the last
    call ran the second stage."""

    def __init__(self, inner: NetworkDenoiser, highest_level: float = HIGHEST_LEVEL) -> None:
        self.inner, self.highest_level = inner, highest_level
        self.refined = False

    @property
    def device_name(self) -> str:
        return self.inner.device_name

    def denoise_with_map(
        self,
        volume: np.ndarray,
        sigma_map: np.ndarray,
        *,
        spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0),
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        pilot = self.inner.denoise_with_map(
            volume, sigma_map, spacing_zyx=spacing_zyx, progress=scaled(progress, 0.0, 0.8), cancel=cancel
        )
        return self._refine(np.asarray(volume, np.float32), pilot, sigma_map, progress, cancel)

    def _denoise(
        self,
        volume: np.ndarray,
        sigma: float,
        spacing_zyx: tuple[float, float, float],
        progress: ProgressCallback,
        cancel: CancelToken | None,
    ) -> np.ndarray:
        pilot = self.inner.denoise(
            volume, sigma, spacing_zyx=spacing_zyx, progress=scaled(progress, 0.0, 0.8), cancel=cancel
        )
        return self._refine(volume, pilot, sigma, progress, cancel)

    def _refine(
        self,
        volume: np.ndarray,
        pilot: np.ndarray,
        sigma: float | np.ndarray,
        progress: ProgressCallback,
        cancel: CancelToken | None,
    ) -> np.ndarray:
        scale = self.inner.last_scale
        self.refined = scale is not None and 100.0 * float(np.mean(sigma)) / scale <= self.highest_level
        if not self.refined:
            return pilot
        refined = wiener_refine(
            volume, pilot, sigma, progress=scaled(progress, 0.8, 1.0), cancel=cancel, device=self.inner.device
        )
        return np.clip(refined, 0, None)

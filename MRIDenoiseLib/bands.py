"""Zero-filled interpolation: a scan reconstructed on a finer grid than it was acquired on.

Scanners that zero-fill k-space (GE's ZIP, Philips' and Siemens' interpolated reconstruction; in a
dcm2niix sidecar, ``ReconMatrixPE`` above ``AcquisitionMatrixPE``) put the image on a grid finer than
the acquisition. Its noise then fills only the acquired, central part of k-space: neighbouring voxels
share it, the finest scale holds none of it, so blind estimates read a fraction of the level (0.35 to
0.45 of it on the noise-model benchmark) and a network trained on white noise leaves most of it.

The scan is split in two: the acquired band, sampled on the acquired grid (band-limited noise sampled
at its own Nyquist rate is white again, with the same level per voxel), and the rest, which holds no
noise and passes unchanged. The acquired band is denoised as any scan and put back on the scan's grid.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft, ndimage

from .errors import InputError
from .volume import slice_axis_for

Band = dict[int, int]
"""Axis -> how many frequencies along it were acquired (odd: the band is symmetric about zero)."""


def in_plane_axes(spacing_zyx: tuple[float, float, float]) -> tuple[int, int]:
    """The two axes of a slice: all but :func:`slice_axis_for` (the coarsest; the first of an isotropic volume)."""
    first, second = (axis for axis in range(3) if axis != slice_axis_for(spacing_zyx))
    return first, second


def check_zero_fill(factor: float) -> None:
    """Refuse a zero-fill factor that is not a number >= 1 (the reconstructed over the acquired matrix)."""
    if not (math.isfinite(factor) and factor >= 1.0):
        raise InputError(f"the zero-fill factor is the reconstructed over the acquired matrix, >= 1; got {factor}")


def acquired_band(shape: tuple[int, ...], axes: tuple[int, ...], factor: float) -> Band:
    """The band of a scan of ``shape`` reconstructed at ``factor`` times its acquired resolution along
    ``axes``: about ``size / factor`` frequencies on each (the nearest odd number below); empty for 1."""
    check_zero_fill(factor)
    if factor == 1.0:
        return {}
    band = {axis: 2 * (int(shape[axis] / factor) // 2) + 1 for axis in axes}
    if any(kept < 3 for kept in band.values()):
        raise InputError(f"a zero-fill factor of {factor} leaves fewer than 3 acquired samples along an axis")
    return band


def _band_indices(shape: tuple[int, ...], band: Band) -> tuple[np.ndarray, ...]:
    """Where the band's frequencies sit in the full spectrum: an open mesh over all axes."""
    index = [
        (np.fft.fftfreq(band[axis]) * band[axis]).round().astype(int) % size if axis in band else np.arange(size)
        for axis, size in enumerate(shape)
    ]
    return np.ix_(*index)


def _gain(shape: tuple[int, ...], band: Band) -> float:
    """Acquired over full samples: the scale between the band's values on the two grids."""
    return float(np.prod([band[axis] / shape[axis] for axis in band]))


def split_band(volume: np.ndarray, band: Band) -> tuple[np.ndarray, np.ndarray]:
    """``volume`` as (the acquired band on the acquired grid, the rest on the scan's grid); with
    :func:`merge_band` the two give ``volume`` back."""
    data = np.asarray(volume, np.float32)
    axes = sorted(band)
    spectrum = fft.fftn(data, axes=axes)
    kept = np.zeros_like(spectrum)
    mesh = _band_indices(data.shape, band)
    kept[mesh] = spectrum[mesh]
    rest = data - fft.ifftn(kept, axes=axes).real
    acquired = fft.ifftn(spectrum[mesh], axes=axes).real * _gain(data.shape, band)
    return acquired.astype(np.float32), rest.astype(np.float32)


def merge_band(acquired: np.ndarray, rest: np.ndarray, band: Band) -> np.ndarray:
    """The acquired band (on the acquired grid) put back on the scan's grid, plus the rest."""
    axes = sorted(band)
    spectrum = np.zeros(rest.shape, np.complex64)
    spectrum[_band_indices(rest.shape, band)] = fft.fftn(np.asarray(acquired, np.float32), axes=axes)
    low = fft.ifftn(spectrum, axes=axes).real / _gain(rest.shape, band)
    return (low + rest).astype(np.float32)


def resample_map(level: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A smooth map (a noise level per voxel) resampled linearly onto a grid of ``shape``, the same extent."""
    zoom = [new / old for new, old in zip(shape, level.shape, strict=True)]
    resized = ndimage.zoom(np.asarray(level, np.float32), zoom, order=1, mode="nearest", grid_mode=True)
    if resized.shape != tuple(shape):
        raise ValueError(f"resampling gave {resized.shape}, not {shape}")
    return resized.astype(np.float32)

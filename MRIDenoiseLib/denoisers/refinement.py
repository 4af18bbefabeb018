"""A second stage after a network at low noise: empirical Wiener filtering in 3-D DCT blocks, the
network's output as the pilot (the second step of BM3D / BM4D, without the block matching).

At low noise a network trained over 1-30 % gives up fine detail that the noisy scan still shows
clearly. The Wiener step takes it back: in every 8 x 8 x 8 block, each DCT coefficient of the noisy
scan is kept in the proportion P^2 / (P^2 + sigma^2), P being the pilot's coefficient, so structure
the pilot holds passes and what it calls noise does not. Overlapping blocks (every ``step`` voxels
along each axis, or on two interleaved lattices: :func:`block_origins`) are averaged with BM3D's
weights, 1 / (sigma^2 * sum of squared gains).

How much of the step to keep, two ways, and on which blocks (the catalogue entry's ``refinement``):

- ``"wiener"``: all of it where the scan's noise level is at most :data:`HIGHEST_LEVEL` % of its
  brightest tissue (the network's own intensity scale, so the gate costs nothing), none above.
- ``"wiener-share"``: the share of the step's change that minimises the error on this scan, measured
  on the scan itself (:func:`measured_share`), up to :data:`SHARE_LEVEL` % of the intensity scale. The
  best share differs from scan to scan (all of it on a resampled spine, a third on a smooth T1 template
  at 3 %), and a share between none and all beats both wherever network and step err in different places.
  None where the noise the network removed is correlated (:data:`MOST_CORRELATION`), and none (the pipeline
  builds no second stage) for a sum-of-squares magnitude told the coil count with one level, whose moved
  floor keeps a bias the recorrupted measurement cannot see.
- ``"wiener-share-interleaved"``: the same on a quarter of the blocks (``interleaved``), a quarter of the
  work: blocks starting every 2 ``step`` voxels, and as many again shifted by ``step`` along all three
  axes. On the quality benchmark's volumes at 1-5 % it scored within 0.03 dB of every block (given the
  true sigma: 0.00-0.03 dB less).
- ``"wiener-share-interleaved-faded"``: the same, the step's change faded out towards the air
  (:func:`fade`): none of it where the network's estimate is below :data:`FADE_FROM` sigma, all of it from
  :data:`BRIGHT` sigma, where the share is measured. In the air beside the object the step only puts the
  noise (and the Rician floor) back that the network removed; faded, the air stays the network's, and the
  blocks that lie wholly in it are not transformed (``lit_from`` of :func:`wiener_refine`).
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
SHARE_LEVEL = 8.0
"""The highest noise level (% of the network's intensity scale) at which a share is measured. On the quality
benchmark's volumes the measured share tracked the best one at 1-5 % and read 0.1-0.5 above it at 10 %
(Colin27 then lost 0.08 dB); their 5 % draws read 4.8-7.4 % of the scale, their 10 % draws 9.6-12.9 %."""
SPLIT = 0.25
"""Recorrupted-to-recorrupted split: the copies scan + SPLIT sigma z and scan - sigma z / SPLIT carry
independent noise; the first is only 3 % noisier than the scan, the second's large noise averages out."""
SHARE_BOX = (48, 96, 96)
"""The most voxels (z, y, x) the share is measured on: a box around the anatomy's centre."""
SHARE_EDGE = 4
"""Voxels at the box's faces left out of the measurement (the network sees the box's edge there)."""
BRIGHT = 3.0
"""Voxels measured: where the network's estimate exceeds this many sigma (Gaussian there, not Rician)."""
FADE_FROM = 1.0
"""Faded (:func:`fade`), none of the step's change is kept where the network's estimate is below this many
sigma (air and the Rician floor), all of it from :data:`BRIGHT` sigma, a linear ramp between. Measured on the
quality benchmark's volumes at 1-5 % (docs/default-model-history.md, "The step faded out in the air"): in the foreground
within -0.01..+0.03 dB of the step kept everywhere, over the whole volume up to +6.5 dB on a phantom in
air; ramps from 0.5 to 2 and from 2 to 4 sigma scored about the same."""
FEWEST_VOXELS = 1000
"""Below this many measured voxels no share is trusted: the step is left out."""
LEAST_SHARE = 0.05
"""A measured share below this leaves the step out (its cost is not worth the change)."""
MOST_CORRELATION = 0.05
"""The step is left out where the noise the network removed is correlated between in-plane neighbours
above this. Removing white noise takes its fine texture and leaves the coarse, so what is removed is
anti-correlated: -0.27 to -0.03 on the quality benchmark's i.i.d. draws at 1-5 % (+0.005 on the 8-bit
FLAIR at 1 %, blind, where the reference's own noise dominates), -0.15 to +0.03 on six of the ten real
scans of the no-reference benchmark (no_reference.md, the default's "Wiener step" column). Noise that is
itself correlated breaks both the step's white-noise model and the share's measurement: zero-filled
interpolation read +0.10 to +0.36 on Colin27 and the spine, the cardiac LGE (zero-filled by the vendor)
+0.11, the GE kidney +0.36, the Philips bottle phantoms +0.12 and +0.10."""


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


def block_origins(block: int, step: int, interleaved: bool = False) -> list[tuple[int, int, int]]:
    """Where the lattices of blocks start, within one block: every ``step`` voxels along each axis
    (``(block / step)^3`` lattices), or with ``interleaved`` every ``2 step`` and as many again shifted by
    ``step`` along all three axes (a quarter as many where ``block = 4 step``)."""
    if block % step or (interleaved and block % (2 * step)):
        raise ValueError(f"step {step}{' (twice)' if interleaved else ''} must divide block {block}")
    stride = 2 * step if interleaved else step
    starts = range(0, block, stride)
    lattices = list(itertools.product(starts, starts, starts))
    return lattices + [(z + step, y + step, x + step) for z, y, x in lattices] if interleaved else lattices


def wiener_refine(
    noisy: np.ndarray,
    pilot: np.ndarray,
    sigma: float | np.ndarray,
    block: int = BLOCK,
    step: int = STEP,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    device: torch.device | str = "cpu",
    interleaved: bool = False,
    lit_from: float = DARK,
) -> np.ndarray:
    """Empirical Wiener estimate of ``noisy`` (z, y, x) with ``pilot`` as the guide (see the module's
    docstring). ``sigma`` is the noise level in the volume's units, one value or one per voxel; the
    blocks start where :func:`block_origins` says; the transforms run on ``device``. Only the box around
    the voxels the pilot calls lit (above :data:`DARK` sigma), a block wider on every side, is filtered,
    and in it only blocks where the pilot somewhere exceeds ``lit_from`` sigma (at least :data:`DARK`; with a
    map, ``lit_from`` times its lowest level): every other block is background, where the pilot stands. A
    caller that keeps none of the change where the pilot is at most ``x`` sigma (:func:`fade`, ``x`` =
    :data:`FADE_FROM`) may pass ``lit_from=x``: the blocks left out then cover only voxels whose change it
    drops, so what it keeps is the same."""
    if noisy.shape != pilot.shape or noisy.ndim != 3:
        raise ValueError(f"noisy and pilot must be 3-D of one shape, got {noisy.shape} and {pilot.shape}")
    unit = float(np.mean(sigma))
    estimate = np.array(pilot, np.float32)
    box = _lit_box(estimate > DARK * unit, block) if unit > 0 else None
    if box is None:
        return estimate
    local_sigma = sigma if np.ndim(sigma) == 0 else np.broadcast_to(np.asarray(sigma, np.float32), noisy.shape)[box]
    estimate[box] = _wiener_in_box(
        noisy[box],
        estimate[box],
        local_sigma,
        unit,
        block,
        block_origins(block, step, interleaved),
        max(lit_from * float(np.min(sigma)) / unit, DARK),
        progress,
        cancel,
        device,
    )
    return estimate


def _lit_box(lit: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """The smallest box holding every ``lit`` voxel, ``margin`` voxels wider on each side (within the
    volume); None if nothing is lit."""
    box = []
    for axis in range(lit.ndim):
        present = np.flatnonzero(lit.any(axis=tuple(other for other in range(lit.ndim) if other != axis)))
        if present.size == 0:
            return None
        box.append(slice(max(int(present[0]) - margin, 0), min(int(present[-1]) + 1 + margin, lit.shape[axis])))
    return tuple(box)


def _wiener_in_box(
    noisy: np.ndarray,
    pilot: np.ndarray,
    sigma: float | np.ndarray,
    unit: float,
    block: int,
    shifts: list[tuple[int, int, int]],
    lit_from: float,
    progress: ProgressCallback,
    cancel: CancelToken | None,
    device: torch.device | str,
) -> np.ndarray:
    """:func:`wiener_refine` of a box: its blocks on every lattice of ``shifts`` (the box mirrored a block
    beyond its faces), in units of ``unit``, those where the pilot stays at most ``lit_from`` left out. The
    blocks are transformed a few rows at a time, each batch cut to the rows and columns its lit blocks span."""
    pad = [(block, block)] * 3

    def padded(array: np.ndarray | float) -> torch.Tensor:
        full = np.broadcast_to(np.asarray(array, np.float32) / np.float32(unit), noisy.shape)
        return torch.from_numpy(np.pad(full, pad, mode="symmetric")).to(device)

    observed, guide = padded(noisy), padded(pilot)
    variance = None if np.ndim(sigma) == 0 else padded(sigma) ** 2  # one level: 1 in these units everywhere
    total = torch.zeros_like(observed)
    weights = torch.zeros_like(observed)
    matrix = dct_matrix(block).to(device)
    cell = math.gcd(block, *(coordinate for origin in shifts for coordinate in origin))
    cell_peaks = torch.nn.functional.max_pool3d(guide[None, None], cell)[0, 0]  # every block is whole cells
    for index, origin in enumerate(shifts):
        if cancel is not None:
            cancel.raise_if_cancelled()
        ends = [o + (size - o) // block * block for o, size in zip(origin, observed.shape, strict=True)]
        lattice_cells = tuple(slice(o // cell, e // cell) for o, e in zip(origin, ends, strict=True))
        block_peaks = torch.nn.functional.max_pool3d(cell_peaks[lattice_cells][None, None], block // cell)[0, 0]
        lit_blocks = block_peaks > lit_from
        for first in range(0, lit_blocks.shape[0], BLOCK_ROWS):
            rows = lit_blocks[first : first + BLOCK_ROWS]
            spans = _lit_box(rows.cpu().numpy())
            if spans is None:
                continue  # background only: the pilot stands there
            window = tuple(
                slice(o + (span.start + offset) * block, o + (span.stop + offset) * block)
                for o, span, offset in zip(origin, spans, (first, 0, 0), strict=True)
            )
            lit = rows[spans].reshape(-1)
            guide_blocks = _to_blocks(guide[window], block)
            shape = guide_blocks.shape
            guide_blocks = guide_blocks.reshape(-1, block, block, block)
            level: torch.Tensor | float = 1.0
            if variance is not None:
                level = _to_blocks(variance[window], block).reshape(-1, block**3)[lit].mean(dim=1)[:, None, None, None]
            pilot_power = _transform(guide_blocks[lit], matrix) ** 2
            gain = pilot_power / (pilot_power + level)
            coefficients = _transform(_to_blocks(observed[window], block).reshape(-1, block, block, block)[lit], matrix)
            weight = 1.0 / (level * (gain**2).sum(dim=(1, 2, 3), keepdim=True)).clamp_min(1e-12)
            weighted = torch.zeros_like(guide_blocks)
            weighted[lit] = _transform(gain * coefficients, matrix.T) * weight
            block_weight = torch.zeros(len(lit), device=observed.device)
            block_weight[lit] = weight.flatten()
            total[window] += _from_blocks(weighted.reshape(shape))
            weights[window] += _from_blocks(block_weight.reshape(*shape[:3], 1, 1, 1).expand(shape))
        progress((index + 1) / len(shifts), "refining")
    inner = tuple(slice(block, -block) for _ in range(3))
    covered = weights[inner] > 0
    estimate = torch.where(covered, total[inner] / weights[inner].clamp_min(1e-30), guide[inner])
    return (estimate.cpu().numpy() * unit).astype(np.float32)


def _box_around(bright: np.ndarray, size: tuple[int, int, int]) -> tuple[slice, ...]:
    """A box of at most ``size`` inside the volume, centred on the centroid of ``bright`` (its centre if none)."""
    count = int(np.count_nonzero(bright))  # the centroid from per-axis counts: no list of every voxel's indices
    centre = (
        [
            float(np.dot(np.count_nonzero(bright, axis=tuple(o for o in range(3) if o != axis)), np.arange(n))) / count
            for axis, n in enumerate(bright.shape)
        ]
        if count
        else np.asarray(bright.shape) / 2
    )
    starts = [
        int(np.clip(round(c - min(want, n) / 2), 0, n - min(want, n)))
        for c, want, n in zip(centre, size, bright.shape, strict=True)
    ]
    return tuple(slice(s, s + min(want, n)) for s, want, n in zip(starts, size, bright.shape, strict=True))


def neighbour_correlation(field: np.ndarray, mask: np.ndarray, fewest_pairs: int = FEWEST_VOXELS) -> float:
    """The mean correlation between in-plane neighbours (along the last two axes) of ``field`` over pairs
    of voxels both inside ``mask``; an axis with fewer than ``fewest_pairs`` such pairs is left out (0 if
    both are)."""
    values = []
    for axis in (1, 2):
        ahead = [slice(None)] * 3
        behind = [slice(None)] * 3
        ahead[axis], behind[axis] = slice(1, None), slice(0, -1)
        pairs = mask[tuple(ahead)] & mask[tuple(behind)]
        if pairs.sum() >= fewest_pairs:
            values.append(np.corrcoef(field[tuple(ahead)][pairs], field[tuple(behind)][pairs])[0, 1])
    return float(np.mean(values)) if values else 0.0


def removed_noise_correlation(noisy: np.ndarray, pilot: np.ndarray, sigma: float | np.ndarray) -> float:
    """:func:`neighbour_correlation` of ``noisy - pilot`` where the pilot exceeds :data:`BRIGHT` sigma."""
    removed = np.asarray(noisy, np.float32) - np.asarray(pilot, np.float32)
    bright = np.asarray(pilot) > BRIGHT * np.broadcast_to(np.asarray(sigma, np.float32), removed.shape)
    return neighbour_correlation(removed, bright)


def fade(pilot: np.ndarray, sigma: float | np.ndarray) -> np.ndarray:
    """How much of the Wiener step's change each voxel keeps: 0 where ``pilot`` (the network's estimate)
    is below :data:`FADE_FROM` sigma, 1 from :data:`BRIGHT` sigma, linear between; ``sigma`` one level or
    one per voxel."""
    level = np.broadcast_to(np.asarray(sigma, np.float32), np.shape(pilot))
    in_sigma = np.asarray(pilot, np.float32) / np.maximum(level, np.float32(1e-30))
    return np.clip((in_sigma - FADE_FROM) / (BRIGHT - FADE_FROM), 0.0, 1.0).astype(np.float32)


def measured_share(
    network: NetworkDenoiser,
    noisy: np.ndarray,
    pilot: np.ndarray,
    sigma: float | np.ndarray,
    spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0),
    cancel: CancelToken | None = None,
    interleaved: bool = False,
) -> float:
    """The share ``a`` in [0, 1] of the Wiener step's change (``pilot + a (step - pilot)``) that minimises
    the squared error on this scan, measured on the scan alone (recorrupted-to-recorrupted, Pang et al.
    2021): in a box around the anatomy, ``y1 = y + SPLIT sigma z`` is denoised by ``network`` and stepped,
    and the least-squares share that takes the network's estimate towards its step is fitted against
    ``y2 = y - sigma z / SPLIT``, whose noise is independent of y1's, so it stands for the clean scan.
    Bright voxels only (see :data:`BRIGHT`); 0 where too few. ``pilot`` (the network's estimate of the
    whole scan) places the box; ``interleaved`` is the step's (:func:`wiener_refine`). Seeded: one scan
    always gets one share."""
    level = np.broadcast_to(np.asarray(sigma, np.float32), noisy.shape)
    box = _box_around(pilot > BRIGHT * level, SHARE_BOX)
    observed, box_level = np.asarray(noisy[box], np.float32), np.asarray(level[box], np.float32)
    draw = np.random.default_rng(0).standard_normal(observed.shape).astype(np.float32)
    first = observed + SPLIT * box_level * draw
    second = observed - box_level * draw / SPLIT
    told = box_level * np.float32(np.sqrt(1.0 + SPLIT**2))
    if np.ndim(sigma) == 0:
        estimate = network.denoise(first, float(told.flat[0]), spacing_zyx=spacing_zyx, cancel=cancel)
    else:
        estimate = network.denoise_with_map(first, told, spacing_zyx=spacing_zyx, cancel=cancel)
    stepped = wiener_refine(  # only the blocks over the measured voxels (lit_from): the change there is the same
        first, estimate, told, cancel=cancel, device=network.device, interleaved=interleaved, lit_from=BRIGHT
    )
    stepped = np.clip(stepped, 0, None)
    inner = tuple(slice(SHARE_EDGE, n - SHARE_EDGE) if n > 4 * SHARE_EDGE else slice(None) for n in observed.shape)
    measured = (estimate > BRIGHT * told)[inner]
    if measured.sum() < FEWEST_VOXELS:
        return 0.0
    change = (stepped - estimate)[inner][measured].astype(np.float64)
    towards = (second - estimate)[inner][measured].astype(np.float64)
    power = float(np.sum(change**2))
    return float(np.clip(np.sum(change * towards) / power, 0.0, 1.0)) if power > 0 else 0.0


class WienerRefined(Denoiser):
    """``inner``, a network, then :func:`wiener_refine` with its output as the pilot where the noise
    level is at most ``highest_level`` % of the brightest tissue: all of the step, or with
    ``measure_share`` the share :func:`measured_share` finds on the scan; with ``interleaved`` on a
    quarter of the blocks (:func:`block_origins`); with ``faded`` the change kept voxel by voxel as
    :func:`fade` says (none in the air). ``refined`` says whether the last call ran the second stage,
    ``share`` how much of it was kept where the anatomy is bright (None where it did not run)."""

    def __init__(
        self,
        inner: NetworkDenoiser,
        highest_level: float = HIGHEST_LEVEL,
        measure_share: bool = False,
        interleaved: bool = False,
        faded: bool = False,
    ) -> None:
        self.inner, self.highest_level, self.measure_share = inner, highest_level, measure_share
        self.interleaved, self.faded = interleaved, faded
        self.refined = False
        self.share: float | None = None
        self.noise_correlation: float | None = None
        """The neighbour correlation of the noise the network removed, where the last call measured it
        (:func:`removed_noise_correlation`); above :data:`MOST_CORRELATION` the scan's noise is correlated."""

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
        return self._refine(np.asarray(volume, np.float32), pilot, sigma_map, spacing_zyx, progress, cancel)

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
        return self._refine(volume, pilot, sigma, spacing_zyx, progress, cancel)

    def _refine(
        self,
        volume: np.ndarray,
        pilot: np.ndarray,
        sigma: float | np.ndarray,
        spacing_zyx: tuple[float, float, float],
        progress: ProgressCallback,
        cancel: CancelToken | None,
    ) -> np.ndarray:
        scale = self.inner.last_scale
        self.refined, self.share, self.noise_correlation = False, None, None
        level = float(np.mean(sigma))
        if scale is None or level <= 0 or 100.0 * level / scale > self.highest_level:
            return pilot
        share = 1.0
        if self.measure_share:
            self.noise_correlation = removed_noise_correlation(volume, pilot, sigma)
            if self.noise_correlation > MOST_CORRELATION:
                return pilot  # correlated noise: the step's white-noise model does not hold
            progress(0.8, "measuring the Wiener step's share")
            share = measured_share(self.inner, volume, pilot, sigma, spacing_zyx, cancel, interleaved=self.interleaved)
            self.inner.last_scale = scale  # the measurement ran the network on a box: keep the scan's figure
            if share < LEAST_SHARE:
                return pilot
        refined = wiener_refine(
            volume,
            pilot,
            sigma,
            progress=scaled(progress, 0.85, 1.0),
            cancel=cancel,
            device=self.inner.device,
            interleaved=self.interleaved,
            lit_from=FADE_FROM if self.faded else DARK,  # faded: none of the change is kept below FADE_FROM
        )
        self.refined, self.share = True, share
        if self.faded:
            kept = pilot + np.float32(share) * fade(pilot, sigma) * (refined - pilot)
        else:
            kept = refined if share == 1.0 else pilot + np.float32(share) * (refined - pilot)
        return np.clip(kept, 0, None)

"""Where a scan's noise is white, and the fine band that then reads it with the least anatomy.

The finest diagonal Haar band (first differences along every axis) holds all of white noise at unit
gain, but also the anatomy's first-order variation: on a sharp or smooth scan at low noise, the
blind level it gives reads that anatomy as noise (2 to 3 times the level at 1 %). Fourth differences
along every axis, ``[1, -4, 6, -4, 1] / sqrt(70)``, also keep white noise at unit gain and cancel
every cubic trend, so they read far less anatomy.

Real scanners' noise is rarely white, though: reconstruction filters and interpolation roll its
spectrum off at the highest frequencies, where fourth differences weigh most, so on such a scan
they read the noise low (a half of the Haar band's reading inside a bottle phantom, a tenth on a
zero-filled one). The fourth differences are therefore used only where the scan shows white noise:
in its air (dark, nonzero, away from tissue) the two bands must read the same level.

Everything is measured in 4^3 blocks of the fourth-difference band (:func:`fine_blocks`), so that the
air test and the level cost little more than the Haar band's own estimate.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

SHORT_AXIS = 12
"""Axes with fewer voxels than this are differenced once, not four times (a thin slab keeps its slices)."""

WHITE_AIR_TOLERANCE = 0.05
"""How far from 1 the air's fourth-difference over first-difference level may be for the noise to count
as white (white noise reads 1; of the real scans in ../shared/data with enough air, the spine T2*, T2 TSE
and FNNDSC T2 read 0.68-0.78, a 3-D MEMPRAGE 0.96; a higher reading is structure, such as ghosts, not white
noise)."""

FINE_BLOCK = 4
"""The side of the blocks the fourth-difference band is measured in."""

MIN_AIR_BLOCKS = 64
"""Fewer air blocks than this (4096 voxels: a skull-stripped or masked scan, a tight crop) and whiteness is
not judged: not white."""

AIR_BELOW_SIGMAS = 2.0
"""Air: blocks whose mean is below this many blind sigmas (Rayleigh noise alone averages 1.25)."""


def difference_orders(shape: tuple[int, ...]) -> tuple[int, ...]:
    """How often each axis is differenced: four times, or once along a short axis (``SHORT_AXIS``)."""
    return tuple(4 if size >= SHORT_AXIS else 1 for size in shape)


def fine_band(data: np.ndarray, orders: tuple[int, ...]) -> np.ndarray:
    """``data`` differenced ``orders[axis]`` times along each axis (``[1, -4, 6, -4, 1]`` for four, over the
    region where the differences fit), scaled so that white noise keeps its standard deviation."""
    band = _differenced(np.asarray(data, np.float32), orders)
    return band / np.float32(math.sqrt(_white_gain(orders)))


def _differenced(band: np.ndarray, orders: tuple[int, ...]) -> np.ndarray:
    for axis, order in enumerate(orders):
        if order:
            band = np.diff(band, n=order, axis=axis)
    return band


def _white_gain(orders: tuple[int, ...]) -> float:
    """The variance of white noise of unit variance after these differences (the sum of the squared
    binomial coefficients of each order)."""
    return float(math.prod(math.comb(2 * order, order) for order in orders))


def valid_region(array: np.ndarray, orders: tuple[int, ...]) -> np.ndarray:
    """The part of ``array`` aligned with :func:`fine_band`'s output: each voxel at its differences' centre."""
    index = tuple(
        slice(_centre(order), _centre(order) + size - order) for order, size in zip(orders, array.shape, strict=True)
    )
    return array[index]


def _centre(order: int) -> int:
    """Where differences of this order are centred, counted from the first voxel they reach (rounded up)."""
    return (order + 1) // 2


def block_means(array: np.ndarray, block: int) -> np.ndarray:
    """The mean of each non-overlapping block x block x block tile of a 3-D array (its whole tiles), on the
    tiles' grid. Summed in float64 one axis at a time, the last first, as ``block`` strided slices added
    together: three times faster than numpy's reduction over the tiles' 6-D view, which loops over short axes."""
    z, y, x = (size - size % block for size in array.shape)
    sums = array[:z, :y, :x]
    for axis in (2, 1, 0):
        slices = [tuple(slice(o, None, block) if a == axis else slice(None) for a in range(3)) for o in range(block)]
        total = sums[slices[0]].astype(np.float64)
        for offset in slices[1:]:
            total += sums[offset]
        sums = total
    return sums / block**3


@dataclass
class FineBlocks:
    """Per block of the fourth-difference band (on its grid): the band's mean square, the first-difference
    band's there, the image's mean brightness, and whether the block and its 26 neighbours hold no zero."""

    fourth_energy: np.ndarray
    first_energy: np.ndarray
    brightness: np.ndarray
    nonzero_around: np.ndarray


def fine_blocks(data: np.ndarray, orders: tuple[int, ...]) -> FineBlocks:
    """:class:`FineBlocks` of ``data`` for the differences of :func:`difference_orders`."""
    first = _differenced(np.asarray(data, np.float32), tuple(1 for _ in orders))
    fourth = _differenced(first, tuple(order - 1 for order in orders))  # the first differences, differenced on
    aligned = tuple(  # the first differences centred where the fourth ones are
        slice(_centre(order) - 1, _centre(order) - 1 + size) for order, size in zip(orders, fourth.shape, strict=True)
    )
    zero_free = block_means(valid_region(data, orders) != 0, FINE_BLOCK) == 1
    return FineBlocks(
        fourth_energy=block_means(np.square(fourth), FINE_BLOCK) / _white_gain(orders),
        first_energy=block_means(np.square(first[aligned]), FINE_BLOCK) / _white_gain(tuple(1 for _ in orders)),
        brightness=block_means(valid_region(data, orders), FINE_BLOCK),
        nonzero_around=all_around(zero_free),
    )


def all_around(mask: np.ndarray) -> np.ndarray:
    """Whether ``mask`` holds at each block of a grid and at its 26 neighbours."""
    return ndimage.minimum_filter(mask.astype(np.uint8), size=3, mode="nearest") > 0


def noise_is_white(blocks: FineBlocks, sigma: float) -> bool:
    """Whether the scan's air shows white noise: there its fourth-difference band reads the level of its
    first-difference band, within ``WHITE_AIR_TOLERANCE``.

    ``sigma`` (the Haar band's blind level) sets what is dark. The air is the blocks whose mean, and their
    26 neighbours', is below ``AIR_BELOW_SIGMAS`` sigmas (clear of tissue edges), with no zero among them
    (masked or clipped backgrounds are not noise). A nonlinear map of i.i.d. noise (the magnitude) is
    still white, so Rayleigh air reads 1 when the complex noise was white.
    """
    air = all_around(blocks.brightness < AIR_BELOW_SIGMAS * sigma) & blocks.nonzero_around
    if air.sum() < MIN_AIR_BLOCKS:
        return False
    first_level = float(blocks.first_energy[air].sum())
    if first_level <= 0:
        return False
    return abs(math.sqrt(float(blocks.fourth_energy[air].sum()) / first_level) - 1) <= WHITE_AIR_TOLERANCE


@functools.lru_cache(maxsize=16)
def pure_noise_block_quantile(orders: tuple[int, ...], quantile: float) -> float:
    """The ``quantile`` of block RMS deviations of the fine band of unit white noise (seeded, so every call
    gives the same figure): the band's values are correlated, so the chi distribution does not apply."""
    shape = tuple(32 * FINE_BLOCK + order for order in orders)
    noise = np.random.default_rng(20261202).standard_normal(shape).astype(np.float32)
    deviations = np.sqrt(block_means(np.square(fine_band(noise, orders)), FINE_BLOCK))
    return float(np.quantile(deviations, quantile))

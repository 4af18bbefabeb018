"""A whole-brain diffusion phantom with crossing fibres, built from a real DWI's geometry.

The tensors of a real scan (canon scan 1: 80 x 80 x 40 at 3 mm, b = 1500; MP-PCA-denoised, fitted,
then smoothed over a voxel) give the anatomy: where white matter, grey matter and CSF are and which
way the fibres run. In the upper half of the white matter (the centrum semiovale, where fibres
cross) a second fibre population is added at right angles to the first, holding 40 % of the signal.
Signals are synthesised for any gradient table, so one phantom serves a single-shell scheme (2 b0 +
32 directions at b = 1000) and a multi-shell one (3 b0 + 30 directions at b = 1000 + 30 at b = 2000).
The ground truth for tensor-derived maps is the tensor fit of the noiseless signal, so that model
error (a tensor cannot describe a crossing) cancels and only noise and denoising show.

The diffusion benchmark judges every DWI method on the phantom of canon scan 1; the shell network
(``training/shells.py``) trains on phantoms of other scans, turned to random orientations
(:func:`rotated`: the anatomy and its fibres turn together).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage

from ..diffusion import GradientTable, fibonacci_directions, is_b0
from ..dti import fit_tensors
from ..errors import InputError
from ..masks import foreground_mask
from ..pipeline import denoise_volume
from ..volume import Volume

FIBRE = (1.7e-3, 0.2e-3)
"""Axial and radial diffusivity (mm^2/s) of the crossing fibre population."""
CROSSING_SHARE = 0.4
EIGENVALUE_RANGE = (5e-5, 3.2e-3)


@dataclass
class Phantom:
    """Anatomy and tissue model: S0, brain mask, the real tensors and the crossing fibres (z, y, x, ...)."""

    s0: np.ndarray
    mask: np.ndarray
    tensors: np.ndarray
    crossing: np.ndarray
    """Where a second fibre population crosses (bool)."""
    second: np.ndarray
    """The second population's tensors (zero outside ``crossing``)."""
    spacing_zyx: tuple[float, float, float]
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    """Direction cosines of the grid (x-y-z index axes to LPS world, as in :class:`Geometry`)."""

    def crop(self, region: tuple[slice, slice, slice]) -> Phantom:
        """The phantom inside ``region`` (z, y, x slices)."""
        return replace(
            self,
            s0=self.s0[region],
            mask=self.mask[region],
            tensors=self.tensors[region],
            crossing=self.crossing[region],
            second=self.second[region],
        )

    @property
    def reference_b0(self) -> float:
        """The tissue b0 level noise levels are quoted against (median S0 inside the brain)."""
        return float(np.median(self.s0[self.mask]))


def schemes() -> dict[str, GradientTable]:
    """A single-shell (34 measurements) and a multi-shell (63 measurements) acquisition."""
    single = np.vstack([np.zeros((2, 3)), fibonacci_directions(32)])
    rotation = _rotation_about_z(np.pi / 7)  # the second shell's directions interleave the first's
    multi = np.vstack([np.zeros((3, 3)), fibonacci_directions(30), fibonacci_directions(30) @ rotation.T])
    return {
        "single-shell 32 dir b1000": GradientTable(np.array([0.0] * 2 + [1000.0] * 32), single),
        "multi-shell 30+30 dir b1000/2000": GradientTable(np.array([0.0] * 3 + [1000.0] * 30 + [2000.0] * 30), multi),
    }


def build_phantom(scan: Volume) -> Phantom:
    """The phantom of a real DWI series (see the module's docstring)."""
    if scan.diffusion is None:
        raise InputError("a diffusion phantom is built from a DWI series with b-values and gradients")
    table = GradientTable(scan.diffusion.bvalues.astype(float), scan.diffusion.gradients.astype(float))
    cleaned = denoise_volume(scan, model="mppca", device="cpu").volume.array.astype(np.float64)
    b0 = cleaned[..., is_b0(table.bvalues)].mean(-1)
    mask = ndimage.binary_erosion(foreground_mask(b0.astype(np.float32)), iterations=1)
    fitted, _ = fit_tensors(cleaned[mask], table)
    tensors = np.zeros((*mask.shape, 3, 3))
    tensors[mask] = fitted
    for i in range(3):
        for j in range(3):
            tensors[..., i, j] = ndimage.gaussian_filter(tensors[..., i, j], 0.7) * mask
    values, vectors = np.linalg.eigh(tensors)
    values = np.clip(values, *EIGENVALUE_RANGE)
    tensors = np.einsum("...ij,...j,...kj->...ik", vectors, values, vectors) * mask[..., None, None]
    fa = _fa(values)
    principal = vectors[..., :, 2]
    upper = np.zeros_like(mask)
    upper[mask.shape[0] // 2 :] = True
    crossing = mask & upper & (fa > 0.35)
    across = np.cross(principal, np.array([0.0, 0.0, 1.0]))
    flat = np.linalg.norm(across, axis=-1) < 0.3  # fibres running along z: cross them along x instead
    across[flat] = np.cross(principal[flat], np.array([1.0, 0.0, 0.0]))
    across /= np.maximum(np.linalg.norm(across, axis=-1, keepdims=True), 1e-9)
    axial, radial = FIBRE
    second = radial * np.eye(3) + (axial - radial) * across[..., :, None] * across[..., None, :]
    second[~crossing] = 0.0
    s0 = ndimage.gaussian_filter(b0, 0.7) * mask
    s0 = s0 / np.median(s0[mask])
    return Phantom(
        s0.astype(np.float64),
        mask,
        tensors,
        crossing,
        second,
        scan.geometry.spacing_zyx(),
        scan.geometry.direction_matrix,
    )


def rotated(phantom: Phantom, rotation: np.ndarray) -> Phantom:
    """``phantom`` turned about its centre by ``rotation`` (3x3 orthogonal, LPS world frame; a reflection
    too), each tensor turned with the anatomy (R D R^T), on a grid of the same spacing, cropped to the brain."""
    spacing = np.asarray(phantom.spacing_zyx[::-1])
    to_world = phantom.direction @ np.diag(spacing)  # x-y-z index -> world (mm)
    in_index = np.linalg.inv(to_world) @ rotation.T @ to_world  # output index -> input index (x-y-z)
    matrix = in_index[::-1, ::-1]  # the same map on z-y-x array axes
    side = int(np.ceil(np.linalg.norm(phantom.s0.shape)))
    centre_in = (np.asarray(phantom.s0.shape) - 1) / 2
    offset = centre_in - matrix @ np.full(3, (side - 1) / 2)

    def turn(image: np.ndarray) -> np.ndarray:
        return ndimage.affine_transform(image.astype(np.float64), matrix, offset, output_shape=(side,) * 3, order=1)

    def turn_tensors(tensors: np.ndarray) -> np.ndarray:
        moved = np.stack([turn(tensors[..., i, j]) for i in range(3) for j in range(3)], axis=-1)
        return np.einsum("ij,...jk,lk->...il", rotation, moved.reshape(*moved.shape[:3], 3, 3), rotation)

    mask = turn(phantom.mask) > 0.5
    crossing = (turn(phantom.crossing) > 0.5) & mask
    second = turn_tensors(phantom.second)
    second[~crossing] = 0.0
    turned = Phantom(
        turn(phantom.s0) * mask,
        mask,
        turn_tensors(phantom.tensors) * mask[..., None, None],
        crossing,
        second,
        phantom.spacing_zyx,
        phantom.direction,
    )
    inside = np.argwhere(mask)
    low, high = inside.min(axis=0), inside.max(axis=0) + 1
    return turned.crop((slice(low[0], high[0]), slice(low[1], high[1]), slice(low[2], high[2])))


def phantom_signals(phantom: Phantom, table: GradientTable) -> np.ndarray:
    """Noiseless signals (z, y, x, n): the real tensors, and where fibres cross, 40 % of a second population."""
    directions, bvalues = table.directions, table.bvalues
    first = np.exp(-bvalues * np.einsum("ki,...ij,kj->...k", directions, phantom.tensors, directions))
    second = np.exp(-bvalues * np.einsum("ki,...ij,kj->...k", directions, phantom.second, directions))
    share = np.where(phantom.crossing, CROSSING_SHARE, 0.0)[..., None]
    return (phantom.s0[..., None] * ((1 - share) * first + share * second)).astype(np.float32)


def angular_error_degrees(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Angle between the principal eigenvectors of two sets of tensors (N, 3, 3), sign-free."""
    a = np.linalg.eigh(first)[1][..., :, 2]
    b = np.linalg.eigh(second)[1][..., :, 2]
    cosine = np.clip(np.abs(np.sum(a * b, axis=-1)), 0.0, 1.0)
    return np.degrees(np.arccos(cosine))


def _fa(values: np.ndarray) -> np.ndarray:
    mean = values.mean(-1, keepdims=True)
    return np.sqrt(1.5 * ((values - mean) ** 2).sum(-1) / np.maximum((values**2).sum(-1), 1e-30))


def _rotation_about_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

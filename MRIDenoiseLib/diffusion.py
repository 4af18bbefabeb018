"""Diffusion MRI in one place: gradient tables, the b0 rule, signal normalisation, FSL .bval/.bvec.

Everything that reads, writes or interprets a diffusion scheme goes through this module, so the
file readers, the q-space denoisers, their training and the benchmarks agree on what a b0 volume
is and on which frame gradients are expressed in (LPS world in memory; FSL's voxel frame on disk).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

B0_THRESHOLD = 50.0
"""b-values (s/mm^2) at or below this are b0 volumes: their gradient direction carries no meaning and
they are the reference signal (DIPY's default; every scheme in ../shared/data has b0s at 0-15)."""

TENSOR_INDEX = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
"""The six independent elements of a symmetric 3x3 tensor, in the order fits and design matrices use."""


def is_b0(bvalues: np.ndarray) -> np.ndarray:
    """Which measurements are b0 volumes (see :data:`B0_THRESHOLD`)."""
    return np.asarray(bvalues) <= B0_THRESHOLD


@dataclass(frozen=True)
class GradientTable:
    """b-values (s/mm^2) and unit gradient directions, one row per measurement."""

    bvalues: np.ndarray
    directions: np.ndarray

    def __post_init__(self) -> None:
        if self.directions.shape != (self.bvalues.size, 3):
            raise ValueError(f"{self.bvalues.size} b-values need {self.bvalues.size}x3 directions")

    @property
    def size(self) -> int:
        return int(self.bvalues.size)

    def design_matrix(self) -> np.ndarray:
        """Rows [1, -b gx^2, -b gy^2, -b gz^2, -2b gx gy, -2b gx gz, -2b gy gz] for log-signal fits."""
        g, b = self.directions, self.bvalues
        columns = [np.ones_like(b)]
        for i, j in TENSOR_INDEX:
            factor = 1.0 if i == j else 2.0
            columns.append(-factor * b * g[:, i] * g[:, j])
        return np.stack(columns, axis=1)


def fibonacci_directions(count: int) -> np.ndarray:
    """Nearly uniform unit vectors on a hemisphere (a Fibonacci lattice)."""
    index = np.arange(count) + 0.5
    z = 1.0 - index / count
    radius = np.sqrt(1.0 - z**2)
    angle = np.pi * (1.0 + 5**0.5) * index
    return np.stack([radius * np.cos(angle), radius * np.sin(angle), z], axis=1)


def paper_scheme() -> GradientTable:
    """Paper 001's 32 samples: b = 50 first and last, thirty directions at b = 1000."""
    directions = np.vstack([[1.0, 0.0, 0.0], fibonacci_directions(30), [0.0, 0.0, 1.0]])
    bvalues = np.array([50.0] + [1000.0] * 30 + [50.0])
    return GradientTable(bvalues, directions)


def normalise_signals(measured: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Divide each voxel's signal by its mean over all measurements; returns (normalised, scale).

    The mean over every measurement averages the noise down (unlike a single noisy b0), so the
    scale stays stable even at the paper's highest noise levels.
    """
    reference = measured.mean(axis=-1)
    scale = np.where(reference > 1e-6, reference, 1.0)
    return measured / scale[..., None], scale


def read_bval_bvec(bval: Path, bvec: Path, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """b-values and gradient directions (n x 3, FSL's voxel frame) from an FSL pair.

    The .bvec may hold 3 rows or 3 columns; NaN directions, which some tools write for b0 volumes,
    become 0 there and are refused on weighted volumes. ``count`` checks the number of volumes.
    """
    try:
        bvalues = np.loadtxt(bval, ndmin=1, dtype=float).ravel()
        vectors = np.loadtxt(bvec, ndmin=2, dtype=float)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot parse {bval.name}/{bvec.name}: {error}") from None
    if vectors.shape[0] != 3 and vectors.shape[1] == 3:
        vectors = vectors.T
    expected = bvalues.size if count is None else count
    if bvalues.size != expected or vectors.shape != (3, expected):
        raise InputError(f"{bval.name}/{bvec.name} describe {bvalues.size} volumes; the image has {expected}")
    directions = vectors.T.copy()
    undefined = ~np.isfinite(directions).all(axis=1)
    weighted = undefined & ~is_b0(bvalues)
    if weighted.any():
        raise InputError(f"{bvec.name}: volumes {np.flatnonzero(weighted).tolist()} have b > 0 but no finite gradient")
    directions[undefined] = 0.0
    return bvalues, directions


def fsl_sidecars(stem: Path) -> tuple[Path, Path]:
    """The .bval and .bvec files of a NIfTI whose name without its extension is ``stem``: the whole name
    is kept (``scan.denoised`` -> ``scan.denoised.bval``, as FSL and dcm2niix name them)."""
    return stem.with_name(stem.name + ".bval"), stem.with_name(stem.name + ".bvec")


def write_bval_bvec(bvalues: np.ndarray, directions: np.ndarray, stem: Path) -> None:
    """Write ``stem``.bval and ``stem``.bvec (directions in FSL's voxel frame, three rows)."""
    bval, bvec = fsl_sidecars(stem)
    bval.write_text(" ".join(f"{b:.10g}" for b in bvalues) + "\n")
    rows = [" ".join(f"{v:.10g}" for v in directions[:, axis]) for axis in range(3)]
    bvec.write_text("\n".join(rows) + "\n")


def fsl_to_world(directions: np.ndarray, direction_matrix: np.ndarray) -> np.ndarray:
    """FSL voxel-frame directions to the LPS world frame of an image with ``direction_matrix``.

    FSL flips the first voxel axis when the image's direction matrix has a positive determinant.
    """
    voxel_frame = directions.copy()
    if np.linalg.det(direction_matrix) > 0:
        voxel_frame[:, 0] *= -1
    return voxel_frame @ direction_matrix.T


def world_to_fsl(gradients: np.ndarray, direction_matrix: np.ndarray) -> np.ndarray:
    """The inverse of :func:`fsl_to_world`."""
    voxel_frame = gradients @ direction_matrix
    if np.linalg.det(direction_matrix) > 0:
        voxel_frame[:, 0] *= -1
    return voxel_frame


def unit_directions(directions: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; zero rows (b0 volumes) stay zero."""
    norms = np.linalg.norm(directions, axis=1, keepdims=True)
    return np.divide(directions, norms, out=np.zeros_like(directions), where=norms > 0)

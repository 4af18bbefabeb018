"""In-memory volume: a numpy array plus the geometry and diffusion metadata that travel with it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class Geometry:
    """Physical placement of a 3-D grid, in ITK/SimpleITK conventions (LPS world, x-y-z order).

    ``direction`` is the 3x3 direction cosine matrix in row-major order.
    """

    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def spacing_zyx(self) -> tuple[float, float, float]:
        """Spacing in numpy array axis order (z, y, x)."""
        return (self.spacing[2], self.spacing[1], self.spacing[0])


@dataclass(frozen=True)
class DiffusionInfo:
    """B-values and unit gradient directions of a diffusion-weighted series.

    ``gradients`` are expressed in the LPS world frame (one row per volume), so they stay
    correct whichever file format the series is written to.
    """

    bvalues: np.ndarray
    gradients: np.ndarray

    def __post_init__(self) -> None:
        if self.bvalues.ndim != 1 or self.gradients.shape != (self.bvalues.size, 3):
            raise ValueError(
                f"{self.bvalues.size} b-values need a {self.bvalues.size}x3 gradient table, got {self.gradients.shape}"
            )


@dataclass
class Volume:
    """A 3-D scalar volume (z, y, x) or a 4-D series (z, y, x, n) with its geometry.

    ``source_dtype`` is the pixel type of the file it came from, used by ``--keep-dtype``;
    ``frame_spacing`` the spacing of a series' fourth axis (a NIfTI's pixdim[4], e.g. the TR) and
    ``description`` the file's free-text note (a NIfTI's ``descrip``), both written back unchanged.
    """

    array: np.ndarray
    geometry: Geometry = field(default_factory=Geometry)
    diffusion: DiffusionInfo | None = None
    source_dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))
    frame_spacing: float = 1.0
    description: str = ""

    @property
    def is_series(self) -> bool:
        return self.array.ndim == 4

    def with_array(self, array: np.ndarray) -> Volume:
        """A new volume with the same geometry and metadata around another array."""
        if array.shape[:3] != self.array.shape[:3]:
            raise ValueError(f"shape {array.shape} does not match {self.array.shape}")
        return replace(self, array=array)


def slice_axis_for(spacing_zyx: tuple[float, float, float]) -> int:
    """Slice along the coarsest axis (through-plane of an anisotropic scan); axis 0 if isotropic."""
    spacing = np.asarray(spacing_zyx, float)
    if spacing.max() > 1.2 * spacing.min():
        return int(np.argmax(spacing))
    return 0

"""Diffusion shells in spherical harmonics: the q-space representation that works for any gradient table.

Each shell (the measurements sharing one b-value) is fitted, voxel by voxel, with the real, even,
symmetric spherical harmonics of DIPY's ``descoteaux07`` basis (non-legacy) up to order 4 (15
coefficients), or order 2 (6 coefficients) when the shell has too few directions to pin order 4
down. Coefficients are always laid out in 15 slots, order-2 shells leaving the last nine at zero, so
one network serves every scheme. The fit is linear: ``coefficients = signals @ fit.pseudo_inverse.T``
and ``signals ~ coefficients @ fit.basis.T``; the part of the signal beyond the fitted order is
``signals - projection``.

:func:`project_shells` goes further, for denoisers that want each shell's signal without the part
its directions cannot resolve: the fit's order there is the highest the shell pins down, up to 8
(the fibre orientations of high-b shells need orders 6 and 8).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .diffusion import GradientTable, is_b0, unit_directions

COEFFICIENTS = 15
"""Slots per shell: every even harmonic up to order 4."""
ORDER_2_COEFFICIENTS = 6
FULL_ORDER_DIRECTIONS = 20
"""Shells with at least this many directions are fitted to order 4 (15 coefficients, so at least
1.3 directions per coefficient); fewer to order 2 (a 6-direction DTI shell still fits)."""
LEAST_DIRECTIONS = ORDER_2_COEFFICIENTS
DIRECTIONS_PER_COEFFICIENT = FULL_ORDER_DIRECTIONS / COEFFICIENTS
"""How many directions :func:`projection_order` wants per fitted coefficient (the ratio of :func:`fit_shell`)."""
HIGHEST_PROJECTION_ORDER = 8
"""The highest order :func:`project_shells` fits (45 coefficients: shells of 60 directions and more)."""
SHELL_TOLERANCE = 100.0
"""b-values (s/mm^2) closer than this belong to one shell (scanners report 995, 1000, 1005 ...)."""


@dataclass(frozen=True)
class Shell:
    """One b-value's measurements: their positions in the series and the b-value they share."""

    bvalue: float
    indices: np.ndarray


def shells_of(table: GradientTable) -> list[Shell]:
    """The diffusion-weighted shells of ``table`` (b0 volumes excluded), lowest b first."""
    weighted = np.flatnonzero(~is_b0(table.bvalues))
    shells: list[Shell] = []
    for index in weighted[np.argsort(table.bvalues[weighted], kind="stable")]:
        bvalue = float(table.bvalues[index])
        if shells and bvalue - shells[-1].bvalue < SHELL_TOLERANCE:
            last = shells[-1]
            shells[-1] = Shell(last.bvalue, np.append(last.indices, index))
        else:
            shells.append(Shell(bvalue, np.array([index])))
    return [Shell(float(table.bvalues[s.indices].mean()), np.sort(s.indices)) for s in shells]


@dataclass(frozen=True)
class ShellFit:
    """The spherical-harmonic fit of one shell's directions (15 slots; unused ones are zero)."""

    basis: np.ndarray
    """(directions, 15): the harmonics sampled at the shell's directions."""
    pseudo_inverse: np.ndarray
    """(15, directions): least-squares coefficients from signals."""
    used: int
    """Coefficients fitted: 15 (order 4) or 6 (order 2)."""

    def coefficients(self, signals: np.ndarray) -> np.ndarray:
        """Coefficients (..., 15) of signals (..., directions)."""
        return np.asarray(signals) @ self.pseudo_inverse.T

    def synthesise(self, coefficients: np.ndarray) -> np.ndarray:
        """Signals (..., directions) of coefficients (..., 15)."""
        return np.asarray(coefficients) @ self.basis.T

    @property
    def noise_gain(self) -> float:
        """Root-mean-square noise of a fitted coefficient per unit of measurement noise (i.i.d. noise)."""
        return float(np.sqrt(np.mean(np.sum(self.pseudo_inverse[: self.used] ** 2, axis=1))))


def fit_shell(directions: np.ndarray) -> ShellFit:
    """The fit for a shell's gradient directions (n, 3); order 4 from :data:`FULL_ORDER_DIRECTIONS`."""
    count = len(directions)
    if count < LEAST_DIRECTIONS:
        raise ValueError(f"a shell needs at least {LEAST_DIRECTIONS} directions for a spherical-harmonic fit")
    return fit_of_harmonics(sampled_harmonics(directions, 4 if count >= FULL_ORDER_DIRECTIONS else 2))


def sampled_harmonics(directions: np.ndarray, order: int) -> np.ndarray:
    """The even harmonics up to ``order`` (DIPY's ``descoteaux07``, non-legacy) at ``directions`` (n, 3):
    an array (n, (order + 1)(order + 2) / 2)."""
    from dipy.reconst.shm import real_sh_descoteaux

    unit = unit_directions(np.asarray(directions, float))
    polar = np.arccos(np.clip(unit[:, 2], -1.0, 1.0))
    azimuth = np.arctan2(unit[:, 1], unit[:, 0]) % (2 * np.pi)
    harmonics, _, _ = real_sh_descoteaux(order, polar, azimuth, legacy=False)
    return np.asarray(harmonics, float)


def projection_order(count: int) -> int:
    """The highest even order, at most :data:`HIGHEST_PROJECTION_ORDER`, whose harmonics ``count``
    directions pin down (:data:`DIRECTIONS_PER_COEFFICIENT` each); 2 from :data:`LEAST_DIRECTIONS`, 0 below."""
    if count < LEAST_DIRECTIONS:
        return 0
    order = 2
    while order < HIGHEST_PROJECTION_ORDER:
        following = order + 2
        if (following + 1) * (following + 2) / 2 * DIRECTIONS_PER_COEFFICIENT > count:
            break
        order = following
    return order


def _shell_projections(table: GradientTable) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Each shell :func:`project_shells` projects: its measurements and the projection matrix (n, n) onto
    its harmonics of order :func:`projection_order`."""
    for shell in shells_of(table):
        order = projection_order(len(shell.indices))
        if order:
            harmonics = sampled_harmonics(table.directions[shell.indices], order)
            yield shell.indices, harmonics @ np.linalg.pinv(harmonics)


def kept_noise_fraction(table: GradientTable) -> np.ndarray:
    """Per measurement, the root-mean-square fraction of i.i.d. noise :func:`project_shells` keeps:
    sqrt(trace / directions) of the shell's projection (its rank over its size), 1 elsewhere."""
    fraction = np.ones(table.size)
    for indices, projection in _shell_projections(table):
        fraction[indices] = np.sqrt(np.trace(projection) / len(indices))
    return fraction


def project_shells(series: np.ndarray, table: GradientTable) -> np.ndarray:
    """``series`` (..., measurements) with each diffusion-weighted shell replaced by its least-squares fit
    in spherical harmonics of order :func:`projection_order`: what remains is the part of the noise (and of
    any signal above that order) the shell's directions cannot tell from it. b0 volumes and shells of fewer
    than :data:`LEAST_DIRECTIONS` directions are returned unchanged."""
    projected = np.array(series, dtype=np.float32, copy=True)
    for indices, projection in _shell_projections(table):
        projected[..., indices] = projected[..., indices] @ projection.T.astype(np.float32)
    return projected


def fit_of_harmonics(harmonics: np.ndarray) -> ShellFit:
    """The fit for harmonics already sampled at a shell's directions (directions, 6 or 15)."""
    count, used = harmonics.shape
    basis = np.zeros((count, COEFFICIENTS))
    basis[:, :used] = harmonics
    pseudo_inverse = np.zeros((COEFFICIENTS, count))
    pseudo_inverse[:used] = np.linalg.pinv(harmonics)
    return ShellFit(basis, pseudo_inverse, used)

"""Diffusion tensor signals (paper 001, equation 5) and their inverse: tensor fitting.

S_k = S0 exp(-b_k g_k^T D g_k). Tensors are drawn with eigenvalues and orientations spanning
brain tissue (FA about 0.05-0.9, MD about 0.5-1.2e-3 mm^2/s, free water up to 3e-3); fitting is
weighted least squares on log signals (weights S^2, one re-weighted pass), exact on noiseless
signals.
"""

from __future__ import annotations

import numpy as np

from .diffusion import TENSOR_INDEX, GradientTable
from .noise import NoiseKind


def random_tensors(count: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """``count`` symmetric 3x3 diffusion tensors (mm^2/s) spanning brain tissue and CSF."""
    generator = np.random.default_rng(rng)
    mean_diffusivity = generator.uniform(0.5e-3, 1.2e-3, count)
    anisotropy = generator.uniform(0.0, 0.85, count)
    csf = generator.random(count) < 0.1
    mean_diffusivity[csf] = generator.uniform(2.5e-3, 3.0e-3, csf.sum())
    anisotropy[csf] = generator.uniform(0.0, 0.1, csf.sum())
    first = mean_diffusivity * (1 + 2 * anisotropy)
    rest = mean_diffusivity * (1 - anisotropy)
    split = generator.uniform(0.8, 1.2, count)
    eigenvalues = np.stack([first, rest * split, rest * (2 - split)], axis=1)
    rotations = _random_rotations(count, generator)
    return np.einsum("nij,nj,nkj->nik", rotations, eigenvalues, rotations)


def _random_rotations(count: int, generator: np.random.Generator) -> np.ndarray:
    matrices, upper = np.linalg.qr(generator.standard_normal((count, 3, 3)))
    matrices *= np.sign(np.diagonal(upper, axis1=1, axis2=2))[:, None, :]
    return matrices


def signals(tensors: np.ndarray, table: GradientTable, s0: float | np.ndarray = 1.0) -> np.ndarray:
    """Noiseless signals (N, K) of tensors (N, 3, 3) for a gradient table (equation 5)."""
    quadratic = np.einsum("ki,nij,kj->nk", table.directions, tensors, table.directions)
    return np.asarray(s0, float)[..., None] * np.exp(-table.bvalues[None, :] * quadratic)


def add_signal_noise(clean: np.ndarray, sigma: float | np.ndarray, kind: NoiseKind, rng) -> np.ndarray:
    """Gaussian noise with negatives clipped to 0 (the paper), or Rician noise (its next step)."""
    generator = np.random.default_rng(rng)
    sigma = np.asarray(sigma, float)
    real = clean + sigma * generator.standard_normal(clean.shape)
    if kind == "gaussian":
        return np.clip(real, 0.0, None)
    return np.hypot(real, sigma * generator.standard_normal(clean.shape))


LEAST_RELATIVE_WEIGHT = 1e-8
"""The smallest weight of a measurement in the weighted fit, relative to the voxel's largest."""


def fit_tensors(measured: np.ndarray, table: GradientTable, floor: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares tensor fit of signals (N, K): returns tensors (N, 3, 3) and S0 (N,)."""
    design = table.design_matrix()
    values = np.clip(np.asarray(measured, float), floor, None)
    logs = np.log(values)
    ordinary = np.linalg.lstsq(design, logs.T, rcond=None)[0].T
    # predicted S^2 from the first pass (Salvador et al. 2005), per voxel up to a factor (the fit does not
    # depend on it): relative to the voxel's largest, so that signals at the floor (a denoiser that removed
    # the Rician bias leaves zeros) cannot underflow every weight of a voxel to zero
    predicted = ordinary @ design.T
    weights = np.maximum(np.exp(2.0 * (predicted - predicted.max(axis=1, keepdims=True))), LEAST_RELATIVE_WEIGHT)
    weighted_design = design[None] * weights[..., None]
    normal = np.einsum("kp,nkq->npq", design, weighted_design)
    right = np.einsum("nkp,nk->np", weighted_design, logs)
    parameters = np.linalg.solve(normal, right[..., None])[..., 0]
    tensors = np.zeros((values.shape[0], 3, 3))
    for column, (i, j) in enumerate(TENSOR_INDEX, start=1):
        tensors[:, i, j] = tensors[:, j, i] = parameters[:, column]
    return tensors, np.exp(parameters[:, 0])


def fractional_anisotropy(tensors: np.ndarray) -> np.ndarray:
    eigenvalues = np.linalg.eigvalsh(tensors)
    mean = eigenvalues.mean(axis=-1, keepdims=True)
    numerator = np.sqrt(((eigenvalues - mean) ** 2).sum(axis=-1))
    denominator = np.sqrt((eigenvalues**2).sum(axis=-1))
    return np.sqrt(1.5) * np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def mean_diffusivity(tensors: np.ndarray) -> np.ndarray:
    return np.trace(tensors, axis1=-2, axis2=-1) / 3.0

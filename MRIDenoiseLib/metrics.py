"""PSNR and 3-D SSIM, foreground-masked and whole, as defined in EVALUATION.md."""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics.regression import compute_ssim_and_cs

from .errors import InputError

SSIM_WINDOW = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def normalise_to_reference(clean: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Scale ``clean`` to [0, 1] by its maximum and ``others`` by the same factor."""
    peak = float(np.max(clean))
    if peak <= 0:
        raise InputError("the reference volume has no positive intensity")
    return [np.asarray(v, dtype=np.float64) / peak for v in (clean, *others)]


def default_mask(clean_normalised: np.ndarray) -> np.ndarray:
    """EVALUATION.md's fallback foreground: normalised clean intensity above 0.1."""
    return clean_normalised > 0.1


def psnr(clean: np.ndarray, test: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB with peak 1, for volumes already normalised to the clean maximum."""
    error = (np.asarray(clean, np.float64) - np.asarray(test, np.float64)) ** 2
    mse = float(error[mask].mean() if mask is not None else error.mean())
    return float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse))


def ssim_map(clean: np.ndarray, test: np.ndarray) -> np.ndarray:
    """3-D SSIM map (uniform 7x7x7 window, data range 1) over the valid interior.

    The map is smaller than the input by the window size less one along each axis; entry
    [i, j, k] belongs to voxel [i + 3, j + 3, k + 3].
    """
    if min(clean.shape) < SSIM_WINDOW:
        raise InputError(f"SSIM needs at least {SSIM_WINDOW} voxels along each axis")
    reference = torch.as_tensor(np.asarray(clean, np.float64))[None, None]
    candidate = torch.as_tensor(np.asarray(test, np.float64))[None, None]
    ssim, _ = compute_ssim_and_cs(
        candidate,
        reference,
        spatial_dims=3,
        kernel_size=[SSIM_WINDOW] * 3,
        kernel_sigma=[1.5] * 3,
        data_range=1.0,
        kernel_type="uniform",
        k1=SSIM_K1,
        k2=SSIM_K2,
    )
    return ssim[0, 0].numpy()


def ssim(clean: np.ndarray, test: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean 3-D SSIM, over ``mask`` (cropped to the valid interior) or the whole interior."""
    values = ssim_map(clean, test)
    if mask is None:
        return float(values.mean())
    half = SSIM_WINDOW // 2
    inner = np.asarray(mask, bool)[half:-half, half:-half, half:-half]
    return float(values[inner].mean())


def evaluate(clean: np.ndarray, test: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Foreground and whole-volume PSNR and SSIM of ``test`` against ``clean``.

    Both volumes are scaled by the clean maximum first; ``mask`` defaults to clean > 0.1.
    """
    if clean.shape != test.shape:
        raise InputError(f"shapes differ: clean {clean.shape}, test {test.shape}")
    clean_n, test_n = normalise_to_reference(clean, test)
    foreground = default_mask(clean_n) if mask is None else np.asarray(mask, bool)
    if foreground.shape != clean.shape:
        raise InputError(f"mask shape {foreground.shape} does not match {clean.shape}")
    return {
        "psnr_foreground": psnr(clean_n, test_n, foreground),
        "psnr_whole": psnr(clean_n, test_n),
        "ssim_foreground": ssim(clean_n, test_n, foreground),
        "ssim_whole": ssim(clean_n, test_n),
    }

"""PSNR and 3-D SSIM against independent reference computations."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from MRIDenoiseLib.metrics import evaluate, psnr, ssim


def test_psnr_by_hand():
    clean = np.zeros((8, 8, 8))
    test = clean + 0.1
    assert psnr(clean, test) == pytest.approx(20.0)
    mask = np.zeros_like(clean, bool)
    mask[:4] = True
    test[4:] += 0.9
    assert psnr(clean, test, mask) == pytest.approx(20.0)


def test_ssim_matches_scikit_image_with_the_protocol_settings():
    rng = np.random.default_rng(0)
    clean = rng.random((20, 22, 24))
    test = np.clip(clean + 0.1 * rng.standard_normal(clean.shape), 0, 1)
    reference = structural_similarity(
        clean, test, win_size=7, data_range=1.0, K1=0.01, K2=0.03, use_sample_covariance=True
    )
    assert ssim(clean, test) == pytest.approx(reference, abs=1e-5)


def test_masked_ssim_averages_the_map_inside_the_mask():
    rng = np.random.default_rng(1)
    clean = rng.random((20, 20, 20))
    test = clean.copy()
    test[10:] = rng.random((10, 20, 20))
    mask = np.zeros_like(clean, bool)
    mask[:7] = True  # interior voxels 3..6 see only identical data
    assert ssim(clean, test, mask) == pytest.approx(1.0, abs=1e-6)
    assert ssim(clean, test) < 0.9


def test_evaluate_normalises_by_the_clean_maximum(colin_crop):
    noisy = colin_crop + np.random.default_rng(2).normal(0, 5, colin_crop.shape).astype(np.float32)
    scores = evaluate(colin_crop, noisy)
    scaled = evaluate(colin_crop * 3, noisy * 3)
    assert scores == pytest.approx(scaled, rel=1e-5)
    clean_n = colin_crop / colin_crop.max()
    mask = clean_n > 0.1
    expected = 10 * np.log10(1 / np.mean(((noisy - colin_crop) / colin_crop.max())[mask] ** 2))
    assert scores["psnr_foreground"] == pytest.approx(expected, rel=1e-6)
    assert set(scores) == {"psnr_foreground", "psnr_whole", "ssim_foreground", "ssim_whole"}

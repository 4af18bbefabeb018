"""The blind level's band: fourth differences where the scan's air shows white noise, the Haar band elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from MRIDenoiseLib.masks import brightest_tissue_mean, foreground_mask
from MRIDenoiseLib.noise import add_noise, estimate_sigma, estimate_sigma_map
from MRIDenoiseLib.noise_spectrum import (
    block_means,
    difference_orders,
    fine_band,
    fine_blocks,
    noise_is_white,
    pure_noise_block_quantile,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _read(relative: str) -> np.ndarray:
    import SimpleITK as sitk

    path = SHARED / relative
    if not path.exists():
        pytest.skip("needs ../shared/data")
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)


@pytest.fixture(scope="module")
def flair() -> np.ndarray:
    """A sharp skull-stripped FLAIR (zero outside the brain): added noise makes its only air."""
    volume = _read("anat_more/stroke_flair_8bit_brain.nii.gz")
    return volume[46:94]


def test_the_bands_keep_white_noise_at_unit_gain_and_cancel_cubic_trends():
    noise = np.random.default_rng(0).standard_normal((40, 40, 8)).astype(np.float32)
    orders = difference_orders(noise.shape)
    assert orders == (4, 4, 1)  # a thin axis is differenced once
    assert fine_band(noise, orders).std() == pytest.approx(1.0, rel=0.03)
    z, y, x = np.meshgrid(*(np.arange(40.0) for _ in range(3)), indexing="ij")
    cubic = (0.01 * z**3 - 0.2 * y**2 * x + 3 * x).astype(np.float32)
    assert np.abs(fine_band(cubic, difference_orders(cubic.shape))).max() < 1e-2


def test_block_means_are_the_means_of_the_whole_tiles_on_their_grid():
    values = np.random.default_rng(1).standard_normal((13, 9, 18)).astype(np.float32)
    tiles = values[:12, :8, :16].reshape(3, 4, 2, 4, 4, 4).astype(np.float64)
    np.testing.assert_allclose(block_means(values, 4), tiles.mean(axis=(1, 3, 5)), rtol=1e-12)
    mask = values > 0  # a boolean volume counts the share of its true voxels
    np.testing.assert_allclose(block_means(mask, 4), (tiles > 0).mean(axis=(1, 3, 5)), rtol=1e-12)


def test_the_pure_noise_quantile_is_calibrated_and_the_same_every_call():
    first = pure_noise_block_quantile((4, 4, 4), 0.25)
    assert first == pure_noise_block_quantile((4, 4, 4), 0.25)
    noise = np.random.default_rng(1).standard_normal((84, 84, 84)).astype(np.float32)
    band = fine_band(noise, difference_orders(noise.shape))
    tiles = band.reshape(20, 4, 20, 4, 20, 4).transpose(0, 2, 4, 1, 3, 5).reshape(-1, 64)
    assert np.quantile(np.sqrt((tiles**2).mean(axis=1)), 0.25) == pytest.approx(first, rel=0.02)
    # correlated band values spread wider than 64 independent ones would: the chi quantile would not do
    assert first < 0.9


def test_rayleigh_air_of_white_noise_reads_white_and_zero_filled_noise_does_not(flair):
    sigma = 0.03 * brightest_tissue_mean(flair, foreground_mask(flair))
    white = add_noise(flair, sigma, "rician", 5)
    zero_filled = add_noise(flair, sigma, "rician", 5, zero_filled=True)
    for noisy, expected in ((white, True), (zero_filled, False)):
        level = estimate_sigma(noisy, band="haar")
        assert noise_is_white(fine_blocks(noisy, difference_orders(noisy.shape)), level) is expected


def test_an_unknown_band_is_refused():
    with pytest.raises(ValueError, match="unknown band"):
        estimate_sigma(np.ones((8, 8, 8), np.float32), band="wavelet")  # type: ignore[arg-type]


def test_masked_air_is_not_judged():
    """A scan whose background is zeroed has no air to judge: the Haar band's level stands."""
    noisy = add_noise(np.full((40, 64, 64), 100.0, np.float32), 3.0, "rician", 2)
    noisy[:, :, :24] = 0
    assert estimate_sigma(noisy) == estimate_sigma(noisy, band="haar")


def test_on_white_noise_the_blind_level_reads_the_noise_not_the_anatomy(flair):
    """At 1-5 % on a sharp FLAIR the Haar band read its anatomy (1.2-3.3 x the level); fourth differences
    read within 15 % from 3 % up and halve the error at 1 %."""
    tissue = brightest_tissue_mean(flair, foreground_mask(flair))
    for level, seed in ((1, 1010), (3, 1030), (5, 1050), (30, 1300)):
        sigma = level / 100 * tissue
        noisy = add_noise(flair, sigma, "rician", seed)
        haar, auto = estimate_sigma(noisy, band="haar") / sigma, estimate_sigma(noisy) / sigma
        assert auto <= haar  # fourth differences read less anatomy, never more
        if level == 1:
            assert auto - 1 < 0.5 * (haar - 1), (haar, auto)
        else:
            assert auto == pytest.approx(1.0, rel=0.15), (level, haar, auto)
        if level <= 3:
            assert haar > 1.4, "the Haar band no longer reads this anatomy: the test lost its point"


def test_real_scanner_noise_keeps_the_haar_band():
    """A T2 TSE head at its own noise: reconstruction rolled the noise off at the finest scale (its air
    reads 0.84), where fourth differences would read half the level."""
    scan = _read("anat_more/t2_tse_axial.nii.gz")
    assert estimate_sigma(scan) == estimate_sigma(scan, band="haar")


def test_the_map_takes_the_same_band_as_the_level(flair):
    sigma = 0.03 * brightest_tissue_mean(flair, foreground_mask(flair))
    noisy = add_noise(flair, sigma, "rician", 9)
    inside = foreground_mask(flair)
    assert float(np.median(estimate_sigma_map(noisy)[inside])) == pytest.approx(sigma, rel=0.15)


def test_a_dim_contrast_at_high_noise_keeps_the_haar_band():
    """The resampled spine T2w at 20 % of its CSF: too few blocks are brighter than 4 sigma for the fourth
    differences' quantile, which read 1.38 times the sigma there before they were left out (-8 dB)."""
    spine = _read("spine/spine_unf01_T2w_resampled.nii.gz")
    sigma = 0.2 * brightest_tissue_mean(spine, foreground_mask(spine))
    for seed in (1200, 20):
        noisy = add_noise(spine, sigma, "rician", seed)
        assert estimate_sigma(noisy) == estimate_sigma(noisy, band="haar")

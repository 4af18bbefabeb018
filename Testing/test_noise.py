"""Noise simulation per EVALUATION.md and blind sigma estimation on real MRI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.filters import threshold_multiotsu

from MRIDenoiseLib.errors import InputError
from MRIDenoiseLib.noise import add_noise, coil_profile, estimate_sigma, sigma_for_level

LEVELS = [1, 3, 5, 10, 15, 20, 25, 30]


def test_sigma_matches_the_evaluation_definition_with_a_known_mask(colin_slab, colin_mask):
    """sigma = p % of the brightest of three Otsu classes inside the brain mask (white matter)."""
    clean = colin_slab.array.astype(np.float64)
    inside = clean[colin_mask]
    upper = threshold_multiotsu(inside, classes=3)[-1]  # an independent Otsu implementation
    reference = inside[inside > upper].mean()
    for level in (1, 10, 30):
        assert sigma_for_level(clean, level, colin_mask) == pytest.approx(level / 100 * reference, rel=0.01)


def test_rician_noise_has_the_expected_statistics():
    clean = np.zeros((40, 40, 40), np.float32)
    clean[20:] = 100.0
    noisy = add_noise(clean, 10.0, "rician", 1)
    background = noisy[:20]
    assert background.mean() == pytest.approx(10.0 * np.sqrt(np.pi / 2), rel=0.01)  # Rayleigh mean
    assert noisy[20:].mean() == pytest.approx(np.sqrt(100.0**2 + 10.0**2), rel=0.01)
    assert (noisy >= 0).all()
    gaussian = add_noise(clean, 10.0, "gaussian", 1)
    assert (gaussian - clean).std() == pytest.approx(10.0, rel=0.01)


def test_noise_is_seeded_and_leaves_the_input_alone(colin_crop):
    before = colin_crop.copy()
    first, second = add_noise(colin_crop, 5.0, "rician", 7), add_noise(colin_crop, 5.0, "rician", 7)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, add_noise(colin_crop, 5.0, "rician", 8))
    np.testing.assert_array_equal(colin_crop, before)


def test_rejects_bad_levels_and_kinds(colin_crop):
    with pytest.raises(ValueError, match="percent"):
        sigma_for_level(colin_crop, 0)
    with pytest.raises(ValueError, match="unknown noise kind"):
        add_noise(colin_crop, 1.0, "poisson")


# Colin27 is the average of 27 scans: its own noise, measured once with this estimator at
# 0.58 % of white matter, adds in quadrature to what we simulate. The truth at level p is
# therefore sqrt(p^2 + 0.58^2) %, which matters only at 1 %.
COLIN_OWN_NOISE_PERCENT = 0.58


@pytest.mark.parametrize("zeroed_background", [False, True], ids=["rayleigh-background", "zeroed-background"])
def test_blind_sigma_is_within_15_percent_from_1_to_30_percent(colin_slab, colin_mask, zeroed_background):
    clean = colin_slab.array.astype(np.float32)
    for level in LEVELS:
        sigma = sigma_for_level(clean, level, colin_mask)
        noisy = add_noise(clean, sigma, "rician", level)
        if zeroed_background:
            noisy[~colin_mask] = 0
        truth = sigma * np.hypot(level, COLIN_OWN_NOISE_PERCENT) / level
        assert estimate_sigma(noisy) == pytest.approx(truth, rel=0.15), f"level {level} %"


def test_the_haar_band_is_the_signed_sum_of_each_2x2x2_cube_and_the_approximation_its_mean():
    from MRIDenoiseLib.noise import _haar_level1

    values = np.random.default_rng(2).standard_normal((7, 6, 9)).astype(np.float32)
    cubes = values[:6, :6, :8].reshape(3, 2, 3, 2, 4, 2).astype(np.float64)
    sign = np.array([1.0, -1.0])
    signed = cubes * sign[None, :, None, None, None, None] * sign[None, None, None, :, None, None] * sign
    detail, approximation = _haar_level1(values)
    np.testing.assert_allclose(detail, signed.sum(axis=(1, 3, 5)) / np.sqrt(8.0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(approximation, cubes.mean(axis=(1, 3, 5)), rtol=1e-5, atol=1e-6)


def test_estimator_ignores_intensity_scale(colin_crop):
    noisy = add_noise(colin_crop, 8.0, "rician", 3)
    assert estimate_sigma(noisy * 37.0) == pytest.approx(37.0 * estimate_sigma(noisy), rel=1e-4)


def test_signal_from_rician_mean_inverts_the_mean_of_simulated_magnitudes():
    from MRIDenoiseLib.noise import signal_from_rician_mean

    rng = np.random.default_rng(3)
    sigma = 2.0
    signals = np.array([0.0, 1.0, 2.0, 5.0, 20.0, 80.0])
    noise = sigma * (rng.standard_normal((signals.size, 400_000)) + 1j * rng.standard_normal((signals.size, 400_000)))
    means = np.abs(signals[:, None] + noise).mean(axis=1)
    np.testing.assert_allclose(signal_from_rician_mean(means, sigma), signals, atol=0.15)
    assert signal_from_rician_mean(np.array([0.5 * sigma]), sigma)[0] == 0.0  # below the floor: no signal


def test_several_coils_give_non_central_chi_noise():
    """Sum-of-squares of L coils: in the air the magnitude is chi with 2L degrees of freedom."""
    from scipy.special import gammaln

    air = np.zeros((20, 40, 40), np.float32)
    for coils in (1, 4, 8):
        noisy = add_noise(air, 2.0, "rician", coils, coils=coils)
        chi_mean = 2.0 * np.sqrt(2) * np.exp(gammaln(coils + 0.5) - gammaln(coils))
        assert noisy.mean() == pytest.approx(chi_mean, rel=0.01)
    bright = add_noise(np.full((20, 40, 40), 100.0, np.float32), 2.0, "rician", 5, coils=8)
    assert bright.mean() == pytest.approx(np.sqrt(100.0**2 + 2 * 8 * 2.0**2), rel=0.01)  # signal + noise power
    with pytest.raises(InputError, match="coils"):
        add_noise(air, 2.0, "gaussian", 0, coils=4)


def test_zero_filled_noise_is_correlated_in_plane_with_its_level_kept():
    field = add_noise(np.zeros((8, 96, 96), np.float32), 3.0, "gaussian", 2, zero_filled=True)
    assert field.std() == pytest.approx(3.0, rel=0.02)
    for axis in (1, 2):  # in-plane neighbours: sinc(1/2) = 0.64 for a twofold zero-filled reconstruction
        first, second = np.moveaxis(field, axis, 0)[1:], np.moveaxis(field, axis, 0)[:-1]
        assert np.corrcoef(first.ravel(), second.ravel())[0, 1] == pytest.approx(2 / np.pi, abs=0.05)
    across = np.corrcoef(field[1:].ravel(), field[:-1].ravel())[0, 1]
    assert abs(across) < 0.05  # slices stay independent


def test_a_coil_profile_spans_its_spread_smoothly():
    profile = coil_profile((16, 64, 64), 3, spread=0.5)
    assert profile.min() == pytest.approx(0.5, abs=1e-4) and profile.max() == pytest.approx(1.5, abs=1e-4)
    assert np.abs(np.diff(profile, axis=2)).max() < 0.1  # smooth: no pixel-to-pixel jumps


def test_a_dim_contrast_at_high_noise_is_estimated_from_its_dimmer_tissue():
    """Cervical-spine T2w: at 20-30 % of its CSF no block is brighter than 4 sigma, where Rician noise
    is Gaussian; the estimate then uses dimmer blocks with a Rician correction (it read 0.70 of sigma)."""
    import SimpleITK as sitk

    from MRIDenoiseLib.masks import brightest_tissue_mean, foreground_mask

    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "spine" / "spine_unf01_T2w_resampled.nii.gz"
    if not path.exists():
        pytest.skip("needs ../shared/data")
    spine = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)
    tissue = brightest_tissue_mean(spine, foreground_mask(spine))
    for level in (20, 30):
        sigma = level / 100 * tissue
        assert estimate_sigma(add_noise(spine, sigma, "rician", level)) == pytest.approx(sigma, rel=0.15)

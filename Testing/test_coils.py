"""Sum-of-squares magnitudes of several receive coils (non-central chi noise): ``--coils N``."""

from __future__ import annotations

import numpy as np
import pytest

from MRIDenoiseLib.errors import InputError
from MRIDenoiseLib.io import read_volume, write_volume
from MRIDenoiseLib.metrics import evaluate
from MRIDenoiseLib.noise import add_noise, rician_from_chi, sigma_for_level
from MRIDenoiseLib.pipeline import denoise_volume
from MRIDenoiseLib.volume import DiffusionInfo, Volume


def test_the_chi_floor_is_moved_to_the_rician_one():
    """E[M^2] of an 8-coil sum of squares is A^2 + 16 sigma^2; moved, it is the Rician's A^2 + 2 sigma^2."""
    sigma, coils = 1.0, 8
    for signal in (0.0, 8.0, 20.0):
        magnitudes = add_noise(np.full(400_000, signal, np.float32), sigma, "rician", 4, coils=coils)
        assert np.mean(magnitudes.astype(np.float64) ** 2) == pytest.approx(signal**2 + 2 * coils, rel=0.01)
        moved = rician_from_chi(magnitudes, sigma, coils).astype(np.float64)
        if signal > 0:  # with no signal some values fall below zero and are clipped, so the moment is above 2
            assert np.mean(moved**2) == pytest.approx(signal**2 + 2, rel=0.01)
        rician = add_noise(np.full(400_000, signal, np.float32), sigma, "rician", 5)
        assert abs(np.mean(moved) - np.mean(rician)) < (0.08 if signal == 0 else 0.02) * max(signal, 1.0)
    data = np.linspace(0, 10, 50, dtype=np.float32)
    np.testing.assert_array_equal(rician_from_chi(data, 1.0, 1), data)  # one coil: Rician already
    with pytest.raises(InputError, match="at least 1"):
        rician_from_chi(data, 1.0, 0)


def test_told_the_coil_count_the_default_model_removes_chi_noise_far_better(colin_crop):
    sigma = sigma_for_level(colin_crop, 10)
    noisy = Volume(add_noise(colin_crop, sigma, "rician", 6, coils=8))
    mask = colin_crop > 0.1 * colin_crop.max()
    untold = evaluate(colin_crop, denoise_volume(noisy, device="cpu").volume.array, mask)["psnr_foreground"]
    told = denoise_volume(noisy, device="cpu", coils=8)
    assert evaluate(colin_crop, told.volume.array, mask)["psnr_foreground"] > untold + 4.0
    np.testing.assert_allclose(told.removed_noise.array, noisy.array - told.volume.array, atol=1e-4)  # input kept


def test_coils_are_refused_where_they_mean_nothing(colin_crop, tmp_path):
    from MRIDenoiseLib.adaptation import ScanAdapter
    from MRIDenoiseLib.cli import main

    series = Volume(
        np.stack([colin_crop[:8, :32, :32]] * 7, axis=-1),
        diffusion=DiffusionInfo(np.array([0.0] + [1000.0] * 6), np.vstack([np.zeros(3), np.eye(3), -np.eye(3)])),
    )
    with pytest.raises(InputError, match="--coils works with methods for 3-D volumes"):
        denoise_volume(series, "mppca", coils=4)
    with pytest.raises(InputError, match="--coils or --adapt, not both"):
        denoise_volume(Volume(colin_crop), coils=4, adapter=ScanAdapter("auto"))
    source, output = tmp_path / "scan.nii.gz", tmp_path / "out.nii.gz"
    write_volume(Volume(add_noise(colin_crop, sigma_for_level(colin_crop, 5), "rician", 2, coils=4)), source)
    assert main(["denoise", str(source), str(output), "--coils", "4", "--model", "gaussian", "--progress", "none"]) == 0
    assert read_volume(output).array.shape == colin_crop.shape
    assert main(["denoise", str(source), str(tmp_path / "x.nii.gz"), "--coils", "0", "--progress", "none"]) == 1
    assert not (tmp_path / "x.nii.gz").exists()

"""Zero-filled reconstructions (``--zero-filled FACTOR``): the acquired band denoised on the acquired grid."""

from __future__ import annotations

import numpy as np
import pytest

from MRIDenoiseLib.bands import acquired_band, in_plane_axes, merge_band, resample_map, split_band
from MRIDenoiseLib.errors import InputError
from MRIDenoiseLib.io import read_volume, write_volume
from MRIDenoiseLib.metrics import evaluate
from MRIDenoiseLib.noise import add_noise, sigma_for_level
from MRIDenoiseLib.pipeline import denoise_volume
from MRIDenoiseLib.volume import DiffusionInfo, Volume


def _neighbour_correlation(field: np.ndarray, axis: int) -> float:
    ahead = np.moveaxis(field, axis, 0)
    return float(np.corrcoef(ahead[1:].ravel(), ahead[:-1].ravel())[0, 1])


@pytest.mark.parametrize("shape", [(6, 40, 40), (5, 33, 28)])
def test_the_two_parts_give_the_scan_back(shape):
    scan = np.random.default_rng(1).random(shape, dtype=np.float32) * 100
    band = acquired_band(shape, (1, 2), 2.0)
    assert all(kept % 2 == 1 and kept <= size / 2 + 1 for kept, size in zip(band.values(), shape[1:], strict=True))
    acquired, rest = split_band(scan, band)
    assert acquired.shape == (shape[0], band[1], band[2]) and rest.shape == shape
    np.testing.assert_allclose(merge_band(acquired, rest, band), scan, atol=1e-3)


def test_zero_filled_noise_is_white_on_the_acquired_grid_with_its_level():
    noise = add_noise(np.zeros((8, 96, 96), np.float32), 1.0, "gaussian", 3, zero_filled=True)
    assert _neighbour_correlation(noise, 1) > 0.5 and _neighbour_correlation(noise, 2) > 0.5
    acquired, rest = split_band(noise, acquired_band(noise.shape, (1, 2), 2.0))
    assert abs(_neighbour_correlation(acquired, 1)) < 0.05 and abs(_neighbour_correlation(acquired, 2)) < 0.05
    assert acquired.std() == pytest.approx(noise.std(), rel=0.03)
    assert float(np.abs(rest).max()) < 1e-3 * noise.std()  # nothing outside the acquired band
    white = add_noise(np.zeros((8, 96, 96), np.float32), 1.0, "gaussian", 3)
    kept, _ = split_band(white, acquired_band(white.shape, (1, 2), 2.0))
    assert kept.std() == pytest.approx(0.5, rel=0.05)  # a quarter of white noise's power is in that band


def test_the_slice_plane_and_bad_factors():
    assert in_plane_axes((1.0, 1.0, 1.0)) == (1, 2)
    assert in_plane_axes((5.0, 0.5, 0.5)) == (1, 2)
    assert in_plane_axes((0.5, 0.5, 3.0)) == (0, 1)  # a sagittal stack: slices along the last axis
    assert acquired_band((10, 64, 64), (1, 2), 1.0) == {}
    assert acquired_band((10, 64, 64), (1, 2), 1.26) == {1: 51, 2: 51}  # 203 of 256 acquired scales alike
    for factor in (0.5, float("nan"), float("inf")):
        with pytest.raises(InputError, match="zero-fill factor"):
            acquired_band((10, 64, 64), (1, 2), factor)
    with pytest.raises(InputError, match="fewer than 3"):
        acquired_band((10, 5, 64), (1, 2), 4.0)
    level = np.linspace(1, 2, 4 * 6 * 6, dtype=np.float32).reshape(4, 6, 6)
    resized = resample_map(level, (4, 12, 12))
    assert resized.shape == (4, 12, 12) and level.min() <= resized.min() and resized.max() <= level.max()


def test_told_the_zero_fill_the_default_removes_far_more_noise(colin_crop):
    """Colin27 with zero-filled Rician noise at 10 %: blind, the level reads low and little is removed."""
    sigma = sigma_for_level(colin_crop, 10)
    noisy = Volume(add_noise(colin_crop, sigma, "rician", 6, zero_filled=True))
    before = noisy.array.copy()
    mask = colin_crop > 0.1 * colin_crop.max()
    untold = denoise_volume(noisy, device="cpu")
    told = denoise_volume(noisy, device="cpu", zero_filled=2.0)
    assert untold.sigma[0] < 0.6 * sigma and told.sigma[0] == pytest.approx(sigma, rel=0.15)
    gain = (
        evaluate(colin_crop, told.volume.array, mask)["psnr_foreground"]
        - evaluate(colin_crop, untold.volume.array, mask)["psnr_foreground"]
    )
    assert gain > 3.0
    assert told.summary()["acquired_shape"] == [24, 49, 49] and "acquired_shape" not in untold.summary()
    assert untold.correlated_noise and untold.summary()["correlated_noise"] is True  # the hint to give the factor
    assert not told.correlated_noise  # its level read right, 10 %: above the range the gate measures in
    white = denoise_volume(Volume(add_noise(colin_crop, 0.3 * sigma, "rician", 6)), device="cpu")
    assert white.noise_correlation is not None and not white.correlated_noise
    np.testing.assert_array_equal(noisy.array, before)  # the input is not modified
    mapped = denoise_volume(noisy, device="cpu", zero_filled=2.0, varying_noise=True)
    assert mapped.sigma_map is not None and mapped.sigma_map.array.shape == colin_crop.shape
    assert float(np.median(mapped.sigma_map.array[mask])) == pytest.approx(sigma, rel=0.15)


def test_zero_fill_is_refused_where_it_means_nothing(colin_crop, tmp_path):
    from MRIDenoiseLib.adaptation import ScanAdapter
    from MRIDenoiseLib.cli import main

    series = Volume(
        np.stack([colin_crop[:8, :32, :32]] * 7, axis=-1),
        diffusion=DiffusionInfo(np.array([0.0] + [1000.0] * 6), np.vstack([np.zeros(3), np.eye(3), -np.eye(3)])),
    )
    with pytest.raises(InputError, match="--zero-filled works with methods for 3-D volumes"):
        denoise_volume(series, "mppca", zero_filled=2.0)
    with pytest.raises(InputError, match="--zero-filled or --adapt, not both"):
        denoise_volume(Volume(colin_crop), zero_filled=2.0, adapter=ScanAdapter("auto"))
    source, output = tmp_path / "scan.nii.gz", tmp_path / "out.nii.gz"
    sigma = sigma_for_level(colin_crop, 10)
    write_volume(Volume(add_noise(colin_crop, sigma, "rician", 2, zero_filled=True)), source)
    arguments = ["denoise", str(source), str(output), "--model", "gaussian", "--progress", "none"]
    assert main([*arguments, "--zero-filled", "2"]) == 0
    assert read_volume(output).array.shape == colin_crop.shape
    assert main(["denoise", str(source), str(tmp_path / "x.nii.gz"), "--zero-filled", "0.5", "--progress", "none"]) == 1
    assert not (tmp_path / "x.nii.gz").exists()


def test_told_nothing_the_command_line_hints_at_the_zero_fill(colin_crop, tmp_path, capsys):
    from MRIDenoiseLib.cli import main

    source = tmp_path / "scan.nii.gz"
    write_volume(Volume(add_noise(colin_crop, sigma_for_level(colin_crop, 10), "rician", 2, zero_filled=True)), source)
    assert main(["denoise", str(source), str(tmp_path / "out.nii.gz"), "--device", "cpu", "--progress", "none"]) == 0
    assert "give --zero-filled FACTOR" in capsys.readouterr().out
    arguments = ["denoise", str(source), str(tmp_path / "told.nii.gz"), "--zero-filled", "2", "--progress", "none"]
    assert main([*arguments, "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "acquired band denoised on a 24 x 49 x 49 grid" in printed and "give --zero-filled" not in printed

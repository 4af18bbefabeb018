"""Noise that varies across the image: the blind sigma map, the network fed with it, the CLI and its refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from MRIDenoiseLib.errors import InputError
from MRIDenoiseLib.io import read_volume, write_volume
from MRIDenoiseLib.masks import foreground_mask
from MRIDenoiseLib.noise import add_noise, estimate_sigma_map, sigma_for_level
from MRIDenoiseLib.pipeline import denoise_volume
from MRIDenoiseLib.volume import Volume

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "Resources" / "SampleData" / "colin27_t1_1mm_slab.nii.gz"


def test_each_block_reads_the_low_quantile_of_the_finite_deviations_around_it():
    from MRIDenoiseLib.noise import _local_low_quantile

    rng = np.random.default_rng(4)
    deviation = rng.gamma(3.0, 1.0, (6, 7, 5))
    deviation[rng.random(deviation.shape) < 0.6] = np.nan  # air and dark tissue leave gaps
    local = _local_low_quantile(deviation)
    plain = _local_low_quantile(np.ones((3, 3, 3)))[1, 1, 1]  # a flat neighbourhood: 1 / the chi quantile
    padded = np.pad(deviation, 2, mode="edge")  # the grid's faces repeated beyond it
    for z, y, x in np.ndindex(deviation.shape):
        window = padded[z : z + 5, y : y + 5, x : x + 5]
        finite = window[np.isfinite(window)]
        if finite.size < 8:
            assert np.isnan(local[z, y, x])
        else:
            assert local[z, y, x] == pytest.approx(np.quantile(finite, 0.25) * plain, rel=1e-12)


@pytest.fixture(scope="module")
def ramp_case() -> tuple[Volume, np.ndarray, np.ndarray]:
    """The bundled T1 slab with Rician noise rising from 4 % to 12 % across it (like a coil's fall-off)."""
    sample = read_volume(SAMPLE)
    clean = sample.array.astype(np.float32)[16:48]
    truth = sigma_for_level(clean, 8) * np.linspace(0.5, 1.5, clean.shape[2], dtype=np.float32) * np.ones_like(clean)
    return Volume(add_noise(clean, truth, "rician", 3), sample.geometry), clean, truth


@pytest.mark.parametrize("level", [8, 20])
def test_the_blind_sigma_map_is_within_15_percent_of_a_varying_truth(ramp_case, level):
    """At 20 % the noisiest part reaches 30 % of white matter: dim blocks are needed, Rician-corrected."""
    _, clean, ramp = ramp_case
    truth = ramp * (level / 8)
    noisy = Volume(add_noise(clean, truth, "rician", 3), read_volume(SAMPLE).geometry)
    estimate = estimate_sigma_map(noisy.array)
    inside = foreground_mask(clean)
    relative = np.abs(estimate[inside] / truth[inside] - 1)
    assert np.quantile(relative, 0.9) < 0.15
    for band in np.array_split(np.arange(clean.shape[2]), 6):  # the ramp is followed, not averaged away
        ratio = np.median(estimate[..., band][inside[..., band]] / truth[..., band][inside[..., band]])
        assert 0.85 < ratio < 1.15


def test_a_uniform_noise_gives_a_flat_map():
    sample = read_volume(SAMPLE).array.astype(np.float32)[16:48]
    sigma = sigma_for_level(sample, 5)
    estimate = estimate_sigma_map(add_noise(sample, sigma, "rician", 4))
    inside = foreground_mask(sample)
    assert np.quantile(np.abs(estimate[inside] / sigma - 1), 0.9) < 0.15


def test_the_network_fed_the_map_removes_varying_noise_better_than_with_one_level(ramp_case):
    noisy, clean, _ = ramp_case
    inside = foreground_mask(clean)

    def error(result: np.ndarray) -> float:
        return float(np.sqrt(np.mean((result[inside] - clean[inside]) ** 2)))

    one_level = denoise_volume(noisy, device="cpu")
    mapped = denoise_volume(noisy, device="cpu", varying_noise=True)
    assert error(mapped.volume.array) < 0.85 * error(one_level.volume.array)
    assert mapped.sigma_map is not None and mapped.sigma_map.array.shape == clean.shape
    with pytest.raises(InputError, match="one noise level"):
        denoise_volume(noisy, model="nlm", varying_noise=True)
    with pytest.raises(InputError, match="give no sigma"):
        denoise_volume(noisy, sigma=5.0, varying_noise=True)


def test_the_cli_writes_the_map_it_used_and_refuses_a_map_it_cannot_give(ramp_case, tmp_path):
    noisy, clean, _ = ramp_case
    source = tmp_path / "ramp.nii.gz"
    write_volume(noisy, source)
    out, sigma_map = tmp_path / "out.nii.gz", tmp_path / "sigma.nii.gz"
    done = subprocess.run(
        [sys.executable, "-m", "MRIDenoiseLib", "denoise", str(source), str(out), "--sigma", "map",
         "--sigma-map", str(sigma_map), "--model", "mridenoise-rician-2.5d", "--progress", "none"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = read_volume(sigma_map)
    assert written.array.shape == clean.shape
    np.testing.assert_allclose(written.geometry.spacing, noisy.geometry.spacing, atol=1e-6)
    refused = subprocess.run(
        [sys.executable, "-m", "MRIDenoiseLib", "denoise", str(source), str(tmp_path / "o.nii.gz"),
         "--sigma-map", str(tmp_path / "s.nii.gz"), "--model", "nlm", "--progress", "none"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert refused.returncode == 1 and "gives no noise map per voxel" in refused.stderr
    assert not (tmp_path / "o.nii.gz").exists() and not (tmp_path / "s.nii.gz").exists()


def test_the_rician_spread_falls_from_one_to_its_rayleigh_value_without_signal():
    from MRIDenoiseLib.noise import _rician_std_ratio

    rng = np.random.default_rng(1)
    for snr in (0.0, 1.0, 3.0):
        draws = np.hypot(snr + rng.standard_normal(200_000), rng.standard_normal(200_000))
        assert _rician_std_ratio(np.array(snr)) == pytest.approx(draws.std(), rel=0.01)
    assert _rician_std_ratio(np.array(50.0)) == pytest.approx(1.0, abs=1e-3)

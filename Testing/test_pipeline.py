"""The top-level denoise call with every catalogue method, on real MRI."""

from __future__ import annotations

import os

import numpy as np
import pytest

from MRIDenoiseLib import (
    Cancelled,
    CancelToken,
    denoise_file,
    denoise_volume,
    read_volume,
    write_volume,
)
from MRIDenoiseLib.metrics import evaluate
from MRIDenoiseLib.models.catalog import load_catalog
from MRIDenoiseLib.noise import add_noise, sigma_for_level
from MRIDenoiseLib.volume import DiffusionInfo, Volume


def one_entry_per_network() -> list[str]:
    """Every scalar method once per computation at :func:`noisy_case`'s 10 % noise: each classical filter
    and each set of weights (the default's id for its own). A network's entries under a second stage compute
    what the network alone does at 10 % (the Wiener step runs up to 8 %), so one of them stands for all."""
    catalog = load_catalog()
    chosen: dict[str, str] = {}
    for entry in catalog:
        if entry.input == "scalar" and not entry.user:
            key = entry.sha256 or entry.id
            if key not in chosen or entry.id == catalog.default_id:
                chosen[key] = entry.id
    return list(chosen.values())


SCALAR_METHODS = one_entry_per_network()


@pytest.fixture(scope="module")
def noisy_case(colin_slab, colin_mask):
    """A 32-slice real slab with 10 % Rician noise and its brain mask."""
    z = colin_slab.array.shape[0] // 2
    clean = colin_slab.array[z - 16 : z + 16].astype(np.float32)
    mask = colin_mask[z - 16 : z + 16]
    noisy = add_noise(clean, sigma_for_level(clean, 10, mask), "rician", 11)
    return clean, noisy, mask, colin_slab.geometry


@pytest.mark.slow
@pytest.mark.parametrize("method", SCALAR_METHODS)
def test_every_method_improves_psnr_and_ssim_blind(noisy_case, method):
    clean, noisy, mask, geometry = noisy_case
    clean, noisy, mask = clean[4:28], noisy[4:28], mask[4:28]  # the central 24 slices: a quarter less work each
    volume = Volume(noisy.copy(), geometry)
    result = denoise_volume(volume, model=method)
    np.testing.assert_array_equal(volume.array, noisy)  # the input is never modified
    assert result.volume.array.shape == noisy.shape and result.volume.array.dtype == np.float32
    before, after = evaluate(clean, noisy, mask), evaluate(clean, result.volume.array, mask)
    assert after["psnr_foreground"] > before["psnr_foreground"] + 2.0, method
    assert after["ssim_foreground"] > before["ssim_foreground"], method
    assert result.sigma_estimated and result.model_id == method
    np.testing.assert_allclose(result.removed_noise.array, noisy - result.volume.array, atol=1e-4)


def test_default_model_is_used_without_a_model_id(noisy_case):
    _, noisy, _, geometry = noisy_case
    result = denoise_volume(Volume(noisy[:12], geometry))
    assert result.model_id == load_catalog().default_id


def test_series_are_denoised_volume_by_volume_keeping_the_table(noisy_case, tmp_path):
    _, noisy, _, geometry = noisy_case
    series = np.stack([noisy[:10], noisy[10:20] * 0.7, noisy[20:30] * 0.5], axis=-1)
    table = DiffusionInfo(np.array([0.0, 1000.0, 1000.0]), np.array([[0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]]))
    write_volume(Volume(series, geometry, table), tmp_path / "dwi.nii.gz")
    result = denoise_file(tmp_path / "dwi.nii.gz", tmp_path / "out.nii.gz", model="gaussian")
    written = read_volume(tmp_path / "out.nii.gz")
    assert written.array.shape == series.shape and len(result.sigma) == 3
    np.testing.assert_allclose(written.diffusion.gradients, table.gradients, atol=1e-6)
    np.testing.assert_allclose(written.diffusion.bvalues, table.bvalues)
    assert result.sigma[2] < result.sigma[0]  # estimated per volume


def test_cancel_leaves_no_output(noisy_case, tmp_path):
    _, noisy, _, geometry = noisy_case
    write_volume(Volume(noisy, geometry), tmp_path / "in.nii.gz")
    cancel = CancelToken()

    def progress(fraction, message):
        if fraction > 0.3:
            cancel.cancel()

    with pytest.raises(Cancelled):
        denoise_file(tmp_path / "in.nii.gz", tmp_path / "out.nii.gz", model="adf", progress=progress, cancel=cancel)
    assert os.listdir(tmp_path) == ["in.nii.gz"]


def test_given_sigma_is_used_as_is(noisy_case):
    _, noisy, _, geometry = noisy_case
    result = denoise_volume(Volume(noisy[:10], geometry), model="gaussian", sigma=4.5)
    assert result.sigma == [4.5] and not result.sigma_estimated

"""The low-noise second stage: empirical Wiener filtering in DCT blocks guided by the network's output."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import REPO
from scipy import fft

from MRIDenoiseLib.denoisers import NetworkDenoiser, WienerRefined
from MRIDenoiseLib.denoisers.refinement import (
    BRIGHT,
    FADE_FROM,
    HIGHEST_LEVEL,
    MOST_CORRELATION,
    SHARE_LEVEL,
    block_origins,
    fade,
    measured_share,
    removed_noise_correlation,
    wiener_refine,
)
from MRIDenoiseLib.io import read_volume
from MRIDenoiseLib.masks import brightest_tissue_mean, foreground_mask
from MRIDenoiseLib.metrics import evaluate
from MRIDenoiseLib.noise import add_noise, estimate_sigma
from MRIDenoiseLib.pipeline import load_denoiser

REFINED_MODEL = "mridenoise-rician-2.5d-v6-wiener"
SHARED_MODEL = "mridenoise-rician-2.5d-v6-wiener-share"
INTERLEAVED_MODEL = "mridenoise-rician-2.5d-v17-wiener-share-interleaved"
DEFAULT_MODEL = "mridenoise-rician-2.5d-v17-wiener-share-interleaved-faded"


def slow_wiener(
    noisy: np.ndarray,
    pilot: np.ndarray,
    sigma: float,
    block: int,
    origins: list[tuple[int, int, int]],
    lit_from: float | None = None,
) -> np.ndarray:
    """The same estimate block by block with scipy's DCT: every block of every lattice in ``origins``, or
    with ``lit_from`` only those where the pilot somewhere exceeds that many sigma (the pilot elsewhere)."""
    y = np.pad(noisy.astype(np.float64), block, mode="symmetric")
    p = np.pad(pilot.astype(np.float64), block, mode="symmetric")
    total, weights = np.zeros_like(y), np.zeros_like(y)
    for origin in origins:
        for corner in itertools.product(
            *(range(o, n - block + 1, block) for o, n in zip(origin, y.shape, strict=True))
        ):
            window = tuple(slice(c, c + block) for c in corner)
            if lit_from is not None and p[window].max() <= lit_from * sigma:
                continue
            gain = fft.dctn(p[window], norm="ortho") ** 2
            gain = gain / (gain + sigma**2)
            estimate = fft.idctn(gain * fft.dctn(y[window], norm="ortho"), norm="ortho")
            weight = 1.0 / (sigma**2 * np.sum(gain**2))
            total[window] += weight * estimate
            weights[window] += weight
    inner = tuple(slice(block, -block) for _ in range(3))
    return np.where(weights[inner] > 0, total[inner] / np.maximum(weights[inner], 1e-300), p[inner])


def test_the_fast_estimate_is_the_block_by_block_one():
    rng = np.random.default_rng(3)
    pilot = 5.0 + rng.random((11, 13, 9)).astype(np.float32)  # bright everywhere: no block is background
    noisy = pilot + rng.normal(0, 0.3, pilot.shape).astype(np.float32)
    expected = slow_wiener(noisy, pilot, 0.3, block=4, origins=list(itertools.product((0, 2), repeat=3)))
    np.testing.assert_allclose(wiener_refine(noisy, pilot, 0.3, block=4, step=2), expected, rtol=1e-4, atol=1e-4)


def test_interleaved_blocks_start_on_two_lattices_a_quarter_as_many():
    two_lattices = [*itertools.product((0, 4), repeat=3), *itertools.product((2, 6), repeat=3)]
    assert block_origins(8, 2, interleaved=True) == two_lattices
    assert len(block_origins(8, 2)) == 4 * len(two_lattices) == 64
    with pytest.raises(ValueError, match="must divide"):
        block_origins(6, 2, interleaved=True)  # 4 does not divide 6
    rng = np.random.default_rng(31)
    pilot = 5.0 + rng.random((17, 10, 12)).astype(np.float32)
    noisy = pilot + rng.normal(0, 0.3, pilot.shape).astype(np.float32)
    expected = slow_wiener(noisy, pilot, 0.3, block=8, origins=two_lattices)
    np.testing.assert_allclose(wiener_refine(noisy, pilot, 0.3, interleaved=True), expected, rtol=1e-4, atol=1e-4)


def object_in_air(shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A pilot that is a bright ball (8 sigma and more at sigma 0.5) and two isolated voxels of two sigma
    in air below one sigma, and a noisy scan of it."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float32)
    radius = np.sqrt(sum((axis - 0.45 * n) ** 2 for axis, n in zip(grid, shape, strict=True)))
    pilot = np.where(radius < 0.3 * min(shape), 4.0 + rng.random(shape), 0.4 * rng.random(shape)).astype(np.float32)
    pilot[1, -2, 3] = pilot[-3, 2, -1] = 1.0  # stray voxels far from the ball, two sigma
    noisy = np.abs(pilot + rng.normal(0, 0.5, shape)).astype(np.float32)
    return noisy, pilot


def test_only_blocks_the_pilot_lights_are_transformed_and_the_estimate_is_theirs():
    noisy, pilot = object_in_air((40, 29, 35), 8)
    origins = block_origins(8, 2, interleaved=True)
    for lit_from in (0.5, 1.0, 3.0):
        expected = slow_wiener(noisy, pilot, 0.5, block=8, origins=origins, lit_from=lit_from)
        refined = wiener_refine(noisy, pilot, 0.5, interleaved=True, lit_from=lit_from)
        np.testing.assert_allclose(refined, expected, rtol=1e-4, atol=1e-4)
    assert np.array_equal(refined[35:], pilot[35:])  # a block beyond the ball, the stray voxels not lit at 3


@pytest.mark.parametrize("varying", [False, True], ids=["one level", "a map"])
def test_where_the_pilot_exceeds_lit_from_the_estimate_does_not_depend_on_it(varying):
    noisy, pilot = object_in_air((48, 40, 44), 9)
    sigma = np.broadcast_to(np.linspace(0.3, 0.7, pilot.shape[2], dtype=np.float32), pilot.shape) if varying else 0.5
    every_lit_block = wiener_refine(noisy, pilot, sigma, interleaved=True)
    for lit_from in (FADE_FROM, BRIGHT):
        above = pilot > lit_from * np.asarray(sigma)
        refined = wiener_refine(noisy, pilot, sigma, interleaved=True, lit_from=lit_from)
        np.testing.assert_allclose(refined[above], every_lit_block[above], rtol=1e-5, atol=1e-6)
        if not varying or lit_from == BRIGHT:  # a map's lowest level (0.3) lights every block of air at one sigma
            assert not np.allclose(refined[~above], every_lit_block[~above], atol=1e-3)  # fewer blocks there
    faded = fade(pilot, sigma)
    np.testing.assert_allclose(
        faded * wiener_refine(noisy, pilot, sigma, interleaved=True, lit_from=FADE_FROM),
        faded * every_lit_block,
        rtol=1e-5,
        atol=1e-5,
    )


def test_a_map_of_one_level_gives_what_that_level_gives():
    rng = np.random.default_rng(4)
    pilot = 2.0 + rng.random((12, 12, 12)).astype(np.float32)
    noisy = pilot + rng.normal(0, 0.2, pilot.shape).astype(np.float32)
    np.testing.assert_allclose(
        wiener_refine(noisy, pilot, np.full(pilot.shape, 0.2, np.float32)), wiener_refine(noisy, pilot, 0.2), rtol=1e-5
    )


def test_an_exact_pilot_recovers_most_of_a_real_scan(colin_crop):
    sigma = 0.05 * brightest_tissue_mean(colin_crop)
    noisy = add_noise(colin_crop, sigma, "gaussian", 5)
    refined = wiener_refine(noisy, colin_crop, sigma)
    mask = foreground_mask(colin_crop)
    assert np.mean((refined - colin_crop)[mask] ** 2) < 0.2 * np.mean((noisy - colin_crop)[mask] ** 2)


def test_background_the_pilot_calls_empty_stays_empty():
    rng = np.random.default_rng(6)
    pilot = np.zeros((24, 24, 24), np.float32)
    pilot[:, :, 12:] = 10.0
    noisy = np.abs(pilot + rng.normal(0, 1.0, pilot.shape)).astype(np.float32)
    refined = wiener_refine(noisy, pilot, 1.0)
    assert np.array_equal(refined[:, :, :2], pilot[:, :, :2])  # blocks there see only air
    assert abs(float(refined[:, :, 16:].mean()) - 10.0) < 0.1


SPINE = REPO.parent / "shared" / "data" / "spine" / "spine_unf01_T2w_resampled.nii.gz"


@pytest.fixture(scope="module")
def spine() -> np.ndarray:
    """A real cervical spine T2w (spine-generic, 1 mm), a contrast and anatomy the network never saw."""
    return np.asarray(read_volume(SPINE).array, np.float32)


def test_at_low_noise_the_second_stage_beats_the_network_on_a_spine_it_never_saw(spine):
    sigma = 0.01 * brightest_tissue_mean(spine)
    noisy = add_noise(spine, sigma, "rician", 11)
    mask = foreground_mask(spine)
    refined_denoiser, _ = load_denoiser(REFINED_MODEL, "cpu")
    assert isinstance(refined_denoiser, WienerRefined)
    refined = refined_denoiser.denoise(noisy, sigma)
    assert refined_denoiser.refined
    network_only = refined_denoiser.inner.denoise(noisy, sigma)
    gain = evaluate(spine, refined, mask)["psnr_foreground"] - evaluate(spine, network_only, mask)["psnr_foreground"]
    assert gain > 0.3


def test_above_the_threshold_the_output_is_the_networks_exactly(spine):
    sigma = 2 * HIGHEST_LEVEL / 100 * brightest_tissue_mean(spine)
    noisy = add_noise(spine, sigma, "rician", 12)
    refined_denoiser, _ = load_denoiser(REFINED_MODEL, "cpu")
    output = refined_denoiser.denoise(noisy, sigma)
    assert not refined_denoiser.refined
    assert np.array_equal(output, refined_denoiser.inner.denoise(noisy, sigma))


def test_refine_false_gives_the_bare_network():
    denoiser, entry = load_denoiser(REFINED_MODEL, "cpu", refine=False)
    assert isinstance(denoiser, NetworkDenoiser) and entry.refinement == "wiener"


def best_share(clean: np.ndarray, pilot: np.ndarray, stepped: np.ndarray, mask: np.ndarray) -> float:
    """The share of the step's change that minimises the error against the clean volume (least squares)."""
    change, missing = (stepped - pilot)[mask].astype(np.float64), (clean - pilot)[mask].astype(np.float64)
    return float(np.clip(np.sum(change * missing) / np.sum(change**2), 0, 1))


@pytest.mark.parametrize(("scan", "level"), [("colin", 0.03), ("spine", 0.03), ("spine", 0.01)])
def test_the_share_measured_on_the_scan_scores_like_the_one_the_clean_scan_would_choose(scan, level, colin_crop, spine):
    clean = colin_crop if scan == "colin" else spine
    sigma = level * brightest_tissue_mean(clean)
    noisy = add_noise(clean, sigma, "rician", 16)
    mask = foreground_mask(clean)
    network, _ = load_denoiser(SHARED_MODEL, "cpu", refine=False)
    pilot = network.denoise(noisy, sigma)
    stepped = np.clip(wiener_refine(noisy, pilot, sigma), 0, None)
    share = measured_share(network, noisy, pilot, sigma)
    candidates = {
        "network": pilot,
        "whole step": stepped,
        "best share": pilot + np.float32(best_share(clean, pilot, stepped, mask)) * (stepped - pilot),
        "measured share": pilot + np.float32(share) * (stepped - pilot),
    }
    psnr = {name: evaluate(clean, output, mask)["psnr_foreground"] for name, output in candidates.items()}
    assert psnr["measured share"] > psnr["best share"] - 0.05
    assert psnr["measured share"] > max(psnr["network"], psnr["whole step"]) - 0.02


@pytest.mark.parametrize("model", [SHARED_MODEL, INTERLEAVED_MODEL, DEFAULT_MODEL])
def test_the_default_keeps_the_measured_share_of_the_step_and_is_repeatable(model, colin_crop):
    sigma = 0.03 * brightest_tissue_mean(colin_crop)
    noisy = add_noise(colin_crop, sigma, "rician", 17)
    denoiser, entry = load_denoiser(model, "cpu")
    interleaved = model != SHARED_MODEL
    assert isinstance(denoiser, WienerRefined) and denoiser.interleaved == interleaved
    assert denoiser.faded == (model == DEFAULT_MODEL) == entry.default
    output = denoiser.denoise(noisy, sigma)
    assert denoiser.refined and denoiser.share is not None and 0.05 <= denoiser.share < 1
    pilot = denoiser.inner.denoise(noisy, sigma)
    stepped = wiener_refine(noisy, pilot, sigma, interleaved=interleaved)
    portion = np.float32(denoiser.share) * (fade(pilot, sigma) if denoiser.faded else np.float32(1))
    expected = np.clip(pilot + portion * (stepped - pilot), 0, None)
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-4 * sigma)
    assert np.array_equal(denoiser.denoise(noisy, sigma), output)  # seeded: one scan, one answer


def test_above_the_share_level_the_default_is_the_network_exactly(spine):
    sigma = 1.5 * SHARE_LEVEL / 100 * brightest_tissue_mean(spine)
    noisy = add_noise(spine, sigma, "rician", 18)
    denoiser, _ = load_denoiser(DEFAULT_MODEL, "cpu")
    output = denoiser.denoise(noisy, sigma)
    assert not denoiser.refined and denoiser.share is None
    assert np.array_equal(output, denoiser.inner.denoise(noisy, sigma))


def test_the_fade_keeps_the_step_in_the_anatomy_and_leaves_the_air_to_the_network(spine):
    sigma = 0.03 * brightest_tissue_mean(spine)
    noisy = add_noise(spine, sigma, "rician", 21)
    faded, _ = load_denoiser(DEFAULT_MODEL, "cpu")
    assert isinstance(faded, WienerRefined) and faded.faded
    output = faded.denoise(noisy, sigma)
    everywhere = WienerRefined(faded.inner, SHARE_LEVEL, measure_share=True, interleaved=True)
    stepped_everywhere = everywhere.denoise(noisy, sigma)
    assert faded.refined and faded.share == everywhere.share
    pilot = faded.inner.denoise(noisy, sigma)
    bright, dark = pilot > BRIGHT * sigma, pilot < FADE_FROM * sigma
    np.testing.assert_array_equal(output[bright], stepped_everywhere[bright])  # the anatomy: the step as before
    np.testing.assert_array_equal(output[dark], pilot[dark])  # the air: the network's
    air = ~foreground_mask(spine)
    error_in_air = {
        name: float(np.sqrt(np.mean((out - spine)[air] ** 2)))
        for name, out in {"faded": output, "everywhere": stepped_everywhere, "network": pilot}.items()
    }
    assert error_in_air["faded"] < 0.75 * error_in_air["everywhere"]
    assert error_in_air["faded"] < 1.05 * error_in_air["network"]


def test_noise_removed_reads_white_or_correlated(colin_crop):
    sigma = 0.03 * brightest_tissue_mean(colin_crop)
    white = add_noise(colin_crop, sigma, "gaussian", 19)
    zero_filled = add_noise(colin_crop, sigma, "gaussian", 19, zero_filled=True)
    assert abs(removed_noise_correlation(white, colin_crop, sigma)) < 0.03  # an exact pilot removes the noise itself
    assert removed_noise_correlation(zero_filled, colin_crop, sigma) > 0.3


def test_on_zero_filled_noise_the_default_leaves_the_step_out(spine):
    sigma = 0.03 * brightest_tissue_mean(spine)
    noisy = add_noise(spine, sigma, "rician", 20, zero_filled=True)
    denoiser, _ = load_denoiser(DEFAULT_MODEL, "cpu")
    output = denoiser.denoise(noisy)  # blind: zero-filled noise also reads low, as on a real scan
    network_only = denoiser.inner.denoise(noisy)
    assert removed_noise_correlation(noisy, network_only, estimate_sigma(noisy)) > MOST_CORRELATION
    assert not denoiser.refined and np.array_equal(output, network_only)


def test_the_result_says_whether_the_wiener_step_ran(colin_slab):
    from MRIDenoiseLib.pipeline import denoise_volume
    from MRIDenoiseLib.volume import Volume

    clean = np.asarray(colin_slab.array[:12], np.float32)
    level = brightest_tissue_mean(clean)
    low = denoise_volume(Volume(add_noise(clean, 0.01 * level, "rician", 13), colin_slab.geometry))
    high = denoise_volume(Volume(add_noise(clean, 0.15 * level, "rician", 14), colin_slab.geometry))
    other = denoise_volume(Volume(clean, colin_slab.geometry), model="gaussian", sigma=1.0)
    assert low.model_id == DEFAULT_MODEL
    assert low.summary()["wiener_step"] is True and 0.05 <= low.summary()["wiener_share"] <= 1
    assert high.summary()["wiener_step"] is False and "wiener_share" not in high.summary()
    assert "wiener_step" not in other.summary()


def test_a_sum_of_squares_magnitude_told_one_level_gets_the_bare_network(colin_slab):
    from MRIDenoiseLib.pipeline import denoise_volume
    from MRIDenoiseLib.volume import Volume

    clean = np.asarray(colin_slab.array[:12], np.float32)
    noisy = Volume(add_noise(clean, 0.02 * brightest_tissue_mean(clean), "rician", 15, coils=8), colin_slab.geometry)
    one_level = denoise_volume(noisy, coils=8)
    bare, _ = load_denoiser(DEFAULT_MODEL, "cpu", refine=False)
    assert "wiener_step" not in one_level.summary()  # no second stage was built
    np.testing.assert_array_equal(one_level.volume.array, denoise_volume(noisy, coils=8, denoiser=bare).volume.array)
    mapped = denoise_volume(noisy, coils=8, varying_noise=True)  # a map moves the floor voxel by voxel
    assert "wiener_step" in mapped.summary()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_the_estimate_is_the_cpus(colin_crop):
    sigma = 0.01 * brightest_tissue_mean(colin_crop)
    noisy = add_noise(colin_crop, sigma, "rician", 15)
    pilot = np.asarray(colin_crop, np.float32)
    on_cpu = wiener_refine(noisy, pilot, sigma)
    np.testing.assert_allclose(wiener_refine(noisy, pilot, sigma, device="cuda"), on_cpu, rtol=1e-3, atol=1e-3 * sigma)

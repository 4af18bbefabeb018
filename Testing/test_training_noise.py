"""Training on scanner noise that is not i.i.d. Rician: multi-coil and zero-filled draws, validation under
each noise model, and fine-tuning a shipped model."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import write_config

from MRIDenoiseLib.models.catalog import load_catalog
from MRIDenoiseLib.models.store import resolve_weights
from MRIDenoiseLib.models.weights import load_network
from MRIDenoiseLib.training.config import ConfigError, DataConfig, load_config
from MRIDenoiseLib.training.data import NoiseDraw, PairSampler, TrainingVolume, band_limited, random_tone_curve
from MRIDenoiseLib.training.trainer import SupervisedTrainer


def _sampler(**data) -> PairSampler:
    flat = np.ones((12, 48, 48), np.float32)
    volume = TrainingVolume("flat", flat, flat > 0, (0, 1, 2))
    return PairSampler([volume], DataConfig(train=["t"], validation=["v"], patch_size=32, **data), 2, seed=3)


def test_a_zero_filled_draw_correlates_its_two_axes_and_no_other():
    sampler = _sampler()
    patch = np.zeros((9, 64, 64), np.float32)
    for axes in ((1, 2), (0, 2)):
        noisy = sampler._noisy(patch, NoiseDraw(np.full((1, 1, 1), 0.1, np.float32), "gaussian", correlated_axes=axes))
        field = noisy[:-1]  # the level channel is last
        for axis in range(3):
            ahead = np.moveaxis(field, axis, 0)
            correlation = np.corrcoef(ahead[:-1].ravel(), ahead[1:].ravel())[0, 1]
            if axis in axes:
                assert correlation > 0.4, (axes, axis)
            else:
                assert abs(correlation) < 0.05, (axes, axis)


def test_coil_draws_lift_the_background_as_a_sum_of_squares_does_and_tell_the_per_coil_sigma():
    sampler = _sampler(coil_fraction=1.0, rician_fraction=1.0)
    draws = [sampler._noise() for _ in range(200)]
    assert {draw.coils for draw in draws} <= set(range(2, 33)) and len({draw.coils for draw in draws}) > 5
    sigma = np.full((1, 1, 1), 0.1, np.float32)
    background = np.zeros((5, 64, 64), np.float32)
    one_coil = sampler._noisy(background, NoiseDraw(sigma, "rician"))
    eight = sampler._noisy(background, NoiseDraw(sigma, "rician", coils=8))
    # the mean of a chi magnitude with 2N degrees of freedom: 1.25 sigma for one coil, 3.9 for eight
    assert one_coil[:-1].mean() == pytest.approx(1.25 * 0.1, rel=0.05)
    assert eight[:-1].mean() == pytest.approx(3.94 * 0.1, rel=0.05)
    assert np.allclose(eight[-1], 0.1)  # the level channel: the per-coil sigma


def test_band_limiting_keeps_the_slow_waves_of_a_patch_and_removes_the_fast_ones():
    rows = np.arange(64)[None, :, None] * np.ones((3, 64, 64))
    slow = 2.0 + np.cos(2 * np.pi * 4 * rows / 64)  # 0.125 of the highest frequency
    fast = np.cos(2 * np.pi * 28 * rows / 64)  # 0.875 of it
    limited = band_limited((slow + 0.5 * fast).astype(np.float32), kept=0.6)
    inner = (slice(None), slice(8, -8), slice(8, -8))  # away from the mirrored borders
    np.testing.assert_allclose(limited[inner], slow[inner], atol=0.05)


def test_band_limited_examples_train_on_band_limited_targets():
    sampler = _sampler(band_limited_fraction=1.0)
    rng = np.random.default_rng(5)
    sampler.volumes[0].clean[:] = 1.0 + 0.5 * rng.random(sampler.volumes[0].clean.shape)  # a white texture
    _, target = sampler._pair()
    spectrum = np.abs(np.fft.fft2(target[0] - target[0].mean()))
    highest = np.abs(np.fft.fftfreq(32)) > 0.45  # beyond 90 % of the band: cut in every draw
    assert spectrum[highest][:, highest].mean() < 0.1 * spectrum[~highest][:, ~highest].mean()
    assert not _sampler().config.band_limited_fraction  # older configs: off


def test_older_configs_draw_no_coils_and_no_correlation():
    draws = [_sampler()._noise() for _ in range(100)]
    assert all(draw.coils == 1 and not draw.correlated_axes for draw in draws)


def test_validation_reports_each_noise_model(tmp_path, data_root):
    overrides = {"data": {"validation_noise": ["rician", "coils", "zero-filled"], "validation_levels_percent": [5.0]}}
    trainer = SupervisedTrainer(load_config(write_config(tmp_path, data_root, **overrides)), tmp_path / "run")
    assert [case.noise for case in trainer.validation] == ["rician", "coils", "zero-filled"]
    first, second, third = (case.noisy for case in trainer.validation)
    assert not np.allclose(first, second) and not np.allclose(first, third)
    summary = trainer.validate(trainer.network)
    assert {"psnr_foreground@coils", "psnr_foreground@zero-filled", "psnr_foreground@5"} <= set(summary)
    with pytest.raises(ConfigError, match="validation_noise"):
        load_config(write_config(tmp_path, data_root, data={"validation_noise": ["speckle"]}))


def test_fine_tuning_a_shipped_model_starts_from_its_verified_weights(tmp_path, data_root):
    entry = load_catalog().get("mridenoise-rician-2.5d-v6")
    model = {"architecture": entry.architecture, "arguments": dict(entry.arguments)}
    config = load_config(write_config(tmp_path, data_root, model=model, transfer={"model": entry.id}))
    trainer = SupervisedTrainer(config, tmp_path / "run", show_progress=False)
    shipped = load_network(resolve_weights(entry), entry.architecture, entry.arguments)
    for name, tensor in shipped.state_dict().items():
        torch.testing.assert_close(trainer.network.state_dict()[name], tensor, msg=name)
    narrower = write_config(tmp_path, data_root, transfer={"model": entry.id})  # the tiny network
    with pytest.raises(
        ConfigError, match=re.escape("transfer.model 'mridenoise-rician-2.5d-v6' is a residual-unet-2.5d")
    ):
        SupervisedTrainer(load_config(narrower), tmp_path / "run2", show_progress=False)
    with pytest.raises(ConfigError, match="exactly one of"):
        load_config(write_config(tmp_path, data_root, transfer={"model": entry.id, "config": "other.json"}))


def test_a_shipped_model_can_start_a_network_of_its_widths_that_sums_skips_it_concatenated(tmp_path, data_root):
    entry = load_catalog().get("mridenoise-rician-2.5d-v6")
    model = {"architecture": entry.architecture, "arguments": {**entry.arguments, "summed_skips": 1}}
    transfer = {"model": entry.id, "sum_skips": True}
    trainer = SupervisedTrainer(
        load_config(write_config(tmp_path, data_root, model=model, transfer=transfer)),
        tmp_path / "run",
        show_progress=False,
    )
    shipped = load_network(resolve_weights(entry), entry.architecture, entry.arguments).state_dict()
    started = trainer.network.state_dict()
    full_resolution = f"decoders.{len(entry.arguments['channels']) - 2}.0.weight"  # decoders run deepest first
    torch.testing.assert_close(started[full_resolution], shipped[full_resolution][:, 32:])  # what read the skip
    for name, tensor in shipped.items():
        if name != full_resolution:
            torch.testing.assert_close(started[name], tensor, msg=name)
    without_the_option = write_config(tmp_path, data_root, model=model, transfer={"model": entry.id})
    with pytest.raises(ConfigError, match=re.escape("is a residual-unet-2.5d")):
        SupervisedTrainer(load_config(without_the_option), tmp_path / "run2", show_progress=False)
    other_widths = {**model, "arguments": {**model["arguments"], "channels": [24, 48, 64, 96]}}
    with pytest.raises(
        ConfigError, match=re.escape("transfer.sum_skips from 'mridenoise-rician-2.5d-v6': cannot start")
    ):
        SupervisedTrainer(
            load_config(write_config(tmp_path, data_root, model=other_widths, transfer=transfer)),
            tmp_path / "run3",
            show_progress=False,
        )
    with pytest.raises(ConfigError, match="exclude each other"):
        load_config(
            write_config(tmp_path, data_root, transfer={"config": "other.json", "widen": True, "sum_skips": True})
        )


def test_a_random_tone_curve_keeps_air_dark_and_the_brightest_tissue_at_one_and_swaps_tissues_sometimes():
    rng = np.random.default_rng(8)
    tissues = np.array([0.0, 0.3, 0.65, 1.0], np.float32)  # air, CSF, grey and white matter of a T1
    curves = np.stack([random_tone_curve(tissues, rng) for _ in range(200)])
    assert np.all(curves[:, 0] == 0.0)
    np.testing.assert_allclose(curves[:, 1:].max(axis=1), 1.0, rtol=1e-6)
    assert (curves[:, 1] > curves[:, 3]).mean() > 0.3  # CSF brighter than white matter, as in T2
    halfway = random_tone_curve(np.array([0.825], np.float32), np.random.default_rng(3))
    ends = random_tone_curve(np.array([0.65, 1.0], np.float32), np.random.default_rng(3))
    np.testing.assert_allclose(halfway, ends.mean(), rtol=1e-5)  # a boundary voxel mixes its two tissues


def test_remapped_examples_each_take_a_contrast_of_their_own_brightest_tissue_at_most_one():
    sampler = _sampler(contrast_remap_fraction=1.0, gamma_range=(1.0, 1.0), scale_range=(1.0, 1.0))
    sampler.volumes[0].clean[:, :, :24] = 0.3  # CSF beside white matter
    targets = [sampler._pair()[1] for _ in range(40)]
    assert all(target.max() <= 1.0 + 1e-6 for target in targets)
    assert len({round(float(np.median(target)), 3) for target in targets}) > 10  # each example its own contrast
    assert not _sampler().config.contrast_remap_fraction  # older configs: off


def test_low_contrast_examples_keep_csf_and_white_matter_within_the_band():
    flat = dict(gamma_range=(1.0, 1.0), scale_range=(1.0, 1.0))
    sampler = _sampler(contrast_remap_fraction=1.0, low_contrast_fraction=1.0, **flat)
    sampler.volumes[0].clean[:, :, :24] = 0.3  # CSF beside white matter: a 0.7 step in a T1
    targets = [sampler._pair()[1] for _ in range(40)]
    assert all(target.max() - target.min() <= 0.3 + 1e-5 for target in targets)
    wide = _sampler(contrast_remap_fraction=1.0, **flat)
    wide.volumes[0].clean[:, :, :24] = 0.3
    assert max(float(t.max() - t.min()) for t in (wide._pair()[1] for _ in range(40))) > 0.5


def test_a_low_contrast_tone_curve_keeps_the_brain_tissues_within_a_third_of_the_brightest():
    rng = np.random.default_rng(4)
    tissues = np.array([0.0, 0.3, 0.65, 1.0], np.float32)
    narrow = np.stack([random_tone_curve(tissues, rng, low_contrast=True) for _ in range(200)])
    wide = np.stack([random_tone_curve(tissues, rng) for _ in range(200)])
    assert np.all(narrow[:, 0] == 0.0)
    np.testing.assert_allclose(narrow[:, 1:].max(axis=1), 1.0, rtol=1e-6)
    spread = narrow[:, 1:].max(axis=1) - narrow[:, 1:].min(axis=1)
    assert spread.max() <= 0.3 + 1e-6 and spread.min() < 0.1
    assert (wide[:, 1:].max(axis=1) - wide[:, 1:].min(axis=1) <= 0.3).mean() < 0.2  # rare without the option


def _roughness(target: np.ndarray) -> float:
    """The median absolute difference between in-plane neighbours: near 0 where tissues are flat."""
    return float(np.median(np.abs(np.diff(target, axis=-1))))


def test_a_fuzzy_tissue_example_flattens_each_tissue_keeps_its_boundary_and_takes_the_tone_curve():
    flat = dict(gamma_range=(1.0, 1.0), scale_range=(1.0, 1.0))
    textured = 1.0 + np.random.default_rng(5).normal(0.0, 0.03, (12, 48, 48)).astype(np.float32)
    textured[:, :, :24] -= 0.7  # textured CSF (0.3) beside textured white matter (1.0)

    def targets(**data):
        sampler = _sampler(**flat, **data)
        sampler.volumes[0].clean[:] = textured
        return [sampler._pair()[1][0] for _ in range(30)]

    modelled = targets(tissue_model_fraction=1.0)
    assert max(map(_roughness, modelled)) < 0.004 < 0.02 < min(map(_roughness, targets()))
    two_tissues = [t for t in modelled if t.max() - t.min() > 0.5]
    assert two_tissues and all(t.max() > 0.99 and t.min() < 0.31 for t in two_tissues)  # the tissues' values
    assert all(np.any((t > 0.4) & (t < 0.9)) for t in two_tissues)  # partial volume at the boundary
    curved = targets(tissue_model_fraction=1.0, contrast_remap_fraction=1.0)
    assert np.median(list(map(_roughness, curved))) < 0.002
    assert np.median(list(map(_roughness, targets(contrast_remap_fraction=1.0)))) > 0.01
    assert len({round(float(np.median(t)), 2) for t in curved}) > 5  # each its own tone curve


def test_validation_through_tone_curves_scores_each_curved_slab_and_reports_their_mean(tmp_path, data_root):
    overrides = {"data": {"validation_levels_percent": [5.0], "validation_tone_curves": 2}}
    trainer = SupervisedTrainer(load_config(write_config(tmp_path, data_root, **overrides)), tmp_path / "run")
    volumes = {case.name.split("~")[0] for case in trainer.validation}
    assert len(trainer.validation) == 3 * len(volumes)
    plain, first, second = (case.clean for case in trainer.validation[:3])
    assert not np.allclose(plain, first) and not np.allclose(first, second)  # each slab its own contrast
    np.testing.assert_array_equal(plain == 0, first == 0)  # air stays air
    again = SupervisedTrainer(load_config(write_config(tmp_path, data_root, **overrides)), tmp_path / "run2")
    np.testing.assert_array_equal(again.validation[1].noisy, trainer.validation[1].noisy)  # seeded: same cases
    summary = trainer.validate(trainer.network)
    assert summary["psnr_foreground@remapped"] != summary["psnr_foreground"]  # the T1 slabs are in the mean
    assert "psnr_foreground@remapped" not in SupervisedTrainer(
        load_config(write_config(tmp_path, data_root)), tmp_path / "run3"
    ).validate(trainer.network)
    with pytest.raises(ConfigError, match="validation_tone_curves"):
        load_config(write_config(tmp_path, data_root, data={"validation_tone_curves": -1}))
    with pytest.raises(ConfigError, match="low_contrast_fraction"):
        load_config(write_config(tmp_path, data_root, data={"low_contrast_fraction": 1.5}))


def test_a_varying_level_told_as_one_level_keeps_its_noise_and_tells_the_mean():
    told_once = _sampler(varying_noise_fraction=1.0, one_level_fraction=1.0)
    inputs = told_once.batch(8)[0]
    level_channels = inputs[:, -1]
    assert all(np.ptp(channel) == 0 for channel in level_channels)  # one level per example
    mapped = _sampler(varying_noise_fraction=1.0).batch(8)[0][:, -1]
    assert all(np.ptp(channel) > 0 for channel in mapped)  # the field itself, as before
    draw = told_once._noise()
    assert draw.told is not None and draw.told.item() == pytest.approx(float(draw.sigma.mean()))
    assert _sampler(one_level_fraction=1.0)._noise().told is None  # a uniform level is told as it is


def test_an_overstated_level_adds_in_quadrature_to_the_level_told_and_leaves_the_noise_as_drawn():
    sampler = _sampler(
        overstated_level_fraction=1.0,
        overstated_level_percent=(2.0, 3.0),
        rician_fraction=0.0,
        varying_noise_fraction=0.0,
    )
    draws = [sampler._noise() for _ in range(100)]
    extras = [np.sqrt(draw.told.item() ** 2 - draw.sigma.item() ** 2) for draw in draws]
    assert min(extras) >= 0.02 - 1e-6 and max(extras) <= 0.03 + 1e-6 and np.ptp(extras) > 0.005
    low = NoiseDraw(np.full((1, 1, 1), 0.01, np.float32), "gaussian", told=np.full((1, 1, 1), 0.03, np.float32))
    noisy = sampler._noisy(np.full((5, 64, 64), 0.5, np.float32), low)
    assert np.allclose(noisy[-1], 0.03)  # the channel says 3 %
    assert np.std(noisy[:-1]) == pytest.approx(0.01, rel=0.05)  # the noise is the 1 % drawn
    varying = _sampler(varying_noise_fraction=1.0, one_level_fraction=1.0, overstated_level_fraction=1.0)._noise()
    assert varying.told is not None and varying.told.size == 1  # one level told, over-stated
    assert varying.told.item() > float(varying.sigma.mean())
    assert _sampler()._noise().told is None  # off by default: older configs draw as before
    with pytest.raises(ValueError, match="overstated_level_percent"):
        DataConfig(train=["t"], validation=["v"], overstated_level_percent=(3.0, 1.0))


def test_profile_validation_varies_the_noise_across_the_slab(tmp_path, data_root):
    overrides = {"data": {"validation_noise": ["rician", "profile"], "validation_levels_percent": [10.0]}}
    trainer = SupervisedTrainer(load_config(write_config(tmp_path, data_root, **overrides)), tmp_path / "run")
    uniform, varying = trainer.validation[:2]
    assert (uniform.noise, varying.noise) == ("rician", "profile")
    ratios = []
    for case in (uniform, varying):
        residual = np.where(case.clean > 0.3, case.noisy - case.clean, np.nan)  # Gaussian where bright
        blocks = [
            np.nanstd(residual[:, rows, columns])
            for rows in (slice(0, 16), slice(16, None))
            for columns in (slice(0, 16), slice(16, None))
        ]
        ratios.append(max(blocks) / min(blocks))
    assert ratios[0] < 1.15 < ratios[1]  # one level everywhere; a level that strays across the slab
    assert "psnr_foreground@profile" in trainer.validate(trainer.network)


def test_log_uniform_levels_give_each_doubling_as_many_examples_and_uniform_stays_the_default():
    def levels(**data) -> np.ndarray:
        sampler = _sampler(varying_noise_fraction=0.0, **data)
        return np.array([float(sampler._noise().sigma.mean()) for _ in range(4000)]) * 100

    logarithmic = levels(level_sampling="log-uniform")
    assert logarithmic.min() >= 1.0 and logarithmic.max() <= 30.0
    # 1-5 % holds ln 5 / ln 30 = 47 % of the draws, 1-2 % and 8-16 % one doubling each: 20 % apiece
    assert np.mean(logarithmic <= 5) == pytest.approx(0.47, abs=0.03)
    assert np.mean(logarithmic <= 2) == pytest.approx(np.mean((logarithmic > 8) & (logarithmic <= 16)), abs=0.03)
    assert np.mean(levels() <= 5) == pytest.approx(4 / 29, abs=0.03)  # uniform, as older configs drew

"""Real scans with no clean image in supervised training: recorrupted-to-recorrupted examples."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import fix_prediction, write_config

from MRIDenoiseLib.errors import InputError
from MRIDenoiseLib.training.config import ConfigError, load_config
from MRIDenoiseLib.training.data import load_configured_volumes
from MRIDenoiseLib.training.export import export_run
from MRIDenoiseLib.training.losses import rician_mean
from MRIDenoiseLib.training.noisy_scans import MixedSampler, NoisyScan, load_noisy_scans
from MRIDenoiseLib.training.trainer import SupervisedTrainer

L2 = {"loss": "l2"}


def _phantom(shape: tuple[int, int, int]) -> np.ndarray:
    """A block of tissue whose brightness falls from 1 to 0.6 along x, in air."""
    clean = np.zeros(shape, np.float32)
    clean[2:-2, 6:-6, 6:-6] = np.linspace(1.0, 0.6, shape[2] - 12, dtype=np.float32)
    return clean


def _write(path, frames: list[np.ndarray], spacing=(1.0, 1.0, 1.0)) -> None:
    images = [sitk.GetImageFromArray(frame) for frame in frames]
    for image in images:
        image.SetSpacing(spacing)
    sitk.WriteImage(images[0] if len(images) == 1 else sitk.JoinSeries(images), str(path))


def _noisy(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """The magnitude of ``clean`` with complex Gaussian noise of ``sigma`` (Rician)."""
    rng = np.random.default_rng(seed)
    real = clean + sigma * rng.standard_normal(clean.shape)
    return np.hypot(real, sigma * rng.standard_normal(clean.shape)).astype(np.float32)


@pytest.fixture
def scan_path(tmp_path):
    path = tmp_path / "scan.nii.gz"
    _write(path, [_noisy(_phantom((20, 64, 64)), 0.03, 1)])
    return path


def _config(tmp_path, data_root, scans, **overrides):
    optim = {**L2, **overrides.pop("optim", {})}
    settings = {"scans": [str(scan) for scan in scans], "fraction": 0.5, **overrides.pop("self_supervised", {})}
    return load_config(write_config(tmp_path, data_root, optim=optim, self_supervised=settings, **overrides))


def test_each_frame_of_a_series_is_a_scan_with_its_own_blind_level(tmp_path):
    clean = _phantom((20, 64, 64))
    levels = (0.02, 0.04, 0.08)
    path = tmp_path / "echoes.nii.gz"
    _write(path, [_noisy(clean, level, seed) for seed, level in enumerate(levels)])
    scans = load_noisy_scans(path)
    assert [scan.name for scan in scans] == ["echoes.nii.gz[0]", "echoes.nii.gz[1]", "echoes.nii.gz[2]"]
    for scan, level in zip(scans, levels, strict=True):
        assert scan.data.shape == clean.shape and scan.slice_axes == (0, 1, 2)
        # normalised by the brightest tissue (about 1 here): the level in those units, within 15 %
        assert scan.sigma == pytest.approx(level, rel=0.15)
    # the same series as training volumes (targets pre-cleaned like any other): one volume per frame
    config = load_config(write_config(tmp_path, tmp_path, data={"train": ["echoes.nii.gz"], "validation": ["v"]}))
    volumes = load_configured_volumes(path, config.data)
    assert [volume.name for volume in volumes] == [scan.name for scan in scans]
    for volume, scan in zip(volumes, scans, strict=True):
        assert np.array_equal(volume.clean, scan.data)  # no pre-cleaning in this config: the frame itself
    anisotropic = tmp_path / "thick.nii.gz"
    _write(anisotropic, [_noisy(clean, 0.03, 7)], spacing=(0.5, 0.5, 3.0))
    (thick,) = load_noisy_scans(anisotropic)
    assert thick.name == "thick.nii.gz" and thick.slice_axes == (0,)  # sliced along its coarse axis only
    flat = tmp_path / "flat.nii.gz"
    _write(flat, [np.ones((64, 64), np.float32)])
    with pytest.raises(InputError, match=r"must be 3-D or 4-D \(frames\), got 2-D"):
        load_noisy_scans(flat)
    with pytest.raises(InputError, match=r"must be 3-D or 4-D \(frames\), got 2-D"):
        load_configured_volumes(flat, config.data)  # as a training volume too, before any pixel is read


def test_recorrupted_patches_carry_independent_noise_and_a_target_right_on_average(tmp_path, data_root, scan_path):
    config = _config(tmp_path, data_root, [scan_path], self_supervised={"recorruption": 0.5})
    settings = config.self_supervised
    assert settings is not None
    level, tissue = 0.04, 0.8
    rng = np.random.default_rng(3)
    data = (tissue + level * rng.standard_normal((24, 64, 64))).astype(np.float32)
    scan = NoisyScan("flat", data, np.ones(data.shape, bool), (0,), level)  # a flat tissue: its clean value known
    volumes = load_configured_volumes(data_root / "train.nii.gz", config.data)
    sampler = MixedSampler(volumes, config.data, 1, 11, [scan], settings)
    examples = [sampler.recorrupted() for _ in range(300)]
    input_noise = np.concatenate([(inputs[1] - tissue).ravel() for inputs, *_ in examples])
    target_noise = np.concatenate([(target[0] - tissue).ravel() for _, target, *_ in examples])
    # input: the scan's noise plus half its level again; target: the scan's noise minus twice the draw
    assert input_noise.var() == pytest.approx(level**2 * 1.25, rel=0.05)
    assert target_noise.var() == pytest.approx(level**2 * 5.0, rel=0.05)
    # the two copies' noise is independent (the scan's own noise alone would correlate them fully)
    assert abs(np.corrcoef(input_noise, target_noise)[0, 1]) < 0.02
    assert abs(target_noise.mean()) < 0.1 * level
    for inputs, target, weight, scan_level in examples[:5]:
        assert inputs.shape == (4, 32, 32) and target.shape == weight.shape == (1, 32, 32)
        np.testing.assert_allclose(inputs[-1], level * np.sqrt(1.25), rtol=1e-6)  # told the combined level
        assert weight.min() == 1.0 and float(scan_level) == pytest.approx(level)
    inputs, _, weights, scan_levels = sampler.batch(200)
    assert inputs.shape == (200, 4, 32, 32) and scan_levels.shape == (200,)
    assert 0.38 < (scan_levels > 0).mean() < 0.62  # half of the examples, as configured
    synthetic = scan_levels == 0
    assert (weights[synthetic] == 1).all()


def test_noisy_targets_are_fitted_by_the_rician_mean_and_left_out_of_ssim(tmp_path, data_root, scan_path):
    config = _config(tmp_path, data_root, [scan_path], optim={"ssim_weight": 0.5})
    trainer = SupervisedTrainer(config, tmp_path / "run", show_progress=False)
    targets, prediction = fix_prediction(trainer, 0)
    levels = torch.full((2, 1, 16, 16), 0.1)
    weights = torch.ones(2, 1, 16, 16)
    weights[1, :, :8] = 0.0  # the second example's scan has air in its top half
    scan_level = torch.tensor([0.0, 0.2])
    loss = trainer.loss(torch.zeros(2, 3, 16, 16), targets, levels, weights, scan_level).item()
    synthetic = ((prediction[0] - targets[0]) ** 2).mean()
    recorrupted = ((rician_mean(prediction[1], 0.2) - targets[1]) ** 2)[:, 8:].mean()
    ssim_of_synthetic = trainer.ssim_loss(prediction[:1], targets[:1]).mean()
    assert loss == pytest.approx(((synthetic + recorrupted) / 2 + 0.5 * ssim_of_synthetic).item(), rel=1e-5)
    # only synthetic pairs: the same loss as without the self-supervised parts
    plain = trainer.loss(torch.zeros(2, 3, 16, 16), targets, levels).item()
    mixed = trainer.loss(torch.zeros(2, 3, 16, 16), targets, levels, torch.ones(2, 1, 16, 16), torch.zeros(2))
    assert mixed.item() == pytest.approx(plain, rel=1e-6)


def test_a_run_learns_from_real_scans_names_them_and_resumes_only_with_them(tmp_path, data_root, scan_path):
    config = _config(tmp_path, data_root, [scan_path], optim={"steps": 6}, validate_every=3)
    trainer = SupervisedTrainer(config, tmp_path / "run", show_progress=False)
    trainer.fit()
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert trainer.state.step == 6 and all(np.isfinite(h["loss"]) for h in history if "loss" in h)
    other_scan = tmp_path / "other-scan.nii.gz"
    _write(other_scan, [_noisy(_phantom((20, 64, 64)), 0.05, 2)])
    other = _config(tmp_path, data_root, [other_scan], optim={"steps": 8})
    with pytest.raises(ConfigError, match="another network or data"):
        SupervisedTrainer(other, tmp_path / "run", show_progress=False).resume()
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(Path(__file__).parents[1] / "Resources" / "Models" / "catalog.json", models / "catalog.json")
    export_run(config, tmp_path / "run", models)
    card = (models / "tiny-test.md").read_text()
    assert "50% of the examples recorrupted patches" in card and "scan.nii.gz" in card


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"self_supervised": {"fraction": 1.0}}, "self_supervised.fraction"),
        ({"self_supervised": {"recorruption": 0.0}}, "self_supervised.recorruption"),
        ({"optim": {"loss": "l1"}}, "optim.loss 'l2'"),
        ({"transfer": {"model": "mridenoise-rician-2.5d-v6", "distil": True}}, "transfer.distil"),
        ({"perceptual": {"weight": 0.1, "features": "vgg.safetensors"}}, "perceptual"),
    ],
)
def test_self_supervised_settings_are_checked(tmp_path, data_root, scan_path, override, message):
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, data_root, [scan_path], **override)
    with pytest.raises(ConfigError, match=r"shares volumes with data\.train"):
        _config(tmp_path, data_root, ["train.nii.gz"])

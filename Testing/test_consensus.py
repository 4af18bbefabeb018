"""Paper 004: realisation pairs, the consensus trainer and its baselines, distillation, two-scan training."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import REPO, StepClock, write_config

from MRIDenoiseLib.cli import main
from MRIDenoiseLib.errors import Cancelled, InputError
from MRIDenoiseLib.io import read_volume, write_volume
from MRIDenoiseLib.metrics import evaluate
from MRIDenoiseLib.models.catalog import load_catalog
from MRIDenoiseLib.models.paths import cache_dir
from MRIDenoiseLib.models.weights import save_weights
from MRIDenoiseLib.nets import build_network
from MRIDenoiseLib.noise import add_noise, sigma_for_level
from MRIDenoiseLib.pipeline import denoise_volume
from MRIDenoiseLib.progress import CancelToken
from MRIDenoiseLib.registration import align, image_of
from MRIDenoiseLib.training.checkpoints import LAST_WEIGHTS_NAME
from MRIDenoiseLib.training.config import ConfigError, load_config
from MRIDenoiseLib.training.consensus import (
    ConsensusTrainer,
    DistillationTrainer,
    distillation_config,
    distillation_run_dir,
    export_consensus_run,
)
from MRIDenoiseLib.training.two_scans import train_consensus_volumes
from MRIDenoiseLib.volume import Geometry, Volume

PAIR = {"architecture": "consensus-pair", "arguments": {"context": 1, "channels": [8, 16]}}


def _consensus_config(tmp_path, data_root, mode="consensus", **consensus):
    model = PAIR if mode == "consensus" else {}
    return load_config(
        write_config(tmp_path, data_root, model=model, consensus={"mode": mode, **consensus}, optim={"steps": 20})
    )


def test_realisations_share_the_clean_patch_and_have_independent_noise(tmp_path, data_root):
    trainer = ConsensusTrainer(_consensus_config(tmp_path, data_root), tmp_path / "run", show_progress=False)
    trainer.sampler.config.rician_fraction = 0.0  # Gaussian: the noise is the plain difference
    first, second, clean = trainer.sampler.batch(16)
    assert first.shape == second.shape == (16, 4, 32, 32) and clean.shape == (16, 1, 32, 32)
    np.testing.assert_array_equal(first[:, -1], second[:, -1])  # one level for both draws
    first_noise, second_noise = first[:, 1] - clean[:, 0], second[:, 1] - clean[:, 0]
    assert abs(np.corrcoef(first_noise.ravel(), second_noise.ravel())[0, 1]) < 0.05
    np.testing.assert_allclose(first_noise.std(axis=(1, 2)), first[:, -1].mean(axis=(1, 2)), rtol=0.25)


@pytest.mark.parametrize("mode", ["consensus", "noise2noise", "noise2clean"])
def test_each_mode_lowers_its_loss(tmp_path, data_root, mode):
    config = _consensus_config(tmp_path, data_root, mode, consistency=0.5 if mode == "consensus" else 0.0)
    trainer = ConsensusTrainer(config, tmp_path / "run", show_progress=False)
    batch = [torch.from_numpy(part) for part in trainer.sampler.batch(4)]
    losses = [trainer.step_on(batch)["loss"] for _ in range(15)]
    assert losses[-1] < losses[0]


def test_noise2clean_alone_sees_the_clean_patch(tmp_path, data_root):
    trainers = {
        mode: ConsensusTrainer(_consensus_config(tmp_path, data_root, mode), tmp_path / mode, show_progress=False)
        for mode in ("noise2noise", "noise2clean")
    }
    first, second, clean = (torch.from_numpy(part) for part in trainers["noise2clean"].sampler.batch(2))
    for mode, trainer in trainers.items():
        with torch.no_grad():
            changed = trainer.pair_loss(first, second, clean + 1.0) != trainer.pair_loss(first, second, clean)
        assert bool(changed) == (mode == "noise2clean")


def test_consensus_loss_uses_both_members_and_the_weights(tmp_path, data_root):
    config = _consensus_config(tmp_path, data_root, weight_decay=0.0)
    trainer = ConsensusTrainer(config, tmp_path / "run", show_progress=False)
    batch = [torch.from_numpy(part) for part in trainer.sampler.batch(2)]
    with torch.no_grad():
        plain = trainer.pair_loss(*batch).item()
        config.consensus.weight_decay = 1.0
        decayed = trainer.pair_loss(*batch).item()
    squares = sum(p.pow(2).sum().item() for p in trainer.network.parameters())
    assert decayed - plain == pytest.approx(squares, rel=1e-4)


def test_pair_is_distilled_and_both_are_exported(tmp_path, data_root):
    config = _consensus_config(tmp_path, data_root, distil_steps=10)
    run = tmp_path / "run"
    ConsensusTrainer(config, run, show_progress=False).fit()
    student_config = distillation_config(config)
    student = DistillationTrainer(student_config, distillation_run_dir(run), run, show_progress=False)
    batch = [torch.from_numpy(part) for part in student.sampler.batch(4)]
    losses = [student.step_on(batch)["loss"] for _ in range(10)]
    assert losses[-1] < losses[0]
    student.fit()
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(REPO / "Resources" / "Models" / "catalog.json", models / "catalog.json")
    export_consensus_run(config, run, models)
    catalog = load_catalog(models / "catalog.json")
    assert catalog.get("tiny-test").architecture == "residual-unet-2.5d"
    assert catalog.get("tiny-test-pair").architecture == "consensus-pair"
    assert student_config.model.id == "tiny-test" and config.model.architecture == "consensus-pair"


def test_distillation_starts_from_the_pair_weights_the_config_exports(tmp_path, data_root):
    config = _consensus_config(tmp_path, data_root, distil_steps=10)
    config.export_weights = "last"
    run = tmp_path / "run"
    ConsensusTrainer(config, run, show_progress=False).fit()
    replacement = build_network(**PAIR)  # differs from both the best and the last trained pair
    save_weights(run / LAST_WEIGHTS_NAME, replacement, **PAIR)
    student = DistillationTrainer(distillation_config(config), distillation_run_dir(run), run, show_progress=False)
    for name, tensor in replacement.state_dict().items():
        torch.testing.assert_close(student.teacher.state_dict()[name], tensor, msg=name)


@pytest.mark.parametrize(
    ("model", "consensus", "message"),
    [
        ({}, {"mode": "consensus"}, "consensus-pair"),
        (PAIR, {"mode": "noise2noise"}, "single one"),
        (PAIR, {"mode": "noise2self"}, "consensus.mode"),
        ({}, {"mode": "noise2noise", "distil_steps": 5}, "only a consensus pair"),
    ],
)
def test_consensus_config_errors(tmp_path, data_root, model, consensus, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, data_root, model=model, consensus=consensus))


# ---- two acquisitions --------------------------------------------------------------------------
@pytest.fixture
def two_scans(colin_crop):
    """Two noisy acquisitions of the crop (10 % Rician, independent draws); the second shifted 2 mm in x
    and received with 1.25 times the gain."""
    sigma = sigma_for_level(colin_crop, 10)
    first = Volume(add_noise(colin_crop, sigma, "rician", 11))
    moved_clean = np.roll(colin_crop, 2, axis=2)
    second = Volume(1.25 * add_noise(moved_clean, sigma, "rician", 12))
    return colin_crop, first, second


def test_rigid_alignment_finds_a_known_shift(colin_crop):
    geometry = Geometry(spacing=(1.0, 1.0, 1.0))
    moving = sitk.GetArrayFromImage(
        sitk.Resample(image_of(colin_crop, geometry), sitk.TranslationTransform(3, (3.0, 0.0, 0.0)))
    )
    alignment = align(colin_crop, geometry, moving, geometry)
    assert alignment.translation_mm == pytest.approx(3.0, abs=0.3) and alignment.rotation_degrees < 1.0
    inner = (slice(2, -2), slice(8, -8), slice(8, -8))
    assert (
        np.abs(alignment.array[inner] - colin_crop[inner]).mean()
        < 0.2 * np.abs(moving[inner] - colin_crop[inner]).mean()
    )


@pytest.mark.slow
def test_two_scans_give_a_user_model_and_a_combined_image(two_scans):
    clean, first, second = two_scans
    result = train_consensus_volumes(
        first, second, "mridenoise-rician-2.5d", minutes=0.15, seed=1, clock=StepClock(0.25)
    )  # 9 s read every 0.25 s: 21 pair steps and 13 distillation steps on any machine
    assert result.translation_mm == pytest.approx(2.0, abs=0.4)
    assert result.intensity_gain == pytest.approx(0.8, abs=0.03)
    assert result.pair.held_out_after <= result.pair.held_out_before
    assert result.distillation.held_out_after <= result.distillation.held_out_before
    assert result.pair.steps > 0 and result.distillation.steps > 0
    assert result.denoised.array.shape == first.array.shape
    noisy_psnr = evaluate(clean, first.array)["psnr_foreground"]
    assert evaluate(clean, result.denoised.array)["psnr_foreground"] > noisy_psnr + 3
    entry = load_catalog().get(result.entry.id)
    assert entry.user and entry.architecture == "residual-unet-2.5d"  # the distilled network
    assert entry.training["base_model"] == "mridenoise-rician-2.5d"
    single = denoise_volume(first, entry.id).volume.array
    assert evaluate(clean, single)["psnr_foreground"] > noisy_psnr + 3


@pytest.mark.slow
def test_two_scans_leave_no_rician_floor_in_the_air(colin_slab):
    """The pair learns the Rician mean of its noisy targets; the combined image is the signal under it."""
    z = colin_slab.array.shape[0] // 2
    clean = colin_slab.array[z - 6 : z + 6, :96, :96].astype(np.float32)  # a corner with air around the head
    sigma = sigma_for_level(clean, 10)
    first, second = (Volume(add_noise(clean, sigma, "rician", seed)) for seed in (21, 22))
    result = train_consensus_volumes(
        first, second, "mridenoise-rician-2.5d", minutes=0.05, register=False, clock=StepClock(0.5)
    )
    air = clean == 0
    assert air.mean() > 0.2
    assert result.denoised.array[air].mean() < 0.3 * first.array[air].mean()  # the floor is sigma sqrt(pi/2)


@pytest.mark.slow
def test_two_scan_training_cancelled_leaves_no_user_model(two_scans):
    _, first, second = two_scans
    cancel = CancelToken()

    def cancel_once_training(fraction: float, message: str) -> None:
        if message.startswith("distilling"):  # cancelled in the second stage, after the pair trained
            cancel.cancel()

    with pytest.raises(Cancelled):
        train_consensus_volumes(
            first,
            second,
            "mridenoise-rician-2.5d",
            0.5,
            progress=cancel_once_training,
            cancel=cancel,
            clock=StepClock(1.0),
        )
    assert not [entry for entry in load_catalog() if entry.user]
    assert not (cache_dir() / "user-models").exists() or not any((cache_dir() / "user-models").iterdir())


def test_two_scan_requests_are_checked(two_scans):
    _, first, second = two_scans
    with pytest.raises(InputError, match="one grid"):
        train_consensus_volumes(first, Volume(second.array[:-1]), register=False)
    with pytest.raises(InputError, match="3-D scalar"):
        train_consensus_volumes(first, Volume(np.stack([second.array] * 2, axis=-1)))
    with pytest.raises(InputError, match="could not be registered"):
        train_consensus_volumes(first, Volume(np.zeros_like(second.array)), minutes=0.05)
    with pytest.raises(InputError, match="cannot start a consensus pair"):
        train_consensus_volumes(first, second, "unet-dctd-a", minutes=0.05)


@pytest.mark.slow
def test_train_consensus_command(tmp_path, two_scans):
    _, first, second = two_scans
    paths = [tmp_path / name for name in ("a.nii.gz", "b.nii.gz", "out.nii.gz")]
    write_volume(first, paths[0])
    write_volume(second, paths[1])
    before = paths[0].read_bytes()
    arguments = ["train-consensus", *map(str, paths), "--model", "mridenoise-rician-2.5d", "--minutes", "0.05"]
    assert main([*arguments, "--progress", "none"]) == 0
    assert read_volume(paths[2]).array.shape == first.array.shape and paths[0].read_bytes() == before
    assert [entry.id for entry in load_catalog() if entry.user and entry.id.startswith("consensus-")]
    assert main(["train-consensus", str(paths[0]), str(paths[1]), str(paths[0])]) != 0  # would overwrite an input

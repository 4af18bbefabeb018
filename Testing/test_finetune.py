"""Fine-tuning on one noisy scan: the self-supervised pairs, the time budget, cancel, the user model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import StepClock

from MRIDenoiseLib.cli import main
from MRIDenoiseLib.errors import Cancelled, InputError
from MRIDenoiseLib.io import read_volume, write_volume
from MRIDenoiseLib.models.catalog import load_catalog
from MRIDenoiseLib.models.paths import cache_dir
from MRIDenoiseLib.noise import add_noise, sigma_for_level
from MRIDenoiseLib.progress import CancelToken
from MRIDenoiseLib.training.finetune import RECORRUPTION_ALPHA, _ScanPatches, finetune_volume
from MRIDenoiseLib.training.losses import rician_mean
from MRIDenoiseLib.volume import Volume


@pytest.fixture
def noisy_crop(colin_crop):
    return Volume(add_noise(colin_crop, sigma_for_level(colin_crop, 10), "rician", 3))


def test_recorrupted_pairs_carry_opposite_scaled_copies_of_one_draw():
    data = np.full((5, 64, 64), 0.5, np.float32)
    patches = _ScanPatches(data, sigma=0.1, context=1, loss="r2r", seed=0)
    inputs, target, weight, outside = patches.batch(16, patches.train_slices, np.random.default_rng(1))
    input_noise = inputs[:, 1] - 0.5  # centre slice
    target_noise = target[:, 0] - 0.5
    # input = y + alpha sigma z, target = y - sigma z / alpha: the two noises are -alpha^2 times each other
    np.testing.assert_allclose(input_noise, -(RECORRUPTION_ALPHA**2) * target_noise, atol=1e-6)
    assert np.std(target_noise) == pytest.approx(0.1 / RECORRUPTION_ALPHA, rel=0.03)
    np.testing.assert_allclose(inputs[:, -1], 0.1 * np.sqrt(1 + RECORRUPTION_ALPHA**2), rtol=1e-6)
    np.testing.assert_array_equal(weight + outside, 1.0)  # scored inside the object, anchored outside it


def test_noise2self_scores_only_pixels_whose_value_it_hid():
    data = np.random.default_rng(0).random((5, 64, 64)).astype(np.float32) + 1.0
    patches = _ScanPatches(data, sigma=0.1, context=1, loss="n2s", seed=0)
    inputs, target, weight, _ = patches.batch(8, patches.train_slices, np.random.default_rng(2))
    hidden = inputs[:, 1] != target[:, 0]  # replaced by a neighbour's value
    scored = weight[:, 0] > 0
    assert scored.any() and np.all(hidden[scored])
    assert 0.03 < hidden.mean() < 0.1  # about a sixteenth of the pixels


def test_rician_mean_is_the_mean_of_simulated_magnitudes():
    signal, sigma = np.array([0.0, 0.05, 0.1, 0.2, 0.5, 1.0], np.float32), 0.1
    magnitudes = add_noise(np.repeat(signal[:, None], 200_000, axis=1), sigma, "rician", 7)
    np.testing.assert_allclose(rician_mean(torch.from_numpy(signal), sigma).numpy(), magnitudes.mean(axis=1), atol=1e-3)


def test_fitting_the_rician_mean_of_the_output_recovers_the_signal_not_the_mean_magnitude():
    """What the fine-tuning loss optimises, on one flat region: a value fitted to noisy magnitudes."""
    signal, sigma = 0.2, 0.1
    magnitudes = torch.from_numpy(add_noise(np.full(100_000, signal, np.float32), sigma, "rician", 8))
    estimate = torch.tensor(0.5, requires_grad=True)
    optimiser = torch.optim.LBFGS([estimate], line_search_fn="strong_wolfe")

    def squared_error():
        optimiser.zero_grad()
        error = (rician_mean(estimate, sigma) - magnitudes).pow(2).mean()
        error.backward()
        return error

    for _ in range(5):
        optimiser.step(squared_error)
    assert estimate.item() == pytest.approx(signal, abs=0.003)
    assert magnitudes.mean().item() > signal + 0.02  # where fitting the magnitudes themselves would land


@pytest.mark.slow
def test_finetune_registers_a_user_model_that_denoise_uses(tmp_path, noisy_crop):
    scan, output = str(tmp_path / "scan.nii.gz"), str(tmp_path / "out.nii.gz")
    write_volume(noisy_crop, scan)
    assert main(["finetune", scan, output, "--minutes", "0.05", "--progress", "none"]) == 0
    user = [entry for entry in load_catalog() if entry.user and "-ft-" in entry.id]
    assert len(user) == 1 and user[0].training["base_model"] == load_catalog().default_id
    default = load_catalog().get(None)
    assert user[0].planes == default.planes == "all"  # keeps its base's three-plane inference
    assert user[0].refinement == default.refinement is not None  # and its second stage, as --adapt runs it
    metrics = user[0].metrics["held_out_self_supervised_loss"]
    assert metrics["after"] <= metrics["before"]
    adapted = read_volume(output)
    assert adapted.array.shape == noisy_crop.array.shape
    assert main(["denoise", scan, str(tmp_path / "again.nii.gz"), "--model", user[0].id]) == 0
    np.testing.assert_allclose(read_volume(tmp_path / "again.nii.gz").array, adapted.array, atol=1e-4)
    assert main(["finetune", scan, "--minutes", "0.02", "--progress", "none"]) == 0  # the same scan again
    ids = sorted(entry.id for entry in load_catalog() if entry.user)
    assert ids == [user[0].id, user[0].id + "-2"], "a second fine-tune replaced the first model"


@pytest.mark.slow
def test_budget_is_kept_and_cancel_leaves_no_user_model(noisy_crop):
    cancel = CancelToken()
    reports = []

    def progress(fraction, message):
        reports.append(fraction)
        if len(reports) > 5:
            cancel.cancel()

    with pytest.raises(Cancelled):
        finetune_volume(noisy_crop, minutes=1.0, progress=progress, cancel=cancel, clock=StepClock(0.5))
    assert not any(entry.user for entry in load_catalog())
    assert not (cache_dir() / "user-models").exists()
    result = finetune_volume(noisy_crop, minutes=0.05, loss="n2s", clock=StepClock(0.5))
    # the clock is read after each step, 0.5 s apart: the 6th step uses up the 3 s budget
    assert result.steps == 6 and result.seconds == 4.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "nlm"}, "classical filter"),
        ({"loss": "noise2void"}, "unknown fine-tuning loss"),
        ({"minutes": 0}, "time budget"),
    ],
)
def test_bad_requests_are_refused(noisy_crop, kwargs, message):
    with pytest.raises(InputError, match=message):
        finetune_volume(noisy_crop, **kwargs)


def test_series_are_refused(noisy_crop):
    series = Volume(np.stack([noisy_crop.array] * 2, axis=-1))
    with pytest.raises(InputError, match="3-D scalar"):
        finetune_volume(series)

"""Paper 000: the disentangled GAN and CycleGAN networks, unpaired batches, their trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_config

from MRIDenoiseLib.nets import build_network
from MRIDenoiseLib.training.config import ConfigError, load_config
from MRIDenoiseLib.training.gan import GanTrainer

DISENTANGLED = {"architecture": "disentangled-denoiser", "arguments": {"width": 8, "blocks": 1, "code": 2}}
CYCLEGAN = {"architecture": "cyclegan-generator", "arguments": {"width": 8, "blocks": 1}}


def _config(tmp_path, data_root, method="disentangled", **gan):
    model = DISENTANGLED if method == "disentangled" else CYCLEGAN
    section = {"clean_domain": ["other.nii.gz"], "method": method, **gan}
    return load_config(write_config(tmp_path, data_root, model=model, gan=section, optim={"steps": 4}))


def test_disentangled_denoiser_is_deterministic_equation_12():
    network = build_network(DISENTANGLED["architecture"], DISENTANGLED["arguments"]).eval()
    image = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(network(image), network(image))


@pytest.mark.parametrize("model", [DISENTANGLED, CYCLEGAN], ids=["disentangled", "cyclegan"])
def test_residual_generators_start_from_their_input(model):
    network = build_network(model["architecture"], {**model["arguments"], "residual": True}).eval()
    generator = network.clean_generator if hasattr(network, "clean_generator") else network.decoder
    with torch.no_grad():
        generator.head.weight.zero_()
        generator.head.bias.zero_()
        image = torch.rand(1, 1, 21, 30)
        torch.testing.assert_close(network(image), image)


def test_unpaired_batches_come_from_different_subjects(tmp_path, data_root):
    trainer = GanTrainer(_config(tmp_path, data_root), tmp_path / "run", show_progress=False)
    noisy_with_level, clean = trainer.sampler.batch(8)
    noisy, level = noisy_with_level[:, :1], noisy_with_level[:, 1:]
    assert noisy.shape == clean.shape == level.shape == (8, 1, 32, 32)
    low, high = (p / 100 for p in trainer.config.data.level_range_percent)
    assert np.all((level >= 0.6 * low) & (level <= 1.4 * high))  # the simulated sigma, ramps included
    assert [v.name for v in trainer.sampler.volumes] == ["train.nii.gz"]
    assert [v.name for v in trainer.sampler.clean_source.volumes] == ["other.nii.gz"]
    assert trainer.sampler.clean_source.rng is trainer.sampler.rng  # one random stream, checkpointed once
    # clean patches carry no simulated noise: their high-frequency energy is far below the noisy ones'
    detail = lambda x: np.abs(np.diff(x, axis=-1)).mean()  # noqa: E731
    assert detail(clean) < 0.7 * detail(noisy)


VARIANTS = {
    "paper": {"residual": False},
    "residual": {"residual": True},
    "noise-scaled": {"residual": True, "noise_scaled": True, "correction_bound": 5.0},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("method", ["disentangled", "cyclegan"])
def test_generator_loss_falls_on_a_fixed_batch(tmp_path, data_root, method, variant):
    config = _config(tmp_path, data_root, method)
    config.model.arguments.update(VARIANTS[variant])
    config.optim.noise_normalised = variant == "noise-scaled"
    trainer = GanTrainer(config, tmp_path / "run", show_progress=False)
    batch = [torch.from_numpy(part) for part in trainer.sampler.batch(4)]
    losses = [trainer.step_on(batch)["loss"] for _ in range(12)]
    assert losses[-1] < losses[0]


def test_each_weight_switches_its_term(tmp_path, data_root):
    config = _config(tmp_path, data_root, adversarial=0.0, cycle=0.0, reconstruction=0.0, perceptual=0.0, kl=1.0)
    trainer = GanTrainer(config, tmp_path / "run", show_progress=False)
    noisy_with_level, clean = (torch.from_numpy(part) for part in trainer.sampler.batch(2))
    noisy, level = noisy_with_level[:, :1], noisy_with_level[:, 1:]
    torch.manual_seed(0)
    images = trainer._translate(noisy, clean, level)
    from MRIDenoiseLib.training.losses import kl_to_standard_normal

    expected = kl_to_standard_normal(images["noise_mean"], images["noise_log_variance"])
    assert trainer.generator_loss(noisy, clean, images, level).item() == pytest.approx(expected.item())
    assert trainer.features is None  # perceptual weight 0: no feature network loaded


@pytest.mark.parametrize("method", ["disentangled", "cyclegan"])
def test_noise_normalised_cycle_terms_weigh_low_noise_examples_more(tmp_path, data_root, method):
    config = _config(tmp_path, data_root, method, adversarial=0.0, perceptual=0.0, kl=0.0)
    config.model.arguments.update(VARIANTS["noise-scaled"])
    trainer = GanTrainer(config, tmp_path / "run", show_progress=False)
    noisy_with_level, clean = (torch.from_numpy(part) for part in trainer.sampler.batch(2))
    noisy, level = noisy_with_level[:, :1], noisy_with_level[:, 1:]
    torch.manual_seed(0)
    images = trainer._translate(noisy, clean, level)
    plain = trainer.generator_loss(noisy, clean, images, level).item()
    trainer.config.optim.noise_normalised = True
    normalised = trainer.generator_loss(noisy, clean, images, level).item()
    # every example's error is divided by its level, all below 1: the loss grows by 1/level on average
    levels = level.mean(dim=(1, 2, 3))
    assert plain / float(levels.max()) <= normalised <= plain / float(levels.min()) + 1e-6


def test_resume_restores_the_discriminators(tmp_path, data_root):
    config = _config(tmp_path, data_root, "cyclegan")
    first = GanTrainer(config, tmp_path / "run", show_progress=False)
    first.fit()
    second = GanTrainer(config, tmp_path / "run", show_progress=False)
    assert second.resume() and second.state.step == 4
    for name, tensor in first.clean_discriminator.state_dict().items():
        torch.testing.assert_close(second.clean_discriminator.state_dict()[name], tensor)
    for name, tensor in first.noisy_generator.state_dict().items():
        torch.testing.assert_close(second.noisy_generator.state_dict()[name], tensor)


@pytest.mark.parametrize(
    ("model", "gan", "message"),
    [
        (DISENTANGLED, {"clean_domain": ["train.nii.gz"]}, "shares volumes"),
        (CYCLEGAN, {"clean_domain": ["other.nii.gz"]}, "disentangled-denoiser"),
        (DISENTANGLED, {"clean_domain": []}, "at least one volume"),
    ],
)
def test_gan_config_errors(tmp_path, data_root, model, gan, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, data_root, model=model, gan=gan))

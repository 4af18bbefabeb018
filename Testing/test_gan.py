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
    noisy, clean = trainer.sampler.batch(8)
    assert noisy.shape == clean.shape == (8, 1, 32, 32)
    assert [v.name for v in trainer.sampler.volumes] == ["train.nii.gz"]
    assert [v.name for v in trainer.sampler.clean_source.volumes] == ["other.nii.gz"]
    assert trainer.sampler.clean_source.rng is trainer.sampler.rng  # one random stream, checkpointed once
    # clean patches carry no simulated noise: their high-frequency energy is far below the noisy ones'
    detail = lambda x: np.abs(np.diff(x, axis=-1)).mean()  # noqa: E731
    assert detail(clean) < 0.7 * detail(noisy)


@pytest.mark.parametrize("residual", [False, True], ids=["paper", "residual"])
@pytest.mark.parametrize("method", ["disentangled", "cyclegan"])
def test_generator_loss_falls_on_a_fixed_batch(tmp_path, data_root, method, residual):
    config = _config(tmp_path, data_root, method)
    config.model.arguments["residual"] = residual
    trainer = GanTrainer(config, tmp_path / "run", show_progress=False)
    batch = [torch.from_numpy(part) for part in trainer.sampler.batch(4)]
    losses = [trainer.train_step(batch) for _ in range(12)]
    assert losses[-1] < losses[0]


def test_each_weight_switches_its_term(tmp_path, data_root):
    config = _config(tmp_path, data_root, adversarial=0.0, cycle=0.0, reconstruction=0.0, perceptual=0.0, kl=1.0)
    trainer = GanTrainer(config, tmp_path / "run", show_progress=False)
    noisy, clean = (torch.from_numpy(part) for part in trainer.sampler.batch(2))
    torch.manual_seed(0)
    images = trainer._translate(noisy, clean)
    from MRIDenoiseLib.training.losses import kl_to_standard_normal

    expected = kl_to_standard_normal(images["noise_mean"], images["noise_log_variance"])
    assert trainer.generator_loss(noisy, clean, images).item() == pytest.approx(expected.item())
    assert trainer.features is None  # perceptual weight 0: no feature network loaded


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

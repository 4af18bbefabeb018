"""Perceptual loss and transfer learning between training stages (paper 003's set-up)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_config
from safetensors.torch import save_file
from torch import nn

from MRIDenoiseLib.cli import main
from MRIDenoiseLib.models.weights import load_network, save_weights
from MRIDenoiseLib.nets import build_network
from MRIDenoiseLib.training.checkpoints import BEST_WEIGHTS_NAME, LAST_WEIGHTS_NAME
from MRIDenoiseLib.training.config import ConfigError, load_config
from MRIDenoiseLib.training.perceptual import PerceptualLoss, ResNetEncoderFeatures, VGG16Features
from MRIDenoiseLib.training.trainer import SupervisedTrainer

TINY_DCTD = {
    "architecture": "unet-dctd-a",
    "arguments": {"context": 1, "width": 0.25, "decoder_channels": [16, 16, 8, 8, 8], "noise_map": True},
}


class _Identity(nn.Module):
    def forward(self, image):
        return [image, 2 * image]


def test_perceptual_loss_matches_a_hand_computed_value():
    loss = PerceptualLoss(_Identity())
    prediction = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    target = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]]])
    # taps: |p - t| has mean 1.5, and 3.0 for the doubled tap; the loss averages the taps
    assert loss(prediction, target).item() == pytest.approx(2.25)
    assert loss(target, target).item() == 0.0


def test_perceptual_features_stay_frozen_while_gradients_reach_the_prediction():
    network = build_network(**TINY_DCTD)
    loss = PerceptualLoss(ResNetEncoderFeatures(network))
    loss.train()
    assert not loss.features.training
    prediction = torch.rand(2, 1, 32, 32, requires_grad=True)
    value = loss(prediction, torch.rand(2, 1, 32, 32))
    value.backward()
    assert value.item() > 0 and prediction.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.features.parameters())


def test_vgg16_features_load_torchvision_names_and_refuse_other_files(tmp_path):
    reference = VGG16Features()
    state = {f"features.{k}": torch.randn_like(v) for k, v in reference.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)  # the rest of a VGG-16 file is ignored
    save_file(state, tmp_path / "vgg16.safetensors")
    loaded = VGG16Features.from_file(tmp_path / "vgg16.safetensors")
    torch.testing.assert_close(loaded.features[0].weight, state["features.0.weight"])
    taps = loaded(torch.rand(1, 1, 32, 32))
    assert [t.shape[1:] for t in taps] == [(64, 32, 32), (128, 16, 16), (256, 8, 8)]
    save_file({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not a VGG-16"):
        VGG16Features.from_file(tmp_path / "other.safetensors")


def test_perceptual_transfer_features_need_a_transfer_stage(tmp_path, data_root):
    path = write_config(tmp_path, data_root, model={**TINY_DCTD}, perceptual={"weight": 0.1})
    with pytest.raises(ConfigError, match=r"transfer\.config"):
        load_config(path)


def _stage_configs(folder, data_root, **pretraining_fields):
    (folder / "stage1").mkdir()
    pretraining = write_config(
        folder / "stage1",
        data_root,
        model={"id": "tiny-pretrained", **TINY_DCTD},
        optim={"steps": 4},
        **pretraining_fields,
    )
    (folder / "pretrain.json").write_text(pretraining.read_text())
    finetuning = write_config(
        folder,
        data_root,
        model={"id": "tiny-finetuned", **TINY_DCTD},
        transfer={"config": "pretrain.json"},
        perceptual={"weight": 0.5, "features": "transfer"},
        optim={"steps": 3},
    )
    return finetuning


def test_one_train_command_runs_the_pretraining_stage_then_fine_tunes_from_it(tmp_path, data_root, capsys):
    finetuning = _stage_configs(tmp_path, data_root)
    runs = tmp_path / "runs"
    assert main(["train", str(finetuning), "--output", str(runs / "tiny-finetuned")]) == 0
    pretrained_dir = runs / "tiny-pretrained"
    state = json.loads(torch.load(pretrained_dir / "checkpoint.pt", weights_only=True)["state"])
    assert state["step"] == 4 and "tiny-pretrained" in capsys.readouterr().err

    # the fine-tuning network starts from the pretrained weights and keeps a frozen copy for its features
    config = load_config(finetuning)
    trainer = SupervisedTrainer(config, runs / "again", show_progress=False)
    pretrained = load_network(pretrained_dir / BEST_WEIGHTS_NAME, TINY_DCTD["architecture"], TINY_DCTD["arguments"])
    for name, tensor in pretrained.state_dict().items():
        torch.testing.assert_close(trainer.network.state_dict()[name], tensor, msg=name)
    assert trainer.perceptual is not None
    before = {k: v.clone() for k, v in trainer.perceptual.state_dict().items()}
    trainer.fit()
    for name, tensor in trainer.perceptual.state_dict().items():
        torch.testing.assert_close(tensor, before[name], msg=name)
    assert any(not torch.equal(trainer.network.state_dict()[k], v) for k, v in pretrained.state_dict().items())


def test_a_run_outside_runs_keeps_its_stage_inside_and_a_budget_stop_is_clean(tmp_path, data_root, capsys):
    finetuning = _stage_configs(tmp_path, data_root)
    output = tmp_path / "elsewhere" / "my-run"
    assert main(["train", str(finetuning), "--output", str(output), "--max-minutes", "0"]) == 0
    assert "run the same command again" in capsys.readouterr().err
    assert main(["train", str(finetuning), "--output", str(output)]) == 0
    assert (output / "stages" / "tiny-pretrained" / "checkpoint.pt").exists()
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["my-run"]


def test_fine_tuning_starts_from_the_weights_its_pretraining_config_exports(tmp_path, data_root):
    finetuning = _stage_configs(tmp_path, data_root, export_weights="last")
    runs = tmp_path / "runs"
    assert main(["train", str(finetuning), "--output", str(runs / "tiny-finetuned")]) == 0
    # make the stage's last weights differ from its best: the fine-tuning must take the last
    replacement = build_network(**TINY_DCTD)
    save_weights(runs / "tiny-pretrained" / LAST_WEIGHTS_NAME, replacement, **TINY_DCTD)
    trainer = SupervisedTrainer(load_config(finetuning), runs / "again", show_progress=False)
    for name, tensor in replacement.state_dict().items():
        torch.testing.assert_close(trainer.network.state_dict()[name], tensor, msg=name)


def test_fine_tuning_refuses_to_start_without_its_pretraining_stage(tmp_path, data_root):
    config = load_config(_stage_configs(tmp_path, data_root))
    with pytest.raises(FileNotFoundError, match="tiny-pretrained"):
        SupervisedTrainer(config, tmp_path / "runs" / "tiny-finetuned", show_progress=False)


def test_huber_loss_is_the_one_used_when_configured(tmp_path, data_root):
    config = load_config(write_config(tmp_path, data_root, optim={"loss": "huber"}))
    trainer = SupervisedTrainer(config, tmp_path / "run", show_progress=False)
    assert isinstance(trainer.pixel_loss, nn.HuberLoss)


def test_a_widening_stage_starts_as_the_function_its_pretraining_stage_learned(tmp_path, data_root):
    (tmp_path / "stage1").mkdir()
    narrow_model = {"id": "tiny-narrow", "arguments": {"context": 1, "channels": [8, 16]}}
    pretraining = write_config(tmp_path / "stage1", data_root, model=narrow_model, optim={"steps": 4})
    (tmp_path / "narrow.json").write_text(pretraining.read_text())
    wide_model = {"id": "tiny-wide", "arguments": {"context": 1, "channels": [12, 20]}}
    widening = write_config(tmp_path, data_root, model=wide_model, transfer={"config": "narrow.json", "widen": True})
    runs = tmp_path / "runs"
    SupervisedTrainer(load_config(pretraining), runs / "tiny-narrow", show_progress=False).fit()
    trainer = SupervisedTrainer(load_config(widening), runs / "tiny-wide", show_progress=False)
    narrow = load_network(runs / "tiny-narrow" / BEST_WEIGHTS_NAME, "residual-unet-2.5d", narrow_model["arguments"])
    inputs = torch.rand(2, 4, 32, 32)
    torch.testing.assert_close(trainer.network(inputs), narrow(inputs), atol=1e-5, rtol=0)
    assert trainer.network.head.weight.shape[1] == 12


def test_widening_needs_a_pretraining_config_and_a_residual_unet(tmp_path, data_root):
    path = write_config(tmp_path, data_root, transfer={"encoder_weights": "resnet.safetensors", "widen": True})
    with pytest.raises(ConfigError, match=r"transfer\.widen"):
        load_config(path)
    path = write_config(tmp_path, data_root, model={**TINY_DCTD}, transfer={"config": "other.json", "widen": True})
    with pytest.raises(ConfigError, match=r"transfer\.widen and transfer\.sum_skips are for residual-unet-2\.5d"):
        load_config(path)


def test_widening_refuses_a_pretraining_stage_of_another_architecture(tmp_path, data_root):
    (tmp_path / "stage1").mkdir()
    pretraining = write_config(
        tmp_path / "stage1", data_root, model={"id": "tiny-pretrained", **TINY_DCTD}, optim={"steps": 2}
    )
    (tmp_path / "pretrain.json").write_text(pretraining.read_text())
    widening = write_config(tmp_path, data_root, transfer={"config": "pretrain.json", "widen": True})
    runs = tmp_path / "runs"
    SupervisedTrainer(load_config(pretraining), runs / "tiny-pretrained", show_progress=False).fit()
    with pytest.raises(TypeError, match="tiny-pretrained"):
        SupervisedTrainer(load_config(widening), runs / "tiny-test", show_progress=False)


def test_a_distilling_stage_learns_the_source_networks_output_not_the_clean_target(tmp_path, data_root):
    (tmp_path / "stage1").mkdir()
    pretraining = write_config(tmp_path / "stage1", data_root, optim={"steps": 3})
    (tmp_path / "source.json").write_text(pretraining.read_text())
    runs = tmp_path / "runs"
    SupervisedTrainer(load_config(pretraining), runs / "tiny-test", show_progress=False).fit()
    ssim = {"ssim_weight": 0.3, "ssim_noise_normalised": True, "noise_normalised": True, "loss": "l2"}
    distilling = write_config(
        tmp_path,
        data_root,
        model={"id": "tiny-distilled"},
        optim=ssim,
        transfer={"config": "source.json", "distil": True},
    )
    student = SupervisedTrainer(load_config(distilling), runs / "tiny-distilled", show_progress=False)
    fine_tuning = write_config(
        tmp_path, data_root, model={"id": "tiny-tuned"}, optim=ssim, transfer={"config": "source.json"}
    )
    supervised = SupervisedTrainer(load_config(fine_tuning), runs / "tiny-tuned", show_progress=False)
    batch = [torch.from_numpy(part) for part in student.sampler.batch(4)]
    # both start as the source network; only against the source's own output is its loss zero
    assert student.batch_loss(batch).item() == pytest.approx(0.0, abs=1e-5)
    assert supervised.batch_loss(batch).item() > 1e-3
    assert not any(parameter.requires_grad for parameter in student.teacher.parameters())
    with pytest.raises(ConfigError, match=r"transfer\.distil needs a model or a config"):
        load_config(
            write_config(tmp_path, data_root, transfer={"encoder_weights": "resnet.safetensors", "distil": True})
        )

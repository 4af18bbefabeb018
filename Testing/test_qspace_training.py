"""The q-space trainer (paper 001): learning, resume, export tied to the gradient table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from MRIDenoiseLib.cli import main
from MRIDenoiseLib.models.catalog import load_catalog
from MRIDenoiseLib.models.store import locate_weights
from MRIDenoiseLib.models.weights import load_network
from MRIDenoiseLib.training.config import ConfigError, load_config
from MRIDenoiseLib.training.qspace import QSpaceTrainer


def write_config(folder: Path, architecture: str = "qspace-vae", **qspace) -> Path:
    config = {
        "kind": "qspace",
        "model": {
            "id": f"tiny-{architecture}",
            "title": "Tiny q-space",
            "architecture": architecture,
            "arguments": {"latent": 7},
        },
        "qspace": {"samples": 3000, "epochs": 4, "kl_start_epoch": 1, **qspace},
        "optim": {"batch_size": 128, "learning_rate": 0.004, "loss": "huber"},
        "seed": 3,
        "threads": 1,
    }
    path = folder / "qspace.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("architecture", ["qspace-vae", "qspace-dae"])
def test_training_lowers_validation_error_and_resumes(tmp_path, architecture):
    config = load_config(write_config(tmp_path, architecture))
    assert config.kind == "qspace"
    first = QSpaceTrainer(config, tmp_path / "run", show_progress=False)
    untrained = first.validate(first.network)["validation_mse"]
    first.fit(max_minutes=0)  # one epoch, then stop with a checkpoint
    assert first.state.step == 1
    second = QSpaceTrainer(config, tmp_path / "run", show_progress=False)
    assert second.resume() and second.state.step == 1
    second.fit()
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["validation_mse"] < untrained
    if architecture == "qspace-vae":
        assert [h["kl_weight"] for h in history] == pytest.approx([0.0, 1e-4, 2e-4, 3e-4])


def test_export_ties_the_model_to_its_gradient_table(tmp_path, capsys):
    config_path = write_config(tmp_path, epochs=2)
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(Path(__file__).parents[1] / "Resources" / "Models" / "catalog.json", models / "catalog.json")
    assert main(["train", str(config_path), "--output", str(tmp_path / "run")]) == 0
    assert main(["export", str(config_path), "--output", str(tmp_path / "run"), "--models-dir", str(models)]) == 0
    entry = load_catalog(models / "catalog.json").get("tiny-qspace-vae")
    assert entry.input == "dwi" and len(entry.gradient_table["bvalues"]) == 32
    assert entry.arguments == {"latent": 7}
    network = load_network(models / entry.weights, entry.architecture, {**entry.arguments, "measurements": 32})
    assert network(torch.rand(5, 32))[0].shape == (5, 32)
    assert "validation MSE" in (models / "tiny-qspace-vae.md").read_text() and locate_weights(entry)[1] == "missing"


def test_config_needs_exactly_one_data_section(tmp_path):
    path = write_config(tmp_path)
    raw = json.loads(path.read_text())
    raw["data"] = {"train": ["a.nii.gz"], "validation": ["b.nii.gz"]}
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="a qspace config has no section data"):
        load_config(path)


@pytest.mark.parametrize(
    "ignored",
    [
        {"optim": {"optimizer": "rmsprop"}},
        {"optim": {"ssim_weight": 0.5}},
        {"optim": {"precision": "bfloat16"}},
        {"export_weights": "last"},
    ],
)
def test_options_the_q_space_trainer_ignores_are_refused(tmp_path, ignored):
    path = write_config(tmp_path)
    raw = json.loads(path.read_text())
    for section, values in ignored.items():
        raw[section] = {**raw[section], **values} if isinstance(values, dict) else values
    path.write_text(json.dumps(raw))
    name = next(iter(ignored)) + ("." + next(iter(ignored["optim"])) if "optim" in ignored else "")
    with pytest.raises(ConfigError, match=f"{name}: not used by qspace training"):
        load_config(path)

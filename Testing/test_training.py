"""The supervised trainer: config validation, learning, exact resume, DDP, export."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fix_prediction, write_config
from monai.metrics.regression import compute_ssim_and_cs

from MRIDenoiseLib.models.catalog import load_catalog
from MRIDenoiseLib.models.weights import load_network
from MRIDenoiseLib.training.config import ConfigError, load_config
from MRIDenoiseLib.training.export import export_run
from MRIDenoiseLib.training.trainer import SupervisedTrainer


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"data": {"validation": ["train.nii.gz"]}}, "both train and validation"),
        ({"data": {"patch_size": 30}}, "multiple of 8"),
        ({"model": {"architecture": "resnet-9000"}}, "unknown architecture"),
        ({"optim": {"loss": "ssim"}}, "optim.loss"),
        ({"optim": {"momentum": 0.9}}, "optim.momentum: Extra inputs are not permitted"),
        ({"optim": {"steps": "100"}}, "optim.steps: Input should be a valid integer"),
        ({"data": {"train": "x.nii.gz"}}, "data.train: Input should be a valid array"),
        ({"kind": "qspace"}, "a qspace config needs 'qspace'"),
        ({"kind": "gan"}, "a gan config needs 'gan'"),
        ({"consensus": {"mode": "noise2noise"}, "kind": "supervised"}, "a supervised config has no section consensus"),
        ({"optim": {"precision": "float16"}}, "optim.precision"),
        ({"model": {"planes": "sideways"}}, "model.planes"),
        ({"data": {"preclean_planes": "sideways"}}, "data.preclean_planes"),
        ({"optim": {"ema_decay": 1.0}}, "optim.ema_decay"),
        (
            {
                "model": {"architecture": "cyclegan-generator", "arguments": {"width": 8, "blocks": 1}},
                "gan": {"clean_domain": ["other.nii.gz"], "method": "cyclegan"},
                "optim": {"ema_decay": 0.9},
            },
            "optim.ema_decay: not used by gan training",
        ),
        ({"model": {"arguments": {"context": 1, "depth": 3}}}, "model.arguments"),
        (
            {
                "model": {
                    "architecture": "cyclegan-generator",
                    "arguments": {"width": 8, "blocks": 1, "noise_scaled": True},
                },
                "gan": {"clean_domain": ["other.nii.gz"], "method": "cyclegan"},
            },
            "model.arguments",
        ),
        (
            {
                "model": {"architecture": "cyclegan-generator", "arguments": {"width": 8, "blocks": 1}},
                "gan": {"clean_domain": ["other.nii.gz"], "method": "cyclegan"},
                "optim": {"precision": "bfloat16"},
            },
            "optim.precision: not used by gan training",
        ),
    ],
)
def test_config_errors_name_the_field(tmp_path, data_root, override, message):
    """Each problem is refused with the field's path (no traceback, no silent coercion)."""
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, data_root, **override))


def _weights(trainer, network=None):
    return {k: v.clone() for k, v in (network or trainer.network).state_dict().items()}


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_training_lowers_the_loss_and_resumes_exactly(tmp_path, data_root, ema_decay):
    config = load_config(write_config(tmp_path, data_root, optim={"ema_decay": ema_decay}))
    straight = SupervisedTrainer(config, tmp_path / "straight", show_progress=False)
    straight.fit()
    losses = [
        h["loss"]
        for h in map(json.loads, (tmp_path / "straight" / "history.jsonl").read_text().splitlines())
        if "loss" in h
    ]
    assert losses[-1] < losses[0]

    first = SupervisedTrainer(config, tmp_path / "split", show_progress=False)
    config.optim.steps = 30
    first.fit(max_minutes=0)  # stops (with a checkpoint) after the first step
    assert first.state.step == 1
    second = SupervisedTrainer(config, tmp_path / "split", show_progress=False)
    assert second.resume() and second.state.step == 1
    second.fit()
    assert second.state.step == 30
    for name, tensor in _weights(straight).items():
        torch.testing.assert_close(_weights(second)[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    kept = _weights(second, second.kept_network)
    for name, tensor in _weights(straight, straight.kept_network).items():
        torch.testing.assert_close(kept[name], tensor, rtol=1e-4, atol=1e-5, msg=name)


def test_moving_average_of_the_weights_is_validated_and_saved(tmp_path, data_root):
    decay, steps = 0.8, 6
    config = load_config(write_config(tmp_path, data_root, optim={"ema_decay": decay, "steps": steps}))
    trainer = SupervisedTrainer(config, tmp_path / "run", show_progress=False)
    weights_after_each_step = []
    take_step = trainer.train_step

    def recording_step():
        losses = take_step()
        weights_after_each_step.append(_weights(trainer))
        return losses

    trainer.train_step = recording_step
    trainer.fit()
    assert len(weights_after_each_step) == steps
    expected = None
    for weights in weights_after_each_step:
        expected = (
            weights if expected is None else {k: decay * expected[k] + (1 - decay) * w for k, w in weights.items()}
        )
    saved = load_network(tmp_path / "run" / "last.safetensors", "residual-unet-2.5d", config.model.arguments)
    for name, tensor in saved.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-5, atol=1e-6, msg=name)
    assert any(not torch.allclose(tensor, weights[name]) for name, tensor in saved.state_dict().items())
    resumed = SupervisedTrainer(config, tmp_path / "run", show_progress=False)
    assert resumed.resume()
    for name, tensor in _weights(resumed, resumed.kept_network).items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-5, atol=1e-6, msg=name)
    plain = load_config(write_config(tmp_path, data_root, optim={"steps": steps}))
    SupervisedTrainer(plain, tmp_path / "plain", show_progress=False).fit(max_minutes=0)
    with pytest.raises(ConfigError, match=r"without optim\.ema_decay"):
        SupervisedTrainer(config, tmp_path / "plain", show_progress=False).resume()


@pytest.mark.parametrize(
    ("model", "optim"),
    [
        (
            {"architecture": "cdae", "arguments": {"context": 1, "filters": [8, 16, 16, 16]}},
            {"optimizer": "rmsprop", "loss": "l2", "learning_rate": 0.001},
        ),
        (
            {
                "architecture": "unet-dctd-a",
                "arguments": {"context": 1, "width": 0.25, "decoder_channels": [16, 16, 8, 8, 8]},
            },
            {"loss": "l1"},
        ),
    ],
    ids=["cdae", "unet-dctd-a"],
)
def test_paper_architectures_learn_in_a_few_steps(tmp_path, data_root, model, optim):
    config = load_config(
        write_config(tmp_path, data_root, model=model, optim={"steps": 20, **optim}, log_every=5, validate_every=20)
    )
    SupervisedTrainer(config, tmp_path / "run", show_progress=False).fit()
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 4 and losses[-1] < losses[0]


@pytest.mark.parametrize("native", [True, False])
def test_bfloat16_training_learns_where_native_and_falls_back_to_float32_elsewhere(
    tmp_path, data_root, monkeypatch, caplog, native
):
    # whether the CPU has AVX512-BF16 / AMX is the machine's: both answers are played here
    monkeypatch.setattr("MRIDenoiseLib.training.trainer.native_bfloat16", lambda device: native)
    config = load_config(write_config(tmp_path, data_root, optim={"precision": "bfloat16"}))
    trainer = SupervisedTrainer(config, tmp_path / "run", show_progress=False)
    assert trainer.bfloat16 is native
    assert ("no native bfloat16 arithmetic" in caplog.text) is not native  # emulated: said, and not used
    state = trainer.fit()
    assert state.hardware.endswith(", bfloat16") is native  # the model card says which precision ran
    losses = [
        h["loss"] for h in map(json.loads, (tmp_path / "run" / "history.jsonl").read_text().splitlines()) if "loss" in h
    ]
    assert losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in trainer.network.parameters())


def test_noise_normalised_loss_weighs_each_example_by_its_noise_level(tmp_path, data_root):
    config = load_config(write_config(tmp_path, data_root, optim={"noise_normalised": True}))
    trainer = SupervisedTrainer(config, tmp_path / "run", show_progress=False)
    trainer.model = lambda inputs: torch.zeros(2, 1, 4, 4)
    targets = torch.ones(2, 1, 4, 4)
    levels = torch.stack([torch.full((1, 4, 4), 0.1), torch.full((1, 4, 4), 0.2)])
    # L1 is 1 for both examples; divided by 0.1 and 0.2 that is 10 and 5, mean 7.5
    assert trainer.loss(torch.zeros(2, 4, 4, 4), targets, levels).item() == pytest.approx(7.5)
    config.optim.loss = "l2"
    trainer.pixel_loss = torch.nn.MSELoss(reduction="none")
    # squared errors scale with the noise variance: 1 / 0.01 and 1 / 0.04, mean 62.5
    assert trainer.loss(torch.zeros(2, 4, 4, 4), targets, levels).item() == pytest.approx(62.5)
    config.optim.noise_normalised = False
    assert trainer.loss(torch.zeros(2, 4, 4, 4), targets, levels).item() == pytest.approx(1.0)


def _benchmark_ssim(prediction: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The benchmark's SSIM (uniform 7x7 window, data range 1) of each slice, by MONAI's metric."""
    ssim, _ = compute_ssim_and_cs(
        prediction,
        targets,
        spatial_dims=2,
        kernel_size=[7, 7],
        kernel_sigma=[1.5, 1.5],
        data_range=1.0,
        kernel_type="uniform",
        k1=0.01,
        k2=0.03,
    )
    return ssim


def test_ssim_term_adds_its_weight_times_one_minus_the_benchmarks_ssim(tmp_path, data_root):
    config = load_config(write_config(tmp_path, data_root, optim={"ssim_weight": 0.5}))
    trainer = SupervisedTrainer(config, tmp_path / "run", show_progress=False)
    targets, prediction = fix_prediction(trainer, 0)
    levels = torch.full((2, 1, 16, 16), 0.1)
    l1 = (prediction - targets).abs().mean().item()
    ssim = _benchmark_ssim(prediction, targets)
    expected = l1 + 0.5 * (1 - ssim.mean().item())
    assert trainer.loss(torch.zeros(2, 4, 16, 16), targets, levels).item() == pytest.approx(expected, rel=1e-5)
    trainer.model = lambda inputs: targets  # a perfect prediction costs nothing
    assert trainer.loss(torch.zeros(2, 4, 16, 16), targets, levels).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError, match="ssim_weight"):
        load_config(write_config(tmp_path, data_root, optim={"ssim_weight": -1.0}))


def test_noise_normalised_ssim_term_weighs_low_noise_examples_more(tmp_path, data_root):
    optim = {"ssim_weight": 0.5, "ssim_noise_normalised": True}
    config = load_config(write_config(tmp_path, data_root, optim=optim))
    trainer = SupervisedTrainer(config, tmp_path / "run", show_progress=False)
    targets, prediction = fix_prediction(trainer, 1)
    levels = torch.stack([torch.full((1, 16, 16), 0.05), torch.full((1, 16, 16), 0.2)])
    ssim = _benchmark_ssim(prediction, targets)
    per_example = 1 - ssim.reshape(2, -1).mean(dim=1)
    l1 = (prediction - targets).abs().mean().item()
    # each example's 1 - SSIM over its own level: the low-noise one counts four times as much
    expected = l1 + 0.5 * (per_example[0] / 0.05 + per_example[1] / 0.2).item() / 2
    assert trainer.loss(torch.zeros(2, 4, 16, 16), targets, levels).item() == pytest.approx(expected, rel=1e-5)
    config.optim.ssim_noise_normalised = False
    plain = l1 + 0.5 * per_example.mean().item()
    assert trainer.loss(torch.zeros(2, 4, 16, 16), targets, levels).item() == pytest.approx(plain, rel=1e-5)
    with pytest.raises(ConfigError, match="ssim_noise_normalised"):
        load_config(write_config(tmp_path, data_root, optim={"ssim_noise_normalised": True}))


def test_export_can_ship_the_final_weights_instead_of_the_best(tmp_path, data_root):
    config = load_config(
        write_config(
            tmp_path, data_root, optim={"steps": 10}, export_weights="last", data={"validation_tone_curves": 1}
        )
    )
    SupervisedTrainer(config, tmp_path / "run", show_progress=False).fit()
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(Path(__file__).parents[1] / "Resources" / "Models" / "catalog.json", models / "catalog.json")
    weights = export_run(config, tmp_path / "run", models)
    assert weights.read_bytes() == (tmp_path / "run" / "last.safetensors").read_bytes()
    card = (models / "tiny-test.md").read_text()
    assert "final weights exported" in card
    assert "| remapped |" in card and "remapped %" not in card  # a column of tone-curved slabs, not a level
    with pytest.raises(ConfigError, match="export_weights"):
        load_config(write_config(tmp_path, data_root, export_weights="median"))


def test_resume_refuses_a_checkpoint_of_another_network(tmp_path, data_root):
    config = load_config(write_config(tmp_path, data_root, optim={"steps": 2}))
    SupervisedTrainer(config, tmp_path / "run", show_progress=False).fit()
    config.optim.steps = 4  # more steps: allowed
    assert SupervisedTrainer(config, tmp_path / "run", show_progress=False).resume()
    other = load_config(write_config(tmp_path, data_root, model={"arguments": {"context": 1, "channels": [8, 16, 16]}}))
    with pytest.raises(ConfigError, match="another network or data"):
        SupervisedTrainer(other, tmp_path / "run", show_progress=False).resume()


def test_export_writes_weights_card_and_catalogue_entry(tmp_path, data_root):
    config = load_config(write_config(tmp_path, data_root, optim={"steps": 10}))
    SupervisedTrainer(config, tmp_path / "run", show_progress=False).fit()
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(Path(__file__).parents[1] / "Resources" / "Models" / "catalog.json", models / "catalog.json")
    weights = export_run(config, tmp_path / "run", models)
    catalog = load_catalog(models / "catalog.json")
    entry = catalog.get("tiny-test")
    assert weights.name == "tiny-test.safetensors" and entry.size == weights.stat().st_size
    card = (models / "tiny-test.md").read_text()
    assert entry.sha256 in card and "train.nii.gz" in card and "val.nii.gz" in card
    assert entry.planes == config.model.planes == "auto"
    assert entry.training["steps"] == 10 and entry.metrics["validation_during_training"]["psnr_foreground"] > 20

    # a second export replaces the entry where it stands instead of moving it to the end
    catalog_path = models / "catalog.json"
    payload = json.loads(catalog_path.read_text())
    payload["models"].append(payload["models"].pop(0))  # another model now follows tiny-test
    catalog_path.write_text(json.dumps(payload))
    order = [m["id"] for m in payload["models"]]
    export_run(config, tmp_path / "run", models)
    assert [m["id"] for m in json.loads(catalog_path.read_text())["models"]] == order


DDP_TRAINERS = {
    "supervised": {},
    "consensus": {
        "model": {"architecture": "consensus-pair", "arguments": {"context": 1, "channels": [8, 16]}},
        "consensus": {"mode": "consensus"},
    },
    "gan": {
        "model": {"architecture": "cyclegan-generator", "arguments": {"width": 8, "blocks": 1}},
        "gan": {"clean_domain": ["other.nii.gz"], "method": "cyclegan"},
    },
}


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")
@pytest.mark.parametrize("paradigm", list(DDP_TRAINERS))
def test_ddp_with_two_cpu_processes(tmp_path, data_root, paradigm):
    config = write_config(tmp_path, data_root, optim={"steps": 6}, **DDP_TRAINERS[paradigm])
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(29517 + list(DDP_TRAINERS).index(paradigm)),
        "-m",
        "MRIDenoiseLib",
        "train",
        str(config),
        "--output",
        str(tmp_path / "ddp"),
    ]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=environment,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert (tmp_path / "ddp" / "checkpoint.pt").exists()
    assert "step 6/6" in completed.stdout
    state = json.loads(torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)["state"])
    assert state["step"] == 6 and "2 processes" in state["hardware"]


@pytest.mark.slow
def test_a_catalogue_model_pre_cleans_closer_to_the_truth_than_non_local_means(tmp_path, data_root):
    from MRIDenoiseLib.io import read_volume, write_volume
    from MRIDenoiseLib.metrics import psnr
    from MRIDenoiseLib.noise import add_noise, sigma_for_level
    from MRIDenoiseLib.normalization import intensity_scale
    from MRIDenoiseLib.training.data import load_training_volume

    clean = read_volume(data_root / "val.nii.gz")
    write_volume(
        clean.with_array(add_noise(clean.array, sigma_for_level(clean.array, 5), "rician", 4)),
        tmp_path / "noisy.nii.gz",
    )
    truth = clean.array / intensity_scale(clean.array)
    by_model = load_training_volume(tmp_path / "noisy.nii.gz", 1.5, "mridenoise-rician-2.5d").clean
    by_nlm = load_training_volume(tmp_path / "noisy.nii.gz", 1.5).clean
    mask = truth > 0.1
    assert (
        psnr(truth / truth.max(), by_model / truth.max(), mask)
        > psnr(truth / truth.max(), by_nlm / truth.max(), mask) + 1
    )
    three_planes = load_training_volume(tmp_path / "noisy.nii.gz", 1.5, "mridenoise-rician-2.5d", "all").clean
    assert not np.allclose(three_planes, by_model)
    cached = list((Path(os.environ["MRIDENOISE_CACHE_DIR"]) / "training-volumes").glob("*.npy"))
    assert len(cached) == 3  # one entry per cleaner and way of running it


@pytest.mark.slow
def test_validation_references_are_cleaned_like_training_volumes(tmp_path, data_root):
    from MRIDenoiseLib.io import read_volume, write_volume
    from MRIDenoiseLib.noise import add_noise, estimate_sigma, sigma_for_level
    from MRIDenoiseLib.normalization import intensity_scale

    clean = read_volume(data_root / "val.nii.gz")
    noisy = add_noise(clean.array, sigma_for_level(clean.array, 5), "rician", 2)
    write_volume(clean.with_array(noisy), tmp_path / "noisy_val.nii.gz")
    shutil.copy(data_root / "train.nii.gz", tmp_path / "train.nii.gz")
    overrides = {"data": {"root": str(tmp_path), "validation": ["noisy_val.nii.gz"], "preclean_above_percent": 1.5}}
    config = load_config(write_config(tmp_path, data_root, **overrides))
    trainer = SupervisedTrainer(config, tmp_path / "run", show_progress=False)
    reference = trainer.validation[0].clean  # normalised: the brightest tissue has mean 1
    assert estimate_sigma(reference) < 0.015 < estimate_sigma(noisy / intensity_scale(noisy))


def test_the_published_config_schema_is_current():
    """docs/training-config.schema.json is what the config models say (regenerate it when they change)."""
    import json
    from pathlib import Path

    from MRIDenoiseLib.training.config import config_schema

    published = json.loads((Path(__file__).resolve().parents[1] / "docs" / "training-config.schema.json").read_text())
    assert published == config_schema(), "run: python -m MRIDenoiseLib config-schema > docs/training-config.schema.json"

"""Shared fixtures: real bundled MRI, a private weights cache, small oblique volumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from MRIDenoiseLib.io import read_volume, write_volume
from MRIDenoiseLib.volume import Geometry, Volume

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "Resources" / "SampleData"
SAMPLE = SAMPLES / "colin27_t1_1mm_slab.nii.gz"
SAMPLE_MASK = SAMPLES / "colin27_t1_1mm_slab_brainmask.nii.gz"
PHILIPS_DWI = REPO.parent / "shared" / "data" / "dwi" / "philips_dti_b1000_12dir_5b0.nii.gz"


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own empty weights cache and never goes offline by accident."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("MRIDENOISE_CACHE_DIR", str(cache))
    monkeypatch.delenv("MRIDENOISE_OFFLINE", raising=False)
    return cache


@pytest.fixture(scope="session")
def colin_slab() -> Volume:
    """Real Colin27 T1 (1 mm), an axial slab bundled with the extension."""
    return read_volume(SAMPLE)


@pytest.fixture(scope="session")
def colin_mask() -> np.ndarray:
    return read_volume(SAMPLE_MASK).array > 0


@pytest.fixture(scope="session")
def colin_crop(colin_slab) -> np.ndarray:
    """A 24 x 96 x 96 float32 crop through the brain, small enough for fast tests."""
    array = colin_slab.array.astype(np.float32)
    z, y, x = array.shape
    return np.ascontiguousarray(array[z // 2 - 12 : z // 2 + 12, y // 2 - 48 : y // 2 + 48, x // 2 - 48 : x // 2 + 48])


@pytest.fixture
def dwi_crop(tmp_path) -> Path:
    """A 10 x 40 x 40 crop of the real Philips DWI (5 b0 + 12 directions at b = 1000), with its .bval/.bvec."""
    if not PHILIPS_DWI.exists():
        pytest.skip("needs ../shared/data")
    series = read_volume(PHILIPS_DWI)
    crop = Volume(np.ascontiguousarray(series.array[11:21, 36:76, 36:76]), series.geometry, series.diffusion)
    path = tmp_path / "crop.nii.gz"
    write_volume(crop, path)
    return path


@pytest.fixture
def oblique_geometry() -> Geometry:
    """Anisotropic spacing and a direction rotated about all three axes."""
    a, b, c = np.radians([20.0, -35.0, 10.0])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return Geometry((0.9, 1.3, 2.7), (-12.5, 33.25, 7.125), tuple((rz @ ry @ rx).ravel()))


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """Two halves of the bundled real slab, one to train and one to validate on, and the training half
    mirrored left-right (``other.nii.gz``: a second "subject", for unpaired training)."""
    root = tmp_path_factory.mktemp("data")
    slab = read_volume(SAMPLE)
    half = slab.array.shape[0] // 2
    for name, part in (("train", slice(0, half)), ("val", slice(half, None))):
        write_volume(
            Volume(slab.array[part, 40:168, 30:158].astype(np.float32), slab.geometry), root / f"{name}.nii.gz"
        )
    mirrored = slab.array[:half, 40:168, 30:158][:, :, ::-1].astype(np.float32)
    write_volume(Volume(np.ascontiguousarray(mirrored), slab.geometry), root / "other.nii.gz")
    return root


def write_config(folder: Path, data_root: Path, **overrides) -> Path:
    """A tiny training config (a 2-level U-Net, 32-px patches) with sections overridden key by key."""
    config = {
        "model": {
            "id": "tiny-test",
            "title": "Tiny",
            "architecture": "residual-unet-2.5d",
            "arguments": {"context": 1, "channels": [8, 16]},
        },
        "data": {
            "root": str(data_root),
            "train": ["train.nii.gz"],
            "validation": ["val.nii.gz"],
            "patch_size": 32,
            "validation_slices": 8,
            "validation_levels_percent": [10.0],
            "preclean_above_percent": None,
        },
        "optim": {"steps": 30, "batch_size": 4, "learning_rate": 0.003, "warmup_steps": 2},
        "seed": 5,
        "validate_every": 10,
        "log_every": 5,
        "threads": 1,
    }
    for section, values in overrides.items():
        config[section] = {**config.get(section, {}), **values} if isinstance(values, dict) else values
    config.setdefault("kind", next((kind for kind in ("consensus", "gan", "qspace") if kind in config), "supervised"))
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    return path


class StepClock:
    """A clock that advances ``seconds`` each time it is read: a training time budget becomes a fixed
    number of steps, whatever the machine's speed or load."""

    def __init__(self, seconds: float) -> None:
        self.now, self.seconds = 0.0, seconds

    def __call__(self) -> float:
        self.now += self.seconds
        return self.now


def fix_prediction(trainer, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two seeded 16 x 16 targets and a prediction 0.1 off them, which ``trainer``'s model now returns
    whatever its input: a loss test knows what goes into the loss."""
    generator = torch.Generator().manual_seed(seed)
    targets = torch.rand(2, 1, 16, 16, generator=generator)
    prediction = targets + 0.1 * torch.randn(2, 1, 16, 16, generator=generator)
    trainer.model = lambda inputs: prediction
    return targets, prediction

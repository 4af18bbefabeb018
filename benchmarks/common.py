"""Shared parts of the benchmarks: validation volumes, seeded noise draws, machine description.

Everything follows ../shared/design/EVALUATION.md. Volumes come from ../shared/data (or
MRIDENOISE_DATA_ROOT) and were never used to train the shipped models.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from MRIDenoiseLib.inference import autocast_dtype, select_device
from MRIDenoiseLib.machine import cpu_model
from MRIDenoiseLib.masks import brightest_tissue_mean
from MRIDenoiseLib.noise import add_noise

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
LEVELS = [1, 3, 5, 10, 15, 20, 25, 30]


def data_root() -> Path:
    return Path(os.environ.get("MRIDENOISE_DATA_ROOT", REPO.parent / "shared" / "data"))


@dataclass
class ValidationVolume:
    """A clean reference, its foreground mask and how both were obtained."""

    name: str
    clean: np.ndarray
    mask: np.ndarray
    spacing_zyx: tuple[float, float, float]
    source: str
    licence: str
    crop: str
    mask_rule: str


def _read(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image).astype(np.float32), tuple(image.GetSpacing()[::-1])


def colin27_crop() -> ValidationVolume:
    """Central 96 x 128 x 128 brain crop of Colin27 (1 mm, the BrainWeb grid) with its brain mask."""
    crop = (slice(31, 127), slice(44, 172), slice(25, 153))
    clean, spacing = _read(data_root() / "anat" / "colin27_t1_1mm.nii.gz")
    brain, _ = _read(data_root() / "anat" / "colin27_t1_1mm_brain.nii.gz")
    return ValidationVolume(
        "colin27_t1",
        np.ascontiguousarray(clean[crop]),
        brain[crop] > 0,
        spacing,
        "anat/colin27_t1_1mm.nii.gz",
        "BSD-3-Clause (mricron-data); MNI, Holmes et al. 1998",
        "z 31:127, y 44:172, x 25:153 (numpy order)",
        "colin27_t1_1mm_brain > 0",
    )


def ixi_volume(name: str) -> ValidationVolume:
    """A held-out IXI T1 (2 mm). Its own noise (~5 % of white matter) stays in the reference."""
    clean, spacing = _read(data_root() / "anat" / "ixi_t1_2mm" / name)
    normalised = clean / clean.max()
    return ValidationVolume(
        name.split("-T1")[0] + "_t1",
        clean,
        normalised > 0.1,
        spacing,
        f"anat/ixi_t1_2mm/{name}",
        "IXI, CC BY-SA 3.0",
        "none",
        "clean > 0.1 x max (EVALUATION.md fallback)",
    )


def noise_draw(volume: ValidationVolume, level: float, seed: int) -> tuple[np.ndarray, float]:
    """Rician noise at ``level`` % of the brightest tissue inside the volume's mask."""
    sigma = level / 100.0 * brightest_tissue_mean(volume.clean, volume.mask)
    return add_noise(volume.clean, sigma, "rician", seed), sigma


def machine() -> dict[str, object]:
    """The machine a number was measured on (EVALUATION.md: always name it)."""
    description = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "network_precision": str(autocast_dtype(select_device("auto")) or torch.float32).removeprefix("torch."),
    }
    if torch.cuda.is_available():
        description["gpu"] = torch.cuda.get_device_name(0)
    return description


def write_json(path: Path, payload: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def replace_card_section(card_path: Path, start: str, end: str, lines: list[str]) -> None:
    """Put ``lines`` between the ``start`` / ``end`` markers of a model card (appended when absent)."""
    if not card_path.exists():
        return
    card = card_path.read_text()
    if start in card:
        card = card[: card.index(start)] + card[card.index(end) + len(end) + 1 :]
    card_path.write_text(card.rstrip() + "\n\n" + "\n".join([start, *lines, end]) + "\n")

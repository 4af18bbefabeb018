"""Shared parts of the benchmarks: validation volumes, seeded noise draws, machine description.

Everything follows ../shared/design/EVALUATION.md. Volumes come from ../shared/data (or
MRIDENOISE_DATA_ROOT) and were never used to train the shipped models.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from MRIDenoiseLib.denoisers import WienerRefined
from MRIDenoiseLib.inference import reduced_precision
from MRIDenoiseLib.machine import cpu_identity, cpu_model
from MRIDenoiseLib.masks import brightest_tissue_mean, foreground_mask
from MRIDenoiseLib.models.catalog import load_catalog
from MRIDenoiseLib.noise import add_noise
from MRIDenoiseLib.training.data import boundary_share

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
LEVELS = [1, 3, 5, 10, 15, 20, 25, 30]
SPEED_LEVEL = 10.0
"""The noise level (%) of the speed benchmark's volume unless its ``--level`` says otherwise."""


PICTURED_PEERS = ("bm4d", "dipy-nlmeans", "ants")
"""The peers a quality picture shows beside the default model (EVALUATION.md's, BM4D first)."""


def pictured_methods() -> list[str]:
    """What a quality picture shows, left to right, and so what its slices file keeps: the
    reference, the noisy input, the default model and :data:`PICTURED_PEERS`."""
    return ["clean", "noisy", load_catalog().default_id, *PICTURED_PEERS]


def level_of(speed_record: dict) -> float:
    """A speed record's noise level (%); records made before the level was recorded used :data:`SPEED_LEVEL`."""
    return float(speed_record.get("level_percent", SPEED_LEVEL))


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
    noise_free: bool = False
    """Clean by construction (simulated): the reference has no noise of its own."""


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


_SPINE_T2STAR = ("spine/spine_t2star_unf02_siemens_prisma_3t.nii.gz", "CC0 (spine-generic)")
_UIH_T1 = ("repeats/uih_t1/uih_umr770_t1_gre_session1.nii.gz", "BSD-2 (C. Rorden, dcm_qa_uih)")
CONTRAST_REFERENCES = {
    "stroke_flair": ("anat_more/stroke_flair_8bit_brain.nii.gz", "MIT (C-STAR via neurolabusc VolumeRenderingData)"),
    "t2_tse_head": ("anat_more/t2_tse_axial.nii.gz", "BSD-2 (niivue-demo-images)"),
    "spine_t2w": ("spine/spine_unf01_T2w_resampled.nii.gz", "CC0 (spine-generic)"),
    "spine_t2star_2x": _SPINE_T2STAR,
    "uih_t1_gre_2x": _UIH_T1,
    "spine_t2star_4x": _SPINE_T2STAR,
    "uih_t1_gre_4x": _UIH_T1,
}
"""Other contrasts, anatomy and vendors, none trained on (stroke FLAIR, T2 TSE head, cervical spine T2w, a
cervical spine T2* on the scanner's own 5 mm slices, a United Imaging T1 GRE): name -> (path under the data
root, licence). Each keeps its own scanner noise (and the FLAIR its 8-bit steps)."""
DOWNSAMPLED = {
    "uih_t1_gre_2x": (1, 2, 2),
    "spine_t2star_2x": (1, 2, 2),
    "uih_t1_gre_4x": (2, 4, 4),
    "spine_t2star_4x": (1, 4, 4),
}
"""References averaged over blocks of voxels (z, y, x) first: a high-resolution scan made cleaner (a 2 x 2
in-plane mean halves i.i.d. noise), the way issue 20 asks for clean-enough references. The ``_4x`` ones
average further (the UIH T1 over 2 x 4 x 4 voxels, 2 mm isotropic, where white noise would fall to a sixth
of the scan's; the spine T2* over 4 x 4 in-plane, a quarter), so that the reference's own noise cannot decide the 3 %
cells. On those two the engine's own-noise reading (quality.md's "own noise" and "perfect denoiser" rows)
is mostly their anatomy, which the estimator's Haar band counts: told the true sigma the default scores
far above that "bound" (README, "Cleaner references, and what the blind gap is")."""
CONTRAST_CROP = (48, 160, 160)


def block_mean(array: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """The mean of each block of ``factors`` voxels (edges that do not fill a block are dropped)."""
    kept = [size - size % factor for size, factor in zip(array.shape, factors, strict=True)]
    trimmed = array[: kept[0], : kept[1], : kept[2]]
    shape = [part for size, factor in zip(kept, factors, strict=True) for part in (size // factor, factor)]
    return trimmed.reshape(shape).mean(axis=(1, 3, 5)).astype(np.float32)


def interpolation_knots(clean: np.ndarray, mask: np.ndarray) -> dict[str, list[int]]:
    """Axes along which ``clean`` was linearly interpolated, each with the slices that carry measured signal.

    Between two measured slices a linear interpolation leaves an exactly straight profile: the second
    difference along the axis is zero (to float precision) on every slice but the measured ones. An axis
    is reported where at least half of its inner slices are straight inside ``mask``; its knots are the
    slices that are not, and the two ends. Such a reference has fewer independent slices than it shows,
    and noise added over it is unlike any scanner's (a resampled scan's own noise is interpolated too).
    """
    knots = {}
    scale = float(np.abs(clean[mask]).mean()) if mask.any() else 1.0
    for axis, label in enumerate("zyx"):
        if clean.shape[axis] < 5:
            continue
        bend = np.moveaxis(np.abs(np.diff(clean.astype(np.float64), 2, axis=axis)), axis, 0)
        inner = np.moveaxis(mask, axis, 0)[1:-1]
        straight = [bool((b[m] <= 1e-5 * scale).all()) if m.any() else False for b, m in zip(bend, inner, strict=True)]
        if sum(straight) >= len(straight) / 2:
            measured = [0, *(index + 1 for index, flat in enumerate(straight) if not flat), clean.shape[axis] - 1]
            knots[label] = measured
    return knots


def _crop_text(window: tuple[slice, ...]) -> str:
    return ", ".join(f"{axis} {w.start}:{w.stop}" for axis, w in zip("zyx", window, strict=True)) + " (numpy order)"


def contrast_volume(name: str) -> ValidationVolume:
    """A central crop (at most 48 x 160 x 160) of one of :data:`CONTRAST_REFERENCES`, its foreground mask."""
    path, licence = CONTRAST_REFERENCES[name]
    clean, spacing = _read(data_root() / path)
    if name in DOWNSAMPLED:
        factors = DOWNSAMPLED[name]
        clean = block_mean(clean, factors)
        spacing = tuple(s * f for s, f in zip(spacing, factors, strict=True))
    starts = [max((size - want) // 2, 0) for size, want in zip(clean.shape, CONTRAST_CROP, strict=True)]
    window = tuple(
        slice(s, min(s + want, size)) for s, want, size in zip(starts, CONTRAST_CROP, clean.shape, strict=True)
    )
    crop = np.ascontiguousarray(clean[window])
    return ValidationVolume(
        name,
        crop,
        foreground_mask(crop),
        spacing,
        path,
        licence,
        _crop_text(window),
        "engine foreground_mask",
    )


SIMULATED_CONTRASTS = {
    "t1": ((0.15, 0.45, 0.65), (0.0, 0.35, 1.0)),
    "t2": ((1.0, 0.55, 0.40), (0.0, 0.30, 0.50)),
    "pd": ((0.95, 0.80, 0.65), (0.0, 0.60, 0.90)),
}
"""Signal of each tissue in a simulated contrast: (CSF, grey, white matter) inside the brain, (air, soft
tissue, fat) outside it, as BrainWeb orders them (T2: CSF brightest; PD: little grey-white contrast)."""
SIMULATED_CROP = (slice(47, 111), slice(52, 164), slice(33, 145))
BRAIN_CENTRES = (35.0, 82.0, 115.0)
HEAD_CENTRES = (0.0, 70.0, 210.0)
MEMBERSHIP_WIDTH = 0.12
SOURCE_SMOOTHING = 0.75
"""Gaussian width (voxels) that takes Colin27's own residual noise out of the memberships first."""


def fuzzy_memberships(intensity: np.ndarray, centres: tuple[float, ...], width: float) -> np.ndarray:
    """One partial-volume fraction per class (summing to 1) from an intensity and the classes' centres.

    A voxel between two neighbouring centres belongs to both; a logistic of the way between them, of
    ``width`` (fraction of the gap, `boundary_share`, as the training's fuzzy tissue models use it), keeps the
    transition a voxel or two wide instead of the source's blur.
    """
    position = np.interp(intensity, centres, np.arange(len(centres), dtype=np.float64))
    lower = np.minimum(np.floor(position).astype(int), len(centres) - 2)
    upper_share = boundary_share(position - lower, width)
    memberships = np.zeros((len(centres), *intensity.shape), np.float32)
    for index in range(len(centres) - 1):
        here = lower == index
        memberships[index][here] = 1.0 - upper_share[here]
        memberships[index + 1][here] = upper_share[here]
    return memberships


def simulated_volume(contrast: str) -> ValidationVolume:
    """A noise-free, sharp BrainWeb-style brain in ``contrast`` (t1, t2 or pd), 64 x 112 x 112 voxels.

    Colin27's T1 intensities, its residual noise smoothed out, give fuzzy tissue memberships (CSF, grey and
    white matter inside its brain mask; air, soft tissue and fat outside), sharpened to partial volume at
    the boundaries only; each contrast gives every tissue its signal (:data:`SIMULATED_CONTRASTS`). Clean by
    construction, sharper than any averaged scan, and in contrasts the training scans (T1s and one T2) lack.
    """
    if contrast not in SIMULATED_CONTRASTS:
        raise ValueError(f"no simulated contrast {contrast!r}: choose one of {', '.join(SIMULATED_CONTRASTS)}")
    head, spacing = _read(data_root() / "anat" / "colin27_t1_1mm.nii.gz")
    brain_mask, _ = _read(data_root() / "anat" / "colin27_t1_1mm_brain.nii.gz")
    head = ndimage.gaussian_filter(head, SOURCE_SMOOTHING)[SIMULATED_CROP]
    inside = brain_mask[SIMULATED_CROP] > 0
    brain_signal, head_signal = SIMULATED_CONTRASTS[contrast]
    brain = np.tensordot(brain_signal, fuzzy_memberships(head, BRAIN_CENTRES, MEMBERSHIP_WIDTH), 1)
    rest = np.tensordot(head_signal, fuzzy_memberships(head, HEAD_CENTRES, MEMBERSHIP_WIDTH), 1)
    return ValidationVolume(
        f"sim_{contrast}",
        np.ascontiguousarray(np.where(inside, brain, rest), dtype=np.float32),
        inside,
        spacing,
        "simulated from anat/colin27_t1_1mm.nii.gz (fuzzy tissue model, benchmarks/common.py)",
        "BSD-3-Clause (mricron-data); MNI, Holmes et al. 1998",
        _crop_text(SIMULATED_CROP),
        "colin27_t1_1mm_brain > 0",
        noise_free=True,
    )


def validation_volume(name: str) -> ValidationVolume:
    """A quality-benchmark reference by its command-line name: ``colin27``, ``sim_<contrast>``, one of
    :data:`CONTRAST_REFERENCES` or an IXI file name."""
    if name == "colin27":
        return colin27_crop()
    if name.startswith("sim_"):
        return simulated_volume(name.removeprefix("sim_"))
    return contrast_volume(name) if name in CONTRAST_REFERENCES else ixi_volume(name)


def draw_seed(level: float) -> int:
    """The quality benchmark's noise seed at ``level`` %: other benchmarks reuse its draws (and its BM4D scores)."""
    return 1000 + round(level * 10)


def noise_draw(volume: ValidationVolume, level: float, seed: int) -> tuple[np.ndarray, float]:
    """Rician noise at ``level`` % of the brightest tissue inside the volume's mask."""
    sigma = level / 100.0 * brightest_tissue_mean(volume.clean, volume.mask)
    return add_noise(volume.clean, sigma, "rician", seed), sigma


def machine() -> dict[str, object]:
    """The machine a number was measured on (EVALUATION.md: always name it)."""
    description = {
        "cpu": cpu_model(),
        "cpu_identity": cpu_identity(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "network_precision": str(reduced_precision() or torch.float32).removeprefix("torch."),
    }
    if torch.cuda.is_available():
        description["gpu"] = torch.cuda.get_device_name(0)
    return description


def host_label(description: dict[str, object]) -> str:
    """A :func:`machine` description as a row's host: the processor's name and its family, model, stepping."""
    return f"{description['cpu']} ({description['cpu_identity']})"


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


def timing_the_low_noise_step() -> list[float]:
    """From now on, the seconds of every call's low-noise stage after the network (the correlation gate,
    the share's measurement, the Wiener step and the blend: ``WienerRefined._refine``), appended to the
    list returned: the stage's own cost, measured within the run, so host drift between runs cannot hide it."""
    seconds: list[float] = []
    refine = WienerRefined._refine

    def timed(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return refine(self, *args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - started)

    WienerRefined._refine = timed  # type: ignore[method-assign]
    return seconds

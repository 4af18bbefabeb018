"""The "two acquisitions" path: learn a denoiser from two noisy scans of the same object.

The second scan is registered rigidly to the first and resampled onto its grid. Then, within the
time budget:

1. A consensus pair (paper 004) whose members both start from a trained 2.5-D network
   (``consensus-unet`` by default) is trained on matching patches of the two scans with the
   consensus loss (8) and weight decay (10). The loss only asks the mean of the two members, each
   on its own scan, to match the object, so each member alone keeps part of the noise (it counts
   on the other scan's noise averaging it out). The two scans are then combined by (9).
2. The paper's closing suggestion: one network (starting from the same trained network) is
   distilled to map either scan alone to that combined image, so the user model denoises single
   later scans too.

For both stages every tenth slice is held out and its loss (for stage 1 an unbiased proxy of the
error against the unknown clean image, up to a constant) picks the best weights. The distilled
network is registered as a user model. Nothing is written when cancelled.
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..denoisers.network import NetworkDenoiser, slice_axis_for
from ..errors import InputError
from ..inference import denoise_slices
from ..io import read_volume, write_volume
from ..masks import foreground_mask
from ..models.catalog import ModelEntry, new_user_model_id, register_user_model
from ..models.hashing import sha256_of
from ..models.paths import user_models_dir
from ..models.weights import save_weights
from ..nets.consensus import ConsensusPair
from ..nets.unet25d import ResidualUNet25D
from ..noise import estimate_sigma, signal_from_rician_mean
from ..normalization import intensity_scale
from ..progress import CancelToken, ProgressCallback, no_progress, scaled
from ..registration import align
from ..volume import Volume
from .budget import BudgetFit, Clock, fit_within_budget, split_slices
from .consensus import STUDENT_ARCHITECTURE
from .losses import consensus_loss, squared_error, weight_decay

DEFAULT_BASE_MODEL = "consensus-unet"
WEIGHT_DECAY = 1e-6
PATCH_SIZE = 64
BATCH_SIZE = 8
LEARNING_RATE = 1e-4
PAIR_SHARE = 0.6
"""Share of the time budget spent on the pair; the rest distils it into one network."""


@dataclass
class ConsensusResult:
    """The registered user model, the two scans combined (9), and what each training stage did."""

    entry: ModelEntry
    denoised: Volume
    pair: BudgetFit
    distillation: BudgetFit
    seconds: float
    sigmas: tuple[float, float]
    translation_mm: float
    rotation_degrees: float
    intensity_gain: float
    """Factor the second scan was scaled by to match the first's intensities."""

    @property
    def steps(self) -> int:
        return self.pair.steps + self.distillation.steps


class _TwoScanPatches:
    """Matching patches of two aligned, normalised scans, each with its own noise-level map."""

    def __init__(self, scans: tuple[np.ndarray, np.ndarray], sigmas: tuple[float, float], context: int) -> None:
        depth = 2 * context + 1
        if scans[0].shape[0] < depth:
            pad = ((0, depth - scans[0].shape[0]), (0, 0), (0, 0))
            scans = (np.pad(scans[0], pad, mode="edge"), np.pad(scans[1], pad, mode="edge"))
        self.scans, self.sigmas, self.context = scans, sigmas, context
        self.target = np.zeros_like(scans[0])
        self.patch = min(PATCH_SIZE, *scans[0].shape[1:])
        self.train_slices, self.held_out_slices = split_slices(scans[0].shape[0], context)

    def set_target(self, target: np.ndarray) -> None:
        """The combined image (9) that the distillation stage fits, on the scans' grid."""
        self.target = np.pad(
            target,
            [(0, have - want) for have, want in zip(self.scans[0].shape, target.shape, strict=True)],
            mode="edge",
        )

    def batch(self, size: int, slices: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """The same windows of both scans (network inputs) and of the target (centre slice)."""
        examples = [self._example(int(rng.choice(slices)), rng) for _ in range(size)]
        return tuple(np.stack(part) for part in zip(*examples, strict=True))

    def _example(self, centre: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        c, size = self.context, self.patch
        row = int(rng.integers(0, self.scans[0].shape[1] - size + 1))
        column = int(rng.integers(0, self.scans[0].shape[2] - size + 1))
        window = (slice(centre - c, centre + c + 1), slice(row, row + size), slice(column, column + size))
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        inputs = []
        for scan, sigma in zip(self.scans, self.sigmas, strict=True):
            slices = np.rot90(scan[window], k=turns, axes=(1, 2))
            slices = slices[:, :, ::-1] if flip else slices
            level = np.full((1, size, size), sigma, np.float32)
            inputs.append(np.concatenate([np.ascontiguousarray(slices, np.float32), level]))
        target = np.rot90(self.target[centre : centre + 1, window[1], window[2]], k=turns, axes=(1, 2))
        target = np.ascontiguousarray(target[:, :, ::-1] if flip else target, np.float32)
        return inputs[0], inputs[1], target


def intensity_gain(first: np.ndarray, second: np.ndarray) -> float:
    """Scale that matches ``second``'s intensities to ``first``'s: the median voxel ratio inside both foregrounds.

    Two acquisitions of one object can differ by a global gain (receiver scaling, drift); the
    consensus loss would otherwise learn that difference as if it were signal.
    """
    inside = foreground_mask(first) & foreground_mask(second) & (second > 0)
    if inside.sum() < 100:
        return 1.0
    return float(np.median(first[inside] / second[inside]))


def _starting_networks(model: str | None, device: str, progress: ProgressCallback, cancel: CancelToken):
    """The trained single network both stages start from, a pair of two copies of it, its entry and device."""
    from ..pipeline import load_denoiser

    denoiser, base = load_denoiser(model or DEFAULT_BASE_MODEL, device, progress=progress, cancel=cancel, refine=False)
    refusal = InputError(f"model {base.id!r} cannot start a consensus pair; choose a residual-unet-2.5d model")
    if not isinstance(denoiser, NetworkDenoiser):
        raise refusal
    network = denoiser.network.first if isinstance(denoiser.network, ConsensusPair) else denoiser.network
    if not isinstance(network, ResidualUNet25D):
        raise refusal
    pair = ConsensusPair(network.context, network.channels, network.summed_skips)
    pair.first.load_state_dict(network.state_dict())
    pair.second.load_state_dict(network.state_dict())
    return copy.deepcopy(network), pair.to(denoiser.device), base, denoiser.device


def train_consensus_volumes(
    first: Volume,
    second: Volume,
    model: str | None = None,
    minutes: float = 5.0,
    device: str = "auto",
    register: bool = True,
    source_name: str = "two scans",
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    seed: int = 0,
    clock: Clock = time.monotonic,
) -> ConsensusResult:
    """Train a consensus pair on two scans of one object, combine the scans (9), distil and register one network.

    ``second`` is registered rigidly to ``first`` unless ``register`` is False (then both must
    share one grid). The denoised result lies on ``first``'s grid.
    """
    if first.is_series or second.is_series:
        raise InputError("train-consensus takes two 3-D scalar volumes; pick one volume of each series")
    if not minutes > 0:
        raise InputError(f"the time budget must be positive, got {minutes} minutes")
    if not register and first.array.shape != second.array.shape:
        raise InputError(
            f"without registration both scans need one grid; shapes {first.array.shape} and {second.array.shape}"
        )
    cancel = cancel or CancelToken()
    progress(0.0, "registering the second scan to the first")
    if register:
        alignment = align(first.array, first.geometry, second.array, second.geometry)
        moved, translation, rotation = alignment.array, alignment.translation_mm, alignment.rotation_degrees
    else:
        moved, translation, rotation = np.asarray(second.array, np.float32), 0.0, 0.0
    gain = intensity_gain(np.asarray(first.array, np.float32), moved)
    moved = moved * gain
    cancel.raise_if_cancelled()
    start_network, pair, base, torch_device = _starting_networks(model, device, scaled(progress, 0.05, 0.07), cancel)
    scale = intensity_scale(np.asarray(first.array, np.float32))
    axis = slice_axis_for(first.geometry.spacing_zyx())
    scans = (
        np.moveaxis(np.clip(np.asarray(first.array, np.float32), 0, None) / scale, axis, 0),
        np.moveaxis(np.clip(np.asarray(moved, np.float32), 0, None) / scale, axis, 0),
    )
    sigmas = (estimate_sigma(scans[0]), estimate_sigma(scans[1]))
    patches = _TwoScanPatches(scans, sigmas, pair.context)
    rng = np.random.default_rng(seed)
    centre = slice(pair.context, pair.context + 1)

    def pair_loss(batch: list[torch.Tensor]) -> torch.Tensor:
        first_input, second_input, _ = batch
        first_output, second_output = pair.pair(first_input, second_input)
        return consensus_loss(first_output, second_output, first_input[:, centre], second_input[:, centre])

    started = clock()
    pair_fit = _fit(
        pair,
        pair_loss,
        patches,
        rng,
        60 * minutes * PAIR_SHARE,
        cancel,
        scaled(progress, 0.07, 0.6),
        "consensus pair",
        penalty=lambda: WEIGHT_DECAY * weight_decay(pair),
        clock=clock,
    )
    # trained on noisy magnitudes, the pair estimates the Rician mean: take the signal under it (no air floor)
    combined = signal_from_rician_mean(
        _combine(pair, scans, sigmas, torch_device, scaled(progress, 0.6, 0.66), cancel), float(np.mean(sigmas))
    )
    patches.set_target(combined)
    student = start_network.to(torch_device)

    def student_loss(batch: list[torch.Tensor]) -> torch.Tensor:
        first_input, second_input, target = batch
        return squared_error(student(first_input), target) + squared_error(student(second_input), target)

    remaining = max(60 * minutes - (clock() - started), 1.0)
    student_fit = _fit(
        student,
        student_loss,
        patches,
        rng,
        remaining,
        cancel,
        scaled(progress, 0.66, 0.97),
        "distilling",
        clock=clock,
    )
    seconds = clock() - started
    denoised = first.with_array(np.moveaxis(np.clip(combined, 0, None) * scale, 0, axis))
    entry = _register(student, base, (first, second), pair_fit, student_fit, seconds, source_name)
    progress(1.0, f"registered {entry.id}")
    real_sigmas = (float(sigmas[0] * scale), float(sigmas[1] * scale))
    return ConsensusResult(entry, denoised, pair_fit, student_fit, seconds, real_sigmas, translation, rotation, gain)


def _fit(
    module, loss_of, patches: _TwoScanPatches, rng, seconds, cancel, progress, label, penalty=None, clock=time.monotonic
) -> BudgetFit:
    """One stage on batches of the two scans' training slices, selected on their held-out slices."""
    device = next(module.parameters()).device

    def tensors(slices) -> list[torch.Tensor]:
        size = 32 if slices is patches.held_out_slices else BATCH_SIZE
        return [torch.from_numpy(part).to(device) for part in patches.batch(size, slices, rng)]

    held_out = tensors(patches.held_out_slices)
    return fit_within_budget(
        module,
        loss_of,
        lambda: tensors(patches.train_slices),
        held_out,
        seconds,
        LEARNING_RATE,
        cancel,
        progress,
        label,
        penalty,
        clock,
    )


def _combine(pair: ConsensusPair, scans, sigmas, device, progress: ProgressCallback, cancel) -> np.ndarray:
    """Equation (9) over whole scans (slice axis first): each member on its own scan, outputs averaged."""
    members = (pair.first, pair.second)
    outputs = [
        denoise_slices(member, scan, sigma, 0, device, scaled(progress, i / 2, (i + 1) / 2), cancel=cancel)
        for i, (member, scan, sigma) in enumerate(zip(members, scans, sigmas, strict=True))
    ]
    return 0.5 * (outputs[0] + outputs[1])


def _register(
    student: ResidualUNet25D,
    base: ModelEntry,
    scans: tuple[Volume, Volume],
    pair_fit: BudgetFit,
    student_fit: BudgetFit,
    seconds: float,
    source_name: str,
) -> ModelEntry:
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(scan.array).tobytes() for scan in scans)).hexdigest()[:8]
    model_id = new_user_model_id(f"consensus-{digest}")
    arguments = student.arguments
    weights = user_models_dir() / model_id / f"{model_id}.safetensors"
    save_weights(weights, student, STUDENT_ARCHITECTURE, arguments)
    entry = ModelEntry(
        id=model_id,
        title=f"Consensus-trained on {source_name}",
        description=(
            f"Learned from two acquisitions of {source_name} with no clean image: a consensus pair (paper 004, "
            f"from {base.id}; {pair_fit.steps} steps) distilled into one network ({student_fit.steps} steps), "
            f"{seconds:.0f} s in all; use it on scans from the same protocol."
        ),
        kind="network",
        architecture=STUDENT_ARCHITECTURE,
        arguments=arguments,
        weights=str(weights),
        sha256=sha256_of(weights),
        size=weights.stat().st_size,
        training={
            "base_model": base.id,
            "loss": "consensus (8) + weight decay (10), then distillation of (9)",
            "steps": pair_fit.steps + student_fit.steps,
            "wall_time_seconds": round(seconds),
        },
        metrics={
            "held_out_consensus_loss": {"before": pair_fit.held_out_before, "after": pair_fit.held_out_after},
            "held_out_distillation_loss": {
                "before": student_fit.held_out_before,
                "after": student_fit.held_out_after,
            },
        },
    )
    register_user_model(entry)
    entry.user = True
    return entry


def train_consensus_files(
    first_path: str | Path,
    second_path: str | Path,
    output_path: str | Path | None = None,
    model: str | None = None,
    minutes: float = 5.0,
    device: str = "auto",
    register: bool = True,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> ConsensusResult:
    """:func:`train_consensus_volumes` on files; the combined denoised scan is written to ``output_path`` if given."""
    from ..pipeline import check_output_path

    if output_path is not None:
        check_output_path(first_path, output_path)
        check_output_path(second_path, output_path)
    first, second = read_volume(first_path), read_volume(second_path)
    name = f"{Path(first_path).name} + {Path(second_path).name}"
    result = train_consensus_volumes(first, second, model, minutes, device, register, name, progress, cancel)
    if output_path is not None:
        write_volume(result.denoised, output_path)
    return result

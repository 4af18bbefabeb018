"""The "two acquisitions" path: learn a denoiser from two noisy scans of the same object.

The second scan is rigidly registered to the first and resampled onto its grid. A consensus
pair (paper 004) starts from a trained 2.5-D network (both members; ``consensus-unet`` by
default) and is trained on patches of the two scans with the consensus loss (8) and weight decay
(10) for a time budget; every tenth slice is held out and the same loss on it (an unbiased proxy
of the error against the unknown clean image, up to a constant) picks the best weights. The pair
is registered as a user model (on one later scan, both members see it and are averaged) and the
two scans are combined into one denoised image, equation (9). Nothing is written when cancelled.
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
from ..models.catalog import ModelEntry, register_user_model
from ..models.hashing import sha256_of
from ..models.paths import cache_dir
from ..models.weights import save_weights
from ..nets.consensus import ConsensusPair
from ..nets.unet25d import ResidualUNet25D
from ..noise import estimate_sigma
from ..normalization import intensity_scale
from ..progress import CancelToken, ProgressCallback, no_progress, scaled
from ..registration import align
from ..volume import Volume
from .losses import consensus_loss, weight_decay

DEFAULT_BASE_MODEL = "consensus-unet"
WEIGHT_DECAY = 1e-6
PATCH_SIZE = 64
BATCH_SIZE = 8
LEARNING_RATE = 1e-4
VALIDATE_EVERY = 20
HELD_OUT_EVERY = 10


@dataclass
class ConsensusResult:
    """The registered pair, the combined denoised scan (9), and what training did."""

    entry: ModelEntry
    denoised: Volume
    steps: int
    seconds: float
    held_out_loss_before: float
    held_out_loss_after: float
    sigmas: tuple[float, float]
    translation_mm: float
    rotation_degrees: float


class _TwoScanPatches:
    """Matching patches of two aligned, normalised scans, each with its own noise-level map."""

    def __init__(self, scans: tuple[np.ndarray, np.ndarray], sigmas: tuple[float, float], context: int) -> None:
        depth = 2 * context + 1
        if scans[0].shape[0] < depth:
            pad = ((0, depth - scans[0].shape[0]), (0, 0), (0, 0))
            scans = (np.pad(scans[0], pad, mode="edge"), np.pad(scans[1], pad, mode="edge"))
        self.scans, self.sigmas, self.context = scans, sigmas, context
        self.patch = min(PATCH_SIZE, *scans[0].shape[1:])
        centres = np.arange(context, scans[0].shape[0] - context)
        held_out = centres % HELD_OUT_EVERY == HELD_OUT_EVERY // 2
        if held_out.all() or not held_out.any():
            held_out = np.zeros_like(held_out)
            held_out[len(centres) // 2] = True
        self.train_slices, self.held_out_slices = centres[~held_out], centres[held_out]
        if self.train_slices.size == 0:
            self.train_slices = self.held_out_slices

    def batch(self, size: int, slices: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Inputs for the first and the second member: the same windows of the two scans."""
        examples = [self._example(int(rng.choice(slices)), rng) for _ in range(size)]
        first, second = zip(*examples, strict=True)
        return np.stack(first), np.stack(second)

    def _example(self, centre: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
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
        return inputs[0], inputs[1]


def _starting_pair(model: str | None, device: str, progress: ProgressCallback, cancel: CancelToken):
    """A consensus pair whose members both start from ``model`` (a 2.5-D U-Net or a pair)."""
    from ..pipeline import load_denoiser

    denoiser, base = load_denoiser(model or DEFAULT_BASE_MODEL, device, progress=progress, cancel=cancel)
    network = denoiser.network if isinstance(denoiser, NetworkDenoiser) else None
    if isinstance(network, ConsensusPair):
        return copy.deepcopy(network), base, denoiser.device
    if not isinstance(network, ResidualUNet25D):
        raise InputError(f"model {base.id!r} cannot start a consensus pair; choose a residual-unet-2.5d model")
    pair = ConsensusPair(network.context, tuple(base.arguments.get("channels", (32, 64, 96))))
    pair.first.load_state_dict(network.state_dict())
    pair.second.load_state_dict(network.state_dict())
    return pair.to(denoiser.device), base, denoiser.device


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
) -> ConsensusResult:
    """Train a consensus pair on two scans of one object, register it, and combine the scans (9).

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
    cancel.raise_if_cancelled()
    pair, base, torch_device = _starting_pair(model, device, scaled(progress, 0.05, 0.07), cancel)
    scale = intensity_scale(np.asarray(first.array, np.float32))
    axis = slice_axis_for(first.geometry.spacing_zyx())
    scans = tuple(
        np.moveaxis(np.clip(np.asarray(a, np.float32), 0, None) / scale, axis, 0) for a in (first.array, moved)
    )
    sigmas = (estimate_sigma(scans[0]), estimate_sigma(scans[1]))
    patches = _TwoScanPatches(scans, sigmas, pair.context)
    rng = np.random.default_rng(seed)
    held_out = [torch.from_numpy(part).to(torch_device) for part in patches.batch(32, patches.held_out_slices, rng)]
    centre = slice(pair.context, pair.context + 1)

    def loss_of(first_input: torch.Tensor, second_input: torch.Tensor) -> torch.Tensor:
        first_output, second_output = pair.pair(first_input, second_input)
        return consensus_loss(first_output, second_output, first_input[:, centre], second_input[:, centre])

    def evaluate() -> float:
        pair.eval()
        with torch.no_grad():
            value = float(loss_of(*held_out))
        pair.train()
        return value

    started = time.monotonic()
    before = best = evaluate()
    best_state = copy.deepcopy(pair.state_dict())
    optimizer = torch.optim.Adam(pair.parameters(), lr=LEARNING_RATE)
    pair.train()
    steps = 0
    while (elapsed := time.monotonic() - started) < 60 * minutes:
        cancel.raise_if_cancelled()
        inputs = [
            torch.from_numpy(part).to(torch_device) for part in patches.batch(BATCH_SIZE, patches.train_slices, rng)
        ]
        value = loss_of(*inputs) + WEIGHT_DECAY * weight_decay(pair)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        steps += 1
        if steps % VALIDATE_EVERY == 0:
            current = evaluate()
            if current < best:
                best, best_state = current, copy.deepcopy(pair.state_dict())
        progress(
            0.07 + 0.8 * min(elapsed / (60 * minutes), 1.0),
            f"consensus training: step {steps}, held-out loss {best:.4g}",
        )
    cancel.raise_if_cancelled()
    pair.load_state_dict(best_state)
    pair.eval()
    combined = _combine(pair, scans, sigmas, axis, torch_device, scaled(progress, 0.87, 0.99), cancel)
    denoised = first.with_array(np.clip(combined, 0, None) * scale)
    seconds = time.monotonic() - started
    entry = _register(pair, base, (first, second), steps, seconds, before, best, source_name)
    progress(1.0, f"registered {entry.id}")
    real_sigmas = (float(sigmas[0] * scale), float(sigmas[1] * scale))
    return ConsensusResult(entry, denoised, steps, seconds, before, best, real_sigmas, translation, rotation)


def _combine(pair: ConsensusPair, scans, sigmas, axis: int, device, progress: ProgressCallback, cancel) -> np.ndarray:
    """Equation (9) over whole scans: each member on its own scan, outputs averaged, back on the first's axes."""
    outputs = [
        denoise_slices(
            member,
            scan,
            sigma,
            slice_axis=0,
            device=device,
            progress=scaled(progress, i / 2, (i + 1) / 2),
            cancel=cancel,
        )
        for i, (member, scan, sigma) in enumerate(zip((pair.first, pair.second), scans, sigmas, strict=True))
    ]
    return np.moveaxis(0.5 * (outputs[0] + outputs[1]), 0, axis)


def _register(
    pair, base: ModelEntry, scans, steps: int, seconds: float, before: float, after: float, source_name: str
) -> ModelEntry:
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(scan.array).tobytes() for scan in scans)).hexdigest()[:8]
    model_id = f"consensus-{digest}"
    arguments = {"context": pair.context, "channels": list(base.arguments.get("channels", []))}
    weights = cache_dir() / "user-models" / model_id / f"{model_id}.safetensors"
    save_weights(weights, pair, "consensus-pair", arguments)
    entry = ModelEntry(
        id=model_id,
        title=f"Consensus pair trained on {source_name}",
        description=(
            f"Two U-Nets (from {base.id}) trained on two acquisitions of {source_name} with paper 004's consensus "
            f"loss ({steps} steps, {seconds:.0f} s), no clean image; use it on scans from the same protocol."
        ),
        kind="network",
        architecture="consensus-pair",
        arguments=arguments,
        weights=str(weights),
        sha256=sha256_of(weights),
        size=weights.stat().st_size,
        training={
            "base_model": base.id,
            "loss": "consensus (8) + weight decay (10)",
            "steps": steps,
            "wall_time_seconds": round(seconds),
        },
        metrics={"held_out_consensus_loss": {"before": before, "after": after}},
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

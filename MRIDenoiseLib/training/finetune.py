"""Fine-tune a trained denoiser on one noisy scan, with no clean image: "my scanner, my contrast".

Two self-supervised losses (``loss``):

- ``"r2r"``, recorrupted-to-recorrupted (Pang et al., CVPR 2021). With the scan's noise sigma
  (estimated) and z ~ N(0, 1), the network sees ``y + alpha sigma z`` (noise level
  ``sigma sqrt(1 + alpha^2)`` on its noise-level map) and is fitted to ``y - sigma z / alpha``.
  For Gaussian noise the expected squared error against that target equals the error against the
  clean image plus a constant, so this is supervised training without the clean image. Magnitude
  MRI noise is Gaussian where tissue is well above the noise; the background is left out of the loss.
- ``"n2s"``, Noise2Self (Batson and Royer, ICML 2019): a random sixteenth of the centre slice's
  pixels are replaced by a neighbour's value and the loss is taken on those pixels only, so the
  network cannot copy their noise.

Both targets are noisy magnitudes, whose mean is the Rician mean of the signal, above the signal
where the noise is strong (by about sigma^2 / (2 x signal)). Fitted to them directly, the network
learns that mean and its output gains an offset (about 2 % of the maximum at 20 % noise); so the
loss compares the Rician mean of the network's output (``rician_mean``, sigma known) with the
target, and the network itself learns the signal.

Outside the object (air, where magnitude noise is Rayleigh and neither loss holds) the adapted
network is held to the starting network's output. Every tenth slice is held out; the same loss on
it (fixed draws) picks the best weights, and the starting weights are kept when adaptation never
beats them. Nothing is written until the time budget
ends: cancelling leaves no user model behind.
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..denoisers.network import NetworkDenoiser, slice_axis_for
from ..errors import InputError
from ..inference import uses_noise_level
from ..io import read_volume, write_volume
from ..masks import foreground_mask
from ..models.catalog import ModelEntry, new_user_model_id, register_user_model
from ..models.hashing import sha256_of
from ..models.paths import user_models_dir
from ..models.weights import save_weights
from ..noise import estimate_sigma
from ..normalization import intensity_scale
from ..progress import CancelToken, ProgressCallback, no_progress, scaled
from ..volume import Volume
from .budget import BudgetFit, Clock, fit_within_budget, split_slices
from .losses import rician_mean

LOSSES = ("r2r", "n2s")
RECORRUPTION_ALPHA = 0.5
PATCH_SIZE = 64
BATCH_SIZE = 8
LEARNING_RATE = 1e-4
MASKED_FRACTION = 1 / 16


@dataclass
class Adaptation:
    """A network adapted to one scan, held in memory: nothing registered, nothing written."""

    denoiser: NetworkDenoiser
    """The starting model's denoiser (its planes and device), now running the adapted network."""
    base: ModelEntry
    fit: BudgetFit
    seconds: float
    sigma: float
    """The scan's noise standard deviation in its own units (given or estimated)."""


@dataclass
class FinetuneResult:
    """The registered user model and what the adaptation did."""

    entry: ModelEntry
    steps: int
    seconds: float
    held_out_loss_before: float
    held_out_loss_after: float
    sigma: float


class _ScanPatches:
    """Patches of one normalised scan, with the loss-specific inputs and targets."""

    def __init__(self, data: np.ndarray, sigma: float, context: int, loss: str, seed: int) -> None:
        depth = 2 * context + 1
        if data.shape[0] < depth:
            data = np.pad(data, ((0, depth - data.shape[0]), (0, 0), (0, 0)), mode="edge")
        self.data, self.sigma, self.context, self.loss = data, sigma, context, loss
        self.foreground = foreground_mask(data)
        self.patch = min(PATCH_SIZE, *data.shape[1:])
        self.train_slices, self.held_out_slices = split_slices(data.shape[0], context)
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int, slices: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        parts = [self._example(int(rng.choice(slices)), rng) for _ in range(size)]
        return tuple(np.stack(values) for values in zip(*parts, strict=True))

    def _example(self, centre: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """Network input (slices and noise-level map), target, loss weight, and the mask outside the object."""
        c, size = self.context, self.patch
        row = int(rng.integers(0, self.data.shape[1] - size + 1))
        column = int(rng.integers(0, self.data.shape[2] - size + 1))
        window = (slice(centre - c, centre + c + 1), slice(row, row + size), slice(column, column + size))
        slices = self.data[window].astype(np.float32)
        foreground = self.foreground[centre, window[1], window[2]].astype(np.float32)
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        slices, foreground = _orient(slices, turns, flip), _orient(foreground[None], turns, flip)[0]
        weight = foreground
        if self.loss == "r2r":
            draw = rng.standard_normal(slices.shape).astype(np.float32)
            inputs = slices + RECORRUPTION_ALPHA * self.sigma * draw
            target = (slices - self.sigma * draw / RECORRUPTION_ALPHA)[c]
            level = self.sigma * np.sqrt(1 + RECORRUPTION_ALPHA**2)
        else:
            inputs = slices.copy()
            hidden = rng.random(slices.shape[1:]) < MASKED_FRACTION
            shift = rng.integers(-1, 2, size=(2, *slices.shape[1:]))
            shift[0][(shift[0] == 0) & (shift[1] == 0)] = 1
            rows = _neighbour(np.arange(size)[:, None], shift[0], size)
            columns = _neighbour(np.arange(size)[None, :], shift[1], size)
            inputs[c][hidden] = slices[c][rows, columns][hidden]
            target, weight = slices[c], weight * hidden
            level = self.sigma
        level_map = np.full((1, size, size), level, np.float32)
        outside = 1.0 - foreground
        return np.concatenate([inputs, level_map]), target[None], weight[None], outside[None]


def _neighbour(index: np.ndarray, shift: np.ndarray, size: int) -> np.ndarray:
    """``index + shift``, mirrored at the borders so that a pixel is never its own neighbour."""
    moved = index + shift
    return np.where((moved < 0) | (moved >= size), index - shift, moved)


def _orient(array: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    array = np.rot90(array, k=turns, axes=(1, 2))
    return np.ascontiguousarray(array[:, :, ::-1] if flip else array)


def _weighted_mse(prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return ((prediction - target) ** 2 * weight).sum() / weight.sum().clamp(min=1.0)


def adapt_to_scan(
    volume: Volume,
    model: str | None = None,
    minutes: float = 5.0,
    loss: str = "r2r",
    device: str = "auto",
    sigma: float | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    seed: int = 0,
    clock: Clock = time.monotonic,
) -> Adaptation:
    """Adapt ``model`` (the default when None) to ``volume`` for ``minutes``, in memory.

    ``sigma`` is the scan's noise standard deviation in its own units (estimated when None).
    ``clock`` is read once per step (tests inject one, so that the steps taken do not depend on
    the machine's speed). Cancelling raises; the loaded network is discarded.
    """
    from ..pipeline import load_denoiser

    if loss not in LOSSES:
        raise InputError(f"unknown fine-tuning loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if volume.is_series:
        raise InputError("fine-tuning works on 3-D scalar volumes; pick one volume of the series")
    if not minutes > 0:
        raise InputError(f"the time budget must be positive, got {minutes} minutes")
    cancel = cancel or CancelToken()
    denoiser, base = load_denoiser(model, device, progress=scaled(progress, 0.0, 0.02), cancel=cancel, refine=False)
    if not isinstance(denoiser, NetworkDenoiser):
        raise InputError(f"model {base.id!r} is a classical filter; only trained networks can be fine-tuned")
    network, torch_device = denoiser.network, denoiser.device
    array = np.asarray(volume.array, np.float32)
    scale = intensity_scale(array)
    noise = (sigma if sigma is not None else estimate_sigma(array)) / scale
    axis = slice_axis_for(volume.geometry.spacing_zyx())
    data = np.moveaxis(np.clip(array, 0, None) / scale, axis, 0)
    patches = _ScanPatches(data, noise, int(network.context), loss, seed)
    held_out = [
        torch.from_numpy(part).to(torch_device)
        for part in patches.batch(32, patches.held_out_slices, np.random.default_rng(seed + 1))
    ]
    with_level = uses_noise_level(network)

    anchor = copy.deepcopy(network).eval()
    for parameter in anchor.parameters():
        parameter.requires_grad_(False)

    def step_loss(parts: list[torch.Tensor]) -> torch.Tensor:
        inputs, target, weight, outside = parts
        inputs = inputs if with_level else inputs[:, :-1]
        prediction = network(inputs)
        with torch.no_grad():
            reference = anchor(inputs)
        return _weighted_mse(rician_mean(prediction, patches.sigma), target, weight) + _weighted_mse(
            prediction, reference, outside
        )

    started = clock()

    def next_batch() -> list[torch.Tensor]:
        return [
            torch.from_numpy(part).to(torch_device)
            for part in patches.batch(BATCH_SIZE, patches.train_slices, patches.rng)
        ]

    fit = fit_within_budget(
        network,
        step_loss,
        next_batch,
        held_out,
        60 * minutes,
        LEARNING_RATE,
        cancel,
        scaled(progress, 0.02, 0.95),
        f"fine-tuning ({loss})",
        clock=clock,
    )
    return Adaptation(denoiser, base, fit, clock() - started, noise * scale)


def finetune_volume(
    volume: Volume,
    model: str | None = None,
    minutes: float = 5.0,
    loss: str = "r2r",
    device: str = "auto",
    sigma: float | None = None,
    source_name: str = "scan",
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    seed: int = 0,
    clock: Clock = time.monotonic,
) -> FinetuneResult:
    """Adapt ``model`` (the default when None) to ``volume`` for ``minutes`` and register it as a user model.

    ``sigma`` is the scan's noise standard deviation in its own units (estimated when None).
    """
    adapted = adapt_to_scan(volume, model, minutes, loss, device, sigma, progress, cancel, seed, clock)
    fit = adapted.fit
    entry = _register(adapted.denoiser.network, adapted.base, volume, loss, fit, adapted.seconds, source_name)
    progress(1.0, f"registered {entry.id}")
    return FinetuneResult(entry, fit.steps, adapted.seconds, fit.held_out_before, fit.held_out_after, adapted.sigma)


def _register(
    network: nn.Module,
    base: ModelEntry,
    volume: Volume,
    loss: str,
    fit: BudgetFit,
    seconds: float,
    source_name: str,
) -> ModelEntry:
    digest = hashlib.sha256(np.ascontiguousarray(volume.array).tobytes()).hexdigest()[:8]
    model_id = new_user_model_id(f"{base.id}-ft-{digest}")
    weights = user_models_dir() / model_id / f"{model_id}.safetensors"
    save_weights(weights, network, base.architecture, base.arguments)
    entry = ModelEntry(
        id=model_id,
        title=f"{base.title}, fine-tuned on {source_name}",
        description=(
            f"{base.id} adapted to {source_name} ({loss}, {fit.steps} steps, {seconds:.0f} s) with no clean image; "
            "use it on that scan or others from the same protocol."
        ),
        kind="network",
        architecture=base.architecture,
        arguments=dict(base.arguments),
        planes=base.planes,
        refinement=base.refinement,
        weights=str(weights),
        sha256=sha256_of(weights),
        size=weights.stat().st_size,
        training={"base_model": base.id, "loss": loss, "steps": fit.steps, "wall_time_seconds": round(seconds)},
        metrics={"held_out_self_supervised_loss": {"before": fit.held_out_before, "after": fit.held_out_after}},
    )
    register_user_model(entry)
    entry.user = True
    return entry


def finetune_file(
    input_path: str | Path,
    output_path: str | Path | None = None,
    model: str | None = None,
    minutes: float = 5.0,
    loss: str = "r2r",
    device: str = "auto",
    sigma: float | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> FinetuneResult:
    """Fine-tune on a file; when ``output_path`` is given, denoise the file with the adapted model into it."""
    from ..pipeline import check_output_path, denoise_volume

    if output_path is not None:
        check_output_path(input_path, output_path)
    volume = read_volume(input_path)
    share = 0.9 if output_path is not None else 1.0
    result = finetune_volume(
        volume, model, minutes, loss, device, sigma, Path(input_path).name, scaled(progress, 0.0, share), cancel
    )
    if output_path is not None:
        denoised = denoise_volume(volume, result.entry.id, device, sigma, scaled(progress, share, 1.0), cancel)
        write_volume(denoised.volume, output_path)
    return result

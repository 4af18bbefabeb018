"""Noisy/clean training pairs made on the fly from real volumes (EVALUATION.md noise model).

Every volume is normalised so its brightest tissue has mean 1; a noise level of p % is then
simply sigma = p / 100, and the network's noise-level channel carries that sigma.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from skimage.restoration import denoise_nl_means

from ..errors import InputError
from ..masks import foreground_mask
from ..models.catalog import load_catalog
from ..models.paths import cache_dir
from ..noise import NoiseKind, SigmaBand, add_noise, coil_profile, estimate_sigma
from ..normalization import intensity_scale
from ..pipeline import load_denoiser
from .config import DataConfig


@dataclass
class TrainingVolume:
    """A normalised clean volume, its foreground, and the axes it may be sliced along."""

    name: str
    clean: np.ndarray
    foreground: np.ndarray
    slice_axes: tuple[int, ...]


def load_training_volume(
    path: Path,
    preclean_above_percent: float | None = None,
    preclean_model: str | None = None,
    preclean_planes: str = "auto",
    frame: int | None = None,
) -> TrainingVolume:
    """Read a volume (``frame`` of a 4-D file), normalise it by its brightest tissue and find its usable
    slice axes.

    A volume whose own noise exceeds ``preclean_above_percent`` (of the brightest tissue) is
    first cleaned at its estimated sigma, so the targets the network learns from do not teach it
    to keep that noise: with non-local means, or with the catalogue model ``preclean_model``
    (a previous generation of the network, sharper than non-local means), run as
    ``preclean_planes`` says: "auto" is one pass along the coarsest axis, "all" averages the
    three axes of an isotropic volume. The result is cached, so later
    runs start at once. The axes it may be sliced along are :func:`slice_axes`.
    """
    _, spacing = volume_layout(path)
    cached = _cache_path(path, preclean_above_percent, preclean_model, preclean_planes, frame)
    if cached.exists():
        array = np.load(cached, allow_pickle=False)
    else:  # the pixels are read only when the cache misses
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)
        array = _normalised_clean(
            array if frame is None else array[frame],
            path,
            spacing,
            preclean_above_percent,
            preclean_model,
            preclean_planes,
        )
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.stem}.{os.getpid()}.part.npy")
        np.save(partial, array, allow_pickle=False)
        os.replace(partial, cached)
    name = path.name if frame is None else f"{path.name}[{frame}]"
    return TrainingVolume(name, array, foreground_mask(array), slice_axes(array.shape, spacing))


def volume_layout(path: Path) -> tuple[list[int | None], tuple[float, float, float]]:
    """The frames of a volume file (``[None]`` for a 3-D one, one per echo or repetition of a 4-D one) and
    its voxel spacing (z, y, x), from the header alone; other dimensions are refused."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    dimension = reader.GetDimension()
    if dimension not in (3, 4):
        raise InputError(f"{path}: training volumes must be 3-D or 4-D (frames), got {dimension}-D")
    x, y, z = (float(value) for value in reader.GetSpacing()[:3])
    frames: list[int | None] = [None] if dimension == 3 else list(range(reader.GetSize()[3]))
    return frames, (z, y, x)


def normalised(array: np.ndarray) -> np.ndarray:
    """``array`` with negatives clipped, over the mean of its brightest tissue (:func:`intensity_scale`)."""
    return np.clip(array, 0, None) / intensity_scale(array)


def slice_axes(shape: tuple[int, ...], spacing_zyx: tuple[float, float, float]) -> tuple[int, ...]:
    """The axes a volume may be sliced along in training: any of an isotropic volume's (a free
    augmentation), only the coarsest of an anisotropic one's, the way the product slices it."""
    if max(spacing_zyx) <= 1.2 * min(spacing_zyx):
        return tuple(axis for axis in range(3) if shape[axis] >= 16)
    return (int(np.argmax(spacing_zyx)),)


TRAINING_SIGMA_BAND: SigmaBand = "haar"
"""The band training reads a volume's own noise with (pre-cleaning, recorruption levels): the Haar band
every shipped model was trained with, so that each committed config reproduces its model. Inference
reads the fourth differences where a scan's air shows white noise (:func:`estimate_sigma`)."""


def load_configured_volumes(path: Path, data: DataConfig) -> list[TrainingVolume]:
    """:func:`load_training_volume` with the pre-cleaning that the config's data section names; each frame
    of a 4-D file (echoes, repetitions) is a volume of its own."""
    frames, _ = volume_layout(path)
    cleaning = (data.preclean_above_percent, data.preclean_model, data.preclean_planes)
    return [load_training_volume(path, *cleaning, frame=frame) for frame in frames]


def _normalised_clean(
    array: np.ndarray,
    path: Path,
    spacing_zyx: tuple[float, float, float],
    preclean_above_percent: float | None,
    preclean_model: str | None,
    preclean_planes: str,
) -> np.ndarray:
    if array.ndim != 3:
        raise InputError(f"{path}: training volumes must be 3-D, got shape {array.shape}")
    array = normalised(array)
    own_noise = estimate_sigma(array, band=TRAINING_SIGMA_BAND)
    if preclean_above_percent is None or own_noise <= preclean_above_percent / 100.0:
        return array
    if preclean_model is not None:
        denoiser, _ = load_denoiser(preclean_model, planes=preclean_planes)
        return denoiser.denoise(array, own_noise, spacing_zyx=spacing_zyx).astype(np.float32)
    return denoise_nl_means(
        array, patch_size=3, patch_distance=4, h=own_noise, sigma=own_noise, fast_mode=True, preserve_range=True
    ).astype(np.float32)


def _cache_path(
    path: Path,
    preclean_above_percent: float | None,
    preclean_model: str | None,
    preclean_planes: str,
    frame: int | None = None,
) -> Path:
    """Where the normalised (and pre-cleaned) array of a training volume is kept between runs."""
    status = path.stat()
    cleaner = "" if preclean_model is None else f"|{_model_fingerprint(preclean_model)}"  # none: non-local means
    if preclean_model is not None and preclean_planes != "auto":
        cleaner += f"|planes={preclean_planes}"
    if frame is not None:
        cleaner += f"|frame={frame}"
    key = f"{path.resolve()}|{status.st_size}|{status.st_mtime_ns}|{preclean_above_percent}{cleaner}|v1"
    return cache_dir() / "training-volumes" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy"


def _model_fingerprint(model_id: str) -> str:
    """The model id and the sha256 of its weights, so new weights invalidate cached targets."""
    entry = load_catalog().get(model_id)
    return f"{entry.id}:{entry.sha256}"


TONE_KNOTS = np.array([0.0, 0.3, 0.65, 1.0, 2.0], np.float32)
"""Where a random tone curve takes new values, in units of a T1's brightest tissue (white matter = 1): air,
CSF, grey matter, white matter, and fat above it. Only the tissues: a knot between two of them would turn
the partial-volume voxels of their boundary into a rim of another brightness, which no scanner makes."""
TISSUE_KNOTS = slice(1, 4)
"""The knots of brain tissue: the brightest of them is mapped to 1, as the product scales a scan."""


TISSUE_SMOOTHING = 0.75
"""Gaussian width (voxels) that takes a patch's own texture (its cleaner's residue) out before it becomes a
fuzzy tissue model (:func:`fuzzy_tissues`)."""
TISSUE_EDGE_WIDTH = (0.06, 0.25)
"""The range a fuzzy tissue model's boundary width is drawn from: the width of the logistic that pushes a
voxel towards the nearer of its two tissues, as a fraction of the way between them (small: a voxel-sharp
boundary; 0.25: nearly the patch's own partial volume)."""


def random_tissue_values(rng: np.random.Generator, low_contrast: bool = False) -> np.ndarray:
    """New values for the knots of :data:`TONE_KNOTS`: air stays at 0, CSF, grey and white matter each
    anywhere in 0.05-1 (so tissues may swap order or merge, as in T2 or PD), or with ``low_contrast`` within a
    band 5-30 % of the brightest wide, and fat in 0.2-1.5; rescaled so the brightest tissue is 1."""
    if low_contrast:
        width = rng.uniform(0.05, 0.3)
        tissues = 1.0 - width * rng.uniform(0.0, 1.0, 3)
    else:
        tissues = rng.uniform(0.05, 1.0, 3)
    values = np.concatenate([[0.0], tissues, [rng.uniform(0.2, 1.5)]])
    return values / values[TISSUE_KNOTS].max()


def tone_mapped(patch: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``patch`` (brightest tissue near 1) through the piecewise-linear curve that takes the knots of
    :data:`TONE_KNOTS` to ``values``: a boundary voxel mixes its two tissues as partial volume does."""
    return np.interp(patch, TONE_KNOTS, values).astype(np.float32)


def random_tone_curve(patch: np.ndarray, rng: np.random.Generator, low_contrast: bool = False) -> np.ndarray:
    """``patch`` through a random tone curve (:func:`tone_mapped`, :func:`random_tissue_values`)."""
    return tone_mapped(patch, random_tissue_values(rng, low_contrast))


def tissue_values(config: DataConfig, rng: np.random.Generator) -> np.ndarray:
    """Random knot values (:func:`random_tissue_values`), low-contrast ones in ``config.low_contrast_fraction``
    of draws."""
    low_contrast = bool(config.low_contrast_fraction) and rng.random() < config.low_contrast_fraction
    return random_tissue_values(rng, low_contrast)


def remapped(patch: np.ndarray, config: DataConfig, rng: np.random.Generator) -> np.ndarray:
    """``patch`` through a random tone curve (:func:`tissue_values`)."""
    return tone_mapped(patch, tissue_values(config, rng))


def boundary_share(offset: np.ndarray, width: float) -> np.ndarray:
    """The share of the upper of two tissues in a voxel ``offset`` (0-1) of the way between their
    intensities, sharpened by a logistic ``width`` wide (a fraction of that way): 0 and 1 at the tissues
    themselves, 0.5 halfway, so partial volume stays a voxel or two wide instead of a blurred ramp."""
    edge = 1.0 / (1.0 + np.exp(0.5 / width))
    return (1.0 / (1.0 + np.exp(-(offset - 0.5) / width)) - edge) / (1.0 - 2.0 * edge)


def fuzzy_tissues(patch: np.ndarray, values: np.ndarray, width: float) -> np.ndarray:
    """``patch`` (brightest tissue near 1) as a fuzzy tissue model whose tissues take ``values`` (one per knot
    of :data:`TONE_KNOTS`): its own texture smoothed out (:data:`TISSUE_SMOOTHING`), each voxel placed between
    the two knots it lies between and pushed towards the nearer by a logistic ``width`` wide (a fraction of
    the way between them). Every tissue is flat; only boundaries keep partial volume, as in a brain phantom
    (BrainWeb) or, nearly, a real scan's CSF and white matter."""
    smoothed = ndimage.gaussian_filter(np.asarray(patch, np.float32), TISSUE_SMOOTHING, mode="nearest")
    position = np.interp(smoothed, TONE_KNOTS, np.arange(len(TONE_KNOTS), dtype=np.float32))
    lower = np.minimum(np.floor(position).astype(int), len(TONE_KNOTS) - 2)
    upper_share = boundary_share(position - lower, width)
    return (values[lower] * (1.0 - upper_share) + values[lower + 1] * upper_share).astype(np.float32)


@dataclass
class NoiseDraw:
    """The noise of one training example; the level channel carries ``sigma`` (per coil for several coils)."""

    sigma: np.ndarray
    kind: NoiseKind
    coils: int = 1
    correlated_axes: tuple[int, ...] = ()
    told: np.ndarray | None = None
    """What the level channel carries where it is not ``sigma`` (one level for a level that varies)."""


class PairSampler:
    """Draws batches of (network input, clean centre slice) patches.

    Input channels: ``2 * context + 1`` noisy adjacent slices and the noise-level map.
    """

    def __init__(self, volumes: list[TrainingVolume], config: DataConfig, context: int, seed: int) -> None:
        self.volumes = volumes
        self.config = config
        self.context = context
        self.rng = np.random.default_rng(seed)
        weights = np.array([v.foreground.sum() ** 0.5 for v in volumes], dtype=float)
        self.volume_weights = weights / weights.sum()

    def batch(self, size: int) -> tuple[np.ndarray, ...]:
        """``size`` examples, each part stacked along a new first axis."""
        parts = zip(*(self._pair() for _ in range(size)), strict=True)
        return tuple(np.stack(part) for part in parts)

    def _pair(self) -> tuple[np.ndarray, ...]:
        clean = self._augment_intensity(self._clean_patch())
        if self.config.band_limited_fraction and self.rng.random() < self.config.band_limited_fraction:
            clean = band_limited(clean, self.rng.uniform(*BAND_KEPT))
        return self._noisy(clean, self._noise()), self.centre(clean)

    def _noisy(self, clean: np.ndarray, draw: NoiseDraw) -> np.ndarray:
        """A network input: ``clean`` with ``draw``'s noise, followed by the level channel."""
        # zero-filled correlation acts on the last two axes: bring the chosen pair there and back
        order = [axis for axis in range(3) if axis not in draw.correlated_axes] + list(draw.correlated_axes)
        noisy = add_noise(
            np.transpose(clean, order),
            np.transpose(np.broadcast_to(draw.sigma, clean.shape), order),
            draw.kind,
            self.rng,
            coils=draw.coils,
            zero_filled=bool(draw.correlated_axes),
        )
        told = draw.sigma if draw.told is None else draw.told
        return self._with_level(np.transpose(noisy, np.argsort(order)), told)

    def _noise(self) -> NoiseDraw:
        """The noise of one example: level (scalar or in-plane field), kind, coils, correlation."""
        low, high = self.config.level_range_percent
        if self.config.level_sampling == "log-uniform":
            level = float(np.exp(self.rng.uniform(np.log(low), np.log(high)))) / 100.0
        else:
            level = self.rng.uniform(low, high) / 100.0
        size = self.config.patch_size
        sigma = np.float32(level) * self._noise_field((size, size))
        kind: NoiseKind = "rician" if self.rng.random() < self.config.rician_fraction else "gaussian"
        draw = NoiseDraw(sigma, kind)
        # the extra draws only when asked for, so older configs sample exactly as before
        if sigma.size > 1 and self.config.one_level_fraction and self.rng.random() < self.config.one_level_fraction:
            draw.told = np.full((1, 1, 1), sigma.mean(), np.float32)
        if self.config.overstated_level_fraction and self.rng.random() < self.config.overstated_level_fraction:
            extra = self.rng.uniform(*self.config.overstated_level_percent) / 100.0
            told = sigma if draw.told is None else draw.told
            draw.told = np.sqrt(np.square(told) + np.float32(extra) ** 2).astype(np.float32)
        if kind == "rician" and self.config.coil_fraction and self.rng.random() < self.config.coil_fraction:
            draw.coils = round(2 ** self.rng.uniform(1, 5))
        if self.config.zero_filled_fraction and self.rng.random() < self.config.zero_filled_fraction:
            draw.correlated_axes = ((1, 2), (0, 1), (0, 2))[int(self.rng.integers(3))]
        return draw

    @staticmethod
    def _with_level(noisy: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        """Noisy slices followed by their noise-level map: a network input."""
        level_map = np.broadcast_to(sigma, (1, *noisy.shape[1:])).astype(np.float32)
        return np.concatenate([noisy, level_map])

    def centre(self, slices: np.ndarray) -> np.ndarray:
        """The centre slice of a stack of ``2 * context + 1``, as one channel."""
        return slices[self.context : self.context + 1]

    def _clean_patch(self) -> np.ndarray:
        volume = self.volumes[self.rng.choice(len(self.volumes), p=self.volume_weights)]
        patch, _ = self.window(volume.clean, volume.foreground, volume.slice_axes)
        return patch

    def window(self, data: np.ndarray, foreground: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """A random stack of ``2 * context + 1`` slices of ``data`` along one of ``axes``, mostly inside
        ``foreground``, turned and flipped at random; and the same window of ``foreground``."""
        axis = int(self.rng.choice(axes))
        data = np.moveaxis(data, axis, 0)
        mask = np.moveaxis(foreground, axis, 0)
        depth = 2 * self.context + 1
        size = self.config.patch_size
        for _ in range(20):
            corner = [
                self.rng.integers(0, max(extent - need, 0) + 1)
                for extent, need in zip(data.shape, (depth, size, size), strict=True)
            ]
            window = tuple(slice(c, c + n) for c, n in zip(corner, (depth, size, size), strict=True))
            if mask[window].mean() > 0.25:
                break
        shape = (depth, size, size)
        stacks = np.stack([_pad_to(data[window], shape), _pad_to(mask[window].astype(np.float32), shape)])
        both = self._augment_geometry(stacks)
        return both[0], both[1]

    def _augment_geometry(self, stacks: np.ndarray) -> np.ndarray:
        """``stacks`` (any leading axes, then slices, rows, columns) turned and flipped alike, at random."""
        stacks = np.rot90(stacks, k=int(self.rng.integers(4)), axes=(-2, -1))
        if self.rng.random() < 0.5:
            stacks = stacks[..., ::-1]
        if self.rng.random() < 0.5:
            stacks = stacks[..., ::-1, :, :]
        return np.ascontiguousarray(stacks)

    def _augment_intensity(self, patch: np.ndarray) -> np.ndarray:
        values = None  # None: the patch keeps a T1's own tissue values
        if self.config.contrast_remap_fraction and self.rng.random() < self.config.contrast_remap_fraction:
            values = tissue_values(self.config, self.rng)
        if self.config.tissue_model_fraction and self.rng.random() < self.config.tissue_model_fraction:
            tissues = TONE_KNOTS if values is None else values
            patch = fuzzy_tissues(patch, tissues, self.rng.uniform(*TISSUE_EDGE_WIDTH))
        elif values is not None:
            patch = tone_mapped(patch, values)
        gamma = self.rng.uniform(*self.config.gamma_range)
        scale = self.rng.uniform(*self.config.scale_range)
        return (scale * np.power(patch, gamma)).astype(np.float32)

    def _noise_field(self, shape: tuple[int, int]) -> np.ndarray:
        """1, or a smooth in-plane ramp between 0.6 and 1.4 (parallel-imaging-like variation)."""
        if self.rng.random() >= self.config.varying_noise_fraction:
            return np.ones((1, 1, 1), np.float32)
        rows, cols = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
        angle = self.rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * rows + np.sin(angle) * cols
        return (1.0 + 0.4 * ramp / max(np.abs(ramp).max(), 1e-6))[None].astype(np.float32)


BAND_KEPT = (0.5, 0.9)
"""The share of each in-plane axis's frequencies a band-limited example keeps (zero-filling to twice the
matrix keeps 0.5; resampling 0.8 mm to 1 mm about 0.8)."""
BAND_PADDING = 16
"""Pixels of mirrored border around a patch while its spectrum is cut (no wrap-around ringing)."""


def band_limited(patch: np.ndarray, kept: float) -> np.ndarray:
    """``patch`` (slices, rows, columns) with each slice's spectrum cut to the lowest ``kept`` share of
    frequencies along rows and columns; the magnitude of the result, as a scanner reconstructs it."""
    pad = BAND_PADDING
    padded = np.pad(patch, ((0, 0), (pad, pad), (pad, pad)), mode="symmetric")
    spectrum = np.fft.fft2(padded, axes=(1, 2))
    rows, columns = (np.abs(np.fft.fftfreq(n)) <= 0.5 * kept for n in padded.shape[1:])
    spectrum *= rows[:, None] & columns[None, :]
    return np.abs(np.fft.ifft2(spectrum, axes=(1, 2)))[:, pad:-pad, pad:-pad].astype(np.float32)


@dataclass
class ValidationCase:
    """A fixed slab of a validation volume with one seeded noise draw of one noise model."""

    name: str
    level_percent: float
    clean: np.ndarray
    noisy: np.ndarray
    seed: int
    noise: str = "rician"
    remapped: bool = False
    """Whether the slab went through a tone curve (``validation_tone_curves``)."""


VALIDATION_NOISE: dict[str, dict[str, Any]] = {
    "rician": {},
    "coils": {"coils": 8},
    "zero-filled": {"zero_filled": True},
    "profile": {},
}
"""The validation noise models, as the keyword arguments of :func:`add_noise` beyond Rician noise."""
LEVEL_SPREAD = {"profile": 0.5}
"""Validation noise models whose level strays from its mean across the slab (:func:`coil_profile`): 0.5-1.5
times, smoothly, for "profile"."""


def validation_cases(volumes: list[TrainingVolume], config: DataConfig, seed: int) -> list[ValidationCase]:
    """Central slabs of each validation volume (and of its seeded tone-curved copies) at each validation
    level and noise model, noise seeded once."""
    cases = []
    for index, volume in enumerate(volumes):
        axis = volume.slice_axes[0]
        data = np.moveaxis(volume.clean, axis, 0)
        count = min(config.validation_slices, data.shape[0])
        start = (data.shape[0] - count) // 2
        slab = np.ascontiguousarray(data[start : start + count])
        curves = np.random.default_rng([seed, index])
        slabs = [(volume.name, slab)] + [
            (f"{volume.name}~remapped{curve}", remapped(slab, config, curves))
            for curve in range(config.validation_tone_curves)
        ]
        for slab_index, (name, clean) in enumerate(slabs):
            for model_index, noise in enumerate(config.validation_noise):
                for level in config.validation_levels_percent:
                    case_seed = seed * 1000 + index * 100 + int(level) + 10_000_000 * model_index
                    case_seed += 100_000 * slab_index
                    sigma: float | np.ndarray = level / 100.0
                    if noise in LEVEL_SPREAD:
                        sigma = np.float32(sigma) * coil_profile(clean.shape, case_seed, LEVEL_SPREAD[noise])
                    noisy = add_noise(clean, sigma, "rician", case_seed, **VALIDATION_NOISE[noise])
                    cases.append(ValidationCase(name, level, clean, noisy, case_seed, noise, slab_index > 0))
    return cases


def _pad_to(patch: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    pads = [(0, max(want - have, 0)) for have, want in zip(patch.shape, shape, strict=True)]
    return np.pad(patch, pads, mode="reflect") if any(p[1] for p in pads) else patch

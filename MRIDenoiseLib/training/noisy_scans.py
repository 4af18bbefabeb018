"""Real scans with no clean image as training examples: recorrupted-to-recorrupted pairs.

A scan ``y`` with Gaussian noise of level sigma gives the network ``y + a sigma z`` (z ~ N(0, 1),
told the level ``sigma sqrt(1 + a^2)``) and the target ``y - sigma z / a``: the two copies' noise is
independent, so the expected squared error against the target is the error against the clean scan
plus a constant (Pang et al., CVPR 2021). They are drawn beside the synthetic pairs of
:class:`~MRIDenoiseLib.training.data.PairSampler` (``self_supervised`` in a supervised config).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..masks import foreground_mask
from ..noise import estimate_sigma
from .config import DataConfig, SelfSupervisedConfig
from .data import TRAINING_SIGMA_BAND, PairSampler, TrainingVolume, normalised, slice_axes, volume_layout


@dataclass
class NoisyScan:
    """One 3-D scan normalised by its brightest tissue, with its own noise level (same units, blind)."""

    name: str
    data: np.ndarray
    foreground: np.ndarray
    slice_axes: tuple[int, ...]
    sigma: float


def load_noisy_scans(path: Path) -> list[NoisyScan]:
    """The scan in ``path``, or each frame of a 4-D file (echoes, repetitions) as a scan of its own."""
    frames, spacing = volume_layout(path)
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)
    scans = []
    for frame in frames:
        name = path.name if frame is None else f"{path.name}[{frame}]"
        data = normalised(array if frame is None else array[frame])
        sigma = float(estimate_sigma(data, band=TRAINING_SIGMA_BAND))
        if not sigma > 0:
            raise InputError(f"{name}: no noise found to learn from (blind level {sigma})")
        axes = slice_axes(data.shape, spacing)
        if not axes:
            raise InputError(f"{name}: too few slices ({data.shape}) to train on")
        scans.append(NoisyScan(name, data, foreground_mask(data), axes, sigma))
    return scans


class MixedSampler(PairSampler):
    """Synthetic pairs and, in ``settings.fraction`` of the examples, recorrupted patches of real scans.

    Each example has four parts: the network input (slices and level map), the target centre slice,
    the loss's weight map (ones for a synthetic pair; the scan's foreground for a recorrupted patch,
    where its noise is Gaussian) and the scan's own noise level (0 for a synthetic pair, whose target
    is clean; the loss compares the Rician mean of the prediction at that level with a noisy target).
    """

    def __init__(
        self,
        volumes: list[TrainingVolume],
        config: DataConfig,
        context: int,
        seed: int,
        scans: list[NoisyScan],
        settings: SelfSupervisedConfig,
    ) -> None:
        super().__init__(volumes, config, context, seed)
        self.scans, self.settings = scans, settings
        weights = np.array([scan.foreground.sum() ** 0.5 for scan in scans], dtype=float)
        self.scan_weights = weights / weights.sum()

    def _pair(self) -> tuple[np.ndarray, ...]:
        if self.rng.random() < self.settings.fraction:
            return self.recorrupted()
        inputs, clean = super()._pair()
        return inputs, clean, np.ones_like(clean), np.zeros((), np.float32)

    def recorrupted(self) -> tuple[np.ndarray, ...]:
        """One example from a real scan: input, target, weight map and the scan's noise level."""
        scan = self.scans[self.rng.choice(len(self.scans), p=self.scan_weights)]
        patch, foreground = self.window(scan.data, scan.foreground, scan.slice_axes)
        draw = self.rng.standard_normal(patch.shape).astype(np.float32)
        share = self.settings.recorruption
        inputs = patch + np.float32(share * scan.sigma) * draw
        target = self.centre(patch - np.float32(scan.sigma / share) * draw)
        told = np.asarray(scan.sigma * np.sqrt(1.0 + share**2), np.float32)
        return self._with_level(inputs, told), target, self.centre(foreground), np.asarray(scan.sigma, np.float32)

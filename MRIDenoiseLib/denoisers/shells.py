"""Diffusion series denoised by MP-PCA, then refined shell by shell by a network in spherical harmonics.

MP-PCA (DIPY) uses the redundancy between the volumes inside 5x5x5 patches and estimates the noise
per voxel. Each diffusion shell of its output (and of the noisy input) is then fitted with spherical
harmonics (``spherical.py``: order 4, or 2 for shells of fewer than 20 directions), and a 3-D network
(``nets/shells.py``), trained on simulated brains with crossing fibres under many gradient tables and
noise levels, corrects the MP-PCA coefficients from their spatial neighbourhood, the noisy
coefficients, the noise map and the b-value. What order 4 does not describe is left out: at the
b-values trained (up to 3000 s/mm^2) it is mostly the noise MP-PCA kept (on the Philips phantom at
b = 1000 and sigma 0.1 of b0, a one-off check: 0.0094 of b0 in MP-PCA's output against 0.0005 in the noiseless
signal). Shells fitted to order 2 (fewer than 20 directions) keep MP-PCA's part beyond order 2, which
holds real signal (crossing fibres). b0 volumes are MP-PCA's. Working in harmonics makes one network
serve any gradient table, single- or multi-shell: it sees each shell's signal as a function on the
sphere, never as a list of volumes.
"""

from __future__ import annotations

import numpy as np
import torch

from ..diffusion import GradientTable, is_b0
from ..errors import InputError
from ..masks import foreground_mask
from ..nets.shells import DOWNSAMPLING
from ..progress import CancelToken, ProgressCallback, no_progress, scaled
from ..spherical import COEFFICIENTS, LEAST_DIRECTIONS, ShellFit, fit_shell, shells_of
from .base import NetworkSeriesDenoiser
from .dipy_methods import MarchenkoPasturPCA
from .joint import rician_signal

WINDOW = 64
"""Edge of the cubes the network sees at a time (MONAI sliding windows), bounding its memory."""
WINDOW_OVERLAP = 0.25


def network_input(
    b0: np.ndarray,
    sigma_map: np.ndarray,
    mppca_coefficients: np.ndarray,
    noisy_coefficients: np.ndarray,
    fit: ShellFit,
    bvalue: float,
    reference: float,
) -> np.ndarray:
    """The network's channels (34, z, y, x) for one shell; images (z, y, x), coefficients (15, z, y, x),
    everything divided by ``reference`` (the median b0 in the brain) but the b-value (given / 1000)."""
    levels = np.stack([b0, sigma_map, sigma_map * fit.noise_gain]) / reference
    shell = np.full((1, *b0.shape), bvalue / 1000.0)
    coefficients = np.concatenate([mppca_coefficients, noisy_coefficients]) / reference
    return np.concatenate([levels, shell, coefficients]).astype(np.float32)


def rician_debiased(coefficients: np.ndarray, fit: ShellFit, sigma_map: np.ndarray) -> np.ndarray:
    """The coefficients (15, z, y, x) of the signal whose Rician mean ``coefficients`` describe: synthesised
    at the shell's directions, inverted direction by direction with the noise map (z, y, x, same units),
    fitted again. MP-PCA keeps the magnitude's Rician bias, largest where the signal is lowest (along
    the fibres), so removing it per direction changes the anisotropy, not only the mean."""
    signals = fit.synthesise(np.moveaxis(coefficients, 0, -1))
    return np.moveaxis(fit.coefficients(rician_signal(signals, sigma_map)), -1, 0)


def reference_level(b0: np.ndarray) -> float:
    """The intensity unit of the network's input: the median b0 inside the brain (Otsu foreground)."""
    mask = foreground_mask(b0.astype(np.float32))
    inside = b0[mask] if mask.any() else b0.ravel()
    level = float(np.median(inside))
    return level if level > 0 else float(np.max(b0)) or 1.0


class MPPCAWithShellNetwork(NetworkSeriesDenoiser):
    """MP-PCA, then ``network`` on each shell's spherical-harmonic coefficients (see the module's docstring)."""

    model_id = ""
    gives_signal_components = True

    def denoise_series(
        self,
        series: np.ndarray,
        table: GradientTable | None,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        if table is None:
            raise InputError(f"{self.model_id or 'this method'} needs the series' gradient table (.bval/.bvec)")
        shells = shells_of(table)
        if not shells or not is_b0(table.bvalues).any():
            raise InputError(f"{self.model_id} needs b0 volumes and at least one diffusion-weighted shell")
        thin = [round(s.bvalue) for s in shells if len(s.indices) < LEAST_DIRECTIONS]
        if thin:
            raise InputError(
                f"{self.model_id} fits spherical harmonics per shell and needs at least {LEAST_DIRECTIONS} "
                f"directions in each; shells at b = {thin} have fewer (use --model mppca)"
            )
        mppca = MarchenkoPasturPCA()
        first = mppca.denoise_series(series, table, scaled(progress, 0.0, 0.8), cancel)
        sigma = mppca.sigma_map if mppca.sigma_map is not None else np.zeros(series.shape[:3], np.float32)
        self.sigma_map = sigma
        return self.refine(series, first, sigma, table, scaled(progress, 0.8, 1.0), cancel)

    def refine(
        self,
        series: np.ndarray,
        mppca: np.ndarray,
        sigma_map: np.ndarray,
        table: GradientTable,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        """The network's step alone: ``mppca`` (MP-PCA's output for ``series``, with its noise map)
        corrected shell by shell; b0 volumes stay MP-PCA's (see the module's docstring for what lies beyond
        the harmonics)."""
        b0 = mppca[..., is_b0(table.bvalues)].mean(axis=-1)
        reference = reference_level(b0)
        output = np.array(mppca, np.float32, copy=True)
        shells = shells_of(table)
        for number, shell in enumerate(shells):
            if cancel is not None:
                cancel.raise_if_cancelled()
            fit = fit_shell(table.directions[shell.indices])
            cleaned, noisy = output[..., shell.indices], np.asarray(series[..., shell.indices], np.float32)
            start = np.moveaxis(fit.coefficients(cleaned), -1, 0)
            if getattr(self.network, "rician_correction", False):
                start = rician_debiased(start, fit, sigma_map)
            channels = network_input(
                b0,
                sigma_map,
                start,
                np.moveaxis(fit.coefficients(noisy), -1, 0),
                fit,
                shell.bvalue,
                reference,
            )
            coefficients = self._correct(channels) * reference
            coefficients[fit.used :] = 0.0
            output[..., shell.indices] = fit.synthesise(np.moveaxis(coefficients, 0, -1))
            if fit.used < COEFFICIENTS:  # order 2 leaves out real signal (crossings): keep MP-PCA's
                output[..., shell.indices] += cleaned - fit.synthesise(fit.coefficients(cleaned))
            progress((number + 1) / len(shells), f"shell b = {shell.bvalue:.0f}")
        return np.clip(output, 0, None).astype(np.float32)

    def _correct(self, channels: np.ndarray) -> np.ndarray:
        """The network's coefficients for one shell's channels (34, z, y, x), in sliding windows."""
        from monai.inferers import sliding_window_inference

        # windows are multiples of 4 (the network's down-sampling); smaller volumes are padded up to one
        window = [min(WINDOW, size + (-size) % DOWNSAMPLING) for size in channels.shape[1:]]
        with torch.inference_mode():
            inputs = torch.from_numpy(channels)[None].to(self.device)
            result = sliding_window_inference(
                inputs, window, 1, self.network, overlap=WINDOW_OVERLAP, mode="gaussian", padding_mode="replicate"
            )
        return result[0].float().cpu().numpy()

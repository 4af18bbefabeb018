"""The methods compared, product and peers, each run the way EVALUATION.md prescribes.

Peers (bm4d, antspyx, dipy) are optional imports: a peer that is not installed is skipped and
the report says so.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from MRIDenoiseLib.denoisers.classical import STABLE_TIME_STEP
from MRIDenoiseLib.models.catalog import load_catalog
from MRIDenoiseLib.noise import estimate_sigma
from MRIDenoiseLib.pipeline import load_denoiser


@dataclass
class Method:
    """A denoiser under test: ``run(noisy, true_sigma, spacing_zyx) -> denoised``."""

    name: str
    label: str
    run: Callable[[np.ndarray, float, tuple[float, float, float]], np.ndarray]
    blind: bool
    parameters: dict[str, object] = field(default_factory=dict)
    requires: str | None = None

    @property
    def available(self) -> bool:
        return self.requires is None or importlib.util.find_spec(self.requires) is not None


def shipped_scalar_networks() -> list[str]:
    """Ids of the catalogue's bundled networks for scalar volumes (user models left out)."""
    return [e.id for e in load_catalog() if e.kind == "network" and e.input == "scalar" and not e.user]


def product_method(model_id: str, label: str | None = None, *, oracle_sigma: bool = False) -> Method:
    """A catalogue model, run blind (sigma estimated by the product), or given the true sigma.

    ``oracle_sigma`` hands it the sigma of the added noise, the information BM4D gets, and labels
    it so, as EVALUATION.md asks; it is not the product's way. On a reference that keeps noise of
    its own, the blind estimate counts that noise too, so the oracle row tells what removing it
    costs the blind row there.
    """
    entry = load_catalog().get(model_id)
    cache: dict[str, object] = {}

    def run(noisy, sigma, spacing):
        if "denoiser" not in cache:
            cache["denoiser"], _ = load_denoiser(model_id, "auto")
        return cache["denoiser"].denoise(noisy, sigma if oracle_sigma else None, spacing_zyx=spacing)

    parameters = {"model": model_id, "sha256": entry.sha256} if entry.sha256 else {"model": model_id}
    if oracle_sigma:
        parameters["sigma"] = "true sigma of the added noise"
        return Method(f"{model_id}-oracle", f"{entry.title} (ours, oracle sigma)", run, False, parameters)
    return Method(model_id, label or f"{entry.title} (ours, blind)", run, blind=True, parameters=parameters)


def run_bm4d(noisy, sigma, spacing):
    """BM4D (the ``bm4d`` package) at noise level ``sigma`` (the volume's units)."""
    import bm4d

    scale = float(noisy.max())
    return (bm4d.bm4d(noisy / scale, sigma_psd=sigma / scale) * scale).astype(np.float32)


def bm4d_blind() -> Method:
    """BM4D given the product's own sigma estimate instead of the true sigma: the blind row's counterpart.

    Not one of EVALUATION.md's peers; it shows how much of a gap to BM4D (oracle sigma) comes
    from the sigma each method is given rather than from the denoiser, on references that keep
    noise of their own.
    """
    return Method(
        "bm4d-blind",
        "BM4D (sigma estimated by MRIDenoise, blind)",
        lambda noisy, sigma, spacing: run_bm4d(noisy, estimate_sigma(noisy), spacing),
        blind=True,
        parameters={"sigma_psd": "MRIDenoiseLib estimate_sigma of the noisy input"},
        requires="bm4d",
    )


def run_ants(noisy, sigma, spacing):
    """ANTs DenoiseImage, Rician model; it estimates its own noise (``sigma`` unused)."""
    import ants

    image = ants.from_numpy(noisy.transpose(2, 1, 0).copy(), spacing=tuple(spacing[::-1]))
    return ants.denoise_image(image, noise_model="Rician").numpy().transpose(2, 1, 0).astype(np.float32)


def run_dipy_nlmeans(noisy, sigma, spacing):
    """DIPY non-local means, Rician, at DIPY's own noise estimate (``sigma`` unused)."""
    from dipy.denoise.nlmeans import nlmeans
    from dipy.denoise.noise_estimate import estimate_sigma

    estimated = float(np.ravel(estimate_sigma(noisy, N=1))[0])
    return nlmeans(noisy, sigma=estimated, rician=True).astype(np.float32)


def anisotropic_diffusion(iterations: int, conductance: float) -> Callable:
    def run(noisy, sigma, spacing):
        image = sitk.GetImageFromArray(noisy)
        image.SetSpacing(tuple(float(s) for s in spacing[::-1]))
        smoothed = sitk.CurvatureAnisotropicDiffusion(
            image, timeStep=STABLE_TIME_STEP, conductanceParameter=conductance, numberOfIterations=iterations
        )
        return sitk.GetArrayFromImage(smoothed)

    return run


def gaussian(width_mm: float) -> Callable:
    def run(noisy, sigma, spacing):
        image = sitk.GetImageFromArray(noisy)
        image.SetSpacing(tuple(float(s) for s in spacing[::-1]))
        return sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, width_mm))

    return run


ADF_GRID = [{"iterations": i, "conductance": c} for i in (5, 10, 20, 40) for c in (0.5, 1.0, 2.0, 4.0)]
GAUSSIAN_GRID = [{"width_mm": w} for w in (0.4, 0.6, 0.8, 1.0, 1.3, 1.6)]


def peers(adf: dict[str, object], smoothing: dict[str, object]) -> list[Method]:
    """The peers of EVALUATION.md; ADF and Gaussian with parameters tuned beforehand."""
    return [
        Method(
            "bm4d",
            "BM4D (oracle sigma)",
            run_bm4d,
            blind=False,
            parameters={"sigma_psd": "true sigma"},
            requires="bm4d",
        ),
        Method(
            "ants",
            "ANTs DenoiseImage (Rician)",
            run_ants,
            blind=True,
            parameters={"noise_model": "Rician"},
            requires="ants",
        ),
        Method(
            "dipy-nlmeans",
            "DIPY non-local means",
            run_dipy_nlmeans,
            blind=True,
            parameters={"rician": True, "sigma": "dipy estimate_sigma(N=1)"},
            requires="dipy",
        ),
        Method("adf", "Anisotropic diffusion (tuned)", anisotropic_diffusion(**adf), blind=True, parameters=adf),
        Method("gaussian", "Gaussian smoothing (tuned)", gaussian(**smoothing), blind=True, parameters=smoothing),
    ]

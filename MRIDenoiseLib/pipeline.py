"""The one denoise call behind the CLI, the Slicer logic and the benchmarks.

read -> checks -> sigma (given or estimated) -> denoiser -> output with the input's geometry.
Normalisation happens inside each denoiser and is inverted there.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from .bands import check_zero_fill
from .denoisers import CLASSICAL_METHODS, Denoiser, NetworkDenoiser, WienerRefined
from .denoisers.base import PerVolume, SeriesDenoiser
from .denoisers.refinement import MOST_CORRELATION, SHARE_LEVEL
from .diffusion import GradientTable
from .errors import InputError
from .inference import select_device
from .io import check_distinct_outputs, check_output_target, input_files, output_files, read_volume, write_volumes
from .models.catalog import Catalog, ModelEntry, load_catalog
from .models.store import resolve_weights
from .models.weights import load_network
from .noise import check_coils
from .progress import CancelToken, ProgressCallback, no_progress, scaled
from .volume import Volume

log = logging.getLogger(__name__)


@dataclass
class DenoiseResult:
    """A denoised volume and how it was made."""

    volume: Volume
    removed_noise: Volume
    model_id: str
    device: str
    sigma: list[float]
    sigma_estimated: bool
    seconds: float
    sigma_map: Volume | None = None
    """The noise standard deviation per voxel, when the method estimates one (MP-PCA)."""
    signal_components: Volume | None = None
    """The number of signal components MP-PCA kept around each voxel, when asked for."""
    adaptation: dict[str, object] = field(default_factory=dict)
    """What an adapter decided and did (empty when the call had none); see :class:`Adapter`."""
    wiener_step: bool | None = None
    """Whether the default's low-noise Wiener step ran on a 3-D volume (None: the method has none)."""
    wiener_share: float | None = None
    """The share of the Wiener step kept, where it ran (1: all of it; see ``denoisers/refinement.py``)."""
    acquired_shape: tuple[int, ...] | None = None
    """The grid a zero-filled scan was denoised on (its acquired band; see ``bands.py``), None if not asked."""
    noise_correlation: float | None = None
    """The neighbour correlation of the noise the default's network removed, where its Wiener step's gate
    measured it (low noise): above ``MOST_CORRELATION`` the scan's noise is correlated, as a zero-filled
    reconstruction leaves it (``zero_filled``)."""

    @property
    def correlated_noise(self) -> bool:
        """Whether the noise removed was correlated between neighbours: a zero-filled reconstruction?"""
        return self.noise_correlation is not None and self.noise_correlation > MOST_CORRELATION

    def summary(self) -> dict[str, object]:
        summary: dict[str, object] = {
            "model": self.model_id,
            "device": self.device,
            "sigma": self.sigma[0] if len(self.sigma) == 1 else (self.sigma or None),
            "sigma_estimated": self.sigma_estimated,
            "seconds": round(self.seconds, 3),
        }
        if self.adaptation:
            summary["adaptation"] = self.adaptation
        if self.wiener_step is not None:
            summary["wiener_step"] = self.wiener_step
        if self.wiener_share is not None:
            summary["wiener_share"] = round(self.wiener_share, 3)
        if self.acquired_shape is not None:
            summary["acquired_shape"] = list(self.acquired_shape)
        if self.noise_correlation is not None:
            summary["removed_noise_correlation"] = round(self.noise_correlation, 3)
            summary["correlated_noise"] = self.correlated_noise
        return summary


@dataclass
class Adapted:
    """An adapter's answer: the denoiser to run instead of the catalogue's (None: run the catalogue's)
    and what it decided and did, for the result's summary."""

    denoiser: Denoiser | None
    report: dict[str, object]


class Adapter(Protocol):
    """Something run on the input before denoising that may give a denoiser made for it (for
    instance a network adapted to the scan: ``MRIDenoiseLib.adaptation``). The pipeline sits
    below training, so the call receives it rather than importing it."""

    def __call__(
        self,
        volume: Volume,
        model: str | None,
        device: str,
        sigma: float | None,
        progress: ProgressCallback,
        cancel: CancelToken | None,
    ) -> Adapted: ...


ADAPTATION_SHARE = 0.9
"""The share of a call's progress an adapter that runs reports in."""


def check_denoisable(volume: Volume) -> None:
    """Reject what cannot be denoised meaningfully, with a message the user can act on."""
    array = volume.array
    if array.ndim not in (3, 4):
        raise InputError(f"expected a 3-D volume or a 4-D series, got {array.ndim}-D data")
    if array.size == 0:
        raise InputError("the input volume is empty")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise InputError("complex data is not supported; give a magnitude image")
    if not np.isfinite(array).all():
        raise InputError("the input contains NaN or infinite values")
    if float(array.max()) == float(array.min()):
        raise InputError("the input volume is constant; there is nothing to denoise")
    if float(array.max()) <= 0:
        raise InputError("the input has no positive intensity; a magnitude image is expected")
    negative, low, high = float(np.mean(array < 0)), -float(array.min()), float(array.max())
    if 0.35 < negative < 0.65 and abs(low - high) < 0.1 * high:  # wrapped phase: symmetric about 0, half negative
        raise InputError(
            f"the input looks like a phase or other signed image ({100 * negative:.0f} % of voxels negative, "
            f"range {-low:.4g} to {high:.4g}); MRIDenoise denoises magnitude images: "
            "give the magnitude"
        )


def check_signed_data(array: np.ndarray, denoiser: Denoiser) -> None:
    """Refuse negative intensities for a method that assumes magnitude data; say so when a few are clipped.

    A handful of slightly negative voxels (interpolation ringing) are clipped with a warning; more
    (mean-subtracted or offset data) would be silently changed by a magnitude method, so they are refused.
    """
    low = float(array.min())
    if low >= 0 or not denoiser.magnitude_only:
        return
    fraction = float(np.mean(array < 0))
    if fraction <= 1e-3 and -low <= 0.01 * float(array.max()):
        log.warning("%d slightly negative voxels (down to %.4g) are treated as 0", int(np.sum(array < 0)), low)
        return
    raise InputError(
        f"the input has negative intensities ({100 * fraction:.2g} % of voxels, down to {low:.4g}) and "
        f"{denoiser.model_id} assumes magnitude data, which is never negative: use --model gaussian or adf "
        "(which keep the sign), or remove the offset first"
    )


def load_denoiser(
    model: str | None = None,
    device: str = "auto",
    catalog: Catalog | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    planes: str | None = None,
    refine: bool = True,
) -> tuple[Denoiser, ModelEntry]:
    """The denoiser for a catalogue id (the default one for None), weights resolved and verified.

    ``planes`` overrides the catalogue entry's (see :class:`ModelEntry`) for a network. ``refine=False``
    leaves out the entry's second stage, if it names one: the bare network (to fine-tune it, or to run
    it where the second stage was not measured).
    """
    catalog = catalog or load_catalog()
    entry = catalog.get(model)
    if entry.input != "scalar":
        raise InputError(f"model {entry.id!r} is for {entry.input} data and cannot denoise scalar volumes")
    if entry.kind == "classical":
        denoiser = CLASSICAL_METHODS[entry.architecture]()
    else:
        weights = resolve_weights(entry, progress, cancel)
        network = load_network(weights, entry.architecture, entry.network_arguments())
        network_denoiser = NetworkDenoiser(network, select_device(device), planes=planes or entry.planes)
        denoiser = with_second_stage(network_denoiser, entry) if refine else network_denoiser
    denoiser.model_id = entry.id
    return denoiser, entry


def with_second_stage(network: NetworkDenoiser, entry: ModelEntry) -> Denoiser:
    """``network`` (the entry's, as shipped or adapted to a scan) under the second stage the entry names
    (``ModelEntry.refinement``), or alone where it names none; the model id is the network's."""
    if entry.refinement is None:
        return network
    if entry.refinement == "wiener":
        staged = WienerRefined(network)
    else:  # "wiener-share", "wiener-share-interleaved" or "...-faded" (the catalogue admits no other)
        staged = WienerRefined(
            network,
            SHARE_LEVEL,
            measure_share=True,
            interleaved=entry.refinement.startswith("wiener-share-interleaved"),
            faded=entry.refinement.endswith("-faded"),
        )
    staged.model_id = network.model_id
    return staged


def load_series_denoiser(
    model: str | None,
    table: GradientTable | None,
    sigma: float | None = None,
    spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0),
    device: str = "auto",
    catalog: Catalog | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    varying_noise: bool = False,
    coils: int = 1,
    zero_filled: float = 1.0,
) -> SeriesDenoiser:
    """Any catalogue method as a :class:`SeriesDenoiser`: diffusion methods as they are, 3-D ones
    volume by volume (with ``sigma``, or estimated per volume; with ``varying_noise`` estimated per
    voxel and given to the network as a map). A q-space network is picked for ``table``; when no
    shipped or earlier model fits it, one is trained from simulation first. MP-PCA methods estimate
    their noise per voxel in any case, so ``varying_noise`` asks nothing more of them. ``coils`` > 1
    (sum-of-squares magnitudes, non-central chi) and ``zero_filled`` > 1 (a zero-filled reconstruction:
    :class:`PerVolume`) are for the volume-by-volume methods."""
    catalog = catalog or load_catalog()
    entry = catalog.get(model)
    if entry.input == "scalar":
        # A sum-of-squares magnitude told one level has its floor moved with that level, off wherever the
        # noise varies: a bias the Wiener step's share, measured by recorrupting the scan, cannot see
        # (with 8 coils at 10 % the v17 default's step cost Colin27 0.56 dB; README, "Noise that is not
        # i.i.d. Rician"). A denoiser the caller hands in runs as given.
        refine = coils == 1 or varying_noise
        denoiser, _ = load_denoiser(entry.id, device, catalog, progress, cancel, refine=refine)
        return PerVolume(denoiser, sigma, spacing_zyx, varying_noise, coils, zero_filled)
    if zero_filled != 1:
        raise InputError(f"{entry.id} denoises whole series; --zero-filled works with methods for 3-D volumes")
    if coils != 1:
        raise InputError(f"{entry.id} models Rician noise itself; --coils works with methods for 3-D volumes")
    if sigma is not None:
        raise InputError(f"{entry.id} estimates the noise itself; leave out --sigma with it")
    if varying_noise and entry.architecture not in MPPCA_METHODS:
        raise InputError(
            f"{entry.id} estimates no noise level per voxel; --sigma map works with scalar networks and MP-PCA"
        )
    if entry.architecture == JOINT_ARCHITECTURE:
        return _joint_denoiser(entry, spacing_zyx, device, catalog, progress, cancel)
    if entry.architecture == SHELL_ARCHITECTURE:
        return _shell_denoiser(entry, device, progress, cancel)
    if entry.kind == "classical":
        from .denoisers.dipy_methods import SERIES_METHODS

        return SERIES_METHODS[entry.architecture]()
    return _qspace_denoiser(entry, table, catalog, device, progress, cancel)


JOINT_ARCHITECTURE = "mppca-spatial"
"""MP-PCA followed by a scalar network's spatial prior (``denoisers/joint.py``)."""
JOINT_NETWORK = "mridenoise-rician-2.5d-v6"
"""The spatial prior's network where the entry names none (``arguments.spatial_model``): the one its
benchmarks measured, whatever the scalar default becomes."""


def _joint_denoiser(
    entry: ModelEntry,
    spacing_zyx: tuple[float, float, float],
    device: str,
    catalog: Catalog,
    progress: ProgressCallback,
    cancel: CancelToken | None,
) -> SeriesDenoiser:
    """MP-PCA with a scalar network (the entry's ``spatial_model`` argument, else :data:`JOINT_NETWORK`;
    weights resolved and verified) as its spatial prior; the entry's other arguments (``level_factor``...)
    go to :class:`~MRIDenoiseLib.denoisers.joint.MPPCAWithSpatialPrior`."""
    from .denoisers.joint import MPPCAWithSpatialPrior

    arguments = dict(entry.arguments)
    network_id = arguments.pop("spatial_model", JOINT_NETWORK)
    spatial, _ = load_denoiser(network_id, device, catalog, progress, cancel, refine=False)  # measured without it
    denoiser = MPPCAWithSpatialPrior(spatial, spacing_zyx, **arguments)
    denoiser.model_id = entry.id
    return denoiser


SHELL_ARCHITECTURE = "shell-unet-3d"
"""MP-PCA refined per shell in spherical harmonics by a 3-D network (``denoisers/shells.py``)."""


def _shell_denoiser(
    entry: ModelEntry, device: str, progress: ProgressCallback, cancel: CancelToken | None
) -> SeriesDenoiser:
    """MP-PCA and the shell network of ``entry`` (weights resolved and verified): any gradient table."""
    from .denoisers.shells import MPPCAWithShellNetwork

    weights = resolve_weights(entry, progress, cancel)
    network = load_network(weights, entry.architecture, entry.network_arguments())
    denoiser = MPPCAWithShellNetwork(network, select_device(device))
    denoiser.model_id = entry.id
    return denoiser


def _qspace_denoiser(
    entry: ModelEntry,
    table: GradientTable | None,
    catalog: Catalog,
    device: str,
    progress: ProgressCallback,
    cancel: CancelToken | None,
) -> SeriesDenoiser:
    """The q-space network of ``entry``'s architecture for ``table`` (trained for it when none fits)."""
    from .denoisers.qspace import QSpaceDenoiser, tables_match
    from .training.qspace import train_for_table

    if table is None:
        raise InputError(
            "diffusion models need a 4-D series with b-values and gradients (.bval/.bvec or NRRD DWMRI keys)"
        )
    if not np.isfinite(table.directions).all():
        raise InputError("the diffusion table holds undefined (NaN) gradient directions")
    if not tables_match(_entry_table(entry), table):
        fitting = [
            e
            for e in catalog
            if e.input == "dwi" and e.architecture == entry.architecture and tables_match(_entry_table(e), table)
        ]
        entry = (
            fitting[0] if fitting else train_for_table(table, entry.architecture, scaled(progress, 0.0, 0.9), cancel)
        )
    weights = resolve_weights(entry, scaled(progress, 0.9, 1.0), cancel)
    network = load_network(weights, entry.architecture, entry.network_arguments())
    denoiser = QSpaceDenoiser(network, _entry_table(entry), select_device(device))
    denoiser.model_id = entry.id
    return denoiser


def denoise_volume(
    volume: Volume | np.ndarray,
    model: str | None = None,
    device: str = "auto",
    sigma: float | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    denoiser: Denoiser | SeriesDenoiser | None = None,
    varying_noise: bool = False,
    signal_components: bool = False,
    adapter: Adapter | None = None,
    coils: int = 1,
    zero_filled: float = 1.0,
) -> DenoiseResult:
    """Denoise a 3-D volume or a 4-D series, keeping geometry and metadata.

    ``volume`` may be a plain array (z, y, x) or (z, y, x, n), taken with unit spacing. ``sigma``
    is the noise standard deviation in the input's units; None estimates it (for a series, per
    volume; a constant volume of a series is passed through). ``varying_noise`` estimates a noise
    level per voxel instead (parallel imaging, coil sensitivity) and gives the network that map,
    returned as ``sigma_map``. ``signal_components`` (MP-PCA methods) also returns the number of
    signal components MP-PCA kept around each voxel. Without ``model``, a diffusion series
    gets the best measured diffusion method and anything else the default model. ``adapter`` runs
    first and may replace the model with one made for this input (``MRIDenoiseLib.adaptation``).
    ``coils`` > 1: the input is the sum-of-squares magnitude of that many receive channels (non-central
    chi noise, ``sigma`` per channel); each volume is moved onto the Rician floor first
    (``noise.rician_from_chi``). ``zero_filled`` > 1: the scan was reconstructed at that many times its
    acquired resolution in the slice plane (zero-filled k-space); its acquired band is denoised on the
    acquired grid (``bands.py``). Every method runs as a :class:`SeriesDenoiser` (a 3-D volume is a
    series of one). The input is never modified.
    """
    if isinstance(volume, np.ndarray):
        volume = Volume(volume)
    if not isinstance(volume, Volume):
        raise TypeError(f"denoise_volume takes a Volume or a numpy array, not {type(volume).__name__}")
    check_denoisable(volume)
    if sigma is not None and not (np.isfinite(sigma) and sigma > 0):
        raise InputError(f"sigma must be a positive number, got {sigma}")
    intensity_range = float(volume.array.max()) - float(volume.array.min())
    if sigma is not None and sigma > intensity_range:
        raise InputError(
            f"sigma {sigma:.4g} is larger than the image's whole intensity range ({intensity_range:.4g}); "
            "give sigma in the image's own units"
        )
    check_coils(coils)
    if coils != 1 and adapter is not None:
        raise InputError("adapting to the scan assumes Rician noise; give --coils or --adapt, not both")
    check_zero_fill(zero_filled)
    if zero_filled != 1 and adapter is not None:
        raise InputError("adapting to the scan assumes white noise; give --zero-filled or --adapt, not both")
    started = time.perf_counter()
    adaptation: dict[str, object] = {}
    if adapter is not None and denoiser is None:
        adapted = adapter(volume, model, device, sigma, scaled(progress, 0.0, ADAPTATION_SHARE), cancel)
        adaptation, denoiser = adapted.report, adapted.denoiser
        if denoiser is not None:
            progress = scaled(progress, ADAPTATION_SHARE, 1.0)
    table = gradient_table_of(volume)
    spacing = volume.geometry.spacing_zyx()
    loading = 0.05
    if denoiser is None:
        catalog = load_catalog()
        entry = catalog.get(chosen_model(volume, model, catalog))
        check_maps_given(entry, catalog, sigma_map=False, rank_map=signal_components)
        if entry.input == "dwi" and entry.kind == "network" and entry.architecture != SHELL_ARCHITECTURE:
            loading = 0.6  # may train a q-space model for this gradient table first
        series_denoiser = load_series_denoiser(
            entry.id,
            table,
            sigma,
            spacing,
            device,
            catalog,
            scaled(progress, 0.0, loading),
            cancel,
            varying_noise,
            coils,
            zero_filled,
        )
    elif isinstance(denoiser, Denoiser):
        series_denoiser = PerVolume(denoiser, sigma, spacing, varying_noise, coils, zero_filled)
    elif zero_filled != 1:
        raise InputError(f"{denoiser.model_id} denoises whole series; --zero-filled works with methods for 3-D volumes")
    elif coils != 1:
        raise InputError(f"{denoiser.model_id} models Rician noise itself; --coils works with methods for 3-D volumes")
    else:
        series_denoiser = denoiser
    if series_denoiser.needs_series and not volume.is_series:
        raise InputError(
            f"{series_denoiser.model_id} denoises 4-D series (diffusion-weighted volumes), not single volumes"
        )
    if signal_components and not series_denoiser.gives_signal_components:
        raise InputError(f"{series_denoiser.model_id} gives no signal components per voxel (it runs no MP-PCA)")
    if isinstance(series_denoiser, PerVolume):
        check_signed_data(volume.array, series_denoiser.denoiser)
    source = np.asarray(volume.array, np.float32)
    stack = source if volume.is_series else source[..., None]
    denoised = series_denoiser.denoise_series(stack, table, scaled(progress, loading, 1.0), cancel)
    components = None
    if signal_components:
        from .denoisers.dipy_methods import count_signal_components

        components = Volume(count_signal_components(stack), volume.geometry)
    if not volume.is_series:
        denoised = denoised[..., 0]
    sigma_map = series_denoiser.sigma_map
    per_volume = series_denoiser.denoiser if isinstance(series_denoiser, PerVolume) else None
    refined = per_volume if isinstance(per_volume, WienerRefined) and not volume.is_series else None
    return DenoiseResult(
        volume=volume.with_array(denoised),
        removed_noise=volume.with_array(source - denoised),
        model_id=series_denoiser.model_id,
        device=series_denoiser.device_name,
        sigma=series_denoiser.sigmas,
        sigma_estimated=series_denoiser.sigma_estimated,
        seconds=time.perf_counter() - started,
        sigma_map=Volume(sigma_map, volume.geometry) if sigma_map is not None else None,
        signal_components=components,
        adaptation=adaptation,
        wiener_step=refined.refined if refined is not None else None,
        wiener_share=refined.share if refined is not None else None,
        acquired_shape=series_denoiser.acquired_shape if isinstance(series_denoiser, PerVolume) else None,
        noise_correlation=refined.noise_correlation if refined is not None else None,
    )


def chosen_model(volume: Volume, model: str | None, catalog: Catalog) -> str | None:
    """The catalogue id a call runs: ``model``, or for a diffusion series without one the best measured
    diffusion method (benchmarks/results/dwi.md); None is the default model."""
    if model is None and gradient_table_of(volume) is not None and catalog.default_dwi_id:
        return catalog.default_dwi_id
    return model


MPPCA_METHODS = ("mppca", JOINT_ARCHITECTURE, SHELL_ARCHITECTURE)
"""Catalogue architectures that run MP-PCA: they estimate the noise per voxel themselves and can
give the number of signal components per voxel."""


def gradient_table_of(volume: Volume) -> GradientTable | None:
    """The gradient table of a diffusion series, or None for anything else."""
    if not volume.is_series or volume.diffusion is None:
        return None
    return GradientTable(volume.diffusion.bvalues, volume.diffusion.gradients)


def _entry_table(entry: ModelEntry) -> GradientTable:
    if not entry.gradient_table:
        raise InputError(f"model {entry.id!r} has no gradient table in its catalogue entry")
    return GradientTable(
        np.asarray(entry.gradient_table["bvalues"], float), np.asarray(entry.gradient_table["directions"], float)
    )


def denoise_file(
    input_path: str | Path,
    output_path: str | Path,
    model: str | None = None,
    device: str = "auto",
    sigma: float | None = None,
    noise_map_path: str | Path | None = None,
    keep_dtype: bool = False,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    sigma_map_path: str | Path | None = None,
    varying_noise: bool = False,
    rank_map_path: str | Path | None = None,
    adapter: Adapter | None = None,
    coils: int = 1,
    zero_filled: float = 1.0,
) -> DenoiseResult:
    """Read, denoise and write; the output, the removed noise, the sigma map and the rank map land
    together, or nothing is written. ``sigma_map_path`` needs a noise map per voxel: ``varying_noise``,
    or a method that estimates one (MP-PCA, MP-PCA + spatial prior); ``rank_map_path`` (the number of
    signal components per voxel, like ``dwidenoise -rank``) an MP-PCA method; without them both are
    refused before any work. ``adapter``, ``coils`` and ``zero_filled``: see :func:`denoise_volume`."""
    outputs = [Path(output_path)] + [Path(p) for p in (noise_map_path, sigma_map_path, rank_map_path) if p]
    for path in outputs:
        check_output_path(input_path, path)
    check_distinct_outputs([(path, None) for path in outputs])
    volume = read_volume(input_path)
    if (sigma_map_path and not varying_noise) or rank_map_path:
        catalog = load_catalog()
        entry = catalog.get(chosen_model(volume, model, catalog))
        check_maps_given(
            entry, catalog, sigma_map=bool(sigma_map_path and not varying_noise), rank_map=bool(rank_map_path)
        )
    result = denoise_volume(
        volume,
        model,
        device,
        sigma,
        progress,
        cancel,
        varying_noise=varying_noise,
        signal_components=rank_map_path is not None,
        adapter=adapter,
        coils=coils,
        zero_filled=zero_filled,
    )
    if cancel is not None:
        cancel.raise_if_cancelled()
    written = [(result.volume, Path(output_path), keep_dtype)]
    if noise_map_path:
        written.append((result.removed_noise, Path(noise_map_path), False))
    if sigma_map_path and result.sigma_map is not None:
        written.append((result.sigma_map, Path(sigma_map_path), False))
    if rank_map_path and result.signal_components is not None:
        written.append((result.signal_components, Path(rank_map_path), False))
    write_volumes(written)
    return result


def check_maps_given(entry: ModelEntry, catalog: Catalog, sigma_map: bool, rank_map: bool) -> None:
    """Refuse, before any work, a noise map (without ``--sigma map``) or a rank map from a method that
    estimates neither: only the MP-PCA methods do."""
    if entry.architecture in MPPCA_METHODS or not (sigma_map or rank_map):
        return
    option, what = ("--rank-map", "no signal components") if rank_map else ("--sigma-map", "no noise map")
    alternatives = ", ".join(e.id for e in catalog if e.architecture in MPPCA_METHODS)
    with_map = "--sigma map or with " if option == "--sigma-map" else ""
    raise InputError(f"{entry.id} gives {what} per voxel; {option} works with {with_map}{alternatives}")


def check_output_path(input_path: str | Path, output_path: str | Path) -> None:
    """Refuse an output that has no known format, is a folder, cannot be written, or would overwrite
    the input or one of its sidecar files (.bval/.bvec, a detached header's data)."""
    path = Path(output_path)
    check_output_target(path)
    protected = input_files(Path(input_path))
    for file in output_files(path):
        clash = next((own for own in protected if _same_file(file, own)), None)
        if clash is not None:
            what = "the input" if clash == Path(input_path) else f"the input's {clash.name}"
            raise InputError(f"output {path} would overwrite {what}; choose another name or folder")


def _same_file(first: Path, second: Path) -> bool:
    if first.exists() and second.exists():
        return os.path.samefile(first, second)
    return first.resolve() == second.resolve()

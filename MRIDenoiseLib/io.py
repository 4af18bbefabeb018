"""Reading and writing volumes with SimpleITK: NIfTI, NRRD, MetaImage and DICOM series.

Geometry (spacing, origin, direction) is carried through exactly. 4-D diffusion series keep
their b-values and gradients: FSL .bval/.bvec files beside NIfTI, DWMRI keys inside NRRD.
Gradients are held in the LPS world frame in memory and converted to each format's frame on
write. Every write is atomic: the final file appears complete or not at all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .volume import DiffusionInfo, Geometry, Volume

FILE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
"""Formats read and written; a folder is read as a DICOM series."""

_DETACHED_DATA = {".nhdr": (".raw.gz", ".raw"), ".mhd": (".zraw", ".raw")}


def format_suffix(path: str | Path) -> str:
    """The format suffix of ``path`` ('.nii.gz', '.nrrd', ...), or raise InputError."""
    name = Path(path).name.lower()
    for suffix in FILE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise InputError(f"unsupported file format: {Path(path).name} (use {', '.join(FILE_SUFFIXES)} or a DICOM folder)")


def _stem(path: Path) -> Path:
    return path.with_name(path.name[: -len(format_suffix(path))])


# ---- reading ---------------------------------------------------------------------------
def read_volume(path: str | Path) -> Volume:
    """Read a 3-D volume or a 4-D series (with its diffusion table when there is one)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.is_dir():
        image = _read_dicom_series(path)
    else:
        format_suffix(path)
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as error:
            raise InputError(f"cannot read {path.name}: {_first_line(error)}") from None
    volume = _volume_from_image(image)
    if volume.is_series and not path.is_dir():
        volume.diffusion = _read_diffusion(path, image, volume)
    return volume


def _read_dicom_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(f"no DICOM series found in folder {folder}")
    if len(series) > 1:
        raise InputError(f"{folder} holds {len(series)} DICOM series; put each series in its own folder")
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series[0]))
    try:
        return reader.Execute()
    except RuntimeError as error:
        raise InputError(f"cannot read the DICOM series in {folder}: {_first_line(error)}") from None


def _volume_from_image(image: sitk.Image) -> Volume:
    dimension = image.GetDimension()
    components = image.GetNumberOfComponentsPerPixel()
    array = sitk.GetArrayFromImage(image)
    source_dtype = array.dtype
    if dimension == 2:
        raise InputError(f"the input is a 2-D image {image.GetSize()}; a 3-D volume is needed")
    if dimension == 4:
        if components > 1:
            raise InputError("5-D input (a 4-D image of vectors) is not supported")
        size = image.GetSize()
        array = array[0] if size[3] == 1 else np.moveaxis(array, 0, -1)
        geometry = Geometry(
            spacing=tuple(image.GetSpacing()[:3]),
            origin=tuple(image.GetOrigin()[:3]),
            direction=tuple(np.asarray(image.GetDirection()).reshape(4, 4)[:3, :3].ravel()),
        )
    elif dimension == 3:
        geometry = Geometry(tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection()))
    else:
        raise InputError(f"{dimension}-D images are not supported")
    if array.ndim == 3 and 1 in array.shape:
        raise InputError(f"the input is a single slice {array.shape[::-1]}; a 3-D volume is needed")
    return Volume(array=array, geometry=geometry, source_dtype=np.dtype(source_dtype))


def _read_diffusion(path: Path, image: sitk.Image, volume: Volume) -> DiffusionInfo | None:
    suffix = format_suffix(path)
    count = volume.array.shape[3]
    if suffix in (".nii", ".nii.gz"):
        bval, bvec = _stem(path).with_suffix(".bval"), _stem(path).with_suffix(".bvec")
        if not (bval.exists() and bvec.exists()):
            return None
        return _from_fsl(bval, bvec, volume.geometry, count)
    if suffix in (".nrrd", ".nhdr"):
        return _from_nrrd_keys(image, count)
    return None


def _from_fsl(bval: Path, bvec: Path, geometry: Geometry, count: int) -> DiffusionInfo:
    try:
        bvalues = np.loadtxt(bval, ndmin=1, dtype=float).ravel()
        vectors = np.loadtxt(bvec, ndmin=2, dtype=float)
    except ValueError as error:
        raise InputError(f"cannot parse {bval.name}/{bvec.name}: {error}") from None
    if vectors.shape[0] != 3 and vectors.shape[1] == 3:
        vectors = vectors.T
    if bvalues.size != count or vectors.shape != (3, count):
        raise InputError(f"{bval.name}/{bvec.name} describe {bvalues.size} volumes; the image has {count}")
    voxel_frame = _without_undefined_b0_directions(vectors.T.copy(), bvalues, bvec.name)
    if np.linalg.det(geometry.direction_matrix) > 0:
        voxel_frame[:, 0] *= -1
    return DiffusionInfo(bvalues, voxel_frame @ geometry.direction_matrix.T)


B0_DIRECTION_THRESHOLD = 50.0
"""b-values up to this (s/mm^2) are b0 volumes, whose gradient direction carries no meaning."""


def _without_undefined_b0_directions(directions: np.ndarray, bvalues: np.ndarray, name: str) -> np.ndarray:
    """Zero the NaN directions some tools write for b0 volumes; refuse them on weighted volumes."""
    undefined = ~np.isfinite(directions).all(axis=1)
    weighted = undefined & (bvalues > B0_DIRECTION_THRESHOLD)
    if weighted.any():
        raise InputError(f"{name}: volumes {np.flatnonzero(weighted).tolist()} have b > 0 but no finite gradient")
    directions[undefined] = 0.0
    return directions


def _from_nrrd_keys(image: sitk.Image, count: int) -> DiffusionInfo | None:
    keys = set(image.GetMetaDataKeys())
    if "DWMRI_b-value" not in keys:
        return None
    reference_b = float(image.GetMetaData("DWMRI_b-value"))
    raw = []
    for index in range(count):
        key = f"DWMRI_gradient_{index:04d}"
        if key not in keys:
            raise InputError(f"NRRD diffusion header lacks {key}")
        raw.append([float(v) for v in image.GetMetaData(key).split()])
    raw = np.asarray(raw)
    frame = _measurement_frame(image)
    norms = np.linalg.norm(raw, axis=1)
    bvalues = reference_b * norms**2
    directions = np.divide(raw, norms[:, None], out=np.zeros_like(raw), where=norms[:, None] > 0)
    return DiffusionInfo(bvalues, directions @ frame.T)


def _measurement_frame(image: sitk.Image) -> np.ndarray:
    key = "NRRD_measurement frame"
    if key not in image.GetMetaDataKeys():
        return np.eye(3)
    numbers = [float(v) for v in image.GetMetaData(key).replace("(", " ").replace(")", " ").replace(",", " ").split()]
    return np.asarray(numbers).reshape(3, 3).T


# ---- writing ---------------------------------------------------------------------------
def write_volume(volume: Volume, path: str | Path, keep_dtype: bool = False) -> None:
    """Write atomically; float32 unless ``keep_dtype`` (then rounded and clipped to the source type)."""
    path = Path(path)
    suffix = format_suffix(path)
    ensure_writable_folder(path.parent)
    array = cast_for_output(volume.array, volume.source_dtype if keep_dtype else np.dtype(np.float32))
    image = _image_from_array(array, volume, suffix)
    with _staging_folder(path.parent) as staging:
        staged = staging / path.name
        sitk.WriteImage(
            image,
            str(staged),
            useCompression=suffix in (".nii.gz", ".nrrd", ".nhdr", ".mha"),
        )
        if volume.diffusion is not None and suffix in (".nii", ".nii.gz"):
            _write_fsl(volume.diffusion, volume.geometry, _stem(staged))
        _publish(staging, path)


def ensure_writable_folder(folder: Path) -> None:
    """Raise InputError unless files can be created in ``folder`` (checked by trying)."""
    if not folder.is_dir():
        raise InputError(f"output folder does not exist: {folder}")
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".mridenoise-probe-")
    except OSError as error:
        raise InputError(f"output folder is not writable: {folder} ({error.strerror})") from None
    os.close(handle)
    os.unlink(probe)


def cast_for_output(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast, rounding and clipping to the range of an integer ``dtype``."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        limits = np.iinfo(dtype)
        return np.clip(np.rint(array), limits.min, limits.max).astype(dtype)
    if dtype.kind == "f":
        return array.astype(dtype, copy=False)
    return array.astype(np.float32, copy=False)


def _image_from_array(array: np.ndarray, volume: Volume, suffix: str) -> sitk.Image:
    geometry = volume.geometry
    if array.ndim == 3:
        image = sitk.GetImageFromArray(array)
        _apply_geometry(image, geometry)
        return image
    if suffix in (".nrrd", ".nhdr"):
        image = sitk.GetImageFromArray(array, isVector=True)
        _apply_geometry(image, geometry)
        if volume.diffusion is not None:
            _set_nrrd_keys(image, volume.diffusion)
        return image
    frames = []
    for index in range(array.shape[3]):
        frame = sitk.GetImageFromArray(np.ascontiguousarray(array[..., index]))
        _apply_geometry(frame, geometry)
        frames.append(frame)
    series = sitk.JoinSeries(frames)
    direction = np.eye(4)
    direction[:3, :3] = geometry.direction_matrix
    series.SetDirection(tuple(direction.ravel()))
    series.SetSpacing((*geometry.spacing, 1.0))
    series.SetOrigin((*geometry.origin, 0.0))
    return series


def _apply_geometry(image: sitk.Image, geometry: Geometry) -> None:
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)


def _set_nrrd_keys(image: sitk.Image, diffusion: DiffusionInfo) -> None:
    reference_b = float(diffusion.bvalues.max()) or 1.0
    image.SetMetaData("modality", "DWMRI")
    image.SetMetaData("DWMRI_b-value", f"{reference_b:.10g}")
    scale = np.sqrt(np.clip(diffusion.bvalues, 0, None) / reference_b)
    for index, (direction, factor) in enumerate(zip(diffusion.gradients, scale, strict=True)):
        image.SetMetaData(f"DWMRI_gradient_{index:04d}", " ".join(f"{v:.10g}" for v in direction * factor))


def _write_fsl(diffusion: DiffusionInfo, geometry: Geometry, stem: Path) -> None:
    voxel_frame = diffusion.gradients @ geometry.direction_matrix
    if np.linalg.det(geometry.direction_matrix) > 0:
        voxel_frame[:, 0] *= -1
    stem.with_suffix(".bval").write_text(" ".join(f"{b:.10g}" for b in diffusion.bvalues) + "\n")
    rows = [" ".join(f"{v:.10g}" for v in voxel_frame[:, axis]) for axis in range(3)]
    stem.with_suffix(".bvec").write_text("\n".join(rows) + "\n")


@contextlib.contextmanager
def _staging_folder(parent: Path) -> Iterator[Path]:
    staging = Path(tempfile.mkdtemp(prefix=".mridenoise-", dir=parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, target: Path) -> None:
    """Move staged files beside ``target``: companions first, the named file last."""
    staged = sorted(staging.iterdir(), key=lambda p: p.name == target.name)
    for item in staged:
        os.replace(item, target.parent / item.name)


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if "ERROR" in line or "exception" in line.lower()]
    return (useful or lines or ["unknown error"])[-1][:300]

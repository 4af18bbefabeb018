"""Reading and writing volumes with SimpleITK: NIfTI, NRRD, MetaImage and DICOM series.

Geometry (spacing, origin, direction) is carried through exactly. 4-D diffusion series keep
their b-values and gradients: FSL .bval/.bvec files beside NIfTI, DWMRI keys inside NRRD.
Gradients are held in the LPS world frame in memory and converted to each format's frame on
write. Inputs are checked before they are trusted (:mod:`.validation`). Writes are transactions:
every file of one call is staged, read back and compared, and only then moved into place, all
together or not at all; an input and its sidecar files are never written to.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import SimpleITK as sitk

from .diffusion import fsl_sidecars, fsl_to_world, read_bval_bvec, world_to_fsl, write_bval_bvec
from .errors import InputError, OutputError
from .validation import check_nifti, check_slice_positions
from .volume import DiffusionInfo, Geometry, Volume

FILE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
"""Formats read and written; a folder is read as a DICOM series."""

_DETACHED_DATA = {".nhdr": (".raw.gz", ".raw"), ".mhd": (".zraw", ".raw")}


def format_suffix(path: str | Path) -> str:
    """The format suffix of ``path`` ('.nii.gz', '.nrrd', ...), or raise InputError."""
    suffix = _format_suffix_of(Path(path).name)
    if suffix is not None:
        return suffix
    raise InputError(f"unsupported file format: {Path(path).name} (use {', '.join(FILE_SUFFIXES)} or a DICOM folder)")


def _format_suffix_of(name: str) -> str | None:
    """The format suffix ``name`` ends with, or None."""
    lowered = name.lower()
    return next((suffix for suffix in FILE_SUFFIXES if lowered.endswith(suffix)), None)


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
        if format_suffix(path) in (".nii", ".nii.gz"):
            check_nifti(path)
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
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    check_slice_positions(_slice_positions(files), folder.name)
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as error:
        raise InputError(f"cannot read the DICOM series in {folder}: {_first_line(error)}") from None


def _slice_positions(files: tuple[str, ...]) -> np.ndarray:
    """Each file's position along the slice normal (mm), in the series' order; empty when not given."""
    reader = sitk.ImageFileReader()
    positions = []
    for name in files:
        reader.SetFileName(name)
        try:
            reader.ReadImageInformation()
            origin = [float(v) for v in reader.GetMetaData("0020|0032").split("\\")]
            cosines = [float(v) for v in reader.GetMetaData("0020|0037").split("\\")]
        except (RuntimeError, ValueError):
            return np.array([])
        positions.append(float(np.dot(origin, np.cross(cosines[:3], cosines[3:]))))
    return np.asarray(positions)


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
    keys = set(image.GetMetaDataKeys())
    note = next((image.GetMetaData(k) for k in ("descrip", "ITK_FileNotes") if k in keys and image.GetMetaData(k)), "")
    return Volume(
        array=array,
        geometry=geometry,
        source_dtype=np.dtype(source_dtype),
        frame_spacing=float(image.GetSpacing()[3]) if dimension == 4 else 1.0,
        description=note,
    )


def _read_diffusion(path: Path, image: sitk.Image, volume: Volume) -> DiffusionInfo | None:
    suffix = format_suffix(path)
    count = volume.array.shape[3]
    if suffix in (".nii", ".nii.gz"):
        bval, bvec = fsl_sidecars(_stem(path))
        if not (bval.exists() and bvec.exists()):
            return None
        return _from_fsl(bval, bvec, volume.geometry, count)
    if suffix in (".nrrd", ".nhdr"):
        return _from_nrrd_keys(image, count)
    return None


def _from_fsl(bval: Path, bvec: Path, geometry: Geometry, count: int) -> DiffusionInfo:
    bvalues, voxel_frame = read_bval_bvec(bval, bvec, count)
    return DiffusionInfo(bvalues, fsl_to_world(voxel_frame, geometry.direction_matrix))


def _from_nrrd_keys(image: sitk.Image, count: int) -> DiffusionInfo | None:
    keys = set(image.GetMetaDataKeys())
    if "DWMRI_b-value" not in keys:
        return None
    reference_b = float(image.GetMetaData("DWMRI_b-value"))
    rows = []
    for index in range(count):
        key = f"DWMRI_gradient_{index:04d}"
        if key not in keys:
            raise InputError(f"NRRD diffusion header lacks {key}")
        rows.append([float(v) for v in image.GetMetaData(key).split()])
    raw = np.asarray(rows)
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
    """Write one volume (and its sidecars) atomically and verified; see :func:`write_volumes`."""
    write_volumes([(volume, Path(path), keep_dtype)])


def write_volumes(outputs: list[tuple[Volume, Path, bool]]) -> None:
    """Write every ``(volume, path, keep_dtype)`` as one transaction: all land together or none does.

    Each file is staged beside its target (so the final move is a rename on one file system), read
    back and compared with what was meant to be written, and only then published; when any step
    fails, files already moved are taken back and files they replaced restored. Float32 unless
    ``keep_dtype`` (then rounded and clipped to the source type).
    """
    targets = [Path(path) for _, path, _ in outputs]
    check_distinct_outputs([(t, volume) for (volume, _, _), t in zip(outputs, targets, strict=True)])
    for target in targets:
        check_output_target(target)
    stagings: dict[Path, Path] = {}
    try:
        plan = []
        for (volume, _, keep_dtype), target in zip(outputs, targets, strict=True):
            if target.parent not in stagings:
                stagings[target.parent] = _new_staging(target.parent)
            staging = stagings[target.parent]
            plan.append((staging, target, _stage(volume, target, keep_dtype, staging)))
        _publish_all(plan)
    finally:
        for staging in stagings.values():
            shutil.rmtree(staging, ignore_errors=True)


def check_output_target(path: Path) -> None:
    """Refuse an output path that has no known format or is a folder, or whose folder cannot be written."""
    suffix = format_suffix(path)
    if path.is_dir():
        raise InputError(f"output {path} is a folder; give a file name ending in {suffix}")
    if suffix in _DETACHED_DATA and not path.name.endswith(suffix):
        raise InputError(f"write {path.name} with a lower-case {suffix}: its data file is named after it")
    inner = _format_suffix_of(path.name[: -len(suffix)])
    if suffix in (".nii", ".nii.gz") and inner in (".nii", ".nii.gz"):
        raise InputError(
            f"output {path.name} repeats the NIfTI extension, which ITK's writer drops (it would write "
            f"{path.name[: -len(suffix) - len(inner)]}{suffix}); give the name once"
        )
    ensure_writable_folder(path.parent)


def output_files(path: Path, diffusion: bool = True) -> list[Path]:
    """Every file writing ``path`` can create: the file, a NIfTI's .bval/.bvec, a detached header's data."""
    path = Path(path)
    suffix = format_suffix(path)
    files = [path]
    if suffix in (".nii", ".nii.gz") and diffusion:
        files += list(fsl_sidecars(_stem(path)))
    files += [_stem(path).with_name(_stem(path).name + data) for data in _DETACHED_DATA.get(suffix, ())]
    return files


def input_files(path: Path) -> list[Path]:
    """The input and the sidecar or data files that belong to it and exist."""
    path = Path(path)
    if path.is_dir():
        return [path]
    return [f for f in output_files(path) if f.exists()] or [path]


def check_distinct_outputs(outputs: list[tuple[Path, Volume | None]]) -> None:
    """Refuse two outputs of one call (or their sidecars) that would be the same file."""
    seen: dict[Path, Path] = {}
    for target, volume in outputs:
        for file in output_files(target, volume is None or volume.diffusion is not None):
            key = file.resolve()
            if key in seen:
                raise InputError(f"{target.name} and {seen[key].name} would both write {file.name}; use other names")
            seen[key] = target


STAGING_PREFIX = ".mridenoise-staging-"


def _new_staging(folder: Path) -> Path:
    """A private staging folder named after this process; those of processes that no longer run (killed
    mid-write) are removed first, so an interrupted run leaves nothing behind for long."""
    for stale in folder.glob(STAGING_PREFIX + "*"):
        pid = stale.name.removeprefix(STAGING_PREFIX).split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=folder))


def _stage(volume: Volume, target: Path, keep_dtype: bool, staging: Path) -> list[tuple[Path, Path]]:
    """Write ``volume`` into ``staging`` and verify it; returns (staged file, final path) pairs, main file last."""
    suffix = format_suffix(target)
    staged = staging / (target.name[: -len(suffix)] + suffix)  # ITK picks its writer by the lower-case suffix
    array = cast_for_output(volume.array, volume.source_dtype if keep_dtype else np.dtype(np.float32))
    image = _image_from_array(array, volume, suffix)
    before = set(staging.iterdir())
    library_messages: list[str] = []
    try:
        with _library_stderr(library_messages):
            sitk.WriteImage(image, str(staged), useCompression=suffix in (".nii.gz", ".nrrd", ".nhdr", ".mha"))
        if volume.diffusion is not None and suffix in (".nii", ".nii.gz"):
            _write_fsl(volume.diffusion, volume.geometry, _stem(staged))
        _verify(staged, array, volume)
    except (RuntimeError, OSError, InputError) as error:
        raise OutputError(_write_failure(target, array.nbytes, error, " ".join(library_messages))) from None
    companions = sorted(set(staging.iterdir()) - before - {staged})
    return [(item, target.parent / item.name) for item in companions] + [(staged, target)]


def _verify(staged: Path, array: np.ndarray, volume: Volume) -> None:
    """Read the staged file back: the same voxels (and diffusion table) or an error."""
    written = read_volume(staged)
    expected = array if array.ndim == 3 or array.shape[3] > 1 else array[..., 0]
    if written.array.shape != expected.shape or not np.array_equal(written.array, expected):
        raise InputError("the file read back differs from what was written")
    if volume.diffusion is not None and (
        written.diffusion is None or not np.allclose(written.diffusion.bvalues, volume.diffusion.bvalues)
    ):
        raise InputError("the diffusion table read back differs from what was written")


def _write_failure(target: Path, size: int, error: Exception, library_messages: str = "") -> str:
    free = shutil.disk_usage(target.parent).free
    reason = _first_line(error) if isinstance(error, RuntimeError) else str(error)
    short_write = "wrote only" in library_messages or "wrote only" in reason
    if free < size * 1.05 or short_write or getattr(error, "errno", None) in (errno.ENOSPC, errno.EFBIG):
        return (
            f"could not write {target.name}: the disk is full or the file size limit was reached "
            f"({free / 1e6:.1f} MB free); nothing was written"
        )
    return f"could not write {target.name}: {reason}; nothing was written"


@contextlib.contextmanager
def _library_stderr(messages: list[str]) -> Iterator[None]:
    """Collect what ITK's C libraries print to the process's stderr (e.g. NIfTI's "wrote only N of M
    bytes") instead of letting it through, so the user sees one message that says what happened."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to redirect (embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            messages.append(capture.read().decode(errors="replace").strip())


def _publish_all(plan: list[tuple[Path, Path, list[tuple[Path, Path]]]]) -> None:
    """Move every staged file into place; on any failure undo the moves and restore replaced files."""
    done: list[tuple[Path, Path | None]] = []  # (final path, backup of what it replaced)
    try:
        for staging, _, moves in plan:
            for staged, final in moves:
                backup = None
                if final.exists():
                    backup = staging / f".replaced-{len(done)}"
                    os.replace(final, backup)
                os.replace(staged, final)
                done.append((final, backup))
    except OSError as error:
        for final, backup in reversed(done):
            final.unlink(missing_ok=True)
            if backup is not None:
                os.replace(backup, final)
        raise OutputError(f"could not move the outputs into place ({error}); nothing was written") from None


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
        rounded = np.rint(np.asarray(array, np.float64))  # float32 cannot hold 32-bit limits exactly
        with np.errstate(invalid="ignore"):
            result = np.clip(rounded, limits.min, limits.max).astype(dtype)
        result[rounded >= float(limits.max)] = limits.max  # 64-bit limits round up in float64 too
        result[rounded <= float(limits.min)] = limits.min
        return result
    if dtype.kind == "f":
        return array.astype(dtype, copy=False)
    return array.astype(np.float32, copy=False)


def _image_from_array(array: np.ndarray, volume: Volume, suffix: str) -> sitk.Image:
    image = _grid_image(array, volume, suffix)
    if volume.description:
        image.SetMetaData("ITK_FileNotes", volume.description)  # NIfTI: the descrip field
    return image


def _grid_image(array: np.ndarray, volume: Volume, suffix: str) -> sitk.Image:
    geometry = volume.geometry
    if array.ndim == 3:
        image = sitk.GetImageFromArray(array)
        _apply_geometry(image, geometry)
        return image
    if suffix in (".nrrd", ".nhdr") and volume.diffusion is not None:
        image = sitk.GetImageFromArray(array, isVector=True)  # Slicer's DWI layout: one vector per voxel
        _apply_geometry(image, geometry)
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
    series.SetSpacing((*geometry.spacing, volume.frame_spacing))
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
    write_bval_bvec(diffusion.bvalues, world_to_fsl(diffusion.gradients, geometry.direction_matrix), stem)


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if "ERROR" in line or "exception" in line.lower()]
    return (useful or lines or ["unknown error"])[-1][:300]

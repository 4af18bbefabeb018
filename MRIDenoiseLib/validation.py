"""Checks an input file passes before its voxels are trusted.

SimpleITK reads a truncated or corrupted NIfTI without an error (the missing voxels become 0)
and turns NaN and infinite floats into 0, and it stacks a DICOM series with missing slices on a
uniform grid. These checks read what the file really holds and refuse it with one clear line.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from .errors import InputError

_CHUNK = 1 << 24
_NIFTI_TYPES = {
    2: "u1", 4: "i2", 8: "i4", 16: "f4", 32: "c8", 64: "f8", 128: "V3", 256: "i1", 512: "u2", 768: "u4",
    1024: "i8", 1280: "u8", 1536: "f16", 1792: "c16", 2304: "V4",
}  # fmt: skip
"""NIfTI datatype codes and the numpy types of their voxels."""


def check_nifti(path: Path) -> None:
    """Refuse a .nii / .nii.gz whose gzip stream is corrupt, whose voxel data is shorter than its
    header says, or whose floating-point voxels are NaN or infinite."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            head = stream.read(540)
            shape, dtype, offset = _nifti_header(head, path.name)
            expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            buffered = head[offset:] if offset < len(head) else b""
            if offset > len(head):
                skipped = stream.read(offset - len(head))
                if len(skipped) < offset - len(head):
                    raise InputError(f"{path.name} is truncated: it ends inside its header")
            found, non_finite = _scan_voxels(stream, buffered, dtype, expected)
            found += len(stream.read())  # trailing bytes are allowed; reading them checks the gzip CRC
    except (OSError, EOFError, zlib.error) as error:
        raise InputError(f"{path.name} is corrupt or truncated ({error}); nothing was read from it") from None
    if found < expected:
        raise InputError(
            f"{path.name} is truncated: it holds {found} of the {expected} bytes of voxel data its header describes"
        )
    if non_finite:
        raise InputError(f"{path.name} contains {non_finite} NaN or infinite voxel values")


def _nifti_header(head: bytes, name: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, voxel dtype with byte order, data offset) of a NIfTI-1 or NIfTI-2 header."""
    order: Literal["<", ">"]
    for order in ("<", ">"):
        (size,) = struct.unpack(order + "i", head[:4]) if len(head) >= 4 else (0,)
        if size == 348 and len(head) >= 348:
            dims = struct.unpack(order + "8h", head[40:56])
            code, _ = struct.unpack(order + "2h", head[70:74])
            offset = int(struct.unpack(order + "f", head[108:112])[0])
            break
        if size == 540 and len(head) >= 540:
            code, _ = struct.unpack(order + "2h", head[12:16])
            dims = struct.unpack(order + "8q", head[16:80])
            offset = int(struct.unpack(order + "q", head[168:176])[0])
            break
    else:
        raise InputError(f"{name} is not a NIfTI file (its header is missing or cut short)")
    rank = dims[0]
    if not 1 <= rank <= 7 or any(n < 1 for n in dims[1 : rank + 1]):
        raise InputError(f"{name} has an invalid NIfTI header (dimensions {dims[: rank + 1]})")
    if code not in _NIFTI_TYPES:
        raise InputError(f"{name} has an unknown NIfTI datatype code {code}")
    dtype = np.dtype(_NIFTI_TYPES[code]).newbyteorder(order)
    return tuple(int(n) for n in dims[1 : rank + 1]), dtype, max(offset, 352 if size == 348 else 544)


def _scan_voxels(stream, buffered: bytes, dtype: np.dtype, expected: int) -> tuple[int, int]:
    """Bytes of voxel data read (up to ``expected``) and how many float voxels among them are not finite."""
    floating = dtype.kind in "fc"
    found, non_finite, carry = 0, 0, buffered[:expected]
    while found < expected:
        wanted = min(_CHUNK, expected - found)  # whole voxels: _CHUNK and ``expected`` are multiples of their size
        block = carry + stream.read(max(wanted - len(carry), 0))
        carry = b""
        if floating:
            values = np.frombuffer(block, dtype, count=len(block) // dtype.itemsize)
            non_finite += int(values.size - np.count_nonzero(np.isfinite(values)))
        found += len(block)
        if len(block) < wanted:
            break
    return found, non_finite


def check_slice_positions(positions: np.ndarray, name: str, tolerance: float = 0.1) -> None:
    """Refuse a DICOM series whose slices (positions along the slice normal, in order) are not evenly spaced.

    Missing or duplicated slices would otherwise be stacked on a uniform grid with a wrong spacing.
    """
    if positions.size < 3:
        return
    gaps = np.diff(positions)
    typical = float(np.median(np.abs(gaps)))
    if typical <= 0:
        raise InputError(f"{name}: several slices share one position; the series holds duplicates")
    uneven = np.flatnonzero(np.abs(np.abs(gaps) - typical) > tolerance * typical)
    if uneven.size:
        first = int(uneven[0])
        raise InputError(
            f"{name}: slices are not evenly spaced (spacing {typical:.3g} mm, but {abs(gaps[first]):.3g} mm between "
            f"slices {first} and {first + 1}; {uneven.size} uneven gaps): slices are missing or the series is mixed. "
            "Refusing rather than stacking them on a wrong uniform grid; export a complete series"
        )

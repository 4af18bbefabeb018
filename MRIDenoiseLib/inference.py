"""Running a 2.5-D network over a whole volume on CUDA, MPS or CPU.

Slices are stacked with their neighbours, batched, and, when a slice is large, tiled with
MONAI's sliding-window inference and Gaussian blending. The batch and tile sizes follow the
free memory of the device; an out-of-memory error halves them, and as a last resort the work
moves to the CPU with a warning.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .errors import InputError
from .machine import DEVICE_CHOICES
from .progress import CancelToken, ProgressCallback, no_progress

if TYPE_CHECKING:  # the network packages (and MONAI) load only where networks are built
    from .nets.contract import SliceNetwork

log = logging.getLogger(__name__)


def select_device(preference: str = "auto") -> torch.device:
    """CUDA, then MPS, then CPU for ``auto``; a named device must exist."""
    if preference not in DEVICE_CHOICES:
        raise InputError(f"unknown device {preference!r}; choose one of {DEVICE_CHOICES}")
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if preference == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if preference == "cuda" and not cuda:
        raise InputError("CUDA was requested but torch sees no CUDA GPU (is a CUDA build of torch installed?)")
    if preference == "mps" and not mps:
        raise InputError("MPS was requested but this machine or torch build has no MPS support")
    return torch.device(preference)


def describe_device(device: torch.device) -> str:
    """Human-readable device name, e.g. 'cuda (NVIDIA H100 80GB HBM3)' or 'cpu (2 threads)'."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


@dataclass
class ExecutionPlan:
    """How slices are fed to the network: slices per batch and in-plane tile edge (0 = whole)."""

    batch_slices: int
    tile: int


def uses_noise_level(network: SliceNetwork) -> bool:
    """Whether a 2.5-D network takes a noise-level map after its slices (the default) or not."""
    return bool(network.noise_level_input)


CPU_BATCH_PIXELS = 2**17
"""Pixels per batch on a CPU: two 256 x 256 slices, whose full-resolution activations (32 channels) stay under
:data:`HEAP_LARGEST_BYTES` and so come from the heap (:func:`keep_freed_memory`). Larger batches push
the activations out of the processor's caches and onto fresh pages: on a 2-core EPYC a 256^3 volume took
1.6-2x longer in batches of 32 slices than in batches of 1 to 4."""
HEAP_LARGEST_BYTES = 32 << 20
"""The largest block glibc serves from its heap (its ceiling for ``M_MMAP_THRESHOLD`` on 64-bit systems)."""
HEAP_KEPT_BYTES = 256 << 20
"""Freed heap memory a process keeps for reuse before it returns any to the system (``M_TRIM_THRESHOLD``)."""
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc serve blocks up to :data:`HEAP_LARGEST_BYTES` from its heap and keep up to
    :data:`HEAP_KEPT_BYTES` of freed memory for reuse; whether it applied (Linux with glibc only).

    A network's forward pass allocates and frees its activations, several megabytes each, once per
    batch. By default glibc maps such blocks fresh from the system and unmaps them when freed, so each
    batch faults its pages in (zeroed) again: on the 2-core EPYC that made the 2.5-D network's pass 20-40 %
    slower than with the memory kept (one-off, 256 x 256 slices). Process-wide, once: any process that runs
    a network on the CPU (the CLI, Slicer's child process, but also Slicer itself when a script calls the
    logic blocking, or a user's own Python) keeps up to :data:`HEAP_KEPT_BYTES` of freed memory after the call."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(
            libc.mallopt(_M_TRIM_THRESHOLD, HEAP_KEPT_BYTES) and libc.mallopt(_M_MMAP_THRESHOLD, HEAP_LARGEST_BYTES)
        )
    except (OSError, AttributeError):  # no glibc (musl, another libc): its own allocator stands
        return False


def slice_memory_bytes(slice_shape: tuple[int, int], channels: int) -> int:
    """Device memory one whole slice's activations take (conservative: the widest layers, float32)."""
    return slice_shape[0] * slice_shape[1] * 4 * 64 * max(channels, 8)


def plan_execution(device: torch.device, slice_shape: tuple[int, int], channels: int) -> ExecutionPlan:
    """Batch and tile sizes that fit the device's free memory (a conservative activation model).

    On a CPU the batch is also kept small enough (:data:`CPU_BATCH_PIXELS`) to stay in cache.
    """
    pixels = slice_shape[0] * slice_shape[1]
    bytes_per_pixel = slice_memory_bytes((1, 1), channels)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = free * 0.5
        most_slices = 32
    else:
        budget = min(_available_host_memory() * 0.25, 2.0e9)
        most_slices = max(1, min(32, CPU_BATCH_PIXELS // max(pixels, 1)))
    slices = int(budget // max(pixels * bytes_per_pixel, 1))
    if slices >= 1:
        return ExecutionPlan(batch_slices=min(slices, most_slices), tile=0)
    tile = int((budget / bytes_per_pixel) ** 0.5) // 32 * 32
    return ExecutionPlan(batch_slices=1, tile=max(tile, 64))


def denoise_slices(
    network: SliceNetwork,
    volume: np.ndarray,
    sigma: float | np.ndarray,
    slice_axis: int = 0,
    device: torch.device | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    plan: ExecutionPlan | None = None,
) -> np.ndarray:
    """Apply a 2.5-D network to every slice of ``volume`` along ``slice_axis``.

    ``volume`` and ``sigma`` are in the network's normalised units; ``sigma`` is a scalar or a
    map of the volume's shape. Returns a float32 array of the volume's shape.
    """
    device = device or select_device("auto")
    context = int(network.context)
    stack = np.moveaxis(np.asarray(volume, np.float32), slice_axis, 0)
    sigma_stack = np.moveaxis(np.asarray(sigma, np.float32), slice_axis, 0) if np.ndim(sigma) else None
    plan = plan or plan_execution(device, stack.shape[1:], network.input_slices + 1)
    while True:
        try:
            result = _run(network, stack, sigma, sigma_stack, context, device, plan, progress, cancel)
            return np.moveaxis(result, 0, slice_axis)
        except torch.OutOfMemoryError:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            smaller = _shrink(plan, stack.shape[1:])
            if smaller is None:
                if device.type == "cpu":
                    raise
                warnings.warn(
                    f"out of memory on {describe_device(device)} even with small tiles; continuing on the CPU (slower)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                device, plan = (
                    torch.device("cpu"),
                    plan_execution(torch.device("cpu"), stack.shape[1:], network.input_slices + 1),
                )
            else:
                log.warning("out of memory; retrying with %s", smaller)
                plan = smaller


PRECISIONS = ("float32", "auto", "float16", "bfloat16")
"""What ``MRIDENOISE_PRECISION`` may say; "auto" (float32 since 2026-12-01) is kept for scripts that set it."""


def reduced_precision() -> torch.dtype | None:
    """The reduced precision the networks run in, None for float32 (the default, on every device).

    ``MRIDENOISE_PRECISION=float16`` or ``bfloat16`` asks for one: bfloat16 is about twice as fast on CPUs
    with native bfloat16 arithmetic (AVX512-BF16 or AMX), but keeps 8 significant bits: the network's input
    is rounded by about 0.2 % of its value and every activation likewise, which cost 0.02-0.28 dB and
    0.0003-0.0007 SSIM on noise-free references at 1-30 % (README, "bfloat16 costs detail"). On an H200 a
    whole call took as long in float32 as in float16 (most of it is the CPU's work around the network).
    """
    requested = os.environ.get("MRIDENOISE_PRECISION", "float32")
    if requested not in PRECISIONS:
        raise InputError(f"MRIDENOISE_PRECISION must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    return getattr(torch, requested) if requested in ("float16", "bfloat16") else None


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively: a CUDA GPU that supports it, a CPU with
    AVX512-BF16 or AMX. Elsewhere torch emulates it, slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(
        device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def _available_host_memory() -> float:
    """Free RAM in bytes where the OS tells it (Linux), else a conservative 4 GB."""
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4.0e9


def _shrink(plan: ExecutionPlan, slice_shape: tuple[int, ...]) -> ExecutionPlan | None:
    if plan.batch_slices > 1:
        return ExecutionPlan(plan.batch_slices // 2, plan.tile)
    current = plan.tile or max(slice_shape)
    if current <= 64:
        return None
    return ExecutionPlan(1, max(64, current // 2 // 16 * 16))


def _run(
    network: SliceNetwork,
    stack: np.ndarray,
    sigma: float | np.ndarray,
    sigma_stack: np.ndarray | None,
    context: int,
    device: torch.device,
    plan: ExecutionPlan,
    progress: ProgressCallback,
    cancel: CancelToken | None,
) -> np.ndarray:
    if device.type == "cpu":
        keep_freed_memory()
    network = network.to(device, memory_format=torch.channels_last).eval()  # type: ignore[call-overload]  # stubs omit memory_format
    padded = np.pad(
        stack,
        ((context, context), (0, 0), (0, 0)),
        mode="reflect" if stack.shape[0] > context else "edge",
    )
    count = stack.shape[0]
    output = np.empty_like(stack)
    precision = reduced_precision()
    reduced = torch.autocast(device.type, dtype=precision or torch.float32, enabled=precision is not None)
    with torch.inference_mode():
        for start in range(0, count, plan.batch_slices):
            if cancel is not None:
                cancel.raise_if_cancelled()
            stop = min(start + plan.batch_slices, count)
            windows = np.stack([padded[i : i + network.input_slices] for i in range(start, stop)])
            if uses_noise_level(network):
                if sigma_stack is None:
                    level = np.full((stop - start, 1, *stack.shape[1:]), sigma, np.float32)
                else:
                    level = sigma_stack[start:stop, None]
                windows = np.concatenate([windows, level], axis=1)
            inputs = torch.from_numpy(windows).to(device).contiguous(memory_format=torch.channels_last)
            with reduced:
                if plan.tile and max(stack.shape[1:]) > plan.tile:
                    from monai.inferers import sliding_window_inference  # only tiled runs need MONAI

                    tiled = sliding_window_inference(
                        inputs, (plan.tile, plan.tile), 1, network, overlap=0.25, mode="gaussian"
                    )
                    prediction = tiled if isinstance(tiled, torch.Tensor) else torch.as_tensor(tiled[0])
                else:
                    prediction = network(inputs)
            output[start:stop] = prediction[:, 0].float().cpu().numpy()
            progress(stop / count, f"slice {stop}/{count}")
    return output

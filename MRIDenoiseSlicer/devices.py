"""What the panel says about the compute device: which one, and whether a volume fits its free memory."""

from __future__ import annotations

import torch

from MRIDenoiseLib.inference import describe_device, select_device, slice_memory_bytes

DEFAULT_CHANNELS = 6
"""Input channels of the default 2.5-D network (five slices and a noise-level map)."""


def describe_compute() -> str:
    """'GPU: <name>' or the CPU fallback, as the device label shows it."""
    device = select_device("auto")
    if device.type == "cpu":
        return f"No GPU found: runs on the {describe_device(device)} (slower)"
    return f"GPU: {describe_device(device)}"


def gpu_memory_warning(shape: tuple[int, ...], preference: str = "auto", free_bytes: int | None = None) -> str:
    """A plain warning when the largest slice of a volume of ``shape`` (z, y, x) does not fit the GPU's free memory.

    The default network runs along all three axes, so the largest of the three slice sizes counts.
    ``free_bytes`` is read from the GPU when not given; no GPU selected (or ``preference`` 'cpu') is no warning.
    """
    if free_bytes is None:
        if preference == "cpu" or not torch.cuda.is_available():
            return ""
        free_bytes, _ = torch.cuda.mem_get_info(select_device(preference if preference != "auto" else "cuda"))
    z, y, x = (int(n) for n in shape[:3])
    largest = max((y, x), (z, x), (z, y), key=lambda pair: pair[0] * pair[1])
    needed = slice_memory_bytes(largest, DEFAULT_CHANNELS)
    if needed <= 0.5 * free_bytes:  # the inference planner budgets half the free memory
        return ""
    return (
        f"The GPU has {free_bytes / 2**30:.1f} GiB free; a {largest[0]} x {largest[1]} slice needs about "
        f"{needed / 2**30:.1f} GiB, so it will run in smaller tiles (slower), and on the CPU if even those do "
        "not fit. Close other programs using the GPU, or choose Device: cpu."
    )

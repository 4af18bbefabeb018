"""What machine a number was measured on (model cards and benchmarks name it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
"""Device names a user can ask for; ``auto`` is CUDA, then MPS, then the CPU."""


def cpu_model() -> str:
    """The processor's marketing name where the OS tells it, else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_identity(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """Family, model and stepping of the processor (Linux), which tell apart hosts that share a marketing
    name (a virtual machine's "AMD EPYC" may be one generation one day and another the next); "" elsewhere."""
    try:
        fields = dict(
            (key.strip(), value.strip())
            for key, _, value in (line.partition(":") for line in cpuinfo.read_text().splitlines())
            if key.strip() in ("cpu family", "model", "stepping")
        )
    except OSError:
        return ""
    if len(fields) < 3:
        return ""
    return f"family {fields['cpu family']} model {fields['model']} stepping {fields['stepping']}"


def cpu_summary(threads: int) -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores, {threads} thread{'s' if threads != 1 else ''}"

"""MRIDenoiseLib: MRI denoising engine of the SlicerMRIDenoise extension (no Slicer needed).

Quick use::

    from MRIDenoiseLib import denoise_file
    result = denoise_file("t1.nii.gz", "t1_denoised.nii.gz")   # default model, sigma estimated

Names are imported on first use, so light parts (the model catalogue, for instance) can be used
before heavy dependencies such as torch are installed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "CancelToken": "progress",
    "Cancelled": "errors",
    "DenoiseResult": "pipeline",
    "DiffusionInfo": "volume",
    "Geometry": "volume",
    "InputError": "errors",
    "MRIDenoiseError": "errors",
    "ModelError": "errors",
    "ScanAdapter": "adaptation",
    "Volume": "volume",
    "add_noise": "noise",
    "denoise_file": "pipeline",
    "denoise_volume": "pipeline",
    "estimate_sigma": "noise",
    "estimate_sigma_map": "noise",
    "evaluate": "metrics",
    "finetune_file": "training.finetune",
    "finetune_volume": "training.finetune",
    "load_denoiser": "pipeline",
    "load_series_denoiser": "pipeline",
    "read_volume": "io",
    "sigma_for_level": "noise",
    "train_consensus_files": "training.two_scans",
    "train_consensus_volumes": "training.two_scans",
    "write_volume": "io",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""MRIDenoiseLib: MRI denoising engine of the SlicerMRIDenoise extension (no Slicer needed).

Quick use::

    from MRIDenoiseLib import denoise_file
    result = denoise_file("t1.nii.gz", "t1_denoised.nii.gz")   # default model, sigma estimated
"""

__version__ = "0.1.0"

from .errors import Cancelled, InputError, ModelError, MRIDenoiseError
from .io import read_volume, write_volume
from .metrics import evaluate
from .noise import add_noise, estimate_sigma, sigma_for_level
from .pipeline import DenoiseResult, denoise_file, denoise_volume, load_denoiser
from .progress import CancelToken
from .volume import DiffusionInfo, Geometry, Volume

__all__ = [
    "CancelToken",
    "Cancelled",
    "DenoiseResult",
    "DiffusionInfo",
    "Geometry",
    "InputError",
    "MRIDenoiseError",
    "ModelError",
    "Volume",
    "__version__",
    "add_noise",
    "denoise_file",
    "denoise_volume",
    "estimate_sigma",
    "evaluate",
    "load_denoiser",
    "read_volume",
    "sigma_for_level",
    "write_volume",
]

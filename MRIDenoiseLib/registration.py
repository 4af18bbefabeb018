"""Rigid alignment of two scans of the same object (repeated acquisitions, b0 volumes)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .volume import Geometry


def image_of(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A 3-D array (z, y, x) as a SimpleITK image placed by ``geometry``."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return image


def rigid_transform(fixed: sitk.Image, moving: sitk.Image) -> sitk.Transform:
    """Rigid (6-parameter) registration, Mattes mutual information, three resolutions, seeded."""
    registration = sitk.ImageRegistrationMethod()
    registration.SetMetricAsMattesMutualInformation(32)
    registration.SetMetricSamplingStrategy(registration.RANDOM)
    registration.SetMetricSamplingPercentage(0.3, seed=1)
    registration.SetInterpolator(sitk.sitkLinear)
    registration.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, 300, relaxationFactor=0.7)
    registration.SetOptimizerScalesFromPhysicalShift()
    registration.SetShrinkFactorsPerLevel([4, 2, 1])
    registration.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    start = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    registration.SetInitialTransform(start, inPlace=False)
    return registration.Execute(fixed, moving)


@dataclass
class Alignment:
    """The moving scan resampled onto the fixed grid, and how far it had moved."""

    array: np.ndarray
    translation_mm: float
    rotation_degrees: float


def align(fixed: np.ndarray, fixed_geometry: Geometry, moving: np.ndarray, moving_geometry: Geometry) -> Alignment:
    """Register ``moving`` rigidly to ``fixed`` and resample it (linear) onto the fixed grid."""
    fixed_image, moving_image = image_of(fixed, fixed_geometry), image_of(moving, moving_geometry)
    try:
        transform = rigid_transform(fixed_image, moving_image)
    except RuntimeError as error:  # SimpleITK: no overlap, too few samples, a constant image
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise InputError(
            f"the two scans could not be registered rigidly ({first_line}); are they of one object?"
        ) from None
    resampled = sitk.Resample(moving_image, fixed_image, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    euler = sitk.Euler3DTransform(sitk.CompositeTransform(transform).GetBackTransform())
    angles = np.degrees(np.abs(euler.GetParameters()[:3]))
    return Alignment(
        sitk.GetArrayFromImage(resampled),
        float(np.linalg.norm(euler.GetTranslation())),
        float(math.sqrt(float(np.sum(angles**2)))),
    )

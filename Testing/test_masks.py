"""Foreground masks: the fast closing is SimpleITK's ball closing, voxel for voxel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MRIDenoiseLib.masks import ball_closing, foreground_mask, otsu_thresholds
from MRIDenoiseLib.noise import add_noise, sigma_for_level

SAMPLE = Path(__file__).resolve().parents[1] / "Resources" / "SampleData" / "colin27_t1_1mm_slab.nii.gz"


def simpleitk_closing(mask: np.ndarray) -> np.ndarray:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    return sitk.GetArrayFromImage(sitk.BinaryMorphologicalClosing(image, [1, 1, 1])).astype(bool)


@pytest.mark.parametrize("level", [3, 30])
def test_the_closing_of_a_noisy_scans_threshold_is_simpleitks(level):
    clean = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE))).astype(np.float32)
    noisy = add_noise(clean, sigma_for_level(clean, level), "rician", level)
    mask = noisy >= otsu_thresholds(noisy[noisy > 0], 1)[0]
    closed = ball_closing(mask)
    assert closed.sum() > mask.sum()  # the closing did fill gaps
    np.testing.assert_array_equal(closed, simpleitk_closing(mask))


@pytest.mark.parametrize("density", [0.1, 0.5, 0.9])
def test_the_closing_of_random_masks_and_their_borders_is_simpleitks(density):
    mask = np.random.default_rng(7).random((20, 25, 30)) < density
    np.testing.assert_array_equal(ball_closing(mask), simpleitk_closing(mask))
    touching = np.ones((12, 12, 12), bool)
    touching[0, 5:7, 5:7] = False  # a notch on the border face
    np.testing.assert_array_equal(ball_closing(touching), simpleitk_closing(touching))


def test_the_foreground_mask_covers_the_head_and_not_the_air():
    clean = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE))).astype(np.float32)
    mask = foreground_mask(add_noise(clean, sigma_for_level(clean, 5), "rician", 5))
    assert mask[clean > np.percentile(clean, 80)].mean() > 0.99
    assert mask[:, :, :3].mean() < 0.05 and mask[:, :3, :].mean() < 0.05

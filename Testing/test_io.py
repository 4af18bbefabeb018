"""Volume I/O: geometry, pixel types, diffusion tables, DICOM series, atomic writes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import SimpleITK as sitk

from MRIDenoiseLib.errors import InputError, OutputError
from MRIDenoiseLib.io import FILE_SUFFIXES, read_volume, write_volume
from MRIDenoiseLib.volume import DiffusionInfo, Volume


def _assert_same_geometry(actual, expected, tolerance=1e-6):
    np.testing.assert_allclose(actual.spacing, expected.spacing, atol=tolerance)
    np.testing.assert_allclose(actual.origin, expected.origin, atol=tolerance)
    np.testing.assert_allclose(actual.direction, expected.direction, atol=tolerance)


@pytest.mark.parametrize("suffix", FILE_SUFFIXES)
def test_round_trip_keeps_array_and_oblique_anisotropic_geometry(tmp_path, oblique_geometry, suffix):
    array = np.random.default_rng(0).random((7, 9, 11), dtype=np.float32)
    path = tmp_path / f"volume{suffix}"
    write_volume(Volume(array, oblique_geometry), path)
    loaded = read_volume(path)
    np.testing.assert_array_equal(loaded.array, array)
    _assert_same_geometry(loaded.geometry, oblique_geometry)


def test_keep_dtype_rounds_and_clips_to_source_type(tmp_path, oblique_geometry):
    volume = Volume(
        np.array([[[-3.2, 1.4], [2.6, 70000.0]]] * 2, np.float32), oblique_geometry, source_dtype=np.dtype(np.int16)
    )
    write_volume(volume, tmp_path / "int.nrrd", keep_dtype=True)
    loaded = read_volume(tmp_path / "int.nrrd")
    assert loaded.array.dtype == np.int16
    np.testing.assert_array_equal(loaded.array[0], [[-3, 1], [3, 32767]])
    write_volume(volume, tmp_path / "float.nrrd")
    assert read_volume(tmp_path / "float.nrrd").array.dtype == np.float32


def _diffusion(count: int) -> DiffusionInfo:
    directions = np.random.default_rng(3).standard_normal((count, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    bvalues = np.array([0.0] + [1000.0] * (count - 2) + [2000.0])
    directions[0] = 0
    return DiffusionInfo(bvalues, directions)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".nhdr"])
def test_dwi_round_trip_keeps_bvalues_gradients_and_geometry(tmp_path, oblique_geometry, suffix):
    array = np.random.default_rng(1).random((6, 8, 10, 5), dtype=np.float32)
    diffusion = _diffusion(5)
    path = tmp_path / f"dwi{suffix}"
    write_volume(Volume(array, oblique_geometry, diffusion), path)
    loaded = read_volume(path)
    np.testing.assert_array_equal(loaded.array, array)
    _assert_same_geometry(loaded.geometry, oblique_geometry)
    np.testing.assert_allclose(loaded.diffusion.bvalues, diffusion.bvalues, rtol=1e-6)
    np.testing.assert_allclose(loaded.diffusion.gradients, diffusion.gradients, atol=1e-6)


def test_dwi_converts_between_fsl_and_nrrd_frames(tmp_path, oblique_geometry):
    array = np.random.default_rng(2).random((6, 8, 10, 5), dtype=np.float32)
    diffusion = _diffusion(5)
    write_volume(Volume(array, oblique_geometry, diffusion), tmp_path / "a.nii.gz")
    write_volume(read_volume(tmp_path / "a.nii.gz"), tmp_path / "b.nrrd")
    back = read_volume(tmp_path / "b.nrrd")
    np.testing.assert_allclose(back.diffusion.gradients, diffusion.gradients, atol=1e-6)


def test_fsl_bvecs_follow_the_voxel_frame_with_the_x_flip(tmp_path):
    """FSL stores gradients in voxel axes, x negated when the direction matrix has det > 0."""
    identity = Volume(
        np.ones((4, 4, 4, 2), np.float32),
        diffusion=DiffusionInfo(np.array([0.0, 1000.0]), np.array([[0, 0, 0], [1.0, 0, 0]])),
    )
    write_volume(identity, tmp_path / "d.nii")
    bvec = np.loadtxt(tmp_path / "d.bvec")
    np.testing.assert_allclose(bvec[:, 1], [-1.0, 0.0, 0.0])
    assert (tmp_path / "d.bval").read_text().split() == ["0", "1000"]


def test_nan_b0_directions_read_as_zero_and_nan_weighted_ones_are_refused(tmp_path):
    """Some converters (and DIPY's own test data) write 'nan nan nan' for b0 volumes."""
    series = Volume(
        np.ones((4, 4, 4, 2), np.float32),
        diffusion=DiffusionInfo(np.array([0.0, 1000.0]), np.array([[0, 0, 0], [1.0, 0, 0]])),
    )
    write_volume(series, tmp_path / "d.nii")
    (tmp_path / "d.bvec").write_text("nan -1 \nnan 0\nnan 0\n")
    read = read_volume(tmp_path / "d.nii")
    np.testing.assert_allclose(read.diffusion.gradients, [[0, 0, 0], [1.0, 0, 0]], atol=1e-6)
    (tmp_path / "d.bvec").write_text("0 nan\n0 nan\n0 nan\n")
    with pytest.raises(InputError, match=r"volumes \[1\] have b > 0"):
        read_volume(tmp_path / "d.nii")


def test_reads_real_dwi_with_its_table():
    from conftest import REPO

    path = REPO.parent / "shared" / "data" / "dwi" / "philips_dti_b1000_12dir_5b0.nii.gz"
    if not path.exists():
        pytest.skip("shared data not present")
    volume = read_volume(path)
    assert volume.array.shape == (32, 112, 112, 17)
    assert volume.diffusion.bvalues.shape == (17,)
    norms = np.linalg.norm(volume.diffusion.gradients[volume.diffusion.bvalues > 100], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-3)


def test_reads_a_dicom_series_folder_with_its_geometry(tmp_path, colin_crop):
    image = sitk.GetImageFromArray(colin_crop[:6].astype(np.int16))
    image.SetSpacing((0.8, 0.8, 2.0))
    image.SetOrigin((10.0, -20.0, 30.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series = "1.2.826.0.1.3680043.2.1125.1.42"
    for index in range(image.GetDepth()):
        frame = image[:, :, index]
        position = image.TransformIndexToPhysicalPoint((0, 0, index))
        for tag, value in {
            "0008|0060": "MR",
            "0020|000e": series,
            "0020|000d": series + ".1",
            "0020|0032": "\\".join(f"{p:.6f}" for p in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0013": str(index + 1),
            "0028|0030": "0.8\\0.8",
            "0018|0050": "2.0",
        }.items():
            frame.SetMetaData(tag, value)
        writer.SetFileName(str(tmp_path / f"slice{index:03d}.dcm"))
        writer.Execute(frame)
    volume = read_volume(tmp_path)
    assert volume.array.shape == (6, 96, 96)
    np.testing.assert_array_equal(volume.array, colin_crop[:6].astype(np.int16))
    np.testing.assert_allclose(volume.geometry.spacing, (0.8, 0.8, 2.0), atol=1e-4)
    np.testing.assert_allclose(volume.geometry.origin, (10.0, -20.0, 30.0), atol=1e-4)


def test_write_is_atomic_and_leaves_no_staging_files(tmp_path, oblique_geometry):
    write_volume(Volume(np.ones((3, 4, 5), np.float32), oblique_geometry), tmp_path / "out.nhdr")
    assert sorted(os.listdir(tmp_path)) == ["out.nhdr", "out.raw.gz"]


def test_failed_write_leaves_previous_file_untouched(tmp_path, oblique_geometry, monkeypatch):
    target = tmp_path / "out.nii.gz"
    write_volume(Volume(np.ones((3, 4, 5), np.float32), oblique_geometry), target)
    before = target.read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", broken)
    with pytest.raises(OutputError, match=r"could not write out\.nii\.gz: disk full; nothing was written"):
        write_volume(Volume(np.zeros((3, 4, 5), np.float32), oblique_geometry), target)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.nii.gz"]


@pytest.mark.parametrize(
    ("name", "message"),
    [("missing.nii.gz", "not found"), ("volume.png", "unsupported file format")],
)
def test_read_errors_are_input_errors(tmp_path, name, message):
    path = tmp_path / name
    if name.endswith(".png"):
        path.write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match=message):
        read_volume(path)


def test_a_dotted_nifti_name_keeps_its_whole_name_for_the_bval_and_bvec(tmp_path, oblique_geometry):
    """scan.v2.nii.gz's table is scan.v2.bval / .bvec (FSL's and dcm2niix's naming), never scan.bval."""
    array = np.random.default_rng(4).random((4, 5, 6, 5), dtype=np.float32)
    first, second = _diffusion(5), DiffusionInfo(np.array([0.0, 500.0, 500.0, 500.0, 500.0]), _diffusion(5).gradients)
    write_volume(Volume(array, oblique_geometry, first), tmp_path / "scan.nii.gz")
    write_volume(Volume(array, oblique_geometry, second), tmp_path / "scan.v2.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "scan.bval", "scan.bvec", "scan.nii.gz", "scan.v2.bval", "scan.v2.bvec", "scan.v2.nii.gz"
    ]  # fmt: skip
    np.testing.assert_allclose(read_volume(tmp_path / "scan.v2.nii.gz").diffusion.bvalues, second.bvalues)
    np.testing.assert_allclose(read_volume(tmp_path / "scan.nii.gz").diffusion.bvalues, first.bvalues)


def test_a_repeated_nifti_extension_is_refused_before_anything_is_written(tmp_path):
    volume = Volume(np.ones((4, 4, 4), np.float32))
    for name in ("out.nii.nii.gz", "out.nii.gz.nii.gz", "OUT.NII.nii"):
        with pytest.raises(InputError, match="repeats the NIfTI extension"):
            write_volume(volume, tmp_path / name)
    assert list(tmp_path.iterdir()) == []
    write_volume(volume, tmp_path / "out.nrrd.nii.gz")  # another format's suffix inside a name is only a name
    assert read_volume(tmp_path / "out.nrrd.nii.gz").array.shape == (4, 4, 4)

"""4-D diffusion series through a q-space model, including a table no model was trained for."""

from __future__ import annotations

import numpy as np
import pytest

import MRIDenoiseLib.training.qspace as qspace
from MRIDenoiseLib.denoisers.qspace import tables_match
from MRIDenoiseLib.diffusion import GradientTable, paper_scheme
from MRIDenoiseLib.io import read_volume, write_volume
from MRIDenoiseLib.models.catalog import load_catalog
from MRIDenoiseLib.pipeline import denoise_file
from MRIDenoiseLib.volume import DiffusionInfo, Volume

PHILIPS = "dwi/philips_dti_b1000_12dir_5b0.nii.gz"


@pytest.fixture
def small_training(monkeypatch):
    monkeypatch.setattr(qspace, "TABLE_MODEL_SAMPLES", 4000)
    monkeypatch.setattr(qspace, "TABLE_MODEL_EPOCHS", 2)


@pytest.fixture
def philips_crop(tmp_path):
    from conftest import REPO

    path = REPO.parent / "shared" / "data" / PHILIPS
    if not path.exists():
        pytest.skip("shared data not present")
    volume = read_volume(path)
    crop = Volume(np.ascontiguousarray(volume.array[12:18, 20:92, 20:92]), volume.geometry, volume.diffusion)
    write_volume(crop, tmp_path / "dwi.nii.gz")
    return tmp_path / "dwi.nii.gz"


@pytest.fixture
def philips_subset(philips_crop, tmp_path):
    """The same scan with its last two measurements dropped: a table no shipped model covers."""
    volume = read_volume(philips_crop)
    table = DiffusionInfo(volume.diffusion.bvalues[:15], volume.diffusion.gradients[:15])
    write_volume(
        Volume(np.ascontiguousarray(volume.array[..., :15]), volume.geometry, table), tmp_path / "subset.nii.gz"
    )
    return tmp_path / "subset.nii.gz"


def test_the_shipped_model_for_a_table_is_used_without_training(philips_crop, tmp_path):
    progress = []
    result = denoise_file(
        philips_crop, tmp_path / "out.nii.gz", model="qspace-vae", progress=lambda f, m: progress.append(m)
    )
    assert result.model_id == "qspace-vae-philips-12dir" and not any("training" in m for m in progress)


def test_tables_match_up_to_rotation_and_sign():
    table = paper_scheme()
    rotation, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))
    flipped = table.directions @ rotation.T * np.where(np.arange(32) % 2, 1, -1)[:, None]
    assert tables_match(table, GradientTable(table.bvalues, flipped))
    assert not tables_match(table, GradientTable(table.bvalues * 2, table.directions))
    shuffled = table.directions[np.r_[0, 2, 1, 3:32]]
    assert not tables_match(table, GradientTable(table.bvalues, shuffled))


def test_unseen_table_trains_a_user_model_once_and_keeps_the_table(
    small_training, philips_subset, tmp_path, monkeypatch
):
    monkeypatch.setattr(qspace, "table_key", lambda table: "test")
    progress = []
    result = denoise_file(
        philips_subset, tmp_path / "out.nrrd", model="qspace-vae", progress=lambda f, m: progress.append(m)
    )
    assert result.model_id == "qspace-vae-table-test" and any("training a q-space model" in m for m in progress)
    source, written = read_volume(philips_subset), read_volume(tmp_path / "out.nrrd")
    assert written.array.shape == source.array.shape
    np.testing.assert_allclose(written.diffusion.bvalues, source.diffusion.bvalues, rtol=1e-6)
    weighted = source.diffusion.bvalues > 50  # NRRD stores b = 0 gradients as zero vectors: no direction
    np.testing.assert_allclose(written.diffusion.gradients[weighted], source.diffusion.gradients[weighted], atol=1e-6)
    background = source.array[..., 0] < 0.05 * source.array[..., 0].max()
    np.testing.assert_array_equal(written.array[background], source.array[background])  # never smeared
    assert load_catalog().get("qspace-vae-table-test").user
    progress.clear()
    again = denoise_file(
        philips_subset, tmp_path / "again.nrrd", model="qspace-vae", progress=lambda f, m: progress.append(m)
    )
    assert again.model_id == "qspace-vae-table-test" and not any("training" in m for m in progress)


def test_scalar_volume_with_a_dwi_model_is_refused(colin_slab, tmp_path):
    write_volume(colin_slab, tmp_path / "t1.nii.gz")
    with pytest.raises(Exception, match="4-D series with b-values"):
        denoise_file(tmp_path / "t1.nii.gz", tmp_path / "out.nii.gz", model="qspace-vae")

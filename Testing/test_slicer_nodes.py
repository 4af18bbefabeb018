"""The node adapter and the module logic against real MRML (the slicer-core wheel)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel")
vtk = pytest.importorskip("vtk")

from MRIDenoiseLib.errors import InputError  # noqa: E402
from MRIDenoiseLib.models.store import describe_models  # noqa: E402
from MRIDenoiseLib.noise import add_noise, sigma_for_level  # noqa: E402
from MRIDenoiseLib.volume import DiffusionInfo, Volume  # noqa: E402
from MRIDenoiseSlicer.logic import DenoiseLogic  # noqa: E402
from MRIDenoiseSlicer.nodes import add_node_from_volume, geometry_from_node, volume_from_node  # noqa: E402


def _ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


@pytest.fixture
def noisy_slab(colin_slab, colin_mask, oblique_geometry):
    z = colin_slab.array.shape[0] // 2
    clean = colin_slab.array[z - 8 : z + 8, 40:168, 30:158].astype(np.float32)
    noisy = add_noise(clean, sigma_for_level(clean, 10, colin_mask[z - 8 : z + 8, 40:168, 30:158]), "rician", 4)
    return Volume(noisy, oblique_geometry)


def test_scalar_node_round_trip(scene, noisy_slab):
    node = add_node_from_volume(scene, noisy_slab, "scan")
    back = volume_from_node(node)
    np.testing.assert_array_equal(back.array, noisy_slab.array)
    for field in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(getattr(back.geometry, field), getattr(noisy_slab.geometry, field), atol=1e-9)
    ras = _ijk_to_ras(node)
    lps_origin = np.asarray(noisy_slab.geometry.origin)
    np.testing.assert_allclose(ras[:3, 3], [-lps_origin[0], -lps_origin[1], lps_origin[2]])  # RAS vs LPS


def test_dwi_node_round_trip(scene, oblique_geometry):
    directions = np.random.default_rng(0).standard_normal((4, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    directions[0] = 0
    table = DiffusionInfo(np.array([0.0, 1000.0, 1000.0, 2000.0]), directions)
    series = np.random.default_rng(1).random((5, 6, 7, 4), dtype=np.float32)
    node = add_node_from_volume(scene, Volume(series, oblique_geometry, table), "dwi")
    assert node.IsA("vtkMRMLDiffusionWeightedVolumeNode") and node.GetNumberOfGradients() == 4
    back = volume_from_node(node)
    np.testing.assert_array_equal(back.array, series)
    np.testing.assert_allclose(back.diffusion.bvalues, table.bvalues)
    np.testing.assert_allclose(back.diffusion.gradients, table.gradients, atol=1e-9)


def test_blocking_process_creates_a_new_node_and_leaves_the_input_alone(scene, noisy_slab, colin_slab):
    node = add_node_from_volume(scene, noisy_slab, "scan")
    before_array, before_matrix = volume_from_node(node).array.copy(), _ijk_to_ras(node)
    fractions = []
    output = DenoiseLogic(scene).process(node, model="gaussian", progress_callback=lambda f, m: fractions.append(f))
    assert output is not node and output.GetName() == "scan denoised"
    assert scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems() == 2
    np.testing.assert_array_equal(volume_from_node(node).array, before_array)
    np.testing.assert_array_equal(_ijk_to_ras(node), before_matrix)
    np.testing.assert_array_equal(_ijk_to_ras(output), before_matrix)
    denoised = volume_from_node(output).array
    assert denoised.shape == before_array.shape and denoised.std() < before_array.std()
    assert fractions[-1] == 1.0


@pytest.mark.slow
def test_blocking_process_reports_what_adapt_auto_decided_and_refuses_a_bad_setting(scene, noisy_slab):
    louder = add_noise(noisy_slab.array, sigma_for_level(noisy_slab.array, 18), "rician", 5)  # about 20 %
    node = add_node_from_volume(scene, Volume(louder, noisy_slab.geometry), "scan")
    logic = DenoiseLogic(scene)
    plain = volume_from_node(logic.process(node, device="cpu")).array
    assert "adaptation" not in logic.last_summary
    kept = volume_from_node(logic.process(node, device="cpu", adapt="auto")).array
    report = logic.last_summary["adaptation"]
    assert report["adapted"] is False and "above 12 %" in report["reason"]  # 20 %: above where adapting pays
    np.testing.assert_array_equal(kept, plain)
    nodes = scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems()
    with pytest.raises(InputError, match="--adapt takes off, auto or a number of minutes"):
        logic.process(node, adapt="soon")
    assert scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems() == nodes


def test_blocking_process_on_a_dwi_keeps_its_table(scene, oblique_geometry, noisy_slab):
    series = np.stack([noisy_slab.array, noisy_slab.array * 0.6], axis=-1)
    table = DiffusionInfo(np.array([0.0, 1000.0]), np.array([[0.0, 0, 0], [0, 0.6, 0.8]]))
    node = add_node_from_volume(scene, Volume(series, oblique_geometry, table), "dwi")
    noise = scene.AddNewNodeByClass("vtkMRMLDiffusionWeightedVolumeNode", "noise")
    output = DenoiseLogic(scene).process(node, model="gaussian", noise_output_node=noise)
    assert output.IsA("vtkMRMLDiffusionWeightedVolumeNode")
    back = volume_from_node(output)
    assert back.array.shape == series.shape
    np.testing.assert_allclose(back.diffusion.gradients, table.gradients, atol=1e-9)
    np.testing.assert_allclose(back.diffusion.bvalues, table.bvalues)
    np.testing.assert_allclose(volume_from_node(noise).array, series - back.array, atol=1e-3)
    assert geometry_from_node(output) == geometry_from_node(node)


@pytest.mark.slow
def test_background_job_reports_progress_and_fills_the_output(scene, noisy_slab):
    node = add_node_from_volume(scene, noisy_slab, "scan")
    seen = []
    job = DenoiseLogic(scene, python_executable=sys.executable).process(
        node, model="adf", wait_for_completion=False, progress_callback=lambda f, m: seen.append(f)
    )
    assert job.wait(timeout=120) == "done", job.error
    assert seen and seen[-1] == 1.0 and job.summary["model"] == "adf"
    assert job.output_node.GetName() == "scan denoised"
    assert volume_from_node(job.output_node).array.shape == noisy_slab.array.shape


def test_cancelled_job_leaves_the_scene_as_it_was(scene, noisy_slab):
    node = add_node_from_volume(scene, noisy_slab, "scan")
    count = scene.GetNumberOfNodes()
    job = DenoiseLogic(scene, python_executable=sys.executable).process(node, model="nlm", wait_for_completion=False)
    folder = job._folder
    job.cancel()
    assert job.state == "cancelled" and job.poll() == "cancelled"
    assert scene.GetNumberOfNodes() == count
    assert not folder.exists()


@pytest.mark.slow
def test_failed_job_reports_the_library_error(scene, noisy_slab):
    node = add_node_from_volume(scene, noisy_slab, "scan")
    job = DenoiseLogic(scene, python_executable=sys.executable).process(node, model="nope", wait_for_completion=False)
    assert job.wait(timeout=60) == "failed"
    assert "unknown model id" in job.error and job.output_node is None


def test_estimate_noise_and_model_list(scene, noisy_slab):
    node = add_node_from_volume(scene, noisy_slab, "scan")
    sigma, percent = DenoiseLogic.estimate_noise(node)
    assert 8 < percent < 12 and sigma > 0
    assert DenoiseLogic.sigma_from_percent(node, percent) == pytest.approx(sigma, rel=1e-6)
    rows = describe_models()
    assert sum(row["default"] for row in rows) == 1 and {"id", "title", "weights"} <= set(rows[0])


def test_output_must_differ_from_input(scene, noisy_slab):
    node = add_node_from_volume(scene, noisy_slab, "scan")
    with pytest.raises(Exception, match="different node"):
        DenoiseLogic(scene).process(node, output_node=node)


def test_dwi_node_with_an_unseen_table_gets_its_own_qspace_model(scene, noisy_slab, oblique_geometry, monkeypatch):
    import MRIDenoiseLib.training.qspace as qspace

    monkeypatch.setattr(qspace, "TABLE_MODEL_SAMPLES", 3000)
    monkeypatch.setattr(qspace, "TABLE_MODEL_EPOCHS", 2)
    directions = np.random.default_rng(5).standard_normal((7, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    bvalues = np.array([0.0] + [800.0] * 6)
    attenuation = np.exp(-bvalues * 0.8e-3)
    series = noisy_slab.array[..., None] * attenuation[None, None, None, :]
    node = add_node_from_volume(
        scene, Volume(series.astype(np.float32), oblique_geometry, DiffusionInfo(bvalues, directions)), "dwi"
    )
    output = DenoiseLogic(scene).process(node, model="qspace-dae")
    result = volume_from_node(output)
    assert output.IsA("vtkMRMLDiffusionWeightedVolumeNode") and result.array.shape == series.shape
    np.testing.assert_allclose(result.diffusion.bvalues, bvalues)
    np.testing.assert_allclose(result.diffusion.gradients[1:], directions[1:], atol=1e-9)


@pytest.mark.slow
def test_finetune_blocking_registers_a_model_and_fills_a_new_node(scene, noisy_slab):
    node = add_node_from_volume(scene, noisy_slab, "scan")
    logic = DenoiseLogic(scene)
    output = logic.finetune(node, minutes=0.05)
    assert output.GetName() == "scan denoised" and "-ft-" in logic.last_summary["model"]
    assert logic.last_summary["model"] in {row["id"] for row in describe_models()}
    np.testing.assert_array_equal(volume_from_node(node).array, noisy_slab.array)


@pytest.mark.slow
def test_finetune_job_in_a_child_process_and_its_cancel(scene, noisy_slab):
    node = add_node_from_volume(scene, noisy_slab, "scan")
    logic = DenoiseLogic(scene, python_executable=sys.executable)
    job = logic.finetune(node, minutes=0.05, loss="n2s", wait_for_completion=False)
    assert job.wait(timeout=180) == "done", job.error
    assert "-ft-" in job.summary["model"] and job.output_node is not None
    count = scene.GetNumberOfNodes()
    cancelled = logic.finetune(node, minutes=5, wait_for_completion=False)
    cancelled.cancel()
    assert cancelled.state == "cancelled" and scene.GetNumberOfNodes() == count
    assert [row["id"] for row in describe_models() if "-ft-" in row["id"]] == [job.summary["model"]]


@pytest.mark.slow
def test_two_acquisitions_train_a_consensus_model_blocking_and_in_a_child_process(scene, noisy_slab, colin_slab):
    z = colin_slab.array.shape[0] // 2
    clean = colin_slab.array[z - 8 : z + 8, 40:168, 30:158].astype(np.float32)
    repeat = noisy_slab.with_array(add_noise(clean, float(np.std(noisy_slab.array - clean)), "rician", 5))
    first_node = add_node_from_volume(scene, noisy_slab, "scan 1")
    second_node = add_node_from_volume(scene, repeat, "scan 2")
    logic = DenoiseLogic(scene, python_executable=sys.executable)
    with pytest.raises(InputError, match="another volume"):
        logic.train_consensus(first_node, first_node)
    output = logic.train_consensus(first_node, second_node, model="mridenoise-rician-2.5d", minutes=0.05)
    assert output.GetName() == "scan 1 consensus" and logic.last_summary["model"].startswith("consensus-")
    assert geometry_from_node(output) == geometry_from_node(first_node)
    np.testing.assert_array_equal(volume_from_node(first_node).array, noisy_slab.array)
    np.testing.assert_array_equal(volume_from_node(second_node).array, repeat.array)
    volumes = scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems()
    job = logic.train_consensus(
        first_node, second_node, model="mridenoise-rician-2.5d", minutes=0.05, wait_for_completion=False
    )
    assert job.wait(timeout=180) == "done", job.error
    assert job.summary["model"].startswith("consensus-")
    assert scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems() == volumes + 1
    assert volume_from_node(job.output_node).array.shape == noisy_slab.array.shape


def test_mppca_fills_the_noise_and_signal_component_maps_blocking_and_in_a_child_process(scene):
    """A real DWI (a crop of the Philips series) through MP-PCA from the logic: the sigma and rank maps
    land in scalar nodes on the input's grid, in process and from the child's --sigma-map/--rank-map."""
    pytest.importorskip("dipy")
    from pathlib import Path

    from MRIDenoiseLib.io import read_volume

    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "dwi" / "philips_dti_b1000_12dir_5b0.nii.gz"
    if not path.exists():
        pytest.skip("needs ../shared/data")
    series = read_volume(path)
    crop = Volume(np.ascontiguousarray(series.array[12:20, 40:72, 40:72]), series.geometry, series.diffusion)
    node = add_node_from_volume(scene, crop, "dwi")
    logic = DenoiseLogic(scene, python_executable=sys.executable)
    sigma_node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "sigma")
    rank_node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "rank")
    logic.process(node, model="mppca", sigma_map_node=sigma_node, rank_map_node=rank_node)
    in_process = volume_from_node(rank_node).array
    assert in_process.shape == crop.array.shape[:3] and volume_from_node(sigma_node).array.shape == in_process.shape
    assert in_process.min() >= 1 and in_process.max() < crop.array.shape[3]
    assert geometry_from_node(rank_node).spacing_zyx() == geometry_from_node(node).spacing_zyx()
    with pytest.raises(InputError, match="scalar volume other than the input"):
        logic.process(node, model="mppca", rank_map_node=node)
    child_rank = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "rank from the child")
    job = logic.process(node, model="mppca", rank_map_node=child_rank, wait_for_completion=False)
    assert job.wait(timeout=300) == "done", job.error
    np.testing.assert_array_equal(volume_from_node(child_rank).array, in_process)

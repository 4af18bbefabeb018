"""MP-PCA and Patch2Self (DIPY) inside the product: CLI, Python, a real DWI, tables and geometry kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from MRIDenoiseLib.diffusion import GradientTable
from MRIDenoiseLib.errors import InputError
from MRIDenoiseLib.io import read_volume
from MRIDenoiseLib.models.catalog import load_catalog
from MRIDenoiseLib.noise import add_noise
from MRIDenoiseLib.pipeline import JOINT_NETWORK, denoise_volume
from MRIDenoiseLib.volume import Volume

pytest.importorskip("dipy")
REPO = Path(__file__).resolve().parents[1]
PHILIPS = REPO.parent / "shared" / "data" / "dwi" / "philips_dti_b1000_12dir_5b0.nii.gz"
pytestmark = pytest.mark.skipif(not PHILIPS.exists(), reason="needs ../shared/data")


def test_mppca_from_the_cli_keeps_the_table_and_writes_its_sigma_and_rank_maps(dwi_crop, tmp_path):
    out, noise, sigma = tmp_path / "out.nii.gz", tmp_path / "noise.nii.gz", tmp_path / "sigma.nii.gz"
    rank = tmp_path / "rank.nrrd"
    result = subprocess.run(
        [sys.executable, "-m", "MRIDenoiseLib", "denoise", str(dwi_crop), str(out), "--model", "mppca",
         "--noise-map", str(noise), "--sigma-map", str(sigma), "--rank-map", str(rank), "--progress", "none"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    source, denoised = read_volume(dwi_crop), read_volume(out)
    _assert_same_series_layout(denoised, source)
    sigma_map = read_volume(sigma).array
    assert sigma_map.shape == source.array.shape[:3] and np.isfinite(sigma_map).all()
    assert np.median(sigma_map[source.array[..., 0] > np.median(source.array[..., 0])]) > 0
    np.testing.assert_allclose(read_volume(noise).array, source.array - denoised.array, atol=1e-3)
    components = read_volume(rank)
    assert components.array.shape == source.array.shape[:3]
    np.testing.assert_allclose(components.geometry.spacing_zyx(), source.geometry.spacing_zyx())
    counts = components.array
    assert np.array_equal(counts, np.round(counts)) and counts.min() >= 1 and counts.max() < source.array.shape[3]


def test_mppca_removes_added_noise_from_a_real_series(dwi_crop):
    source = read_volume(dwi_crop)
    reference = source.array.astype(np.float32)
    sigma = 0.05 * float(np.percentile(reference[..., 0], 90))
    noisy = source.with_array(add_noise(reference, sigma, "rician", 5))
    denoised = denoise_volume(noisy, "mppca").volume.array
    error = np.sqrt(np.mean((denoised - reference) ** 2))
    assert error < 0.8 * np.sqrt(np.mean((noisy.array - reference) ** 2))


def test_signal_components_count_what_a_series_holds():
    """A series of 20 volumes whose q-space signal spans 3 components (plus the mean) on top of noise:
    MP-PCA's count is 3 where the components vary across the patch, and 0 where nothing does (the
    patch mean is removed before the PCA, as DIPY does)."""
    from MRIDenoiseLib.denoisers.dipy_methods import count_signal_components

    rng = np.random.default_rng(4)
    shape, volumes = (10, 12, 24), 20
    profiles = rng.uniform(0.5, 1.5, (3, volumes))
    weights = rng.uniform(0, 4, (*shape, 3))
    weights[:, :, 12:] = 0  # the right half: the same signal everywhere
    series = 10 + weights @ profiles + rng.normal(0, 0.1, (*shape, volumes))
    counts = count_signal_components(series)
    assert counts.shape == shape
    varying, flat = counts[2:-2, 2:-2, 2:8], counts[2:-2, 2:-2, 16:-2]
    # the Marchenko-Pastur classifier takes one noise component for signal now and then, never more
    assert set(np.unique(varying)) <= {3, 4} and np.mean(varying == 3) > 0.85
    assert set(np.unique(flat)) <= {0, 1} and np.mean(flat == 0) > 0.85
    with pytest.raises(InputError, match="at least 5 voxels"):
        count_signal_components(series[:4])


def test_patch2self_through_python_and_its_refusals(dwi_crop, tmp_path):
    source = read_volume(dwi_crop)
    result = denoise_volume(source, "patch2self")
    assert result.volume.array.shape == source.array.shape and result.sigma_map is None
    np.testing.assert_allclose(result.volume.diffusion.bvalues, source.diffusion.bvalues)

    def patch2self_with(*options: str) -> subprocess.CompletedProcess:
        command = ["denoise", str(dwi_crop), str(tmp_path / "o.nii.gz"), "--model", "patch2self", *options]
        return subprocess.run(
            [sys.executable, "-m", "MRIDenoiseLib", *command, "--progress", "none"],
            cwd=REPO, capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    refused = patch2self_with("--sigma-map", str(tmp_path / "s.nii.gz"))
    assert refused.returncode == 1 and "gives no noise map per voxel" in refused.stderr
    assert not (tmp_path / "o.nii.gz").exists()
    refused = patch2self_with("--rank-map", str(tmp_path / "r.nii.gz"))
    assert refused.returncode == 1 and "gives no signal components per voxel" in refused.stderr
    assert not (tmp_path / "o.nii.gz").exists() and not (tmp_path / "r.nii.gz").exists()
    with pytest.raises(InputError, match="gives no signal components per voxel"):
        denoise_volume(source, "patch2self", signal_components=True)
    with pytest.raises(InputError, match="4-D series"):
        denoise_volume(Volume(source.array[..., 0], source.geometry), "mppca")


def test_mp_pca_with_the_spatial_prior_v3_is_what_a_diffusion_series_gets_without_a_model(dwi_crop):
    catalog = load_catalog()
    assert catalog.default_dwi_id == "mppca-spatial-v3" and catalog.get("mppca-spatial-v3").input == "dwi"
    assert catalog.get("mppca-spatial").superseded_by == "mppca-spatial-v2"
    assert catalog.get("mppca-spatial-v2").superseded_by == "mppca-spatial-v3"
    assert catalog.get("patch2self").requires == ["scikit-learn>=1.2"]
    source = read_volume(dwi_crop)
    result = denoise_volume(source)
    assert result.model_id == "mppca-spatial-v3" and result.sigma_map is not None
    assert result.sigma_map.array.shape == source.array.shape[:3]
    assert denoise_volume(Volume(source.array, source.geometry)).model_id == catalog.default_id  # no table


def test_the_cli_default_for_a_dwi_is_the_spatial_prior_v3_keeping_the_table_and_writing_its_sigma_map(
    dwi_crop, tmp_path
):
    out, sigma = tmp_path / "out.nii.gz", tmp_path / "sigma.nii.gz"
    result = subprocess.run(
        [sys.executable, "-m", "MRIDenoiseLib", "denoise", str(dwi_crop), str(out), "--sigma-map", str(sigma),
         "--progress", "none"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert " with mppca-spatial-v3 " in result.stdout and "(noise level estimated voxel by voxel)" in result.stdout
    source, denoised = read_volume(dwi_crop), read_volume(out)
    _assert_same_series_layout(denoised, source)
    assert read_volume(sigma).array.shape == source.array.shape[:3]
    mppca = denoise_volume(source, "mppca").volume.array
    assert not np.allclose(denoised.array, mppca, atol=1.0) and not np.allclose(denoised.array, source.array, atol=1.0)


def test_the_spatial_prior_lowers_mppcas_error_on_a_simulated_series():
    """Tensors of a simulated tract in grey matter, 2 b0 + 32 directions, Rician noise at 5 % of b0."""
    from MRIDenoiseLib.diffusion import fibonacci_directions
    from MRIDenoiseLib.dti import add_signal_noise, signals
    from MRIDenoiseLib.volume import DiffusionInfo, Geometry

    shape = (8, 36, 36)
    table = GradientTable(np.array([0.0] * 2 + [1000.0] * 32), np.vstack([np.zeros((2, 3)), fibonacci_directions(32)]))
    _, y, x = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    tract = np.abs(y - x) < 5
    tensors = np.broadcast_to(np.diag([0.8e-3] * 3), (*shape, 3, 3)).copy()
    along = np.array([1.0, 1.0, 0.0]) / np.sqrt(2)
    tensors[tract] = 0.3e-3 * np.eye(3) + 1.4e-3 * np.outer(along, along)
    clean = signals(tensors.reshape(-1, 3, 3), table, 1.0).reshape(*shape, table.size)
    noisy = add_signal_noise(clean, 0.05, "rician", 11).astype(np.float32)
    volume = Volume(noisy, Geometry((2.0, 2.0, 2.0)), DiffusionInfo(table.bvalues, table.directions))

    def error(model: str) -> float:
        return float(np.sqrt(np.mean((denoise_volume(volume, model).volume.array - clean) ** 2)))

    noisy_error = float(np.sqrt(np.mean((noisy - clean) ** 2)))
    assert error("mppca-spatial") < error("mppca-spatial-v2") < 0.85 * error("mppca") < 0.7 * noisy_error


def test_spatial_prior_v2_tells_the_network_half_the_noise_mppca_left(dwi_crop, monkeypatch):
    """The catalogue's level factor reaches the network: v2's maps are half of what v1's would be."""
    from MRIDenoiseLib.denoisers.joint import MPPCAWithSpatialPrior
    from MRIDenoiseLib.denoisers.network import NetworkDenoiser
    from MRIDenoiseLib.pipeline import load_series_denoiser

    source = read_volume(dwi_crop)
    table = GradientTable(source.diffusion.bvalues.astype(float), source.diffusion.gradients.astype(float))
    told: list[np.ndarray] = []
    real = NetworkDenoiser.denoise_with_map

    def recording(self, volume, sigma_map, **options):
        told.append(np.array(sigma_map))
        return real(self, volume, sigma_map, **options)

    monkeypatch.setattr(NetworkDenoiser, "denoise_with_map", recording)
    v1 = load_series_denoiser("mppca-spatial", table, device="cpu")
    v2 = load_series_denoiser("mppca-spatial-v2", table, device="cpu")
    assert isinstance(v2, MPPCAWithSpatialPrior) and v2.model_id == "mppca-spatial-v2"
    assert (v1.level_factor, v2.level_factor) == (1.0, 0.5)
    # the network its benchmarks measured, not whatever the scalar default is now
    assert v1.spatial.model_id == v2.spatial.model_id == JOINT_NETWORK != load_catalog().default_id
    series = source.array.astype(np.float32)
    v2.denoise_series(series, table)
    assert len(told) == series.shape[-1] and v2.left_map is not None
    for level in told:
        np.testing.assert_allclose(level, 0.5 * v2.left_map, rtol=1e-6)
    with pytest.raises(ValueError, match="level factors"):
        MPPCAWithSpatialPrior(v2.spatial, level_factor=0.0)
    with pytest.raises(ValueError, match="level factors"):
        MPPCAWithSpatialPrior(v2.spatial, level_factor=0.5, noisy_level_factor=1.5)


def test_the_noise_a_projection_leaves_is_measured_from_what_it_removed():
    """Noise projected onto p of n dimensions keeps sigma sqrt(p / n) of it; the estimate finds that level."""
    from MRIDenoiseLib.denoisers.joint import noise_left, rician_signal

    rng = np.random.default_rng(3)
    shape, n, p, sigma = (12, 24, 24), 40, 6, 0.1
    basis = np.linalg.qr(rng.standard_normal((n, p)))[0]
    signal = rng.standard_normal((*shape, p)) @ basis.T
    noisy = signal + sigma * rng.standard_normal((*shape, n))
    projected = noisy @ basis @ basis.T
    left = noise_left(noisy, projected, np.full(shape, sigma))
    assert np.median(left) == pytest.approx(sigma * np.sqrt(p / n), rel=0.1)
    small = (2, 4, 4)
    draws = (*small, 20000)
    mean_magnitude = np.hypot(0.3 + sigma * rng.standard_normal(draws), sigma * rng.standard_normal(draws))
    recovered = rician_signal(mean_magnitude.mean(-1, keepdims=True), np.full(small, sigma))
    assert np.median(recovered) == pytest.approx(0.3, rel=0.02)


def _assert_same_series_layout(denoised: Volume, source: Volume) -> None:
    """Shape, geometry, b-values and gradients of the output are the input's."""
    assert denoised.array.shape == source.array.shape
    for field in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(getattr(denoised.geometry, field), getattr(source.geometry, field), atol=1e-6)
    np.testing.assert_allclose(denoised.diffusion.bvalues, source.diffusion.bvalues)
    np.testing.assert_allclose(denoised.diffusion.gradients, source.diffusion.gradients, atol=1e-6)

"""The shell network for diffusion series: shells and their harmonics, the phantom it trains on, its
training, and MP-PCA + shell network on a real DWI (table, geometry and maps kept)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from MRIDenoiseLib.diffusion import GradientTable, fibonacci_directions
from MRIDenoiseLib.errors import InputError
from MRIDenoiseLib.io import read_volume
from MRIDenoiseLib.spherical import fit_shell, shells_of

pytest.importorskip("dipy")
REPO = Path(__file__).resolve().parents[1]


def test_shells_group_nearby_bvalues_and_leave_b0_out():
    bvalues = np.array([0, 995, 2000, 1005, 5, 1000, 1990, 3000.0])
    directions = fibonacci_directions(8)
    directions[[0, 4]] = 0.0  # the b0 volumes
    shells = shells_of(GradientTable(bvalues, directions))
    assert [round(s.bvalue) for s in shells] == [1000, 1995, 3000]
    assert [s.indices.tolist() for s in shells] == [[1, 3, 5], [2, 6], [7]]


def test_a_shell_fit_reproduces_signals_of_its_order_and_picks_the_order_by_directions():
    rng = np.random.default_rng(0)
    many, few = fit_shell(fibonacci_directions(30)), fit_shell(fibonacci_directions(12))
    assert (many.used, few.used) == (15, 6)
    assert np.all(many.basis[:, 15:] == 0) and np.all(few.basis[:, 6:] == 0) and np.all(few.pseudo_inverse[6:] == 0)
    for fit in (many, few):
        coefficients = np.zeros((4, 15))
        coefficients[:, : fit.used] = rng.standard_normal((4, fit.used))
        np.testing.assert_allclose(fit.coefficients(fit.synthesise(coefficients)), coefficients, atol=1e-10)
    # a tensor signal at b = 1000 is smooth on the sphere: order 4 describes it to a small fraction
    directions = fibonacci_directions(30)
    tensor = np.diag([1.7e-3, 0.3e-3, 0.3e-3])
    signal = np.exp(-1000 * np.einsum("ki,ij,kj->k", directions, tensor, directions))
    residual = signal - many.synthesise(many.coefficients(signal))
    assert np.abs(residual).max() < 0.02 * signal.mean()
    assert many.noise_gain < few.noise_gain * 1.5 and few.noise_gain > 0
    with pytest.raises(ValueError, match="at least 6"):
        fit_shell(fibonacci_directions(5))


def test_a_turned_phantom_turns_its_fibres_with_its_anatomy():
    from MRIDenoiseLib.training.dwi_phantom import Phantom, rotated

    shape = (6, 10, 20)  # z, y, x: a slab long along x, fibres along x
    mask = np.zeros(shape, bool)
    mask[1:5, 2:8, 2:18] = True
    tensors = np.zeros((*shape, 3, 3))
    tensors[mask] = np.diag([1.7e-3, 0.3e-3, 0.3e-3])
    phantom = Phantom(mask.astype(float), mask, tensors, np.zeros(shape, bool), np.zeros((*shape, 3, 3)), (2.0,) * 3)
    quarter_turn = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # world x -> y
    turned = rotated(phantom, quarter_turn)
    assert turned.mask.shape == (4, 16, 6) and turned.mask.sum() == mask.sum()  # long along y now
    principal = np.linalg.eigh(turned.tensors[turned.mask])[1][:, :, 2]
    assert np.abs(principal[:, 1]).min() > 0.99  # and so are its fibres
    same = rotated(phantom, np.eye(3))
    np.testing.assert_allclose(same.tensors[same.mask], tensors[mask])


def _mppca_and_shells_config(folder: Path, root: Path, steps: int) -> Path:
    config = {
        "kind": "shells",
        "model": {"id": "tiny-shells", "title": "Tiny shells", "architecture": "shell-unet-3d",
                  "arguments": {"channels": [8, 12, 16]}},
        "shells": {"sources": ["crop.nii.gz"], "root": str(root), "orientations": 2, "crops": 2, "crop_size": 12,
                   "directions_range": [20, 24], "two_shell_fraction": 0.0, "sigma_range": [0.08, 0.1],
                   "validation_fraction": 0.4},
        "optim": {"steps": steps, "batch_size": 1, "learning_rate": 0.003, "warmup_steps": 0},
        "validate_every": steps, "log_every": steps, "seed": 5, "threads": 1,
    }  # fmt: skip
    path = folder / "shells.json"
    path.write_text(json.dumps(config))
    return path


def test_the_shell_network_lowers_mppcas_error_in_a_few_training_steps(dwi_crop, tmp_path):
    """On a simulated cube of the phantom (MP-PCA run, Rician noise at 8-10 % of b0), 40 steps of training
    bring the network's signal error below MP-PCA's, where it starts (its correction starts at zero)."""
    from MRIDenoiseLib.training.config import load_config
    from MRIDenoiseLib.training.shells import ShellTrainer, shell_loss

    config = load_config(_mppca_and_shells_config(tmp_path, dwi_crop.parent, 40))
    trainer = ShellTrainer(config, tmp_path / "run", show_progress=False)
    assert len(trainer.train) == 1 and len(trainer.validation) == 1
    example = trainer.train[0]
    from MRIDenoiseLib.nets.shells import MPPCA_SLICE

    mppca_error = float(shell_loss(example.inputs[MPPCA_SLICE], example))
    untrained = float(shell_loss(trainer.network(example.inputs[None])[0].detach(), example))
    assert untrained == pytest.approx(mppca_error, rel=1e-5)
    trainer.fit()
    trained = float(shell_loss(trainer.network(example.inputs[None])[0].detach(), example))
    assert trained < 0.8 * mppca_error
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert any("mppca_mse" in record for record in history)
    # the same pool file read for a network built with rician_correction: MP-PCA's start debiased, and closer
    from MRIDenoiseLib.training.shells import ShellExample

    pooled = sorted((tmp_path / "run" / "pool").glob("[0-9]*.npz"))[0]
    raw, debiased = ShellExample(pooled), ShellExample(pooled, rician_correction=True)
    np.testing.assert_array_equal(raw.target, debiased.target)
    assert float(shell_loss(debiased.inputs[MPPCA_SLICE], debiased)) < float(shell_loss(raw.inputs[MPPCA_SLICE], raw))


def test_an_untrained_shell_network_gives_back_mppca_and_short_shells_are_refused(dwi_crop):
    import torch

    from MRIDenoiseLib.denoisers.dipy_methods import MarchenkoPasturPCA
    from MRIDenoiseLib.denoisers.shells import MPPCAWithShellNetwork
    from MRIDenoiseLib.nets.shells import ShellUNet3D
    from MRIDenoiseLib.pipeline import gradient_table_of

    source = read_volume(dwi_crop)
    table = gradient_table_of(source)
    denoiser = MPPCAWithShellNetwork(ShellUNet3D((4, 4, 4)), torch.device("cpu"))
    series = source.array.astype(np.float32)
    mppca = MarchenkoPasturPCA().denoise_series(series, table)
    np.testing.assert_allclose(denoiser.denoise_series(series, table), mppca, atol=1e-3 * float(mppca.max()))
    assert denoiser.sigma_map is not None and denoiser.sigma_map.shape == series.shape[:3]
    short = GradientTable(table.bvalues.copy(), table.directions.copy())
    short.bvalues[np.flatnonzero(table.bvalues > 50)[4:]] = 2000.0  # shells of 4 and 8 directions
    with pytest.raises(InputError, match="at least 6 directions"):
        denoiser.denoise_series(series, short)


@pytest.mark.parametrize("model", ["mppca-shell-unet-v1", "mppca-shell-unet-v2"])
def test_mppca_with_the_shell_network_from_the_cli_keeps_the_table_and_writes_its_maps(dwi_crop, tmp_path, model):
    """The shipped shell networks on a real DWI (12 directions: an order-2 shell), with both QA maps."""
    from MRIDenoiseLib.pipeline import denoise_volume

    out, sigma, rank = tmp_path / "out.nii.gz", tmp_path / "sigma.nii.gz", tmp_path / "rank.nii.gz"
    result = subprocess.run(
        [sys.executable, "-m", "MRIDenoiseLib", "denoise", str(dwi_crop), str(out), "--model", model,
         "--sigma-map", str(sigma), "--rank-map", str(rank), "--progress", "none"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    source, denoised = read_volume(dwi_crop), read_volume(out)
    assert denoised.array.shape == source.array.shape
    for field in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(getattr(denoised.geometry, field), getattr(source.geometry, field), atol=1e-6)
    np.testing.assert_allclose(denoised.diffusion.bvalues, source.diffusion.bvalues)
    np.testing.assert_allclose(denoised.diffusion.gradients, source.diffusion.gradients, atol=1e-6)
    assert read_volume(sigma).array.shape == source.array.shape[:3]
    assert read_volume(rank).array.max() < source.array.shape[3]
    mppca = denoise_volume(source, "mppca").volume.array
    weighted = source.diffusion.bvalues > 50
    b0 = ~weighted
    np.testing.assert_allclose(denoised.array[..., b0], mppca[..., b0], atol=1e-3)  # b0 volumes are MP-PCA's
    assert not np.allclose(denoised.array[..., weighted], mppca[..., weighted], atol=1.0)  # shells are corrected


def test_an_untrained_network_on_an_order_4_shell_gives_mppcas_projection_onto_the_harmonics():
    """With 30 directions the shell is fitted to order 4 and what lies beyond (mostly noise) is left out."""
    import torch

    from MRIDenoiseLib.denoisers.dipy_methods import MarchenkoPasturPCA
    from MRIDenoiseLib.denoisers.shells import MPPCAWithShellNetwork
    from MRIDenoiseLib.dti import add_signal_noise, random_tensors, signals
    from MRIDenoiseLib.nets.shells import ShellUNet3D

    shape = (6, 12, 12)
    table = GradientTable(np.array([0.0] * 2 + [1000.0] * 30), np.vstack([np.zeros((2, 3)), fibonacci_directions(30)]))
    clean = signals(random_tensors(int(np.prod(shape)), 4), table, 1.0).reshape(*shape, table.size)
    noisy = add_signal_noise(clean, 0.05, "rician", 5).astype(np.float32)
    mppca = MarchenkoPasturPCA().denoise_series(noisy, table)
    output = MPPCAWithShellNetwork(ShellUNet3D((4, 4, 4)), torch.device("cpu")).denoise_series(noisy, table)
    shell = slice(2, 32)
    fit = fit_shell(table.directions[shell])
    np.testing.assert_allclose(output[..., :2], mppca[..., :2], atol=1e-5)
    projection = np.clip(fit.synthesise(fit.coefficients(mppca[..., shell])), 0, None)
    np.testing.assert_allclose(output[..., shell], projection, atol=1e-4)
    assert not np.allclose(output[..., shell], mppca[..., shell], atol=1e-3)


def test_debiasing_a_shell_s_coefficients_recovers_the_signal_under_its_rician_mean():
    """Coefficients of the Rician mean of a fibre's signal (what MP-PCA keeps) -> those of the signal itself,
    direction by direction: the mean's excess is largest where the signal is lowest (along the fibre)."""
    import torch

    from MRIDenoiseLib.denoisers.shells import rician_debiased
    from MRIDenoiseLib.training.losses import rician_mean

    directions = fibonacci_directions(30)
    fit = fit_shell(directions)
    tensor = np.diag([1.7e-3, 0.3e-3, 0.3e-3])
    signal = np.exp(-1000 * np.einsum("ki,ij,kj->k", directions, tensor, directions))  # b0 = 1
    sigma = 0.1
    mean = rician_mean(torch.from_numpy(signal), sigma).numpy()
    coefficients = np.moveaxis(fit.coefficients(np.broadcast_to(mean, (2, 2, 2, 30))), -1, 0)
    debiased = rician_debiased(coefficients, fit, np.full((2, 2, 2), sigma))
    recovered = fit.synthesise(np.moveaxis(debiased, 0, -1))[0, 0, 0]
    biased = fit.synthesise(np.moveaxis(coefficients, 0, -1))[0, 0, 0]
    assert np.abs(recovered - signal).max() < 0.25 * np.abs(biased - signal).max()
    # where the noise map is zero (outside the object) nothing changes
    untouched = rician_debiased(coefficients, fit, np.zeros((2, 2, 2)))
    np.testing.assert_allclose(untouched, coefficients, atol=1e-6)


def test_projection_order_follows_what_a_shells_directions_pin_down():
    from MRIDenoiseLib.spherical import projection_order

    orders = {count: projection_order(count) for count in (5, 6, 12, 19, 20, 37, 38, 59, 60, 128)}
    assert orders == {5: 0, 6: 2, 12: 2, 19: 2, 20: 4, 37: 4, 38: 6, 59: 6, 60: 8, 128: 8}


def test_projected_shells_keep_their_harmonic_signal_and_lose_the_noise_they_cannot_resolve():
    """32 directions at b = 1000 (order 4, 15 of 32 dimensions kept), 64 at b = 3000 (order 8, 45 of 64),
    5 at b = 2000 (too few: untouched), two b0 volumes (untouched)."""
    from MRIDenoiseLib.spherical import project_shells, sampled_harmonics

    rng = np.random.default_rng(5)
    low, high, sparse = fibonacci_directions(32), fibonacci_directions(64), fibonacci_directions(5)
    table = GradientTable(
        np.array([0.0] * 2 + [1000.0] * 32 + [3000.0] * 64 + [2000.0] * 5),
        np.vstack([np.zeros((2, 3)), low, high, sparse]),
    )
    voxels = (6, 7, 8)
    series = rng.standard_normal((*voxels, table.size)).astype(np.float32)
    series[..., 2:34] = rng.standard_normal((*voxels, 15)) @ sampled_harmonics(low, 4).T  # order 4 exactly
    noise = rng.standard_normal((*voxels, 64)).astype(np.float32)
    series[..., 34:98] = noise
    projected = project_shells(series, table)
    assert projected.shape == series.shape and projected.dtype == np.float32
    np.testing.assert_array_equal(projected[..., :2], series[..., :2])
    np.testing.assert_array_equal(projected[..., 98:], series[..., 98:])
    np.testing.assert_allclose(projected[..., 2:34], series[..., 2:34], atol=1e-4)
    kept = np.mean(projected[..., 34:98] ** 2) / np.mean(noise**2)
    assert kept == pytest.approx(45 / 64, abs=0.03)
    again = project_shells(projected, table)
    np.testing.assert_allclose(again, projected, atol=1e-4)  # a projection: applying it twice changes nothing


def test_the_fraction_told_falls_from_level_factor_at_high_b0_snr_to_the_noisy_factor_at_low():
    from MRIDenoiseLib.denoisers.joint import HIGH_SNR, LOW_SNR, told_fraction

    assert (LOW_SNR, HIGH_SNR) == (10.0, 20.0)
    fractions = [told_fraction(snr, 0.75, 0.5) for snr in (0.0, 4.0, 10.0, np.sqrt(200.0), 20.0, 60.0)]
    np.testing.assert_allclose(fractions, [0.75, 0.5, 0.5, 0.625, 0.75, 0.75])


def test_spatial_prior_v3_shows_the_network_each_shell_projected_and_tells_it_a_fraction_of_what_it_sees(
    monkeypatch,
):
    """What each volume's network pass receives lies in its shell's harmonics (order 4 for 32 directions);
    it is told the SNR's fraction of the noise MP-PCA left, times sqrt(15 / 32) in the shell (what the
    projection keeps); v3 lowers MP-PCA's error on a simulated tract and needs a table."""
    from MRIDenoiseLib.denoisers.joint import MPPCAWithSpatialPrior, b0_snr
    from MRIDenoiseLib.denoisers.network import NetworkDenoiser
    from MRIDenoiseLib.dti import add_signal_noise, signals
    from MRIDenoiseLib.pipeline import denoise_volume, load_series_denoiser
    from MRIDenoiseLib.spherical import sampled_harmonics
    from MRIDenoiseLib.volume import DiffusionInfo, Geometry, Volume

    shape = (8, 36, 36)
    directions = fibonacci_directions(32)
    table = GradientTable(np.array([0.0] * 2 + [1000.0] * 32), np.vstack([np.zeros((2, 3)), directions]))
    _, y, x = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    tensors = np.broadcast_to(np.diag([0.8e-3] * 3), (*shape, 3, 3)).copy()
    along = np.array([1.0, 1.0, 0.0]) / np.sqrt(2)
    tensors[np.abs(y - x) < 5] = 0.3e-3 * np.eye(3) + 1.4e-3 * np.outer(along, along)
    clean = signals(tensors.reshape(-1, 3, 3), table, 1.0).reshape(*shape, table.size)
    noisy = add_signal_noise(clean, 1 / 14, "rician", 11).astype(np.float32)  # b0 SNR 14: between the two

    shown: list[tuple[np.ndarray, np.ndarray]] = []
    real = NetworkDenoiser.denoise_with_map

    def recording(self, volume, sigma_map, **options):
        shown.append((np.array(volume), np.array(sigma_map)))
        return real(self, volume, sigma_map, **options)

    monkeypatch.setattr(NetworkDenoiser, "denoise_with_map", recording)
    v3 = load_series_denoiser("mppca-spatial-v3", table, device="cpu")
    assert isinstance(v3, MPPCAWithSpatialPrior)
    assert (v3.level_factor, v3.noisy_level_factor, v3.project_shells) == (0.75, 0.5, True)
    denoised = v3.denoise_series(noisy, table)
    assert len(shown) == table.size and v3.left_map is not None and v3.sigma_map is not None
    assert 12 < b0_snr(noisy, table, v3.sigma_map) < 16 and 0.55 < v3.told_fraction < 0.7
    for index, (_, level) in enumerate(shown):  # the shell's volumes first (one noise fraction), then the b0s
        seen = np.sqrt(15 / 32) if index < 32 else 1.0
        np.testing.assert_allclose(level, v3.told_fraction * seen * v3.left_map, rtol=1e-5)
    shell = np.stack([volume for volume, _ in shown[:32]], axis=-1)
    harmonics = sampled_harmonics(directions, 4)
    fitted = shell @ (harmonics @ np.linalg.pinv(harmonics)).T
    assert np.abs(shell - fitted).max() < 1e-4 * np.abs(shell).max()
    monkeypatch.setattr(NetworkDenoiser, "denoise_with_map", real)

    def error(output: np.ndarray) -> float:
        return float(np.sqrt(np.mean((output - clean) ** 2)))

    volume = Volume(noisy, Geometry((2.0, 2.0, 2.0)), DiffusionInfo(table.bvalues, table.directions))
    assert error(denoised) < 0.85 * error(denoise_volume(volume, "mppca").volume.array)
    with pytest.raises(InputError, match="gradient table"):
        v3.denoise_series(noisy, None)

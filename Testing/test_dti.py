"""DTI simulator, tensor fitting and the q-space autoencoders of paper 001."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MRIDenoiseLib.diffusion import GradientTable, paper_scheme
from MRIDenoiseLib.dti import (
    add_signal_noise,
    fit_tensors,
    fractional_anisotropy,
    mean_diffusivity,
    random_tensors,
    signals,
)
from MRIDenoiseLib.nets.qspace import QSpaceDAE, QSpaceVAE, kl_divergence, kl_weight


def test_paper_scheme_has_32_samples_with_b50_ends():
    table = paper_scheme()
    assert table.size == 32 and table.bvalues[0] == table.bvalues[-1] == 50 and (table.bvalues[1:-1] == 1000).all()
    np.testing.assert_allclose(np.linalg.norm(table.directions, axis=1), 1.0)


def test_signal_matches_the_closed_form():
    """An axis-aligned tensor diag(l1, l2, l3) gives S0 exp(-b l_i) along axis i."""
    tensor = np.diag([1.7e-3, 0.3e-3, 0.2e-3])[None]
    table = GradientTable(
        np.array([0.0, 1000.0, 1000.0, 1000.0, 2000.0]),
        np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1.0]]),
    )
    expected = 2.0 * np.exp(-np.array([0.0, 1.7, 0.3, 0.2, 0.4]))
    np.testing.assert_allclose(signals(tensor, table, 2.0)[0], expected, rtol=1e-12)
    diagonal = np.array([1.0, 1.0, 0.0]) / np.sqrt(2)
    oblique = GradientTable(np.array([1000.0]), diagonal[None])
    np.testing.assert_allclose(signals(tensor, oblique)[0, 0], np.exp(-1000 * (1.7e-3 + 0.3e-3) / 2), rtol=1e-12)


def test_simulated_tensors_span_brain_tissue():
    tensors = random_tensors(5000, 0)
    fa, md = fractional_anisotropy(tensors), mean_diffusivity(tensors)
    assert fa.min() < 0.1 and fa.max() > 0.8 and np.all(np.linalg.eigvalsh(tensors) > 0)
    assert md.min() < 0.6e-3 and md.max() > 2.5e-3


def test_noiseless_fit_recovers_tensors_exactly():
    table = paper_scheme()
    tensors = random_tensors(200, 1)
    fitted, s0 = fit_tensors(signals(tensors, table, 3.0), table)
    np.testing.assert_allclose(fitted, tensors, atol=1e-12)
    np.testing.assert_allclose(s0, 3.0, rtol=1e-10)


def test_a_voxel_whose_signals_were_zeroed_still_fits():
    """A denoiser that removes the Rician bias leaves zeros where the mean was at the floor; the weighted
    fit then weighs those directions little but must not lose every weight of the voxel."""
    table = paper_scheme()
    measured = signals(random_tensors(3, 2), table, 1000.0)
    measured[0] = 0.0  # every measurement zeroed (air at the edge of the mask)
    measured[1, 1::2] = 0.0
    tensors, s0 = fit_tensors(measured, table)
    assert np.all(np.isfinite(tensors)) and np.all(np.isfinite(s0))
    clean, _ = fit_tensors(signals(random_tensors(3, 2), table, 1000.0), table)
    np.testing.assert_allclose(tensors[2], clean[2], atol=1e-12)  # an untouched voxel is fitted as before


def test_gaussian_noise_is_clipped_at_zero_and_rician_is_positive():
    clean = np.full((1000, 32), 0.1)
    assert add_signal_noise(clean, 0.5, "gaussian", 0).min() == 0.0
    assert add_signal_noise(clean, 0.5, "rician", 0).min() > 0.0


def test_kl_schedule_follows_table_1():
    assert [kl_weight(e) for e in (0, 1)] == [0.0, 0.0]
    assert kl_weight(2) == pytest.approx(1e-4) and kl_weight(6) == pytest.approx(5e-4)
    assert kl_weight(40) == pytest.approx(1.5e-3)


def test_kl_divergence_by_hand():
    mean = torch.tensor([[1.0, 0.0]])
    log_variance = torch.tensor([[0.0, np.log(4.0)]])
    expected = 0.5 * (1.0 + (4.0 - 1.0 - np.log(4.0)))
    assert float(kl_divergence(mean, log_variance)) == pytest.approx(expected)


@pytest.mark.parametrize("network", [QSpaceVAE, QSpaceDAE])
def test_autoencoders_map_signals_to_signals(network):
    model = network(measurements=32, latent=7).eval()
    output = model(torch.rand(10, 32))
    reconstruction = output[0] if isinstance(output, tuple) else output
    assert reconstruction.shape == (10, 32)
    if network is QSpaceVAE:
        assert output[1].shape == output[2].shape == (10, 7)
        torch.testing.assert_close(model(torch.ones(2, 32))[0], model(torch.ones(2, 32))[0])  # the mean at inference

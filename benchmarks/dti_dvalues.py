"""Paper 001, Table 2 re-measured: D-value (tensor element) errors after q-space denoising.

    python benchmarks/dti_dvalues.py

A held-out simulated test set (tensors drawn with a seed no training run used), the paper's
32-sample scheme, Gaussian noise with negatives clipped, sigma uniform in [0, 0.91] as in the
paper, plus fixed levels. Tensors are fitted by weighted least squares to the clean, noisy and
reconstructed signals; errors are against the true tensors. Writes results/dti_dvalues.json/.md.
"""

from __future__ import annotations

import numpy as np
import torch
from common import RESULTS, machine, write_json

from MRIDenoiseLib.diffusion import normalise_signals, paper_scheme
from MRIDenoiseLib.dti import (
    add_signal_noise,
    fit_tensors,
    fractional_anisotropy,
    mean_diffusivity,
    random_tensors,
    signals,
)
from MRIDenoiseLib.models.catalog import load_catalog
from MRIDenoiseLib.models.store import resolve_weights
from MRIDenoiseLib.models.weights import load_network

TEST_SEED = 20_011
SAMPLES = 20_000
PAPER = {
    "noisy (VAE test set)": (2.48e-06, 0.000956),
    "VAE": (2.85e-07, 0.000412),
    "noisy (DAE test set)": (1.74e-06, 0.000840),
    "DAE": (4.03e-07, 0.000534),
}
_UPPER = np.triu_indices(3)
READING = """What agrees: on the paper's noise mix both autoencoders cut the D-value MSE and MAE against the
noisy signals, as in the paper. What does not: (1) the size of the gain: our noisy MSE is about 16
times the paper's (the paper does not give its S0 scaling or how its sigma mix was drawn, so its
noisy baseline is milder) and our reduction is far larger (about 270x in MSE; the paper's 9x for
the VAE and 4x for the DAE); (2) the ranking: the paper finds the VAE better, here the DAE is
slightly better on every row; (3) at fixed low noise (sigma <= 0.05, the SNR of good clinical DWI)
both models are worse than the noisy signal, a cross-over the paper's single mixed test set hides."""


def reconstruct(model_id: str, noisy: np.ndarray) -> np.ndarray:
    entry = load_catalog().get(model_id)
    network = load_network(resolve_weights(entry), entry.architecture, entry.network_arguments()).eval()
    normalised, scale = normalise_signals(noisy)
    with torch.inference_mode():
        output = network(torch.from_numpy(normalised.astype(np.float32)))
    output = output[0] if isinstance(output, tuple) else output
    return np.clip(output.numpy().astype(np.float64), 0, None) * scale[:, None]


def errors(truth: np.ndarray, measured: np.ndarray, table) -> dict[str, float]:
    fitted, _ = fit_tensors(measured, table)
    difference = fitted[:, _UPPER[0], _UPPER[1]] - truth[:, _UPPER[0], _UPPER[1]]
    return {
        "d_mse": float(np.mean(difference**2)),
        "d_mae": float(np.mean(np.abs(difference))),
        "fa_mae": float(np.mean(np.abs(fractional_anisotropy(fitted) - fractional_anisotropy(truth)))),
        "md_mae": float(np.mean(np.abs(mean_diffusivity(fitted) - mean_diffusivity(truth)))),
    }


def main() -> None:
    table = paper_scheme()
    rng = np.random.default_rng(TEST_SEED)
    truth = random_tensors(SAMPLES, rng)
    clean = signals(truth, table)
    settings = {"sigma ~ U(0, 0.91) (paper)": rng.uniform(0, 0.91, (SAMPLES, 1))}
    settings.update({f"sigma = {s}": np.full((SAMPLES, 1), s) for s in (0.02, 0.05, 0.1, 0.2)})
    records = []
    for name, sigma in settings.items():
        noisy = add_signal_noise(clean, sigma, "gaussian", rng)
        for method, measured in (
            ("clean", clean),
            ("noisy", noisy),
            ("qspace-vae", reconstruct("qspace-vae", noisy)),
            ("qspace-dae", reconstruct("qspace-dae", noisy)),
        ):
            records.append({"noise": name, "method": method, **errors(truth, measured, table)})
            print(
                f"{name:<28} {method:<11} "
                + "  ".join(f"{k} {v:.3e}" for k, v in records[-1].items() if k not in ("noise", "method"))
            )
    write_json(
        RESULTS / "dti_dvalues.json",
        {"samples": SAMPLES, "seed": TEST_SEED, "scheme": "paper (32)", "machine": machine(), "records": records},
    )
    lines = [
        "# Paper 001, Table 2 re-measured",
        "",
        f"{SAMPLES} held-out simulated voxels (seed {TEST_SEED}), the paper's 32-sample scheme,",
        "Gaussian noise clipped at 0; WLS tensor fits; errors of the six tensor elements (mm^2/s)",
        "against the true tensors.",
        "",
        "| noise | method | D MSE | D MAE | FA MAE | MD MAE |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['noise']} | {r['method']} | {r['d_mse']:.3e} | {r['d_mae']:.3e} | {r['fa_mae']:.4f} "
        f"| {r['md_mae']:.3e} |"
        for r in records
    ]
    lines += ["", "Paper 001, Table 2 (its own test splits):", "", "| | MSE | MAE |", "|---|---|---|"]
    lines += [f"| {k} | {v[0]:.3g} | {v[1]:.3g} |" for k, v in PAPER.items()]
    lines += ["", READING]
    (RESULTS / "dti_dvalues.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

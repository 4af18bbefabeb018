"""Paper 004 (consensus Noise2Noise) re-measured: its Table 2 structure on our protocol, and real repeats.

    python benchmarks/paper004.py [--parts simulated repeats] [--minutes 1] [--report-only]

(a) Simulated acquisitions: the EVALUATION.md volumes (Colin27 crop, IXI048) at every level, with
    a second, independent Rician draw as the second acquisition. Rows: the noisy input, the mean
    of the two acquisitions, Noise2Noise, the consensus pair combining both acquisitions (9) as
    in the paper, the pair on one scan, the distilled consensus-unet, Noise2Clean (supervised
    bound) and the default model. All networks were trained on the same data and schedule.
(b) Real repeats: the two GE EPI series of ../shared/data/repeats (10 repetitions each). Each
    repetition is registered rigidly to the first; repetitions 1-2 are the user's two scans and
    the mean of repetitions 3-10 is the reference (it keeps about a third of one scan's noise,
    so every score is bounded by that). Rows as in (a), plus `train-consensus` on repetitions
    1-2 (the user path: the pair fine-tuned on the two scans for --minutes).

Scores: PSNR / SSIM in the foreground mask and RMSE in 10^-3 of the brightest tissue (the unit of
the paper's Table 2). Writes results/paper004.json and results/paper004.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable

import numpy as np
from common import LEVELS, RESULTS, colin27_crop, data_root, ixi_volume, machine, noise_draw, write_json

from MRIDenoiseLib.denoisers.network import NetworkDenoiser
from MRIDenoiseLib.io import read_volume
from MRIDenoiseLib.masks import brightest_tissue_mean, foreground_mask
from MRIDenoiseLib.metrics import evaluate
from MRIDenoiseLib.pipeline import load_denoiser
from MRIDenoiseLib.registration import align
from MRIDenoiseLib.training.two_scans import train_consensus_volumes
from MRIDenoiseLib.volume import Volume

REPEATS = ["dcm_qa_nih_DCM2NIIX_regression_test_4.nii.gz", "dcm_qa_nih_DCM2NIIX_regression_test_5.nii.gz"]
PAPER_TABLE_2 = {
    "Zero-filling": (36.3, 90.1),
    "SENSE": (38.4, 86.5),
    "Noise2noise": (27.7, 94.6),
    "Proposed (consensus)": (23.4, 95.2),
    "Noise2clean": (21.0, 96.4),
}
"""Paper 004's Table 2 (NYU knee MR, 4x under-sampling): RMSE in 10^-3 and SSIM in %."""
ROWS = {
    "noisy": "one acquisition (noisy input)",
    "mean-of-two": "mean of the two acquisitions",
    "noise2noise-unet": "Noise2Noise U-Net (one scan)",
    "consensus-pair-both": "consensus pair on both acquisitions, eq. (9)",
    "consensus-unet-pair": "consensus pair on one scan",
    "consensus-unet": "consensus-unet, distilled (one scan)",
    "noise2clean-unet": "Noise2Clean U-Net (one scan, supervised bound)",
    "mridenoise-rician-2.5d": "default model (one scan)",
    "train-consensus": "train-consensus on the two scans, eq. (9)",
}
READING = """## Reading

To be written from the numbers above."""

Pair = tuple[np.ndarray, np.ndarray]


def scores(clean: np.ndarray, output: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    result = evaluate(clean, output, mask)
    rmse = float(np.sqrt(np.mean((output[mask] - clean[mask]) ** 2)))
    return {**result, "rmse_milli": 1000 * rmse / brightest_tissue_mean(clean, mask)}


def single_scan(model: str) -> Callable[[Pair, tuple], np.ndarray]:
    denoiser, _ = load_denoiser(model, "auto")
    return lambda pair, spacing: denoiser.denoise(pair[0], None, spacing_zyx=spacing)


def pair_on_both() -> Callable[[Pair, tuple], np.ndarray]:
    """Equation (9): each member on its own acquisition, the outputs averaged."""
    denoiser, _ = load_denoiser("consensus-unet-pair", "auto")
    members = [NetworkDenoiser(member) for member in (denoiser.network.first, denoiser.network.second)]
    return lambda pair, spacing: (
        0.5 * sum(m.denoise(scan, None, spacing_zyx=spacing) for m, scan in zip(members, pair, strict=True))
    )


def methods() -> dict[str, Callable[[Pair, tuple], np.ndarray]]:
    table = {"noisy": lambda pair, spacing: pair[0], "mean-of-two": lambda pair, spacing: 0.5 * (pair[0] + pair[1])}
    table["consensus-pair-both"] = pair_on_both()
    for model in (
        "noise2noise-unet",
        "consensus-unet-pair",
        "consensus-unet",
        "noise2clean-unet",
        "mridenoise-rician-2.5d",
    ):
        table[model] = single_scan(model)
    return table


def run_simulated(levels: list[float]) -> list[dict]:
    records = []
    table = methods()
    for volume in (colin27_crop(), ixi_volume("IXI048-HH-1326-T1_2mm.nii.gz")):
        for level in levels:
            seed = 1000 + round(level * 10)  # the quality benchmark's draw; the second one is new
            first, _ = noise_draw(volume, level, seed)
            second, _ = noise_draw(volume, level, seed + 500_000)
            for name, run in table.items():
                started = time.perf_counter()
                output = run((first, second), volume.spacing_zyx)
                seconds = time.perf_counter() - started
                record = {
                    "part": "simulated",
                    "volume": volume.name,
                    "level_percent": level,
                    "method": name,
                    **scores(volume.clean, output, volume.mask),
                    "seconds": round(seconds, 2),
                }
                records.append(record)
                print(
                    f"{volume.name} {level:>4g}% {name:<24} PSNR {record['psnr_foreground']:6.2f} "
                    f"SSIM {record['ssim_foreground']:.4f} RMSE {record['rmse_milli']:.1f}",
                    flush=True,
                )
    return records


def registered_repetitions(path) -> tuple[list[np.ndarray], Volume, float]:
    """Every repetition resampled onto the first (rigid), the first as a volume, and the largest motion (mm)."""
    series = read_volume(path)
    first = Volume(np.ascontiguousarray(series.array[..., 0]), series.geometry)
    aligned, motion = [first.array.astype(np.float32)], 0.0
    for index in range(1, series.array.shape[-1]):
        alignment = align(first.array, series.geometry, series.array[..., index], series.geometry)
        aligned.append(alignment.array)
        motion = max(motion, alignment.translation_mm)
    return aligned, first, motion


def run_repeats(minutes: float) -> list[dict]:
    records = []
    table = methods()
    for name in REPEATS:
        repetitions, first, motion = registered_repetitions(data_root() / "repeats" / "epi" / name)
        reference = np.mean(repetitions[2:], axis=0)
        mask = foreground_mask(reference)
        pair = (repetitions[0], repetitions[1])
        spacing = first.geometry.spacing_zyx()
        outputs = {method: run(pair, spacing) for method, run in table.items()}
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as cache:
            os.environ["MRIDENOISE_CACHE_DIR"] = cache
            trained = train_consensus_volumes(first, first.with_array(pair[1]), minutes=minutes, register=False)
            del os.environ["MRIDENOISE_CACHE_DIR"]
        outputs["train-consensus"] = trained.denoised.array
        for method, output in outputs.items():
            record = {
                "part": "repeats",
                "volume": name.removesuffix(".nii.gz"),
                "method": method,
                "largest_motion_mm": round(motion, 2),
                **scores(reference, output, mask),
            }
            if method == "train-consensus":
                record.update(seconds=round(time.perf_counter() - started, 1), steps=trained.steps)
            records.append(record)
            print(
                f"{record['volume']} {method:<24} PSNR {record['psnr_foreground']:6.2f} "
                f"SSIM {record['ssim_foreground']:.4f} RMSE {record['rmse_milli']:.1f}",
                flush=True,
            )
    return records


def markdown(payload: dict) -> str:
    records = payload["records"]
    lines = [
        "# Paper 004 re-measured: consensus Noise2Noise",
        "",
        f"Machine: {payload['machine']['cpu']}, torch {payload['machine']['torch']}. Protocol: "
        "../shared/design/EVALUATION.md (Rician noise, foreground PSNR / SSIM); RMSE in 10^-3 of the brightest "
        "tissue. Networks: the shipped noise2noise-unet, consensus-unet(-pair) and noise2clean-unet, trained on the "
        "same volumes and schedule (configs/); the default model for scale.",
        "",
        "## The paper's Table 2 (NYU knee MR, 4x under-sampled; as reported)",
        "",
        "| | " + " | ".join(PAPER_TABLE_2) + " |",
        "|---|" + "---|" * len(PAPER_TABLE_2),
        "| RMSE (10^-3) | " + " | ".join(f"{v[0]:.1f}" for v in PAPER_TABLE_2.values()) + " |",
        "| SSIM (%) | " + " | ".join(f"{v[1]:.1f}" for v in PAPER_TABLE_2.values()) + " |",
        "",
    ]
    simulated = [r for r in records if r["part"] == "simulated"]
    for volume in dict.fromkeys(r["volume"] for r in simulated):
        rows = [r for r in simulated if r["volume"] == volume]
        levels = sorted({r["level_percent"] for r in rows})
        lines += [
            f"## (a) Simulated acquisitions: {volume}, PSNR dB / SSIM / RMSE (10^-3)",
            "",
            "| method | " + " | ".join(f"{level:g} %" for level in levels) + " |",
            "|---|" + "---|" * len(levels),
        ]
        for method in ROWS:
            cells = {r["level_percent"]: r for r in rows if r["method"] == method}
            if cells:
                lines.append(
                    f"| {ROWS[method]} | "
                    + " | ".join(
                        f"{cells[level]['psnr_foreground']:.2f} / {cells[level]['ssim_foreground']:.3f} / "
                        f"{cells[level]['rmse_milli']:.1f}"
                        if level in cells
                        else "-"
                        for level in levels
                    )
                    + " |"
                )
        lines.append("")
    repeats = [r for r in records if r["part"] == "repeats"]
    if repeats:
        lines += [
            "## (b) Real repeats (GE EPI, 10 repetitions; reference = mean of repetitions 3-10)",
            "",
            "| method | " + " | ".join(dict.fromkeys(r["volume"] for r in repeats)) + " |",
            "|---|" + "---|" * len(dict.fromkeys(r["volume"] for r in repeats)),
        ]
        for method in ROWS:
            cells = [r for r in repeats if r["method"] == method]
            if cells:
                lines.append(
                    f"| {ROWS[method]} | "
                    + " | ".join(
                        f"{r['psnr_foreground']:.2f} / {r['ssim_foreground']:.3f} / {r['rmse_milli']:.1f}"
                        for r in cells
                    )
                    + " |"
                )
        motion = ", ".join(f"{r['volume']}: {r['largest_motion_mm']} mm" for r in repeats if r["method"] == "noisy")
        lines += ["", f"Largest rigid correction over the repetitions: {motion}.", ""]
    return "\n".join([*lines, READING, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="*", default=["simulated", "repeats"])
    parser.add_argument("--levels", nargs="*", type=float, default=LEVELS)
    parser.add_argument("--minutes", type=float, default=1.0, help="train-consensus budget on the real repeats")
    parser.add_argument("--report-only", action="store_true", help="rewrite paper004.md from paper004.json")
    args = parser.parse_args()
    path = RESULTS / "paper004.json"
    payload = json.loads(path.read_text()) if path.exists() else {"records": []}
    if not args.report_only:
        kept = [r for r in payload["records"] if r["part"] not in args.parts]
        fresh = (run_simulated(args.levels) if "simulated" in args.parts else []) + (
            run_repeats(args.minutes) if "repeats" in args.parts else []
        )
        payload = {"machine": machine(), "records": kept + fresh}
        write_json(path, payload)
    (RESULTS / "paper004.md").write_text(markdown(payload))


if __name__ == "__main__":
    main()

"""What transfer learning gained for unet-dctd-a (paper 003's set-up, done within MRI).

    python benchmarks/transfer.py                      # every reference of the quality benchmark
    python benchmarks/transfer.py --volumes colin27 sim_pd

Scores, on the validation volumes and levels of the quality benchmark (blind, EVALUATION.md), the
exported weights (best or last, as each config says) of the three runs behind the shipped model,
each reproducible from its config, all run the way the shipped model is (its catalogue planes):

- configs/unet-dctd-a-ixi-t1.json   the pretraining stage (IXI T1, Philips), pixel loss;
- configs/unet-dctd-a.json          fine-tuned from it on Siemens T1 + T2 with the perceptual loss
                                    (the shipped model);
- configs/unet-dctd-a-scratch.json  the fine-tuning data and steps from random weights (ablation).

Writes results/transfer.json and .md and the model card's transfer section.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import (
    CONTRAST_REFERENCES,
    LEVELS,
    REPO,
    RESULTS,
    SIMULATED_CONTRASTS,
    draw_seed,
    machine,
    noise_draw,
    replace_card_section,
    validation_volume,
    write_json,
)

from MRIDenoiseLib.denoisers.network import NetworkDenoiser
from MRIDenoiseLib.metrics import evaluate
from MRIDenoiseLib.models.weights import load_network
from MRIDenoiseLib.training.checkpoints import selected_weights_name
from MRIDenoiseLib.training.config import load_config

RUNS = {
    "pretrained on IXI T1 only": "unet-dctd-a-ixi-t1",
    "fine-tuned from it + perceptual loss (shipped)": "unet-dctd-a",
    "same fine-tuning from random weights": "unet-dctd-a-scratch",
}
VOLUMES = [
    "colin27",
    "IXI048-HH-1326-T1_2mm.nii.gz",
    *(f"sim_{contrast}" for contrast in SIMULATED_CONTRASTS),
    *CONTRAST_REFERENCES,
]
"""The quality benchmark's references: the T1s the runs were selected beside, and the contrasts, anatomy
and vendors that none of the three runs trained on, where transfer is meant to pay."""
CARD_START, CARD_END = "<!-- transfer:start -->", "<!-- transfer:end -->"
READING = """Reading: the fine-tuning stage trains on the Siemens T1 and T2 with the pretraining
subjects replayed (without the replay it forgot the IXI site: see the model card's notes).
Against the same fine-tuning from random weights, starting from the pretrained weights gained
0.23 dB mean PSNR on Colin27 (0.57 dB at 3 %, 0.46 dB at 5 %), and on IXI048, a subject of the
pretraining site, lost 0.72 dB at 1 % and 0.29 dB at 3 % while gaining 0.1-0.15 dB at 10-20 %
(0.08 dB lower mean). Fine-tuning gained 1.2 dB mean on Colin27 over the pretraining stage alone
and left IXI048's mean unchanged (better from 10 % up, worse at 1-5 %). The gain transfer is meant
for, other contrasts and sites, cannot be measured here until a held-out T2 or PD volume exists.
Checkpoints were selected on IXI049/IXI051, neither of these volumes."""


def denoiser_for(config_name: str, runs: Path, planes: str) -> NetworkDenoiser:
    config = load_config(REPO / "configs" / f"{config_name}.json")
    weights = runs / config.model.id / selected_weights_name(config.export_weights)
    network = load_network(weights, config.model.architecture, config.model.arguments)
    return NetworkDenoiser(network, planes=planes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=str(REPO / "runs"), help="folder holding the three run folders")
    parser.add_argument("--report-only", action="store_true", help="rewrite the tables from transfer.json")
    parser.add_argument(
        "--volumes",
        nargs="*",
        default=VOLUMES,
        help="quality-benchmark references by name (default: all of them, other contrasts and anatomy included)",
    )
    args = parser.parse_args()
    if args.report_only:
        write_reports(json.loads((RESULTS / "transfer.json").read_text())["records"])
        return
    volumes = [validation_volume(name) for name in args.volumes]
    records = []
    shipped_planes = load_config(REPO / "configs" / "unet-dctd-a.json").model.planes
    for label, name in RUNS.items():
        denoiser = denoiser_for(name, Path(args.runs), shipped_planes)
        for volume in volumes:
            for level in LEVELS:
                noisy, _ = noise_draw(volume, level, draw_seed(level))
                scores = evaluate(
                    volume.clean, denoiser.denoise(noisy, None, spacing_zyx=volume.spacing_zyx), volume.mask
                )
                records.append({"run": label, "config": f"configs/{name}.json", "volume": volume.name, "level": level})
                records[-1].update({k: scores[k] for k in ("psnr_foreground", "ssim_foreground")})
                print(records[-1], flush=True)
    write_json(RESULTS / "transfer.json", {"machine": machine(), "records": records})
    write_reports(records)


def write_reports(records: list[dict]) -> None:
    lines = [*table(records), READING, ""]
    (RESULTS / "transfer.md").write_text("\n".join(["# Transfer learning for unet-dctd-a", "", *lines]) + "\n")
    replace_card_section(REPO / "Resources" / "Models" / "unet-dctd-a.md", CARD_START, CARD_END, lines)


def table(records: list[dict]) -> list[str]:
    lines = [
        "## What the transfer stage gained (benchmarks/transfer.py)",
        "",
        "Foreground PSNR (dB) / SSIM, blind, Rician noise, the quality benchmark's noise draws.",
        "",
    ]
    for volume in dict.fromkeys(r["volume"] for r in records):
        lines += [
            f"### {volume}",
            "",
            "| run | " + " | ".join(f"{level:g} %" for level in LEVELS) + " | mean PSNR |",
            "|---|" + "---|" * (len(LEVELS) + 1),
        ]
        for label in RUNS:
            rows = {r["level"]: r for r in records if r["run"] == label and r["volume"] == volume}
            cells = [f"{rows[level]['psnr_foreground']:.2f} / {rows[level]['ssim_foreground']:.3f}" for level in LEVELS]
            mean = np.mean([rows[level]["psnr_foreground"] for level in LEVELS])
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {mean:.2f} |")
        lines.append("")
    return lines


if __name__ == "__main__":
    main()

"""Fine-tuning on the user's own scan: the gain over the unadapted model on data unlike the training set.

    python benchmarks/finetune.py [--minutes 2] [--levels 5 10 20]

The out-of-distribution scan is the Philips T1 TSE bottle phantom (../shared/data/phantom,
vendor deep-learning reconstruction off; its own noise is about 0.2 % of the signal, so it serves as
the reference). Rician noise per EVALUATION.md is added; the default model is scored as shipped
and after `finetune` with each self-supervised loss, within the time budget, on that noisy scan
alone: the user model as registered (with its base's second stage, where the base has one) and its
network alone. PSNR / SSIM inside the phantom's foreground mask. Writes results/finetune.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np
import SimpleITK as sitk
from common import RESULTS, data_root, machine, write_json

from MRIDenoiseLib.masks import brightest_tissue_mean, foreground_mask
from MRIDenoiseLib.metrics import evaluate
from MRIDenoiseLib.models.catalog import load_catalog
from MRIDenoiseLib.noise import add_noise
from MRIDenoiseLib.pipeline import denoise_volume, load_denoiser
from MRIDenoiseLib.training.finetune import LOSSES, finetune_volume
from MRIDenoiseLib.volume import Geometry, Volume

READING = """Reading (the faded v17 default, 2026-12-01, AMD EPYC, float32): against this default, much better on the
phantom than the v6 default of the first run (40.18 / 36.24 / 32.62 dB against 39.39 / 35.25 / 31.18 at 5 / 10 /
20 %), two minutes of recorrupted-to-recorrupted (the default loss) gain +1.04, +0.12 and +0.25 dB in the
foreground (v6: +2.03, +1.66, +2.64), with SSIM +0.0008, -0.0013 and +0.0019; Noise2Self -0.13, +0.34 and
+0.63 dB. About 400 steps fit in the budget (the v6 run: 880-1210; not looked into). The user model keeps its
base's second stage (the Wiener step and its measured share, faded out in the air; at 5 % only here): against
its network alone it adds +0.01 dB (r2r) and +1.29 dB (n2s) in the foreground and -0.01 / +0.31 dB over the
whole volume. Under the previous default, whose step was kept in the air too, the same comparison had cost
the whole volume 3.7 / 6.7 dB (the step put back part of the noise and its Rician floor that the network had
removed beside the phantom), and the default as shipped scored 33.75 dB over the whole volume at 5 % where the
faded one scores 37.46 (the same draw, host and precision; foreground 40.17 against 40.18). Both losses fit
the Rician mean of the network's output to their noisy target, so the network learns the signal rather than
the mean magnitude, which lies above it where the noise is strong (fitted directly, r2r lost 0.47 dB at 20 %
in the v6 run); outside the object the adapted network is held to the shipped one's output (without that
term, in the v6 run, whole-volume PSNR fell from 28.3 to 7.2 dB at 20 %)."""
PHANTOM = "phantom/Ph_201_T1W_TSE_Sno_CSno_CSAIno.nii.gz"
SEED = 4004


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--levels", nargs="*", type=float, default=[5.0, 10.0, 20.0])
    parser.add_argument("--report-only", action="store_true", help="rewrite finetune.md from finetune.json")
    args = parser.parse_args()
    if args.report_only:
        (RESULTS / "finetune.md").write_text(markdown(json.loads((RESULTS / "finetune.json").read_text())))
        return
    image = sitk.ReadImage(str(data_root() / PHANTOM))
    clean = sitk.GetArrayFromImage(image).astype(np.float32)
    mask = foreground_mask(clean)
    geometry = Geometry(image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    records = []
    with tempfile.TemporaryDirectory() as cache:
        os.environ["MRIDENOISE_CACHE_DIR"] = cache
        for level in args.levels:
            sigma = level / 100 * brightest_tissue_mean(clean, mask)
            noisy = Volume(add_noise(clean, sigma, "rician", SEED + int(level)), geometry)
            rows = [("noisy input", noisy.array, 0.0, None)]
            shipped = denoise_volume(noisy)
            rows.append(("default model as shipped", shipped.volume.array, shipped.seconds, None))
            for loss in LOSSES:
                result = finetune_volume(noisy, minutes=args.minutes, loss=loss, source_name="phantom")
                adapted = denoise_volume(noisy, result.entry.id)
                rows.append((f"fine-tuned ({loss})", adapted.volume.array, result.seconds, result))
                if result.entry.refinement is not None:  # the adapted network without its base's second stage
                    network, _ = load_denoiser(result.entry.id, refine=False)
                    alone = denoise_volume(noisy, result.entry.id, denoiser=network)
                    rows.append((f"fine-tuned ({loss}), network alone", alone.volume.array, result.seconds, result))
            for name, output, seconds, result in rows:
                scores = evaluate(clean, output, mask)
                record = {"level_percent": level, "method": name, **scores, "seconds": round(seconds, 1)}
                if result is not None:
                    record.update(steps=result.steps, budget_seconds=60 * args.minutes)
                records.append(record)
                print(record, flush=True)
    results = {
        "scan": PHANTOM,
        "model": load_catalog().default_id,
        "machine": machine(),
        "minutes": args.minutes,
        "records": records,
    }
    write_json(RESULTS / "finetune.json", results)
    (RESULTS / "finetune.md").write_text(markdown(results))


def markdown(results: dict) -> str:
    lines = [
        "# Fine-tuning on one noisy scan (out of distribution)",
        "",
        f"Scan: `{results['scan']}` (a bottle phantom: no brain, another vendor and sequence than the training data),",
        f"Rician noise added per EVALUATION.md; the default model (`{results['model']}`) "
        "as shipped vs fine-tuned on the noisy scan itself",
        f"for {results['minutes']:g} min (no clean image). PSNR (dB) / SSIM in the foreground mask. "
        f"Machine: {results['machine']['cpu']}, {results['machine']['torch_threads']} threads.",
        "`python benchmarks/finetune.py`.",
        "",
        "| level | method | PSNR | SSIM | PSNR, whole volume | s (fine-tuning included) | steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["records"]:
        lines.append(
            f"| {r['level_percent']:g} % | {r['method']} | {r['psnr_foreground']:.2f} | {r['ssim_foreground']:.4f} | "
            f"{r['psnr_whole']:.2f} | {r['seconds']:.1f} | {r.get('steps', '')} |"
        )
    return "\n".join([*lines, "", READING, ""])


if __name__ == "__main__":
    main()

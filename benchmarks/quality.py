"""Quality benchmark (EVALUATION.md): every method on the same volumes and noise draws.

    python benchmarks/quality.py                       # all methods, all levels
    python benchmarks/quality.py --methods bm4d ants   # add or refresh some methods
    python benchmarks/quality.py --volumes stroke_flair t2_tse_head spine_t2w   # other contrasts
    python benchmarks/quality.py --methods ID ID-oracle   # a candidate network, blind and told the true sigma

Records are appended to results/quality.json as they are measured and a finished
(volume, level, method) is never recomputed, so a long run (BM4D) can be resumed.
Then run benchmarks/report.py for the tables and plots.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone

import numpy as np
from common import (
    CONTRAST_REFERENCES,
    LEVELS,
    RESULTS,
    colin27_crop,
    draw_seed,
    interpolation_knots,
    machine,
    noise_draw,
    pictured_methods,
    validation_volume,
    write_json,
)
from methods import (
    ADF_GRID,
    GAUSSIAN_GRID,
    anisotropic_diffusion,
    bm4d_blind,
    gaussian,
    peers,
    product_method,
    shipped_scalar_networks,
)

from MRIDenoiseLib.masks import brightest_tissue_mean
from MRIDenoiseLib.metrics import evaluate
from MRIDenoiseLib.models.catalog import load_catalog
from MRIDenoiseLib.noise import estimate_sigma

TUNING_LEVEL = 15.0
TUNING_SEED = 9999
SLICE_LEVEL = 10.0
REFERENCE_BOUND_SEED = 4242
RECORDS = RESULTS / "quality.json"


def tune(volume, grid, factory) -> dict[str, object]:
    """The grid point with the best foreground PSNR on a separate 15 % draw (not scored later)."""
    noisy, sigma = noise_draw(volume, TUNING_LEVEL, TUNING_SEED)
    scored = []
    for parameters in grid:
        denoised = factory(**parameters)(noisy, sigma, volume.spacing_zyx)
        scored.append((evaluate(volume.clean, denoised, volume.mask)["psnr_foreground"], parameters))
    return max(scored, key=lambda item: item[0])[1]


def _tuned(records: list[dict], method: str) -> dict | None:
    """Parameters tuned by an earlier run (always on the Colin27 tuning draw), so every run scores the same peer."""
    return next((r["parameters"] for r in records if r["method"] == method), None)


def load_records() -> list[dict]:
    return json.loads(RECORDS.read_text())["records"] if RECORDS.exists() else []


def load_references() -> dict[str, dict]:
    return json.loads(RECORDS.read_text()).get("references", {}) if RECORDS.exists() else {}


def reference_noise_bound(volume) -> dict[str, float | bool]:
    """How noisy the reference itself is, and what that lets a perfect denoiser score against it.

    The reference's own noise (engine estimate, % of the brightest tissue) is independent of
    the added noise. A denoiser returning the noise-free object exactly would differ from the
    reference by that noise at every level: its score is that of a Rician draw at the reference's
    own level. Where the noisy input scores higher, no denoiser can beat the input on this volume.
    """
    own_percent = 100.0 * estimate_sigma(volume.clean) / brightest_tissue_mean(volume.clean, volume.mask)
    if volume.noise_free:
        return {"noise_free": True, "engine_reading_percent": round(own_percent, 2)}
    draw, _ = noise_draw(volume, own_percent, REFERENCE_BOUND_SEED)
    scores = evaluate(volume.clean, draw, volume.mask)
    return {
        "noise_percent": round(own_percent, 2),
        "perfect_denoiser_psnr_foreground": scores["psnr_foreground"],
        "perfect_denoiser_ssim_foreground": scores["ssim_foreground"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="*", help="method names (default: every available one)")
    parser.add_argument("--levels", nargs="*", type=float, default=LEVELS)
    parser.add_argument(
        "--volumes",
        nargs="*",
        default=["colin27", "IXI048-HH-1326-T1_2mm.nii.gz"],
        help=f"colin27, an IXI T1 file name, sim_t1 / sim_t2 / sim_pd (simulated) or {', '.join(CONTRAST_REFERENCES)}",
    )
    parser.add_argument("--redo", action="store_true", help="recompute records that exist")
    args = parser.parse_args()

    volumes = [validation_volume(name) for name in args.volumes]
    records = load_records()
    adf = _tuned(records, "adf") or tune(colin27_crop(), ADF_GRID, anisotropic_diffusion)
    smoothing = _tuned(records, "gaussian") or tune(colin27_crop(), GAUSSIAN_GRID, gaussian)
    wanted = set(args.methods) if args.methods else None
    networks, default_id = shipped_scalar_networks(), load_catalog().default_id
    # Every run scores the default given the true sigma; another network only when asked by name
    # ("<id>-oracle"), to weigh a candidate before it becomes the default.
    told = [i for i in networks if i == default_id or (wanted and f"{i}-oracle" in wanted)]
    methods = [product_method(model_id) for model_id in networks]
    methods += [product_method(model_id, oracle_sigma=True) for model_id in told]
    methods += [
        product_method("nlm", "Non-local means (ours, blind)"),
        *peers(adf, smoothing),
        bm4d_blind(),
    ]
    unknown = sorted((wanted or set()) - {m.name for m in methods})
    if unknown:
        parser.error(f"unknown methods {', '.join(unknown)}; known: {', '.join(m.name for m in methods)}")
    methods = [m for m in methods if (wanted is None or m.name in wanted) and m.available]
    print("methods:", ", ".join(m.name for m in methods), "| ADF", adf, "| Gaussian", smoothing)

    done = {(r["volume"], r["level_percent"], r["method"]) for r in records}
    host = machine()
    references = {
        **load_references(),
        **{
            volume.name: {
                **reference_noise_bound(volume),
                "linear_interpolation_knots": interpolation_knots(volume.clean, volume.mask),
            }
            for volume in volumes
        },
    }
    write_json(RECORDS, {"protocol": "../shared/design/EVALUATION.md", "references": references, "records": records})
    pictured = pictured_methods()
    for volume in volumes:
        for level in args.levels:
            seed = draw_seed(level)
            noisy, sigma = noise_draw(volume, level, seed)
            slices = {}
            for method in [None, *methods]:
                name = "noisy" if method is None else method.name
                if (volume.name, level, name) in done and not args.redo:
                    continue
                started = time.perf_counter()
                output = noisy if method is None else method.run(noisy, sigma, volume.spacing_zyx)
                seconds = time.perf_counter() - started
                scores = evaluate(volume.clean, output, volume.mask)
                records = [
                    r for r in records if (r["volume"], r["level_percent"], r["method"]) != (volume.name, level, name)
                ]
                records.append(
                    {
                        "volume": volume.name,
                        "source": volume.source,
                        "licence": volume.licence,
                        "crop": volume.crop,
                        "mask_rule": volume.mask_rule,
                        "noise": "rician",
                        "level_percent": level,
                        "sigma": sigma,
                        "seed": seed,
                        "method": name,
                        "label": "noisy input" if method is None else method.label,
                        "blind": True if method is None else method.blind,
                        "parameters": {} if method is None else method.parameters,
                        **({"estimated_sigma": estimate_sigma(noisy)} if method is None else {}),
                        **scores,
                        "seconds": round(seconds, 2),
                        "machine": host,
                        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    }
                )
                write_json(
                    RECORDS,
                    {"protocol": "../shared/design/EVALUATION.md", "references": references, "records": records},
                )
                print(
                    f"{volume.name} {level:>4g}% {name:<28} PSNR {scores['psnr_foreground']:6.2f}  "
                    f"SSIM {scores['ssim_foreground']:.4f}  {seconds:7.1f} s",
                    flush=True,
                )
                if level == SLICE_LEVEL and name in pictured:
                    slices[name] = output[output.shape[0] // 2]
            if slices:
                path = RESULTS / f"slices_{volume.name}_{level:g}.npz"
                existing = dict(np.load(path)) if path.exists() else {"clean": volume.clean[volume.clean.shape[0] // 2]}
                kept = {name: image for name, image in {**existing, **slices}.items() if name in pictured}
                np.savez_compressed(path, **kept)


if __name__ == "__main__":
    main()

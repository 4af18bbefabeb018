"""Noise that is not i.i.d. Rician: the default model given one blind noise level, or a blind map.

    python benchmarks/noise_models.py [--models ID ...]   # default: the catalogue's default model
    python benchmarks/noise_models.py --models ID ... --noise zero-filled   # rerun one noise model, keep the rest

Four references of different contrast and anatomy (Colin27 T1; stroke FLAIR; an axial T2 TSE head;
a cervical-spine T2w), each a central crop. Only Colin27 is nearly noise-free; the others keep their
own scanner noise (and the 8-bit FLAIR its quantisation), so their scores are against a noisy
reference; the bound a perfect denoiser would reach is not printed here. Noise models, each at 3, 10
and 20 % of the brightest tissue (`mridenoise simulate` has each):

  iid Rician              the evaluation protocol's noise
  coil profile +-50 %     Rician whose level varies smoothly from 0.5 to 1.5 times (coils, g-factor)
  8 coils + profile       non-central chi of an 8-coil sum-of-squares, with the same profile
  zero-filled             Rician whose in-plane neighbours are correlated (zero-filled interpolation)

Methods: each model (the default, or those of `--models`, side by side on the same draws) with one
blind noise level (`--sigma auto`, today's default) and with a blind noise map (`--sigma map`); both also
told what the scanner did, where that is a setting: the coil count for the coil noise model (`--coils 8`),
the zero-fill factor for the zero-filled one (`--zero-filled 2`); also how close the blind map is to the
true level. Writes results/noise_models.json, .md and .png.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import SimpleITK as sitk
from common import RESULTS, data_root, machine, write_json

from MRIDenoiseLib.masks import brightest_tissue_mean, foreground_mask
from MRIDenoiseLib.metrics import evaluate
from MRIDenoiseLib.noise import add_noise, coil_profile, estimate_sigma_map
from MRIDenoiseLib.pipeline import denoise_volume
from MRIDenoiseLib.volume import Geometry, Volume

LEVELS = (3.0, 10.0, 20.0)
SEED = 515
REFERENCES = {
    "colin27 T1 (nearly clean)": "anat/colin27_t1_1mm.nii.gz",
    "stroke FLAIR (8-bit)": "anat_more/stroke_flair_8bit_brain.nii.gz",
    "T2 TSE head": "anat_more/t2_tse_axial.nii.gz",
    "spine T2w": "spine/spine_unf01_T2w_resampled.nii.gz",
}
MODELS = {
    "iid Rician": {"coils": 1, "zero_filled": False, "spread": 0.0},
    "coil profile +-50 %": {"coils": 1, "zero_filled": False, "spread": 0.5},
    "8 coils + profile": {"coils": 8, "zero_filled": False, "spread": 0.5},
    "zero-filled": {"coils": 1, "zero_filled": True, "spread": 0.0},
}
CROP = (48, 160, 160)
METHODS = (("one blind level", False), ("blind map", True))
"""How the noise level is given: one blind level (``--sigma auto``) or a blind map (``--sigma map``)."""


def reference(path: str) -> tuple[Volume, np.ndarray]:
    """A central crop (at most 48 x 160 x 160) and its foreground mask."""
    image = sitk.ReadImage(str(data_root() / path))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    starts = [max((size - want) // 2, 0) for size, want in zip(array.shape, CROP, strict=True)]
    window = tuple(slice(s, s + want) for s, want in zip(starts, CROP, strict=True))
    crop = np.ascontiguousarray(array[window])
    return Volume(crop, Geometry(tuple(float(v) for v in image.GetSpacing()))), foreground_mask(crop)


def run(models: list[str], noises: list[str]) -> list[dict]:
    records = []
    for name, path in REFERENCES.items():
        clean, mask = reference(path)
        tissue = brightest_tissue_mean(clean.array, mask)
        for model, settings in MODELS.items():
            if model not in noises:
                continue
            for level in LEVELS:
                truth = np.float32(level / 100 * tissue) * (
                    coil_profile(clean.array.shape, SEED + 1, settings["spread"])
                    if settings["spread"]
                    else np.ones_like(clean.array)
                )
                noisy = clean.with_array(
                    add_noise(clean.array, truth, "rician", SEED, settings["coils"], settings["zero_filled"])
                )
                # the noise level a sum-of-squares magnitude shows per voxel is still sigma per channel
                mapped = estimate_sigma_map(noisy.array)
                map_error = float(np.median(np.abs(mapped[mask] / truth[mask] - 1)))
                variants = [(method, varying, 1, 1.0) for method, varying in METHODS]
                if settings["coils"] > 1:  # also told the coil count (--coils), the floor moved to the Rician one
                    coils = settings["coils"]
                    variants += [(f"{method}, coils given", varying, coils, 1.0) for method, varying in METHODS]
                if settings["zero_filled"]:  # also told the factor (--zero-filled): the acquired band denoised
                    variants += [(f"{method}, zero-fill given", varying, 1, 2.0) for method, varying in METHODS]
                for model_id in models:
                    for method, varying, coils, zero_filled in variants:
                        started = time.perf_counter()
                        result = denoise_volume(
                            noisy, model_id, device="cpu", varying_noise=varying, coils=coils, zero_filled=zero_filled
                        )
                        seconds = time.perf_counter() - started
                        scores = evaluate(clean.array, result.volume.array, mask)
                        record = {
                            "reference": name,
                            "noise": model,
                            "level": level,
                            "model": model_id,
                            "method": method,
                            "psnr": scores["psnr_foreground"],
                            "ssim": scores["ssim_foreground"],
                            "noisy_psnr": evaluate(clean.array, noisy.array, mask)["psnr_foreground"],
                            "map_median_relative_error": map_error,
                            "seconds": round(seconds, 1),
                        }
                        records.append(record)
                        print(record, flush=True)
    return records


def markdown(results: dict) -> str:
    records, models = results["records"], results["models"]
    header = " | ".join(f"`{m}` one level | `{m}` map | `{m}` told, one level | `{m}` told, map" for m in models)
    lines = [
        "# Noise that is not i.i.d. Rician: one blind level or a blind noise map",
        "",
        f"Machine: {results['machine']['cpu']}. Command: `python benchmarks/noise_models.py"
        + (f" --models {' '.join(models)}`" if len(models) > 1 else "`")
        + ". PSNR / SSIM in the foreground",
        "against the reference (only Colin27 is nearly noise-free: the others keep their own noise, so their",
        "PSNR is capped). Map error: median over the foreground of |blind map / true level - 1|. Told: the",
        "same, told what the scanner did: the number of coils of a sum-of-squares magnitude (`--coils 8`: the",
        "noise floor moved to the Rician one before denoising, `noise.rician_from_chi`) for the coil noise",
        "model, the zero-fill factor (`--zero-filled 2`: the acquired band denoised on the acquired grid,",
        "`bands.py`) for the zero-filled one.",
        "",
        f"| reference | noise | level % | noisy PSNR | {header} | map error |",
        "|---|---|---|---|" + "---|" * (4 * len(models)) + "---|",
    ]
    cases = [r for r in records if r["model"] == models[0] and r["method"] == "one blind level"]
    for case in cases:
        cells = []
        for model_id in models:
            for method in ("one blind level", "blind map", "one blind level, told", "blind map, told"):
                found = _told(records, case, model_id, method.removesuffix(", told")) if "told" in method else None
                found = found or _record(records, case, model_id, method)
                cells.append(f"{found['psnr']:.2f} / {found['ssim']:.3f}" if found else "-")
        lines.append(
            f"| {case['reference']} | {case['noise']} | {case['level']:g} | {case['noisy_psnr']:.2f} | "
            + " | ".join(cells)
            + f" | {case['map_median_relative_error']:.1%} |"
        )
    lines += ["", "![PSNR gain over the noisy input, one blind level, per model](noise_models.png)", ""]
    return "\n".join(lines)


def _record(records: list[dict], case: dict, model_id: str, method: str) -> dict | None:
    """The record of ``model_id`` and ``method`` on the same reference, noise model and level as ``case``."""
    return next(
        (
            r
            for r in records
            if r["model"] == model_id
            and r["method"] == method
            and all(r[k] == case[k] for k in ("reference", "noise", "level"))
        ),
        None,
    )


def _told(records: list[dict], case: dict, model_id: str, method: str) -> dict | None:
    """``method`` told the coil count or the zero-fill factor, on ``case``'s reference, noise and level."""
    return _record(records, case, model_id, f"{method}, coils given") or _record(
        records, case, model_id, f"{method}, zero-fill given"
    )


def plot(records: list[dict], models: list[str], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(MODELS), figsize=(4 * len(MODELS), 3.6), sharey=True)
    styles = ["-", "--", ":", "-."]
    for axis, model in zip(axes, MODELS, strict=True):
        for colour, name in enumerate(REFERENCES):
            for style, model_id in zip(styles, models, strict=False):
                gains = []
                for level in LEVELS:
                    case = next(
                        r for r in records if r["reference"] == name and r["noise"] == model and r["level"] == level
                    )
                    found = _told(records, case, model_id, "one blind level") or _record(
                        records, case, model_id, "one blind level"
                    )
                    assert found is not None
                    gains.append(found["psnr"] - case["noisy_psnr"])
                label = f"{name}, {model_id}" if model == next(iter(MODELS)) else None
                axis.plot(LEVELS, gains, marker="o", linestyle=style, color=f"C{colour}", label=label)
        axis.axhline(0, color="grey", linewidth=0.8)
        axis.set_title(model)
        axis.set_xlabel("noise level (%)")
    axes[0].set_ylabel("PSNR gain over noisy, one blind level (dB; told --coils / --zero-filled)")
    axes[0].legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    from MRIDenoiseLib.models.catalog import load_catalog

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", help="catalogue ids side by side (default: the default model)")
    parser.add_argument(
        "--noise", nargs="+", choices=list(MODELS), help="rerun these noise models only; keep the other records"
    )
    args = parser.parse_args()
    models = args.models or [load_catalog().default_id]
    records = run(models, args.noise or list(MODELS))
    path = RESULTS / "noise_models.json"
    if args.noise and path.exists():
        previous = json.loads(path.read_text())
        if previous["models"] != models:
            raise SystemExit(f"--noise merges into a run of the same models; the last run had {previous['models']}")
        records = [r for r in previous["records"] if r["noise"] not in args.noise] + records
    results = {"machine": machine(), "models": models, "records": records}
    write_json(path, results)
    (RESULTS / "noise_models.md").write_text(markdown(results))
    plot(records, models, RESULTS / "noise_models.png")


if __name__ == "__main__":
    main()

"""GPU check: the one prepared run a CUDA machine does first (well under 10 minutes on a recent GPU).

Measures, for the default model on a 256^3 volume (Colin27 with 10 % Rician noise, padded):
- seconds and peak GPU memory in float16, bfloat16 and float32, two runs each, as a user calls it
  (noise level estimated blind on the CPU, three planes) and once with the level given (the network's
  share);
- the spatially varying path (``varying_noise``: a blind sigma map fed to the network) in bfloat16;
- at 1 and 5 %, where the default's low-noise stage runs after the network (the correlation gate, the
  share measured on a box, the Wiener step on the device), two blind calls each in float32, with that
  stage's own seconds, beside the default's network alone on the same volume;
- where one blind call's time goes (intensity scale, blind level, the network's passes);
- the out-of-memory fallback, forced once by capping the process's share of GPU memory;
- a short training run's steps per second with the default's own recipe (the training config its
  catalogue entry names: network, patch, batch, loss, precision, the data's synthetic contrasts and noise)
  on three IXI T1s, without the pre-cleaning pass.
Every section is written to results/gpu_check.json as soon as it ends, and a section that fails records
its error instead of stopping the others.

python benchmarks/gpu_check.py                      # on the GPU machine (benchmarks/gpu_check.sh)
python benchmarks/gpu_check.py --device cpu --size 64 --steps 5   # a dry run of every step, anywhere
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import torch
from common import REPO, RESULTS, data_root, machine, timing_the_low_noise_step, write_json

from MRIDenoiseLib.denoisers import WienerRefined
from MRIDenoiseLib.io import read_volume
from MRIDenoiseLib.models.catalog import load_catalog
from MRIDenoiseLib.noise import add_noise, estimate_sigma, sigma_for_level
from MRIDenoiseLib.normalization import intensity_scale
from MRIDenoiseLib.pipeline import denoise_volume, load_denoiser
from MRIDenoiseLib.volume import Volume

PRECISIONS = ("float16", "bfloat16", "float32")
LEVEL = 10.0
"""The Rician level (%) of the precision rows: above the default's low-noise stage."""
LOW_LEVELS = (1.0, 5.0)
"""Levels (%) where the default's low-noise stage runs after its network."""


def test_volume(size: int, level: float = LEVEL) -> tuple[Volume, float]:
    """Colin27 padded (or cropped) to size^3 with ``level`` % Rician noise, and that noise's sigma."""
    clean = read_volume(data_root() / "anat" / "colin27_t1_1mm.nii.gz").array.astype(np.float32)
    canvas = np.zeros((size, size, size), np.float32)
    part = clean[:size, :size, :size]
    canvas[: part.shape[0], : part.shape[1], : part.shape[2]] = part
    sigma = sigma_for_level(part, level)
    return Volume(add_noise(canvas, sigma, "rician", 1)), sigma


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None


def _timed(device: torch.device, call: Callable[[], object]) -> tuple[object, float]:
    _peak_reset(device)
    started = time.perf_counter()
    result = call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, round(time.perf_counter() - started, 2)


def inference(device: torch.device, size: int) -> list[dict[str, object]]:
    volume, sigma = test_volume(size)
    denoiser, _ = load_denoiser(None, device.type)
    denoise_volume(test_volume(32)[0], denoiser=denoiser)  # warm-up: kernels, caches
    rows: list[dict[str, object]] = []
    runs: list[tuple[str, str, dict[str, object]]] = [
        (precision, mode, arguments)
        for precision in PRECISIONS
        for mode, arguments in (("blind", {}), ("blind", {}), ("sigma given", {"sigma": sigma}))
    ]
    runs.append(("bfloat16", "blind sigma map", {"varying_noise": True}))
    try:
        for precision, mode, arguments in runs:
            os.environ["MRIDENOISE_PRECISION"] = precision
            result, seconds = _timed(device, lambda a=arguments: denoise_volume(volume, denoiser=denoiser, **a))
            rows.append({"precision": precision, "mode": mode, "seconds": seconds, "peak_gib": _peak(device),
                         "device": result.device})  # type: ignore[attr-defined]  # fmt: skip
            print(rows[-1], flush=True)
    finally:
        os.environ.pop("MRIDENOISE_PRECISION", None)
    return rows


def low_noise(device: torch.device, size: int) -> list[dict[str, object]]:
    """The default at :data:`LOW_LEVELS`, blind, float32 (the default precision): two whole calls each,
    the seconds of the stage after its network within each (:func:`timing_the_low_noise_step`), and one
    call of its network alone (the catalogue's model without its second stage) on the same volume."""
    stage_seconds = timing_the_low_noise_step()
    staged, _ = load_denoiser(None, device.type)
    if not isinstance(staged, WienerRefined):
        return [{"skipped": "the default has no low-noise stage"}]
    network, _ = load_denoiser(None, device.type, refine=False)
    rows: list[dict[str, object]] = []
    for level in LOW_LEVELS:
        volume, _ = test_volume(size, level)
        denoise_volume(volume, denoiser=staged)  # warm-up at this level: the stage's kernels
        for model, denoiser in (("default", staged), ("default", staged), ("network alone", network)):
            stage_seconds.clear()
            result, seconds = _timed(device, lambda d=denoiser, v=volume: denoise_volume(v, denoiser=d))
            row: dict[str, object] = {"level_percent": level, "model": model, "seconds": seconds,
                                      "peak_gib": _peak(device), "device": result.device}  # type: ignore[attr-defined]  # fmt: skip
            if denoiser is staged:
                row |= {"stage_seconds": round(sum(stage_seconds), 2), "stage_ran": staged.refined,
                        "share": None if staged.share is None else round(staged.share, 3)}  # fmt: skip
            rows.append(row)
            print(row, flush=True)
    return rows


def breakdown(device: torch.device, size: int) -> dict[str, float]:
    """Where one blind call's time goes, in the default precision: the intensity scale (masks, Otsu
    thresholds), the blind noise level, and the denoiser given that level (the scale again, then the
    network's passes: slices stacked, moved, run and brought back); the passes are the difference."""
    volume, _ = test_volume(size)
    denoiser, _ = load_denoiser(None, device.type)
    spacing = volume.geometry.spacing_zyx()
    _, scale_seconds = _timed(device, lambda: intensity_scale(volume.array))
    level, level_seconds = _timed(device, lambda: estimate_sigma(volume.array))
    _, denoise_seconds = _timed(device, lambda: denoiser.denoise(volume.array, level, spacing_zyx=spacing))
    row = {"intensity_scale": scale_seconds, "blind_level": level_seconds, "denoise_given_level": denoise_seconds,
           "network_passes": round(denoise_seconds - scale_seconds, 2)}  # fmt: skip
    print(row, flush=True)
    return row


class _Collected(logging.Handler):
    """Keeps the engine's log messages (its out-of-memory retries) for the results file."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def forced_fallback(device: torch.device, size: int) -> dict[str, object]:
    """Cap GPU memory so a whole slice cannot fit: the planner must tile, or fall back to the CPU."""
    if device.type != "cuda":
        return {"skipped": "needs a CUDA device"}
    volume, _ = test_volume(size)
    denoiser, _ = load_denoiser(None, "cuda")
    device = torch.device("cuda", torch.cuda.current_device())  # the memory cap needs an index
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(0.5, 0.25e9 / total)
    retries = _Collected()
    engine_log = logging.getLogger("MRIDenoiseLib.inference")
    engine_log.addHandler(retries)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result, seconds = _timed(device, lambda: denoise_volume(volume, denoiser=denoiser))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        engine_log.removeHandler(retries)
    row = {"memory_cap_gib": round(fraction * total / 2**30, 2), "seconds": seconds, "peak_gib": _peak(device),
           "device_after": result.device, "retries": retries.messages,  # type: ignore[attr-defined]
           "warnings": [str(w.message) for w in caught]}  # fmt: skip
    print(row, flush=True)
    return row


def training(device: torch.device, steps: int) -> dict[str, object]:
    """Steps per second of the default's training recipe (the config its catalogue entry names) on three
    IXI T1s (no pre-cleaning, no transfer)."""
    from MRIDenoiseLib.training.config import SupervisedConfig
    from MRIDenoiseLib.training.trainer import SupervisedTrainer

    catalog = load_catalog()
    recipe_path = catalog.get(catalog.default_id).training["config"]
    recipe = json.loads((REPO / recipe_path).read_text())
    volumes = sorted(f"anat/ixi_t1_2mm/{p.name}" for p in (data_root() / "anat" / "ixi_t1_2mm").glob("*.nii.gz"))
    optim = {**recipe["optim"], "steps": 10 * steps}
    if device.type != "cuda":
        optim["precision"] = "float32"
    config = SupervisedConfig.model_validate_json(json.dumps({
        "kind": "supervised",
        "model": {**recipe["model"], "id": "gpu-check", "title": "GPU check", "notes": []},
        "data": {**recipe["data"], "root": str(data_root()), "train": volumes[:3],
                 "validation": volumes[3:4], "preclean_above_percent": None, "preclean_model": None,
                 "validation_slices": 8},
        "optim": optim,
        "validate_every": 100000,
    }))  # fmt: skip
    with tempfile.TemporaryDirectory() as run:
        trainer = SupervisedTrainer(config, Path(run), device=device.type, show_progress=False)
        trainer.fit(max_steps=2)  # warm-up
        _, seconds = _timed(device, lambda: trainer.fit(max_steps=steps))
        peak = _peak(device)
    row = {"steps": steps, "seconds": seconds, "steps_per_second": round(steps / seconds, 2), "peak_gib": peak,
           "batch_size": config.optim.batch_size, "patch_size": config.data.patch_size,
           "precision": config.optim.precision, "recipe": recipe_path}  # fmt: skip
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu for a dry run")
    name = "gpu_check.json" if device.type == "cuda" and args.size == 256 else "gpu_check_dry_run.json"
    result: dict[str, object] = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "model": load_catalog().default_id,
        "size": args.size,
    }
    sections: dict[str, Callable[[], object]] = {
        "inference": lambda: inference(device, args.size),
        "low_noise": lambda: low_noise(device, args.size),
        "breakdown": lambda: breakdown(device, args.size),
        "forced_out_of_memory": lambda: forced_fallback(device, args.size),
        "training": lambda: training(device, args.steps),
    }
    for section, measure in sections.items():
        try:
            result[section] = measure()
        except Exception as error:  # one failed section must not lose the others' figures
            traceback.print_exc()
            result[section] = {"error": f"{type(error).__name__}: {error}"}
        write_json(RESULTS / name, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

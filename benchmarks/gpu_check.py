"""GPU check: the one prepared run a CUDA machine does first (well under 10 minutes on a recent GPU).

Measures, for the default model on a 256^3 volume (Colin27 with 10 % Rician noise, padded): seconds and
peak GPU memory in float16, bfloat16 and float32; the out-of-memory fallback, forced once by capping
the process's share of GPU memory; and a short training run's steps per second (default network,
batch 16, 64 px patches of three IXI T1s). Writes results/gpu_check.json and prints it.

python benchmarks/gpu_check.py                      # on the GPU machine (benchmarks/gpu_check.sh)
python benchmarks/gpu_check.py --device cpu --size 64 --steps 5   # a dry run of every step, anywhere
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, data_root, machine, write_json

from MRIDenoiseLib.io import read_volume
from MRIDenoiseLib.noise import add_noise, sigma_for_level
from MRIDenoiseLib.pipeline import denoise_volume, load_denoiser
from MRIDenoiseLib.volume import Volume


def test_volume(size: int) -> Volume:
    """Colin27 padded (or cropped) to size^3 with 10 % Rician noise."""
    clean = read_volume(data_root() / "anat" / "colin27_t1_1mm.nii.gz").array.astype(np.float32)
    canvas = np.zeros((size, size, size), np.float32)
    part = clean[:size, :size, :size]
    canvas[: part.shape[0], : part.shape[1], : part.shape[2]] = part
    return Volume(add_noise(canvas, sigma_for_level(part, 10), "rician", 1))


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def inference(device: torch.device, size: int) -> list[dict[str, object]]:
    volume = test_volume(size)
    denoiser, _ = load_denoiser(None, device.type)
    denoise_volume(test_volume(32), denoiser=denoiser)  # warm-up: kernels, caches
    rows = []
    for precision in ("float16", "bfloat16", "float32"):
        os.environ["MRIDENOISE_PRECISION"] = precision
        _peak_reset(device)
        started = time.perf_counter()
        result = denoise_volume(volume, denoiser=denoiser)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rows.append({"precision": precision, "seconds": round(time.perf_counter() - started, 2),
                     "peak_gib": _peak(device), "device": result.device})  # fmt: skip
        print(rows[-1], flush=True)
    os.environ.pop("MRIDENOISE_PRECISION")
    return rows


def forced_fallback(device: torch.device, size: int) -> dict[str, object]:
    """Cap GPU memory so a whole slice cannot fit: the planner must tile, or fall back to the CPU."""
    if device.type != "cuda":
        return {"skipped": "needs a CUDA device"}
    volume = test_volume(size)
    denoiser, _ = load_denoiser(None, "cuda")
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(0.5, 0.25e9 / total), device)
    _peak_reset(device)
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = denoise_volume(volume, denoiser=denoiser)
    torch.cuda.set_per_process_memory_fraction(1.0, device)
    row = {"memory_cap_gib": round(min(0.5, 0.25e9 / total) * total / 2**30, 2),
           "seconds": round(time.perf_counter() - started, 2), "peak_gib": _peak(device),
           "device_after": result.device, "warnings": [str(w.message) for w in caught]}  # fmt: skip
    print(row, flush=True)
    return row


def training(device: torch.device, steps: int) -> dict[str, object]:
    from MRIDenoiseLib.training.config import TrainConfig
    from MRIDenoiseLib.training.trainer import SupervisedTrainer

    volumes = sorted(p.name for p in (data_root() / "anat" / "ixi_t1_2mm").glob("*.nii.gz"))
    config = TrainConfig.model_validate_json(json.dumps({
        "kind": "supervised",
        "model": {"id": "gpu-check", "title": "GPU check", "architecture": "residual-unet-2.5d",
                  "arguments": {"context": 2, "channels": [32, 48, 64, 96]}},
        "data": {"root": str(data_root() / "anat" / "ixi_t1_2mm"), "train": volumes[:3], "validation": volumes[3:4],
                 "patch_size": 64, "preclean_above_percent": None, "validation_slices": 8},
        "optim": {"steps": 10 * steps, "batch_size": 16,
                  "precision": "bfloat16" if device.type == "cuda" else "float32"},
        "validate_every": 100000,
    }))  # fmt: skip
    with tempfile.TemporaryDirectory() as run:
        trainer = SupervisedTrainer(config, Path(run), device=device.type, show_progress=False)
        trainer.fit(max_steps=2)  # warm-up
        started = time.perf_counter()
        trainer.fit(max_steps=steps)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
    row = {"steps": steps, "seconds": round(seconds, 2), "steps_per_second": round(steps / seconds, 2)}
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
    result = {
        "machine": machine(),
        "size": args.size,
        "inference": inference(device, args.size),
        "forced_out_of_memory": forced_fallback(device, args.size),
        "training": training(device, args.steps),
    }
    name = "gpu_check.json" if device.type == "cuda" and args.size == 256 else "gpu_check_dry_run.json"
    write_json(RESULTS / name, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

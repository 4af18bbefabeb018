"""Speed benchmark (EVALUATION.md): seconds and peak memory per 256^3 float32 volume.

    python benchmarks/speed.py                     # every available method, 3 runs each
    python benchmarks/speed.py --methods bm4d --runs 1
    python benchmarks/speed.py --methods mridenoise-rician-2.5d-v6-wiener-share-interleaved \
        mridenoise-rician-2.5d-v6 --level 1         # low noise, the default beside its network

Every run is a fresh child process, so its peak memory is its own; a run is the whole call (the
model is loaded inside it). The methods take turns, one run each per round, so a host whose speed
drifts (a shared virtual machine: identical computations measured 21 and 26 s in one sequence)
slows them alike; a method's figure is the median of its runs. A default with the low-noise step also
records, run by run, the seconds of that stage within the call (speed.md's "of which the low-noise step"):
its own cost, which host drift between runs cannot blur. Results go to results/speed.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone

import numpy as np
import torch
from common import RESULTS, SPEED_LEVEL, data_root, level_of, machine, timing_the_low_noise_step, write_json
from methods import peers, product_method, shipped_scalar_networks

from MRIDenoiseLib.inference import reduced_precision
from MRIDenoiseLib.machine import cpu_identity, cpu_model
from MRIDenoiseLib.masks import brightest_tissue_mean
from MRIDenoiseLib.noise import add_noise

SHAPE = (256, 256, 256)


def reference_volume(level: float = SPEED_LEVEL) -> np.ndarray:
    """Colin27 T1 centred in a 256^3 grid, with ``level`` % Rician noise (seed 256)."""
    import SimpleITK as sitk

    colin = sitk.GetArrayFromImage(sitk.ReadImage(str(data_root() / "anat" / "colin27_t1_1mm.nii.gz"))).astype(
        np.float32
    )
    volume = np.zeros(SHAPE, np.float32)
    offset = [(s - c) // 2 for s, c in zip(SHAPE, colin.shape, strict=True)]
    volume[tuple(slice(o, o + c) for o, c in zip(offset, colin.shape, strict=True))] = colin
    return add_noise(volume, level / 100 * brightest_tissue_mean(colin), "rician", 256)


def all_methods():
    methods = [product_method(model_id) for model_id in shipped_scalar_networks()]
    tuned = (
        json.loads((RESULTS / "quality.json").read_text()) if (RESULTS / "quality.json").exists() else {"records": []}
    )
    adf = next(
        (r["parameters"] for r in tuned["records"] if r["method"] == "adf"), {"iterations": 10, "conductance": 1.0}
    )
    smoothing = next((r["parameters"] for r in tuned["records"] if r["method"] == "gaussian"), {"width_mm": 0.8})
    return [*methods, product_method("nlm", "Non-local means (ours, blind)"), *peers(adf, smoothing)]


def child(name: str, level: float) -> None:
    """One run of ``name`` (its model loaded inside the timed call), printed as a JSON record."""
    noisy = reference_volume(level)
    sigma = level / 100 * brightest_tissue_mean(noisy)
    method = next(m for m in all_methods() if m.name == name)
    step_seconds = timing_the_low_noise_step()
    started = time.perf_counter()
    method.run(noisy, sigma, (1.0, 1.0, 1.0))
    seconds = time.perf_counter() - started
    network = "model" in method.parameters
    device = "cuda" if torch.cuda.is_available() and network else "cpu"
    precision = reduced_precision()
    print(
        json.dumps(
            {
                "method": name,
                "label": method.label,
                "seconds": seconds,
                "step_seconds": sum(step_seconds) if step_seconds else None,
                "device": device,
                "precision": str(precision or torch.float32).removeprefix("torch.") if network else None,
                "threads": torch.get_num_threads(),
                "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
                "peak_gpu_gb": torch.cuda.max_memory_allocated() / 1024**3 if torch.cuda.is_available() else None,
                "date": datetime.now(timezone.utc).date().isoformat(),
                "cpu": cpu_model(),
                "cpu_identity": cpu_identity(),
                "level_percent": level,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="*")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--level", type=float, default=SPEED_LEVEL, help="noise level (%%) of the volume")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.level)
        return
    path = RESULTS / "speed.json"
    previous = json.loads(path.read_text())["records"] if path.exists() else []
    names = args.methods or [m.name for m in all_methods() if m.available and m.name != "bm4d"]
    records = [r for r in previous if r["method"] not in names or level_of(r) != args.level]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    measured: list[dict] = []
    for turn in range(args.runs):
        for name in [n for n in names if n != "bm4d" or turn == 0]:  # BM4D takes minutes: one run
            completed = subprocess.run(
                [sys.executable, __file__, "--child", name, "--level", str(args.level)],
                capture_output=True,
                text=True,
                encoding="utf-8",
                errors="replace",
                check=False,
            )
            if completed.returncode != 0:
                print(f"{name} failed: {completed.stderr.strip().splitlines()[-1:]}")
                continue
            runs[name].append(json.loads(completed.stdout.strip().splitlines()[-1]))
            step = runs[name][-1]["step_seconds"]
            of_which = f" (low-noise step {step:.1f} s)" if step is not None else ""
            print(f"round {turn + 1}: {name:<28} {runs[name][-1]['seconds']:8.1f} s{of_which}", flush=True)
        # after every round, so an interrupted run keeps what it measured
        measured = [median_record(taken) for taken in runs.values() if taken]
        write_json(path, {"shape": list(SHAPE), "machine": machine(), "records": records + measured})
    for record in measured:
        print(f"{record['method']:<28} {record['seconds']:8.1f} s  peak RSS {record['peak_rss_gb']:.2f} GB")


def median_record(taken: list[dict]) -> dict:
    """One method's runs as one record: the median seconds (and of the low-noise step's), every run's, the
    largest peak memory."""
    seconds = [run["seconds"] for run in taken]
    steps = [run["step_seconds"] for run in taken if run.get("step_seconds") is not None]
    return {
        **taken[-1],
        "seconds": float(np.median(seconds)),
        "all_seconds": seconds,
        "step_seconds": float(np.median(steps)) if steps else None,
        "all_step_seconds": steps,
        "runs": len(taken),
        "peak_rss_gb": max(run["peak_rss_gb"] for run in taken),
    }


if __name__ == "__main__":
    main()

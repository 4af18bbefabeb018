"""Every catalogue model's output on the bundled sample, as digests and arrays, to check that a refactor
changed no result: run it on two commits and compare (bit-identical, or within bfloat16 rounding).

python scripts/model_outputs.py OUT.npz            # one .npz of outputs, keyed by model id
python scripts/model_outputs.py --compare A.npz B.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from MRIDenoiseLib.io import read_volume  # noqa: E402
from MRIDenoiseLib.models.catalog import load_catalog  # noqa: E402
from MRIDenoiseLib.noise import add_noise, sigma_for_level  # noqa: E402
from MRIDenoiseLib.pipeline import denoise_volume  # noqa: E402
from MRIDenoiseLib.volume import DiffusionInfo, Volume  # noqa: E402


def outputs() -> dict[str, np.ndarray]:
    sample = read_volume(REPO / "Resources" / "SampleData" / "colin27_t1_1mm_slab.nii.gz")
    clean = sample.array[24:40, 40:168, 30:158].astype(np.float32)
    noisy = Volume(add_noise(clean, sigma_for_level(clean, 10), "rician", 7), sample.geometry)
    results = {}
    for entry in load_catalog():
        if entry.user:
            continue
        if entry.input == "dwi":
            table = entry.gradient_table or {"bvalues": [0.0] + [1000.0] * 6, "directions": np.vstack(
                [np.zeros(3), np.eye(3), np.eye(3)[::-1]]).tolist()}  # fmt: skip
            attenuation = np.exp(-np.asarray(table["bvalues"]) * 0.0008)
            series = noisy.array[..., None] * attenuation[None, None, None, :]
            volume = Volume(
                series.astype(np.float32),
                sample.geometry,
                DiffusionInfo(np.asarray(table["bvalues"]), np.asarray(table["directions"])),
            )
        else:
            volume = noisy
        results[entry.id] = denoise_volume(volume, entry.id, "cpu").volume.array
        print(entry.id, flush=True)
    return results


def compare(first: Path, second: Path) -> int:
    a, b = np.load(first), np.load(second)
    worst = 0
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            print(f"{key}: only in {'first' if key in a else 'second'}")
            worst = 2
            continue
        difference = float(np.abs(a[key] - b[key]).max() / max(float(np.abs(a[key]).max()), 1e-12))
        state = "identical" if np.array_equal(a[key], b[key]) else f"max relative difference {difference:.2e}"
        print(f"{key}: {state}")
        worst = max(worst, 0 if difference < 4e-3 else 1)  # bfloat16 keeps 8 bits: ~4e-3 relative
    return worst


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--compare", action="store_true")
    args = parser.parse_args()
    if args.compare:
        raise SystemExit(compare(*args.paths))
    np.savez_compressed(args.paths[0], **outputs())

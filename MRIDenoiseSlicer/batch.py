"""Headless batch denoising through the module's logic, one folder of scans at a time.

    Slicer --no-main-window --python-script <module folder>/MRIDenoiseSlicer/batch.py -- \
        --input-dir scans/ --output-dir denoised/ [--model ID] [--device auto|cuda|mps|cpu]

Denoises every volume file in the input folder, writes "<name>_denoised.nrrd" files, prints one
line per case, and exits non-zero if any case failed. It lives in this package, not beside
MRIDenoise.py, because Slicer loads every .py at a module folder's top level as a module.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import slicer

if __name__ == "__main__":  # run as a script: the module folder holds the MRIDenoiseSlicer package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from MRIDenoiseLib.io import write_volume
from MRIDenoiseSlicer.nodes import volume_from_node

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="MRIDenoise batch", description="Denoise every volume in a folder.")
    parser.add_argument("--input-dir", required=True, type=Path)
    parser.add_argument("--output-dir", required=True, type=Path)
    parser.add_argument("--model", default=None, help="catalogue id (default: the default model)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    return parser.parse_args([a for a in argv if a != "--"])


def cases(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES))


def output_name(path: Path) -> str:
    suffix = next(s for s in VOLUME_SUFFIXES if path.name.lower().endswith(s))
    return path.name[: -len(suffix)] + "_denoised.nrrd"


def main(argv: list[str]) -> int:
    """Denoise every volume of ``--input-dir`` into ``--output-dir``; 1 when any case failed."""
    args = parse_arguments(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    logic = slicer.util.getModuleLogic("MRIDenoise")
    failures = 0
    inputs = cases(args.input_dir)
    if not inputs:
        print(f"no volume files in {args.input_dir}")
        return 1
    for path in inputs:
        started = time.monotonic()
        try:
            node = logic.core.load_file(path, path.name)
            output = logic.process(node, model=args.model, device=args.device)
            target = args.output_dir / output_name(path)
            write_volume(volume_from_node(output), target)
            summary = logic.core.last_summary
            seconds = time.monotonic() - started
            details = f"{seconds:.1f} s, sigma {summary.get('sigma')}, {summary.get('device')}"
            print(f"ok     {path.name} -> {target.name} ({details})")
        except Exception as error:  # one failed case must not stop the batch
            failures += 1
            print(f"FAILED {path.name}: {error}")
        finally:
            slicer.mrmlScene.Clear()
    print(f"{len(inputs) - failures} of {len(inputs)} cases denoised")
    return 1 if failures else 0


if __name__ == "__main__":
    slicer.util.exit(main(sys.argv[1:]))

"""Start-up time of finding the scans of a large BIDS tree: MRIDenoise's name walker against pybids.

Builds a synthetic tree of empty files (N subjects x 2 sessions x T1w, FLAIR and a DWI with its
.bval/.bvec/.json), then times `find_scans` and, when pybids is importable, `BIDSLayout` + `get`.
python bids_walker.py [SUBJECTS]   (writes results/bids_walker.json)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, machine, write_json

from MRIDenoiseLib.bids import find_scans


def build(root: Path, subjects: int) -> int:
    (root / "dataset_description.json").write_text('{"Name": "synthetic", "BIDSVersion": "1.9.0"}')
    count = 0
    for subject in range(1, subjects + 1):
        for session in (1, 2):
            base = root / f"sub-{subject:04d}" / f"ses-{session}"
            stem = f"sub-{subject:04d}_ses-{session}"
            (base / "anat").mkdir(parents=True)
            (base / "dwi").mkdir()
            for suffix in ("T1w", "FLAIR"):
                (base / "anat" / f"{stem}_{suffix}.nii.gz").touch()
            for extension in (".nii.gz", ".bval", ".bvec"):
                (base / "dwi" / f"{stem}_dwi{extension}").touch()
            (base / "dwi" / f"{stem}_dwi.json").write_text('{"RepetitionTime": 3.0}')
            count += 3
    return count


def main() -> None:
    subjects = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        images = build(root, subjects)
        started = time.perf_counter()
        found = len(find_scans(root))
        walker = time.perf_counter() - started
        result = {"machine": machine(), "subjects": subjects, "images": images, "walker_seconds": round(walker, 2)}
        assert found == images
        try:
            from bids import BIDSLayout
        except ImportError:
            result["pybids"] = "not installed"
        else:
            started = time.perf_counter()
            layout = BIDSLayout(str(root), validate=False)
            result["pybids_images"] = len(layout.get(extension=[".nii.gz", ".nii"], return_type="filename"))
            result["pybids_seconds"] = round(time.perf_counter() - started, 2)
    write_json(RESULTS / "bids_walker.json", result)
    print(result)


if __name__ == "__main__":
    main()

"""Cohort throughput: scans per minute of `mridenoise bids ... participant` with one and two Dask workers.

A BIDS dataset of the ten IXI T1s (2 mm) in ../shared/data, one session each, denoised with the default
model on a local Dask cluster of 1 and then 2 worker processes (each worker gets its share of the cores),
the same run for both, from an empty derivatives folder. Writes results/cohort.json and cohort.md.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from common import RESULTS, data_root, machine, write_json

from MRIDenoiseLib.cohort import run_participant


def build_dataset(folder: Path) -> int:
    (folder / "dataset_description.json").write_text('{"Name": "IXI T1 2 mm", "BIDSVersion": "1.9.0"}')
    sources = sorted((data_root() / "anat" / "ixi_t1_2mm").glob("*.nii.gz"))
    for index, source in enumerate(sources, start=1):
        target = folder / f"sub-{index:02d}" / "anat" / f"sub-{index:02d}_T1w.nii.gz"
        target.parent.mkdir(parents=True)
        shutil.copyfile(source, target)
    return len(sources)


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        bids = Path(scratch) / "bids"
        bids.mkdir()
        count = build_dataset(bids)
        for workers in (1, 2):
            output = Path(scratch) / f"out{workers}"
            started = time.monotonic()
            records = run_participant(bids, output, device="cpu", workers=workers)
            seconds = time.monotonic() - started
            done = sum(r.status == "done" for r in records)
            rows.append({"workers": workers, "scans": done, "seconds": round(seconds, 1),
                         "scans_per_minute": round(60 * done / seconds, 2)})  # fmt: skip
            print(rows[-1], flush=True)
    result = {"machine": machine(), "dataset": f"{count} IXI T1 (2 mm) scans", "model": "default", "runs": rows}
    write_json(RESULTS / "cohort.json", result)
    lines = [
        "# Cohort throughput (`mridenoise bids ... participant`, local Dask cluster)",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores (CPU only). Dataset: "
        f"{result['dataset']}, default model, from an empty output folder;",
        "the time includes starting the cluster and each worker's first model load.",
        "",
        "| workers | scans | seconds | scans per minute |",
        "|---|---|---|---|",
        *(f"| {r['workers']} | {r['scans']} | {r['seconds']} | {r['scans_per_minute']} |" for r in rows),
    ]
    (RESULTS / "cohort.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

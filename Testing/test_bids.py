"""The BIDS-App door on a real Dask LocalCluster: derivatives, sidecars, a killed worker, resume, report."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from contextlib import suppress
from pathlib import Path

import numpy as np
import pytest

from MRIDenoiseLib.bids import find_scans, parse_name
from MRIDenoiseLib.errors import InputError
from MRIDenoiseLib.io import read_volume, write_volume

distributed = pytest.importorskip("dask.distributed")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (DATA / "dwi").is_dir(), reason="needs ../shared/data")]
DERIVATIVE_NAME = re.compile(
    r"^sub-[a-zA-Z0-9]+(_ses-[a-zA-Z0-9]+)?(_[a-z]+-[a-zA-Z0-9]+)*_desc-(denoised|noise|sigma)_[a-zA-Z0-9]+"
    r"\.(nii\.gz|json|bval|bvec)$"
)
"""The bids-validator's derivative file-name rule for these files: entities, desc-<label>, suffix, extension."""


@pytest.fixture
def bids_dir(tmp_path) -> Path:
    """Two subjects from ../shared/data: sub-01 with a T1w and a DWI (with its sidecars), sub-02 with two
    sessions, the second holding a FLAIR file cut short (unreadable)."""
    root = tmp_path / "bids"
    (root / "dataset_description.json").parent.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "test", "BIDSVersion": "1.9.0"}')
    t1s = sorted((DATA / "anat" / "ixi_t1_2mm").glob("*.nii.gz"))
    dwi = DATA / "dwi" / "philips_dti_b1000_12dir_5b0"
    copies = {
        "sub-01/anat/sub-01_T1w.nii.gz": t1s[0],
        "sub-01/dwi/sub-01_dwi.nii.gz": dwi.with_suffix(".nii.gz"),
        "sub-01/dwi/sub-01_dwi.bval": dwi.with_suffix(".bval"),
        "sub-01/dwi/sub-01_dwi.bvec": dwi.with_suffix(".bvec"),
        "sub-01/dwi/sub-01_dwi.json": dwi.with_suffix(".json"),
        "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz": t1s[1],
        "sub-02/ses-2/anat/sub-02_ses-2_T1w.nii.gz": t1s[2],
    }
    for relative, source in copies.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, root / relative)
    (root / "sub-02/ses-2/anat/sub-02_ses-2_FLAIR.nii.gz").write_bytes(t1s[3].read_bytes()[:5000])
    return root


def test_the_walker_reads_names_and_filters(bids_dir):
    scans = find_scans(bids_dir)
    assert [s.relative.as_posix() for s in scans] == [
        "sub-01/anat/sub-01_T1w.nii.gz",
        "sub-01/dwi/sub-01_dwi.nii.gz",
        "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz",
        "sub-02/ses-2/anat/sub-02_ses-2_FLAIR.nii.gz",
        "sub-02/ses-2/anat/sub-02_ses-2_T1w.nii.gz",
    ]
    assert [s.suffix for s in find_scans(bids_dir, ["sub-02"], ["2"], ["anat"], ["T1w"])] == ["T1w"]
    assert find_scans(bids_dir, datatypes=["dwi"])[0].derivative("denoised").as_posix() == (
        "sub-01/dwi/sub-01_desc-denoised_dwi.nii.gz"
    )
    assert parse_name(bids_dir, bids_dir / "sub-01/anat/notbids.nii.gz") is None
    with pytest.raises(InputError, match="participant"):
        find_scans(bids_dir, ["99"])
    with pytest.raises(InputError, match="not a BIDS dataset"):
        find_scans(bids_dir / "sub-01")


def _kill_a_busy_worker(client, done: threading.Event) -> list[str]:
    """Kill the first worker seen running a scan (as a node failure would), once; returns its address."""
    while not done.is_set():
        busy = [address for address, tasks in client.processing().items() if tasks]
        if busy:
            with suppress(Exception):  # the worker dies before it can answer
                client.run(os._exit, 1, workers=busy[:1], wait=False)
            return busy[:1]
        time.sleep(0.02)
    return []


def test_participant_on_two_workers_survives_a_killed_worker_then_resumes_and_reports(bids_dir, tmp_path):
    from MRIDenoiseLib.cohort import latest_records, run_group, run_participant

    output = tmp_path / "derivatives"
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True)
    client = distributed.Client(cluster)
    done, results = threading.Event(), {}

    def run() -> None:
        results["records"] = run_participant(
            bids_dir, output, model="gaussian", device="cpu", scheduler=cluster.scheduler_address
        )
        done.set()

    worker = threading.Thread(target=run)
    worker.start()
    killed = _kill_a_busy_worker(client, done)
    worker.join(timeout=600)
    client.close()
    cluster.close()
    assert killed, "no worker was seen busy"
    records = {r.scan: r for r in results["records"]}
    assert records["sub-02/ses-2/anat/sub-02_ses-2_FLAIR.nii.gz"].status == "failed"
    assert "corrupt or truncated" in records["sub-02/ses-2/anat/sub-02_ses-2_FLAIR.nii.gz"].error
    finished = [scan for scan, record in records.items() if record.status == "done"]
    assert len(finished) == 4

    for scan in finished:
        source = bids_dir / scan
        stem = scan.replace(".nii.gz", "").rsplit("_", 1)
        denoised = output / f"{stem[0]}_desc-denoised_{stem[1]}.nii.gz"
        noise = output / f"{stem[0]}_desc-noise_{stem[1]}.nii.gz"
        sidecar = json.loads(denoised.with_name(denoised.name.replace(".nii.gz", ".json")).read_text())
        assert read_volume(denoised).array.shape == read_volume(source).array.shape
        assert read_volume(noise).array.shape == read_volume(source).array.shape
        assert sidecar["Sources"] == [f"bids:raw:{scan}"] and sidecar["Model"] == "gaussian"
        noise_sidecar = json.loads(noise.with_name(noise.name.replace(".nii.gz", ".json")).read_text())
        assert noise_sidecar["Sources"] == sidecar["Sources"] and "removed" in noise_sidecar["Description"]
        assert {"ModelSHA256", "Sigma", "SoftwareVersion", "Device", "Seconds", "NoiseMap"} <= set(sidecar)
    dwi_sidecar = json.loads((output / "sub-01/dwi/sub-01_desc-denoised_dwi.json").read_text())
    assert dwi_sidecar["Manufacturer"] == "Philips"  # the source's acquisition metadata is kept
    assert (output / "sub-01/dwi/sub-01_desc-denoised_dwi.bval").read_text().split() == (
        (bids_dir / "sub-01/dwi/sub-01_dwi.bval").read_text().split()
    )

    description = json.loads((output / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "MRIDenoise"
    images = [p for p in output.rglob("*") if p.is_file() and p.parts[-2] in ("anat", "dwi")]
    assert images and all(DERIVATIVE_NAME.match(p.name) for p in images), [p.name for p in images]
    assert all(re.match(r"^sub-[a-zA-Z0-9]+$", p.relative_to(output).parts[0]) for p in images)
    assert not list(output.rglob(".mridenoise-staging-*")), "a killed worker left a staging folder behind"

    again = run_participant(bids_dir, output, model="gaussian", device="cpu", workers=1)
    assert sorted(r.status for r in again) == ["failed", "skipped", "skipped", "skipped", "skipped"]
    assert latest_records(output)["sub-01/anat/sub-01_T1w.nii.gz"]["status"] == "skipped"

    report = run_group(bids_dir, output).read_text()
    assert report.count("<tr><td>sub-") == 4 and "sub-02_ses-2_FLAIR.nii.gz: " in report
    assert len(list((output / "figures").glob("*.png"))) == 4


def test_sigma_map_writes_each_scan_s_noise_level_map_beside_its_derivatives(bids_dir, dwi_crop, tmp_path, capsys):
    from MRIDenoiseLib.cli import main
    from MRIDenoiseLib.noise import estimate_sigma

    # the DWI default runs the network on every volume of the series: a crop of it keeps this test short
    write_volume(read_volume(dwi_crop), bids_dir / "sub-01/dwi/sub-01_dwi.nii.gz")
    output = tmp_path / "derivatives"
    arguments = [str(bids_dir), str(output), "participant", "--participant-label", "01", "--workers", "1"]
    assert main(["bids", *arguments, "--device", "cpu", "--sigma", "map", "--progress", "none"]) == 0
    assert "2 denoised, 0 already done, 0 failed" in capsys.readouterr().out
    for folder, suffix in (("anat", "T1w"), ("dwi", "dwi")):  # a scalar network, and MP-PCA's own map
        source = read_volume(bids_dir / f"sub-01/{folder}/sub-01_{suffix}.nii.gz")
        level = output / f"sub-01/{folder}/sub-01_desc-sigma_{suffix}.nii.gz"
        sigma = read_volume(level).array
        assert sigma.shape == source.array.shape[:3] and float(sigma.min()) >= 0 and float(sigma.max()) > 0
        sidecar = json.loads((output / f"sub-01/{folder}/sub-01_desc-denoised_{suffix}.json").read_text())
        assert sidecar["NoiseLevelMap"] == level.relative_to(output).as_posix()
        assert (
            "per voxel"
            in json.loads(level.with_name(level.name.replace(".nii.gz", ".json")).read_text())["Description"]
        )
        if folder == "anat":  # the map's typical level agrees with the one-number estimate
            assert 0.6 < float(np.median(sigma)) / estimate_sigma(source.array) < 1.6
    images = [p for p in output.rglob("*.nii.gz")]
    assert len(images) == 6 and all(DERIVATIVE_NAME.match(p.name) for p in images)


@pytest.mark.parametrize(
    ("option", "field", "refusal"),
    [
        ({"coils": 4}, "ReceiveCoils", "--coils works with methods for 3-D volumes"),
        ({"zero_filled": 2.0}, "ZeroFillFactor", "--zero-filled works with methods for 3-D volumes"),
    ],
)
def test_a_scan_records_what_its_scanner_did_and_a_dwi_is_refused(bids_dir, tmp_path, option, field, refusal):
    """A sum-of-squares magnitude (``--coils``) or a zero-filled reconstruction (``--zero-filled``)."""
    from MRIDenoiseLib.cohort import denoise_scan

    scans = {scan.suffix: scan for scan in find_scans(bids_dir, ["01"])}
    output = tmp_path / "derivatives"
    done = denoise_scan(scans["T1w"], output, "gaussian", "cpu", overwrite=False, **option)
    assert done.status == "done", done.error
    sidecar = json.loads((output / "sub-01/anat/sub-01_desc-denoised_T1w.json").read_text())
    assert sidecar[field] == next(iter(option.values()))
    assert {"ReceiveCoils", "ZeroFillFactor"} - {field} & set(sidecar) == set()
    source = read_volume(scans["T1w"].path).array
    assert read_volume(output / "sub-01/anat/sub-01_desc-denoised_T1w.nii.gz").array.shape == source.shape
    refused = denoise_scan(scans["dwi"], output, None, "cpu", overwrite=False, **option)
    assert refused.status == "failed" and refusal in refused.error
    assert not (output / "sub-01/dwi").exists() or not any((output / "sub-01/dwi").iterdir())

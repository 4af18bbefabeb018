"""Cohorts: a BIDS dataset denoised scan by scan on a Dask cluster, resumable, failures reported per scan.

Each scan is one Dask task (:func:`denoise_scan`). A scan is finished when its JSON sidecar exists:
the images and the noise map are written first, as one transaction, and the sidecar last, so a
worker killed mid-scan leaves no finished-looking scan and Dask retries it on another worker; a
second run skips finished scans unless asked to overwrite. Every outcome is appended to
``logs/participant.jsonl``; ``group`` turns the derivatives and that log into a report.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from . import __version__
from .bids import Scan, dataset_description, find_scans, source_metadata
from .errors import InputError, MRIDenoiseError
from .models.catalog import write_json_atomic

DENOISED, NOISE, SIGMA = "denoised", "noise", "sigma"
LOG = Path("logs") / "participant.jsonl"
RETRIES = 2
"""Times Dask runs a scan again when its worker died (a scan that fails with an error is not retried)."""


@dataclass
class ScanRecord:
    """What happened to one scan."""

    scan: str
    status: str  # done, skipped or failed
    output: str = ""
    seconds: float = 0.0
    error: str = ""
    worker: str = ""


def denoise_scan(
    scan: Scan,
    output_root: Path,
    model: str | None,
    device: str,
    overwrite: bool,
    threads: int = 0,
    varying_noise: bool = False,
    coils: int = 1,
    zero_filled: float = 1.0,
) -> ScanRecord:
    """Denoise one scan into the derivatives folder (the task a worker runs); errors become a failed record.

    ``varying_noise`` estimates the noise level per voxel (``--sigma map``; MP-PCA methods do anyway) and
    writes that map as the ``desc-sigma`` image, in the same transaction as the others. ``coils`` > 1: the
    scans are sum-of-squares magnitudes of that many coils (``denoise --coils``; recorded in the sidecar).
    ``zero_filled`` > 1: they were reconstructed at that many times their acquired resolution in-plane
    (``denoise --zero-filled``; recorded in the sidecar)."""
    import socket

    worker = f"{socket.gethostname()}:{os.getpid()}"
    target = output_root / scan.derivative(DENOISED)
    sidecar = _json_beside(target)
    if sidecar.exists() and not overwrite:
        return ScanRecord(str(scan.relative), "skipped", str(target.relative_to(output_root)), worker=worker)
    started = time.monotonic()
    try:
        from .pipeline import denoise_file

        if threads:
            import torch

            torch.set_num_threads(threads)
        target.parent.mkdir(parents=True, exist_ok=True)
        noise = output_root / scan.derivative(NOISE)
        level = output_root / scan.derivative(SIGMA) if varying_noise else None
        result = denoise_file(
            scan.path,
            target,
            model,
            device,
            noise_map_path=noise,
            sigma_map_path=level,
            varying_noise=varying_noise,
            coils=coils,
            zero_filled=zero_filled,
        )
        metadata = _sidecar(scan, result, noise.relative_to(output_root), time.monotonic() - started)
        if coils != 1:
            metadata["ReceiveCoils"] = coils
        if zero_filled != 1:
            metadata["ZeroFillFactor"] = zero_filled
        notes = {noise: "The noise MRIDenoise removed (input minus the desc-denoised image)."}
        if level is not None:
            metadata["NoiseLevelMap"] = level.relative_to(output_root).as_posix()
            notes[level] = "The noise standard deviation per voxel MRIDenoise estimated and used, in input units."
        for image, note in notes.items():
            write_json_atomic(_json_beside(image), {**metadata, "Description": note})
        write_json_atomic(sidecar, metadata)  # last: its presence marks the scan finished
    except MRIDenoiseError as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return ScanRecord(str(scan.relative), "failed", error=message, worker=worker)
    return ScanRecord(
        str(scan.relative),
        "done",
        str(target.relative_to(output_root)),
        round(time.monotonic() - started, 2),
        "",
        worker,
    )


def _json_beside(image: Path) -> Path:
    return image.with_name(image.name.removesuffix(".nii.gz") + ".json")


def _sidecar(scan: Scan, result, noise: Path, seconds: float) -> dict[str, object]:
    from .models.catalog import load_catalog

    entry = load_catalog().get(result.model_id)
    return {
        **source_metadata(scan),
        "Description": "Denoised by MRIDenoise; the removed noise (input minus output) is the desc-noise image.",
        "Sources": [f"bids:raw:{scan.relative.as_posix()}"],
        "SourceRelativePath": scan.relative.as_posix(),
        "NoiseMap": noise.as_posix(),
        "Model": result.model_id,
        "ModelSHA256": entry.sha256,
        "Sigma": result.sigma[0] if len(result.sigma) == 1 else result.sigma,
        "SigmaEstimated": result.sigma_estimated,
        "Device": result.device,
        "Seconds": round(seconds, 2),
        "SoftwareVersion": __version__,
    }


def run_participant(
    bids_dir: str | Path,
    output_dir: str | Path,
    participants: list[str] | None = None,
    sessions: list[str] | None = None,
    datatypes: list[str] | None = None,
    suffixes: list[str] | None = None,
    model: str | None = None,
    device: str = "auto",
    workers: int | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    report: Callable[[ScanRecord, int, int], None] = lambda record, done, total: None,
    varying_noise: bool = False,
    coils: int = 1,
    zero_filled: float = 1.0,
) -> list[ScanRecord]:
    """Denoise every matching scan of a BIDS dataset into ``output_dir`` (BIDS derivatives) on Dask.

    ``scheduler`` is the address of an existing Dask cluster; otherwise a local cluster of
    ``workers`` processes (default :func:`default_workers`) runs on this machine. ``report`` is called
    once per finished scan with its record and the counts so far. ``varying_noise``, ``coils``,
    ``zero_filled``: see :func:`denoise_scan`.
    """
    from dask.distributed import Client, LocalCluster, as_completed

    from .bands import check_zero_fill
    from .noise import check_coils

    logging.getLogger("distributed").setLevel(logging.WARNING)  # Dask's own chatter is not the user's business
    check_coils(coils)  # before any scan: every one would fail alike
    check_zero_fill(zero_filled)
    scans = find_scans(bids_dir, participants, sessions, datatypes, suffixes)
    if not scans:
        raise InputError(f"no scans in {bids_dir} match the filters")
    output_root = Path(output_dir).resolve()
    output_root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output_root / "dataset_description.json", dataset_description(__version__, Path(bids_dir)))
    count = workers or default_workers(device)
    threads = max(1, (os.cpu_count() or 1) // count) if scheduler is None and device != "cuda" else 0
    cluster = (
        None
        if scheduler
        else LocalCluster(n_workers=count, threads_per_worker=1, processes=True, silence_logs=logging.WARNING)
    )
    records: list[ScanRecord] = []
    with Client(scheduler or cluster) as client:
        futures = client.map(
            denoise_scan,
            scans,
            output_root=output_root,
            model=model,
            device=device,
            overwrite=overwrite,
            threads=threads,
            varying_noise=varying_noise,
            coils=coils,
            zero_filled=zero_filled,
            retries=RETRIES,
            pure=False,
        )
        by_key = {future.key: scan for future, scan in zip(futures, scans, strict=True)}
        for future in as_completed(futures):
            try:
                record = future.result()
            except Exception as error:  # the task itself died (its worker killed RETRIES + 1 times)
                record = ScanRecord(str(by_key[future.key].relative), "failed", error=f"worker lost: {error}")
            records.append(record)
            _append_log(output_root, record)
            report(record, len(records), len(scans))
    if cluster is not None:
        cluster.close()
    return records


def default_workers(device: str = "auto") -> int:
    """One worker per GPU when there are GPUs, else one per four CPU cores (each worker uses those cores)."""
    if device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return torch.cuda.device_count()
    return max(1, (os.cpu_count() or 1) // 4)


def _append_log(output_root: Path, record: ScanRecord) -> None:
    path = output_root / LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as stream:
        stream.write(json.dumps({**asdict(record), "time": time.time()}) + "\n")


def latest_records(output_root: Path) -> dict[str, dict[str, object]]:
    """The last logged outcome of each scan."""
    path = Path(output_root) / LOG
    records: dict[str, dict[str, object]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                records[str(record["scan"])] = record
    return records


def run_group(bids_dir: str | Path, output_dir: str | Path) -> Path:
    """Write ``report.html``: one row and one picture (input | output | removed noise) per scan, then the failures."""
    import html

    import numpy as np

    from .io import read_volume
    from .viz import save_slice_panel

    output_root = Path(output_dir).resolve()
    rows, failures = [], []
    for relative, record in sorted(latest_records(output_root).items()):
        if record["status"] == "failed":
            failures.append((relative, str(record["error"])))
            continue
        output = output_root / str(record["output"])
        sidecar = json.loads(output.with_name(output.name.removesuffix(".nii.gz") + ".json").read_text())
        figure = output_root / "figures" / (output.name.removesuffix(".nii.gz") + ".png")
        if not figure.exists():
            figure.parent.mkdir(parents=True, exist_ok=True)
            frames = [
                read_volume(p).array for p in (Path(bids_dir) / relative, output, output_root / sidecar["NoiseMap"])
            ]
            frames = [a[..., 0] if a.ndim == 4 else a for a in frames]
            save_slice_panel(
                list(
                    zip(
                        ("input", "denoised", "removed noise"), [np.asarray(a, np.float32) for a in frames], strict=True
                    )
                ),
                figure,
                signed=("removed noise",),
            )
        rows.append(
            f"<tr><td>{html.escape(relative)}</td><td>{html.escape(str(sidecar['Model']))}</td>"
            f"<td>{sidecar['Sigma'] if not isinstance(sidecar['Sigma'], list) else 'per volume'}</td>"
            f"<td>{html.escape(str(sidecar['Device']))}</td><td>{sidecar['Seconds']}</td>"
            f"<td><img src='figures/{figure.name}' width='480'></td></tr>"
        )
    failed = "".join(f"<li>{html.escape(scan)}: {html.escape(error)}</li>" for scan, error in failures)
    report = output_root / "report.html"
    report.write_text(
        "<html><head><meta charset='utf-8'><title>MRIDenoise report</title></head><body>"
        f"<h1>MRIDenoise: {len(rows)} scans denoised, {len(failures)} failed</h1>"
        "<table border='1'><tr><th>scan</th><th>model</th><th>sigma</th><th>device</th><th>seconds</th>"
        f"<th>input | denoised | removed noise</th></tr>{''.join(rows)}</table>"
        f"<h2>Failures</h2><ul>{failed or '<li>none</li>'}</ul></body></html>\n"
    )
    return report

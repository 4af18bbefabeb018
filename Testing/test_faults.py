"""Fault injection: the CLI run as a user runs it, against broken inputs, full disks, signals and races.

Every refused case checks the same contract: a non-zero exit, one line on stderr (no traceback), no
output, the input and its sidecar files unchanged (by hash), and no temporary file left behind.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MRIDenoiseLib.errors import Cancelled
from MRIDenoiseLib.io import cast_for_output, read_volume, write_volume
from MRIDenoiseLib.models.catalog import USER_CATALOG_NAME, load_catalog
from MRIDenoiseLib.models.paths import cache_dir
from MRIDenoiseLib.progress import CancelToken
from MRIDenoiseLib.volume import DiffusionInfo, Volume

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # every case runs the CLI in child processes (about 4 s each on 2 cores)


def _cli(*arguments: str, limit_file_bytes: int | None = None, **popen) -> subprocess.CompletedProcess:
    """``python -m MRIDenoiseLib ...`` in a child process; optionally with a file-size limit (a full disk)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))

    if arguments and arguments[0] in ("denoise", "finetune", "train-consensus"):
        arguments = (*arguments, "--progress", "none")
    return subprocess.run(
        [sys.executable, "-m", "MRIDenoiseLib", *arguments],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        preexec_fn=limit if limit_file_bytes else None,
        **popen,
    )


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _assert_refused(result: subprocess.CompletedProcess, message: str, folder: Path, before: dict[str, str]) -> None:
    """Exit non-zero with one line naming the problem; the folder holds exactly what it held, unchanged."""
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
    assert result.returncode != 0, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert message in lines[0], lines[0]
    assert _hashes(folder) == before, "an input changed, an output or a temporary file was left"
    assert sorted(p.name for p in folder.iterdir()) == sorted(before), "a temporary folder was left"


@pytest.fixture
def scan(tmp_path, colin_crop) -> Path:
    folder = tmp_path / "scan"
    folder.mkdir()
    path = folder / "t1.nii.gz"
    write_volume(Volume(colin_crop[:12]), path)
    return path


# ---- full disk and outputs of one call ------------------------------------------------------------------
def test_full_disk_refuses_cleanly_and_writes_nothing(scan):
    folder = scan.parent
    before = _hashes(folder)
    result = _cli("denoise", str(scan), str(folder / "out.nii"), "--model", "gaussian", limit_file_bytes=50_000)
    _assert_refused(result, "the disk is full or the file size limit was reached", folder, before)


def test_full_tmpfs_refuses_cleanly(scan, tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (the file-size limit test covers a full disk)")
    try:
        result = _cli("denoise", str(scan), str(mount / "out.nii"), "--model", "gaussian")
        _assert_refused(result, "the disk is full", mount, {})
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_noise_map_failure_takes_the_output_back(scan):
    """The output (compressed) is staged fine, the noise map (uncompressed: its voxels plus a header, over the
    limit) fails: neither lands."""
    folder = scan.parent
    before = _hashes(folder)
    size = read_volume(scan).array.size * 4
    result = _cli(
        "denoise", str(scan), str(folder / "out.nii.gz"), "--model", "gaussian", "--noise-map",
        str(folder / "noise.nii"), limit_file_bytes=size,
    )  # fmt: skip
    _assert_refused(result, "could not write noise.nii", folder, before)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["OUT", "--noise-map", "OUT"], "would both write"),
        (["FOLDER"], "is a folder"),
        (["INPUT"], "would overwrite the input"),
        (["OUT", "--sigma", "1e30"], "larger than the image's whole intensity range"),
        (["OUT", "--sigma=-2"], "positive"),
        (["OUT", "--model", "no-such-model"], "unknown model id"),
        (["out.png"], "unsupported file format"),
        (["out.NHDR"], "lower-case .nhdr"),
    ],
)
def test_bad_requests_are_refused_before_any_work(scan, arguments, message):
    folder = scan.parent
    (folder / "FOLDER.nii.gz").mkdir()
    before = _hashes(folder)
    names = {"OUT": str(folder / "out.nii.gz"), "FOLDER": str(folder / "FOLDER.nii.gz"), "INPUT": str(scan)}
    named = [names.get(a, str(folder / a) if a.startswith("out.") else a) for a in arguments]
    result = _cli("denoise", str(scan), *named)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert _hashes(folder) == before and sorted(p.name for p in folder.iterdir()) == sorted([*before, "FOLDER.nii.gz"])


def test_upper_case_suffix_is_written(scan):
    result = _cli("denoise", str(scan), str(scan.parent / "OUT.NII.GZ"), "--model", "gaussian")
    assert result.returncode == 0, result.stderr
    assert read_volume(scan.parent / "OUT.NII.GZ").array.shape == read_volume(scan).array.shape


def test_dwi_sidecars_are_never_overwritten(tmp_path, colin_crop):
    folder = tmp_path / "dwi"
    folder.mkdir()
    table = DiffusionInfo(np.array([0.0, 1000.0, 1000.0]), np.array([[0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]]))
    series = np.stack([colin_crop[:8], 0.6 * colin_crop[:8], 0.5 * colin_crop[:8]], axis=-1)
    write_volume(Volume(series, diffusion=table), folder / "dwi.nii.gz")
    before = _hashes(folder)
    result = _cli("denoise", str(folder / "dwi.nii.gz"), str(folder / "dwi.nii"), "--model", "gaussian")
    _assert_refused(result, "would overwrite the input's dwi.bval", folder, before)


# ---- corrupt and unusual inputs --------------------------------------------------------------------------------
def _corrupt_copies(scan: Path, folder: Path) -> dict[str, Path]:
    data = scan.read_bytes()
    raw = gzip.decompress(data)
    cases = {
        "cut50.nii.gz": data[: len(data) // 2],
        "cut90.nii.gz": data[: len(data) * 9 // 10],
        "truncated.nii": raw[: len(raw) - 1000],
        "header-only.nii": raw[:348],
        "flipped.nii.gz": data[:200] + bytes([data[200] ^ 0xFF]) + data[201:],
        "empty.nii.gz": b"",
    }
    paths = {}
    for name, content in cases.items():
        paths[name] = folder / name
        paths[name].write_bytes(content)
    return paths


@pytest.mark.parametrize(
    "name", ["cut50.nii.gz", "cut90.nii.gz", "truncated.nii", "header-only.nii", "flipped.nii.gz", "empty.nii.gz"]
)
def test_corrupt_nifti_is_refused(scan, tmp_path, name):
    folder = tmp_path / "corrupt"
    folder.mkdir()
    path = _corrupt_copies(scan, folder)[name]
    before = _hashes(folder)
    result = _cli("denoise", str(path), str(folder / "out.nii.gz"), "--model", "gaussian")
    message = "is not a NIfTI file" if name == "empty.nii.gz" else name
    _assert_refused(result, message, folder, before)
    assert "corrupt" in result.stderr or "truncated" in result.stderr or "not a NIfTI" in result.stderr


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_nifti_voxels_are_refused(tmp_path, colin_crop, bad):
    folder = tmp_path / "nan"
    folder.mkdir()
    array = colin_crop[:8].copy()
    array[3, 40, 40] = bad
    sitk.WriteImage(sitk.GetImageFromArray(array), str(folder / "bad.nii.gz"))
    before = _hashes(folder)
    result = _cli("denoise", str(folder / "bad.nii.gz"), str(folder / "out.nii.gz"), "--model", "gaussian")
    _assert_refused(result, "contains 1 NaN or infinite voxel values", folder, before)


def test_signed_and_phase_data_get_pointed_messages(tmp_path, colin_crop):
    folder = tmp_path / "signed"
    folder.mkdir()
    write_volume(Volume(colin_crop[:8] - float(colin_crop.mean())), folder / "centred.nii.gz")
    phase = np.angle(np.exp(1j * np.linspace(0, 40, colin_crop[:8].size))).reshape(colin_crop[:8].shape)
    write_volume(Volume(phase.astype(np.float32)), folder / "phase.nii.gz")
    before = _hashes(folder)
    result = _cli("denoise", str(folder / "centred.nii.gz"), str(folder / "out.nii.gz"))
    _assert_refused(result, "assumes magnitude data", folder, before)
    result = _cli("denoise", str(folder / "phase.nii.gz"), str(folder / "out.nii.gz"))
    _assert_refused(result, "looks like a phase or other signed image", folder, before)
    kept = _cli("denoise", str(folder / "centred.nii.gz"), str(folder / "out.nii.gz"), "--model", "gaussian")
    assert kept.returncode == 0 and read_volume(folder / "out.nii.gz").array.min() < 0  # the sign is kept


def test_dicom_series_with_a_missing_slice_is_refused(tmp_path, colin_crop):
    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for index in [i for i in range(8) if i != 4]:  # slice 4 lost in transfer
        frame = sitk.GetImageFromArray(colin_crop[index : index + 1].astype(np.int16))
        frame.SetSpacing((1.0, 1.0, 2.0))
        frame.SetOrigin((0.0, 0.0, 2.0 * index))
        for tag, value in (("0020|0032", f"0\\0\\{2.0 * index}"), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                           ("0020|0013", str(index)), ("0008|0060", "MR"), ("0020|000e", "1.2.3.4.5")):  # fmt: skip
            frame.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{index:03d}.dcm"))
        writer.Execute(frame)
    result = _cli("denoise", str(folder), str(tmp_path / "out.nii.gz"), "--model", "gaussian")
    assert result.returncode == 1 and "not evenly spaced" in result.stderr and not (tmp_path / "out.nii.gz").exists()


def test_series_metadata_and_layout_survive(tmp_path, colin_crop):
    frames = [sitk.GetImageFromArray(colin_crop[:6] * (1 + i)) for i in range(3)]
    series = sitk.JoinSeries(frames)
    series.SetSpacing((1.0, 1.0, 1.0, 2.5))
    series.SetMetaData("ITK_FileNotes", "resting state, TR 2.5 s")
    zero = sitk.GetImageFromArray(np.zeros_like(colin_crop[:6]))
    sitk.WriteImage(series, str(tmp_path / "fmri.nii.gz"))
    blank = sitk.JoinSeries([*frames, zero])
    sitk.WriteImage(blank, str(tmp_path / "blank.nii.gz"))
    for source, target in (("fmri.nii.gz", "out.nii.gz"), ("fmri.nii.gz", "out.nrrd"), ("blank.nii.gz", "b.nii.gz")):
        result = _cli("denoise", str(tmp_path / source), str(tmp_path / target), "--model", "gaussian")
        assert result.returncode == 0, result.stderr
    written = sitk.ReadImage(str(tmp_path / "out.nii.gz"))
    assert written.GetSpacing()[3] == 2.5 and written.GetMetaData("descrip") == "resting state, TR 2.5 s"
    assert sitk.ReadImage(str(tmp_path / "out.nrrd")).GetDimension() == 4
    blank_out = read_volume(tmp_path / "b.nii.gz").array
    assert np.all(blank_out[..., 3] == 0) and blank_out[..., 0].std() > 0


def test_integer_outputs_saturate_instead_of_wrapping():
    for dtype in (np.int32, np.uint32, np.int64, np.uint64, np.int16):
        limits = np.iinfo(dtype)
        values = np.array([3e19, -3e19, float(limits.max) + 10, 1.4], np.float64)
        cast = cast_for_output(values.astype(np.float32), np.dtype(dtype))
        assert cast[0] == limits.max and cast[1] == limits.min and cast[2] == limits.max and cast[3] == 1, dtype


def test_api_takes_a_plain_array():
    from MRIDenoiseLib.pipeline import denoise_volume

    rng = np.random.default_rng(0)
    result = denoise_volume(50 + 10 * rng.random((8, 24, 24), dtype=np.float32), model="gaussian")
    assert result.volume.array.shape == (8, 24, 24)


# ---- cancellation and signals ---------------------------------------------------------------------------------
def test_nlm_honours_cancel_within_one_slab():
    from MRIDenoiseLib.denoisers.classical import NLM_SLAB, NonLocalMeans

    volume = (np.random.default_rng(1).random((4 * NLM_SLAB, 24, 24)) * 100).astype(np.float32)
    cancel, reports = CancelToken(), []

    def progress(fraction: float, message: str) -> None:
        reports.append(fraction)
        cancel.cancel()  # the user presses Cancel as soon as the first slab is done

    with pytest.raises(Cancelled):
        NonLocalMeans().denoise(volume, 10.0, progress=progress, cancel=cancel)
    assert reports == [0.25]


def test_an_interrupt_during_compute_leaves_nothing_behind(tmp_path, colin_slab):
    folder = tmp_path / "long"
    folder.mkdir()
    scan = folder / "t1.nii.gz"
    write_volume(Volume(colin_slab.array[:48, 40:168, 30:158].astype(np.float32)), scan)  # three slabs of nlm
    before = _hashes(folder)
    process = subprocess.Popen(
        [sys.executable, "-m", "MRIDenoiseLib", "denoise", str(scan), str(folder / "out.nii.gz"), "--model", "nlm",
         "--progress", "json"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    for line in process.stdout:  # wait for the first progress report of the filter itself
        if "non-local means" in line:
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert process.returncode == 130 and len(lines) == 1 and "cancelled" in lines[0], stderr
    assert _hashes(folder) == before and sorted(p.name for p in folder.iterdir()) == sorted(before)


def test_a_killed_writer_leaves_staging_that_the_next_run_removes(scan):
    folder = scan.parent
    stale = folder / ".mridenoise-staging-999999-x"  # a process id no process has here
    stale.mkdir()
    (stale / "out.nii.gz").write_bytes(b"half")
    result = _cli("denoise", str(scan), str(folder / "out.nii.gz"), "--model", "gaussian")
    assert result.returncode == 0 and not stale.exists()


# ---- catalogue and cache ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"{not json", b'{"models": 3}', b'{"models": [{"id": "x"}]}', b"[]", b"\xff\xfe"])
def test_a_malformed_user_catalogue_does_not_break_the_cli(scan, content):
    path = cache_dir() / USER_CATALOG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    listing = _cli("models", "list")
    assert listing.returncode == 0 and "Traceback" not in listing.stderr and "ignoring" in listing.stderr
    result = _cli("denoise", str(scan), str(scan.parent / "out.nii.gz"), "--model", "gaussian")
    assert result.returncode == 0, result.stderr
    assert path.read_bytes() == content  # left for the user to repair, never overwritten


def test_concurrent_imports_of_one_file_all_succeed(tmp_path):
    entry = next(e for e in load_catalog() if e.kind == "network" and e.size and e.size < 100_000)
    source = REPO / "Resources" / "Models" / entry.weights
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "MRIDenoiseLib", "models", "import", entry.id, str(source)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in processes]
    assert all(code == 0 for code, _ in results), results
    cached = list((cache_dir() / "weights").rglob("*"))
    files = [p for p in cached if p.is_file()]
    assert [p.name for p in files] == [entry.weights]  # no .part left
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == entry.sha256


def test_corrupt_bundled_weights_are_called_corrupt(tmp_path, monkeypatch):
    from MRIDenoiseLib.errors import ModelError
    from MRIDenoiseLib.models import store

    entry = load_catalog().get("cdae")
    bad = tmp_path / "models"
    bad.mkdir()
    (bad / entry.weights).write_bytes(b"corrupt")
    monkeypatch.setattr(store, "bundled_models_dir", lambda: bad)
    with pytest.raises(ModelError, match="checksum mismatch"):
        store.resolve_weights(entry)


def test_evaluate_json_is_strict_json(scan):
    result = _cli("evaluate", "--clean", str(scan), "--test", str(scan), "--json")
    scores = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))
    assert result.returncode == 0 and scores["psnr_foreground"] is None and scores["ssim_foreground"] == 1.0


def test_interrupt_while_starting_is_one_line_or_silent(scan):
    """Ctrl-C at once, while the interpreter and the libraries load: never a traceback, never an output."""
    folder = scan.parent
    before = _hashes(folder)
    process = subprocess.Popen(
        [sys.executable, "-m", "MRIDenoiseLib", "denoise", str(scan), str(folder / "out.nii.gz")],
        cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode in (130, -signal.SIGINT), stderr  # -SIGINT: it came before Python was up
    assert "Traceback" not in stderr and len([line for line in stderr.splitlines() if line.strip()]) <= 1
    assert _hashes(folder) == before

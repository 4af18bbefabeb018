"""The command line: real files in, real files out; every bad input fails cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from test_models import network_entry, tiny_weights

from MRIDenoiseLib.cli import main
from MRIDenoiseLib.io import read_volume, write_volume
from MRIDenoiseLib.models.catalog import register_user_model
from MRIDenoiseLib.volume import Volume


def run(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def noisy_oblique(tmp_path, colin_crop, oblique_geometry):
    """A real MRI crop with simulated noise, written with oblique anisotropic geometry."""
    path = tmp_path / "noisy.nii.gz"
    noisy = colin_crop + np.random.default_rng(0).normal(0, 6, colin_crop.shape).astype(np.float32)
    write_volume(Volume(np.abs(noisy), oblique_geometry, source_dtype=np.dtype(np.int16)), path, keep_dtype=True)
    return path


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_denoise_keeps_geometry_within_1e6(capsys, tmp_path, noisy_oblique, suffix):
    source = tmp_path / f"input{suffix}"
    write_volume(read_volume(noisy_oblique), source)
    before = source.read_bytes()
    output = tmp_path / f"output{suffix}"
    code, out, err = run(capsys, "denoise", source, output, "--model", "gaussian", "--progress", "none")
    assert code == 0, err
    original, denoised = read_volume(source), read_volume(output)
    for field in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(getattr(denoised.geometry, field), getattr(original.geometry, field), atol=1e-6)
    assert denoised.array.dtype == np.float32 and denoised.array.shape == original.array.shape
    assert source.read_bytes() == before
    assert "sigma" in out


def test_keep_dtype_and_noise_map(capsys, tmp_path, noisy_oblique):
    output, noise = tmp_path / "out.nrrd", tmp_path / "noise.nrrd"
    code, _, err = run(
        capsys,
        "denoise",
        noisy_oblique,
        output,
        "--model",
        "gaussian",
        "--keep-dtype",
        "--noise-map",
        noise,
        "--progress",
        "none",
    )
    assert code == 0, err
    assert read_volume(output).array.dtype == np.int16
    removed = read_volume(noise).array
    assert removed.std() > 1.0  # the map holds the noise that was taken out


def test_json_progress_lines_end_with_a_result(capsys, tmp_path, noisy_oblique):
    code, out, _ = run(
        capsys, "denoise", noisy_oblique, tmp_path / "o.nii.gz", "--model", "adf", "--progress", "json", "--sigma", "6"
    )
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    fractions = [line["progress"] for line in lines if "progress" in line]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert lines[-1]["result"]["sigma"] == 6.0 and lines[-1]["result"]["sigma_estimated"] is False


def _write_image(path, array, vector=False):
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=vector), str(path))


def _bad_inputs(tmp_path, noisy_oblique):
    cases = {}
    cases["missing input"] = (["denoise", tmp_path / "nope.nii.gz", tmp_path / "o.nii.gz"], "not found")
    (tmp_path / "scan.jpg").write_bytes(b"\xff\xd8")
    cases["unsupported format"] = (["denoise", tmp_path / "scan.jpg", tmp_path / "o.nii.gz"], "unsupported file format")
    _write_image(tmp_path / "flat.nii.gz", np.ones((20, 20), np.float32))
    cases["2-D input"] = (["denoise", tmp_path / "flat.nii.gz", tmp_path / "o.nii.gz"], "2-D")
    _write_image(tmp_path / "five.nrrd", np.ones((4, 5, 6, 7, 2), np.float32), vector=True)
    cases["5-D input"] = (["denoise", tmp_path / "five.nrrd", tmp_path / "o.nii.gz"], "5-D")
    nan = np.ones((8, 8, 8), np.float32)
    nan[2, 2, 2] = np.nan
    _write_image(tmp_path / "nan.mha", nan)  # NIfTI writers may turn NaN into 0; MetaImage keeps it
    cases["NaN values"] = (["denoise", tmp_path / "nan.mha", tmp_path / "o.nii.gz"], "NaN")
    inf = np.ones((8, 8, 8), np.float32)
    inf[0, 0, 0] = np.inf
    _write_image(tmp_path / "inf.nrrd", inf)
    cases["Inf values"] = (["denoise", tmp_path / "inf.nrrd", tmp_path / "o.nii.gz"], "infinite")
    _write_image(tmp_path / "constant.nii.gz", np.full((8, 8, 8), 7, np.float32))
    cases["constant volume"] = (["denoise", tmp_path / "constant.nii.gz", tmp_path / "o.nii.gz"], "constant")
    _write_image(tmp_path / "empty.nii.gz", np.zeros((8, 8, 8), np.float32))
    cases["empty (all-zero) volume"] = (["denoise", tmp_path / "empty.nii.gz", tmp_path / "o.nii.gz"], "constant")
    cases["output equals input"] = (["denoise", noisy_oblique, noisy_oblique], "overwrite the input")
    cases["missing output folder"] = (["denoise", noisy_oblique, tmp_path / "no" / "o.nii.gz"], "does not exist")
    cases["unknown model"] = (["denoise", noisy_oblique, tmp_path / "o.nii.gz", "--model", "nope"], "unknown model id")
    cases["bad sigma"] = (["denoise", noisy_oblique, tmp_path / "o.nii.gz", "--sigma", "-1"], "positive")
    cases["unsupported output format"] = (["denoise", noisy_oblique, tmp_path / "o.png"], "unsupported file format")
    digest = tiny_weights(tmp_path / "mine.safetensors")
    entry = network_entry("mine", digest)
    entry.weights = str(tmp_path / "mine.safetensors")
    register_user_model(entry)
    (tmp_path / "mine.safetensors").write_bytes(b"corrupted")
    cases["checksum mismatch"] = (
        ["denoise", noisy_oblique, tmp_path / "o.nii.gz", "--model", "mine"],
        "sha256 mismatch",
    )
    return cases


BAD_INPUTS = [
    "missing input",
    "unsupported format",
    "2-D input",
    "5-D input",
    "NaN values",
    "Inf values",
    "constant volume",
    "empty (all-zero) volume",
    "output equals input",
    "missing output folder",
    "unknown model",
    "bad sigma",
    "unsupported output format",
    "checksum mismatch",
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_fails_with_one_line_and_writes_nothing(capsys, tmp_path, noisy_oblique, case):
    arguments, expected = _bad_inputs(tmp_path, noisy_oblique)[case]
    before = set(os.listdir(tmp_path))
    input_bytes = noisy_oblique.read_bytes()
    code, _, err = run(capsys, *arguments, "--progress", "none")
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mridenoise: error:"), err
    assert expected in lines[0]
    assert set(os.listdir(tmp_path)) == before
    assert noisy_oblique.read_bytes() == input_bytes


@pytest.mark.skipif(sys.platform != "linux" or not os.path.isdir("/proc/self"), reason="needs a read-only folder")
def test_unwritable_output_folder(capsys, noisy_oblique):
    code, _, err = run(capsys, "denoise", noisy_oblique, "/proc/self/out.nii.gz", "--progress", "none")
    assert code == 1 and "not writable" in err


@pytest.mark.slow
def test_simulate_and_evaluate(capsys, tmp_path):
    from conftest import SAMPLE, SAMPLE_MASK

    noisy = tmp_path / "noisy.nii.gz"
    code, out, err = run(
        capsys, "simulate", SAMPLE, noisy, "--noise", "rician", "--level", "5", "--seed", "3", "--mask", SAMPLE_MASK
    )
    assert code == 0, err
    record = json.loads(out)
    assert record["sigma"] > 0 and record["seed"] == 3
    code, out, _ = run(capsys, "evaluate", "--clean", SAMPLE, "--test", noisy, "--mask", SAMPLE_MASK, "--json")
    scores = json.loads(out)
    peak = read_volume(SAMPLE).array.max()
    expected = 20 * np.log10(peak / record["sigma"])  # Gaussian approximation of the noise
    assert code == 0 and abs(scores["psnr_foreground"] - expected) < 1.5 and 0 < scores["ssim_foreground"] < 1
    scanner_like = tmp_path / "scanner.nii.gz"
    code, out, err = run(
        capsys, "simulate", SAMPLE, scanner_like, "--level", "5", "--coils", "8", "--zero-filled", "--varying", "0.5"
    )
    record = json.loads(out)
    assert code == 0 and (record["coils"], record["zero_filled"], record["varying"]) == (8, True, 0.5), err
    assert not np.allclose(read_volume(scanner_like).array, read_volume(noisy).array)


def test_models_commands(capsys):
    code, out, _ = run(capsys, "models", "list", "--json")
    rows = json.loads(out)
    assert code == 0 and sum(row["default"] for row in rows) == 1
    code, out, _ = run(capsys, "models", "info", "nlm")
    assert code == 0 and json.loads(out)["kind"] == "classical"
    code, out, _ = run(capsys, "models", "verify")
    assert code == 0


def test_module_entry_point_and_help():
    completed = subprocess.run(
        [sys.executable, "-m", "MRIDenoiseLib", "denoise", "--help"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        check=False,
    )
    assert completed.returncode == 0 and "--noise-map" in completed.stdout
    for command in (
        ["models", "list", "--help"],
        ["simulate", "--help"],
        ["evaluate", "--help"],
        ["demo", "--help"],
        ["train", "--help"],
    ):
        assert main_help(command)


def main_help(command):
    try:
        main(command)
    except SystemExit as exit_:
        return exit_.code == 0
    return False

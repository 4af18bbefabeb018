"""``--adapt``: adapting the network to the scan before denoising it, decided per input, held in memory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import StepClock

from MRIDenoiseLib.adaptation import AUTO_MINUTES, ScanAdapter, decide, parse_adapt
from MRIDenoiseLib.cli import main
from MRIDenoiseLib.denoisers.network import NetworkDenoiser
from MRIDenoiseLib.denoisers.refinement import WienerRefined
from MRIDenoiseLib.errors import Cancelled, InputError
from MRIDenoiseLib.io import read_volume, write_volume
from MRIDenoiseLib.models.catalog import load_catalog
from MRIDenoiseLib.models.paths import cache_dir
from MRIDenoiseLib.noise import add_noise, sigma_for_level
from MRIDenoiseLib.pipeline import denoise_file, denoise_volume, load_denoiser
from MRIDenoiseLib.progress import CancelToken
from MRIDenoiseLib.volume import Volume


def _noisy(clean: np.ndarray, percent: float, seed: int = 3) -> Volume:
    return Volume(add_noise(clean, sigma_for_level(clean, percent), "rician", seed))


@pytest.mark.parametrize(("text", "setting"), [("off", "off"), ("AUTO", "auto"), ("2.5", 2.5), (0.5, 0.5)])
def test_the_switch_reads_off_auto_or_minutes(text, setting):
    assert parse_adapt(text) == setting


@pytest.mark.parametrize(
    ("text", "message"), [("soon", "off, auto or a number"), ("0", "positive"), ("-1", "positive")]
)
def test_a_bad_switch_is_refused(text, message):
    with pytest.raises(InputError, match=message):
        parse_adapt(text)


NETWORK_ALONE = "mridenoise-rician-2.5d-v11"  # the default's network, without its Wiener step


def test_auto_adapts_only_where_the_measurement_says_it_pays(colin_crop):
    low, high = _noisy(colin_crop, 3), _noisy(colin_crop, 20)
    assert decide(low, NETWORK_ALONE, "auto", None).minutes == AUTO_MINUTES
    assert decide(_noisy(colin_crop, 10), NETWORK_ALONE, "auto", None).minutes == AUTO_MINUTES
    skipped = decide(high, NETWORK_ALONE, "auto", None)
    assert skipped.minutes is None and "above 12 %" in skipped.reason
    faint = decide(_noisy(colin_crop, 1), NETWORK_ALONE, "auto", None)  # the blind level is not to be trusted
    assert faint.minutes is None and "below 2.5 %" in faint.reason
    eight_bit = Volume(np.round(255 * low.array / low.array.max()))
    assert decide(eight_bit, NETWORK_ALONE, "auto", None).reason.startswith("8-bit")
    assert decide(low, NETWORK_ALONE, "off", None).minutes is None
    assert decide(high, NETWORK_ALONE, 2.0, None).minutes == 2.0  # minutes asked for are given whatever the level


def test_auto_adapts_the_default_whose_step_then_refines_the_adapted_network(colin_crop):
    low = _noisy(colin_crop, 3)
    default = load_catalog().get(load_catalog().default_id)
    assert default.refinement is not None
    assert decide(low, None, "auto", None).minutes == AUTO_MINUTES
    adapted = ScanAdapter(0.05, clock=StepClock(1.0))(low, None, "cpu", None, lambda *_: None, None)
    staged = adapted.denoiser
    assert isinstance(staged, WienerRefined) and staged.model_id == default.id
    shipped, _ = load_denoiser(None, "cpu", refine=False)
    assert isinstance(shipped, NetworkDenoiser)
    adapted_weights = [p.detach() for p in staged.inner.network.parameters()]
    changed = any(not torch.equal(a, b) for a, b in zip(adapted_weights, shipped.network.parameters(), strict=True))
    # the step's pilot is the adapted network: changed wherever the adaptation kept better weights
    report = adapted.report
    assert changed == (report["held_out_loss_after"] < report["held_out_loss_before"])


def test_what_cannot_be_adapted_is_skipped_by_auto_and_refused_when_asked_for(colin_crop):
    scan = _noisy(colin_crop, 3)
    series = Volume(np.stack([scan.array, scan.array], axis=-1))
    for volume, model, reason in ((series, None, "not on series"), (scan, "nlm", "not a network")):
        decision = decide(volume, model, "auto", None)
        assert decision.minutes is None and reason in decision.reason
        with pytest.raises(InputError, match=f"cannot adapt: .*{reason}"):
            decide(volume, model, 1.0, None)


@pytest.mark.slow
def test_an_adapted_denoise_keeps_no_model_and_leaves_the_input_alone(colin_crop):
    scan = _noisy(colin_crop, 3)
    before = scan.array.copy()
    shipped = denoise_volume(scan, device="cpu")
    adapted = denoise_volume(scan, device="cpu", adapter=ScanAdapter(0.05, clock=StepClock(0.5)))
    report = adapted.adaptation
    # the clock advances 0.5 s per step: six steps use up the 3 s budget
    assert report["adapted"] is True and report["steps"] == 6
    assert report["held_out_loss_after"] <= report["held_out_loss_before"]  # the best weights are kept
    assert adapted.model_id == shipped.model_id == load_catalog().default_id
    assert adapted.summary()["adaptation"] == report and "adaptation" not in shipped.summary()
    assert adapted.wiener_step is not None  # the default's step ran its measurement on the adapted network
    if report["held_out_loss_after"] < report["held_out_loss_before"]:
        assert not np.allclose(adapted.volume.array, shipped.volume.array, atol=1e-4)
    np.testing.assert_array_equal(scan.array, before)
    assert not any(entry.user for entry in load_catalog())
    assert not (cache_dir() / "user-models").exists()


@pytest.mark.slow
def test_cancel_during_adaptation_writes_nothing(tmp_path, colin_crop):
    source, output = tmp_path / "scan.nii.gz", tmp_path / "out.nii.gz"
    write_volume(_noisy(colin_crop, 3), source)
    cancel = CancelToken()
    reports: list[float] = []

    def progress(fraction: float, message: str) -> None:
        reports.append(fraction)
        if len(reports) > 4:
            cancel.cancel()

    adapter = ScanAdapter(1.0, clock=StepClock(0.5))
    with pytest.raises(Cancelled):
        denoise_file(
            source,
            output,
            device="cpu",
            noise_map_path=tmp_path / "noise.nii.gz",
            progress=progress,
            cancel=cancel,
            adapter=adapter,
        )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["scan.nii.gz"]
    assert not (cache_dir() / "user-models").exists()


@pytest.mark.slow
def test_the_cli_says_what_auto_decided(tmp_path, colin_crop, capsys):
    source = tmp_path / "scan.nii.gz"
    write_volume(_noisy(colin_crop, 20), source)
    assert main(["denoise", str(source), str(tmp_path / "plain.nii.gz"), "--progress", "none"]) == 0
    capsys.readouterr()
    assert main(["denoise", str(source), str(tmp_path / "auto.nii.gz"), "--adapt", "auto", "--progress", "json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    report = lines[-1]["result"]["adaptation"]
    assert report["adapted"] is False and "above 12 %" in report["reason"]
    # not adapted: the model as shipped, to the bit
    np.testing.assert_array_equal(
        read_volume(tmp_path / "auto.nii.gz").array, read_volume(tmp_path / "plain.nii.gz").array
    )
    assert main(["denoise", str(source), str(tmp_path / "x.nii.gz"), "--adapt", "soon"]) == 1
    assert "--adapt takes off, auto or a number of minutes" in capsys.readouterr().err
    assert not (tmp_path / "x.nii.gz").exists()

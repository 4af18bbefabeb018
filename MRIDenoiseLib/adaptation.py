"""Adapting the network to the scan being denoised, as a switch of the denoise call (``--adapt``).

``off`` denoises with the model as shipped. A number of minutes runs the product's own
self-supervised fine-tuning (``training/finetune.py``, r2r) on the input for that long, in memory,
and denoises with the adapted network under the model's own second stage, if it names one (the
default's Wiener step): no user model is registered and nothing is written but the call's outputs.
``auto`` adapts for :data:`AUTO_MINUTES` where the measurement (``benchmarks/adapt.py``,
results/adapt.md) says it pays, and says why it did or did not:

- at estimated noise levels from :data:`AUTO_LOWEST_LEVEL` to :data:`AUTO_HIGHEST_LEVEL` % of the
  brightest tissue: there one minute gained the default (its step kept) on 23 of the 24 draws at 3-10 %
  of eight references (-0.22 to +0.24 dB, +0.11 on average); it does not pay at 15 % (-0.60 to +0.25 dB,
  -0.02 on average; in an earlier measurement up to -3.5 dB at 30 %) nor at 1 % (-0.62 to +0.67 dB, -0.02
  on average, lost on five of eight), where the blind level also counts the scan's anatomy and own noise,
  so the recorrupted pairs the fine-tuning learns from no longer carry independent noise;
- not on 8-bit data (integers spanning at most 256 values), where the self-supervised loss takes
  quantisation for noise (the FLAIR kept as 8-bit lost 0.91 dB at 3 %);
- not on a series (diffusion, fMRI) or with a classical filter: the fine-tuning adapts networks
  for 3-D scalar volumes. Asked for explicitly, these are refused with the reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import InputError
from .masks import brightest_tissue_mean
from .models.catalog import load_catalog
from .noise import estimate_sigma
from .pipeline import Adapted, chosen_model, with_second_stage
from .progress import CancelToken, ProgressCallback
from .training.budget import Clock
from .training.finetune import adapt_to_scan
from .volume import Volume

AdaptSetting = Literal["off", "auto"] | float
"""``"off"``, ``"auto"`` or minutes of adaptation."""
AUTO_MINUTES = 1.0
"""How long ``auto`` adapts: the budget benchmarks/results/adapt.md measured."""
AUTO_LOWEST_LEVEL = 2.5
"""``auto`` adapts at estimated noise levels from this (% of the brightest tissue): the quality benchmark's 1 %
draws read 1.0-2.4 % and scored -0.62 to +0.67 dB adapted (-0.02 on average, a minute spent for nothing),
its 3 % draws read 3.0-4.1 % and gained 0.01-0.24 dB, every one of eight."""
AUTO_HIGHEST_LEVEL = 12.0
"""``auto`` adapts at estimated noise levels up to this (% of the brightest tissue): the quality benchmark's
10 % draws read 9.2-11.8 % and gained 0.11-0.24 dB (but the resampled spine, -0.22), its 15 % draws read
13.1-20.7 % and scored -0.60 to +0.25 dB, SSIM down on six of eight."""
QUANTISED_SPAN = 255
"""Integer data spanning at most this many steps is taken as 8-bit."""


def parse_adapt(text: str | float) -> AdaptSetting:
    """``"off"``, ``"auto"`` or a positive number of minutes, from a command line or a caller."""
    if isinstance(text, str) and text.strip().lower() in ("off", "auto"):
        return "off" if text.strip().lower() == "off" else "auto"
    try:
        minutes = float(text)
    except ValueError:
        raise InputError(f"--adapt takes off, auto or a number of minutes, not {text!r}") from None
    if not (np.isfinite(minutes) and minutes > 0):
        raise InputError(f"the adaptation time must be a positive number of minutes, got {text!r}")
    return minutes


@dataclass(frozen=True)
class Decision:
    """How long to adapt (None: not at all) and why."""

    minutes: float | None
    reason: str


def decide(volume: Volume, model: str | None, setting: AdaptSetting, sigma: float | None) -> Decision:
    """What ``setting`` means for this input and model; raises when adaptation is asked for by
    minutes and cannot run. ``sigma`` (the scan's own units) is estimated when None."""
    if setting == "off":
        return Decision(None, "off")
    catalog = load_catalog()
    entry = catalog.get(chosen_model(volume, model, catalog))
    impossible = ""
    if volume.is_series:
        impossible = "adaptation works on 3-D scalar volumes, not on series"
    elif entry.kind != "network" or entry.input != "scalar":
        impossible = f"{entry.id} is not a network for scalar volumes; only those can be adapted"
    if not isinstance(setting, str):
        if impossible:
            raise InputError(f"cannot adapt: {impossible}")
        return Decision(float(setting), f"{setting:g} min asked for")
    if impossible:
        return Decision(None, impossible)
    array = np.asarray(volume.array, np.float32)
    low, high = float(array.min()), float(array.max())
    if high - low <= QUANTISED_SPAN and np.array_equal(array, np.round(array)):
        return Decision(None, "8-bit data: adaptation takes quantisation for noise there")
    level = 100.0 * (sigma if sigma is not None else estimate_sigma(array)) / brightest_tissue_mean(array)
    if level < AUTO_LOWEST_LEVEL:
        return Decision(None, f"noise level {level:.1f} % is below {AUTO_LOWEST_LEVEL:g} %: the shipped model is used")
    if level > AUTO_HIGHEST_LEVEL:
        return Decision(None, f"noise level {level:.1f} % is above {AUTO_HIGHEST_LEVEL:g} %: the shipped model is used")
    return Decision(AUTO_MINUTES, f"noise level {level:.1f} % is within {AUTO_LOWEST_LEVEL:g}-{AUTO_HIGHEST_LEVEL:g} %")


class ScanAdapter:
    """The :class:`MRIDenoiseLib.pipeline.Adapter` behind ``--adapt``: give one to ``denoise_file`` or
    ``denoise_volume`` as ``adapter=ScanAdapter("auto")``.

    ``clock`` is read once per training step (tests inject one, so the number of steps does not
    depend on the machine's speed).
    """

    def __init__(self, setting: str | float = "auto", clock: Clock = time.monotonic) -> None:
        self.setting = parse_adapt(setting)
        self.clock = clock

    def __call__(
        self,
        volume: Volume,
        model: str | None,
        device: str,
        sigma: float | None,
        progress: ProgressCallback,
        cancel: CancelToken | None,
    ) -> Adapted:
        if sigma is None and not volume.is_series:
            sigma = estimate_sigma(np.asarray(volume.array, np.float32))
        decision = decide(volume, model, self.setting, sigma)
        report: dict[str, object] = {"setting": self.setting, "adapted": False, "reason": decision.reason}
        if decision.minutes is None:
            return Adapted(None, report)
        adapted = adapt_to_scan(
            volume,
            model,
            decision.minutes,
            device=device,
            sigma=sigma,
            progress=progress,
            cancel=cancel,
            clock=self.clock,
        )
        report.update(
            adapted=True,
            steps=adapted.fit.steps,
            seconds=round(adapted.seconds, 1),
            held_out_loss_before=adapted.fit.held_out_before,
            held_out_loss_after=adapted.fit.held_out_after,
        )
        return Adapted(with_second_stage(adapted.denoiser, adapted.base), report)

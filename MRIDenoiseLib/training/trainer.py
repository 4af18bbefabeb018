"""Image training on the one loop: the shared image trainer and supervised training (clean/noisy pairs).

Launch one process with ``python -m MRIDenoiseLib train CONFIG`` or several with
``torchrun --nproc-per-node N -m MRIDenoiseLib train CONFIG`` (gloo on CPU, NCCL on CUDA).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import SSIMLoss
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..denoisers.network import NetworkDenoiser
from ..errors import ConfigError
from ..inference import native_bfloat16, uses_noise_level
from ..machine import cpu_summary
from ..metrics import SSIM_K1, SSIM_K2, SSIM_WINDOW, evaluate
from ..models.weights import save_weights
from ..nets import build_network
from ..nets.contract import SliceNetwork
from ..progress import CancelToken
from .config import ConsensusOptimConfig, ImageRunConfig, ScheduleConfig, SupervisedConfig
from .data import PairSampler, load_configured_volumes, validation_cases
from .distributed import init_distributed
from .loop import BEST_PSNR, LoopSettings, Reporting, TrainingLoop, TrainingState
from .losses import rician_mean
from .noisy_scans import MixedSampler, load_noisy_scans
from .transfer import apply_transfer, perceptual_loss

log = logging.getLogger(__name__)


class ImageTrainer:
    """What every image trainer shares, as a task of the one training loop.

    Data (training volumes, a sampler, fixed validation slabs), the network on its device, the
    learning-rate schedule (linear warm-up, then cosine decay), one optimiser step with optional
    bfloat16 autocast, validation by blind denoising, and the run folder's checkpoint. Subclasses
    make the optimiser (:meth:`make_optimizer`) and the loss (:meth:`batch_loss`), or a whole step.
    """

    def __init__(
        self,
        config: ImageRunConfig,
        output_dir: str | Path,
        device: str = "auto",
        show_progress: bool = True,
        cancel: CancelToken | None = None,
        ema_decay: float = 0.0,
        bfloat16: bool = False,
    ) -> None:
        self.config = config
        self.output_dir = Path(output_dir)
        self.distributed = init_distributed()
        self.device = self._device(device)
        self.bfloat16 = bfloat16 and native_bfloat16(self.device)
        if bfloat16 and not self.bfloat16:
            log.warning(
                "%s has no native bfloat16 arithmetic (emulated, it is slower than float32): training in float32",
                hardware_summary(self.device),
            )
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed + self.distributed.rank)
        root = config.data_root()
        self.train_volumes = [
            volume for name in config.data.train for volume in load_configured_volumes(root / name, config.data)
        ]
        self.sampler = self.make_sampler(int(config.model.arguments.get("context", 2)))
        self.validation = (
            validation_cases(
                [
                    volume
                    for name in config.data.validation
                    for volume in load_configured_volumes(root / name, config.data)
                ],
                config.data,
                config.seed,
            )
            if self.distributed.is_main
            else []
        )
        network = build_network(config.model.architecture, config.model.arguments)
        if not isinstance(network, SliceNetwork):
            raise ConfigError(f"{config.model.architecture} is not an image network; train it with kind 'qspace'")
        self.network: SliceNetwork = network
        self.start_from_pretrained()
        # channels-last activations are faster; torch's stubs omit the memory_format keyword of Module.to
        self.network.to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.noise_level_input = uses_noise_level(self.network)
        self.model = self.distribute(self.training_module())
        self.build_companions()
        self.optimizer = self.make_optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: learning_rate_factor(step, self.config.optim)
        )
        settings = LoopSettings(
            total_steps=config.optim.steps,
            validate_every=config.validate_every,
            selection=BEST_PSNR,
            log_every=config.log_every,
            run_dir=self.output_dir,
            ema_decay=ema_decay,
            identity=self.run_identity(),
        )
        self.loop = TrainingLoop(self, settings, Reporting(bar=show_progress, distributed=self.distributed), cancel)

    # ---- what subclasses choose ------------------------------------------------------------------
    def make_sampler(self, context: int) -> PairSampler:
        """Where training batches come from (subclasses draw other kinds of examples)."""
        return PairSampler(self.train_volumes, self.config.data, context, self.sampler_seed())

    def sampler_seed(self) -> int:
        """The seed of this process's sampler (each process of a distributed run draws its own examples)."""
        return self.config.seed + 7919 * self.distributed.rank

    def start_from_pretrained(self) -> None:
        """Initialise the network from earlier training (transfer learning); nothing by default."""

    def training_module(self) -> nn.Module:
        """The module whose forward pass the loss goes through (wrapped by DDP when distributed)."""
        return self.network

    def build_companions(self) -> None:
        """Networks trained beside the exported one (a GAN's other generator and discriminators); none by default."""

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The optimiser of the network's parameters."""
        raise NotImplementedError

    def batch_loss(self, batch: list[torch.Tensor]) -> torch.Tensor:
        """The training loss of one batch from the sampler."""
        raise NotImplementedError

    def distribute(self, module: nn.Module) -> nn.Module:
        """``module`` itself, or wrapped in DistributedDataParallel under torchrun."""
        if self.distributed.world_size <= 1:
            return module
        return DistributedDataParallel(module, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    # ---- the run -----------------------------------------------------------------------------------
    @property
    def state(self) -> TrainingState:
        return self.loop.state

    @property
    def kept_network(self) -> nn.Module:
        """The network validated and saved: the moving average of the weights when one is kept."""
        return self.loop.kept_network

    def fit(self, max_minutes: float | None = None, max_steps: int | None = None) -> TrainingState:
        """Train to ``optim.steps``, validating and checkpointing; stop early, with a checkpoint, after
        ``max_minutes`` or after ``max_steps`` steps of this call (a budget tests can use without a clock)."""
        self.loop.state.hardware = (
            hardware_summary(self.device)
            + (f" x {self.distributed.world_size} processes" if self.distributed.world_size > 1 else "")
            + (", bfloat16" if self.bfloat16 else "")
        )
        return self.loop.run(None if max_minutes is None else 60 * max_minutes, max_steps)

    def resume(self) -> bool:
        """Continue from the checkpoint in the output folder; False when there is none."""
        return self.loop.resume()

    def _device(self, preference: str) -> torch.device:
        if preference == "auto":
            preference = "cuda" if torch.cuda.is_available() else "cpu"
        if preference == "cuda":
            return torch.device("cuda", self.distributed.local_rank)
        return torch.device(preference)

    def run_identity(self) -> str:
        """What a checkpoint must share with the config to be resumed: the network and the data.

        The schedule may change (resuming with more steps is allowed); the architecture, its
        arguments and the training and validation volumes may not.
        """
        config = self.config
        return json.dumps(
            {
                "architecture": config.model.architecture,
                "arguments": config.model.arguments,
                "train": config.data.train,
                "validation": config.data.validation,
                "patch_size": config.data.patch_size,
            },
            sort_keys=True,
        )

    # ---- the loop's task -------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """One optimiser step on a batch from the sampler."""
        return self.step_on(
            [as_device_batch(part, self.device) for part in self.sampler.batch(self.config.optim.batch_size)]
        )

    def step_on(self, batch: list[torch.Tensor]) -> dict[str, float]:
        """One optimiser step on ``batch``: the loss and the learning rate used."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bfloat16):
            loss = self.batch_loss(batch).float()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return {"loss": loss.item(), "lr": float(self.scheduler.get_last_lr()[0])}

    def validate(self, network: nn.Module) -> dict[str, float]:
        """Blind denoising of the fixed validation slabs; mean foreground PSNR and SSIM, and PSNR per level."""
        if not self.validation:
            return {}
        denoiser = NetworkDenoiser(network, self.device)
        scores = [evaluate(case.clean, denoiser.denoise(case.noisy)) for case in self.validation]
        summary = {key: float(np.mean([s[key] for s in scores])) for key in ("psnr_foreground", "ssim_foreground")}
        for level in sorted({case.level_percent for case in self.validation}):
            at_level = [case.level_percent == level for case in self.validation]
            summary[f"psnr_foreground@{level:g}"] = _mean_psnr(scores, at_level)
        for noise in sorted({case.noise for case in self.validation} - {"rician"}):
            summary[f"psnr_foreground@{noise}"] = _mean_psnr(scores, [c.noise == noise for c in self.validation])
        tone_curved = [case.remapped for case in self.validation]
        if any(tone_curved):
            summary["psnr_foreground@remapped"] = _mean_psnr(scores, tone_curved)
        return summary

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sampler_rng": json.dumps(self.sampler.rng.bit_generator.state),
        }

    def load_checkpoint_state(self, payload: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.sampler.rng.bit_generator.state = json.loads(payload["sampler_rng"])

    def save_weights(self, path: Path, network: nn.Module) -> None:
        save_weights(path, network, self.config.model.architecture, self.config.model.arguments)

    def network_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """The sampler's slices and noise-level map, without the map for networks that take none."""
        return inputs if self.noise_level_input else inputs[:, :-1]


def _mean_psnr(scores: list[dict[str, float]], chosen: list[bool]) -> float:
    """Mean foreground PSNR of the validation cases marked in ``chosen``."""
    return float(np.mean([score["psnr_foreground"] for score, pick in zip(scores, chosen, strict=True) if pick]))


def make_optimizer(parameters, optim: ConsensusOptimConfig) -> torch.optim.Optimizer:
    """AdamW or RMSprop with the config's learning rate and weight decay."""
    optimizer = torch.optim.RMSprop if optim.optimizer == "rmsprop" else torch.optim.AdamW
    return optimizer(parameters, lr=optim.learning_rate, weight_decay=optim.weight_decay)


class SupervisedTrainer(ImageTrainer):
    """Trains a denoiser on (noisy, clean) pairs synthesised from real volumes."""

    config: SupervisedConfig

    def __init__(self, config: SupervisedConfig, output_dir: str | Path, **kwargs: Any) -> None:
        self.pretrained: nn.Module | None = None
        super().__init__(
            config,
            output_dir,
            ema_decay=config.optim.ema_decay,
            bfloat16=config.optim.precision == "bfloat16",
            **kwargs,
        )
        optim = config.optim
        self.teacher = self._teacher(config)
        self.perceptual = perceptual_loss(config, self.pretrained)
        if self.perceptual is not None:
            self.perceptual.to(self.device)
        self.pixel_loss = {"l1": nn.L1Loss, "l2": nn.MSELoss, "huber": nn.HuberLoss}[optim.loss](reduction="none")
        self.ssim_loss = (
            SSIMLoss(
                2,
                data_range=1.0,
                kernel_type="uniform",
                win_size=SSIM_WINDOW,
                k1=SSIM_K1,
                k2=SSIM_K2,
                reduction="none",
            )
            if optim.ssim_weight > 0
            else None
        )

    def start_from_pretrained(self) -> None:
        self.pretrained = apply_transfer(self.network, self.config, self.output_dir)

    def make_sampler(self, context: int) -> PairSampler:
        """The synthetic pairs, with recorrupted patches of real scans among them under ``self_supervised``."""
        settings = self.config.self_supervised
        if settings is None:
            return super().make_sampler(context)
        root = self.config.data_root()
        scans = [scan for name in settings.scans for scan in load_noisy_scans(root / name)]
        return MixedSampler(self.train_volumes, self.config.data, context, self.sampler_seed(), scans, settings)

    def run_identity(self) -> str:
        """The image run's identity, and the self-supervised scans where there are any."""
        identity = super().run_identity()
        if self.config.self_supervised is None:
            return identity
        scans = self.config.self_supervised.scans
        return json.dumps({**json.loads(identity), "self_supervised": scans}, sort_keys=True)

    def make_optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer(self.network.parameters(), self.config.optim)

    def _teacher(self, config: SupervisedConfig) -> nn.Module | None:
        """The frozen source network whose output is the target, with ``transfer.distil``."""
        if config.transfer is None or not config.transfer.distil:
            return None
        assert self.pretrained is not None  # distil comes with transfer.model or .config, which set it
        teacher = self.pretrained.to(self.device).eval()
        teacher.requires_grad_(False)
        return teacher

    def batch_loss(self, batch: list[torch.Tensor]) -> torch.Tensor:
        inputs, targets, *recorrupted = batch
        network_inputs = self.network_inputs(inputs)
        if self.teacher is not None:
            with torch.no_grad():
                targets = self.teacher(network_inputs).float()
        if recorrupted:
            weights, scan_level = recorrupted
            return self.loss(network_inputs, targets, inputs[:, -1:], weights, scan_level)
        return self.loss(network_inputs, targets, inputs[:, -1:])

    def loss(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        level_map: torch.Tensor,
        weights: torch.Tensor | None = None,
        scan_level: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pixel loss (per example in units of its noise level if configured), plus the SSIM and perceptual terms.

        With ``weights`` (a map per example) the pixel loss is their weighted mean; where ``scan_level``
        (one per example) is above zero the target is a real scan's noisy magnitude, compared with the
        prediction's Rician mean at that level and left out of the SSIM term.
        """
        optim = self.config.optim
        prediction = self.model(inputs)
        level = level_map.mean(dim=(1, 2, 3)).clamp(min=1e-3)
        fitted = prediction if scan_level is None else _rician_where_noisy(prediction, scan_level)
        pixel = self.pixel_loss(fitted, targets)
        if weights is None:
            pixel = pixel.mean(dim=(1, 2, 3))
        else:
            pixel = (pixel * weights).sum(dim=(1, 2, 3)) / weights.sum(dim=(1, 2, 3)).clamp(min=1.0)
        if optim.noise_normalised:
            pixel = pixel / (level**2 if optim.loss == "l2" else level)
        loss = pixel.mean()
        if self.ssim_loss is not None:
            with torch.autocast(prediction.device.type, enabled=False):
                dissimilarity = self.ssim_loss(prediction.float(), targets.float()).flatten()
            if optim.ssim_noise_normalised:
                dissimilarity = dissimilarity / level.float()
            if scan_level is not None:
                dissimilarity = dissimilarity[scan_level <= 0]
            if dissimilarity.numel():
                loss = loss + optim.ssim_weight * dissimilarity.mean()
        if self.perceptual is not None and self.config.perceptual is not None:
            loss = loss + self.config.perceptual.weight * self.perceptual(prediction, targets)
        return loss


def _rician_where_noisy(prediction: torch.Tensor, scan_level: torch.Tensor) -> torch.Tensor:
    """``prediction``, with the examples whose target is a noisy magnitude (``scan_level`` > 0) replaced by
    its Rician mean at that level, the mean such a target has."""
    noisy = scan_level > 0
    if not bool(noisy.any()):
        return prediction
    fitted = prediction.clone()
    fitted[noisy] = rician_mean(prediction[noisy], scan_level[noisy].view(-1, 1, 1, 1)).to(prediction.dtype)
    return fitted


def as_device_batch(part: np.ndarray, device: torch.device) -> torch.Tensor:
    """A sampler array on ``device``; image batches in channels-last layout (faster convolutions)."""
    tensor = torch.from_numpy(part).to(device)
    return tensor.contiguous(memory_format=torch.channels_last) if tensor.ndim == 4 else tensor


def learning_rate_factor(step: int, optim: ScheduleConfig) -> float:
    """The schedule's multiplier of the learning rate: linear warm-up, then cosine decay to 2 %."""
    if step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    progress = (step - optim.warmup_steps) / max(optim.steps - optim.warmup_steps, 1)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def hardware_summary(device: torch.device) -> str:
    """Where a run happened, for model cards."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    return cpu_summary(torch.get_num_threads())

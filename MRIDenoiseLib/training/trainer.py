"""Supervised training loop (clean/noisy pairs): checkpoints, resume, validation, DDP.

Launch one process with ``python -m MRIDenoiseLib train CONFIG`` or several with
``torchrun --nproc-per-node N -m MRIDenoiseLib train CONFIG`` (gloo on CPU, NCCL on CUDA).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from monai.losses import SSIMLoss
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from ..denoisers.network import NetworkDenoiser
from ..inference import uses_noise_level
from ..machine import cpu_summary
from ..metrics import SSIM_K1, SSIM_K2, SSIM_WINDOW, evaluate
from ..models.weights import save_weights
from ..nets import build_network
from ..progress import CancelToken
from .checkpoints import (
    BEST_WEIGHTS_NAME,
    CHECKPOINT_NAME,
    HISTORY_NAME,
    LAST_WEIGHTS_NAME,
    read_checkpoint,
    write_checkpoint,
)
from .config import ConfigError, TrainConfig
from .data import PairSampler, ValidationCase, load_configured_volume, validation_cases
from .transfer import apply_transfer, perceptual_loss


@dataclass
class TrainingState:
    """Everything a resumed run needs besides the weights and optimiser."""

    step: int = 0
    best_psnr: float = -math.inf
    best_step: int = 0
    wall_seconds: float = 0.0
    hardware: str = ""
    best_validation_mse: float = math.inf


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistributedContext:
    """Join the process group torchrun set up, if any (gloo on CPU, NCCL on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistributedContext(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))


class SupervisedTrainer:
    """Trains a denoiser on (noisy, clean) pairs synthesised from real volumes."""

    def __init__(
        self,
        config: TrainConfig,
        output_dir: str | Path,
        device: str = "auto",
        show_progress: bool = True,
        cancel: CancelToken | None = None,
    ) -> None:
        self.config = config
        self.cancel = cancel or CancelToken()
        self.output_dir = Path(output_dir)
        self.distributed = init_distributed()
        self.device = self._device(device)
        self.show_progress = show_progress and self.distributed.is_main
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed + self.distributed.rank)
        root = config.data_root()
        self.train_volumes = [load_configured_volume(root / name, config.data) for name in config.data.train]
        self.sampler = self.make_sampler(int(config.model.arguments.get("context", 2)))
        self.validation = (
            validation_cases(
                [load_configured_volume(root / name, config.data) for name in config.data.validation],
                config.data,
                config.seed,
            )
            if self.distributed.is_main
            else []
        )
        self.network = build_network(config.model.architecture, config.model.arguments)
        pretrained = apply_transfer(self.network, config, self.output_dir)
        self.network.to(self.device, memory_format=torch.channels_last)
        self.perceptual = perceptual_loss(config, pretrained)
        if self.perceptual is not None:
            self.perceptual.to(self.device)
        self.model = self.distribute(self.training_module())
        optim = config.optim
        optimizer = torch.optim.RMSprop if optim.optimizer == "rmsprop" else torch.optim.AdamW
        self.optimizer = optimizer(self.network.parameters(), lr=optim.learning_rate, weight_decay=optim.weight_decay)
        self.average = (
            AveragedModel(self.network, multi_avg_fn=get_ema_multi_avg_fn(optim.ema_decay), use_buffers=True)
            if optim.ema_decay > 0
            else None
        )
        self.noise_level_input = uses_noise_level(self.network)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._learning_rate_factor)
        self.pixel_loss = {"l1": nn.L1Loss, "l2": nn.MSELoss, "huber": nn.HuberLoss}[optim.loss](reduction="none")
        self.ssim_loss = (
            SSIMLoss(2, data_range=1.0, kernel_type="uniform", win_size=SSIM_WINDOW, k1=SSIM_K1, k2=SSIM_K2)
            if optim.ssim_weight > 0
            else None
        )
        self.state = TrainingState()

    def make_sampler(self, context: int) -> PairSampler:
        """Where training batches come from (subclasses draw other kinds of examples)."""
        seed = self.config.seed + 7919 * self.distributed.rank
        return PairSampler(self.train_volumes, self.config.data, context, seed)

    def training_module(self) -> nn.Module:
        """The module whose forward pass the loss goes through (wrapped by DDP when distributed)."""
        return self.network

    def distribute(self, module: nn.Module) -> nn.Module:
        """``module`` itself, or wrapped in DistributedDataParallel under torchrun."""
        if self.distributed.world_size <= 1:
            return module
        return DistributedDataParallel(module, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    @property
    def kept_network(self) -> nn.Module:
        """The network validated and saved: the moving average of the weights with ``optim.ema_decay``."""
        return self.network if self.average is None else self.average.module

    def _device(self, preference: str) -> torch.device:
        if preference == "auto":
            preference = "cuda" if torch.cuda.is_available() else "cpu"
        if preference == "cuda":
            return torch.device("cuda", self.distributed.local_rank)
        return torch.device(preference)

    def _learning_rate_factor(self, step: int) -> float:
        optim = self.config.optim
        if step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        progress = (step - optim.warmup_steps) / max(optim.steps - optim.warmup_steps, 1)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    # ---- checkpoints -------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.output_dir / CHECKPOINT_NAME

    def save_checkpoint(self) -> None:
        if not self.distributed.is_main:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sampler_rng": json.dumps(self.sampler.rng.bit_generator.state),
            "torch_rng": torch.get_rng_state(),
            "state": json.dumps(self.state.__dict__),
            "identity": self.run_identity(),
            **({} if self.average is None else {"average": self.average.state_dict()}),
            **self.extra_checkpoint_state(),
        }
        write_checkpoint(self.checkpoint_path, payload)

    def extra_checkpoint_state(self) -> dict[str, Any]:
        """More tensors a subclass keeps in its checkpoint (other networks, optimisers)."""
        return {}

    def load_extra_checkpoint_state(self, payload: dict[str, Any]) -> None:
        """Restore what :meth:`extra_checkpoint_state` saved."""

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

    def resume(self) -> bool:
        """Continue from the checkpoint in the output folder; False when there is none."""
        payload = read_checkpoint(self.checkpoint_path)
        if payload is None:
            return False
        if payload.get("identity", self.run_identity()) != self.run_identity():
            raise ConfigError(
                f"the checkpoint in {self.output_dir} comes from a run with another network or data; "
                "choose another --output (or delete that folder)"
            )
        self.network.load_state_dict(payload["network"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.sampler.rng.bit_generator.state = json.loads(payload["sampler_rng"])
        torch.set_rng_state(payload["torch_rng"])
        self.state = TrainingState(**json.loads(payload["state"]))
        if self.average is not None:
            if "average" not in payload:
                raise ConfigError(
                    f"the checkpoint in {self.output_dir} was trained without optim.ema_decay; "
                    "resume it without, or choose another --output"
                )
            self.average.load_state_dict(payload["average"])
        self.load_extra_checkpoint_state(payload)
        return True

    # ---- the loop ------------------------------------------------------------------------
    def fit(self, max_minutes: float | None = None, max_steps: int | None = None) -> TrainingState:
        """Train to ``optim.steps``, validating and checkpointing; stop early, with a checkpoint, after
        ``max_minutes`` or after ``max_steps`` steps of this call (a budget tests can use without a clock)."""
        config = self.config
        started, first_step = time.monotonic(), self.state.step
        wall_before = self.state.wall_seconds
        bar = tqdm(
            total=config.optim.steps, initial=self.state.step, disable=not self.show_progress, desc="train", unit="step"
        )
        running: list[float] = []
        self.state.hardware = hardware_summary(self.device) + (
            f" x {self.distributed.world_size} processes" if self.distributed.world_size > 1 else ""
        )
        self.model.train()
        while self.state.step < config.optim.steps:
            batch = [as_device_batch(part, self.device) for part in self.sampler.batch(config.optim.batch_size)]
            running.append(self.train_step(batch))
            self.state.step += 1
            bar.update(1)
            self.state.wall_seconds = wall_before + time.monotonic() - started
            if self.state.step % config.log_every == 0:
                bar.set_postfix(loss=f"{np.mean(running):.4f}")
                self._record(
                    {"step": self.state.step, "loss": float(np.mean(running)), "lr": self.scheduler.get_last_lr()[0]}
                )
                running = []
            out_of_time = max_minutes is not None and time.monotonic() - started > 60 * max_minutes
            out_of_time |= max_steps is not None and self.state.step - first_step >= max_steps
            out_of_time |= self.cancel.cancelled
            if self.state.step % config.validate_every == 0 or self.state.step == config.optim.steps or out_of_time:
                self.validate_and_checkpoint()
                self.model.train()
            if out_of_time:
                break
        bar.close()
        return self.state

    def train_step(self, batch: list[torch.Tensor]) -> float:
        """One optimiser step on a batch from the sampler; returns the loss."""
        bfloat16 = self.config.optim.precision == "bfloat16"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bfloat16):
            loss = self.batch_loss(batch).float()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        if self.average is not None:
            self.average.update_parameters(self.network)
        return loss.item()

    def batch_loss(self, batch: list[torch.Tensor]) -> torch.Tensor:
        """The training loss of one batch (subclasses with other examples override this)."""
        inputs, targets = batch
        return self.loss(self.network_inputs(inputs), targets, inputs[:, -1:])

    def network_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """The sampler's slices and noise-level map, without the map for networks that take none."""
        return inputs if self.noise_level_input else inputs[:, :-1]

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor, level_map: torch.Tensor) -> torch.Tensor:
        """Pixel loss (per example in units of its noise level if configured), plus the SSIM and perceptual terms."""
        prediction = self.model(inputs)
        pixel = self.pixel_loss(prediction, targets).mean(dim=(1, 2, 3))
        if self.config.optim.noise_normalised:
            level = level_map.mean(dim=(1, 2, 3)).clamp(min=1e-3)
            pixel = pixel / (level**2 if self.config.optim.loss == "l2" else level)
        loss = pixel.mean()
        if self.ssim_loss is not None:
            with torch.autocast(prediction.device.type, enabled=False):
                loss = loss + self.config.optim.ssim_weight * self.ssim_loss(prediction.float(), targets.float())
        if self.perceptual is not None:
            loss = loss + self.config.perceptual.weight * self.perceptual(prediction, targets)
        return loss

    def validate_and_checkpoint(self) -> dict[str, float]:
        metrics = self.validate() if self.distributed.is_main else {}
        if self.distributed.is_main:
            record = {"step": self.state.step, "wall_seconds": round(self.state.wall_seconds, 1), **metrics}
            self._record(record)
            names = [LAST_WEIGHTS_NAME]
            if metrics and metrics["psnr_foreground"] > self.state.best_psnr:
                self.state.best_psnr = metrics["psnr_foreground"]
                self.state.best_step = self.state.step
                names.append(BEST_WEIGHTS_NAME)
            for name in names:
                save_weights(
                    self.output_dir / name,
                    self.kept_network,
                    self.config.model.architecture,
                    self.config.model.arguments,
                )
            self.save_checkpoint()
            if self.show_progress:
                tqdm.write(f"step {self.state.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if self.distributed.world_size > 1:
            dist.barrier()
        return metrics

    def validate(self) -> dict[str, float]:
        """Blind denoising of the fixed validation slabs; mean foreground PSNR and SSIM."""
        if not self.validation:
            return {}
        denoiser = NetworkDenoiser(self.kept_network, self.device)
        scores = [self._score(denoiser, case) for case in self.validation]
        summary = {key: float(np.mean([s[key] for s in scores])) for key in ("psnr_foreground", "ssim_foreground")}
        for level in sorted({case.level_percent for case in self.validation}):
            summary[f"psnr_foreground@{level:g}"] = float(
                np.mean(
                    [
                        s["psnr_foreground"]
                        for s, c in zip(scores, self.validation, strict=True)
                        if c.level_percent == level
                    ]
                )
            )
        return summary

    def _score(self, denoiser: NetworkDenoiser, case: ValidationCase) -> dict[str, float]:
        return evaluate(case.clean, denoiser.denoise(case.noisy))  # sigma estimated, as in the product

    def _record(self, entry: dict[str, Any]) -> None:
        if not self.distributed.is_main:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / HISTORY_NAME, "a") as handle:
            handle.write(json.dumps(entry) + "\n")


def as_device_batch(part: np.ndarray, device: torch.device) -> torch.Tensor:
    """A sampler array on ``device``; image batches in channels-last layout (faster convolutions)."""
    tensor = torch.from_numpy(part).to(device)
    return tensor.contiguous(memory_format=torch.channels_last) if tensor.ndim == 4 else tensor


def hardware_summary(device: torch.device) -> str:
    """Where a run happened, for model cards."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    return cpu_summary(torch.get_num_threads())

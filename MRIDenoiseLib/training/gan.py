"""Unpaired training (paper 000): the disentangled-representation GAN and its CycleGAN baseline.

The noisy domain is ``data.train`` with simulated noise (its clean patches are never seen by
any loss); the clean domain is ``gan.clean_domain``, other subjects. One step updates the
encoders and generators on loss (11) (plus self-reconstruction, see ``GanSettings``) and then both
discriminators on (3) and (5). Under torchrun the gradients are averaged across processes by
hand (a GAN step makes several forward passes per module, which DDP wrappers do not allow).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..errors import InputError
from ..models.catalog import load_catalog
from ..models.store import resolve_weights
from ..models.weights import load_network
from ..nets.gan import CycleGANGenerator, DisentangledDenoiser, Generator, PatchDiscriminator, sample_code
from ..nets.unet_dctd import UNetDCTDA
from .config import GanRunConfig
from .data import PairSampler, load_configured_volumes
from .losses import cycle_loss, discriminator_loss, generator_adversarial_loss, kl_to_standard_normal
from .perceptual import ResNetEncoderFeatures, VGG16Features
from .trainer import ImageTrainer

ADAM_BETAS = (0.5, 0.999)


class UnpairedSampler(PairSampler):
    """Batches of (noisy slice, clean slice) from different subjects: never a matching pair."""

    def __init__(self, noisy_domain: list, clean_domain: list, config, seed: int) -> None:
        super().__init__(noisy_domain, config, 0, seed)
        self.clean_source = PairSampler(clean_domain, config, 0, seed)
        self.clean_source.rng = self.rng

    def _pair(self) -> tuple[np.ndarray, ...]:
        """(noisy slice with its noise-level map as a second channel, clean slice of another subject)."""
        noisy = self._noisy(self._augment_intensity(self._clean_patch()), self._noise())
        clean = self.clean_source._augment_intensity(self.clean_source._clean_patch())
        return noisy, clean


def feature_network(name: str, config: GanRunConfig) -> nn.Module:
    """Loss (10)'s frozen features: a catalogue ``unet-dctd-a`` model's encoder, or VGG-16 from a file."""
    if name.endswith(".safetensors"):
        return VGG16Features.from_file(config.relative_path(name))
    entry = load_catalog().get(name)
    if entry.architecture != "unet-dctd-a":
        raise InputError(f"gan.perceptual_features {name!r} is a {entry.architecture!r} model; a unet-dctd-a is needed")
    network = load_network(resolve_weights(entry), entry.architecture, entry.arguments)
    if not isinstance(network, UNetDCTDA):
        raise TypeError(f"{name!r} did not load as a unet-dctd-a network")
    return ResNetEncoderFeatures(network)


def perceptual_distance(features: nn.Module, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Equation (10): squared L2 distance of the feature maps, averaged over elements and taps."""
    distances = [(a - b).pow(2).mean() for a, b in zip(features(first), features(second), strict=True)]
    return torch.stack(distances).mean()


class GanTrainer(ImageTrainer):
    """Trains ``disentangled-denoiser`` or ``cyclegan-generator`` without paired images."""

    config: GanRunConfig

    def __init__(self, config: GanRunConfig, output_dir: str | Path, **kwargs: Any) -> None:
        self.disentangled = config.gan.method == "disentangled"
        self.noise_scaled = bool(config.model.arguments.get("noise_scaled", False))
        super().__init__(config, output_dir, **kwargs)

    def build_companions(self) -> None:
        """The clean-to-noisy generator, both discriminators and loss (10)'s frozen features, on the device."""
        settings, arguments = self.config.gan, self.config.model.arguments
        width, blocks = int(arguments.get("width", 32)), int(arguments.get("blocks", 3))
        code, residual = int(arguments.get("code", 4)), bool(arguments.get("residual", False))
        bound = arguments.get("correction_bound")
        noisy_generator = (
            Generator(width, blocks, code, residual, self.noise_scaled, bound)
            if self.disentangled
            else CycleGANGenerator(width, blocks, residual, self.noise_scaled, bound)
        )
        self.noisy_generator = noisy_generator.to(self.device)
        self.clean_discriminator = PatchDiscriminator(width).to(self.device)
        self.noisy_discriminator = PatchDiscriminator(width).to(self.device)
        self.features: nn.Module | None = None
        if self.disentangled and settings.perceptual > 0:
            self.features = feature_network(settings.perceptual_features, self.config).to(self.device).eval()
            for parameter in self.features.parameters():
                parameter.requires_grad_(False)
        self._broadcast_from_first_process()
        self.discriminator_optimizer = torch.optim.Adam(
            [*self.clean_discriminator.parameters(), *self.noisy_discriminator.parameters()],
            lr=settings.discriminator_learning_rate,
            betas=ADAM_BETAS,
        )

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Adam over both generators (and, for the disentangled model, the encoders inside the denoiser)."""
        generators = [*self.network.parameters(), *self.noisy_generator.parameters()]
        return torch.optim.Adam(generators, lr=self.config.optim.learning_rate, betas=ADAM_BETAS)

    def make_sampler(self, context: int) -> PairSampler:
        root = self.config.data_root()
        clean_domain = [
            volume
            for name in self.config.gan.clean_domain
            for volume in load_configured_volumes(root / name, self.config.data)
        ]
        return UnpairedSampler(self.train_volumes, clean_domain, self.config.data, self.sampler_seed())

    def distribute(self, module: nn.Module) -> nn.Module:
        return module  # gradients are averaged in _synchronise instead

    # ---- one step ----------------------------------------------------------------------------
    def step_on(self, batch: list[torch.Tensor]) -> dict[str, float]:
        """Generators on loss (11), then both discriminators on (3) and (5)."""
        noisy_with_level, clean = batch
        noisy, level = noisy_with_level[:, :1], noisy_with_level[:, 1:]
        images = self._translate(noisy, clean, level)
        generator_loss = self.generator_loss(noisy, clean, images, level)
        self.optimizer.zero_grad(set_to_none=True)
        generator_loss.backward()
        self._synchronise([self.network, self.noisy_generator])
        self.optimizer.step()
        self.scheduler.step()

        discriminator = discriminator_loss(
            self.clean_discriminator(clean), self.clean_discriminator(images["fake_clean"].detach())
        ) + discriminator_loss(self.noisy_discriminator(noisy), self.noisy_discriminator(images["fake_noisy"].detach()))
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        discriminator.backward()
        self._synchronise([self.clean_discriminator, self.noisy_discriminator])
        self.discriminator_optimizer.step()
        return {"loss": generator_loss.item(), "lr": float(self.scheduler.get_last_lr()[0])}

    def _translate(self, noisy: torch.Tensor, clean: torch.Tensor, level: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every image the losses compare: translations (4), (6), round trips (8), (9), self-reconstructions.

        ``level`` is the noisy batch's noise-level map. Noise-scaled generators get it on every
        call: the clean-to-noisy one draws noise at that level, and the noisy-to-clean one is told
        it even for clean images (so the identity terms teach it to leave clean detail alone).
        """
        if not self.disentangled:

            def clean_of_noisy(image: torch.Tensor) -> torch.Tensor:
                return self.network(self._with_level(image, level))

            def noisy_of_clean(image: torch.Tensor) -> torch.Tensor:
                return self.noisy_generator(self._with_level(image, level))

            fake_clean, fake_noisy = clean_of_noisy(noisy), noisy_of_clean(clean)
            return {
                "fake_clean": fake_clean,
                "fake_noisy": fake_noisy,
                "round_trip_clean": clean_of_noisy(fake_noisy),
                "round_trip_noisy": noisy_of_clean(fake_clean),
                "same_clean": clean_of_noisy(clean),
                "same_noisy": noisy_of_clean(noisy),
            }
        denoiser = self.network
        if not isinstance(denoiser, DisentangledDenoiser):
            raise TypeError("gan.method 'disentangled' trains a disentangled-denoiser")
        encode, noise_code = denoiser.content_encoder, denoiser.noise_encoder
        clean_generator, noisy_generator = denoiser.clean_generator, self.noisy_generator
        told: torch.Tensor | None = level if self.noise_scaled else None
        noisy_mean, noisy_log_variance = noise_code(noisy)
        noise = sample_code(noisy_mean, noisy_log_variance)
        noisy_content, clean_content = encode(noisy), encode(clean)
        fake_clean = clean_generator(noisy_content, noise, noisy, told)
        fake_noisy = noisy_generator(clean_content, noise, clean, told)
        fake_noise = sample_code(*noise_code(fake_noisy))
        return {
            "fake_clean": fake_clean,
            "fake_noisy": fake_noisy,
            "round_trip_clean": clean_generator(encode(fake_noisy), fake_noise, fake_noisy, told),
            "round_trip_noisy": noisy_generator(encode(fake_clean), fake_noise, fake_clean, told),
            "same_clean": clean_generator(clean_content, sample_code(*noise_code(clean)), clean, told),
            "same_noisy": noisy_generator(noisy_content, noise, noisy, told),
            "noise_mean": noisy_mean,
            "noise_log_variance": noisy_log_variance,
        }

    def generator_loss(
        self, noisy: torch.Tensor, clean: torch.Tensor, images: dict[str, torch.Tensor], level: torch.Tensor
    ) -> torch.Tensor:
        """Loss (11) (adversarial, KL, cycle, perceptual) plus self-reconstruction, as weighted in the config.

        With ``optim.noise_normalised`` each example's cycle and self-reconstruction errors are
        divided by its noise level (the mean of ``level``), so 5 % examples weigh like 30 % ones.
        """
        settings = self.config.gan
        scale = level.mean(dim=(1, 2, 3)).clamp(min=1e-3) if self.config.optim.noise_normalised else None
        adversarial = generator_adversarial_loss(self.clean_discriminator(images["fake_clean"]))
        adversarial = adversarial + generator_adversarial_loss(self.noisy_discriminator(images["fake_noisy"]))
        cycle = cycle_loss(clean, images["round_trip_clean"], scale)
        cycle = cycle + cycle_loss(noisy, images["round_trip_noisy"], scale)
        same = cycle_loss(clean, images["same_clean"], scale) + cycle_loss(noisy, images["same_noisy"], scale)
        loss = settings.adversarial * adversarial + settings.cycle * cycle + settings.reconstruction * same
        if self.disentangled:
            loss = loss + settings.kl * kl_to_standard_normal(images["noise_mean"], images["noise_log_variance"])
            if self.features is not None:
                loss = loss + settings.perceptual * perceptual_distance(self.features, images["fake_noisy"], clean)
        return loss

    def _with_level(self, image: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """A CycleGAN generator's input: the image, and the noise-level map when it is noise-scaled."""
        return torch.cat([image, level], dim=1) if self.noise_scaled else image

    def _trained_modules(self) -> list[nn.Module]:
        return [self.network, self.noisy_generator, self.clean_discriminator, self.noisy_discriminator]

    def _broadcast_from_first_process(self) -> None:
        """Start every process from the first one's weights (each seeded its own initialisation)."""
        if self.distributed.world_size <= 1:
            return
        for module in self._trained_modules():
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)

    def _synchronise(self, modules: list[nn.Module]) -> None:
        """Average gradients over the processes of a torchrun launch."""
        if self.distributed.world_size <= 1:
            return
        for module in modules:
            for parameter in module.parameters():
                if parameter.grad is not None:
                    dist.all_reduce(parameter.grad)
                    parameter.grad /= self.distributed.world_size

    # ---- checkpoints ------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        return {
            **super().checkpoint_state(),
            "noisy_generator": self.noisy_generator.state_dict(),
            "clean_discriminator": self.clean_discriminator.state_dict(),
            "noisy_discriminator": self.noisy_discriminator.state_dict(),
            "discriminator_optimizer": self.discriminator_optimizer.state_dict(),
        }

    def load_checkpoint_state(self, payload: dict[str, Any]) -> None:
        super().load_checkpoint_state(payload)
        self.noisy_generator.load_state_dict(payload["noisy_generator"])
        self.clean_discriminator.load_state_dict(payload["clean_discriminator"])
        self.noisy_discriminator.load_state_dict(payload["noisy_discriminator"])
        self.discriminator_optimizer.load_state_dict(payload["discriminator_optimizer"])

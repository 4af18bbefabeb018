"""Training configuration: JSON files validated on load by pydantic models.

One model per kind of training (supervised, consensus, gan, qspace), chosen by the config's explicit
``kind`` field; each lists only the sections and options its trainer honours, so an option the trainer
would ignore is refused, and named as belonging to another kind. Every section refuses unknown keys and
values of the wrong type (no silent coercion: ``"steps": "100"`` is an error), and each error is named by
its path (``optim.steps: ...``). ``config_schema()`` is the JSON schema.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from ..errors import ConfigError
from ..models.catalog import PLANES
from ..nets import ARCHITECTURES, build_network

DATA_ROOT_VARIABLE = "MRIDENOISE_DATA_ROOT"
PRECISIONS = ("float32", "bfloat16")


class _Section(BaseModel):
    """A config section: unknown keys and wrongly typed values are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True)


ValidationNoise = Literal["rician", "coils", "zero-filled", "profile"]


class DataConfig(_Section):
    """Which volumes to train and validate on, and how noisy/clean pairs are made.

    Paths are relative to ``root``; ``root`` itself is relative to the config file unless
    absolute, and the environment variable MRIDENOISE_DATA_ROOT overrides it. Volumes whose own
    noise exceeds ``preclean_above_percent`` are cleaned first, validation volumes included: a
    reference that keeps its own noise (about 5 % in the 2 mm IXI T1s) scores a denoiser against
    that noise and favours checkpoints that denoise less.
    """

    train: list[str]
    validation: list[str]
    root: str = "../../shared/data"
    patch_size: int = 64
    level_range_percent: tuple[float, float] = (1.0, 30.0)
    level_sampling: Literal["uniform", "log-uniform"] = "uniform"
    """How an example's noise level is drawn from ``level_range_percent``: uniformly, or uniformly in its
    logarithm, which gives each doubling of the level as many examples (1-5 % then takes 47 % of them over
    1-30 %, against 14 % uniformly): clinical scans lie mostly at the low end."""
    rician_fraction: float = 0.9
    varying_noise_fraction: float = 0.2
    one_level_fraction: float = 0.0
    """Fraction of the examples with a varying level (``varying_noise_fraction``) whose level channel carries
    the patch's mean level instead of the field: the product tells a network one blind level for a scan
    whose noise varies, so it must find the rest of the noise itself."""
    overstated_level_fraction: float = 0.0
    """Fraction of the examples whose level channel over-states the noise: it carries
    sqrt(told^2 + e^2), ``e`` drawn uniformly from ``overstated_level_percent``. The blind estimate reads
    fine anatomy (and what noise a scan's reference keeps) as noise too, a term that adds to the noise in
    quadrature and matters most at low levels; told such a level, a network trained only on true levels
    removes detail with it (docs/default-model-history.md, "Told an over-stated level in training"). The loss
    is still normalised by the level told."""
    overstated_level_percent: tuple[float, float] = (0.0, 3.0)
    """The range of ``e`` (% of the brightest tissue) for ``overstated_level_fraction``."""
    coil_fraction: float = 0.0
    """Fraction of the Rician examples drawn as the sum-of-squares magnitude of 2 to 32 coils
    (non-central chi); the level channel carries the per-coil sigma."""
    zero_filled_fraction: float = 0.0
    """Fraction of the examples whose noise is correlated as zero-filled k-space interpolation
    leaves it (along two random axes of the patch); the level channel carries its true sigma (the
    blind estimator reads such noise far lower: give the level of such scans)."""
    band_limited_fraction: float = 0.0
    """Fraction of the examples whose clean patch is band-limited in-plane first (its spectrum cut at a
    random 50-90 % of the highest frequency along each in-plane axis, as zero-filled interpolation or
    resampling to a finer grid leaves a scan), white noise added after: the network learns that noise
    beyond a scan's own band can go entirely."""
    contrast_remap_fraction: float = 0.0
    """Fraction of the examples whose clean patch passes through a random tone curve first
    (:func:`~MRIDenoiseLib.training.data.random_tone_curve`): tissues of a T1 take the order and spacing of
    other contrasts (bright CSF and dark white matter as in T2, little grey-white contrast as in PD), so a
    network trained on T1 brains meets their noise over the intensities other contrasts put it on."""
    low_contrast_fraction: float = 0.0
    """Of the remapped examples, the fraction whose three brain tissues are drawn within a narrow band (a
    random 5-30 % of the brightest apart, as grey and white matter lie in PD or FLAIR): uniform draws
    rarely put them that close, and faint edges under noise are what such scans are made of."""
    tissue_model_fraction: float = 0.0
    """Fraction of the examples whose clean patch becomes a fuzzy tissue model
    (:func:`~MRIDenoiseLib.training.data.fuzzy_tissues`) in its own tissue values or, where it is remapped,
    in the tone curve's: each tissue flat, partial volume only at boundaries of a random sharpness. Brain
    phantoms (BrainWeb) are made so and real CSF and white matter nearly so, while the pre-cleaned targets
    otherwise carry their cleaner's faint texture into every example."""
    validation_tone_curves: int = 0
    """Seeded random tone curves (as in training, ``low_contrast_fraction`` included) each validation
    volume is also scored through, so the best checkpoint is picked across contrasts and not on T1 alone;
    their mean PSNR is logged as ``psnr_foreground@remapped``."""
    gamma_range: tuple[float, float] = (0.75, 1.35)
    scale_range: tuple[float, float] = (0.8, 1.25)
    validation_levels_percent: list[float] = Field(default_factory=lambda: [5.0, 15.0, 25.0])
    validation_noise: list[ValidationNoise] = Field(default_factory=lambda: list[ValidationNoise](["rician"]))
    """Noise models of the validation cases, each at every validation level: i.i.d. Rician,
    8-coil non-central chi, zero-filled correlated Rician noise, and Rician noise whose level varies
    0.5-1.5 times across the slab (``profile``, :func:`~MRIDenoiseLib.noise.coil_profile`); the blind
    level is estimated from each case, as the product does (one level, also for ``profile``)."""
    validation_slices: int = 24
    preclean_above_percent: float | None = 1.5
    preclean_model: str | None = None
    """A catalogue model that pre-cleans instead of non-local means (for instance the previous
    default model: sharper targets)."""
    preclean_planes: str = "auto"
    """How ``preclean_model`` runs: "auto" (one pass along the coarsest axis) or "all" (the three
    axes of isotropic volumes averaged, as the product runs a three-plane model)."""

    @model_validator(mode="after")
    def _check(self):
        _require(self.train, "data.train must list at least one volume")
        _require(self.validation, "data.validation must list at least one volume")
        overlap = set(self.train) & set(self.validation)
        _require(not overlap, f"volumes in both train and validation: {sorted(overlap)}")
        _require(self.patch_size >= 16 and self.patch_size % 8 == 0, "data.patch_size must be a multiple of 8, >= 16")
        low, high = self.level_range_percent
        _require(0 < low <= high <= 100, "data.level_range_percent must satisfy 0 < low <= high <= 100")
        fractions = ("rician_fraction", "varying_noise_fraction", "coil_fraction", "zero_filled_fraction")
        for name in (
            *fractions,
            "band_limited_fraction",
            "contrast_remap_fraction",
            "low_contrast_fraction",
            "one_level_fraction",
            "overstated_level_fraction",
            "tissue_model_fraction",
        ):
            _require(0 <= getattr(self, name) <= 1, f"data.{name} must be in [0, 1]")
        least, most = self.overstated_level_percent
        _require(0 <= least <= most <= 100, "data.overstated_level_percent must satisfy 0 <= low <= high <= 100")
        _require(bool(self.validation_noise), "data.validation_noise must name at least one noise model")
        _require(self.validation_slices >= 8, "data.validation_slices must be >= 8")
        _require(self.validation_tone_curves >= 0, "data.validation_tone_curves must be >= 0")
        _require(self.preclean_planes in PLANES, f"data.preclean_planes must be one of {PLANES}")
        return self


class QSpaceSettings(_Section):
    """Voxel-wise q-space training (paper 001): signals simulated from random tensors.

    ``scheme`` is "paper" (32 samples: b = 50 first and last, thirty at b = 1000) or an FSL .bval
    file (its .bvec beside it), relative to the config file. Signals have S0 = 1; each sample gets
    a noise standard deviation drawn uniformly from ``sigma_range``.
    """

    scheme: str = "paper"
    samples: int = 200_000
    noise: Literal["gaussian", "rician"] = "gaussian"
    sigma_range: tuple[float, float] = (0.0, 0.91)
    validation_fraction: float = 0.2
    epochs: int = 40
    kl_start_epoch: int = 2
    kl_step: float = 1e-4
    kl_maximum: float = 1.5e-3

    @model_validator(mode="after")
    def _check(self):
        _require(self.samples >= 100, "qspace.samples must be at least 100")
        low, high = self.sigma_range
        _require(0 <= low <= high, "qspace.sigma_range must satisfy 0 <= low <= high")
        _require(0 < self.validation_fraction < 1, "qspace.validation_fraction must be in (0, 1)")
        _require(self.epochs > 0, "qspace.epochs must be positive")
        return self


class ShellSettings(_Section):
    """Shell-network training (``training/shells.py``) on simulated series of brain phantoms.

    Each source DWI (paths relative to ``root``, which is relative to the config file; the
    environment variable MRIDENOISE_DATA_ROOT overrides it) gives a phantom with crossing fibres,
    turned to ``orientations`` random orientations. ``crops`` cubes are cut from them, each given a
    random gradient table (one shell, or two with ``two_shell_fraction``; b-values from
    ``bvalue_range``, directions per shell from ``directions_range``, b0 volumes from ``b0_range``)
    and Rician noise with sigma drawn log-uniformly from ``sigma_range`` (fractions of the phantom's
    median b0), then denoised with MP-PCA: the network learns to correct MP-PCA's spherical-harmonic
    coefficients towards the noiseless ones. ``validation_fraction`` of the cubes are held out.
    """

    sources: list[str]
    root: str = "../../shared/data"
    orientations: int = 24
    crops: int = 144
    crop_size: int = 32
    sigma_range: tuple[float, float] = (0.01, 0.15)
    bvalue_range: tuple[float, float] = (500.0, 3000.0)
    directions_range: tuple[int, int] = (6, 64)
    b0_range: tuple[int, int] = (1, 5)
    two_shell_fraction: float = 0.4
    validation_fraction: float = 0.1
    anisotropy_weight: float = 1.0
    """Weight of the errors of the anisotropic coefficients (order 2 and 4) against the isotropic one
    (order 0) in the loss. MP-PCA's largest error is isotropic (its Rician bias), so with 1 the
    network learns to remove that and leaves the orientation-carrying coefficients as MP-PCA had them."""

    @model_validator(mode="after")
    def _check(self):
        _require(bool(self.sources), "shells.sources must name at least one DWI")
        _require(self.anisotropy_weight > 0, "shells.anisotropy_weight must be positive")
        _require(self.orientations > 0 and self.crops >= self.orientations, "shells.crops must be >= orientations > 0")
        _require(self.crop_size >= 8 and self.crop_size % 4 == 0, "shells.crop_size must be a multiple of 4, >= 8")
        low, high = self.sigma_range
        _require(0 < low <= high, "shells.sigma_range must satisfy 0 < low <= high")
        _require(50 < self.bvalue_range[0] <= self.bvalue_range[1], "shells.bvalue_range must lie above b0 (50)")
        _require(6 <= self.directions_range[0] <= self.directions_range[1], "shells.directions_range starts at >= 6")
        _require(1 <= self.b0_range[0] <= self.b0_range[1], "shells.b0_range starts at >= 1")
        _require(0 <= self.two_shell_fraction <= 1, "shells.two_shell_fraction must be in [0, 1]")
        _require(0 < self.validation_fraction < 1, "shells.validation_fraction must be in (0, 1)")
        return self


class ModelConfig(_Section):
    """The network and the catalogue identity of what the run exports."""

    id: str
    title: str
    architecture: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    description: str = ""
    citation: str = ""
    notes: list[str] = Field(default_factory=list)
    """Paragraphs for the model card's Notes section (design choices, what did not work)."""
    planes: str = "auto"
    """How the product runs the exported model: "all" averages passes along the three axes of an
    isotropic volume, "auto" makes one pass (the catalogue entry's ``planes``)."""

    @model_validator(mode="after")
    def _check(self):
        _require(self.planes in PLANES, f"model.planes must be one of {PLANES}")
        _require(
            self.architecture in ARCHITECTURES,
            f"unknown architecture {self.architecture!r}; known: {sorted(ARCHITECTURES)}",
        )
        _require(
            bool(self.id) and self.id.replace("-", "").replace(".", "").isalnum(),
            "model.id must be letters, digits, '-' and '.'",
        )
        if not self.architecture.startswith("qspace-"):  # q-space sizes come from the gradient table
            try:
                build_network(self.architecture, self.arguments)
            except (TypeError, ValueError) as error:
                raise ValueError(f"model.arguments do not make a {self.architecture}: {error}") from None
        return self


class QSpaceOptimConfig(_Section):
    """Adam on the q-space signals: batch size, learning rate, reconstruction loss."""

    batch_size: int = 16
    learning_rate: float = 1e-3
    loss: str = "l1"

    @model_validator(mode="after")
    def _check(self):
        _require(self.batch_size > 0, "optim.batch_size must be positive")
        _require(self.learning_rate > 0, "optim.learning_rate must be positive")
        _require(self.loss in ("l1", "l2", "huber"), "optim.loss must be 'l1', 'l2' or 'huber'")
        return self


class ScheduleConfig(_Section):
    """Steps, batch size and learning rate of image training (cosine decay after a linear warm-up)."""

    steps: int = 20000
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup_steps: int = 500

    @model_validator(mode="after")
    def _check_schedule(self):
        _require(self.steps > 0 and self.batch_size > 0, "optim.steps and optim.batch_size must be positive")
        _require(self.learning_rate > 0, "optim.learning_rate must be positive")
        _require(self.warmup_steps >= 0, "optim.warmup_steps must be >= 0")
        return self


class GanOptimConfig(ScheduleConfig):
    """The GAN's schedule (its optimisers are Adam with the paper's betas, in float32)."""

    noise_normalised: bool = False
    """Divide each example's cycle and self-reconstruction (L1) terms by its noise level, so that
    low-noise examples count as much as high-noise ones."""


class ConsensusOptimConfig(ScheduleConfig):
    """Optimiser (AdamW or RMSprop), precision and weight averaging (the consensus losses are fixed)."""

    weight_decay: float = 0.0
    optimizer: str = "adamw"
    precision: str = "float32"
    """"bfloat16" runs forward and backward passes under bfloat16 autocast (weights and optimiser
    stay float32): about 1.8x faster on CPUs with AVX512-BF16 or AMX and on recent GPUs. Where the device
    has no native bfloat16 the trainer warns and runs float32 (emulated, it is slower than float32)."""
    ema_decay: float = 0.0
    """Above 0, the weights validated, checkpointed as best/last and exported are an exponential
    moving average of the trained ones, updated after every step: average = decay x average +
    (1 - decay) x weights (0.999 averages over about the last 1000 steps). 0 turns it off."""

    @model_validator(mode="after")
    def _check_optimiser(self):
        _require(self.precision in PRECISIONS, f"optim.precision must be one of {PRECISIONS}")
        _require(self.optimizer in ("adamw", "rmsprop"), "optim.optimizer must be 'adamw' or 'rmsprop'")
        _require(0.0 <= self.ema_decay < 1.0, "optim.ema_decay must be in [0, 1)")
        _require(self.weight_decay >= 0, "optim.weight_decay must be >= 0")
        return self


class OptimConfig(ConsensusOptimConfig):
    """Supervised training: the optimiser, schedule and precision, and the loss."""

    loss: str = "l1"
    noise_normalised: bool = False
    """Divide each example's pixel loss by its noise level (squared for the "l2" loss), so that
    low-noise examples count as much as high-noise ones (a blind model otherwise learns mostly from
    the noisiest patches)."""
    ssim_weight: float = 0.0
    """Adds this weight times (1 - SSIM) of prediction and target: 2-D SSIM with the benchmark's
    7x7 uniform window, K1 = 0.01, K2 = 0.03 and data range 1, computed in float32."""
    ssim_noise_normalised: bool = False
    """Divide each example's (1 - SSIM) by its noise level (the mean of its level map): 1 - SSIM
    grows about in proportion to the level, so low-noise examples then count as much as noisy ones."""

    @model_validator(mode="after")
    def _check_loss(self):
        _require(self.ssim_weight >= 0, "optim.ssim_weight must be >= 0")
        _require(
            not self.ssim_noise_normalised or self.ssim_weight > 0,
            "optim.ssim_noise_normalised needs optim.ssim_weight > 0",
        )
        _require(self.loss in ("l1", "l2", "huber"), "optim.loss must be 'l1', 'l2' or 'huber'")
        return self


class TransferConfig(_Section):
    """Start from pretrained weights instead of random ones (paper 003's transfer learning).

    ``config``: another training config (path relative to this one) whose run is trained first
    when it has not finished, and whose best weights initialise the whole network.
    ``encoder_weights``: a ResNet-18 state dict (safetensors, torchvision names) for the
    encoder of a ``unet-dctd-a``, for users who have ImageNet weights.
    ``model``: a catalogue model (its shipped weights, sha256-verified) of the same architecture
    and arguments, for fine-tuning a released model without re-running the chain that made it.
    ``widen``: the pretraining stage is a ``residual-unet-2.5d`` with fewer channels per level;
    this stage starts as the same function with more channels (see ``load_narrower``).
    ``sum_skips``: the source (``model`` or ``config``) is a ``residual-unet-2.5d`` of the same
    widths whose shallowest levels concatenate the skips this network's ``summed_skips`` levels add;
    every layer is copied and those decoders start from the weights that read the skip (see
    ``load_concatenating``).
    ``distil``: the loss compares the prediction with what the source network (``model`` or
    ``config``) outputs for the same input, instead of with the clean target: the new network
    learns to compute what the source computes (for a cheaper network of the source's quality).
    """

    config: str | None = None
    encoder_weights: str | None = None
    model: str | None = None
    widen: bool = False
    sum_skips: bool = False
    distil: bool = False

    @model_validator(mode="after")
    def _check(self):
        _require(
            sum(source is not None for source in (self.config, self.encoder_weights, self.model)) == 1,
            "transfer needs exactly one of 'config', 'encoder_weights' and 'model'",
        )
        _require(not self.widen or self.config is not None, "transfer.widen needs transfer.config")
        _require(not (self.widen and self.sum_skips), "transfer.widen and transfer.sum_skips exclude each other")
        _require(self.encoder_weights is None or not self.sum_skips, "transfer.sum_skips needs a model or a config")
        _require(self.encoder_weights is None or not self.distil, "transfer.distil needs a model or a config")
        return self


class PerceptualConfig(_Section):
    """A perceptual term added to the pixel loss with ``weight``.

    ``features``: "transfer" (the encoder of the network the transfer stage trained on MRI,
    frozen) or the path of a VGG-16 safetensors file with torchvision key names.
    """

    weight: float = 0.1
    features: str = "transfer"

    @model_validator(mode="after")
    def _check(self):
        _require(self.weight > 0, "perceptual.weight must be positive")
        return self


class SelfSupervisedConfig(_Section):
    """Real scans with no clean image, learned beside the synthetic pairs (recorrupted-to-recorrupted).

    Each scan keeps its own noise, whose level is estimated blind once. An example is a patch of the
    scan with ``recorruption`` times that level of seeded Gaussian noise added (the network's input,
    told the combined level) and the same draw divided by ``recorruption`` subtracted (its target):
    where the scan's noise is Gaussian the two copies' noise is independent, and the squared error
    against the target is the error against the unseen clean patch plus a constant (Pang et al., CVPR
    2021). The loss compares the Rician mean of the prediction with the target (a magnitude's mean lies
    above its signal), inside the scan's foreground only (the air's Rayleigh noise is not Gaussian). A
    4-D file gives each of its frames (echoes, repetitions) as a scan. Paths are relative to ``data.root``.
    Scans whose noise is correlated between neighbours (zero-filled interpolation) break the method's
    assumption: leave them out.
    """

    scans: list[str]
    fraction: float = 0.25
    """Share of the examples drawn from ``scans``; the rest are the synthetic pairs of ``data``."""
    recorruption: float = 0.5

    @model_validator(mode="after")
    def _check(self):
        _require(self.scans, "self_supervised.scans must list at least one scan")
        _require(0 < self.fraction < 1, "self_supervised.fraction must be in (0, 1)")
        _require(self.recorruption > 0, "self_supervised.recorruption must be positive")
        return self


CONSENSUS_MODES = ("consensus", "noise2noise", "noise2clean")


class ConsensusSettings(_Section):
    """Training from two independent noisy realisations of each patch (paper 004), and its baselines.

    ``mode``: "consensus" (two U-Nets, loss (8) + ``weight_decay`` x (10) + ``consistency`` x (11),
    a ``consensus-pair`` network), "noise2noise" (one network, one realisation mapped to the other) or
    "noise2clean" (one network fitted to the clean patch: the supervised bound). The realisations
    are two independent noise draws at one level on the same clean patch of ``data.train``; the
    clean patch is seen only by "noise2clean". The image-consistency estimate (11) is the mean of
    the two realisations. ``distil_steps`` > 0 then trains one ``residual-unet-2.5d`` with the
    pair's member arguments to map a single realisation to the pair's consensus image (9), the
    paper's suggestion for deployment; the run exports that network.
    """

    mode: str = "consensus"
    weight_decay: float = 1e-6
    consistency: float = 0.0
    distil_steps: int = 0

    @model_validator(mode="after")
    def _check(self):
        _require(self.mode in CONSENSUS_MODES, f"consensus.mode must be one of {CONSENSUS_MODES}")
        _require(self.weight_decay >= 0 and self.consistency >= 0, "consensus weights must be >= 0")
        _require(self.distil_steps >= 0, "consensus.distil_steps must be >= 0")
        _require(self.mode == "consensus" or self.distil_steps == 0, "only a consensus pair can be distilled")
        return self


GAN_METHODS = ("disentangled", "cyclegan")


class GanSettings(_Section):
    """Unpaired training from a noisy set and a clean set of different subjects (paper 000).

    ``data.train`` is the noisy domain (its volumes get simulated noise at levels of
    ``data.level_range_percent``), ``clean_domain`` the clean one; the two must not share a volume.
    ``method``: "disentangled" (paper 000's model, loss (11)) or "cyclegan" (its baseline: the same
    generators without the noise code, adversarial and cycle losses only). ``perceptual_features``
    names the frozen network of loss (10): a catalogue id of a ``unet-dctd-a`` model (trained
    here on MRI) or a VGG-16 safetensors file.
    """

    clean_domain: list[str]
    method: str = "disentangled"
    adversarial: float = 1.0
    kl: float = 0.01
    cycle: float = 10.0
    perceptual: float = 1.0
    reconstruction: float = 10.0
    """Weight of self-reconstruction within each domain (L1): G_H(E_c(h), E_n(h)) = h and G_L(E_c(l), E_n(l)) = l,
    or CycleGAN's identity mappings. Not in the paper's (11); it holds intensities in place."""
    perceptual_features: str = "unet-dctd-a"
    discriminator_learning_rate: float = 2e-4

    @model_validator(mode="after")
    def _check(self):
        _require(self.method in GAN_METHODS, f"gan.method must be one of {GAN_METHODS}")
        _require(bool(self.clean_domain), "gan.clean_domain must list at least one volume")
        for name in ("adversarial", "kl", "cycle", "perceptual", "reconstruction"):
            _require(getattr(self, name) >= 0, f"gan.{name} must be >= 0")
        _require(self.discriminator_learning_rate > 0, "gan.discriminator_learning_rate must be positive")
        return self


class _RunConfig(_Section):
    """What every kind of run has: the network, the seed, the threads, and where the config came from."""

    model: ModelConfig
    seed: int = 0
    threads: int = 0
    source: Path | None = Field(default=None, exclude=True)
    """The file the config was read from (set by :func:`load_config`; relative paths start there)."""

    def relative_path(self, name: str) -> Path:
        """A path written in the config, relative to the config file's folder unless absolute."""
        path = Path(name)
        if not path.is_absolute() and self.source is not None:
            path = self.source.parent / path
        return path


class ImageRunConfig(_RunConfig):
    """Training on image patches of real volumes: data, validation and logging cadence, exported weights."""

    data: DataConfig
    optim: ScheduleConfig = Field(default_factory=ScheduleConfig)
    """Each kind narrows this to the options its trainer honours."""
    validate_every: int = 1000
    log_every: int = 50
    export_weights: str = "best"
    """Which weights ``--export`` ships: "best" (highest mean validation PSNR) or "last" (the final,
    annealed weights; for runs whose validation swings from one checkpoint to the next)."""

    @model_validator(mode="after")
    def _check_image_run(self):
        _require(self.validate_every > 0 and self.log_every > 0, "validate_every and log_every must be positive")
        _require(self.export_weights in ("best", "last"), "export_weights must be 'best' or 'last'")
        return self

    def data_root(self) -> Path:
        """The folder data paths start from (MRIDENOISE_DATA_ROOT overrides ``data.root``)."""
        return self.relative_path(os.environ.get(DATA_ROOT_VARIABLE) or self.data.root).resolve()


class SupervisedConfig(ImageRunConfig):
    """Clean/noisy pairs synthesised from real volumes, optionally from pretrained weights (paper 003), and
    optionally real scans with no clean image learned self-supervised beside them (``self_supervised``)."""

    kind: Literal["supervised"]
    optim: OptimConfig = Field(default_factory=OptimConfig)
    transfer: TransferConfig | None = None
    perceptual: PerceptualConfig | None = None
    self_supervised: SelfSupervisedConfig | None = None

    @model_validator(mode="after")
    def _check_supervised(self):
        if self.self_supervised is not None:
            shared = set(self.self_supervised.scans) & set(self.data.train + self.data.validation)
            _require(not shared, f"self_supervised.scans shares volumes with data.train/validation: {sorted(shared)}")
            _require(self.optim.loss == "l2", "self_supervised needs optim.loss 'l2' (right on average: squared error)")
            _require(
                self.transfer is None or not self.transfer.distil,
                "self_supervised and transfer.distil exclude each other (a distilled target has no noise to recorrupt)",
            )
            _require(self.perceptual is None, "self_supervised and perceptual exclude each other (the target is noisy)")
        if self.transfer is not None and (self.transfer.widen or self.transfer.sum_skips):
            _require(
                self.model.architecture == "residual-unet-2.5d",
                "transfer.widen and transfer.sum_skips are for residual-unet-2.5d networks",
            )
        if self.transfer is not None and self.transfer.encoder_weights is not None:
            _require(self.model.architecture == "unet-dctd-a", "transfer.encoder_weights applies to unet-dctd-a")
        if self.perceptual is not None and self.perceptual.features == "transfer":
            _require(
                self.transfer is not None and self.transfer.config is not None,
                "perceptual.features 'transfer' needs a transfer.config whose network gives the features",
            )
        return self


class ConsensusRunConfig(ImageRunConfig):
    """Two independent noisy realisations of each patch (paper 004) and its baselines."""

    kind: Literal["consensus"]
    consensus: ConsensusSettings
    optim: ConsensusOptimConfig = Field(default_factory=ConsensusOptimConfig)

    @model_validator(mode="after")
    def _check_consensus(self):
        pair = self.model.architecture == "consensus-pair"
        _require(
            pair == (self.consensus.mode == "consensus"),
            "consensus.mode 'consensus' trains a 'consensus-pair' network; the baselines train a single one",
        )
        return self


class GanRunConfig(ImageRunConfig):
    """Unpaired noisy and clean sets (paper 000)."""

    kind: Literal["gan"]
    gan: GanSettings
    optim: GanOptimConfig = Field(default_factory=GanOptimConfig)

    @model_validator(mode="after")
    def _check_gan(self):
        overlap = set(self.gan.clean_domain) & set(self.data.train + self.data.validation)
        _require(not overlap, f"gan.clean_domain shares volumes with data.train/validation: {sorted(overlap)}")
        wanted = "disentangled-denoiser" if self.gan.method == "disentangled" else "cyclegan-generator"
        _require(self.model.architecture == wanted, f"gan.method {self.gan.method!r} trains a {wanted!r} network")
        return self


class QSpaceRunConfig(_RunConfig):
    """Voxel-wise q-space autoencoders (paper 001) on simulated diffusion signals."""

    kind: Literal["qspace"]
    qspace: QSpaceSettings
    optim: QSpaceOptimConfig = Field(default_factory=QSpaceOptimConfig)


class ShellRunConfig(_RunConfig):
    """The shell network: MP-PCA's spherical-harmonic coefficients corrected, on simulated phantom series."""

    kind: Literal["shells"]
    shells: ShellSettings
    optim: ScheduleConfig = Field(default_factory=ScheduleConfig)
    validate_every: int = 250
    log_every: int = 50

    def data_root(self) -> Path:
        """The folder source paths start from (MRIDENOISE_DATA_ROOT overrides ``shells.root``)."""
        return self.relative_path(os.environ.get(DATA_ROOT_VARIABLE) or self.shells.root).resolve()


TrainConfig = Annotated[
    SupervisedConfig | ConsensusRunConfig | GanRunConfig | QSpaceRunConfig | ShellRunConfig,
    Field(discriminator="kind"),
]
"""A whole training run: one model per kind, chosen by the config's ``kind`` field."""
RUN_CONFIGS = (SupervisedConfig, ConsensusRunConfig, GanRunConfig, QSpaceRunConfig, ShellRunConfig)
KINDS = ("supervised", "consensus", "gan", "qspace", "shells")
"""The ``kind`` of each of :data:`RUN_CONFIGS`, in order."""
_TRAIN_CONFIG: TypeAdapter[TrainConfig] = TypeAdapter(TrainConfig)


def load_config(
    path: str | Path,
) -> SupervisedConfig | ConsensusRunConfig | GanRunConfig | QSpaceRunConfig | ShellRunConfig:
    """Read and validate a JSON training config; every problem is reported by the path of its field."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(raw, dict) or "source" in raw:
        raise ConfigError(f"{path}: a config is a JSON object of sections (and 'source' is not one of them)")
    try:
        config = _TRAIN_CONFIG.validate_json(text)
    except ValidationError as error:
        raise ConfigError(f"{path.name}: {_describe(error, raw.get('kind'))}") from None
    config.source = path.resolve()
    return config


def config_schema() -> dict[str, Any]:
    """The JSON schema of training configs (written to docs/training-config.schema.json)."""
    return _TRAIN_CONFIG.json_schema()


def _describe(error: ValidationError, kind: object) -> str:
    """Each problem as ``section.field: message``; a section or option of another kind of training is
    named as such (a model-level check's message is its own)."""
    parts = []
    for problem in error.errors():
        location = tuple(str(part) for part in problem["loc"])
        if location and location[0] == kind:
            location = location[1:]  # the union member's tag
        path = ".".join(location)
        message = str(problem["msg"]).removeprefix("Value error, ")
        if problem["type"] == "missing" and len(location) == 1 and location[0] in _SECTIONS:
            message = f"a {kind} config needs '{path}'"
        elif problem["type"] == "extra_forbidden" and len(location) == 1 and location[0] in _SECTIONS:
            message = f"a {kind} config has no section {path}"
        elif problem["type"] == "extra_forbidden" and path in _OPTIONS:
            message = f"{path}: not used by {kind} training; remove it"
        elif problem["type"] in ("union_tag_invalid", "union_tag_not_found"):
            message = f"kind must be one of {', '.join(KINDS)}"
        parts.append(message if not path or message.startswith(("a ", path)) else f"{path}: {message}")
    return "; ".join(parts)


_SECTIONS = {"data", "qspace", "shells", "transfer", "perceptual", "consensus", "gan"}
_OPTIONS = {name for run in RUN_CONFIGS for name in run.model_fields if name not in _SECTIONS} | {
    f"optim.{name}" for optim in (OptimConfig, GanOptimConfig, QSpaceOptimConfig) for name in optim.model_fields
}
"""Every section and option some kind of training reads: set on a kind that does not, they are named as such."""


def _require(condition: bool, message: str) -> None:
    """Inside a model validator: a failed check becomes a validation error carrying ``message``."""
    if not condition:
        raise ValueError(message)

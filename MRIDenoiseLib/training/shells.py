"""Trainer for the shell network (``denoisers/shells.py``): MP-PCA's spherical-harmonic coefficients
corrected towards the noiseless ones, learned on simulated series of brain phantoms.

Data: every source DWI gives a phantom with crossing fibres (``dwi_phantom.py``), turned to random
orientations (anatomy and fibres together; a reflection half of the time). Cubes are cut from them,
each with its own random gradient table, Rician noise level and MP-PCA run (on the cube and a margin,
so MP-PCA's patches at the cube's faces see real neighbours). The cubes are built once into the run
folder (``pool/``, plain .npz arrays), from the config's seed, by ``threads`` processes: MP-PCA is
the slow part (about 10-25 s per cube on one core). Whole orientations are held out for validation.

Loss: the squared error of the corrected coefficients inside the brain, divided by sigma^2 so that
every noise level counts alike, the anisotropic coefficients weighted by ``shells.anisotropy_weight``
(MP-PCA's Rician bias, an isotropic error, otherwise dominates what the network learns). The
validation reports the same for MP-PCA alone (what the untrained network scores, since it starts as
MP-PCA), so the card says how much the network adds.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..denoisers.dipy_methods import MarchenkoPasturPCA
from ..denoisers.shells import network_input, rician_debiased
from ..diffusion import GradientTable, fibonacci_directions, is_b0
from ..dti import add_signal_noise
from ..io import read_volume
from ..nets import build_network
from ..nets.shells import MPPCA_SLICE, SIGMA_CHANNEL
from ..spherical import fit_of_harmonics, fit_shell, shells_of
from .checkpoints import BEST_WEIGHTS_NAME, read_run_state
from .config import ShellRunConfig, ShellSettings
from .dwi_phantom import Phantom, build_phantom, phantom_signals, rotated
from .loop import LOWEST_MSE, LoopSettings, Reporting, TrainingLoop, TrainingState
from .trainer import hardware_summary, learning_rate_factor

MPPCA_MARGIN = 4
"""Voxels around each cube that MP-PCA sees and the network does not (its 5x5x5 patches need neighbours)."""
LEAST_BRAIN = 0.3
"""The smallest fraction of a cube inside the brain."""
SHELL_SEPARATION = 400.0
"""Two-shell tables keep their b-values at least this far apart (s/mm^2)."""


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation, followed by a reflection half of the time."""
    matrix, upper = np.linalg.qr(rng.standard_normal((3, 3)))
    matrix *= np.sign(np.diag(upper))
    if np.linalg.det(matrix) < 0:
        matrix[:, 0] *= -1
    return matrix @ np.diag([-1.0, 1.0, 1.0]) if rng.random() < 0.5 else matrix


def random_table(settings: ShellSettings, rng: np.random.Generator) -> GradientTable:
    """b0 volumes, then one or two shells of randomly turned, evenly spread directions."""
    low, high = settings.bvalue_range
    bvalues = [float(rng.uniform(low, high))]
    if rng.random() < settings.two_shell_fraction and high - low >= SHELL_SEPARATION:
        while abs(bvalues[0] - (second := float(rng.uniform(low, high)))) < SHELL_SEPARATION:
            pass
        bvalues.append(second)
    b0_count = int(rng.integers(settings.b0_range[0], settings.b0_range[1] + 1))
    rows, values = [np.zeros((b0_count, 3))], [np.zeros(b0_count)]
    fewest, most = settings.directions_range
    for bvalue in bvalues:
        count = int(rng.integers(fewest, most + 1))
        rows.append(fibonacci_directions(count) @ random_rotation(rng).T)
        values.append(np.full(count, bvalue))
    return GradientTable(np.concatenate(values), np.vstack(rows))


def _cube(phantom: Phantom, size: int, rng: np.random.Generator) -> Phantom:
    """A random cube of ``size`` voxels mostly inside the brain (the phantom zero-padded when smaller)."""
    shape = np.maximum(np.asarray(phantom.s0.shape), size)
    padding = [(0, int(total - length)) for total, length in zip(shape, phantom.s0.shape, strict=True)]
    padded = Phantom(
        np.pad(phantom.s0, padding),
        np.pad(phantom.mask, padding),
        np.pad(phantom.tensors, [*padding, (0, 0), (0, 0)]),
        np.pad(phantom.crossing, padding),
        np.pad(phantom.second, [*padding, (0, 0), (0, 0)]),
        phantom.spacing_zyx,
        phantom.direction,
    )
    best: Phantom | None = None
    for _ in range(50):
        start = [int(rng.integers(0, length - size + 1)) for length in shape]
        cube = padded.crop(tuple(slice(first, first + size) for first in start))  # type: ignore[arg-type]
        if best is None or cube.mask.mean() > best.mask.mean():
            best = cube
        if cube.mask.mean() >= LEAST_BRAIN:
            break
    assert best is not None
    return best


def simulate_cube(
    phantom: Phantom, reference: float, settings: ShellSettings, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """One cube: random table and noise, MP-PCA, then each shell's network input and noiseless target."""
    size = settings.crop_size + 2 * MPPCA_MARGIN
    cube = _cube(phantom, size, rng)
    table = random_table(settings, rng)
    clean = phantom_signals(cube, table).astype(np.float64)
    low, high = settings.sigma_range
    sigma = float(np.exp(rng.uniform(math.log(low), math.log(high)))) * reference
    noisy = add_signal_noise(clean, sigma, "rician", rng).astype(np.float32)
    mppca = MarchenkoPasturPCA()
    denoised = mppca.denoise_series(noisy, table)
    inner = (slice(MPPCA_MARGIN, MPPCA_MARGIN + settings.crop_size),) * 3
    sigma_map = np.asarray(mppca.sigma_map, np.float32)[inner]
    b0 = denoised[..., is_b0(table.bvalues)].mean(axis=-1)[inner]
    items: list[dict[str, Any]] = []
    for shell in shells_of(table):
        fit = fit_shell(table.directions[shell.indices])
        cleaned, measured, truth = (
            np.moveaxis(fit.coefficients(data[inner][..., shell.indices]), -1, 0) for data in (denoised, noisy, clean)
        )
        inputs = network_input(b0, sigma_map, cleaned, measured, fit, shell.bvalue, reference)
        items.append(
            {
                "inputs": inputs.astype(np.float16),
                "target": (truth / reference).astype(np.float16),
                "basis": fit.basis.astype(np.float32),
                "used": np.array(fit.used),
                "level": np.array(sigma / reference),
                "mask": cube.mask[inner],
            }
        )
    return items


def _build_orientation(job: tuple[Phantom, int, int, ShellSettings, Path]) -> None:
    """Write one orientation's cubes (``<orientation>-<cube>-<shell>.npz``) unless already there."""
    phantom, orientation, seed, settings, folder = job
    count = math.ceil(settings.crops / settings.orientations)
    rng = np.random.default_rng([seed, orientation])
    turned = rotated(phantom, random_rotation(rng))
    reference = turned.reference_b0
    for index in range(count):
        for number, item in enumerate(simulate_cube(turned, reference, settings, rng)):
            target = folder / f"{orientation:03d}-{index:02d}-{number}.npz"
            partial = folder / f".partial-{target.name}"  # outside the pool's pattern until complete
            np.savez(partial, **item)
            partial.replace(target)


def _orientation_done(folder: Path, orientation: int, settings: ShellSettings) -> bool:
    count = math.ceil(settings.crops / settings.orientations)
    return all(any(folder.glob(f"{orientation:03d}-{index:02d}-*.npz")) for index in range(count))


def build_pool(config: ShellRunConfig, folder: Path) -> list[Path]:
    """Simulate (or find, from an earlier start) every cube of the run; returns the files, sorted."""
    settings = config.shells
    folder.mkdir(parents=True, exist_ok=True)
    missing = [o for o in range(settings.orientations) if not _orientation_done(folder, o, settings)]
    sources = sorted({o % len(settings.sources) for o in missing})
    phantoms = {i: build_phantom(read_volume(config.data_root() / settings.sources[i])) for i in sources}
    jobs = [(phantoms[o % len(settings.sources)], o, config.seed, settings, folder) for o in missing]
    workers = max(1, config.threads)
    if workers == 1:
        for job in jobs:
            _build_orientation(job)
    else:
        with _single_threaded_children():
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                list(pool.map(_build_orientation, jobs))
    return sorted(folder.glob("[0-9]*-*-*.npz"))


@contextmanager
def _single_threaded_children() -> Iterator[None]:
    """Processes started inside run their linear algebra on one thread each (MP-PCA's many small
    eigen-decompositions slow down several times when each process also spreads over every core)."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, "1"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class ShellExample:
    """One shell of one cube, as tensors; with ``rician_correction``, the MP-PCA coefficients among the
    inputs debiased as the denoiser does (``denoisers/shells.rician_debiased``)."""

    def __init__(self, path: Path, rician_correction: bool = False) -> None:
        with np.load(path) as data:
            inputs = data["inputs"].astype(np.float32)
            self.used = int(data["used"])
            if rician_correction:
                fit = fit_of_harmonics(data["basis"][:, : self.used].astype(np.float64))
                inputs[MPPCA_SLICE] = rician_debiased(inputs[MPPCA_SLICE], fit, inputs[SIGMA_CHANNEL])
            self.inputs = torch.from_numpy(inputs)
            self.target = torch.from_numpy(data["target"].astype(np.float32))
            self.basis = torch.from_numpy(data["basis"])
            self.level = float(data["level"])
            self.mask = torch.from_numpy(data["mask"])
        self.orientation = int(path.name.split("-")[0])


def shell_loss(prediction: torch.Tensor, example: ShellExample, anisotropy_weight: float = 1.0) -> torch.Tensor:
    """Squared coefficient error inside the brain over sigma^2, the anisotropic coefficients (every one
    but the first) weighted by ``anisotropy_weight``; with weight 1, the shell's signal error (the
    harmonics are orthonormal on the sphere)."""
    weights = torch.full((example.used, 1), anisotropy_weight)
    weights[0] = 1.0
    error = (prediction - example.target)[: example.used][:, example.mask]
    return (weights * error**2).sum(0).mean() / example.level**2


class ShellTrainer:
    """Step-based training of the shell network on the simulated pool, in the one training loop."""

    def __init__(
        self,
        config: ShellRunConfig,
        output_dir: str | Path,
        show_progress: bool = True,
        cancel=None,
    ) -> None:
        self.config = config
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.run_dir = Path(output_dir)
        debiased = bool(config.model.arguments.get("rician_correction", False))
        examples = [ShellExample(path, debiased) for path in build_pool(config, self.run_dir / "pool")]
        held_out = max(1, round(config.shells.orientations * config.shells.validation_fraction))
        self.validation = [e for e in examples if e.orientation < held_out]
        self.train = [e for e in examples if e.orientation >= held_out]
        self.network = build_network(config.model.architecture, config.model.arguments)
        self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=config.optim.learning_rate, weight_decay=1e-4)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: learning_rate_factor(step, config.optim)
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        settings = LoopSettings(
            total_steps=config.optim.steps,
            validate_every=config.validate_every,
            selection=LOWEST_MSE,
            log_every=config.log_every,
            run_dir=self.run_dir,
            identity=f"{config.model.architecture} {config.model.arguments} {config.shells.model_dump_json()}",
        )
        self.loop = TrainingLoop(self, settings, Reporting(bar=show_progress), cancel)

    @property
    def state(self) -> TrainingState:
        return self.loop.state

    def fit(self, max_minutes: float | None = None, max_steps: int | None = None) -> TrainingState:
        """Train to ``optim.steps``, or until ``max_minutes`` pass or ``max_steps`` steps of this call are done."""
        self.loop.state.hardware = hardware_summary(torch.device("cpu"))
        return self.loop.run(None if max_minutes is None else 60 * max_minutes, max_steps)

    def resume(self) -> bool:
        """Continue from the checkpoint in the output folder; False when there is none."""
        return self.loop.resume()

    # ---- the loop's task -------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        picks = torch.randint(len(self.train), (self.config.optim.batch_size,), generator=self.generator)
        batch = [self.train[int(index)] for index in picks]
        weight = self.config.shells.anisotropy_weight
        loss = torch.stack([shell_loss(self.network(e.inputs[None])[0], e, weight) for e in batch]).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.network.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        return {"loss": float(loss.detach())}

    def validate(self, network: nn.Module) -> dict[str, float]:
        """The loss on the held-out orientations, and MP-PCA's own (the coefficients left uncorrected)."""
        weight = self.config.shells.anisotropy_weight
        with torch.no_grad():
            network_losses = [float(shell_loss(network(e.inputs[None])[0], e, weight)) for e in self.validation]
            mppca_losses = [float(shell_loss(e.inputs[MPPCA_SLICE], e, weight)) for e in self.validation]
        return {"validation_mse": float(np.mean(network_losses)), "mppca_mse": float(np.mean(mppca_losses))}

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_checkpoint_state(self, payload: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.generator.set_state(payload["generator"])

    def save_weights(self, path: Path, network: nn.Module) -> None:
        from ..models.weights import save_weights

        save_weights(path, network, self.config.model.architecture, self.config.model.arguments)


def export_shell_run(config: ShellRunConfig, run_dir: Path, models_dir: Path | None = None) -> Path:
    """Publish a shell-network run: weights, a catalogue entry for diffusion series, a model card."""
    from ..models.paths import bundled_models_dir
    from .export import card_header, publish, read_history, run_summary, with_notes

    models_dir = models_dir or bundled_models_dir()
    state = read_run_state(run_dir)
    settings = config.shells
    training = {
        **run_summary(config, state, "best"),
        "data": {
            "sources": [Path(source).name for source in settings.sources],
            "simulated": (
                f"{settings.crops} cubes of {settings.crop_size}^3 from {settings.orientations} random orientations, "
                f"Rician sigma {list(settings.sigma_range)} of b0, b {list(settings.bvalue_range)}, "
                f"{list(settings.directions_range)} directions per shell"
            ),
        },
    }
    history = [h for h in read_history(run_dir) if "validation_mse" in h]
    best = min(history, key=lambda h: h["validation_mse"]) if history else {}
    metrics = {
        "validation_mse": round(state["best_validation_mse"], 5),
        "validation_mppca_mse": round(best.get("mppca_mse", math.nan), 5),
    }
    entry = publish(config, run_dir / BEST_WEIGHTS_NAME, models_dir, training, metrics, {"input": "dwi"})
    lines = [
        *card_header(entry),
        f"| training data | phantoms of {', '.join(training['data']['sources'])}: {training['data']['simulated']} |",
        f"| validation | the cubes of {max(1, round(settings.orientations * settings.validation_fraction))} "
        "orientations never trained on; loss = squared coefficient error in the brain / sigma^2 |",
        f"| steps | {state['step']} (best at {state['best_step']}), batch {config.optim.batch_size} |",
        f"| wall time | {state['wall_seconds'] / 60:.1f} min on {state.get('hardware', '')} "
        "(the simulation not counted) |",
        f"| sha256 | `{entry['sha256']}` |",
        f"| reproduce | `{training['command']}` |",
        "",
        "| step | loss | validation loss | MP-PCA alone |",
        "|---|---|---|---|",
        *(
            f"| {h['step']} | {h.get('loss', math.nan):.4f} | {h['validation_mse']:.4f} | {h['mppca_mse']:.4f} |"
            for h in history
        ),
    ]
    (models_dir / f"{config.model.id}.md").write_text(with_notes("\n".join(lines) + "\n", config))
    return models_dir / entry["weights"]

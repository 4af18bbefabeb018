"""Command line: ``python -m MRIDenoiseLib`` (or ``mridenoise``) with one sub-command per task."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from . import __version__
from .errors import Cancelled, MRIDenoiseError
from .machine import DEVICE_CHOICES
from .progress import CancelToken, ProgressCallback

Result = TypeVar("Result")

PROGRAM = "mridenoise"


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(argv)
    except KeyboardInterrupt:  # before the handler below is installed, e.g. while a library loads
        print(f"{PROGRAM}: cancelled; nothing was written", file=sys.stderr)
        return 130


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s: %(message)s")
    cancel = CancelToken()
    _cancel_on_signals(cancel)
    try:
        return args.handler(args, cancel) or 0
    except Cancelled as error:
        print(f"{PROGRAM}: cancelled: {error}", file=sys.stderr)
        return 130
    except (MRIDenoiseError, OSError) as error:  # the project's own errors and the system's; bugs show tracebacks
        if args.debug:
            traceback.print_exc()
        message = str(error).strip().splitlines()[0] if str(error).strip() else error.__class__.__name__
        print(f"{PROGRAM}: error: {message}", file=sys.stderr)
        return 1


def _cancel_on_signals(cancel: CancelToken) -> None:
    def handler(signum: int, frame: object) -> None:
        cancel.cancel()

    for name in ("SIGTERM", "SIGINT"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), handler)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description="Denoise MRI volumes with trained networks or classical filters."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    denoise = commands.add_parser("denoise", help="denoise one volume file or DICOM folder")
    denoise.add_argument("input", help="input volume (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd) or DICOM folder")
    denoise.add_argument("output", help="output volume file (the input is never modified)")
    denoise.add_argument(
        "--model",
        help="catalogue id (default: the catalogue's default model; for a diffusion series with b-values "
        "and gradients, the diffusion default); see 'models list'",
    )
    denoise.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="auto = CUDA, then MPS, then CPU")
    denoise.add_argument(
        "--sigma",
        default="auto",
        help="noise standard deviation in input units; 'auto' estimates one level; 'map' estimates a level "
        "per voxel for noise that varies across the image (parallel imaging, coil sensitivity)",
    )
    denoise.add_argument("--noise-map", metavar="PATH", help="also write the removed noise (input - output)")
    denoise.add_argument(
        "--sigma-map",
        metavar="PATH",
        help="also write the noise level per voxel (with --sigma map, or a method that estimates it: "
        "mppca, mppca-spatial(-v2, -v3), mppca-shell-unet-v1, -v2)",
    )
    denoise.add_argument(
        "--rank-map",
        metavar="PATH",
        help="also write the number of signal components MP-PCA kept around each voxel, like dwidenoise -rank "
        "(mppca, mppca-spatial(-v2, -v3), mppca-shell-unet-v1, -v2)",
    )
    denoise.add_argument(
        "--keep-dtype", action="store_true", help="write the input's pixel type (rounded, clipped) instead of float32"
    )
    denoise.add_argument(
        "--coils",
        type=int,
        default=1,
        metavar="N",
        help="the magnitude is a sum-of-squares of N receive coils (non-central chi noise; --sigma is then per "
        "coil): the noise floor is moved to the Rician one first; default 1 (Rician)",
    )
    denoise.add_argument(
        "--zero-filled",
        type=float,
        default=1.0,
        metavar="FACTOR",
        help="the scan was reconstructed at FACTOR times its acquired resolution in the slice plane (zero-filled "
        "k-space, e.g. GE ZIP: a dcm2niix sidecar's ReconMatrixPE / AcquisitionMatrixPE, though not every vendor's "
        "ratio is a zero-fill): the acquired band is denoised on the acquired grid; default 1 (not zero-filled)",
    )
    denoise.add_argument(
        "--adapt",
        default="off",
        metavar="off|auto|MINUTES",
        help="first adapt the network to this scan (self-supervised, in memory, nothing saved): MINUTES of it, or "
        "auto = 1 minute where measured to pay (noise 2.5-12 %% of the brightest tissue, not 8-bit data); "
        "the model's own second stage, if it has one, then runs on the adapted network; "
        "default off",
    )
    _add_progress_option(denoise)
    denoise.set_defaults(handler=_denoise)

    finetune = commands.add_parser(
        "finetune", help="adapt a model to one noisy scan (no clean image needed) and register it as a user model"
    )
    finetune.add_argument("input", help="the noisy scan to adapt to (3-D)")
    finetune.add_argument("output", nargs="?", help="also denoise the scan with the adapted model into this file")
    finetune.add_argument("--model", help="model to start from (default: the catalogue's default model)")
    finetune.add_argument("--minutes", type=float, default=5.0, help="time budget (default 5)")
    finetune.add_argument(
        "--loss",
        choices=("r2r", "n2s"),
        default="r2r",
        help="self-supervised loss: recorrupted-to-recorrupted (default) or Noise2Self",
    )
    finetune.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    finetune.add_argument("--sigma", default="auto", help="noise standard deviation in input units, or 'auto'")
    _add_progress_option(finetune)
    finetune.set_defaults(handler=_finetune)

    consensus = commands.add_parser(
        "train-consensus",
        help="learn a denoiser from two scans of the same object (paper 004's consensus loss; no clean image)",
    )
    consensus.add_argument("first", help="the first acquisition (3-D); the result lies on its grid")
    consensus.add_argument("second", help="the second acquisition of the same object, registered rigidly to the first")
    consensus.add_argument("output", nargs="?", help="write the two scans' consensus denoised image here")
    consensus.add_argument("--model", help="network both members start from (default: consensus-unet)")
    consensus.add_argument("--minutes", type=float, default=5.0, help="time budget (default 5)")
    consensus.add_argument("--no-register", action="store_true", help="the scans are already aligned on one grid")
    consensus.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    _add_progress_option(consensus)
    consensus.set_defaults(handler=_train_consensus)

    models = commands.add_parser("models", help="list, inspect, fetch and verify models")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    listing = model_commands.add_parser("list", help="list the catalogue")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=_models_list)
    info = model_commands.add_parser("info", help="show one catalogue entry")
    info.add_argument("id")
    info.set_defaults(handler=_models_info)
    fetch = model_commands.add_parser("fetch", help="download a model's weights into the cache and verify them")
    fetch.add_argument("id")
    _add_progress_option(fetch)
    fetch.set_defaults(handler=_models_fetch)
    verify = model_commands.add_parser("verify", help="check the sha256 of local weights (all models, or one)")
    verify.add_argument("id", nargs="?")
    verify.set_defaults(handler=_models_verify)
    importing = model_commands.add_parser("import", help="copy a weights file you downloaded yourself into the cache")
    importing.add_argument("id")
    importing.add_argument("file")
    importing.set_defaults(handler=_models_import)

    simulate = commands.add_parser(
        "simulate", help="add Rician or Gaussian noise at a level in %% of the brightest tissue"
    )
    simulate.add_argument("input")
    simulate.add_argument("output")
    simulate.add_argument("--noise", choices=("rician", "gaussian"), default="rician")
    simulate.add_argument(
        "--level", type=float, required=True, metavar="PERCENT", help="sigma in %% of the brightest tissue's mean"
    )
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--coils", type=int, default=1, help="sum-of-squares coils: > 1 gives non-central chi noise")
    simulate.add_argument(
        "--zero-filled", action="store_true", help="noise correlated in-plane as by zero-filled interpolation"
    )
    simulate.add_argument(
        "--varying", type=float, default=0.0, metavar="SPREAD",
        help="noise level varying smoothly by +-SPREAD (0.5: from half to 1.5 times the level), as coils and "
        "parallel imaging make it",
    )  # fmt: skip
    simulate.add_argument("--mask", metavar="PATH", help="brain/foreground mask for the brightest-tissue reference")
    simulate.set_defaults(handler=_simulate)

    evaluate = commands.add_parser("evaluate", help="PSNR and 3-D SSIM of a volume against a clean reference")
    evaluate.add_argument("--clean", required=True)
    evaluate.add_argument("--test", required=True)
    evaluate.add_argument("--mask", help="foreground mask (default: clean > 0.1 x its maximum)")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(handler=_evaluate)

    demo = commands.add_parser("demo", help="denoise a bundled real MRI slab with 10 %% Rician noise")
    demo.add_argument("--out", default="demo-output", help="folder for the results (default: demo-output)")
    demo.add_argument("--model")
    demo.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    _add_progress_option(demo)
    demo.set_defaults(handler=_demo)

    train = commands.add_parser("train", help="train a model from a JSON config (torchrun for several processes)")
    train.add_argument("config")
    train.add_argument("--output", help="run folder (default: runs/<model id>)")
    train.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    train.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this long")
    train.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    train.add_argument("--export", action="store_true", help="export the best weights to Resources/Models when done")
    train.set_defaults(handler=_train)

    bids = commands.add_parser(
        "bids", help="BIDS-App: denoise a BIDS dataset into BIDS derivatives on Dask (participant), then report (group)"
    )
    bids.add_argument("bids_dir")
    bids.add_argument("output_dir")
    bids.add_argument("analysis_level", choices=("participant", "group"))
    bids.add_argument("--participant-label", "--participant_label", nargs="+", help="labels, with or without sub-")
    bids.add_argument("--session-label", nargs="+", help="labels, with or without ses-")
    bids.add_argument("--datatype", nargs="+", choices=("anat", "dwi", "func", "perf", "fmap"))
    bids.add_argument("--suffix", nargs="+", help="e.g. T1w T2w FLAIR dwi")
    bids.add_argument("--model", help="catalogue id (default: the default model)")
    bids.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    bids.add_argument("--workers", type=int, help="local Dask worker processes (default: one per GPU, or per 4 cores)")
    bids.add_argument("--dask-scheduler", metavar="ADDRESS", help="run on an existing Dask cluster instead")
    bids.add_argument("--overwrite", action="store_true", help="denoise finished scans again")
    bids.add_argument(
        "--sigma",
        choices=("auto", "map"),
        default="auto",
        help="auto: one noise level per volume; map: a level per voxel (scalar networks; MP-PCA's own for "
        "diffusion), written as each scan's desc-sigma image",
    )
    bids.add_argument(
        "--coils",
        type=int,
        default=1,
        metavar="N",
        help="the scans are sum-of-squares magnitudes of N coils (as denoise --coils; 3-D methods only: pick "
        "--datatype anat); default 1",
    )
    bids.add_argument(
        "--zero-filled",
        type=float,
        default=1.0,
        metavar="FACTOR",
        help="the scans were reconstructed at FACTOR times their acquired resolution in-plane (as denoise "
        "--zero-filled; 3-D methods only); default 1",
    )
    _add_progress_option(bids)
    bids.set_defaults(handler=_bids)

    schema = commands.add_parser("config-schema", help="print the JSON schema of training configs")
    schema.set_defaults(handler=_config_schema)

    export = commands.add_parser("export", help="export a run's best weights, model card and catalogue entry")
    export.add_argument("config")
    export.add_argument("--output", help="run folder (default: runs/<model id>)")
    export.add_argument("--models-dir", help="target folder (default: the bundled Resources/Models)")
    export.set_defaults(handler=_export)
    return parser


def _add_progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        choices=("bar", "json", "none"),
        default="bar",
        help="bar on stderr, JSON lines on stdout, or nothing",
    )


class _ProgressReporter:
    """Turns (fraction, message) reports into a tqdm bar or JSON lines."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(
                total=1000, file=sys.stderr, bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}", leave=False
            )

    def __call__(self, fraction: float, message: str) -> None:
        if self.mode == "json":
            print(json.dumps({"progress": round(fraction, 4), "message": message}), flush=True)
        elif self.bar is not None:
            self.bar.n = int(1000 * fraction)
            self.bar.set_postfix_str(message, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _with_progress(args: argparse.Namespace, work: Callable[[ProgressCallback], Result]) -> Result:
    reporter = _ProgressReporter(getattr(args, "progress", "none"))
    try:
        return work(reporter)
    finally:
        reporter.close()


def _denoise(args: argparse.Namespace, cancel: CancelToken) -> int:
    from .pipeline import denoise_file

    varying = args.sigma == "map"
    sigma = None if args.sigma in ("auto", "map") else _positive_float(args.sigma, "--sigma")
    adapter = None
    if args.adapt != "off":
        from .adaptation import ScanAdapter

        adapter = ScanAdapter(args.adapt)
    result = _with_progress(
        args,
        lambda progress: denoise_file(
            args.input,
            args.output,
            args.model,
            args.device,
            sigma,
            args.noise_map,
            args.keep_dtype,
            progress,
            cancel,
            args.sigma_map,
            varying,
            args.rank_map,
            adapter,
            args.coils,
            args.zero_filled,
        ),
    )
    summary = {"output": str(args.output), **result.summary()}
    if args.progress == "json":
        print(json.dumps({"result": summary}), flush=True)
    else:
        values = ", ".join(f"{s:.4g}" for s in result.sigma[:4]) + (" ..." if len(result.sigma) > 4 else "")
        source = "estimated" if result.sigma_estimated else "given"
        if result.sigma:
            noise = f"sigma {values}, {source}"
        elif result.sigma_map is not None:
            noise = "noise level estimated voxel by voxel"
        else:
            noise = "voxel-wise model, no sigma needed"
        print(f"wrote {args.output} with {result.model_id} on {result.device} in {result.seconds:.1f} s ({noise})")
        if result.adaptation:
            print(_adaptation_line(result.adaptation))
        if result.acquired_shape is not None:
            print(f"zero-filled: the acquired band denoised on a {' x '.join(map(str, result.acquired_shape))} grid")
        elif result.correlated_noise:
            print(
                f"the noise removed is correlated between neighbours ({result.noise_correlation:+.2f}): if the scan "
                "was reconstructed finer than acquired (zero-filled), give --zero-filled FACTOR"
            )
    return 0


def _adaptation_line(report: dict[str, object]) -> str:
    if not report["adapted"]:
        return f"not adapted: {report['reason']}"
    return (
        f"adapted to the scan first ({report['reason']}): {report['steps']} steps in {report['seconds']} s, "
        f"held-out self-supervised loss {report['held_out_loss_before']:.4g} -> {report['held_out_loss_after']:.4g}"
    )


def _finetune(args: argparse.Namespace, cancel: CancelToken) -> int:
    from .training.finetune import finetune_file

    sigma = None if args.sigma == "auto" else _positive_float(args.sigma, "--sigma")
    result = _with_progress(
        args,
        lambda progress: finetune_file(
            args.input, args.output, args.model, args.minutes, args.loss, args.device, sigma, progress, cancel
        ),
    )
    summary = {
        "model": result.entry.id,
        "steps": result.steps,
        "training_seconds": round(result.seconds, 1),
        "sigma": result.sigma,
        "held_out_loss_before": result.held_out_loss_before,
        "held_out_loss_after": result.held_out_loss_after,
        "output": args.output,
    }
    if args.progress == "json":
        print(json.dumps({"result": summary}), flush=True)
    else:
        gain = 1 - result.held_out_loss_after / result.held_out_loss_before
        print(
            f"registered {result.entry.id} ({result.steps} steps in {result.seconds:.0f} s, sigma {result.sigma:.4g}; "
            f"held-out self-supervised loss {100 * gain:.1f} % lower)"
            + (f"; wrote {args.output}" if args.output else "")
        )
    return 0


def _train_consensus(args: argparse.Namespace, cancel: CancelToken) -> int:
    from .training.two_scans import train_consensus_files

    result = _with_progress(
        args,
        lambda progress: train_consensus_files(
            args.first,
            args.second,
            args.output,
            args.model,
            args.minutes,
            args.device,
            not args.no_register,
            progress,
            cancel,
        ),
    )
    summary = {
        "model": result.entry.id,
        "steps": result.steps,
        "training_seconds": round(result.seconds, 1),
        "sigmas": list(result.sigmas),
        "translation_mm": round(result.translation_mm, 3),
        "rotation_degrees": round(result.rotation_degrees, 3),
        "intensity_gain": round(result.intensity_gain, 4),
        "pair": dataclasses.asdict(result.pair),
        "distillation": dataclasses.asdict(result.distillation),
        "output": args.output,
    }
    if args.progress == "json":
        print(json.dumps({"result": summary}), flush=True)
    else:
        print(
            f"registered {result.entry.id} ({result.pair.steps} pair + {result.distillation.steps} distillation steps "
            f"in {result.seconds:.0f} s; second scan moved {result.translation_mm:.2f} mm / "
            f"{result.rotation_degrees:.2f} deg; held-out consensus loss {result.pair.held_out_before:.4g} -> "
            f"{result.pair.held_out_after:.4g})" + (f"; wrote {args.output}" if args.output else "")
        )
    return 0


def _positive_float(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise MRIDenoiseError(f"{name} must be 'auto' or a positive number, got {text!r}") from None
    if not value > 0:
        raise MRIDenoiseError(f"{name} must be positive, got {text}")
    return value


def _models_list(args: argparse.Namespace, cancel: CancelToken) -> int:
    from .models.store import describe_models

    rows = describe_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(row["id"]) for row in rows)
    for row in rows:
        marker = "*" if row["default"] else " "
        print(
            f"{marker} {row['id']:<{width}}  {row['kind']:<9}  {row['input']:<6}  {row['weights']:<11}  {row['title']}"
        )
    print("(* default)")
    return 0


def _models_info(args: argparse.Namespace, cancel: CancelToken) -> int:
    from .models.catalog import load_catalog
    from .models.store import locate_weights

    entry = load_catalog().get(args.id)
    path, status = locate_weights(entry)
    print(
        json.dumps(
            {**entry.to_dict(), "local_weights": str(path) if path else None, "weights_status": status}, indent=2
        )
    )
    return 0


def _models_fetch(args: argparse.Namespace, cancel: CancelToken) -> int:
    from .models.catalog import load_catalog
    from .models.store import resolve_weights

    entry = load_catalog().get(args.id)
    if entry.kind != "network":
        print(f"{entry.id} is a classical method; it has no weights")
        return 0
    path = _with_progress(args, lambda progress: resolve_weights(entry, progress, cancel))
    print(f"{entry.id}: {path} (sha256 verified)")
    return 0


def _models_verify(args: argparse.Namespace, cancel: CancelToken) -> int:
    from .models.catalog import load_catalog
    from .models.store import locate_weights

    catalog = load_catalog()
    entries = [catalog.get(args.id)] if args.id else [e for e in catalog if e.kind == "network"]
    failed = False
    for entry in entries:
        path, status = locate_weights(entry)
        print(f"{entry.id}: {status}" + (f" ({path}, sha256 ok)" if path else ""))
        failed |= status == "corrupt" or (args.id is not None and path is None and entry.kind == "network")
    return 1 if failed else 0


def _models_import(args: argparse.Namespace, cancel: CancelToken) -> int:
    from .models.catalog import load_catalog
    from .models.store import import_weights

    target = import_weights(load_catalog().get(args.id), Path(args.file))
    print(f"{args.id}: imported to {target}")
    return 0


def _simulate(args: argparse.Namespace, cancel: CancelToken) -> int:
    import numpy as np

    from .io import read_volume, write_volume
    from .noise import add_noise, coil_profile, sigma_for_level
    from .pipeline import check_output_path

    check_output_path(args.input, args.output)
    volume = read_volume(args.input)
    if volume.is_series:
        raise MRIDenoiseError("simulate takes a 3-D volume")
    clean = volume.array.astype(np.float32)
    mask = read_volume(args.mask).array > 0 if args.mask else None
    sigma = sigma_for_level(clean, args.level, mask)
    if not 0 <= args.varying < 1:
        raise MRIDenoiseError("--varying must be in [0, 1)")
    level = sigma * coil_profile(clean.shape, args.seed + 1, args.varying) if args.varying else sigma
    noisy = add_noise(clean, level, args.noise, args.seed, coils=args.coils, zero_filled=args.zero_filled)
    write_volume(volume.with_array(noisy), args.output)
    record = {"output": args.output, "noise": args.noise, "level_percent": args.level, "sigma": sigma}
    record |= {"seed": args.seed, "coils": args.coils, "zero_filled": args.zero_filled, "varying": args.varying}
    print(json.dumps(record))
    return 0


def _evaluate(args: argparse.Namespace, cancel: CancelToken) -> int:
    from .io import read_volume
    from .metrics import evaluate

    clean = read_volume(args.clean).array
    test = read_volume(args.test).array
    mask = read_volume(args.mask).array > 0 if args.mask else None
    scores = evaluate(clean, test, mask)
    if args.json:  # strict JSON: an infinite PSNR (identical images) is null
        print(json.dumps({k: v if math.isfinite(v) else None for k, v in scores.items()}, indent=2, allow_nan=False))
    else:
        for key, value in scores.items():
            print(f"{key:<16} {value:.4f}")
    return 0


def _demo(args: argparse.Namespace, cancel: CancelToken) -> int:
    from .demo import run_demo

    report = _with_progress(args, lambda progress: run_demo(args.out, args.model, args.device, progress))
    noisy, denoised = report["noisy"]["psnr_foreground"], report["denoised"]["psnr_foreground"]
    print(
        f"demo: {report['model']} on {report['device']}: PSNR {noisy:.2f} dB -> {denoised:.2f} dB "
        f"(SSIM {report['noisy']['ssim_foreground']:.3f} -> {report['denoised']['ssim_foreground']:.3f}); "
        f"results in {args.out}/"
    )
    return 0


def _train(args: argparse.Namespace, cancel: CancelToken) -> int:
    from .training.run import train

    outcome = train(
        args.config,
        args.output,
        device=args.device,
        resume=args.resume,
        max_minutes=args.max_minutes,
        export_when_done=args.export,
        cancel=cancel,
    )
    if outcome.state is None:  # a pretraining stage stopped early: a clean stop, or a cancel
        return 130 if cancel.cancelled else 0
    state = outcome.state
    if not outcome.main:
        return 130 if cancel.cancelled else 0
    best = (
        f"validation MSE {state.best_validation_mse:.6f}"
        if outcome.kind in ("qspace", "shells")
        else f"validation PSNR {state.best_psnr:.2f} dB"
    )
    print(f"step {state.step}/{outcome.total}; best {best} at step {state.best_step}; run folder {outcome.run_dir}")
    if outcome.exported is not None:
        print(f"exported {outcome.exported}")
    return 130 if cancel.cancelled else 0


def _bids(args: argparse.Namespace, cancel: CancelToken) -> int:
    from .cohort import run_group, run_participant

    if args.analysis_level == "group":
        print(f"wrote {run_group(args.bids_dir, args.output_dir)}")
        return 0
    bar = None if args.progress != "bar" else _scan_bar()

    def report(record, done: int, total: int) -> None:
        if args.progress == "json":
            print(json.dumps({"scan": record.scan, "status": record.status, "done": done, "total": total,
                              "error": record.error}), flush=True)  # fmt: skip
        elif bar is not None:
            bar.total = total
            bar.set_postfix_str(f"{record.status} {record.scan}")
            bar.update(1)

    records = run_participant(
        args.bids_dir, args.output_dir, args.participant_label, args.session_label, args.datatype, args.suffix,
        args.model, args.device, args.workers, args.dask_scheduler, args.overwrite, report, args.sigma == "map",
        args.coils, args.zero_filled,
    )  # fmt: skip
    if bar is not None:
        bar.close()
    failed = [r for r in records if r.status == "failed"]
    for record in failed:
        print(f"{PROGRAM}: failed: {record.scan}: {record.error}", file=sys.stderr)
    counts = {status: sum(r.status == status for r in records) for status in ("done", "skipped", "failed")}
    print(f"{counts['done']} denoised, {counts['skipped']} already done, {counts['failed']} failed; {args.output_dir}")
    return 1 if failed else 0


def _scan_bar():
    from tqdm import tqdm

    return tqdm(total=0, unit="scan", desc="scans")


def _config_schema(args: argparse.Namespace, cancel: CancelToken) -> int:
    from .training.config import config_schema

    print(json.dumps(config_schema(), indent=2))
    return 0


def _export(args: argparse.Namespace, cancel: CancelToken) -> int:
    from .training.run import export

    print(f"exported {export(args.config, args.output, Path(args.models_dir) if args.models_dir else None)}")
    return 0

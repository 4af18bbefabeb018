"""MRIDenoise's logic with no GUI: denoise MRML volume nodes in-process or in a child process.

Blocking calls (scripts, headless batch, self-tests) run the library in this process.
Non-blocking calls (the GUI) run ``python -m MRIDenoiseLib denoise`` on temporary files in a
child process that reports JSON progress lines, so Slicer never freezes; cancelling ends the
child's process tree and leaves the scene and the model cache exactly as they were.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from MRIDenoiseLib.errors import InputError, MRIDenoiseError
from MRIDenoiseLib.io import read_volume, write_volume
from MRIDenoiseLib.masks import brightest_tissue_mean
from MRIDenoiseLib.models.catalog import adopt_staged_models
from MRIDenoiseLib.models.paths import CACHE_VARIABLE, OFFLINE_VARIABLE, STAGING_VARIABLE, cache_dir
from MRIDenoiseLib.noise import estimate_sigma, sigma_for_level
from MRIDenoiseLib.pipeline import denoise_volume

from .actions import JobAction
from .nodes import DWI_CLASS, add_node_from_volume, new_output_node, update_node_from_volume, volume_from_node
from .processes import Launcher, end_process_tree, launch_process

ProgressCallback = Callable[[float, str], None]
LIBRARY_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Request:
    """How a call denoises: the method, where it runs, the noise level (None: estimated; with
    ``varying_noise``, estimated per voxel) and whether the network adapts to the scan first
    (``adapt``: off, auto or minutes; see ``MRIDenoiseLib.adaptation``)."""

    model: str | None = None
    device: str = "auto"
    sigma: float | None = None
    varying_noise: bool = False
    adapt: str = "off"
    coils: int = 1
    """Receive coils of a sum-of-squares magnitude (non-central chi noise); 1: Rician."""
    zero_filled: float = 1.0
    """Reconstructed over acquired resolution in the slice plane (zero-filled k-space); 1: not zero-filled."""


@dataclass(frozen=True)
class MapNodes:
    """The nodes that receive a call's maps beside the denoised volume (None: not wanted)."""

    noise: Any = None
    """The removed noise, input - output (the input's kind of node)."""
    sigma: Any = None
    """The noise level per voxel the call used (a scalar node)."""
    rank: Any = None
    """The number of signal components MP-PCA kept around each voxel (a scalar node)."""

    def wanted(self) -> list[tuple[str, str, Any]]:
        """(field, the child's command-line option, node) of every map asked for."""
        options = {"noise": "--noise-map", "sigma": "--sigma-map", "rank": "--rank-map"}
        return [(name, option, getattr(self, name)) for name, option in options.items() if getattr(self, name)]


def _first_frame(node) -> np.ndarray:
    """The node's voxels as float32, the first volume of a series."""
    array = volume_from_node(node).array.astype(np.float32)
    return array if array.ndim == 3 else array[..., 0]


class DenoiseLogic:
    """Denoise scalar and diffusion-weighted volume nodes of ``scene``."""

    def __init__(
        self,
        scene=None,
        python_executable: str | None = None,
        launcher: Launcher = launch_process,
        log_callback: Callable[[str], None] | None = None,
    ) -> None:
        """``launcher`` starts child processes (Slicer's console-hiding one inside Slicer);
        ``log_callback`` receives every line a child prints that is not a progress report."""
        if scene is None:
            import slicer

            scene = slicer.mrmlScene
        self.scene = scene
        self.python_executable = python_executable or sys.executable
        self.launcher = launcher
        self.log_callback = log_callback or (lambda line: None)
        self.last_summary: dict[str, object] = {}

    def load_file(self, path: str | Path, name: str):
        """A volume file (or DICOM folder) read by the engine's checked reader, as a new node of the scene."""
        return add_node_from_volume(self.scene, read_volume(path), name)

    # ---- what the panel shows ---------------------------------------------------------
    @staticmethod
    def estimate_noise(input_node) -> tuple[float, float]:
        """Blind sigma of a scalar node (first volume of a series) and its level in % of the brightest tissue."""
        frame = _first_frame(input_node)
        sigma = estimate_sigma(frame)
        return sigma, 100.0 * sigma / brightest_tissue_mean(frame)

    @staticmethod
    def sigma_from_percent(input_node, percent: float) -> float:
        """Sigma for a noise level in % of the brightest tissue of the node (first volume of a series)."""
        return sigma_for_level(_first_frame(input_node), percent)

    # ---- denoising --------------------------------------------------------------------------
    def process(
        self,
        input_node,
        output_node=None,
        model: str | None = None,
        device: str = "auto",
        sigma: float | None = None,
        noise_output_node=None,
        wait_for_completion: bool = True,
        progress_callback: ProgressCallback | None = None,
        varying_noise: bool = False,
        sigma_map_node=None,
        rank_map_node=None,
        adapt: str = "off",
        coils: int = 1,
        zero_filled: float = 1.0,
    ):
        """Denoise ``input_node`` into ``output_node`` (a new '<input> denoised' node if None).

        ``varying_noise`` estimates the noise level per voxel and gives the network that map;
        ``sigma_map_node`` (a scalar node) receives the map a call used (``varying_noise``, or a
        diffusion method that estimates one); ``rank_map_node`` (a scalar node) the number of signal
        components MP-PCA kept around each voxel (MP-PCA methods). ``adapt`` ("off", "auto" or minutes)
        first adapts the network to the input, in memory (``last_summary`` / the job's summary say what
        was decided and done). ``coils`` > 1: the input is a sum-of-squares magnitude of that many coils
        (non-central chi noise, ``sigma`` per coil). ``zero_filled`` > 1: the input was reconstructed at that
        many times its acquired resolution in the slice plane (``MRIDenoiseLib.bands``). Blocking: returns the
        output node. Non-blocking: returns a started :class:`DenoiseJob` whose ``poll()`` reports progress and
        creates or fills the output nodes on success. The input node is never modified.
        """
        self._check_nodes(input_node, output_node, noise_output_node)
        for map_node in (sigma_map_node, rank_map_node):
            self._check_map_node(input_node, map_node)
        from MRIDenoiseLib.adaptation import ScanAdapter

        adapter = ScanAdapter(adapt) if str(adapt) != "off" else None  # a bad setting is refused here
        request = Request(model, device, sigma, varying_noise, str(adapt), int(coils), float(zero_filled))
        maps = MapNodes(noise_output_node, sigma_map_node, rank_map_node)
        if not wait_for_completion:
            return DenoiseJob(self, input_node, output_node, request, progress_callback, maps).start()
        result = denoise_volume(
            volume_from_node(input_node),
            model,
            device,
            sigma,
            progress_callback or (lambda f, m: None),
            varying_noise=varying_noise,
            signal_components=rank_map_node is not None,
            adapter=adapter,
            coils=int(coils),
            zero_filled=float(zero_filled),
        )
        if sigma_map_node is not None and result.sigma_map is None:
            raise InputError(f"{result.model_id} gives no noise map per voxel; tick 'varies across the image'")
        output_node = output_node or new_output_node(self.scene, input_node, f"{input_node.GetName()} denoised")
        update_node_from_volume(output_node, result.volume, input_node)
        computed = {"noise": result.removed_noise, "sigma": result.sigma_map, "rank": result.signal_components}
        for name, _, node in maps.wanted():
            if (volume := computed[name]) is not None:
                update_node_from_volume(node, volume, input_node)
        self.last_summary = result.summary()
        return output_node

    def finetune(
        self,
        input_node,
        output_node=None,
        model: str | None = None,
        minutes: float = 5.0,
        loss: str = "r2r",
        device: str = "auto",
        wait_for_completion: bool = True,
        progress_callback: ProgressCallback | None = None,
    ):
        """Adapt ``model`` to ``input_node`` (no clean image needed), register it, denoise the node with it.

        The adapted model is a user model (``last_summary["model"]`` holds its id) usable on any
        later scan. Blocking: returns the output node. Non-blocking: returns a started
        :class:`DenoiseJob`; cancelling it leaves neither a node nor a user model behind.
        """
        self._check_nodes(input_node, output_node, None)
        if input_node.IsA(DWI_CLASS):
            raise InputError("fine-tuning works on scalar volumes, not diffusion-weighted ones")
        if not wait_for_completion:
            extra = ["--minutes", repr(float(minutes)), "--loss", loss]
            job = DenoiseJob(self, input_node, output_node, Request(model, device), progress_callback)
            return job.start(JobAction.FINETUNE, extra=extra)
        from MRIDenoiseLib.training.finetune import finetune_volume

        report = progress_callback or (lambda f, m: None)
        volume = volume_from_node(input_node)
        adapted = finetune_volume(volume, model, minutes, loss, device, None, input_node.GetName(), report)
        result = denoise_volume(volume, adapted.entry.id, device, None)
        output_node = output_node or new_output_node(self.scene, input_node, f"{input_node.GetName()} denoised")
        update_node_from_volume(output_node, result.volume, input_node)
        self.last_summary = {**result.summary(), "steps": adapted.steps, "training_seconds": round(adapted.seconds, 1)}
        return output_node

    def train_consensus(
        self,
        first_node,
        second_node,
        output_node=None,
        model: str | None = None,
        minutes: float = 5.0,
        device: str = "auto",
        wait_for_completion: bool = True,
        progress_callback: ProgressCallback | None = None,
    ):
        """Learn a denoiser from two scans of one object (paper 004) and combine them into one denoised volume.

        ``second_node`` is registered rigidly to ``first_node``; the output lies on the first's grid.
        The pair, distilled into one network, is registered as a user model (``last_summary["model"]``). Blocking:
        returns the output node. Non-blocking: returns a started :class:`DenoiseJob`; cancelling
        it leaves neither a node nor a user model behind.
        """
        self._check_nodes(first_node, output_node, None)
        if second_node is None or second_node.GetImageData() is None:
            raise InputError("choose a second acquisition with image data")
        if second_node is first_node:
            raise InputError("the second acquisition must be another volume than the first")
        if output_node is second_node:
            raise InputError("the output must be a different node from the inputs")
        if first_node.IsA(DWI_CLASS) or second_node.IsA(DWI_CLASS):
            raise InputError("consensus training works on scalar volumes, not diffusion-weighted ones")
        if not wait_for_completion:
            job = DenoiseJob(self, first_node, output_node, Request(model, device), progress_callback)
            job.second_node = second_node
            return job.start(JobAction.TRAIN_CONSENSUS, extra=["--minutes", repr(float(minutes))])
        from MRIDenoiseLib.training.two_scans import train_consensus_volumes

        first, second = volume_from_node(first_node), volume_from_node(second_node)
        name = f"{first_node.GetName()} + {second_node.GetName()}"
        report = progress_callback or (lambda f, m: None)
        result = train_consensus_volumes(first, second, model, minutes, device, True, name, report)
        output_node = output_node or new_output_node(self.scene, first_node, f"{first_node.GetName()} consensus")
        update_node_from_volume(output_node, result.denoised, first_node)
        self.last_summary = {
            "model": result.entry.id,
            "steps": result.steps,
            "training_seconds": round(result.seconds, 1),
        }
        return output_node

    @staticmethod
    def _check_map_node(input_node, map_node) -> None:
        if map_node is None:
            return
        if map_node is input_node or map_node.IsA(DWI_CLASS):
            raise InputError("a map (noise level, signal components) goes to a scalar volume other than the input")

    def _check_nodes(self, input_node, output_node, noise_output_node) -> None:
        if input_node is None or input_node.GetImageData() is None:
            raise InputError("choose an input volume with image data")
        for node in (output_node, noise_output_node):
            if node is None:
                continue
            if node is input_node:
                raise InputError("the output must be a different node from the input")
            if input_node.IsA(DWI_CLASS) != node.IsA(DWI_CLASS):
                raise InputError(
                    "a diffusion-weighted input needs diffusion-weighted outputs (and a scalar one scalar outputs)"
                )


class DenoiseJob:
    """A denoising (or fine-tuning, or consensus training) run in a child process; poll it from the main thread.

    The child writes into a private folder; its outputs become nodes, and the user models it
    trained are committed to the cache, only after it has exited successfully. Cancelling ends the
    child's whole process tree and deletes the folder, so nothing of a cancelled job survives.
    Closing the scene cancels the job.
    """

    def __init__(
        self,
        logic,
        input_node,
        output_node,
        request: Request,
        progress_callback: ProgressCallback | None,
        maps: MapNodes | None = None,
    ) -> None:
        """``request.varying_noise`` runs with ``--sigma map``; each node of ``maps`` receives its map."""
        self.logic = logic
        self.input_node = input_node
        self.output_node = output_node
        self.second_node = None
        self.request = request
        self.maps = maps or MapNodes()
        self.progress_callback = progress_callback or (lambda f, m: None)
        self.log_callback: Callable[[str], None] = logic.log_callback
        self.state = "new"
        self.action = JobAction.DENOISE
        self.error = ""
        self.summary: dict[str, object] = {}
        self.log: list[str] = []
        self.started = 0.0
        self._lines: queue.Queue[str] = queue.Queue()
        self._folder: Path | None = None
        self._process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._scene_observer: int | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started if self.started else 0.0

    @property
    def pid(self) -> int | None:
        """The process id of the child the job started (the launcher, inside Slicer)."""
        return self._process.pid if self._process is not None else None

    def start(self, action: JobAction = JobAction.DENOISE, extra: list[str] | None = None) -> DenoiseJob:
        """Run ``python -m MRIDenoiseLib <action> input [second] output ...`` on temporary files
        (train-consensus also takes ``second_node``)."""
        self.action = JobAction(action)
        self._folder = Path(tempfile.mkdtemp(prefix="MRIDenoise-"))
        inputs = [self.input_node] + ([self.second_node] if self.second_node is not None else [])
        paths = [self._folder / f"input{index}.nrrd" for index in range(len(inputs))]
        for node, path in zip(inputs, paths, strict=True):
            write_volume(volume_from_node(node), path)
        command = [
            self.logic.python_executable,
            "-m",
            "MRIDenoiseLib",
            self.action.value,
            *map(str, paths),
            str(self._folder / "output.nrrd"),
            "--progress",
            "json",
            "--device",
            self.request.device,
        ]
        if self.request.model:
            command += ["--model", self.request.model]
        if self.request.varying_noise:
            command += ["--sigma", "map"]
        elif self.request.sigma is not None:
            command += ["--sigma", repr(float(self.request.sigma))]
        for name, option, _ in self.maps.wanted():
            command += [option, str(self._folder / f"{name}.nrrd")]
        if self.request.adapt != "off":
            command += ["--adapt", self.request.adapt]
        if self.request.coils != 1:
            command += ["--coils", str(self.request.coils)]
        if self.request.zero_filled != 1:
            command += ["--zero-filled", repr(self.request.zero_filled)]
        command += extra or []
        environment = {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(LIBRARY_ROOT), os.environ.get("PYTHONPATH")])),
            CACHE_VARIABLE: str(cache_dir()),
            STAGING_VARIABLE: str(self._folder / "staged-models"),
            "PYTHONUNBUFFERED": "1",
        }
        if os.environ.get(OFFLINE_VARIABLE):
            environment[OFFLINE_VARIABLE] = os.environ[OFFLINE_VARIABLE]
        self._process = self.logic.launcher(command, environment)
        self._reader = threading.Thread(target=self._pump, args=(self._process.stdout,), daemon=True)
        self._reader.start()
        self.started = time.monotonic()
        self.state = "running"
        scene = self.logic.scene
        self._scene_observer = scene.AddObserver(scene.StartCloseEvent, lambda caller, event: self.cancel())
        return self

    def _pump(self, stream) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))

    def poll(self) -> str:
        """Drain progress and log lines; on exit, fill the output nodes (success) or record the error."""
        process = self._process
        if self.state != "running" or process is None:
            return self.state
        self._drain()
        if process.poll() is None:
            return self.state
        process.wait()
        if self._reader is not None:
            self._reader.join(timeout=10)  # the pipe closes when the child exits
        self._drain()
        try:
            if process.returncode == 0:
                self._load_results()
                self.state = "done"
            else:
                lines = [line for line in self.log if line.strip() and "%|" not in line]
                self.error = (lines[-1] if lines else f"exit code {process.returncode}").removeprefix(
                    "mridenoise: error: "
                )
                self.state = "failed"
        except MRIDenoiseError as error:
            self.error = str(error)
            self.state = "failed"
        finally:
            self._cleanup()
        return self.state

    def _drain(self) -> None:
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return
            message = None
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    message = json.loads(line)
            if isinstance(message, dict) and "progress" in message:
                self.progress_callback(float(message["progress"]), str(message["message"]))
            elif isinstance(message, dict) and "result" in message:
                self.summary = message["result"]
            else:
                self.log.append(line)
                self.log_callback(line)

    def _load_results(self) -> None:
        """Read every output first, then commit the staged models, then create or fill the nodes."""
        scene, folder = self.logic.scene, self._folder
        if folder is None:
            raise MRIDenoiseError("the job's folder is gone")
        denoised = read_volume(folder / "output.nrrd")
        maps = [(node, read_volume(folder / f"{name}.nrrd")) for name, _, node in self.maps.wanted()]
        adopted = adopt_staged_models(folder / "staged-models")
        if adopted:
            self.summary = {**self.summary, "model": adopted[-1]}
        self.output_node = self.output_node or new_output_node(
            scene, self.input_node, f"{self.input_node.GetName()} {self.action.output_suffix}"
        )
        update_node_from_volume(self.output_node, denoised, self.input_node)
        for node, volume in maps:
            update_node_from_volume(node, volume, self.input_node)
        self.logic.last_summary = self.summary

    def cancel(self) -> None:
        """End the child's whole process tree; no node is created or changed and no model is saved."""
        if self.state == "running" and self._process is not None:
            end_process_tree(self._process.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=10)
            self.state = "cancelled"
            self._cleanup()

    def wait(self, timeout: float | None = None, interval: float = 0.1) -> str:
        """Poll until the job ends (for scripts and tests); returns the final state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() == "running":
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise MRIDenoiseError(f"denoising did not finish within {timeout} s and was cancelled")
            time.sleep(interval)
        return self.state

    def _cleanup(self) -> None:
        if self._scene_observer is not None:
            self.logic.scene.RemoveObserver(self._scene_observer)
            self._scene_observer = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

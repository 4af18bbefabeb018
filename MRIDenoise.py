"""MRIDenoise: the 3D Slicer module. Panel, scriptable logic and self-test; no algorithm here.

Everything that computes lives in MRIDenoiseLib (the engine) and MRIDenoiseSlicer (MRML adapter
and GUI-free logic). Python packages are installed on first use, never when Slicer loads this
module.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#: Python packages the engine needs, by import name -> pip requirement.
REQUIREMENTS = {
    "torch": "torch>=2.1",
    "monai": "monai>=1.3",
    "SimpleITK": "SimpleITK>=2.2",
    "safetensors": "safetensors>=0.4",
    "skimage": "scikit-image>=0.21",
    "requests": "requests>=2.28",
    "tqdm": "tqdm>=4.60",
    "scipy": "scipy>=1.10",
}

DEVICE_CHOICES = ["auto", "cuda", "mps", "cpu"]

#: Parameter-node fields the widget syncs by hand (their combo box lists catalogue titles).
MANUALLY_BOUND_PARAMETERS = {"model": "modelComboBox"}

MODULE_HELP = """
<p>Removes noise from MRI volumes with trained deep-learning denoisers (GPU when available, CPU
otherwise) or classical filters. Choose the input, a model, and click <b>Apply</b>: a new
"&lt;input&gt; denoised" volume appears beside the original, which is never modified. The noise level
is estimated from the scan unless you set it.</p>
<p>Models (see <i>Model</i> tooltips; the catalogue is Resources/Models/catalog.json):</p>
<ul>
<li><b>mridenoise-rician-2.5d-v6</b> (default): blind 2.5-D residual U-Net with a noise-level map, trained on
real T1/T2 MRI for 1-30 % Rician noise, run along the three axes of isotropic volumes; BM4D's quality
at a fraction of its time. <b>-v5</b>, <b>-v4</b>, <b>-v3</b>, <b>-v2</b> and <b>mridenoise-rician-2.5d</b>
are the earlier versions.</li>
<li><b>qspace-vae</b> / <b>qspace-dae</b>: voxel-wise q-space autoencoders for diffusion-weighted volumes (Glaser,
paper 001); a model matching the volume's gradient table is trained automatically when none ships.</li>
<li><b>unet-dctd-a</b>: Thomas et al.'s attention U-Net with a ResNet-18 encoder (paper 003), transfer-learned
within MRI, run along the three axes of isotropic volumes; <b>unet-dctd-a-v1</b> is its first release.</li>
<li><b>cdae</b> / <b>cdae-paper</b>: Shylaja's convolutional denoising autoencoder (paper 002), with an input gate /
exactly as published (blurry; for comparison).</li>
<li><b>consensus-unet</b>: trained with no clean image from two noisy realisations per patch (Wu et al., consensus
Noise2Noise, paper 004), distilled into one network; <b>consensus-unet-pair</b> is the pair itself, and
<b>noise2noise-unet</b> / <b>noise2clean-unet</b> the paper's comparison models.</li>
<li><b>disentangled-gan</b> / <b>cyclegan</b>: trained without paired images (Yan et al., paper 000, and its CycleGAN
baseline); single slices along the three axes, with the noise level estimated from the scan.</li>
<li><b>nlm</b>: non-local means (Buades et al., CVPR 2005), with Rician bias correction.</li>
<li><b>adf</b>: curvature anisotropic diffusion, the "ADF" baseline of the papers below.</li>
<li><b>gaussian</b>: Gaussian smoothing baseline.</li>
</ul>
<p><b>Adapt the model to this scan</b> fine-tunes the selected network on the input itself (no clean image
needed) within a time budget and saves it as a new model.</p>
<p><b>Two acquisitions of the same object</b> learns a model from the input and a repeat of it (registered
rigidly; no clean image), saves it, and combines both scans into one denoised volume.</p>
<p>Scripting: <code>MRIDenoise.MRIDenoiseLogic().process(inputVolume)</code>.
Documentation: <a href="https://github.com/SlicerMRIDenoise/SlicerMRIDenoise">README</a>.</p>
"""


class MRIDenoise(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MRI Denoise"
        self.parent.categories = ["Filtering.Denoising"]
        self.parent.dependencies = []
        self.parent.contributors = ["SlicerMRIDenoise developers"]
        self.parent.helpText = MODULE_HELP
        self.parent.acknowledgementText = (
            "Bundled sample data: Colin27 (MNI; Holmes et al. 1998), BSD-3-Clause via mricron-data. "
            "Trained weights list their training data and licences in their model cards."
        )


@parameterNodeWrapper
class MRIDenoiseParameterNode:
    """Panel state, saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    noiseOutputVolume: vtkMRMLScalarVolumeNode
    model: str = ""
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    autoNoise: bool = True
    noisePercent: Annotated[float, WithinRange(0.5, 40.0)] = 5.0
    finetuneMinutes: Annotated[float, WithinRange(0.5, 120.0)] = 5.0
    secondVolume: vtkMRMLScalarVolumeNode
    consensusMinutes: Annotated[float, WithinRange(0.5, 120.0)] = 5.0


def pythonSlicerExecutable() -> str:
    """The Python interpreter that child processes run (PythonSlicer inside Slicer)."""
    name = "PythonSlicer.exe" if sys.platform == "win32" else "PythonSlicer"
    found = shutil.which(name)
    if found:
        return found
    for folder in (slicer.app.slicerHome, os.path.join(slicer.app.slicerHome, "bin")):
        candidate = os.path.join(folder, name)
        if os.path.exists(candidate):
            return candidate
    return sys.executable


def missingRequirements() -> list[str]:
    return [requirement for module, requirement in REQUIREMENTS.items() if importlib.util.find_spec(module) is None]


def ensureDependencies(interactive: bool) -> bool:
    """Install missing packages (asking first when ``interactive``); True when all are present."""
    missing = missingRequirements()
    if not missing:
        return True
    if interactive and not slicer.util.confirmOkCancelDisplay(
        "MRI Denoise needs these Python packages, which will now be installed:\n" + "\n".join(missing),
        "Install dependencies",
    ):
        return False
    with slicer.util.WaitCursor():
        if any(r.startswith("torch") for r in missing):
            try:
                # The PyTorch extension picks a CUDA build that matches the installed driver.
                import PyTorchUtils

                PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=">=2.1")
            except ImportError:
                slicer.util.pip_install(REQUIREMENTS["torch"])
        others = [r for r in missing if not r.startswith("torch")]
        if others:
            slicer.util.pip_install(" ".join(others))
    return not missingRequirements()


class MRIDenoiseWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: binds the .ui to the parameter node and runs jobs without freezing Slicer."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._pollJob)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MRIDenoise.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MRIDenoiseLogic()
        self._fillModels()
        self.ui.deviceInfoLabel.text = self.logic.deviceDescription()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.finetuneButton.connect("clicked(bool)", self.onFinetuneButton)
        self.ui.consensusButton.connect("clicked(bool)", self.onConsensusButton)
        self.ui.estimateNoiseButton.connect("clicked(bool)", self.onEstimateNoise)
        self.ui.loadWeightsButton.connect("clicked(bool)", self.onLoadWeights)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._job is not None:
            self._job.cancel()
        self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateState)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateState)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateState)
            self._updateState()

    def _fillModels(self) -> None:
        combo = self.ui.modelComboBox
        combo.blockSignals(True)
        combo.clear()
        for row in self.logic.models():
            status = {"bundled": "bundled", "cached": "downloaded", "not needed": "no weights"}.get(
                row["weights"], "needs a download"
            )
            combo.addItem(row["title"] + (" (default)" if row["default"] else ""), row["id"])
            combo.setItemData(combo.count - 1, f"{row['description']}\nWeights: {status}.", qt.Qt.ToolTipRole)
        combo.blockSignals(False)

    def onModelChanged(self, index: int) -> None:
        if self._parameterNode and index >= 0:
            self._parameterNode.model = self.ui.modelComboBox.itemData(index)

    def _updateState(self, caller=None, event=None) -> None:
        node = self._parameterNode
        if not node:
            return
        combo = self.ui.modelComboBox
        wanted = (
            combo.findData(node.model)
            if node.model
            else next((i for i in range(combo.count) if "(default)" in combo.itemText(i)), 0)
        )
        if wanted >= 0 and wanted != combo.currentIndex:
            combo.currentIndex = wanted
        self.ui.noisePercentSlider.enabled = not node.autoNoise
        action = self._job.action if self._job is not None else None
        self.ui.applyButton.text = "Cancel" if action == "denoise" else "Apply"
        self.ui.applyButton.enabled = action == "denoise" or (action is None and bool(node.inputVolume))
        self.ui.finetuneButton.text = "Cancel" if action == "finetune" else "Fine-tune on this volume"
        self.ui.finetuneButton.enabled = action == "finetune" or (action is None and bool(node.inputVolume))
        self.ui.consensusButton.text = "Cancel" if action == "train-consensus" else "Train on both and combine"
        self.ui.consensusButton.enabled = action == "train-consensus" or (
            action is None and bool(node.inputVolume) and bool(node.secondVolume)
        )

    def onEstimateNoise(self) -> None:
        if not self._parameterNode.inputVolume or not ensureDependencies(interactive=True):
            return
        with slicer.util.tryWithErrorDisplay("Noise estimation failed.", waitCursor=True):
            sigma, percent = self.logic.estimateNoise(self._parameterNode.inputVolume)
            self._parameterNode.noisePercent = min(max(percent, 0.5), 40.0)
            self.ui.statusLabel.text = f"Estimated noise: sigma {sigma:.4g} ({percent:.1f} % of the brightest tissue)."

    def onLoadWeights(self) -> None:
        path = qt.QFileDialog.getOpenFileName(self.parent, "Weights file", "", "Safetensors (*.safetensors)")
        if path:
            with slicer.util.tryWithErrorDisplay("These are not the weights of the selected model.", waitCursor=True):
                self.logic.importWeights(self._parameterNode.model or None, path)
                self._fillModels()
                self._updateState()

    def onApplyButton(self) -> None:
        node = self._parameterNode

        def start():
            sigma = None if node.autoNoise else self.logic.sigmaFromPercent(node.inputVolume, node.noisePercent)
            return self.logic.process(
                node.inputVolume,
                node.outputVolume,
                node.model or None,
                node.device,
                sigma,
                node.noiseOutputVolume,
                waitForCompletion=False,
                progressCallback=self._onProgress,
            )

        self._startOrCancel(start, "Could not start denoising.", "Cancelled; the scene is unchanged.")

    def onFinetuneButton(self) -> None:
        node = self._parameterNode

        def start():
            return self.logic.finetune(
                node.inputVolume,
                node.outputVolume,
                node.model or None,
                node.finetuneMinutes,
                node.device,
                waitForCompletion=False,
                progressCallback=self._onProgress,
            )

        self._startOrCancel(
            start, "Could not start fine-tuning.", "Cancelled; no model was saved, the scene is unchanged."
        )

    def onConsensusButton(self) -> None:
        node = self._parameterNode

        def start():
            return self.logic.trainConsensus(
                node.inputVolume,
                node.secondVolume,
                node.outputVolume,
                minutes=node.consensusMinutes,
                device=node.device,
                waitForCompletion=False,
                progressCallback=self._onProgress,
            )

        self._startOrCancel(
            start, "Could not start consensus training.", "Cancelled; no model was saved, the scene is unchanged."
        )

    def _startOrCancel(self, start, failureTitle: str, cancelledMessage: str) -> None:
        """Cancel the running job, or start one (``start()`` returns it) and poll it."""
        if self._job is not None:
            self._job.cancel()
            self._finishJob(cancelledMessage)
            return
        if not ensureDependencies(interactive=True):
            return
        with slicer.util.tryWithErrorDisplay(failureTitle, waitCursor=True):
            self._job = start()
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = "Starting..."
            self._timer.start()
            self._updateState()

    def _onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(100 * fraction)
        self.ui.statusLabel.text = f"{message} ({self._job.elapsed:.0f} s)"

    def _pollJob(self) -> None:
        state = self._job.poll()
        if state == "running":
            return
        job = self._job
        if state == "done" and job.action == "train-consensus":
            self._fillModels()
            self._parameterNode.outputVolume = job.output_node
            self._finishJob(
                f"Done in {job.elapsed:.0f} s: saved model {job.summary.get('model')} ({job.summary.get('steps')} "
                "steps) and combined both acquisitions into the output."
            )
        elif state == "done" and job.action == "finetune":
            self._fillModels()
            self._parameterNode.model = job.summary.get("model", "")
            self._parameterNode.outputVolume = job.output_node
            self._finishJob(
                f"Done in {job.elapsed:.0f} s: saved model {job.summary.get('model')} "
                f"({job.summary.get('steps')} steps) and denoised the input with it; it is now the selected model."
            )
        elif state == "done":
            summary = job.summary
            sigma = summary.get("sigma")
            sigma_text = f"{sigma:.4g}" if isinstance(sigma, float) else str(sigma)
            self._parameterNode.outputVolume = job.output_node
            slicer.util.setSliceViewerLayers(
                background=job.output_node, foreground=job.input_node, foregroundOpacity=0.0
            )
            self._finishJob(
                f"Done in {job.elapsed:.1f} s with {summary.get('model')} on {summary.get('device')}; "
                f"sigma {sigma_text} ({'estimated' if summary.get('sigma_estimated') else 'given'}). "
                "Fade the foreground to compare with the original."
            )
        else:
            self._finishJob(f"Failed: {job.error}")
            slicer.util.errorDisplay(f"{job.action.capitalize()} failed: {job.error}")

    def _finishJob(self, message: str) -> None:
        self._timer.stop()
        self._job = None
        self.ui.statusLabel.text = message
        self._updateState()


class MRIDenoiseLogic(ScriptedLoadableModuleLogic):
    """Scriptable entry point (no GUI). Example from the Python console::

    logic = slicer.util.getModuleLogic("MRIDenoise")
    denoised = logic.process(getNode("MRHead"))                     # blocking, default model
    denoised = logic.process(getNode("MRHead"), model="nlm", device="cpu", sigma=12.0)
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        os.environ.setdefault("MRIDENOISE_CACHE_DIR", os.path.join(slicer.app.cachePath, "MRIDenoise"))
        self._core = None

    def getParameterNode(self):
        return MRIDenoiseParameterNode(super().getParameterNode())

    @property
    def core(self):
        """The GUI-free logic; installs dependencies first (silently when headless or testing)."""
        if self._core is None:
            interactive = not (slicer.app.testingEnabled() or slicer.app.commandOptions().noMainWindow)
            if not ensureDependencies(interactive):
                raise RuntimeError("MRI Denoise needs its Python dependencies: " + ", ".join(missingRequirements()))
            from MRIDenoiseSlicer.logic import DenoiseLogic

            self._core = DenoiseLogic(slicer.mrmlScene, python_executable=pythonSlicerExecutable())
        return self._core

    @staticmethod
    def models() -> list[dict]:
        from MRIDenoiseLib.models.store import describe_models

        return describe_models()

    @staticmethod
    def deviceDescription() -> str:
        if importlib.util.find_spec("torch") is None:
            return "GPU detection after the dependencies are installed"
        import torch

        if torch.cuda.is_available():
            return f"GPU: {torch.cuda.get_device_name(0)}"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "GPU: Apple MPS"
        return f"No GPU found; CPU with {torch.get_num_threads()} threads (slower)"

    def estimateNoise(self, inputVolume) -> tuple[float, float]:
        return self.core.estimate_noise(inputVolume)

    def sigmaFromPercent(self, inputVolume, percent: float) -> float:
        return self.core.sigma_from_percent(inputVolume, percent)

    @staticmethod
    def importWeights(modelId, path: str) -> None:
        from MRIDenoiseSlicer.catalog import import_weights

        import_weights(modelId, path)

    def process(
        self,
        inputVolume,
        outputVolume=None,
        model: str | None = None,
        device: str = "auto",
        sigma: float | None = None,
        noiseOutputVolume=None,
        waitForCompletion: bool = True,
        progressCallback=None,
    ):
        """Denoise ``inputVolume``; returns the output node (blocking) or a running job (not blocking)."""
        logging.info("MRIDenoise: %s with %s on %s", inputVolume.GetName(), model or "the default model", device)
        return self.core.process(
            inputVolume, outputVolume, model, device, sigma, noiseOutputVolume, waitForCompletion, progressCallback
        )

    def finetune(
        self,
        inputVolume,
        outputVolume=None,
        model: str | None = None,
        minutes: float = 5.0,
        device: str = "auto",
        waitForCompletion: bool = True,
        progressCallback=None,
    ):
        """Adapt ``model`` to ``inputVolume`` (self-supervised), save it as a user model, denoise with it."""
        logging.info(
            "MRIDenoise: fine-tuning %s on %s for %.1f min",
            model or "the default model",
            inputVolume.GetName(),
            minutes,
        )
        return self.core.finetune(
            inputVolume, outputVolume, model, minutes, "r2r", device, waitForCompletion, progressCallback
        )

    def trainConsensus(
        self,
        firstVolume,
        secondVolume,
        outputVolume=None,
        model: str | None = None,
        minutes: float = 5.0,
        device: str = "auto",
        waitForCompletion: bool = True,
        progressCallback=None,
    ):
        """Train a consensus pair on two acquisitions of one object, save it, combine both into one denoised volume."""
        logging.info("MRIDenoise: consensus training on %s and %s", firstVolume.GetName(), secondVolume.GetName())
        return self.core.train_consensus(
            firstVolume, secondVolume, outputVolume, model, minutes, device, waitForCompletion, progressCallback
        )


class MRIDenoiseTest(ScriptedLoadableModuleTest):
    """Runs in Slicer (ctest py_MRIDenoise): real sample data through the logic, blocking."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_scalar_volume_is_denoised_with_the_default_model()
        self.setUp()
        self.test_diffusion_weighted_volume_keeps_its_table()
        self.setUp()
        self.test_finetune_saves_a_model_and_denoises_with_it()
        self.setUp()
        self.test_two_acquisitions_train_a_consensus_model()

    def _noisy_copy(self, node, level: float, seed: int = 1):
        from MRIDenoiseLib.noise import add_noise, sigma_for_level
        from MRIDenoiseSlicer.nodes import add_node_from_volume, volume_from_node

        volume = volume_from_node(node)
        clean = volume.array.astype("float32")
        noisy = volume.with_array(add_noise(clean, sigma_for_level(clean, level), "rician", seed))
        return clean, add_node_from_volume(slicer.mrmlScene, noisy, node.GetName() + " noisy")

    def test_scalar_volume_is_denoised_with_the_default_model(self):
        import SampleData

        from MRIDenoiseLib.metrics import evaluate
        from MRIDenoiseSlicer.nodes import geometry_from_node, volume_from_node

        self.delayDisplay("Denoising MRHead with 5 % Rician noise")
        head = SampleData.downloadSample("MRHead")
        clean, noisy = self._noisy_copy(head, 5.0)
        before = volume_from_node(noisy).array.copy()
        output = MRIDenoiseLogic().process(noisy)
        self.assertEqual(output.GetName(), noisy.GetName() + " denoised")
        denoised = volume_from_node(output).array
        self.assertTrue((volume_from_node(noisy).array == before).all(), "the input node was modified")
        self.assertGreater(evaluate(clean, denoised)["psnr_foreground"], evaluate(clean, before)["psnr_foreground"])
        self.assertEqual(geometry_from_node(output), geometry_from_node(noisy))
        self.delayDisplay("Scalar test passed")

    def test_diffusion_weighted_volume_keeps_its_table(self):
        import SampleData

        from MRIDenoiseSlicer.nodes import volume_from_node

        self.delayDisplay("Denoising a diffusion-weighted sample")
        dwi = SampleData.downloadSample("DWIVolume")
        output = MRIDenoiseLogic().process(dwi, model="gaussian")
        source, result = volume_from_node(dwi), volume_from_node(output)
        self.assertTrue(output.IsA("vtkMRMLDiffusionWeightedVolumeNode"))
        self.assertEqual(result.array.shape, source.array.shape)
        self.assertTrue((result.diffusion.gradients == source.diffusion.gradients).all())
        self.assertTrue((result.diffusion.bvalues == source.diffusion.bvalues).all())
        self.delayDisplay("Diffusion test passed")

    def test_finetune_saves_a_model_and_denoises_with_it(self):
        import SampleData

        self.delayDisplay("Fine-tuning the default model on MRHead with 10 % Rician noise")
        head = SampleData.downloadSample("MRHead")
        _, noisy = self._noisy_copy(head, 10.0)
        logic = MRIDenoiseLogic()
        output = logic.finetune(noisy, minutes=0.2)
        model = logic.core.last_summary["model"]
        self.assertIn("-ft-", model)
        self.assertIn(model, [row["id"] for row in logic.models()])
        self.assertEqual(output.GetName(), noisy.GetName() + " denoised")
        self.delayDisplay("Fine-tuning test passed")

    def test_two_acquisitions_train_a_consensus_model(self):
        import SampleData

        from MRIDenoiseLib.metrics import evaluate
        from MRIDenoiseSlicer.nodes import volume_from_node

        self.delayDisplay("Consensus training on two noisy copies of MRHead (10 % Rician)")
        head = SampleData.downloadSample("MRHead")
        clean, first = self._noisy_copy(head, 10.0)
        _, second = self._noisy_copy(head, 10.0, seed=2)
        logic = MRIDenoiseLogic()
        output = logic.trainConsensus(first, second, minutes=0.2)
        model = logic.core.last_summary["model"]
        self.assertTrue(model.startswith("consensus-"))
        self.assertIn(model, [row["id"] for row in logic.models()])
        before = evaluate(clean, volume_from_node(first).array)["psnr_foreground"]
        self.assertGreater(evaluate(clean, volume_from_node(output).array)["psnr_foreground"], before)
        self.delayDisplay("Consensus test passed")

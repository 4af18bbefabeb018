"""MRIDenoise: the 3D Slicer module. Panel, scriptable logic and self-test; no algorithm here.

Everything that computes lives in MRIDenoiseLib (the engine) and MRIDenoiseSlicer (MRML adapter
and GUI-free logic). Python packages are installed on first use, never when Slicer loads this
module; their one list is Resources/requirements.txt (pyproject.toml reads the same file).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Union

import qt
import slicer
import vtk
from slicer import vtkMRMLDiffusionWeightedVolumeNode, vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

MODULE_DIR = Path(__file__).resolve().parent
REQUIREMENTS_FILE = MODULE_DIR / "Resources" / "requirements.txt"
DEVICE_CHOICES = ["auto", "cuda", "mps", "cpu"]
SAMPLE_NAME = "MRIDenoiseColin27Slab"
SAMPLE_FILE = MODULE_DIR / "Resources" / "SampleData" / "colin27_t1_1mm_slab.nii.gz"
SAMPLE_SHA256 = "1a9ee98947b6bf2c92a67922e3b5fe04da119289633770eeacd2788526a1ef46"
#: Parameter-node fields synced by hand, with their widget: a combo box bound by SlicerParameterName needs a
#: fixed Choice list, and the model list comes from the catalogue (user models included).
MANUALLY_BOUND_PARAMETERS = {"model": "modelComboBox"}
#: The panel's node selectors list exactly these classes (a child class such as a label map is not offered).
#: (typing.Union, not "|": parameterNodeWrapper recognises node unions by typing.get_origin == typing.Union).
InputVolume = Union[vtkMRMLScalarVolumeNode, vtkMRMLDiffusionWeightedVolumeNode, None]  # noqa: UP007


def moduleHelpText() -> str:
    """The module's help: how to use the panel, then the methods, generated from the model catalogue."""
    from MRIDenoiseSlicer.catalog import catalogue_help_html

    intro = _(
        "<p>Removes noise from MRI volumes with trained deep-learning denoisers (GPU when available, CPU "
        "otherwise) or classical filters. Choose the input, a model, and click <b>Apply</b>: a new "
        '"&lt;input&gt; denoised" volume appears beside the original, which is never modified. The noise level '
        "is estimated from the scan unless you set it. <b>Log</b> shows what the worker prints; the button "
        "that started a job cancels it, and closing the scene cancels it too.</p>"
    )
    adapt = _(
        "<p><b>Adapt to this scan</b> (beside the noise level) first fine-tunes the network on the input for a "
        "minute, in memory, where that was measured to pay (noise 2.5-12 % of the brightest tissue, not "
        "8-bit data; the default model's low-noise step then runs on the adapted network); the status line says "
        "what it decided. <b>Adapt the model to this scan</b> fine-tunes the selected network on the input "
        "itself (no clean image needed) within a time budget and saves it as one of <i>your models</i>. "
        "<b>Two acquisitions of the same object</b> learns a model from the input and a repeat of it "
        "(registered rigidly) and combines both scans into one denoised volume. A cancelled job saves nothing.</p>"
        "<p>Scripting: <code>slicer.util.getModuleLogic('MRIDenoise').process(inputVolume)</code>. "
        '<a href="https://github.com/SlicerMRIDenoise/SlicerMRIDenoise">Documentation</a>.</p>'
    )
    return intro + catalogue_help_html() + adapt


class MRIDenoise(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MRI Denoise")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Filtering.Denoising")]
        self.parent.dependencies = []
        self.parent.contributors = ["SlicerMRIDenoise developers"]
        self.parent.helpText = moduleHelpText()
        self.parent.acknowledgementText = _(
            "Bundled sample data: Colin27 (MNI; Holmes et al. 1998), BSD-3-Clause via mricron-data. "
            "Trained weights list their training data and licences in their model cards."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """Offer the bundled Colin27 slab in the Sample Data module, under this module's category."""
    import SampleData

    SampleData.SampleDataLogic.registerCustomSampleDataCategory("MRIDenoise", title=_("MRI Denoise"))
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="MRIDenoise",
        sampleName=SAMPLE_NAME,
        uris=SAMPLE_FILE.as_uri(),
        fileNames=SAMPLE_FILE.name,
        nodeNames=SAMPLE_NAME,
        checksums=f"SHA256:{SAMPLE_SHA256}",
        thumbnailFileName=str(MODULE_DIR / "Resources" / "Icons" / "MRIDenoise.png"),
    )


@parameterNodeWrapper
class MRIDenoiseParameterNode:
    """Panel state, saved with the scene. ``model`` is synced by hand: its list comes from the catalogue."""

    inputVolume: InputVolume
    outputVolume: InputVolume
    noiseOutputVolume: InputVolume
    model: str = ""
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    autoNoise: bool = True
    noisePercent: Annotated[float, WithinRange(0.5, 40.0)] = 5.0
    varyingNoise: bool = False
    adaptToScan: bool = False
    coils: Annotated[int, WithinRange(1, 128)] = 1
    zeroFilled: Annotated[float, WithinRange(1.0, 4.0)] = 1.0
    sigmaMapVolume: vtkMRMLScalarVolumeNode
    rankMapVolume: vtkMRMLScalarVolumeNode
    finetuneMinutes: Annotated[float, WithinRange(0.5, 120.0)] = 5.0
    secondVolume: vtkMRMLScalarVolumeNode
    consensusMinutes: Annotated[float, WithinRange(0.5, 120.0)] = 5.0


def adaptationText(report) -> str:
    """What the adaptation before denoising did, for the status line (empty when none was asked for)."""
    if not report:
        return ""
    if not report.get("adapted"):
        return " " + _("Not adapted to the scan: {reason}.").format(reason=report.get("reason"))
    return " " + _("Adapted to the scan first: {steps} steps in {seconds} s.").format(
        steps=report.get("steps"), seconds=report.get("seconds")
    )


def wienerStepText(ran, share=None) -> str:
    """Whether the default's low-noise Wiener step ran and how much of it was kept, for the status line
    (empty for other methods)."""
    if ran is None:
        return ""
    if not ran:
        return " " + _(
            "The Wiener step was left out (noise above its range or correlated, or the step would not help): "
            "the network's output as it is."
        )
    if share is None or share >= 1:
        return " " + _("Low noise: the Wiener step refined the network's output.")
    return " " + _(
        "Low noise: the Wiener step refined the network's output ({percent} % of it, measured on the scan)."
    ).format(percent=round(100 * share))


def zeroFillText(summary) -> str:
    """Where a zero-filled scan's acquired band was denoised, or a hint that the scan may be one (the noise
    removed was correlated between neighbours), for the status line; empty otherwise."""
    if summary.get("acquired_shape"):
        return " " + _("Zero-filled: the acquired band was denoised on a {grid} grid.").format(
            grid=" x ".join(str(size) for size in summary["acquired_shape"])
        )
    if summary.get("correlated_noise"):
        return " " + _(
            "The noise removed is correlated between neighbours: if the scan was reconstructed finer than "
            "acquired, set Zero-filled to that factor."
        )
    return ""


def pythonSlicerExecutable() -> str:
    """The Python interpreter that child processes run (PythonSlicer inside Slicer)."""
    name = "PythonSlicer.exe" if sys.platform == "win32" else "PythonSlicer"
    for folder in (slicer.app.slicerHome, os.path.join(slicer.app.slicerHome, "bin")):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    return shutil.which(name) or sys.executable


def launchWorker(args, environment):
    """Start a worker as Slicer starts its helpers: console hidden on Windows, output merged into stdout."""
    return slicer.util.launchConsoleProcess(list(args), useStartupEnvironment=True, updateEnvironment=dict(environment))


def requirements() -> list[str]:
    """Resources/requirements.txt, one requirement per line (comments skipped)."""
    lines = (line.strip() for line in REQUIREMENTS_FILE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith(("#", "-"))]


def missingRequirements(extra: list[str] | None = None) -> list[str]:
    """Requirements (the engine's, plus ``extra`` ones of a chosen method) not installed or below their minimum."""
    from packaging.requirements import Requirement

    missing = []
    for line in requirements() + list(extra or []):
        requirement = Requirement(line)
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is None or not requirement.specifier.contains(installed, prereleases=True):
            missing.append(line)
    return missing


def torchInstalled() -> bool:
    """Whether torch is installed (checked without importing it)."""
    try:
        importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def ensureDependencies(interactive: bool, extra: list[str] | None = None) -> bool:
    """Install missing or too old packages (asking first when ``interactive``); True when all are satisfied.

    ``extra``: a method's own optional packages (a catalogue entry's ``requires``, e.g. DIPY for MP-PCA).
    """
    missing = missingRequirements(extra)
    if not missing:
        return True
    if interactive and not slicer.util.confirmOkCancelDisplay(
        _("MRI Denoise needs these Python packages, which will now be installed:") + "\n" + "\n".join(missing),
        _("Install dependencies"),
    ):
        return False
    with slicer.util.WaitCursor():
        torch = [r for r in missing if r.startswith("torch")]
        if torch:
            try:
                # The PyTorch extension picks a CUDA build that matches the installed driver.
                import PyTorchUtils

                specifier = torch[0].removeprefix("torch")
                PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=specifier)
            except ImportError:
                slicer.util.pip_install(torch[0])
        others = [r for r in missing if not r.startswith("torch")]
        if others:
            slicer.util.pip_install(others)
    return not missingRequirements(extra)


class MRIDenoiseWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: binds the .ui to the parameter node and runs jobs without freezing Slicer."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._modelRows: dict[str, dict] = {}
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.connect("timeout()", self._pollJob)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MRIDenoise.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MRIDenoiseLogic()
        self.logic.logCallback = self._appendLog
        self._fillModels()
        self.ui.deviceInfoLabel.text = self.logic.deviceDescription()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.finetuneButton.connect("clicked(bool)", self.onFinetuneButton)
        self.ui.consensusButton.connect("clicked(bool)", self.onConsensusButton)
        self.ui.estimateNoiseButton.connect("clicked(bool)", self.onEstimateNoise)
        self.ui.loadWeightsButton.connect("clicked(bool)", self.onLoadWeights)
        self.ui.removeModelButton.connect("clicked(bool)", self.onRemoveModel)
        self.ui.openModelsFolderButton.connect("clicked(bool)", self.onOpenModelsFolder)
        self.ui.showEarlierVersionsCheckBox.connect("toggled(bool)", lambda checked: self._fillModels())
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", lambda node: self._checkGpuMemory())
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", lambda index: self._checkGpuMemory())
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._cancelJob(_("Cancelled: the module was closed."))
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)  # a running job goes on; the panel picks it up again on enter

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelJob(_("Cancelled: the scene was closed; nothing was added or saved."))
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = self.logic.firstInputCandidate()

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateState)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateState)
            self._updateState()

    # ---- the model list ------------------------------------------------------------------------------
    def _fillModels(self) -> None:
        """Catalogue groups in order (recommended first), separated; superseded releases only when asked for."""
        from MRIDenoiseSlicer.catalog import grouped_models

        combo = self.ui.modelComboBox
        wanted = self._parameterNode.model if self._parameterNode else ""
        combo.blockSignals(True)
        combo.clear()
        self._modelRows = {}
        for groupTitle, rows in grouped_models(self.ui.showEarlierVersionsCheckBox.checked):
            if combo.count:
                combo.insertSeparator(combo.count)
            for row in rows:
                status = {"bundled": _("bundled"), "cached": _("downloaded"), "not needed": _("no weights")}.get(
                    row["weights"], _("needs a download")
                )
                label = row["title"] + (
                    _(" (recommended)")
                    if row["default"]
                    else _(" (recommended for diffusion)")
                    if row["default_dwi"]
                    else ""
                )
                combo.addItem(label, row["id"])
                tooltip = f"{groupTitle}: {row['description']}\n" + _("Weights: {status}.").format(status=status)
                combo.setItemData(combo.count - 1, tooltip, qt.Qt.ToolTipRole)
                self._modelRows[row["id"]] = row
        combo.blockSignals(False)
        self._showModel(wanted)

    def _showModel(self, modelId: str) -> None:
        combo = self.ui.modelComboBox
        index = combo.findData(modelId) if modelId else -1
        if index < 0:  # none chosen, or hidden (superseded) or removed: show what Apply will run
            key = self._defaultKey()
            index = next((combo.findData(i) for i, row in self._modelRows.items() if row[key]), -1)
        if index < 0:
            index = next((combo.findData(i) for i, row in self._modelRows.items() if row["default"]), 0)
        combo.blockSignals(True)
        combo.currentIndex = index
        combo.blockSignals(False)
        self._describeModel()

    def _defaultKey(self) -> str:
        """Which catalogue default runs when no model is chosen: the diffusion one for a diffusion series."""
        node = self._parameterNode.inputVolume if self._parameterNode else None
        return "default_dwi" if node is not None and node.IsA("vtkMRMLDiffusionWeightedVolumeNode") else "default"

    def _selectedModelRow(self) -> dict | None:
        return self._modelRows.get(self.ui.modelComboBox.currentData)

    def _describeModel(self) -> None:
        row = self._selectedModelRow()
        self.ui.modelDescriptionLabel.text = row["description"] if row else ""
        self.ui.removeModelButton.enabled = bool(row and row["user"]) and self._job is None

    def onModelChanged(self, index: int) -> None:
        modelId = self.ui.modelComboBox.itemData(index)
        if self._parameterNode and modelId:
            self._parameterNode.model = modelId
        self._describeModel()
        self._checkGpuMemory()

    def onRemoveModel(self) -> None:
        row = self._selectedModelRow()
        if not row or not row["user"]:
            return
        question = _("Remove your model '{title}'? Its weights are deleted; scans it denoised are kept.")
        if not slicer.util.confirmOkCancelDisplay(question.format(title=row["title"]), _("Remove model")):
            return
        with slicer.util.tryWithErrorDisplay(_("Could not remove the model."), waitCursor=True):
            self.logic.removeUserModel(row["id"])
            if self._parameterNode:
                self._parameterNode.model = ""
            self._fillModels()
            self._appendLog(_("Removed model {id}.").format(id=row["id"]))

    def onOpenModelsFolder(self) -> None:
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(self.logic.userModelsFolder())))

    # ---- state, device and memory --------------------------------------------------------------------
    def _updateState(self, caller=None, event=None) -> None:
        node = self._parameterNode
        if not node:
            return
        if node.model != (self.ui.modelComboBox.currentData or ""):
            self._showModel(node.model)
        self.ui.autoNoiseCheckBox.enabled = not node.varyingNoise
        self.ui.noisePercentSlider.enabled = not node.autoNoise and not node.varyingNoise
        from MRIDenoiseSlicer.actions import JobAction

        running = self._job.action if self._job is not None else None
        ready = {
            JobAction.DENOISE: (self.ui.applyButton, _("Apply"), bool(node.inputVolume)),
            JobAction.FINETUNE: (self.ui.finetuneButton, _("Fine-tune on this volume"), bool(node.inputVolume)),
            JobAction.TRAIN_CONSENSUS: (
                self.ui.consensusButton,
                _("Train on both and combine"),
                bool(node.inputVolume) and bool(node.secondVolume),
            ),
        }
        for action, (button, label, inputs_given) in ready.items():
            button.text = _("Cancel") if running is action else label
            button.enabled = running is action or (running is None and inputs_given)
        self._describeModel()

    def _checkGpuMemory(self) -> None:
        node = self._parameterNode
        volume = node.inputVolume if node else None
        warning = self.logic.memoryWarning(volume, node.device if node else "auto") if volume else ""
        self.ui.gpuWarningLabel.text = warning
        self.ui.gpuWarningLabel.visible = bool(warning)

    def onEstimateNoise(self) -> None:
        if not self._parameterNode.inputVolume or not ensureDependencies(interactive=True):
            return
        with slicer.util.tryWithErrorDisplay(_("Noise estimation failed."), waitCursor=True):
            sigma, percent = self.logic.estimateNoise(self._parameterNode.inputVolume)
            self._parameterNode.noisePercent = min(max(percent, 0.5), 40.0)
            self.ui.statusLabel.text = _(
                "Estimated noise: sigma {sigma} ({percent} % of the brightest tissue)."
            ).format(sigma=f"{sigma:.4g}", percent=f"{percent:.1f}")

    def onLoadWeights(self) -> None:
        path = qt.QFileDialog.getOpenFileName(self.parent, _("Weights file"), "", "Safetensors (*.safetensors)")
        if path:
            with slicer.util.tryWithErrorDisplay(
                _("These are not the weights of the selected model."), waitCursor=True
            ):
                self.logic.importWeights(self._parameterNode.model or None, path)
                self._fillModels()
                self._updateState()

    # ---- jobs ----------------------------------------------------------------------------------------------
    def onApplyButton(self) -> None:
        node = self._parameterNode

        def start():
            given = not node.autoNoise and not node.varyingNoise
            sigma = self.logic.sigmaFromPercent(node.inputVolume, node.noisePercent) if given else None
            return self.logic.process(
                node.inputVolume,
                node.outputVolume,
                node.model or None,
                node.device,
                sigma,
                node.noiseOutputVolume,
                waitForCompletion=False,
                progressCallback=self._onProgress,
                varyingNoise=node.varyingNoise,
                sigmaMapVolume=node.sigmaMapVolume,
                rankMapVolume=node.rankMapVolume,
                adapt="auto" if node.adaptToScan else "off",
                coils=node.coils,
                zeroFilled=node.zeroFilled,
            )

        self._startOrCancel(start, _("Could not start denoising."), _("Cancelled; the scene is unchanged."))

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
            start, _("Could not start fine-tuning."), _("Cancelled; no model was saved, the scene is unchanged.")
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
            start,
            _("Could not start consensus training."),
            _("Cancelled; no model was saved, the scene is unchanged."),
        )

    def _startOrCancel(self, start, failureTitle: str, cancelledMessage: str) -> None:
        """Cancel the running job, or start one (``start()`` returns it) and poll it."""
        if self._job is not None:
            self._cancelJob(cancelledMessage)
            return
        row = self._selectedModelRow()
        if not ensureDependencies(interactive=True, extra=list(row["requires"]) if row else None):
            return
        with slicer.util.tryWithErrorDisplay(failureTitle, waitCursor=True):
            self._job = start()
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Starting...")
            self._appendLog(
                _("Started {action} (process {pid}).").format(action=self._job.action.value, pid=self._job.pid)
            )
            self._timer.start()
            self._updateState()

    def _cancelJob(self, message: str) -> None:
        if self._job is not None:
            self._job.cancel()
            self._finishJob(message)

    def _appendLog(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(line)

    def _onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(100 * fraction)
        self.ui.statusLabel.text = f"{message} ({self._job.elapsed:.0f} s)"

    def _pollJob(self) -> None:
        if self._job is None:
            self._timer.stop()
            return
        state = self._job.poll()
        if state == "running":
            return
        job = self._job
        summary = job.summary
        if state == "done" and job.action.registers_model:
            self._fillModels()
            self._parameterNode.model = str(summary.get("model", ""))
            self._parameterNode.outputVolume = job.output_node
            self._finishJob(
                _(
                    "Done in {seconds} s: saved model {model} ({steps} steps) and denoised the input with it; "
                    "it is now the selected model."
                ).format(seconds=f"{job.elapsed:.0f}", model=summary.get("model"), steps=summary.get("steps"))
            )
        elif state == "done":
            sigma = summary.get("sigma")
            self._parameterNode.outputVolume = job.output_node
            slicer.util.setSliceViewerLayers(
                background=job.output_node, foreground=job.input_node, foregroundOpacity=0.0
            )
            self._finishJob(
                _(
                    "Done in {seconds} s with {model} on {device}; sigma {sigma} ({source}). "
                    "Fade the foreground to compare with the original."
                ).format(
                    seconds=f"{job.elapsed:.1f}",
                    model=summary.get("model"),
                    device=summary.get("device"),
                    sigma=f"{sigma:.4g}" if isinstance(sigma, float) else str(sigma),
                    source=_("estimated") if summary.get("sigma_estimated") else _("given"),
                )
                + adaptationText(summary.get("adaptation"))
                + wienerStepText(summary.get("wiener_step"), summary.get("wiener_share"))
                + zeroFillText(summary)
            )
        elif state == "cancelled":
            self._finishJob(_("Cancelled; nothing was added or saved."))
        else:
            self._finishJob(_("Failed: {error}").format(error=job.error))
            slicer.util.errorDisplay(_("{action} failed: {error}").format(action=job.action, error=job.error))

    def _finishJob(self, message: str) -> None:
        self._timer.stop()
        self._job = None
        self.ui.statusLabel.text = message
        self._appendLog(message)
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
        self.logCallback = None

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

            self._core = DenoiseLogic(
                slicer.mrmlScene,
                python_executable=pythonSlicerExecutable(),
                launcher=launchWorker,
                log_callback=lambda line: self.logCallback(line) if self.logCallback else logging.info(line),
            )
        return self._core

    @staticmethod
    def models(showSuperseded: bool = True) -> list[dict]:
        """Catalogue rows (id, title, description, group, user, weights status, ...), in panel order."""
        from MRIDenoiseSlicer.catalog import grouped_models

        return [row for _group, rows in grouped_models(showSuperseded) for row in rows]

    @staticmethod
    def firstInputCandidate():
        """The first scalar (not label map) or diffusion-weighted volume of the scene, if any."""
        for className in ("vtkMRMLScalarVolumeNode", "vtkMRMLDiffusionWeightedVolumeNode"):
            for node in slicer.util.getNodesByClass(className):
                if node.GetClassName() == className:
                    return node
        return None

    @staticmethod
    def deviceDescription() -> str:
        if not torchInstalled():
            return _("GPU detection after the dependencies are installed")
        from MRIDenoiseSlicer.devices import describe_compute

        return describe_compute()

    @staticmethod
    def memoryWarning(inputVolume, device: str = "auto") -> str:
        """A plain warning when the GPU has too little free memory for this volume ('' when fine or no torch)."""
        if not torchInstalled():
            return ""
        from MRIDenoiseSlicer.devices import gpu_memory_warning

        image = inputVolume.GetImageData() if inputVolume else None
        return gpu_memory_warning(image.GetDimensions()[::-1], device) if image else ""

    @staticmethod
    def userModelsFolder() -> Path:
        from MRIDenoiseSlicer.catalog import user_models_folder

        return user_models_folder()

    @staticmethod
    def removeUserModel(modelId: str) -> None:
        """Delete a fine-tuned or trained model (catalogue entry and weights); bundled ones are refused."""
        from MRIDenoiseLib.models.catalog import remove_user_model

        remove_user_model(modelId)

    def loadSample(self):
        """The bundled Colin27 T1 slab as a new scalar volume node (no download)."""
        return self.core.load_file(SAMPLE_FILE, SAMPLE_NAME)

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
        varyingNoise: bool = False,
        sigmaMapVolume=None,
        rankMapVolume=None,
        adapt: str = "off",
        coils: int = 1,
        zeroFilled: float = 1.0,
    ):
        """Denoise ``inputVolume``; returns the output node (blocking) or a running job (not blocking).

        ``varyingNoise`` estimates a noise level per voxel (parallel imaging, coil sensitivity) for the
        network; ``sigmaMapVolume`` receives the noise level map a call used; ``rankMapVolume`` the
        number of signal components MP-PCA kept around each voxel (MP-PCA methods). ``adapt``: "auto"
        first adapts the network to the scan for a minute where that was measured to pay (noise 2.5-12 %
        of the brightest tissue, not 8-bit data), a number of minutes always, "off" never; nothing is saved;
        the model's second stage, if it has one, runs on the adapted network. ``coils`` > 1: the
        input is a sum-of-squares magnitude of that many coils (non-central chi noise, sigma per coil).
        ``zeroFilled`` > 1: the input was reconstructed at that many times its acquired resolution in the
        slice plane (zero-filled k-space); the acquired band is denoised on the acquired grid.
        """
        logging.info("MRIDenoise: %s with %s on %s", inputVolume.GetName(), model or "the default model", device)
        return self.core.process(
            inputVolume,
            outputVolume,
            model,
            device,
            sigma,
            noiseOutputVolume,
            waitForCompletion,
            progressCallback,
            varying_noise=varyingNoise,
            sigma_map_node=sigmaMapVolume,
            rank_map_node=rankMapVolume,
            adapt=adapt,
            coils=coils,
            zero_filled=zeroFilled,
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
    """Runs in Slicer (ctest py_MRIDenoise) on the bundled sample, blocking; removes the models it trains."""

    def setUp(self):
        slicer.mrmlScene.Clear()
        self.logic = MRIDenoiseLogic()
        self.assertIsNotNone(self.logic.core)  # installs the dependencies before any test imports the engine
        self.trainedModels = []

    def tearDown(self):
        for modelId in self.trainedModels:
            self.logic.removeUserModel(modelId)
        self.trainedModels = []

    def runTest(self):
        for test in (
            self.test_scalar_volume_is_denoised_with_the_default_model,
            self.test_diffusion_weighted_volume_keeps_its_table,
            self.test_finetune_saves_a_model_and_denoises_with_it,
            self.test_two_acquisitions_train_a_consensus_model,
        ):
            self.setUp()
            try:
                test()
            finally:
                self.tearDown()

    def _noisySample(self, level: float, seed: int = 1):
        from MRIDenoiseLib.noise import add_noise, sigma_for_level
        from MRIDenoiseSlicer.nodes import add_node_from_volume, volume_from_node

        sample = self.logic.loadSample()
        volume = volume_from_node(sample)
        clean = volume.array.astype("float32")
        noisy = volume.with_array(add_noise(clean, sigma_for_level(clean, level), "rician", seed))
        return clean, add_node_from_volume(slicer.mrmlScene, noisy, f"{SAMPLE_NAME} noisy {seed}")

    @staticmethod
    def _psnr(clean, array) -> float:
        import numpy as np

        error = np.mean((np.asarray(array, np.float64) - clean) ** 2)
        return float(10 * np.log10(float(clean.max()) ** 2 / error))

    def test_scalar_volume_is_denoised_with_the_default_model(self):
        from MRIDenoiseSlicer.nodes import geometry_from_node, volume_from_node

        self.delayDisplay("Denoising the bundled Colin27 slab with 5 % Rician noise")
        clean, noisy = self._noisySample(5.0)
        before = volume_from_node(noisy).array.copy()
        output = self.logic.process(noisy)
        self.assertEqual(output.GetName(), noisy.GetName() + " denoised")
        denoised = volume_from_node(output).array
        self.assertTrue((volume_from_node(noisy).array == before).all(), "the input node was modified")
        self.assertGreater(self._psnr(clean, denoised), self._psnr(clean, before) + 3.0)
        self.assertEqual(geometry_from_node(output), geometry_from_node(noisy))
        self.delayDisplay("Scalar test passed")

    def test_diffusion_weighted_volume_keeps_its_table(self):
        import numpy as np

        from MRIDenoiseLib.volume import DiffusionInfo, Volume
        from MRIDenoiseSlicer.nodes import add_node_from_volume, volume_from_node

        self.delayDisplay("Denoising a diffusion-weighted series built from the bundled slab")
        sample = volume_from_node(self.logic.loadSample())
        directions = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float64)
        signal = sample.array[24:40, 60:140, 50:130].astype(np.float32)
        series = np.stack([signal * attenuation for attenuation in (1.0, 0.6, 0.5, 0.4)], axis=-1)
        table = DiffusionInfo(np.array([0.0, 1000.0, 1000.0, 1000.0]), directions)
        dwi = add_node_from_volume(slicer.mrmlScene, Volume(series, sample.geometry, table), "dwi")
        output = self.logic.process(dwi, model="gaussian")
        source, result = volume_from_node(dwi), volume_from_node(output)
        self.assertTrue(output.IsA("vtkMRMLDiffusionWeightedVolumeNode"))
        self.assertEqual(result.array.shape, source.array.shape)
        self.assertTrue((result.diffusion.gradients == source.diffusion.gradients).all())
        self.assertTrue((result.diffusion.bvalues == source.diffusion.bvalues).all())
        self.delayDisplay("Diffusion test passed")

    def test_finetune_saves_a_model_and_denoises_with_it(self):
        self.delayDisplay("Fine-tuning the default model on the bundled slab with 10 % Rician noise")
        _, noisy = self._noisySample(10.0)
        output = self.logic.finetune(noisy, minutes=0.2)
        model = self.logic.core.last_summary["model"]
        self.trainedModels.append(model)
        self.assertIn("-ft-", model)
        self.assertIn(model, [row["id"] for row in self.logic.models()])
        self.assertEqual(output.GetName(), noisy.GetName() + " denoised")
        self.delayDisplay("Fine-tuning test passed")

    def test_two_acquisitions_train_a_consensus_model(self):
        from MRIDenoiseSlicer.nodes import volume_from_node

        self.delayDisplay("Consensus training on two noisy copies of the bundled slab (10 % Rician)")
        clean, first = self._noisySample(10.0)
        _, second = self._noisySample(10.0, seed=2)
        output = self.logic.trainConsensus(first, second, minutes=0.2)
        model = self.logic.core.last_summary["model"]
        self.trainedModels.append(model)
        self.assertTrue(model.startswith("consensus-"))
        self.assertIn(model, [row["id"] for row in self.logic.models()])
        before = self._psnr(clean, volume_from_node(first).array)
        self.assertGreater(self._psnr(clean, volume_from_node(output).array), before)
        self.delayDisplay("Consensus test passed")

"""The Slicer module on Slicer's real Python layer: real MRML (slicer-core), Slicer's own
ScriptedLoadableModule / parameterNodeWrapper / util from ../shared/slicer, stand-ins only for
compiled Qt, CTK and qMRML widgets (Testing/slicer_standins, declared from their headers)."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import sys
import time
import types
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer", reason="needs the slicer-core wheel")
psutil = pytest.importorskip("psutil")

from slicer_standins.environment import SHARED_PYTHON, QDesktopServices, ScriptedModuleHost, install  # noqa: E402
from slicer_standins.uiloader import QFile, QUiLoader  # noqa: E402

from MRIDenoiseLib.io import read_volume, write_volume  # noqa: E402
from MRIDenoiseLib.models.catalog import ModelEntry, load_catalog, register_user_model  # noqa: E402
from MRIDenoiseLib.models.paths import cache_dir  # noqa: E402
from MRIDenoiseLib.noise import add_noise, sigma_for_level  # noqa: E402
from MRIDenoiseLib.volume import DiffusionInfo, Volume  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
UI_FILE = REPO / "Resources" / "UI" / "MRIDenoise.ui"
pytestmark = pytest.mark.skipif(not SHARED_PYTHON.is_dir(), reason="needs ../shared/slicer")


@pytest.fixture
def slicer_env(tmp_path):
    """A fresh Slicer: application, empty scene, the module loaded as Slicer's module factory loads it."""
    slicer = install(tmp_path / "slicer-cache")
    module = ScriptedModuleHost.load(REPO / "MRIDenoise.py")
    yield slicer, module
    if module._widget is not None:  # unload as Slicer does: cleanup(), then the widgets leave the scene
        slicer.app.moduleManager().emit("moduleAboutToBeUnloaded(QString)", "MRIDenoise")
        for combo in module._widget.findChildren(slicer.qMRMLNodeComboBox):
            combo.setMRMLScene(None)
        assert module._widget.self()._job is None


@pytest.fixture
def panel(slicer_env):
    slicer, module = slicer_env
    representation = module.widgetRepresentation()
    representation.enter()
    return slicer, representation.self()


@pytest.fixture
def launched(panel, monkeypatch) -> list[list[str]]:
    """The command lines the panel's jobs start, recorded on their way to Slicer's own launcher (which hides
    the console window on Windows)."""
    slicer, _ = panel
    commands: list[list[str]] = []
    console_launcher = slicer.util.launchConsoleProcess
    monkeypatch.setattr(
        slicer.util, "launchConsoleProcess", lambda *a, **k: commands.append(a[0]) or console_launcher(*a, **k)
    )
    return commands


def _scalar_node(slicer, colin_crop, level=10.0, name="scan"):
    from MRIDenoiseSlicer.nodes import add_node_from_volume

    noisy = add_noise(colin_crop, sigma_for_level(colin_crop, level), "rician", 3)
    return add_node_from_volume(slicer.mrmlScene, Volume(noisy.astype(np.float32)), name)


def _dwi_node(slicer, colin_crop):
    from MRIDenoiseSlicer.nodes import add_node_from_volume

    table = DiffusionInfo(np.array([0.0, 1000.0, 1000.0]), np.array([[0, 0, 0], [1.0, 0, 0], [0, 0.6, 0.8]]))
    series = np.stack([colin_crop, 0.6 * colin_crop, 0.5 * colin_crop], axis=-1).astype(np.float32)
    return add_node_from_volume(slicer.mrmlScene, Volume(series, diffusion=table), "dwi")


def _run_job(widget, polls: int = 2400) -> None:
    """Deliver the panel's timer ticks until its job ends (the step limit only guards a hung child)."""
    for _ in range(polls):
        if widget._job is None:
            return
        widget._timer.fire()
        time.sleep(0.05)
    raise AssertionError("the job did not end")


def _index_of(combo, model_id: str) -> int:
    return combo.findData(model_id)


# ---- loading -----------------------------------------------------------------------------------------
def test_every_top_level_python_file_is_a_module_slicer_can_load(slicer_env):
    """Slicer loads each .py beside MRIDenoise.py as a scripted module; a helper script there is an error."""
    loaded = ScriptedModuleHost.load_folder(REPO)
    assert set(loaded) == {"MRIDenoise"}
    assert loaded["MRIDenoise"].title == "MRI Denoise"
    assert loaded["MRIDenoise"].categories == ["Filtering.Denoising"]


def test_panel_setup_connects_every_ui_binding(panel):
    _slicer, widget = panel
    bound = {w.property("SlicerParameterName") for w in vars(widget.ui).values() if w.property("SlicerParameterName")}
    node = widget._parameterNode
    connected = set().union(*(set(mapping) for mapping in node._parameterGUIs.values()))
    assert bound and bound == connected
    widget.ui.autoNoiseCheckBox.checked = False
    widget.ui.deviceComboBox.currentIndex = widget.ui.deviceComboBox.findText("cpu")
    widget.ui.noisePercentSlider.value = 12.5
    assert (node.autoNoise, node.device, node.noisePercent) == (False, "cpu", 12.5)
    assert widget.ui.noisePercentSlider.enabled  # manual noise level unlocks the slider
    node.finetuneMinutes = 7.5
    assert widget.ui.finetuneMinutesSpinBox.value == 7.5
    widget.ui.coilsSpinBox.value = 8
    assert node.coils == 8
    widget.ui.zeroFilledSpinBox.value = 2.0
    assert node.zeroFilled == 2.0
    widget.ui.zeroFilledSpinBox.value = 0.5  # below the range: a scan is at least on its acquired grid
    assert node.zeroFilled == 1.0


def test_stand_ins_reject_what_real_slicer_rejects(slicer_env, tmp_path):
    """The widgets are strict: an undeclared property in a .ui, or a combo box bound to a plain str, fails."""
    slicer, _ = slicer_env
    bad_ui = tmp_path / "bad.ui"
    bad_ui.write_text(UI_FILE.read_text().replace('name="showChildNodeTypes"', 'name="showChildTypes"', 1))
    with pytest.raises(RuntimeError, match="no property 'showChildTypes'"):
        QUiLoader(__import__("slicer_standins.environment").environment._ui_classes()).load(QFile(str(bad_ui)))
    from slicer.parameterNodeWrapper import parameterNodeWrapper

    @parameterNodeWrapper
    class Plain:
        model: str = ""

    combo = sys.modules["qt"].QComboBox()
    combo.setProperty("SlicerParameterName", "model")
    node = Plain(slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode"))
    with pytest.raises(RuntimeError, match="requires the Choice annotation"):
        node.connectGui(types.SimpleNamespace(model=combo))


def test_enter_exit_and_scene_close(panel, colin_crop):
    slicer, widget = panel
    first = _scalar_node(slicer, colin_crop, name="first")
    node = widget._parameterNode
    widget.ui.inputVolumeSelector.setCurrentNode(first)
    assert node.inputVolume is first
    widget.exit()
    widget.ui.autoNoiseCheckBox.checked = not node.autoNoise
    assert node.autoNoise != widget.ui.autoNoiseCheckBox.checked or node.autoNoise is True  # no longer synced
    widget.enter()
    assert widget._parameterNode.inputVolume is first
    slicer.mrmlScene.Clear()
    assert widget._parameterNode is not None and widget._parameterNode.inputVolume is None
    assert not widget.ui.applyButton.enabled


def test_diffusion_weighted_volume_can_be_chosen_and_keeps_its_table(panel, colin_crop):
    from MRIDenoiseSlicer.nodes import add_node_from_volume, volume_from_node

    slicer, widget = panel
    dwi = _dwi_node(slicer, colin_crop[:8, :32, :32])
    listed = widget.ui.inputVolumeSelector.listed_nodes()
    assert dwi in listed
    widget.ui.inputVolumeSelector.setCurrentNode(dwi)
    assert widget._parameterNode.inputVolume is dwi
    # no model chosen: the list shows what Apply runs for a diffusion series, and the choice stays open
    assert widget.ui.modelComboBox.currentData == load_catalog().default_dwi_id == "mppca-spatial-v3"
    assert widget._parameterNode.model == ""
    assert "recommended for diffusion" in widget.ui.modelComboBox.currentText
    scalar = add_node_from_volume(slicer.mrmlScene, Volume(colin_crop[:8, :32, :32]), "scalar")
    widget.ui.inputVolumeSelector.setCurrentNode(scalar)
    assert widget.ui.modelComboBox.currentData == load_catalog().default_id
    widget.ui.inputVolumeSelector.setCurrentNode(dwi)
    rank = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "signal components")
    widget.ui.rankMapSelector.setCurrentNode(rank)
    assert widget._parameterNode.rankMapVolume is rank  # what Apply hands the logic as rank_map_node
    widget.ui.rankMapSelector.setCurrentNode(None)
    output = widget.logic.process(dwi, model="gaussian")
    source, result = volume_from_node(dwi), volume_from_node(output)
    assert output.IsA("vtkMRMLDiffusionWeightedVolumeNode") and result.array.shape == source.array.shape
    np.testing.assert_array_equal(result.diffusion.gradients, source.diffusion.gradients)
    np.testing.assert_array_equal(result.diffusion.bvalues, source.diffusion.bvalues)


def test_label_maps_are_not_offered_as_input(panel, colin_crop):
    slicer, widget = panel
    label = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "mask")
    assert label not in widget.ui.inputVolumeSelector.listed_nodes()


# ---- jobs ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_apply_runs_a_background_job_into_a_new_node(panel, colin_crop, launched):
    slicer, widget = panel
    scan = _scalar_node(slicer, colin_crop[:8])
    widget.ui.inputVolumeSelector.setCurrentNode(scan)
    widget.ui.modelComboBox.currentIndex = _index_of(widget.ui.modelComboBox, "gaussian")
    assert widget._parameterNode.model == "gaussian"
    widget.ui.applyButton.click()
    assert widget._job is not None and widget.ui.applyButton.text == "Cancel"
    _run_job(widget)
    output = slicer.mrmlScene.GetFirstNodeByName("scan denoised")
    assert output is not None and widget._parameterNode.outputVolume is output
    assert widget.ui.statusLabel.text.startswith("Done") and widget.ui.applyButton.text == "Apply"
    assert "Started denoise" in widget.ui.logTextEdit.toPlainText()
    assert len(launched) == 1 and launched[0][1:4] == ["-m", "MRIDenoiseLib", "denoise"]


@pytest.mark.slow
def test_at_low_noise_the_status_says_how_much_of_the_wiener_step_the_default_kept(panel, colin_crop, launched):
    slicer, widget = panel
    scan = _scalar_node(slicer, colin_crop[:16], level=3.0, name="quiet scan")
    widget.ui.inputVolumeSelector.setCurrentNode(scan)
    widget.ui.modelComboBox.currentIndex = _index_of(widget.ui.modelComboBox, load_catalog().default_id)
    widget.ui.applyButton.click()
    _run_job(widget)
    status = widget.ui.statusLabel.text
    assert status.startswith("Done") and "the Wiener step refined the network's output (" in status, status
    assert "% of it, measured on the scan" in status


def test_noise_that_varies_is_estimated_per_voxel_and_its_map_lands_in_a_node(panel, colin_crop, launched):
    slicer, widget = panel
    scan = _scalar_node(slicer, colin_crop[:12])
    sigma_map = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "noise level")
    widget.ui.inputVolumeSelector.setCurrentNode(scan)
    widget.ui.modelComboBox.currentIndex = _index_of(widget.ui.modelComboBox, "mridenoise-rician-2.5d")
    widget.ui.autoNoiseCheckBox.checked = False
    assert widget.ui.noisePercentSlider.enabled
    widget.ui.varyingNoiseCheckBox.checked = True
    assert widget._parameterNode.varyingNoise
    assert not widget.ui.noisePercentSlider.enabled and not widget.ui.autoNoiseCheckBox.enabled
    widget.ui.sigmaMapSelector.setCurrentNode(sigma_map)
    widget.ui.applyButton.click()
    _run_job(widget)
    assert widget.ui.statusLabel.text.startswith("Done"), widget.ui.logTextEdit.toPlainText()
    command = launched[0]
    assert command[command.index("--sigma") + 1] == "map" and "--sigma-map" in command
    values = slicer.util.arrayFromVolume(sigma_map)
    assert values.shape == slicer.util.arrayFromVolume(scan).shape and float(values.min()) > 0


@pytest.mark.slow
def test_adapt_to_this_scan_asks_the_worker_and_the_status_says_what_it_decided(panel, colin_crop, launched):
    slicer, widget = panel
    scan = _scalar_node(slicer, colin_crop[:8], level=20.0)  # strong noise: auto keeps the shipped network
    widget.ui.inputVolumeSelector.setCurrentNode(scan)
    widget.ui.adaptCheckBox.checked = True
    assert widget._parameterNode.adaptToScan
    widget.ui.applyButton.click()
    _run_job(widget)
    status = widget.ui.statusLabel.text
    assert status.startswith("Done") and "Not adapted to the scan: noise level" in status, status
    assert "the network's output as it is" in status  # the default's Wiener step is for low noise only
    command = launched[0]
    assert command[command.index("--adapt") + 1] == "auto"
    widget.ui.adaptCheckBox.checked = False
    widget.ui.coilsSpinBox.value = 4  # a sum-of-squares magnitude: the worker is told the coil count
    widget.ui.zeroFilledSpinBox.value = 2.0  # and that the scan was reconstructed at twice its acquired grid
    widget.ui.applyButton.click()
    _run_job(widget)
    assert "--adapt" not in launched[1] and "adapted" not in widget.ui.statusLabel.text
    assert launched[1][launched[1].index("--coils") + 1] == "4" and "--coils" not in launched[0]
    assert launched[1][launched[1].index("--zero-filled") + 1] == "2.0" and "--zero-filled" not in launched[0]
    assert "Zero-filled: the acquired band was denoised on a 8 x 49 x 49 grid." in widget.ui.statusLabel.text


@pytest.mark.slow
def test_a_failing_job_streams_its_error_to_the_log(panel, colin_crop):
    slicer, widget = panel
    scan = _scalar_node(slicer, colin_crop[:8])
    widget.ui.inputVolumeSelector.setCurrentNode(scan)
    widget._parameterNode.model = "no-such-model"
    widget.ui.applyButton.click()
    _run_job(widget)
    log = widget.ui.logTextEdit.toPlainText()
    assert "mridenoise: error: unknown model id 'no-such-model'" in log
    assert (
        widget.ui.statusLabel.text.startswith("Failed") and slicer.mrmlScene.GetFirstNodeByName("scan denoised") is None
    )


def _fake_launcher(slicer, tmp_path, monkeypatch) -> Path:
    """A PythonSlicer that, like the CTK launcher, starts the real interpreter as its own child."""
    home = Path(slicer.app.slicerHome) / "bin"
    home.mkdir(parents=True)
    launcher = home / "PythonSlicer"
    launcher.write_text(
        f"#!{sys.executable}\n"
        "import os, subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, *sys.argv[1:]])\n"
        "open(os.environ['LAUNCHER_CHILD_PID_FILE'], 'w').write(str(child.pid))\n"
        "sys.exit(child.wait())\n"
    )
    launcher.chmod(launcher.stat().st_mode | stat.S_IEXEC)
    pid_file = tmp_path / "child.pid"
    monkeypatch.setenv("LAUNCHER_CHILD_PID_FILE", str(pid_file))
    return pid_file


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for(predicate, polls: int = 1200) -> None:
    for _ in range(polls):
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


@pytest.mark.slow
def test_cancel_ends_the_launcher_and_its_child_and_saves_nothing(panel, colin_crop, tmp_path, monkeypatch):
    slicer, widget = panel
    pid_file = _fake_launcher(slicer, tmp_path, monkeypatch)
    scan = _scalar_node(slicer, colin_crop[:12])
    widget.ui.inputVolumeSelector.setCurrentNode(scan)
    widget._parameterNode.finetuneMinutes = 0.5
    nodes_before = slicer.mrmlScene.GetNumberOfNodes()
    widget.ui.finetuneButton.click()
    job = widget._job
    assert Path(widget.logic.core.python_executable).name == "PythonSlicer"
    _wait_for(lambda: pid_file.exists() and pid_file.read_text())
    launcher_pid, worker_pid = job.pid, int(pid_file.read_text())
    _wait_for(lambda: [widget._timer.fire(), job.elapsed > 0 and _alive(worker_pid)][1])
    widget.ui.finetuneButton.click()  # the button cancels while its job runs
    assert widget._job is None and widget.ui.statusLabel.text.startswith("Cancelled")
    assert not _alive(launcher_pid) and not _alive(worker_pid)
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes_before
    assert not [entry for entry in load_catalog() if entry.user]
    assert not (cache_dir() / "user-models").exists() or not any((cache_dir() / "user-models").iterdir())


@pytest.mark.slow
def test_closing_the_scene_cancels_a_running_job(panel, colin_crop):
    slicer, widget = panel
    scan = _scalar_node(slicer, colin_crop[:12])
    widget.ui.inputVolumeSelector.setCurrentNode(scan)
    widget._parameterNode.finetuneMinutes = 0.5
    widget.ui.finetuneButton.click()
    job = widget._job
    _wait_for(lambda: job.pid is not None and _alive(job.pid))
    slicer.mrmlScene.Clear()
    assert job.state == "cancelled" and widget._job is None and not _alive(job.pid)
    assert not [entry for entry in load_catalog() if entry.user]


# ---- the model list, help, sample, dependencies --------------------------------------------------------------
def _user_model(tmp_path) -> ModelEntry:
    weights = cache_dir() / "user-models" / "mine" / "mine.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"not really weights")
    entry = ModelEntry(
        "mine",
        "My model",
        "Fine-tuned here.",
        "network",
        "residual-unet-2.5d",
        weights=str(weights),
        sha256=hashlib.sha256(weights.read_bytes()).hexdigest(),
    )
    register_user_model(entry)
    return entry


def test_model_list_is_grouped_with_superseded_releases_hidden(panel, tmp_path):
    _slicer, widget = panel
    combo = widget.ui.modelComboBox
    catalog = load_catalog()
    assert combo.itemData(0) == catalog.default_id and "(recommended)" in combo.itemText(0)
    superseded = [entry.id for entry in catalog if entry.superseded_by]
    assert superseded and all(_index_of(combo, model) < 0 for model in superseded)
    separators = [i for i in range(combo.count) if combo.is_separator(i)]
    assert len(separators) == 3  # recommended | papers | classical | diffusion
    assert _index_of(combo, "nlm") > separators[1] and _index_of(combo, "qspace-vae") > separators[2]
    widget.ui.showEarlierVersionsCheckBox.checked = True
    assert all(_index_of(combo, model) >= 0 for model in superseded)
    _user_model(tmp_path)
    widget._fillModels()
    assert _index_of(combo, "mine") > max(i for i in range(combo.count) if combo.is_separator(i))


def test_remove_model_deletes_a_user_model_and_refuses_bundled_ones(panel, tmp_path, monkeypatch):
    slicer, widget = panel
    answers = []
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, title=None: answers.append(text) or True)
    entry = _user_model(tmp_path)
    widget._fillModels()
    combo = widget.ui.modelComboBox
    combo.currentIndex = _index_of(combo, load_catalog().default_id)
    assert not widget.ui.removeModelButton.enabled
    combo.currentIndex = _index_of(combo, "mine")
    assert widget.ui.removeModelButton.enabled
    widget.ui.removeModelButton.click()  # the user answers OK to the confirmation
    assert answers and "My model" in answers[0]
    assert "mine" not in {e.id for e in load_catalog()} and not Path(entry.weights).parent.exists()
    assert _index_of(combo, "mine") < 0 and combo.itemData(combo.currentIndex) == load_catalog().default_id
    with pytest.raises(Exception, match="not a user model"):
        widget.logic.removeUserModel("nlm")


def test_open_models_folder_opens_the_user_models_folder(panel):
    _slicer, widget = panel
    QDesktopServices.opened.clear()
    widget.ui.openModelsFolderButton.click()
    assert QDesktopServices.opened == [str(cache_dir() / "user-models")]


def test_help_is_generated_from_the_catalogue(slicer_env):
    _slicer, module = slicer_env
    catalog = load_catalog()
    current = [entry for entry in catalog if not entry.superseded_by]
    assert all(f"<code>{entry.id}</code>" in module.helpText for entry in current)
    assert all(f"<code>{entry.id}</code>" not in module.helpText for entry in catalog if entry.superseded_by)


def test_bundled_sample_is_registered_in_sample_data(slicer_env, tmp_path):
    slicer, _module = slicer_env
    sample_data = ScriptedModuleHost.load_sample_data()
    slicer.app.emit("startupCompleted()")  # the module registers its sample once Slicer has started
    sources = slicer.modules.sampleDataSources["MRIDenoise"]
    assert [source.sampleName for source in sources] == ["MRIDenoiseColin27Slab"]
    source = sources[0]
    path = Path(source.uris[0].removeprefix("file://"))
    algorithm, digest = source.checksums[0].split(":")
    assert algorithm == "SHA256" and hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert sample_data.SampleDataLogic.categoryTitle("MRIDenoise") == "MRI Denoise"
    downloaded = sample_data.SampleDataLogic().downloadFile(
        source.uris[0], str(tmp_path), "sample.nii.gz", source.checksums[0]
    )
    np.testing.assert_array_equal(read_volume(downloaded).array, read_volume(path).array)


def test_dependency_check_enforces_minimum_versions(slicer_env, monkeypatch):
    import importlib.metadata

    mridenoise = sys.modules["MRIDenoise"]
    assert mridenoise.missingRequirements() == []
    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.0" if name == "torch" else real_version(name))
    assert mridenoise.missingRequirements() == ["torch>=2.1"]
    assert mridenoise.missingRequirements(["dipy>=99"]) == ["torch>=2.1", "dipy>=99"]  # a method's own packages


def test_a_method_s_own_packages_are_installed_before_its_job(panel, colin_crop, monkeypatch):
    slicer, widget = panel
    mridenoise = sys.modules["MRIDenoise"]
    asked = []
    monkeypatch.setattr(mridenoise, "ensureDependencies", lambda interactive, extra=None: asked.append(extra) or False)
    scan = _scalar_node(slicer, colin_crop[:8])
    widget.ui.inputVolumeSelector.setCurrentNode(scan)
    widget.ui.modelComboBox.currentIndex = _index_of(widget.ui.modelComboBox, "patch2self")
    widget.ui.applyButton.click()
    assert asked == [["scikit-learn>=1.2"]] and widget._job is None  # declined: nothing started


def test_gpu_memory_warning_names_the_fallback():
    from MRIDenoiseSlicer.devices import gpu_memory_warning

    assert gpu_memory_warning((256, 256, 256), free_bytes=40 * 2**30) == ""
    warning = gpu_memory_warning((512, 512, 512), free_bytes=2**29)
    assert "512 x 512" in warning and "tiles" in warning and "CPU" in warning


# ---- headless batch and the self-test -----------------------------------------------------------------------
@pytest.mark.slow
def test_headless_batch_over_a_folder(slicer_env, colin_crop, tmp_path):
    slicer, _ = slicer_env
    slicer.app._options.noMainWindow = True
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for index in range(2):
        write_volume(Volume(colin_crop[:6] + index), folder / f"case{index}.nii.gz")
    (folder / "broken.nii.gz").write_bytes(b"not a volume")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    from MRIDenoiseSlicer import batch

    printed = io.StringIO()
    with redirect_stdout(printed):
        status = batch.main(["--", "--input-dir", str(folder), "--output-dir", str(out), "--model", "gaussian"])
    assert status == 1 and "FAILED broken.nii.gz" in printed.getvalue()
    assert sorted(p.name for p in out.iterdir()) == ["case0_denoised.nrrd", "case1_denoised.nrrd"]
    assert read_volume(out / "case1_denoised.nrrd").array.shape == colin_crop[:6].shape
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert "2 of 3 cases denoised" in printed.getvalue()


@pytest.mark.slow
def test_self_test_steps_on_the_bundled_sample(slicer_env):
    _slicer, _module = slicer_env
    test = sys.modules["MRIDenoise"].MRIDenoiseTest()
    test.runTest()
    assert not [entry for entry in load_catalog() if entry.user], "the self-test left a trained model behind"
    assert os.environ["MRIDENOISE_CACHE_DIR"] == str(cache_dir())

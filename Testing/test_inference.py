"""The inference engine: shapes, tiling, memory fallback, cancellation, determinism."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from MRIDenoiseLib.errors import Cancelled, InputError
from MRIDenoiseLib.inference import ExecutionPlan, denoise_slices, plan_execution, reduced_precision, select_device
from MRIDenoiseLib.nets import build_network
from MRIDenoiseLib.nets.contract import SliceNetwork
from MRIDenoiseLib.progress import CancelToken


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return build_network("residual-unet-2.5d", {"context": 2, "channels": [8, 16, 24]}).eval()


def test_auto_device_is_cpu_without_accelerators():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert select_device("auto").type in ("cpu", "mps")
    with pytest.raises(InputError, match="CUDA was requested"):
        select_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        select_device("tpu")


@pytest.mark.parametrize("shape", [(5, 37, 53), (3, 16, 16), (9, 64, 31)])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_output_matches_input_shape_for_odd_sizes_and_any_axis(network, shape, axis):
    volume = np.random.default_rng(0).random(shape, dtype=np.float32)
    assert denoise_slices(network, volume, 0.05, slice_axis=axis).shape == shape


def test_tiled_execution_matches_whole_slices(network):
    volume = np.random.default_rng(1).random((4, 96, 96), dtype=np.float32)
    whole = denoise_slices(network, volume, 0.1, plan=ExecutionPlan(batch_slices=4, tile=0))
    tiled = denoise_slices(network, volume, 0.1, plan=ExecutionPlan(batch_slices=1, tile=64))
    interior = (slice(None), slice(16, -16), slice(16, -16))
    assert np.abs(whole[interior] - tiled[interior]).max() < 0.05 * np.abs(whole).max()


def test_noise_level_may_be_a_map(network):
    volume = np.random.default_rng(2).random((4, 32, 32), dtype=np.float32)
    scalar = denoise_slices(network, volume, 0.1)
    mapped = denoise_slices(network, volume, np.full(volume.shape, 0.1, np.float32))
    np.testing.assert_allclose(scalar, mapped, atol=1e-6)


class _MemoryHungry(SliceNetwork):
    """Raises out-of-memory for batches larger than one slice or tiles larger than 64 px."""

    context = 1

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, inputs):
        self.calls.append(tuple(inputs.shape))
        if inputs.shape[0] > 1 or inputs.shape[-1] > 64:
            raise torch.OutOfMemoryError("simulated")
        return inputs[:, 1:2] * 2


def test_out_of_memory_shrinks_batch_then_tiles():
    hungry = _MemoryHungry()
    volume = np.ones((3, 100, 100), np.float32)
    result = denoise_slices(hungry, volume, 0.1, plan=ExecutionPlan(batch_slices=4, tile=0))
    np.testing.assert_allclose(result, 2.0, atol=1e-5)
    assert hungry.calls[0][0] == 3 and max(c[-1] for c in hungry.calls[-3:]) <= 64


def test_plan_fits_small_slices_whole_on_cpu():
    plan = plan_execution(torch.device("cpu"), (256, 256), 6)
    assert plan.tile == 0 and plan.batch_slices >= 1


def test_cpu_batches_stay_cache_sized():
    assert plan_execution(torch.device("cpu"), (256, 256), 6).batch_slices == 2  # 32-channel activations < 32 MB
    assert plan_execution(torch.device("cpu"), (64, 64), 6).batch_slices > 4
    assert plan_execution(torch.device("cpu"), (1024, 1024), 6).batch_slices == 1


_REUSE_PROBE = """
import resource, sys
import subprocess
import sys

import numpy as np
from MRIDenoiseLib.inference import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "kept" else False
start = 0
for batch in range(5):  # five batches of three 12 MB activations, allocated, written and freed
    if batch == 2:
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    activations = [np.ones(3 << 20, np.float32) for _ in range(3)]
    del activations
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings")
def test_freed_activations_are_reused_without_faulting_their_pages_in_again():
    def page_faults(mode: str) -> tuple[str, int]:
        line = subprocess.run(
            [sys.executable, "-c", _REUSE_PROBE, mode], capture_output=True, text=True, check=True
        ).stdout.split()
        return line[0], int(line[1])

    applied, kept = page_faults("kept")
    if applied != "True":
        pytest.skip("not glibc: the process's allocator is left as it is")
    pages = 3 * 3 * (12 << 20) // 4096  # what the last three batches write
    assert kept < pages // 100  # served from memory the process kept
    assert page_faults("default")[1] > kept  # by default freed blocks go back to the system


def test_cancel_stops_before_the_end(network):
    cancel = CancelToken()
    seen = []

    def progress(fraction, message):
        seen.append(fraction)
        cancel.cancel()

    with pytest.raises(Cancelled):
        denoise_slices(
            network, np.ones((20, 16, 16), np.float32), 0.1, progress=progress, cancel=cancel, plan=ExecutionPlan(2, 0)
        )
    assert seen == [0.1]


def test_cpu_inference_is_deterministic(network):
    volume = np.random.default_rng(3).random((6, 40, 40), dtype=np.float32)
    np.testing.assert_array_equal(denoise_slices(network, volume, 0.1), denoise_slices(network, volume, 0.1))


def test_tri_planar_averaging_runs_one_pass_per_axis_of_isotropic_volumes(network):
    from MRIDenoiseLib.denoisers.network import NetworkDenoiser

    volume = np.random.default_rng(4).random((12, 20, 16), dtype=np.float32) + 1.0
    fractions = []
    single = NetworkDenoiser(network, "cpu").denoise(volume, 0.05)
    averaged = NetworkDenoiser(network, "cpu", planes="all").denoise(
        volume, 0.05, progress=lambda f, m: fractions.append(f)
    )
    assert averaged.shape == single.shape and not np.allclose(averaged, single)
    assert any(abs(f - 1 / 3) < 1e-6 for f in fractions) and any(abs(f - 2 / 3) < 1e-6 for f in fractions)
    anisotropic = NetworkDenoiser(network, "cpu", planes="all").denoise(volume, 0.05, spacing_zyx=(3.0, 1.0, 1.0))
    np.testing.assert_allclose(
        anisotropic, NetworkDenoiser(network, "cpu").denoise(volume, 0.05, spacing_zyx=(3.0, 1.0, 1.0))
    )


def test_networks_run_in_float32_unless_reduced_precision_is_asked_for(monkeypatch, network):
    monkeypatch.delenv("MRIDENOISE_PRECISION", raising=False)
    assert reduced_precision() is None
    volume = (0.5 + 0.4 * np.random.default_rng(2).random((5, 32, 32))).astype(np.float32)
    chosen = denoise_slices(network, volume, 0.05, device=torch.device("cpu"))
    padded = np.pad(volume, ((2, 2), (0, 0), (0, 0)), mode="reflect")
    windows = np.stack([np.concatenate([padded[i : i + 5], np.full((1, 32, 32), 0.05, np.float32)]) for i in range(5)])
    with torch.inference_mode():  # the network's own float32 arithmetic, slice by slice
        direct = network(torch.from_numpy(windows))[:, 0].numpy()
    np.testing.assert_allclose(chosen, direct, rtol=0, atol=1e-6)
    for asked in ("float16", "bfloat16"):  # for speed, or to compare them
        monkeypatch.setenv("MRIDENOISE_PRECISION", asked)
        assert reduced_precision() == getattr(torch, asked)
    monkeypatch.setenv("MRIDENOISE_PRECISION", "bfloat")  # a typo is refused, not run in float32 unnoticed
    with pytest.raises(InputError, match="MRIDENOISE_PRECISION must be one of"):
        reduced_precision()
    monkeypatch.setenv("MRIDENOISE_PRECISION", "bfloat16")
    assert not np.array_equal(chosen, denoise_slices(network, volume, 0.05, device=torch.device("cpu")))  # its rounding

"""Real scans with no clean reference: what each method removes, and whether it removes anatomy.

    python benchmarks/no_reference.py            # every scan, every method available
    python benchmarks/no_reference.py --parts    # rewrite no_reference.md from no_reference.json
    python benchmarks/no_reference.py --only ours BM4D DIPY ANTs   # every method, pictures redrawn,
                                                 # earlier defaults' rows kept

Each scan of :data:`SCANS` (../shared/data; contrasts, anatomy and vendors the default model never
trained on, at their own scanner noise, none added) is cropped centrally and denoised blind by the
default model and by the peers (BM4D given the product's sigma estimate, DIPY NLM with its own,
ANTs DenoiseImage). With no reference there is no PSNR; instead, inside the engine's foreground mask:

- ``removed / sigma``: the standard deviation of the removed noise (input - output) over the
  product's blind sigma estimate of the scan. About 1 removes the noise the scan carries; well below
  1 leaves noise; well above 1 removes signal too.
- ``edge correlation``: Pearson correlation between the magnitude of the removed noise and the
  gradient magnitude of the output. Noise does not know where the edges are, so removed noise that
  grows at edges is blurred anatomy: near 0 is the aim.
- ``neighbour correlation``: the mean correlation of the removed noise with itself one voxel over,
  in-plane. White noise gives 0; structure in the removed noise raises it (so does noise that was
  correlated in the scan already, zero-filled reconstructions: compare methods on one scan, not scans).

The default model's rows also record what its Wiener step decided on the scan (``wiener_step``: whether
it ran, the share kept, and the neighbour correlation of the noise its network removed, which the step's
gate reads over the bright voxels; ``DenoiseResult`` reports the same).

Where a scan's dcm2niix sidecar says it was reconstructed finer than acquired (``ReconMatrixPE`` over
``AcquisitionMatrixPE`` above 1), the default also runs told that factor (``--zero-filled``), as a user
reading the sidecar would give it.

One picture per scan (results/no_reference_<scan>.png): the input, then each method's output and
removed noise on the middle slice. Writes results/no_reference.json and results/no_reference.md.
"""

from __future__ import annotations

import argparse
import json
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import RESULTS, data_root, host_label, machine, write_json
from methods import run_ants, run_bm4d, run_dipy_nlmeans
from scipy import ndimage

from MRIDenoiseLib.denoisers.base import Denoiser
from MRIDenoiseLib.denoisers.refinement import neighbour_correlation
from MRIDenoiseLib.io import read_volume
from MRIDenoiseLib.masks import foreground_mask
from MRIDenoiseLib.models.catalog import load_catalog
from MRIDenoiseLib.noise import estimate_sigma
from MRIDenoiseLib.pipeline import DenoiseResult, denoise_volume, load_denoiser
from MRIDenoiseLib.volume import Geometry, Volume

SCANS = {
    "heart_lge_siemens": ("body/heart_lge_siemens_verio_3t.nii.gz", "cardiac LGE, Siemens Verio 3T"),
    "kidney_t2star_ge": ("body/kidney_t2star_ge_mr750_3t.nii.gz", "kidney T2* GRE echo 1, GE MR750 3T"),
    "kidney_t2star_philips": ("body/kidney_t2star_philips_ingenia_3t.nii.gz", "kidney T2* echo 1, Philips 3T"),
    "kidney_t2star_siemens": ("body/kidney_t2star_siemens_prisma_3t.nii.gz", "kidney T2* echo 1, Siemens Prisma 3T"),
    "spine_t2star": ("spine/spine_t2star_unf03_siemens_prisma_3t.nii.gz", "cervical spine T2*, Siemens Prisma 3T"),
    "t2_tse_head": ("anat_more/t2_tse_axial.nii.gz", "T2 TSE head"),
    "swi_magnitude": ("anat_more/swi_gre3echo_mag_crop.nii.gz", "SWI GRE magnitude echo 1"),
    "uih_t1_gre": ("repeats/uih_t1/uih_umr770_t1_gre_session1.nii.gz", "T1 GRE head, UIH uMR770"),
    "bottle_phantom": ("phantom/Ph_201_T1W_TSE_Sno_CSno_CSAIno.nii.gz", "T1 TSE bottle phantom, Philips"),
    "bottle_phantom_csai": (
        "phantom/Ph_501_T1W_TSE_Sno_CSno_CSAI2.nii.gz",
        "the same phantom with Philips CS-SENSE (AI) reconstruction: noise that varies and is shaped",
    ),
}
"""name -> (path under the data root, what it is); licences in ../shared/data/DATA.md."""
CROP = (48, 192, 192)
"""At most this much of each scan (z, y, x), centred: BM4D takes minutes on a whole volume."""

Run = Callable[[np.ndarray, tuple[float, float, float]], np.ndarray]


class DefaultModel:
    """The default model, blind, through the product's ``denoise_volume`` (told ``zero_filled`` where above 1,
    as ``denoise --zero-filled``), its weights loaded on first use; :meth:`step_decisions` tells what its
    Wiener step did in the last call, as the call's ``DenoiseResult`` reports it."""

    def __init__(self, zero_filled: float = 1.0) -> None:
        self.zero_filled = zero_filled
        self.denoiser: Denoiser | None = None
        self.result: DenoiseResult | None = None

    def __call__(self, noisy: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
        if self.denoiser is None:
            self.denoiser, _ = load_denoiser(None, "cpu")
        volume = Volume(noisy, Geometry((float(spacing[2]), float(spacing[1]), float(spacing[0]))))
        self.result = denoise_volume(volume, device="cpu", denoiser=self.denoiser, zero_filled=self.zero_filled)
        return self.result.volume.array

    def step_decisions(self) -> dict[str, object] | None:
        """Whether the step ran, the share kept, the removed noise's neighbour correlation (None where
        the gate did not measure it); None if the default has no such step."""
        if self.result is None or self.result.wiener_step is None:
            return None
        return {
            "ran": self.result.wiener_step,
            "share": self.result.wiener_share,
            "removed_noise_correlation": self.result.noise_correlation,
        }


def methods() -> dict[str, Run]:
    """The default model blind and the peers, each given what it asks for (no true sigma exists here)."""
    entry = load_catalog().get(None)
    return {
        f"{entry.id} (ours, blind)": DefaultModel(),
        "BM4D (sigma estimated by MRIDenoise)": lambda noisy, spacing: run_bm4d(noisy, estimate_sigma(noisy), spacing),
        "DIPY NLM (its own sigma)": lambda noisy, spacing: run_dipy_nlmeans(noisy, None, spacing),
        "ANTs DenoiseImage (Rician)": lambda noisy, spacing: run_ants(noisy, None, spacing),
    }


def sidecar_zero_fill(path: Path) -> float | None:
    """``ReconMatrixPE / AcquisitionMatrixPE`` from the dcm2niix sidecar beside ``path`` (``<stem>*.json``),
    where above 1; None where there is no such sidecar or the scan was reconstructed on its acquired grid."""
    stem = path.name.removesuffix(".gz").removesuffix(".nii")
    for sidecar in sorted(path.parent.glob(f"{stem}*.json")):
        fields = json.loads(sidecar.read_text())
        if fields.get("AcquisitionMatrixPE") and fields.get("ReconMatrixPE"):
            factor = fields["ReconMatrixPE"] / fields["AcquisitionMatrixPE"]
            return round(factor, 3) if factor > 1 else None
    return None


def load_scan(path: Path) -> tuple[np.ndarray, tuple[float, float, float], str]:
    """The scan's first volume (echo), centrally cropped to :data:`CROP`, as float32; and the crop."""
    volume = read_volume(path)
    array = np.asarray(volume.array if volume.array.ndim == 3 else volume.array[..., 0], np.float32)
    window = tuple(
        slice(max((size - want) // 2, 0), max((size - want) // 2, 0) + min(size, want))
        for size, want in zip(array.shape, CROP, strict=True)
    )
    crop = ", ".join(f"{axis} {w.start}:{w.stop}" for axis, w in zip("zyx", window, strict=True))
    return np.ascontiguousarray(array[window]), volume.geometry.spacing_zyx(), crop


def edge_correlation(removed: np.ndarray, output: np.ndarray, mask: np.ndarray, spacing) -> float:
    """Correlation of |removed noise| with the output's gradient magnitude inside ``mask``."""
    gradient = ndimage.gaussian_gradient_magnitude(output.astype(np.float64), sigma=[1.0 / s for s in spacing])
    return float(np.corrcoef(np.abs(removed[mask]), gradient[mask])[0, 1])


def run(only: list[str] | None = None) -> dict:
    """Every method (``only``: those whose name contains one of these words) on every scan; a scan's
    picture is drawn when every method of :func:`methods` ran on it."""
    records = []
    host = machine()
    every = methods()
    runs = {name: denoise for name, denoise in every.items() if not only or any(word in name for word in only)}
    default_id = load_catalog().get(None).id
    for name, (path, description) in SCANS.items():
        noisy, spacing, crop = load_scan(data_root() / path)
        mask = foreground_mask(noisy)
        sigma = estimate_sigma(noisy)
        outputs = {}
        scan_runs = dict(runs)
        factor = sidecar_zero_fill(data_root() / path)
        told = f"{default_id} (ours, blind, told --zero-filled {factor:g} by its sidecar)" if factor else ""
        if factor and (not only or any(word in told for word in only)):
            scan_runs[told] = DefaultModel(zero_filled=factor)
        for method, denoise in scan_runs.items():
            started = time.perf_counter()
            output = np.asarray(denoise(noisy, spacing), np.float32)
            seconds = time.perf_counter() - started
            removed = noisy - output
            outputs[method] = output
            record = {
                "scan": name,
                "description": description,
                "source": path,
                "crop": crop,
                "shape": list(noisy.shape),
                "sigma_estimate": sigma,
                "method": method,
                "removed_over_sigma": float(removed[mask].std() / sigma),
                "edge_correlation": edge_correlation(removed, output, mask, spacing),
                "neighbour_correlation": neighbour_correlation(removed, mask),
                "seconds": round(seconds, 2),
                "host": host_label(host),
            }
            if isinstance(denoise, DefaultModel):
                record["wiener_step"] = denoise.step_decisions()
            records.append(record)
            print(record, flush=True)
        if set(every) <= set(outputs):
            draw(name, description, noisy, outputs, sigma, RESULTS / f"no_reference_{name}.png")
    return {"machine": host, "crop": list(CROP), "records": records}


def draw(name: str, description: str, noisy: np.ndarray, outputs: dict[str, np.ndarray], sigma: float, path: Path):
    """The middle slice: input, then per method the output (input's grey scale) and the removed noise (+-3 sigma)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    middle = noisy.shape[0] // 2
    low, high = np.percentile(noisy[middle], [0.5, 99.5])
    figure, axes = plt.subplots(2, len(outputs) + 1, figsize=(3 * (len(outputs) + 1), 6.4), squeeze=False)
    axes[0, 0].imshow(noisy[middle], cmap="gray", vmin=low, vmax=high)
    axes[0, 0].set_title("input", fontsize=8)
    axes[1, 0].axis("off")
    axes[1, 0].text(0.0, 0.5, f"{description}\nremoved noise: +-3 sigma\n(sigma {sigma:.4g})", fontsize=8)
    for column, (method, output) in enumerate(outputs.items(), start=1):
        axes[0, column].imshow(output[middle], cmap="gray", vmin=low, vmax=high)
        axes[0, column].set_title(textwrap.fill(method, 34), fontsize=7)  # long names would overlap
        axes[1, column].imshow(noisy[middle] - output[middle], cmap="RdBu_r", vmin=-3 * sigma, vmax=3 * sigma)
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(name, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    from PIL import Image

    with Image.open(path) as picture:  # a 128-colour palette: a third of the size, the same to the eye
        quantized = picture.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    quantized.save(path, optimize=True)


def markdown(results: dict) -> str:
    lines = [
        "# Real scans, no reference: what each method removes",
        "",
        "`python benchmarks/no_reference.py`; each row names the machine it ran on (the seconds are its). "
        f"Central crops of at most "
        f"{' x '.join(map(str, results['crop']))} voxels, first echo of multi-echo series, at the scan's own noise "
        "(none added). Inside the foreground: **removed / sigma** (std of input - output over the product's blind "
        "sigma estimate; about 1 = the scan's noise removed, far above = signal removed too), **edge corr.** "
        "(correlation of |removed| with the output's gradient magnitude: removed anatomy shows at edges; aim 0), "
        "**neighbour corr.** (removed noise against itself one voxel over, in-plane: white noise 0; compare "
        "methods within a scan, since zero-filled reconstructions correlate the scan's own noise). **Wiener step**: "
        "what the default's step decided (the share it kept, or left out: noise above its level, the noise its "
        "network removed correlated between neighbours above +0.05 over the bright voxels, or a share under "
        "0.05; - for a peer, or a row recorded before the decisions were). Pictures: `no_reference_<scan>.png`.",
        "",
        "| scan | shape | method | removed / sigma | edge corr. | neighbour corr. | Wiener step | s | machine |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["records"]:
        lines.append(
            f"| {r['scan']} | {'x'.join(map(str, r['shape']))} | {r['method']} | {r['removed_over_sigma']:.2f} | "
            f"{r['edge_correlation']:+.3f} | {r['neighbour_correlation']:+.3f} | {step_text(r)} | "
            f"{r['seconds']:.1f} | {r['host']} |"
        )
    return "\n".join(lines) + "\n"


def step_text(record: dict) -> str:
    """The default's Wiener step on a scan, as the table says it: "-" for a method without one (or a row
    recorded before the decisions were)."""
    step = record.get("wiener_step")
    if not step:
        return "-"
    correlation = step["removed_noise_correlation"]
    gate = "" if correlation is None else f" (removed noise corr. {correlation:+.2f})"
    if step["ran"]:
        return f"share {step['share']:.2f}{gate}"
    return f"left out{gate}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", action="store_true", help="only rewrite no_reference.md from no_reference.json")
    parser.add_argument(
        "--only", nargs="*", help="run the methods whose name holds one of these words; keep the other records"
    )
    args = parser.parse_args()
    path = RESULTS / "no_reference.json"
    if args.parts:
        results = json.loads(path.read_text())
    else:
        results = run(args.only)
        if args.only and path.exists():
            new = {(r["scan"], r["method"]) for r in results["records"]}
            earlier = json.loads(path.read_text())
            kept = [r for r in earlier["records"] if (r["scan"], r["method"]) not in new]
            for record in kept:  # rows from before rows named their machine ran on the file's
                record.setdefault("host", host_label(earlier["machine"]))
            order = list(SCANS)
            results["records"] = sorted(kept + results["records"], key=lambda r: order.index(r["scan"]))
        write_json(path, results)
    (RESULTS / "no_reference.md").write_text(markdown(results))


if __name__ == "__main__":
    main()

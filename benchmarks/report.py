"""Tables (markdown) and plots (PNG) from results/quality.json and results/speed.json."""

from __future__ import annotations

import json
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from common import REPO, RESULTS, SPEED_LEVEL, level_of, pictured_methods, replace_card_section

from MRIDenoiseLib.denoisers.refinement import SHARE_LEVEL
from MRIDenoiseLib.models.catalog import load_catalog

DEFAULT_MODEL = load_catalog().default_id


WHOLE_CROP_READING = (
    "Over the whole crop the air beside the anatomy counts too: what a method leaves or puts back there (the "
    "Wiener step put back part of the noise the network had removed until the default faded it out in the air, "
    "2026-12-01). Where the reference's own air is noisy (a scanned reference), removing that noise scores lower."
)


def quality_tables(records: list[dict], references: dict[str, dict]) -> str:
    lines = [
        "# Quality benchmark",
        "",
        "Protocol: ../shared/design/EVALUATION.md (Rician noise, seeded; masked PSNR in dB and",
        "3-D SSIM against the clean reference). Machine and every parameter are in quality.json.",
        "",
        "Blind rows dated before 2026-12-02 in quality.json read the noise level from the finest Haar band",
        "alone; since then the product reads fourth differences where the input's air shows white noise",
        "(README, \"How quality is measured\"). The default's, `bm4d-blind`'s and the paper models' rows,",
        "and the blind estimates printed per volume, were rerun with it; the earlier defaults' were not, and on",
        "volumes with enough air (not Colin27 or the simulated brains) they may differ from what they give now.",
        "",
    ]
    by_volume = defaultdict(list)
    for record in records:
        by_volume[record["volume"]].append(record)
    for volume, rows in by_volume.items():
        levels = sorted({r["level_percent"] for r in rows})
        methods = _method_order(rows)
        labels = {r["method"]: r["label"] for r in rows}
        first = rows[0]
        lines += [
            f"## {volume}",
            "",
            f"Source {first['source']} ({first['licence']}); crop {first['crop']}; mask {first['mask_rule']}.",
            "",
        ]
        bound = references.get(volume, {})
        if bound.get("noise_free"):
            lines += [
                "The reference is simulated and noise-free. The engine's blind estimate reads "
                f"{bound['engine_reading_percent']:.2f} % of the brightest tissue on it: its sharp boundaries, "
                "taken for noise.",
                "",
            ]
        elif "noise_percent" in bound:
            lines += [
                f"The reference keeps its own noise, about {bound['noise_percent']:.2f} % of the brightest tissue "
                "(engine estimate). A denoiser returning the noise-free object exactly would score about "
                f"{bound['perfect_denoiser_psnr_foreground']:.2f} dB / "
                f"SSIM {bound['perfect_denoiser_ssim_foreground']:.4f} "
                "against it at every level (row 'perfect denoiser'): where the noisy input scores higher, no "
                "denoiser can beat the input on this volume, and such cells say nothing about a method.",
                "",
            ]
        for axis, knots in bound.get("linear_interpolation_knots", {}).items():
            lines += [
                f"The reference is linearly interpolated along {axis}: only slices {', '.join(map(str, knots))} "
                f"of {knots[-1] + 1} carry measured signal, the others are straight lines between them "
                "(`interpolation_knots` in common.py). The object has fewer independent slices than it shows, and "
                "noise added over it is unlike a scanner's: a resampled scan's own noise is interpolated with it.",
                "",
            ]
        noisy_rows = sorted((r for r in rows if r["method"] == "noisy" and "estimated_sigma" in r), key=_level)
        if noisy_rows:
            ratios = ", ".join(
                f"{r['estimated_sigma'] / r['sigma']:.2f} at {r['level_percent']:g} %" for r in noisy_rows
            )
            lines += [f"The product's blind sigma estimate of each noisy input over the added sigma: {ratios}.", ""]
        for metric, title, fmt in (
            ("psnr_foreground", "PSNR (dB, foreground mask)", "{:.2f}"),
            ("ssim_foreground", "SSIM (foreground mask)", "{:.4f}"),
            ("psnr_whole", "PSNR (dB, the whole crop, air included)", "{:.2f}"),
        ):
            lines += [f"### {title}", ""]
            if metric == "psnr_whole":
                lines += [WHOLE_CROP_READING, ""]
            lines += [
                "| method | " + " | ".join(f"{lv:g} %" for lv in levels) + " | s / volume |",
                "|---|" + "---|" * (len(levels) + 1),
            ]
            table = {(r["method"], r["level_percent"]): r for r in rows}
            if f"perfect_denoiser_{metric}" in bound:
                value = fmt.format(bound[f"perfect_denoiser_{metric}"])
                lines.append(
                    "| perfect denoiser (bound set by the reference's noise) | "
                    + " | ".join([value] * len(levels))
                    + " | - |"
                )
            for method in methods:
                cells = [fmt.format(table[(method, lv)][metric]) if (method, lv) in table else "-" for lv in levels]
                times = [table[(method, lv)]["seconds"] for lv in levels if (method, lv) in table]
                seconds = f"{np.median(times):.1f}" if method != "noisy" and times else "-"
                lines.append(f"| {labels[method]} | " + " | ".join(cells) + f" | {seconds} |")
            lines.append("")
        machine = first["machine"]
        lines += [
            f"Measured on {machine['cpu']}, {machine['cores']} cores, torch threads {machine['torch_threads']}"
            + (f", GPU {machine['gpu']}" if "gpu" in machine else "")
            + ". Seconds are for this crop, not the 256^3 reference "
            "(see speed.md), and other work may have shared the machine.",
            "",
        ]
    return "\n".join(lines)


def _level(record: dict) -> float:
    return record["level_percent"]


def _method_order(rows: list[dict]) -> list[str]:
    """Noisy input first, then the default model (blind, then given the true sigma), then the rest
    in the order they were run."""
    names = list(dict.fromkeys(r["method"] for r in rows))
    first = [DEFAULT_MODEL, f"{DEFAULT_MODEL}-oracle"]
    return [
        "noisy",
        *sorted((n for n in names if n != "noisy"), key=lambda n: first.index(n) if n in first else len(first)),
    ]


def quality_plots(records: list[dict]) -> None:
    by_volume = defaultdict(list)
    for record in records:
        by_volume[record["volume"]].append(record)
    for volume, rows in by_volume.items():
        figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        labels = {r["method"]: r["label"] for r in rows}
        for method in _method_order(rows):
            points = sorted(
                (r["level_percent"], r["psnr_foreground"], r["ssim_foreground"]) for r in rows if r["method"] == method
            )
            levels, psnr, ssim = zip(*points, strict=True)
            style = {"linestyle": "--", "color": "grey"} if method == "noisy" else {"marker": "o", "markersize": 3}
            if method == DEFAULT_MODEL:
                style.update(linewidth=2.5, color="black")
            axes[0].plot(levels, psnr, label=labels[method], **style)
            axes[1].plot(levels, ssim, label=labels[method], **style)
        for axis, name in zip(axes, ("PSNR (dB, foreground mask)", "SSIM (foreground mask)"), strict=True):
            axis.set_xlabel("Rician noise level (% of brightest tissue)")
            axis.set_ylabel(name)
            axis.grid(alpha=0.3)
        axes[1].legend(fontsize=8, loc="lower left")
        figure.suptitle(f"{volume}: quality against noise level")
        figure.tight_layout()
        figure.savefig(RESULTS / f"quality_{volume}.png", dpi=110)
        plt.close(figure)


def slice_pictures(records: list[dict]) -> None:
    labels = {r["method"]: r["label"] for r in records}
    labels[load_catalog().default_id] = "MRIDenoise default (ours, blind)"  # its full title overflows a panel
    for path in sorted(RESULTS.glob("slices_*.npz")):
        slices = dict(np.load(path))
        names = [name for name in pictured_methods() if name in slices]
        high = float(np.percentile(slices["clean"], 99.5))
        figure, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 3.0))
        for axis, name in zip(axes, names, strict=True):
            axis.imshow(slices[name], cmap="gray", vmin=0, vmax=high)
            axis.set_title(labels.get(name, name).replace(" (", "\n("), fontsize=7)
            axis.axis("off")
        figure.tight_layout()
        figure.savefig(path.with_suffix(".png"), dpi=110)
        plt.close(figure)


def speed_table(payload: dict) -> str:
    machine = payload["machine"]
    lines = [
        "# Speed benchmark",
        "",
        f"{payload['shape']} float32 volume, whole call (model load included once), median of "
        f"runs; the newest run on {machine['cpu']}, {machine['cores']} cores"
        + (f", GPU {machine['gpu']}" if "gpu" in machine else "")
        + f"; {SPEED_LEVEL:g} % Rician noise unless the row says otherwise (the default's Wiener step runs only up to"
        f" {SHARE_LEVEL:g} % of the brightest tissue).",
        "",
        "Rows measured on different dates may come from different hosts behind the same CPU name (a virtual",
        "machine's \"AMD EPYC\"); the host column gives the processor's family, model and stepping where it was",
        "recorded. The networks' time is mostly convolution arithmetic and follows the host's vector units,",
        "not the classical filters' memory-bound work: on 2026-11-22 v5 took 18.2 s and v6 18.7 s (the row",
        "since replaced) beside anisotropic diffusion at 9.3 s; on 2026-11-29, on AMD family 25 model 17",
        "(Zen 4), the same torch (2.13.0) and the same network code took 26.8 and 26.6 s while anisotropic",
        "diffusion took 8.3 s. Compare rows of one host; the BM4D ratio is given only against a BM4D run of",
        "the same date. What a user sees is the newest row of a method, on a host like it. Since 2026-11-30 the",
        "methods of one run take turns, one run each per round, so a host whose speed drifts slows them alike",
        "(on the Intel host one method's single runs spread over 21-31 s). The same Intel host name ran v6 in",
        "13.5-14.4 s in one session of 2026-12-01 and in 25.4-29.7 s in the next (the v16 and v17 defaults' rows):",
        "compare a row with the v6 row of its own run, which the README quotes beside it. The precision column",
        "says what the networks ran in: bfloat16 where the processor has it natively until 2026-12-01, float32",
        'on every device since (README, "bfloat16 costs detail"). The AMD EPYC rows of 2026-12-01 (family 25',
        "model 1, no native bfloat16, float32) ran v6 in 85.4-88.7 s (medians; single runs 80.7-102.9 s), against",
        "25.4-29.7 s on the Intel host in bfloat16 the same day; since 2026-12-02 the engine keeps the network's",
        "freed activations for reuse and feeds a CPU two 256 x 256 slices at a time instead of four (README,",
        '"Speed"), and the same host ran v6 in 66.4-75.0 s (those rows replaced the others). "Of which the',
        "low-noise step\" (recorded since the last of those runs) is the default's stage after the network",
        "(correlation gate, share, Wiener step, blend)",
        "timed within each run, the median over runs: its own cost, which the drift between runs does not blur.",
        "",
        "| method | measured | host | device | precision | threads | runs | seconds (median) | of which the low-noise"
        " step | x faster than BM4D | peak RSS (GB) | peak GPU (GB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    bm4d = next((r for r in payload["records"] if r["method"] == "bm4d"), None)
    for r in payload["records"]:
        same_day = bm4d is not None and bm4d.get("date") == r.get("date")
        ratio = f"{bm4d['seconds'] / r['seconds']:.0f}" if same_day else "-"
        gpu = f"{r['peak_gpu_gb']:.2f}" if r.get("peak_gpu_gb") else "-"
        low_noise = f", {level_of(r):g} % noise" if level_of(r) != SPEED_LEVEL else ""
        cells = [
            r["label"] + low_noise,
            r.get("date", "2026-11-22 or before"),
            r.get("cpu_identity") or "-",
            r["device"],
            r.get("precision") or "-",
            r["threads"],
            r["runs"],
            f"{r['seconds']:.1f}",
            f"{r['step_seconds']:.1f}" if r.get("step_seconds") is not None else "-",
            ratio,
            f"{r['peak_rss_gb']:.2f}",
            gpu,
        ]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def gpu_section(payload: dict) -> str:
    """speed.md's GPU part, from benchmarks/gpu_check.sh's results/gpu_check.json."""
    machine = payload["machine"]
    lines = [
        "",
        "## On a GPU (benchmarks/gpu_check.sh)",
        "",
        f"{payload.get('date', 'undated')}: {machine.get('gpu', 'no GPU')}, {machine['cpu']} with {machine['cores']} "
        f"cores, Python {machine['python']}, torch {machine['torch']}. The default model of that date "
        f"(`{payload.get('model', 'not recorded')}`) on a {payload['size']}^3 "
        "volume (Colin27 padded, 10 % Rician), model loaded once, one warm-up call first; each row is one "
        "whole call as a user makes it (normalisation, blind noise level, three planes, averaging).",
        "",
        "| precision | noise level | seconds | peak GPU memory (GiB) |",
        "|---|---|---|---|",
    ]
    for row in payload["inference"]:
        peak = f"{row['peak_gib']:.2f}" if row.get("peak_gib") is not None else "-"
        lines.append(f"| {row['precision']} | {row['mode']} | {row['seconds']:.1f} | {peak} |")
    low = [row for row in payload.get("low_noise", []) if "seconds" in row]
    if low:
        lines += [
            "",
            "At low noise, where the default's stage after its network runs (correlation gate, share measured on "
            "a box, Wiener step on the GPU), blind, float32; its network alone on the same volume beside it:",
            "",
            "| noise | model | seconds | of which the low-noise stage | share kept | peak GPU memory (GiB) |",
            "|---|---|---|---|---|---|",
        ]
        for row in low:
            peak = f"{row['peak_gib']:.2f}" if row.get("peak_gib") is not None else "-"
            stage = f"{row['stage_seconds']:.1f}" if "stage_seconds" in row else "-"
            share = "-" if row.get("share") is None else f"{row['share']:.2f}"
            lines.append(
                f"| {row['level_percent']:g} % | {row['model']} | {row['seconds']:.1f} | {stage} | {share} | {peak} |"
            )
    else:
        lines += ["", "The default's low-noise stage (1-5 %) was not measured on a GPU in this run."]
    notes = []
    stages = payload.get("breakdown", {})
    if "network_passes" in stages:
        notes.append(
            "One blind call in the default precision of its date (float16 until 2026-12-01), stage by stage: "
            "intensity scale (masks, Otsu thresholds) "
            f"{stages['intensity_scale']:.2f} s, blind noise level {stages['blind_level']:.2f} s, the network's "
            f"passes (slices stacked, moved, run, brought back) {stages['network_passes']:.2f} s."
        )
    forced = payload.get("forced_out_of_memory", {})
    if "seconds" in forced:
        retries = len(forced.get("retries", []))
        notes.append(
            f"Out of memory forced (the process capped at {forced['memory_cap_gib']} GiB of GPU memory): the call "
            f"finished on {forced['device_after']} in {forced['seconds']:.1f} s, peak {forced['peak_gib']:.2f} GiB"
            + (f", after {retries} retries with smaller batches or tiles." if retries else ".")
        )
    training = payload.get("training", {})
    if "steps_per_second" in training:
        notes.append(
            f"Training with the default's recipe ({training.get('recipe', 'configs/default-rician-v6.json')}: "
            f"batch {training['batch_size']}, "
            f"{training['patch_size']} px patches, {training['precision']}): {training['steps_per_second']:.1f} steps "
            f"per second over {training['steps']} steps, peak {training['peak_gib']:.2f} GiB."
        )
    for note in notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def gpu_summary(payload: dict) -> str:
    """One sentence for a model card: the GPU check's whole-call seconds in the default precision (float32)."""
    rows = [r for r in payload["inference"] if r["precision"] == "float32" and r["mode"] == "blind"]
    seconds = sorted(r["seconds"] for r in rows)
    return (
        f"On a GPU ({payload['machine'].get('gpu')}, {payload['date']}): {seconds[0]:.1f}-{seconds[-1]:.1f} s per "
        f"256^3 volume, float32, blind, peak {max(r['peak_gib'] for r in rows):.2f} GiB of GPU memory "
        "(benchmarks/results/speed.md)."
    )


BENCHMARK_START = "<!-- benchmark:start -->"
BENCHMARK_END = "<!-- benchmark:end -->"


def update_model_cards(records: list[dict], speed: dict | None, gpu: dict | None = None) -> None:
    """Write each shipped network's benchmark figures into its model card and catalogue entry."""
    catalog_path = REPO / "Resources" / "Models" / "catalog.json"
    catalog = json.loads(catalog_path.read_text())
    for entry in catalog["models"]:
        rows = [r for r in records if r["method"] == entry["id"]]
        if entry["kind"] != "network" or not rows:
            continue
        noisy = {(r["volume"], r["level_percent"]): r for r in records if r["method"] == "noisy"}
        bm4d = {(r["volume"], r["level_percent"]): r for r in records if r["method"] == "bm4d"}
        figures = {}
        lines = [
            "## Benchmark (EVALUATION.md protocol, from benchmarks/results)",
            "",
            "Blind (sigma estimated), Rician noise; foreground PSNR (dB) / SSIM; volumes never trained on.",
            "",
            "| volume | level | noisy | this model | BM4D (oracle sigma) |",
            "|---|---|---|---|---|",
        ]
        for r in sorted(rows, key=lambda r: (r["volume"], r["level_percent"])):
            key = (r["volume"], r["level_percent"])
            figures.setdefault(r["volume"], {})[f"{r['level_percent']:g}"] = {
                "psnr_foreground": round(r["psnr_foreground"], 3),
                "ssim_foreground": round(r["ssim_foreground"], 4),
            }
            reference = bm4d.get(key)
            peer = f"{reference['psnr_foreground']:.2f} / {reference['ssim_foreground']:.4f}" if reference else "-"
            lines.append(
                f"| {r['volume']} | {r['level_percent']:g} % | {noisy[key]['psnr_foreground']:.2f} / "
                f"{noisy[key]['ssim_foreground']:.4f} | {r['psnr_foreground']:.2f} / {r['ssim_foreground']:.4f} "
                f"| {peer} |"
            )
        machine = rows[0]["machine"]
        lines += ["", f"Quality measured on {machine['cpu']} ({machine['cores']} cores)."]
        timings = [t for t in (speed or {}).get("records", []) if level_of(t) == SPEED_LEVEL]
        timing = next((t for t in timings if t["method"] == entry["id"]), None)
        if timing:
            lines.append(
                f"Speed: {timing['seconds']:.1f} s per 256^3 volume on {timing['device']} "
                f"({timing.get('precision') or 'float32'}) with {timing['threads']} threads, "
                f"peak RSS {timing['peak_rss_gb']:.2f} GB "
                f"({timing.get('cpu', 'host not recorded')}"
                + (f", {timing['cpu_identity']}" if timing.get("cpu_identity") else "")
                + f", {timing.get('date', '2026-11-22 or before')})."
            )
        if gpu is not None and gpu.get("model") == entry["id"]:
            lines.append(gpu_summary(gpu))
        entry.setdefault("metrics", {})["benchmark"] = {
            "volumes": figures,
            "machine": machine,
            "seconds_256": timing["seconds"] if timing else None,
        }
        card_path = REPO / "Resources" / "Models" / f"{entry['id']}.md"
        replace_card_section(card_path, BENCHMARK_START, BENCHMARK_END, lines)
    catalog_path.write_text(json.dumps(catalog, indent=2) + "\n")


def main() -> None:
    quality = RESULTS / "quality.json"
    speed_path = RESULTS / "speed.json"
    speed = json.loads(speed_path.read_text()) if speed_path.exists() else None
    if quality.exists():
        payload = json.loads(quality.read_text())
        records = payload["records"]
        (RESULTS / "quality.md").write_text(quality_tables(records, payload.get("references", {})))
        quality_plots(records)
        slice_pictures(records)
        gpu_path = RESULTS / "gpu_check.json"
        update_model_cards(records, speed, json.loads(gpu_path.read_text()) if gpu_path.exists() else None)
    speed = RESULTS / "speed.json"
    gpu = RESULTS / "gpu_check.json"
    if speed.exists():
        table = speed_table(json.loads(speed.read_text()))
        (RESULTS / "speed.md").write_text(table + (gpu_section(json.loads(gpu.read_text())) if gpu.exists() else ""))


if __name__ == "__main__":
    main()
